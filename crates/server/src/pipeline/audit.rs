//! The audit trail: one record per publish that reached the pipeline.
//!
//! Publishes hand records to a bounded queue; one writer task stores them in
//! batches, so a publish never waits for its own storage write, only for
//! room in the queue when storage falls behind. Each tenant has a share of
//! the queue (`tenant_queue_capacity`): a tenant that floods the trail waits
//! for its own records to be written, not the others. A failed write is
//! retried with backoff; a batch that still cannot be stored is counted as
//! dropped, and the failing writer shows in `/readyz`. The writer prunes by
//! age, by count per tenant (so one tenant's flood cannot evict the others'
//! history) and by total count, and drains the queue at shutdown. A crash
//! loses what is queued (at most `queue_capacity` records, normally one
//! flush interval's worth).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use acteon_core::{Scope, TopicName};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ServiceError;
use crate::state::StateStore;

/// What happened to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Produced,
    Denied,
    Suppressed,
    Throttled,
    Failed,
    /// The payload did not match the topic's schema.
    Invalid,
    /// A durable subscription moved the record to its dead-letter topic.
    #[serde(rename = "dead_lettered")]
    DeadLettered,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Produced => "produced",
            Self::Denied => "denied",
            Self::Suppressed => "suppressed",
            Self::Throttled => "throttled",
            Self::Failed => "failed",
            Self::Invalid => "invalid",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// One audited publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Assigned by the store; grows with time.
    #[serde(default)]
    #[schema(required = true)]
    pub id: u64,
    pub at: DateTime<Utc>,
    pub tenant: String,
    pub namespace: String,
    /// Kafka name of the topic.
    pub topic: String,
    #[schema(required = true)]
    pub key: Option<String>,
    /// The API key that published, when auth is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/audit` as asked: `topic` is a Kafka name, which names its
/// namespace and tenant too.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    #[param(value_type = Option<acteon_core::Fragment>)]
    pub tenant: Option<String>,
    #[param(value_type = Option<acteon_core::Fragment>)]
    pub namespace: Option<String>,
    #[param(value_type = Option<acteon_core::TopicName>)]
    pub topic: Option<String>,
    pub outcome: Option<Outcome>,
    /// Records per page (default 100); asks outside 1 to 1000 are clamped.
    pub limit: Option<usize>,
    pub before: Option<u64>,
}

impl AuditQuery {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 1000;

    /// The records asked for: a topic and the tenant or namespace filters
    /// must agree.
    pub fn filter(&self) -> Result<AuditFilter, ServiceError> {
        let mut scope = Scope::new(self.namespace.as_deref(), self.tenant.as_deref(), None)?;
        if let Some(topic) = &self.topic {
            let topic: TopicName = topic.parse()?;
            scope = scope.intersect(&Scope::topic(&topic))?;
        }
        Ok(AuditFilter {
            scope,
            outcome: self.outcome,
            before: self.before,
            limit: self
                .limit
                .unwrap_or(Self::DEFAULT_LIMIT)
                .clamp(1, Self::MAX_LIMIT),
        })
    }
}

/// Which audit records a query reads: newest first, ids below `before`, at
/// most `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditFilter {
    pub scope: Scope,
    pub outcome: Option<Outcome>,
    pub before: Option<u64>,
    pub limit: usize,
}

impl Default for AuditFilter {
    /// The newest page of every record.
    fn default() -> Self {
        Self {
            scope: Scope::all(),
            outcome: None,
            before: None,
            limit: AuditQuery::DEFAULT_LIMIT,
        }
    }
}

impl AuditFilter {
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let name = record.topic.rsplit('.').next().unwrap_or_default();
        self.scope.covers(&record.namespace, &record.tenant, name)
            && self.outcome.is_none_or(|o| o == record.outcome)
            && self.before.is_none_or(|before| record.id < before)
    }
}

/// What a prune keeps: records newer than `cutoff`, at most `keep_per_tenant`
/// of each tenant and `keep` in all, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub cutoff: DateTime<Utc>,
    pub keep: usize,
    pub keep_per_tenant: usize,
}

/// The `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Records kept at most; older ones are pruned.
    pub max_records: usize,
    /// Records kept at most of each tenant, so that one tenant's flood
    /// cannot evict the others' history.
    pub max_records_per_tenant: usize,
    /// Records older than this are pruned.
    pub max_age_secs: u64,
    /// Records waiting to be stored; publishes wait when it is full.
    pub queue_capacity: usize,
    /// Records of one tenant waiting to be stored; that tenant's publishes
    /// wait when its share is full, the others' do not.
    pub tenant_queue_capacity: usize,
    /// Records stored per write.
    pub batch_size: usize,
    /// Longest a record waits in the queue before a write.
    pub flush_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_records: 1_000_000,
            max_records_per_tenant: 100_000,
            max_age_secs: 7 * 24 * 3600,
            queue_capacity: 10_000,
            tenant_queue_capacity: 2_500,
            batch_size: 500,
            flush_interval_ms: 100,
        }
    }
}

