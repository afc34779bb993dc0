//! The topic registry: topic metadata in the state store, topics in the
//! broker, kept in step by state-first sequential writes.
//!
//! Create writes the state row, then the Kafka topic, and removes the row
//! again if Kafka fails. Delete removes the row, then the Kafka topic; a Kafka
//! failure there leaves an orphan topic in Kafka, which is harmless (a later
//! create of the same topic adopts it), whereas a dangling row would block
//! re-creation.
//!
//! The registry also keeps the names of the registered topics in memory:
//! every publish and subscribe checks its topic, and a state-store read
//! there (a blocking pool hop and a lock shared with the audit writer) cost
//! more than the rest of a publish. The server owns its state store, so
//! every change to the stored topics passes through here; creates, deletes
//! and the start-up restore take turns, so that a delete cannot slip in
//! between a create's state write and its entry in memory. (A create whose
//! rollback failed leaves a row that is not in memory: the topic is listed,
//! refuses publishes, and is restored at the next start.)

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use acteon_bus::{BusBackend, BusError};
use acteon_core::{Topic, TopicName, TopicRecord};
use chrono::Utc;
use serde::Deserialize;

use crate::error::ServiceError;
use crate::state::{KeyKind, StateError, StateStore};

/// Filters of the topic list; `None` matches everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicFilter {
    pub namespace: Option<String>,
    pub tenant: Option<String>,
}

impl TopicFilter {
    fn matches(&self, name: &TopicName) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == name.namespace())
            && self
                .tenant
                .as_deref()
                .is_none_or(|tenant| tenant == name.tenant())
    }
}

#[derive(Debug, Clone)]
pub struct TopicRegistry {
    state: Arc<dyn StateStore>,
    bus: Arc<dyn BusBackend>,
    /// The stored topics: filled by [`TopicRegistry::restore`], then kept
    /// by create and delete.
    known: Arc<RwLock<HashSet<TopicName>>>,
    /// Held by create, delete and restore while they change topics.
    changing: Arc<tokio::sync::Mutex<()>>,
}

impl TopicRegistry {
    pub fn new(state: Arc<dyn StateStore>, bus: Arc<dyn BusBackend>) -> Self {
        Self {
            state,
            bus,
            known: Arc::default(),
            changing: Arc::default(),
        }
    }

    fn known(&self) -> std::sync::RwLockReadGuard<'_, HashSet<TopicName>> {
        self.known.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn known_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<TopicName>> {
        self.known.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub async fn create(&self, topic: Topic) -> Result<TopicRecord, ServiceError> {
        let kafka_name = topic.kafka_topic_name();
        let record = TopicRecord {
            topic,
            created_at: Utc::now(),
        };
        let row = serde_json::to_value(&record).expect("topic records serialise");
        let _changing = self.changing.lock().await;
        if !self
            .state
            .insert_new(KeyKind::BusTopic, &kafka_name, &row)
            .await?
        {
            return Err(ServiceError::TopicExists { topic: kafka_name });
        }
        if let Err(bus_error) = self.bus.create_topic(&record.topic).await {
            self.roll_back_create(&kafka_name, &bus_error).await;
            return Err(bus_error.into());
        }
        tracing::info!(topic = %kafka_name, partitions = record.topic.partitions(), "topic created");
        self.known_mut().insert(record.topic.name().clone());
        Ok(record)
    }

    async fn roll_back_create(&self, kafka_name: &str, bus_error: &BusError) {
        if let Err(rollback_error) = self.state.delete(KeyKind::BusTopic, kafka_name).await {
            tracing::error!(
                topic = %kafka_name,
                state_kind = %KeyKind::BusTopic,
                state_id = %kafka_name,
                %bus_error,
                %rollback_error,
                "topic create failed in Kafka and its state row could not be removed: \
                 the row blocks re-creation until it is deleted (DELETE /v1/bus/topics/{kafka_name})"
            );
        }
    }

    /// Creates every stored topic in the backend, so a fresh in-memory
    /// backend serves the topics that survived a restart; on Kafka the
    /// create is idempotent. Stops at the first sign the broker is down:
    /// Kafka keeps its topics, and publishes answer 503 until it is back.
    pub async fn restore(&self) -> Result<(), ServiceError> {
        let _changing = self.changing.lock().await;
        let records = self.list(&TopicFilter::default()).await?;
        self.known_mut()
            .extend(records.iter().map(|record| record.topic.name().clone()));
        for record in &records {
            match self.bus.create_topic(&record.topic).await {
                Ok(()) => {}
                Err(error) if error.is_retriable() => {
                    tracing::warn!(%error, "broker unavailable: stored topics not checked at start-up");
                    return Ok(());
                }
                Err(error) => tracing::error!(
                    topic = %record.topic.kafka_topic_name(),
                    %error,
                    "stored topic could not be created in the backend"
                ),
            }
        }
        tracing::info!(topics = records.len(), "stored topics restored");
        Ok(())
    }

    /// Deletes the topic; unknown topics are [`ServiceError::TopicNotFound`].
    pub async fn delete(&self, name: &TopicName) -> Result<(), ServiceError> {
        let kafka_name = name.kafka_topic_name();
        let _changing = self.changing.lock().await;
        if !self.state.delete(KeyKind::BusTopic, &kafka_name).await? {
            return Err(ServiceError::TopicNotFound { topic: kafka_name });
        }
        self.known_mut().remove(name);
        match self.bus.delete_topic(name).await {
            Ok(()) => tracing::info!(topic = %kafka_name, "topic deleted"),
            Err(BusError::UnknownTopic { .. }) => {
                tracing::warn!(topic = %kafka_name, "topic deleted; it was already gone from the broker");
            }
            Err(error) => tracing::error!(
                topic = %kafka_name,
                %error,
                "topic deleted from the state store but not from Kafka: delete the Kafka topic by hand, \
                 or create the same topic again to adopt it"
            ),
        }
        Ok(())
    }

    /// Ok if the topic is registered, else [`ServiceError::TopicNotFound`].
    pub fn require_registered(&self, name: &TopicName) -> Result<(), ServiceError> {
        if self.known().contains(name) {
            Ok(())
        } else {
            Err(ServiceError::TopicNotFound {
                topic: name.kafka_topic_name(),
            })
        }
    }

    /// Topics matching `filter`, in Kafka-name order.
    pub async fn list(&self, filter: &TopicFilter) -> Result<Vec<TopicRecord>, ServiceError> {
        let mut topics = Vec::new();
        for row in self.state.list(KeyKind::BusTopic).await? {
            let record = decode("*", row)?;
            if filter.matches(record.topic.name()) {
                topics.push(record);
            }
        }
        Ok(topics)
    }
}

fn decode(kafka_name: &str, row: serde_json::Value) -> Result<TopicRecord, ServiceError> {
    serde_json::from_value(row).map_err(|source| {
        StateError::Corrupt {
            kind: KeyKind::BusTopic,
            id: kafka_name.to_owned(),
            source,
        }
        .into()
    })
}
