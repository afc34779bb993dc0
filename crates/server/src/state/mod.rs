//! The state store: Acteon's own records (topic metadata today), kept apart
//! from the broker's log.
//!
//! Records are JSON documents addressed by a [`KeyKind`] and an id. Two
//! engines: [`SqliteStore`] (the default, persistent) and [`MemoryStore`].

mod memory;
mod sqlite;
mod sqlite_audit;
mod timed;

use std::fmt;

use async_trait::async_trait;
use thiserror::Error;

use crate::pipeline::{AuditFilter, AuditRecord, Retention};

pub use self::memory::MemoryStore;
pub use self::sqlite::SqliteStore;
pub use self::timed::TimedStore;

/// The kinds of record the store holds; each is its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// A bus topic, by Kafka name.
    BusTopic,
    /// A silence, by id.
    Silence,
    /// A durable subscription, by `namespace/tenant/id`.
    DurableSubscription,
    /// A durable subscription's progress, by the same key.
    DurableProgress,
    /// The idempotency window, one document.
    IdempotencyWindow,
    /// A schema subject with its versions, by `namespace/tenant/subject`.
    SchemaSubject,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BusTopic => "BusTopic",
            Self::Silence => "Silence",
            Self::DurableSubscription => "DurableSubscription",
            Self::DurableProgress => "DurableProgress",
            Self::IdempotencyWindow => "IdempotencyWindow",
            Self::SchemaSubject => "SchemaSubject",
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
    #[error("audit {operation} failed: {source}")]
    Audit {
        operation: &'static str,
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

    /// Stores `value` under `kind`/`id`, replacing any record there.
    async fn put(
        &self,
        kind: KeyKind,
        id: &str,
        value: &serde_json::Value,
    ) -> Result<(), StateError>;

    async fn get(&self, kind: KeyKind, id: &str) -> Result<Option<serde_json::Value>, StateError>;

    /// Removes the record; returns whether there was one.
    async fn delete(&self, kind: KeyKind, id: &str) -> Result<bool, StateError>;

    /// Every record of `kind`, in id order.
    async fn list(&self, kind: KeyKind) -> Result<Vec<serde_json::Value>, StateError>;

    /// Whether the store answers.
    async fn check_ready(&self) -> Result<(), StateError>;

    /// Appends audit records, assigning their ids (ascending, in order).
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StateError>;

    /// Audit records matching `filter`, newest first, at most its limit.
    async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StateError>;

    /// Drops the audit records `retention` does not keep.
    async fn prune_audit(&self, retention: &Retention) -> Result<(), StateError>;
}

