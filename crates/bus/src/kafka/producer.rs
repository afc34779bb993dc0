//! The Kafka backend's producer, and when to replace it.
//!
//! librdkafka's rule is that a producer which raised a fatal error (an
//! idempotent producer whose sequence state the broker no longer accepts,
//! say) cannot deliver again and must be destroyed and created anew. A
//! producer can also keep failing without a fatal error while the broker
//! answers every other request: after a broker restart that lost its
//! producer state, an idempotent producer's produces fail for good. Either
//! way the backend builds a new producer, which starts with a fresh
//! producer id.
//!
//! The first failed produce after a success starts a watch. Every
//! [`WATCH_INTERVAL`] it looks again: a success in the meantime ends it.
//! Otherwise the producer is replaced
//!
//! - at once, when it raised a fatal error;
//! - when produces have failed for [`FAILING_FOR`] and the broker refused
//!   the producer's state (an unknown producer id, a sequence out of order,
//!   an unknown server error);
//! - when produces have failed for [`KEEPS_FAILING_FOR`] while the broker
//!   answers metadata requests: whatever is wrong, it is not the broker
//!   being away;
//! - once, when it has been cut off from the broker for [`FAILING_FOR`], so
//!   that nothing of its state (its producer id, its sequence numbers, the
//!   batches it would retry) meets a broker that restarted and may have
//!   lost it.
//!
//! A producer is replaced at most once per [`REPLACE_AT_MOST_EVERY`], and
//! failures of a producer already replaced count for nothing.
//!
//! The old producer's queued and in-flight messages are purged, so their
//! publishes fail (503) rather than reach the broker with the old state;
//! it is closed, on a blocking thread, once their callers have let go.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer as _, PurgeConfig};

use super::KafkaConfig;
use super::stats::{CountingContext, ProduceTally};
use crate::{BusError, ProduceFigures};

/// A producer that counts its requests into the backend's tally.
pub(super) type CountingProducer = FutureProducer<CountingContext>;

/// How often a watch looks at a failing producer.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How long produces must have failed before the producer is blamed.
const FAILING_FOR: Duration = Duration::from_secs(1);
/// How long produces must have failed, with the broker answering, before
/// the producer is blamed for a failure the broker did not pin on it.
pub(super) const KEEPS_FAILING_FOR: Duration = Duration::from_secs(5);
/// The least time between two replacements.
const REPLACE_AT_MOST_EVERY: Duration = Duration::from_secs(3);
/// How long the watch's metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a replaced producer is kept for publishes still in flight.
const RETIRE_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Health {
    /// When the first failure since the last success happened.
    failing_since: Option<Instant>,
    /// When the producer was last replaced.
    replaced_at: Option<Instant>,
    /// Whether a watch runs.
    watching: bool,
    /// Whether the broker refused the producer's state in one of the
    /// failed produces.
    state_refused: bool,
    /// Whether the producer was replaced while the broker was away, since
    /// the last success.
    replaced_while_away: bool,
}

struct Inner {
    config: KafkaConfig,
    admin: Arc<AdminClient<DefaultClientContext>>,
    current: ArcSwap<CountingProducer>,
    health: Mutex<Health>,
    tally: Arc<ProduceTally>,
}

/// The producer the backend sends with. Cheap to clone.
#[derive(Clone)]
pub(super) struct Producer(Arc<Inner>);

impl Producer {
    /// `admin` asks the broker whether it answers.
    pub(super) fn new(
        config: &KafkaConfig,
        admin: Arc<AdminClient<DefaultClientContext>>,
    ) -> Result<Self, KafkaError> {
        let tally = Arc::new(ProduceTally::default());
        Ok(Self(Arc::new(Inner {
            current: ArcSwap::from_pointee(counting_producer(config, &tally)?),
            config: config.clone(),
            admin,
            health: Mutex::default(),
            tally,
        })))
    }

