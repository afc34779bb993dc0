//! The publish pipeline: every publish is accepted, evaluated, and only then
//! produced. Order: the topic's schema, silences, rules, quotas, produce;
//! each publish that gets here leaves one audit record.

mod audit;
mod condition;
mod quotas;
mod rules;
mod silences;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use acteon_bus::BusBackend;
use acteon_core::{DeliveryReceipt, OutgoingMessage, TopicName};
use chrono::Utc;
use tokio_util::task::TaskTracker;

pub use self::audit::{
    AuditConfig, AuditFilter, AuditHealth, AuditLog, AuditQuery, AuditRecord, AuditWriter, Outcome,
    Retention,
};
pub use self::condition::{Condition, ConditionBounds, ConditionError, MessageFacts};
pub use self::quotas::{QuotaConfig, QuotaError, Quotas, Throttled};
pub use self::rules::{Rule, RuleAction, RuleConfig, RuleError, RuleSet};
pub use self::silences::{Silence, SilenceRequest, Silences};
use crate::error::ServiceError;
use crate::idempotency::Ticket;
use crate::metrics::Metrics;
use crate::schemas::registry::Bound;

/// The header a record produced to a bound topic carries:
/// `{subject}:{version}` of the schema it was checked against.
pub const SCHEMA_HEADER: &str = "acteon.schema";

/// A publish that was accepted without being produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Suppressed {
    ByRule(String),
    BySilence(String),
}

/// What the pipeline did with an accepted publish.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Published {
    Produced(DeliveryReceipt),
    Suppressed(Suppressed),
}

/// A publish's produce and audit record, which finish even if the caller
/// goes away: dropped before it completes, it is handed to a task of its
/// own (tracked, so shutdown waits for it). Publishes that are not
/// abandoned never pay for a task and its thread hand-offs.
struct Settling<F: Future<Output = PublishResult> + Send + 'static> {
    future: Option<Pin<Box<F>>>,
    tasks: TaskTracker,
}

type PublishResult = Result<Published, ServiceError>;

impl<F: Future<Output = PublishResult> + Send + 'static> Settling<F> {
    fn new(tasks: TaskTracker, future: F) -> Self {
        Self {
            future: Some(Box::pin(future)),
            tasks,
        }
    }
}

impl<F: Future<Output = PublishResult> + Send + 'static> Future for Settling<F> {
    type Output = PublishResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PublishResult> {
        let future = self
            .future
            .as_mut()
            .expect("Settling polled after it completed");
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F: Future<Output = PublishResult> + Send + 'static> Drop for Settling<F> {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(self.tasks.spawn_on(future, &runtime)),
            Err(_) => tracing::error!(
                "a publish was abandoned outside the runtime; its audit record is lost"
            ),
        }
    }
}

async fn timed_produce(
    bus: &dyn BusBackend,
    metrics: &Metrics,
    topic: &TopicName,
    message: OutgoingMessage,
) -> Result<DeliveryReceipt, acteon_bus::BusError> {
    let started = tokio::time::Instant::now();
    let produced = bus.produce(topic, message).await;
    metrics.observe_produce(started.elapsed());
    produced
}