/// How the writer is doing, for `/readyz`.
#[derive(Debug, Default)]
pub struct AuditHealth {
    /// Records given up on after every retry.
    dropped: AtomicU64,
    /// Whether the last write failed.
    failing: AtomicBool,
}

impl AuditHealth {
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Ok while writes succeed; the reason when the last one failed.
    pub fn check(&self) -> Result<(), String> {
        if self.failing.load(Ordering::Relaxed) {
            Err(format!(
                "audit records cannot be stored ({} dropped so far)",
                self.dropped()
            ))
        } else {
            Ok(())
        }
    }
}

/// A queued record, holding its place in its tenant's share of the queue.
#[derive(Debug)]
struct Queued {
    record: AuditRecord,
    _share: OwnedSemaphorePermit,
}

/// Where publishes hand their records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Queued>,
    /// Each tenant's share of the queue, created at its first record.
    shares: Arc<DashMap<String, Arc<Semaphore>>>,
    tenant_capacity: usize,
    health: Arc<AuditHealth>,
}

/// The writer task; [`AuditWriter::stop`] drains the queue and ends it.
#[derive(Debug)]
pub struct AuditWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl AuditLog {
    pub fn start(state: Arc<dyn StateStore>, config: AuditConfig) -> (Self, AuditWriter) {
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let stop = CancellationToken::new();
        let health = Arc::new(AuditHealth::default());
        let log = Self {
            queue,
            shares: Arc::default(),
            tenant_capacity: config.tenant_queue_capacity.max(1),
            health: Arc::clone(&health),
        };
        let task = tokio::spawn(write(state, config, receiver, stop.clone(), health));
        (log, AuditWriter { stop, task })
    }

    pub fn health(&self) -> &AuditHealth {
        &self.health
    }

    /// Records waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Queues a record, waiting for room in its tenant's share and in the
    /// queue if storage has fallen behind.
    pub async fn record(&self, record: AuditRecord) {
        let share = match self.shares.get(&record.tenant) {
            Some(share) => Arc::clone(&share),
            None => Arc::clone(
                &self
                    .shares
                    .entry(record.tenant.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.tenant_capacity))),
            ),
        };
        let share = share
            .acquire_owned()
            .await
            .expect("shares are never closed");
        let queued = Queued {
            record,
            _share: share,
        };
        if self.queue.send(queued).await.is_err() {
            self.health.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("audit writer stopped; a record was not kept");
        }
    }
}

impl AuditWriter {
    /// Stores what is queued and ends the writer.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "audit writer failed");
        }
    }
}

/// How often a gathering writer looks at the queue.
const GATHER_TICK: Duration = Duration::from_millis(5);
/// Tries of one batch write, and the wait before the first retry (doubled
/// after each).
const WRITE_TRIES: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(100);

async fn write(
    state: Arc<dyn StateStore>,
    config: AuditConfig,
    mut receiver: mpsc::Receiver<Queued>,
    stop: CancellationToken,
    health: Arc<AuditHealth>,
) {
    let batch_size = config.batch_size.max(1);
    let flush_interval = Duration::from_millis(config.flush_interval_ms.max(1));
    let mut queued = Vec::with_capacity(batch_size);
    let mut since_prune = 0usize;
    loop {
        tokio::select! {
            received = receiver.recv_many(&mut queued, batch_size) => {
                if received == 0 {
                    break; // closed and drained
                }
            }
            () = stop.cancelled(), if !receiver.is_closed() => {
                receiver.close();
                continue;
            }
        }
        // Gather more for a fuller write, unless the queue is already done.
        // The queue's length is looked at every few milliseconds instead of
        // waited on: a waiting receiver is woken by every send, which cost
        // each publish a wake-up of this task.
        if queued.len() < batch_size && !receiver.is_closed() {
            let deadline = Instant::now() + flush_interval;
            while queued.len() + receiver.len() < batch_size && !stop.is_cancelled() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::time::sleep(GATHER_TICK.min(deadline - now)).await;
            }
            while queued.len() < batch_size {
                let Ok(record) = receiver.try_recv() else {
                    break;
                };
                queued.push(record);
            }
        }
        // Taking the records frees their places in the tenants' shares.
        let batch: Vec<AuditRecord> = queued.drain(..).map(|q| q.record).collect();
        since_prune += batch.len();
        append_with_retries(&*state, &batch, &health).await;
        if since_prune >= batch_size * 20 {
            since_prune = 0;
            prune(&*state, &config).await;
        }
    }
    prune(&*state, &config).await;
}

