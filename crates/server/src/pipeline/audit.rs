//! The audit trail: one record per publish that reached the pipeline.
//!
//! Publishes hand records to a bounded queue; one writer task stores them in
//! batches, so a publish never waits for its own storage write, only for
//! room in the queue when storage falls behind. The writer prunes by count
//! and age, and drains the queue at shutdown. A crash loses what is queued
//! (at most `queue_capacity` records, normally one flush interval's worth).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::state::StateStore;

/// What happened to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Produced,
    Denied,
    Suppressed,
    Throttled,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Produced => "produced",
            Self::Denied => "denied",
            Self::Suppressed => "suppressed",
            Self::Throttled => "throttled",
            Self::Failed => "failed",
        }
    }
}

/// One audited publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Assigned by the store; grows with time.
    #[serde(default)]
    pub id: u64,
    pub at: DateTime<Utc>,
    pub tenant: String,
    pub namespace: String,
    /// Kafka name of the topic.
    pub topic: String,
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

/// `GET /v1/audit` filters: newest first, ids below `before`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub tenant: Option<String>,
    pub namespace: Option<String>,
    pub topic: Option<String>,
    pub outcome: Option<Outcome>,
    pub limit: Option<usize>,
    pub before: Option<u64>,
}

impl AuditQuery {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 1000;

    /// The page size asked for, within bounds.
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }

    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == record.tenant)
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| *n == record.namespace)
            && self.topic.as_ref().is_none_or(|t| *t == record.topic)
            && self.outcome.is_none_or(|o| o == record.outcome)
            && self.before.is_none_or(|before| record.id < before)
    }
}

/// The `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Records kept at most; older ones are pruned.
    pub max_records: usize,
    /// Records older than this are pruned.
    pub max_age_secs: u64,
    /// Records waiting to be stored; publishes wait when it is full.
    pub queue_capacity: usize,
    /// Records stored per write.
    pub batch_size: usize,
    /// Longest a record waits in the queue before a write.
    pub flush_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_records: 1_000_000,
            max_age_secs: 7 * 24 * 3600,
            queue_capacity: 10_000,
            batch_size: 500,
            flush_interval_ms: 100,
        }
    }
}

/// Where publishes hand their records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<AuditRecord>,
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
        let task = tokio::spawn(write(state, config, receiver, stop.clone()));
        (Self { queue }, AuditWriter { stop, task })
    }

    /// Queues a record, waiting for room if storage has fallen behind.
    pub async fn record(&self, record: AuditRecord) {
        if self.queue.send(record).await.is_err() {
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

async fn write(
    state: Arc<dyn StateStore>,
    config: AuditConfig,
    mut receiver: mpsc::Receiver<AuditRecord>,
    stop: CancellationToken,
) {
    let batch_size = config.batch_size.max(1);
    let flush_interval = Duration::from_millis(config.flush_interval_ms.max(1));
    let mut batch = Vec::with_capacity(batch_size);
    let mut since_prune = 0usize;
    loop {
        tokio::select! {
            received = receiver.recv_many(&mut batch, batch_size) => {
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
        if batch.len() < batch_size && !receiver.is_closed() {
            let deadline = Instant::now() + flush_interval;
            while batch.len() + receiver.len() < batch_size && !stop.is_cancelled() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::time::sleep(GATHER_TICK.min(deadline - now)).await;
            }
            while batch.len() < batch_size {
                let Ok(record) = receiver.try_recv() else {
                    break;
                };
                batch.push(record);
            }
        }
        since_prune += batch.len();
        if let Err(error) = state.append_audit(&batch).await {
            tracing::error!(%error, records = batch.len(), "audit records could not be stored");
        }
        batch.clear();
        if since_prune >= batch_size * 20 {
            since_prune = 0;
            prune(&*state, &config).await;
        }
    }
    prune(&*state, &config).await;
}

async fn prune(state: &dyn StateStore, config: &AuditConfig) {
    let cutoff = Utc::now() - chrono::TimeDelta::seconds(config.max_age_secs as i64);
    if let Err(error) = state.prune_audit(config.max_records, cutoff).await {
        tracing::error!(%error, "audit records could not be pruned");
    }
}
