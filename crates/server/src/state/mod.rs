//! The state store: Acteon's own records (topic metadata today), kept apart
//! from the broker's log.
//!
//! Records are JSON documents addressed by a [`KeyKind`] and an id. Two
//! engines: [`SqliteStore`] (the default, persistent) and [`MemoryStore`].

mod memory;
mod sqlite;

use std::fmt;

use async_trait::async_trait;
use thiserror::Error;

pub use self::memory::MemoryStore;
pub use self::sqlite::SqliteStore;

/// The kinds of record the store holds; each is its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// A bus topic, by Kafka name.
    BusTopic,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BusTopic => "BusTopic",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed state store operation.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("state store {operation} of {kind}/{id} failed: {source}")]
    Storage {
        operation: &'static str,
        kind: KeyKind,
        id: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("state store record {kind}/{id} is not valid JSON: {source}")]
    Corrupt {
        kind: KeyKind,
        id: String,
        source: serde_json::Error,
    },
}

/// Documents by kind and id.
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug {
    /// Stores `value` under `kind`/`id` unless a record is there already;
    /// returns whether it was stored.
    async fn insert_new(
        &self,
        kind: KeyKind,
        id: &str,
        value: &serde_json::Value,
    ) -> Result<bool, StateError>;

    async fn get(&self, kind: KeyKind, id: &str) -> Result<Option<serde_json::Value>, StateError>;

    /// Removes the record; returns whether there was one.
    async fn delete(&self, kind: KeyKind, id: &str) -> Result<bool, StateError>;

    /// Every record of `kind`, in id order.
    async fn list(&self, kind: KeyKind) -> Result<Vec<serde_json::Value>, StateError>;

    /// Whether the store answers.
    async fn check_ready(&self) -> Result<(), StateError>;
}

/// The shared suite both engines pass.
#[cfg(test)]
mod conformance {
    use serde_json::json;

    use super::*;

    pub(super) async fn insert_get_list_delete(store: &dyn StateStore) {
        assert!(
            store
                .insert_new(KeyKind::BusTopic, "b", &json!({"n": 2}))
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_new(KeyKind::BusTopic, "a", &json!({"n": 1}))
                .await
                .unwrap()
        );
        assert!(
            !store
                .insert_new(KeyKind::BusTopic, "a", &json!({"n": 9}))
                .await
                .unwrap(),
            "a second insert of one id is refused"
        );
        assert_eq!(
            store.get(KeyKind::BusTopic, "a").await.unwrap(),
            Some(json!({"n": 1}))
        );
        assert_eq!(
            store.list(KeyKind::BusTopic).await.unwrap(),
            vec![json!({"n": 1}), json!({"n": 2})]
        );
        assert!(store.delete(KeyKind::BusTopic, "a").await.unwrap());
        assert!(!store.delete(KeyKind::BusTopic, "a").await.unwrap());
        assert_eq!(store.get(KeyKind::BusTopic, "a").await.unwrap(), None);
        store.check_ready().await.unwrap();
    }

    #[tokio::test]
    async fn memory_store() {
        insert_get_list_delete(&MemoryStore::default()).await;
    }

    #[tokio::test]
    async fn sqlite_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        insert_get_list_delete(&store).await;
    }

    #[tokio::test]
    async fn sqlite_store_keeps_records_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .insert_new(KeyKind::BusTopic, "x", &json!(1))
            .await
            .unwrap();
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(
            reopened.get(KeyKind::BusTopic, "x").await.unwrap(),
            Some(json!(1))
        );
    }
}
