//! A state store in process memory, for tests and throw-away runs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{KeyKind, StateError, StateStore};

#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<(KeyKind, String), serde_json::Value>>,
}

impl MemoryStore {
    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<(KeyKind, String), serde_json::Value>> {
        self.records.lock().expect("state lock poisoned")
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn insert_new(
        &self,
        kind: KeyKind,
        id: &str,
        value: &serde_json::Value,
    ) -> Result<bool, StateError> {
        let mut records = self.records();
        let key = (kind, id.to_owned());
        if records.contains_key(&key) {
            return Ok(false);
        }
        records.insert(key, value.clone());
        Ok(true)
    }

    async fn get(&self, kind: KeyKind, id: &str) -> Result<Option<serde_json::Value>, StateError> {
        Ok(self.records().get(&(kind, id.to_owned())).cloned())
    }

    async fn delete(&self, kind: KeyKind, id: &str) -> Result<bool, StateError> {
        Ok(self.records().remove(&(kind, id.to_owned())).is_some())
    }

    async fn list(&self, kind: KeyKind) -> Result<Vec<serde_json::Value>, StateError> {
        Ok(self
            .records()
            .iter()
            .filter(|((record_kind, _), _)| *record_kind == kind)
            .map(|(_, value)| value.clone())
            .collect())
    }

    async fn check_ready(&self) -> Result<(), StateError> {
        Ok(())
    }
}