/// Stores `batch`, retrying with backoff; a batch that cannot be stored at
/// all is counted as dropped.
async fn append_with_retries(state: &dyn StateStore, batch: &[AuditRecord], health: &AuditHealth) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=WRITE_TRIES {
        match state.append_audit(batch).await {
            Ok(()) => {
                health.failing.store(false, Ordering::Relaxed);
                return;
            }
            Err(error) => {
                health.failing.store(true, Ordering::Relaxed);
                tracing::error!(%error, records = batch.len(), attempt, "audit records could not be stored");
            }
        }
        if attempt < WRITE_TRIES {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    let dropped = health
        .dropped
        .fetch_add(batch.len() as u64, Ordering::Relaxed)
        + batch.len() as u64;
    tracing::error!(
        records = batch.len(),
        dropped_in_all = dropped,
        "audit records dropped"
    );
}

async fn prune(state: &dyn StateStore, config: &AuditConfig) {
    // An age too long to subtract keeps everything.
    let cutoff = i64::try_from(config.max_age_secs)
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let retention = Retention {
        cutoff,
        keep: config.max_records,
        keep_per_tenant: config.max_records_per_tenant,
    };
    if let Err(error) = state.prune_audit(&retention).await {
        tracing::error!(%error, "audit records could not be pruned");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use async_trait::async_trait;
    use serde_json::Value;

    use super::*;
    use crate::state::{KeyKind, MemoryStore, StateError};

    /// A memory store whose audit appends wait for a permit, and fail while
    /// `failures` lasts.
    #[derive(Debug)]
    struct GatedStore {
        inner: MemoryStore,
        appends: Semaphore,
        failures: AtomicU32,
    }

    impl GatedStore {
        fn new(permits: usize, failures: u32) -> Arc<Self> {
            Arc::new(Self {
                inner: MemoryStore::default(),
                appends: Semaphore::new(permits),
                failures: AtomicU32::new(failures),
            })
        }
    }

    #[async_trait]
    impl StateStore for GatedStore {
        async fn insert_new(
            &self,
            kind: KeyKind,
            id: &str,
            value: &Value,
        ) -> Result<bool, StateError> {
            self.inner.insert_new(kind, id, value).await
        }
        async fn put(&self, kind: KeyKind, id: &str, value: &Value) -> Result<(), StateError> {
            self.inner.put(kind, id, value).await
        }
        async fn get(&self, kind: KeyKind, id: &str) -> Result<Option<Value>, StateError> {
            self.inner.get(kind, id).await
        }
        async fn delete(&self, kind: KeyKind, id: &str) -> Result<bool, StateError> {
            self.inner.delete(kind, id).await
        }
        async fn list(&self, kind: KeyKind) -> Result<Vec<Value>, StateError> {
            self.inner.list(kind).await
        }
        async fn check_ready(&self) -> Result<(), StateError> {
            self.inner.check_ready().await
        }
        async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StateError> {
            self.appends.acquire().await.unwrap().forget();
            if self
                .failures
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(StateError::Audit {
                    operation: "append",
                    source: "disk full".into(),
                });
            }
            self.inner.append_audit(records).await
        }
        async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StateError> {
            self.inner.query_audit(filter).await
        }
        async fn prune_audit(&self, retention: &Retention) -> Result<(), StateError> {
            self.inner.prune_audit(retention).await
        }
    }

    fn record(tenant: &str) -> AuditRecord {
        AuditRecord {
            id: 0,
            at: Utc::now(),
            tenant: tenant.into(),
            namespace: "ns".into(),
            topic: format!("ns.{tenant}.t"),
            key: None,
            principal: None,
            outcome: Outcome::Throttled,
            rule: None,
            silence: None,
            partition: None,
            offset: None,
            error: None,
        }
    }

    fn config() -> AuditConfig {
        AuditConfig {
            queue_capacity: 100,
            tenant_queue_capacity: 3,
            batch_size: 1,
            flush_interval_ms: 1,
            ..AuditConfig::default()
        }
    }

    #[tokio::test]
    async fn a_flooding_tenant_waits_for_its_share_and_the_others_do_not() {
        let store = GatedStore::new(0, 0);
        let (audit, writer) = AuditLog::start(store.clone(), config());
        // Storage is stuck: the writer holds one record, three more fill
        // the flooding tenant's share.
        for _ in 0..4 {
            audit.record(record("flood")).await;
        }
        let waits = tokio::time::timeout(Duration::from_millis(200), audit.record(record("flood")));
        assert!(waits.await.is_err(), "over its share, the tenant waits");
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(1), audit.record(record("quiet")))
                .await
                .expect("another tenant's records still queue");
        }
        store.appends.add_permits(1_000);
        writer.stop().await;
        let stored = store
            .inner
            .query_audit(&AuditFilter::default())
            .await
            .unwrap();
        assert_eq!(stored.len(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_writes_are_retried_then_counted_as_dropped() {
        let store = GatedStore::new(1_000, 2);
        let (audit, writer) = AuditLog::start(store.clone(), config());
        audit.record(record("a")).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(audit.health().check(), Ok(()), "stored on the third try");
        assert_eq!(audit.health().dropped(), 0);

        store.failures.store(u32::MAX, Ordering::Relaxed);
        audit.record(record("b")).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(audit.health().dropped(), 1);
        assert!(audit.health().check().unwrap_err().contains("1 dropped"));
        store.failures.store(0, Ordering::Relaxed);
        writer.stop().await;
        let stored = store
            .inner
            .query_audit(&AuditFilter::default())
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "{stored:?}");
    }
}