    /// What every producer so far sent, as of its last statistics.
    pub(super) fn figures(&self) -> ProduceFigures {
        self.0.tally.figures()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.0.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The producer to send with now.
    pub(super) fn current(&self) -> Arc<CountingProducer> {
        self.0.current.load_full()
    }

    /// The fatal error of the current producer, if it raised one.
    pub(super) fn fatal_error(&self) -> Option<String> {
        self.0
            .current
            .load()
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"))
    }

    pub(super) fn succeeded(&self) {
        let mut health = self.health();
        health.failing_since = None;
        health.replaced_while_away = false;
    }

    /// How long produces have failed without a success, if they do.
    pub(super) fn failing_for(&self) -> Option<Duration> {
        self.health().failing_since.map(|since| since.elapsed())
    }

    /// Notes a produce that failed on `sent_with`; failures of the current
    /// producer that concern the broker or the producer, not the request,
    /// start a watch. `state_refused`: the broker refused the producer's
    /// state ([`super::error::refuses_producer_state`]).
    pub(super) fn failed(
        &self,
        sent_with: &Arc<CountingProducer>,
        error: &BusError,
        state_refused: bool,
    ) {
        let of_the_request = !matches!(
            error,
            BusError::Unavailable { .. } | BusError::Broker { .. }
        );
        if of_the_request || !Arc::ptr_eq(sent_with, &self.0.current.load()) {
            return;
        }
        let mut health = self.health();
        if health.failing_since.is_none() {
            health.failing_since = Some(Instant::now());
            health.state_refused = false;
        }
        health.state_refused |= state_refused;
        if !health.watching {
            health.watching = true;
            tokio::spawn(self.clone().watch());
        }
    }

    async fn watch(self) {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let Some(failing) = self.failing_for() else {
                break; // it delivered again
            };
            let replaced = if let Some(fatal) = self.fatal_error() {
                self.replace(&format!("fatal error {fatal}"))
            } else if failing < FAILING_FOR {
                false
            } else if self.health().state_refused {
                self.replace("the broker refused the producer's state")
            } else if self.broker_answers().await {
                failing >= KEEPS_FAILING_FOR
                    && self.replace("produces kept failing while the broker answers")
            } else {
                let replaced_while_away =
                    std::mem::replace(&mut self.health().replaced_while_away, true);
                !replaced_while_away && self.replace("cut off from the broker")
            };
            if replaced {
                break;
            }
        }
        self.health().watching = false;
    }

    async fn broker_answers(&self) -> bool {
        let admin = Arc::clone(&self.0.admin);
        let answer = tokio::task::spawn_blocking(move || {
            admin.inner().fetch_metadata(None, METADATA_TIMEOUT)
        })
        .await;
        match answer {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::debug!(%error, "the broker does not answer yet");
                false
            }
            Err(_) => false,
        }
    }

    /// Builds a new producer and sends with it from now on, unless it was
    /// replaced a moment ago; whether it did.
    pub(super) fn replace(&self, reason: &str) -> bool {
        {
            let mut health = self.health();
            if health
                .replaced_at
                .is_some_and(|at| at.elapsed() < REPLACE_AT_MOST_EVERY)
            {
                return false;
            }
            health.replaced_at = Some(Instant::now());
        }
        let fresh = match counting_producer(&self.0.config, &self.0.tally) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::error!(%error, "a new Kafka producer could not be built");
                return false;
            }
        };
        // Failures from now on are the new producer's.
        self.health().failing_since = None;
        let old = self.0.current.swap(Arc::new(fresh));
        tracing::warn!(reason, "replaced the Kafka producer");
        // Purging and closing wait for librdkafka's threads: not on an
        // async worker.
        tokio::task::spawn_blocking(move || {
            old.purge(PurgeConfig::default().queue().inflight());
            let deadline = Instant::now() + RETIRE_WITHIN;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(old);
        });
        true
    }
}

fn counting_producer(
    config: &KafkaConfig,
    tally: &Arc<ProduceTally>,
) -> Result<CountingProducer, KafkaError> {
    config
        .producer()
        .create_with_context(CountingContext::new(Arc::clone(tally)))
}
