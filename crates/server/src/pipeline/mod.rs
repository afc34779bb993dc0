//! The publish pipeline: every publish is accepted, evaluated, and only then
//! produced. Order: silences, rules, quotas, produce; each publish that gets
//! here leaves one audit record.

mod audit;
mod condition;
mod quotas;
mod rules;
mod silences;

use std::sync::Arc;

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

/// A publish that was accepted without being produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suppressed {
    ByRule(String),
    BySilence(String),
}

/// What the pipeline did with an accepted publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    Produced(DeliveryReceipt),
    Suppressed(Suppressed),
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
}

impl Pipeline {
    /// Evaluates `message` and produces it if every stage lets it through;
    /// `principal` is the publishing key, for the audit record.
    pub async fn publish(
        &self,
        topic: &TopicName,
        message: OutgoingMessage,
        principal: Option<&str>,
    ) -> Result<Published, ServiceError> {
        let mut record = AuditRecord {
            id: 0,
            at: Utc::now(),
            tenant: topic.tenant().to_owned(),
            namespace: topic.namespace().to_owned(),
            topic: topic.kafka_topic_name(),
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
        let decision = {
            let facts = MessageFacts::new(
                topic,
                message.key.as_deref(),
                &message.headers,
                &message.payload,
            );
            self.decide(topic, &facts, &mut record)
        };
        // Produced (or not) and audited on a task of its own: a publish
        // whose caller goes away while the broker answers, or while the
        // audit queue has no room, still leaves its record.
        let (bus, audit, topic) = (Arc::clone(&self.bus), self.audit.clone(), topic.clone());
        let settling = self.tasks.spawn(async move {
            let result = match decision {
                Ok(()) => match bus.produce(&topic, message).await {
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
            audit.record(record).await;
            result
        });
        match settling.await {
            Ok(result) => result,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(ServiceError::ShuttingDown),
            },
        }
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