/// Silences, rules, quotas and audit in front of the bus.
#[derive(Debug)]
pub struct Pipeline {
    pub silences: Silences,
    pub rules: RuleSet,
    pub quotas: Quotas,
    pub audit: AuditLog,
    pub bus: Arc<dyn BusBackend>,
    /// The tasks that produce and audit; shutdown waits for them before it
    /// stops the audit writer.
    pub tasks: TaskTracker,
    pub metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Evaluates `message` now and returns the future that produces it if
    /// every stage let it through, and audits it; `principal` is the
    /// publishing key, for the audit record. Deciding before the first poll
    /// lets a batch decide all its records and then hand them to the bus
    /// back to back, where they fill one produce request.
    ///
    /// An idempotency `ticket` is settled with the answer inside the
    /// publish's own future, which finishes even if the caller goes away.
    /// A topic's `schema` checks the payload before any other stage.
    pub fn admit(
        &self,
        topic: &TopicName,
        mut message: OutgoingMessage,
        principal: Option<&str>,
        ticket: Option<Ticket>,
        schema: Option<&Bound>,
    ) -> impl Future<Output = PublishResult> + Send + use<> {
        let mut record = AuditRecord {
            id: 0,
            at: Utc::now(),
            tenant: topic.tenant().to_owned(),
            namespace: topic.namespace().to_owned(),
            topic: topic.kafka_topic_name().to_owned(),
            key: message.key.clone(),
            principal: principal.map(str::to_owned),
            outcome: Outcome::Produced,
            rule: None,
            silence: None,
            partition: None,
            offset: None,
            error: None,
        };
        // The CEL context is not Send; it must not live across an await.
        let decision = match schema.map(|schema| schema.check(&message.payload)) {
            Some(Err(violation)) => {
                record.outcome = Outcome::Invalid;
                record.error = Some(violation.to_string());
                Err(Err(ServiceError::SchemaViolation(violation)))
            }
            _ => {
                let facts = MessageFacts::new(
                    topic,
                    message.key.as_deref(),
                    &message.headers,
                    &message.payload,
                );
                self.decide(topic, &facts, &mut record)
            }
        };
        if let (Ok(()), Some(schema)) = (&decision, schema) {
            message
                .headers
                .insert(SCHEMA_HEADER.to_owned(), schema.header());
        }
        let (bus, audit, topic) = (Arc::clone(&self.bus), self.audit.clone(), topic.clone());
        let metrics = Arc::clone(&self.metrics);
        Settling::new(self.tasks.clone(), async move {
            let result = match decision {
                Ok(()) => match timed_produce(&*bus, &metrics, &topic, message).await {
                    Ok(receipt) => {
                        record.partition = Some(receipt.partition);
                        record.offset = Some(receipt.offset);
                        Ok(Published::Produced(receipt))
                    }
                    Err(error) => {
                        record.outcome = Outcome::Failed;
                        record.error = Some(error.to_string());
                        Err(error.into())
                    }
                },
                Err(stopped) => stopped,
            };
            metrics.count_publish(&record.tenant, record.outcome.as_str());
            if let Some(ticket) = ticket {
                ticket.settle(&result);
            }
            audit.record(record).await;
            result
        })
    }