/// The shared suite both engines pass.
#[cfg(test)]
mod conformance {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::pipeline::Outcome;

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
        store.put(KeyKind::Silence, "s", &json!(1)).await.unwrap();
        store.put(KeyKind::Silence, "s", &json!(2)).await.unwrap();
        assert_eq!(
            store.get(KeyKind::Silence, "s").await.unwrap(),
            Some(json!(2))
        );
        assert_eq!(
            store.list(KeyKind::BusTopic).await.unwrap(),
            vec![json!({"n": 2})]
        );
    }

    fn record(tenant: &str, name: &str, outcome: Outcome, at: DateTime<Utc>) -> AuditRecord {
        AuditRecord {
            id: 0,
            at,
            tenant: tenant.into(),
            namespace: "ns".into(),
            topic: format!("ns.{tenant}.{name}"),
            key: None,
            principal: None,
            outcome,
            rule: None,
            silence: None,
            partition: None,
            offset: None,
            error: None,
        }
    }

    pub(super) async fn audit_pages_filters_and_prunes(store: &dyn StateStore) {
        let now = Utc::now();
        let records: Vec<_> = (0..10)
            .map(|i| {
                let outcome = if i % 2 == 0 {
                    Outcome::Produced
                } else {
                    Outcome::Denied
                };
                let name = if i % 2 == 0 { "even" } else { "odd" };
                record(if i < 6 { "a" } else { "b" }, name, outcome, now)
            })
            .collect();
        store.append_audit(&records[..4]).await.unwrap();
        store.append_audit(&records[4..]).await.unwrap();
        let all = store.query_audit(&AuditFilter::default()).await.unwrap();
        let ids: Vec<u64> = all.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 10);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

        let page = |before, limit| AuditFilter {
            before,
            limit,
            ..AuditFilter::default()
        };
        let first = store.query_audit(&page(None, 4)).await.unwrap();
        let second = store
            .query_audit(&page(Some(first[3].id), 4))
            .await
            .unwrap();
        assert_eq!(
            second[0].id, ids[4],
            "the cursor continues where the page ended"
        );

        let filtered = AuditFilter {
            scope: acteon_core::Scope::new(None, Some("a"), None).unwrap(),
            outcome: Some(Outcome::Denied),
            ..AuditFilter::default()
        };
        let denied_a = store.query_audit(&filtered).await.unwrap();
        assert_eq!(denied_a.len(), 3);
        assert!(
            denied_a
                .iter()
                .all(|r| r.tenant == "a" && r.outcome == Outcome::Denied)
        );

        let by_topic = AuditFilter {
            scope: acteon_core::Scope::topic(&"ns.b.even".parse().unwrap()),
            ..AuditFilter::default()
        };
        let even_b = store.query_audit(&by_topic).await.unwrap();
        assert_eq!(even_b.len(), 2, "{even_b:?}");
        assert!(even_b.iter().all(|r| r.topic == "ns.b.even"));

        let all = || async { store.query_audit(&AuditFilter::default()).await.unwrap() };
        let retention = |keep, keep_per_tenant, cutoff| Retention {
            cutoff,
            keep,
            keep_per_tenant,
        };
        let hour_ago = now - chrono::TimeDelta::hours(1);
        // Tenant a's flood (6 records) leaves b's 4 alone.
        store
            .prune_audit(&retention(100, 4, hour_ago))
            .await
            .unwrap();
        let kept = all().await;
        let count = |tenant: &str| kept.iter().filter(|r| r.tenant == tenant).count();
        assert_eq!((count("a"), count("b")), (4, 4));
        assert!(
            kept.iter()
                .filter(|r| r.tenant == "a")
                .all(|r| r.id > ids[8]),
            "the newest of tenant a are kept"
        );
        store
            .prune_audit(&retention(4, 100, hour_ago))
            .await
            .unwrap();
        let newest: Vec<u64> = all().await.iter().map(|r| r.id).collect();
        assert_eq!(newest, ids[..4]);
        store
            .prune_audit(&retention(100, 100, now + chrono::TimeDelta::hours(1)))
            .await
            .unwrap();
        assert!(all().await.is_empty());

        // A quiet tenant's two old records, then a flood of another's: the
        // flood is cut to its share, and the total cap counts what is left,
        // so the quiet tenant's history stays.
        let quiet = vec![record("quiet", "t", Outcome::Produced, now); 2];
        store.append_audit(&quiet).await.unwrap();
        let flood: Vec<_> = (0..8)
            .map(|_| record("flood", "t", Outcome::Throttled, now))
            .collect();
        store.append_audit(&flood).await.unwrap();
        store.prune_audit(&retention(6, 4, hour_ago)).await.unwrap();
        let kept = all().await;
        let count = |tenant: &str| kept.iter().filter(|r| r.tenant == tenant).count();
        assert_eq!((count("quiet"), count("flood")), (2, 4), "{kept:?}");

        // One write of a tenant's records, each `hours` old, then a prune:
        // what of the tenant's trail is left.
        let write_and_prune = |tenant: &'static str, hours: &[i64], retention: Retention| {
            let records: Vec<AuditRecord> = hours
                .iter()
                .map(|&hours| {
                    let at = now - chrono::TimeDelta::hours(hours);
                    record(tenant, "t", Outcome::Produced, at)
                })
                .collect();
            async move {
                store.append_audit(&records).await.unwrap();
                store.prune_audit(&retention).await.unwrap();
                let filter = AuditFilter {
                    scope: acteon_core::Scope::new(None, Some(tenant), None).unwrap(),
                    ..AuditFilter::default()
                };
                store.query_audit(&filter).await.unwrap()
            }
        };

        // One write's records on both sides of the age limit: only the
        // older go.
        let kept = write_and_prune("aging", &[2, 0, 3, 0], retention(100, 100, hour_ago)).await;
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.iter().all(|r| r.at == now), "{kept:?}");
        assert_eq!(all().await.len(), 8, "the other tenants' records stay");

        // Age first, then each tenant's share: records past the age limit
        // do not count against the share.
        let kept = write_and_prune("share", &[0, 2, 0], retention(100, 2, hour_ago)).await;
        assert_eq!(kept.len(), 2, "{kept:?}");

        // Two tenants' records interleaved in one write: read back in the
        // order written, and the total cap cuts through them by id.
        let interleaved = ["x", "y", "x", "y"].map(|t| record(t, "t", Outcome::Produced, now));
        store.append_audit(&interleaved).await.unwrap();
        let newest: Vec<(u64, String)> = all().await[..4]
            .iter()
            .map(|r| (r.id, r.tenant.clone()))
            .collect();
        let tenants: Vec<&str> = newest.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(tenants, ["y", "x", "y", "x"]);
        assert!(newest.windows(2).all(|w| w[0].0 > w[1].0), "{newest:?}");
        store
            .prune_audit(&retention(3, 100, hour_ago))
            .await
            .unwrap();
        let kept: Vec<(u64, String)> = all()
            .await
            .iter()
            .map(|r| (r.id, r.tenant.clone()))
            .collect();
        assert_eq!(kept, newest[..3], "the oldest go first, whoever's they are");
    }

    #[tokio::test]
    async fn memory_audit() {
        audit_pages_filters_and_prunes(&MemoryStore::default()).await;
    }

    #[tokio::test]
    async fn sqlite_audit() {
        let dir = tempfile::tempdir().unwrap();
        audit_pages_filters_and_prunes(&SqliteStore::open(&dir.path().join("a.db")).unwrap()).await;
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
