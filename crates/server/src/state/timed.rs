//! A state store that times every call for the metrics.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{KeyKind, StateError, StateStore};
use crate::metrics::Metrics;
use crate::pipeline::{AuditFilter, AuditRecord, Retention};

/// `inner`, with each call's duration observed by operation.
#[derive(Debug)]
pub struct TimedStore {
    inner: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn StateStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let output = call.await;
        self.metrics.observe_state(operation, started.elapsed());
        output
    }
}

#[async_trait]
impl StateStore for TimedStore {
    async fn insert_new(
        &self,
        kind: KeyKind,
        id: &str,
        value: &serde_json::Value,
    ) -> Result<bool, StateError> {
        self.timed("insert_new", self.inner.insert_new(kind, id, value))
            .await
    }

    async fn put(
        &self,
        kind: KeyKind,
        id: &str,
        value: &serde_json::Value,
    ) -> Result<(), StateError> {
        self.timed("put", self.inner.put(kind, id, value)).await
    }

    async fn get(&self, kind: KeyKind, id: &str) -> Result<Option<serde_json::Value>, StateError> {
        self.timed("get", self.inner.get(kind, id)).await
    }

    async fn delete(&self, kind: KeyKind, id: &str) -> Result<bool, StateError> {
        self.timed("delete", self.inner.delete(kind, id)).await
    }

    async fn list(&self, kind: KeyKind) -> Result<Vec<serde_json::Value>, StateError> {
        self.timed("list", self.inner.list(kind)).await
    }

    async fn check_ready(&self) -> Result<(), StateError> {
        self.timed("check_ready", self.inner.check_ready()).await
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StateError> {
        self.timed("append_audit", self.inner.append_audit(records))
            .await
    }

    async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StateError> {
        self.timed("query_audit", self.inner.query_audit(filter))
            .await
    }

    async fn prune_audit(&self, retention: &Retention) -> Result<(), StateError> {
        self.timed("prune_audit", self.inner.prune_audit(retention))
            .await
    }
}
