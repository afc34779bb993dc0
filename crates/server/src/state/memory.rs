//! A state store in process memory, for tests and throw-away runs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{KeyKind, StateError, StateStore};
use crate::pipeline::{AuditQuery, AuditRecord};

#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<(KeyKind, String), serde_json::Value>>,
    /// Oldest first; ids ascend.
    audit: Mutex<(u64, VecDeque<AuditRecord>)>,
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

    async fn put(
        &self,
        kind: KeyKind,
        id: &str,
        value: &serde_json::Value,
    ) -> Result<(), StateError> {
        self.records().insert((kind, id.to_owned()), value.clone());
        Ok(())
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

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StateError> {
        let mut audit = self.audit.lock().expect("audit lock poisoned");
        let (next_id, log) = &mut *audit;
        for record in records {
            *next_id += 1;
            log.push_back(AuditRecord {
                id: *next_id,
                ..record.clone()
            });
        }
        Ok(())
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StateError> {
        let audit = self.audit.lock().expect("audit lock poisoned");
        Ok(audit
            .1
            .iter()
            .rev()
            .filter(|record| query.matches(record))
            .take(query.page_size())
            .cloned()
            .collect())
    }

    async fn prune_audit(&self, keep: usize, cutoff: DateTime<Utc>) -> Result<(), StateError> {
        let mut audit = self.audit.lock().expect("audit lock poisoned");
        let log = &mut audit.1;
        while log.len() > keep || log.front().is_some_and(|record| record.at < cutoff) {
            log.pop_front();
        }
        Ok(())
    }
}
