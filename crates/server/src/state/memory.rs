//! A state store in process memory, for tests and throw-away runs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::{KeyKind, StateError, StateStore};
use crate::pipeline::{AuditFilter, AuditRecord, Retention};

#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<(KeyKind, String), serde_json::Value>>,
    /// Oldest first; ids ascend.
    audit: Mutex<(u64, VecDeque<AuditRecord>)>,
}

impl MemoryStore {
    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<(KeyKind, String), serde_json::Value>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn audit(&self) -> std::sync::MutexGuard<'_, (u64, VecDeque<AuditRecord>)> {
        self.audit.lock().unwrap_or_else(PoisonError::into_inner)
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
        let mut audit = self.audit();
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

    async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StateError> {
        let audit = self.audit();
        Ok(audit
            .1
            .iter()
            .rev()
            .filter(|record| filter.matches(record))
            .take(filter.limit)
            .cloned()
            .collect())
    }

    async fn prune_audit(&self, retention: &Retention) -> Result<(), StateError> {
        let mut audit = self.audit();
        let log = &mut audit.1;
        // Newest first: which records each tenant, and the whole log, keep.
        let mut per_tenant: HashMap<&str, usize> = HashMap::new();
        let mut kept = 0;
        let keep: Vec<bool> = log
            .iter()
            .rev()
            .map(|record| {
                if record.at < retention.cutoff {
                    return false;
                }
                // Only records within the age limit take a place in their
                // tenant's share.
                let of_tenant = per_tenant.entry(record.tenant.as_str()).or_default();
                *of_tenant += 1;
                let keep = *of_tenant <= retention.keep_per_tenant && kept < retention.keep;
                kept += usize::from(keep);
                keep
            })
            .collect();
        let mut keep = keep.into_iter().rev();
        log.retain(|_| keep.next().unwrap_or(false));
        Ok(())
    }
}