    /// Silences, rules and quotas; `Err` carries the publish's answer when a
    /// stage stopped it.
    fn decide(
        &self,
        topic: &TopicName,
        facts: &MessageFacts<'_>,
        record: &mut AuditRecord,
    ) -> Result<(), Result<Published, ServiceError>> {
        if let Some(silence) = self.silences.matching(facts) {
            record.outcome = Outcome::Suppressed;
            record.silence = Some(silence.clone());
            return Err(Ok(Published::Suppressed(Suppressed::BySilence(silence))));
        }
        if let Some(rule) = self.rules.decide(facts) {
            let name = rule.config.name.clone();
            record.rule = Some(name.clone());
            match rule.action {
                RuleAction::Allow => {}
                RuleAction::Deny => {
                    record.outcome = Outcome::Denied;
                    return Err(Err(ServiceError::Denied {
                        rule: name,
                        reason: rule.config.reason.clone(),
                    }));
                }
                RuleAction::Suppress => {
                    record.outcome = Outcome::Suppressed;
                    return Err(Ok(Published::Suppressed(Suppressed::ByRule(name))));
                }
            }
        }
        if let Err(throttled) = self.quotas.take(topic) {
            record.outcome = Outcome::Throttled;
            record.error = Some(format!("over quota {}", throttled.quota));
            return Err(Err(ServiceError::Throttled(throttled)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use acteon_bus::{
        BusError, EventStream, GroupId, GroupMember, MemoryBackend, PartitionOffsets, Watermarks,
    };
    use acteon_core::{Headers, StartPosition, Topic};
    use async_trait::async_trait;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::limits::LimitsConfig;
    use crate::state::{MemoryStore, StateStore};

    /// The in-memory backend, whose produces wait for a permit.
    #[derive(Debug)]
    struct GatedBus {
        inner: MemoryBackend,
        produces: Semaphore,
    }

    #[async_trait]
    impl BusBackend for GatedBus {
        fn kind(&self) -> &'static str {
            "gated"
        }
        fn keeps_records(&self) -> bool {
            self.inner.keeps_records()
        }
        async fn create_topic(&self, topic: &Topic) -> Result<(), BusError> {
            self.inner.create_topic(topic).await
        }
        async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
            self.inner.delete_topic(topic).await
        }
        async fn produce(
            &self,
            topic: &TopicName,
            message: OutgoingMessage,
        ) -> Result<DeliveryReceipt, BusError> {
            self.produces.acquire().await.unwrap().forget();
            self.inner.produce(topic, message).await
        }
        async fn subscribe(
            &self,
            topic: &TopicName,
            group: &GroupId,
            start: StartPosition,
        ) -> Result<EventStream, BusError> {
            self.inner.subscribe(topic, group, start).await
        }
        async fn broadcast(
            &self,
            topic: &TopicName,
            start: StartPosition,
        ) -> Result<EventStream, BusError> {
            self.inner.broadcast(topic, start).await
        }
        async fn join_group(
            &self,
            topic: &TopicName,
            group: &GroupId,
            start: StartPosition,
        ) -> Result<GroupMember, BusError> {
            self.inner.join_group(topic, group, start).await
        }
        async fn set_group_offsets(
            &self,
            topic: &TopicName,
            group: &GroupId,
            offsets: &PartitionOffsets,
        ) -> Result<(), BusError> {
            self.inner.set_group_offsets(topic, group, offsets).await
        }
        async fn delete_group(&self, topic: &TopicName, group: &GroupId) -> Result<(), BusError> {
            self.inner.delete_group(topic, group).await
        }
        async fn watermarks(&self, topic: &TopicName) -> Result<Vec<Watermarks>, BusError> {
            self.inner.watermarks(topic).await
        }
        async fn check_ready(&self) -> Result<(), BusError> {
            self.inner.check_ready().await
        }
        async fn flush(&self, timeout: std::time::Duration) -> Result<(), BusError> {
            self.inner.flush(timeout).await
        }
    }

    /// A caller that goes away while the broker is answering must not take
    /// the publish's audit record with it.
    #[tokio::test]
    async fn an_abandoned_publish_still_leaves_its_audit_record() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let bus = Arc::new(GatedBus {
            inner: MemoryBackend::default(),
            produces: Semaphore::new(0),
        });
        let topic = TopicName::new("ns", "t", "inbox").unwrap();
        bus.create_topic(&Topic::new(topic.clone(), 1, 1, None).unwrap())
            .await
            .unwrap();
        let config = AuditConfig {
            flush_interval_ms: 1,
            ..AuditConfig::default()
        };
        let (audit, writer) = AuditLog::start(Arc::clone(&state), config);
        let pipeline = Pipeline {
            silences: Silences::load(Arc::clone(&state), LimitsConfig::default())
                .await
                .unwrap(),
            rules: RuleSet::default(),
            quotas: Quotas::default(),
            audit,
            bus: bus.clone(),
            tasks: TaskTracker::new(),
            metrics: Arc::default(),
        };
        let message = OutgoingMessage {
            key: None,
            payload: serde_json::json!({ "n": 1 }),
            headers: Headers::new(),
        };
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            pipeline.admit(&topic, message, None, None, None),
        );
        assert!(abandoned.await.is_err(), "the produce waits for its permit");
        bus.produces.add_permits(1);
        pipeline.tasks.close();
        pipeline.tasks.wait().await;
        writer.stop().await;
        let records = state.query_audit(&AuditFilter::default()).await.unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].outcome, Outcome::Produced);
        assert_eq!(records[0].offset, Some(0));
    }
}
