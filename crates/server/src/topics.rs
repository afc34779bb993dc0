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
//!
//! A topic may be bound to a schema of its own tenant's registry. Binding
//! holds the schema registry still (see [`SchemaRegistry::hold`]) from the
//! check that the version exists to the write, so a version cannot be
//! deleted under a new binding; the registry is always taken first, then
//! the topics.
//!
//! Kafka refuses a topic whose name equals another's once '.' and '_' are
//! swapped (`ns.t.a_b` and `ns.t_a.b`), so the registry refuses such a
//! create itself, before either system is written.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use acteon_bus::{BusBackend, BusError};
use acteon_core::{
    NameError, SchemaBinding, SchemaVersionRef, Scope, Topic, TopicName, TopicRecord,
};
use chrono::Utc;
use serde::Deserialize;

use crate::error::ServiceError;
use crate::schemas::registry::{SchemaRegistry, SubjectName};
use crate::state::{KeyKind, StateError, StateStore};

/// Filters of the topic list; `None` matches everything.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopicFilter {
    #[param(value_type = Option<acteon_core::Fragment>)]
    pub namespace: Option<String>,
    #[param(value_type = Option<acteon_core::Fragment>)]
    pub tenant: Option<String>,
}

impl TopicFilter {
    pub fn scope(&self) -> Result<Scope, NameError> {
        Scope::new(self.namespace.as_deref(), self.tenant.as_deref(), None)
    }
}

/// The name Kafka compares topic names by: '.' and '_' alike.
fn collision_key(name: &TopicName) -> String {
    name.kafka_topic_name().replace('.', "_")
}

/// A stored topic, as every publish needs it.
#[derive(Debug)]
struct KnownTopic {
    name: TopicName,
    schema: Option<SchemaBinding>,
}

impl KnownTopic {
    fn of(topic: &Topic) -> Self {
        Self {
            name: topic.name().clone(),
            schema: topic.schema().cloned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TopicRegistry {
    state: Arc<dyn StateStore>,
    bus: Arc<dyn BusBackend>,
    schemas: Arc<SchemaRegistry>,
    max_per_tenant: usize,
    /// The stored topics, by [`collision_key`]: filled by
    /// [`TopicRegistry::restore`], then kept by create, bind and delete.
    known: Arc<RwLock<HashMap<String, KnownTopic>>>,
    /// Held by create, delete and restore while they change topics.
    changing: Arc<tokio::sync::Mutex<()>>,
}

impl TopicRegistry {
    pub fn new(
        state: Arc<dyn StateStore>,
        bus: Arc<dyn BusBackend>,
        schemas: Arc<SchemaRegistry>,
        max_per_tenant: usize,
    ) -> Self {
        Self {
            state,
            bus,
            schemas,
            max_per_tenant,
            known: Arc::default(),
            changing: Arc::default(),
        }
    }

    fn known(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, KnownTopic>> {
        self.known.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn known_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, KnownTopic>> {
        self.known.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses a create that Kafka would refuse as a collision, or that
    /// would take the tenant over its limit.
    fn check_room(&self, name: &TopicName) -> Result<(), ServiceError> {
        let known = self.known();
        if let Some(existing) = known.get(&collision_key(name)) {
            return Err(if &existing.name == name {
                ServiceError::TopicExists {
                    topic: name.kafka_topic_name().to_owned(),
                }
            } else {
                ServiceError::TopicCollides {
                    topic: name.kafka_topic_name().to_owned(),
                }
            });
        }
        let held = known
            .values()
            .filter(|t| t.name.tenant() == name.tenant())
            .count();
        if held >= self.max_per_tenant {
            return Err(ServiceError::LimitReached(format!(
                "tenant {} has {held} topics, the most max_topics_per_tenant allows",
                name.tenant()
            )));
        }
        Ok(())
    }

    pub async fn create(&self, topic: Topic) -> Result<TopicRecord, ServiceError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        let record = TopicRecord {
            topic,
            created_at: Utc::now(),
        };
        let row = serde_json::to_value(&record).expect("topic records serialise");
        let _schemas = self
            .hold_schema(record.topic.name(), record.topic.schema())
            .await?;
        let _changing = self.changing.lock().await;
        self.check_room(record.topic.name())?;
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
        self.known_mut().insert(
            collision_key(record.topic.name()),
            KnownTopic::of(&record.topic),
        );
        Ok(record)
    }

    /// Holds the schema registry still while `topic` is bound to
    /// `schema`, once it is found to name a version that exists.
    async fn hold_schema(
        &self,
        topic: &TopicName,
        schema: Option<&SchemaBinding>,
    ) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>, ServiceError> {
        let Some(binding) = schema else {
            return Ok(None);
        };
        let subject = SubjectName::of_topic(topic, &binding.subject)?;
        let held = self.schemas.hold().await;
        self.schemas.require(&subject, binding.version)?;
        Ok(Some(held))
    }

    /// Binds the topic to `schema`, or unbinds it with `None`.
    pub async fn bind(
        &self,
        name: &TopicName,
        schema: Option<SchemaBinding>,
    ) -> Result<TopicRecord, ServiceError> {
        let kafka_name = name.kafka_topic_name().to_owned();
        let not_found = || ServiceError::TopicNotFound {
            topic: kafka_name.clone(),
        };
        let _schemas = self.hold_schema(name, schema.as_ref()).await?;
        let _changing = self.changing.lock().await;
        // Only a topic that takes publishes; a row a failed create left
        // behind is not one.
        self.require_registered(name)?;
        let row = self
            .state
            .get(KeyKind::BusTopic, &kafka_name)
            .await?
            .ok_or_else(not_found)?;
        let mut record: TopicRecord =
            serde_json::from_value(row).map_err(|source| StateError::Corrupt {
                kind: KeyKind::BusTopic,
                id: kafka_name.clone(),
                source,
            })?;
        record.topic = record.topic.with_schema(schema)?;
        let row = serde_json::to_value(&record).expect("topic records serialise");
        self.state.put(KeyKind::BusTopic, &kafka_name, &row).await?;
        self.known_mut()
            .insert(collision_key(name), KnownTopic::of(&record.topic));
        tracing::info!(topic = %kafka_name, schema = ?record.topic.schema(), "topic schema set");
        Ok(record)
    }

    /// Whether a topic is bound to `version` of `subject`: by its number,
    /// or as `latest` when `latest` says it is the subject's latest.
    pub fn binds(&self, subject: &SubjectName, version: u32, latest: bool) -> bool {
        self.known().values().any(|topic| {
            topic.schema.as_ref().is_some_and(|binding| {
                topic.name.namespace() == subject.namespace.as_str()
                    && topic.name.tenant() == subject.tenant.as_str()
                    && binding.subject == subject.subject.as_str()
                    && match binding.version {
                        SchemaVersionRef::Number(n) => n == version,
                        SchemaVersionRef::Latest => latest,
                    }
            })
        })
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
        let records = self.list(&Scope::all()).await?;
        self.known_mut().extend(records.iter().map(|record| {
            (
                collision_key(record.topic.name()),
                KnownTopic::of(&record.topic),
            )
        }));
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
        let kafka_name = name.kafka_topic_name().to_owned();
        let _changing = self.changing.lock().await;
        if !self.state.delete(KeyKind::BusTopic, &kafka_name).await? {
            return Err(ServiceError::TopicNotFound { topic: kafka_name });
        }
        self.known_mut().remove(&collision_key(name));
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
        self.schema_of(name).map(drop)
    }

    /// The schema binding of a registered topic, else
    /// [`ServiceError::TopicNotFound`].
    pub fn schema_of(&self, name: &TopicName) -> Result<Option<SchemaBinding>, ServiceError> {
        match self.known().get(&collision_key(name)) {
            Some(topic) if &topic.name == name => Ok(topic.schema.clone()),
            _ => Err(ServiceError::TopicNotFound {
                topic: name.kafka_topic_name().to_owned(),
            }),
        }
    }

    /// Topics in `scope`, in Kafka-name order. A row that cannot be read is
    /// logged and skipped, so one corrupt row does not hide the others or
    /// stop the server from starting.
    pub async fn list(&self, scope: &Scope) -> Result<Vec<TopicRecord>, ServiceError> {
        let mut topics = Vec::new();
        for row in self.state.list(KeyKind::BusTopic).await? {
            match serde_json::from_value::<TopicRecord>(row) {
                Ok(record) if scope.covers_topic(record.topic.name()) => topics.push(record),
                Ok(_) => {}
                Err(source) => {
                    let error = StateError::Corrupt {
                        kind: KeyKind::BusTopic,
                        id: "?".to_owned(),
                        source,
                    };
                    tracing::error!(%error, "a stored topic could not be read; skipped");
                }
            }
        }
        Ok(topics)
    }
}

#[cfg(test)]
mod tests {
    use acteon_bus::MemoryBackend;
    use serde_json::json;

    use super::*;
    use crate::state::MemoryStore;

    #[tokio::test]
    async fn a_corrupt_row_is_skipped_and_the_others_are_restored_with_their_schemas() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let bus: Arc<dyn BusBackend> = Arc::new(MemoryBackend::default());
        let schemas = Arc::new(
            SchemaRegistry::load(
                Arc::clone(&state),
                (&crate::limits::LimitsConfig::default()).into(),
            )
            .await
            .unwrap(),
        );
        let subject = SubjectName::parse("ns", "t", "calls").unwrap();
        schemas
            .register(&subject, json!({ "type": "object" }))
            .await
            .unwrap();
        let registry = TopicRegistry::new(
            Arc::clone(&state),
            Arc::clone(&bus),
            Arc::clone(&schemas),
            10,
        );
        let binding = SchemaBinding {
            subject: "calls".to_owned(),
            version: SchemaVersionRef::Number(1),
        };
        let topic = Topic::new(TopicName::new("ns", "t", "good").unwrap(), 1, 1, None)
            .unwrap()
            .with_schema(Some(binding.clone()))
            .unwrap();
        registry.create(topic).await.unwrap();
        state
            .put(KeyKind::BusTopic, "ns.t.bad", &json!({ "topic": 42 }))
            .await
            .unwrap();

        let restarted = TopicRegistry::new(state, bus, Arc::clone(&schemas), 10);
        restarted.restore().await.unwrap();
        let names: Vec<_> = restarted
            .list(&Scope::all())
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.topic.kafka_topic_name().to_owned())
            .collect();
        assert_eq!(names, ["ns.t.good"]);
        let good = "ns.t.good".parse().unwrap();
        assert_eq!(restarted.schema_of(&good).unwrap(), Some(binding));
        assert!(restarted.binds(&subject, 1, false));
        restarted.bind(&good, None).await.unwrap();
        assert!(!restarted.binds(&subject, 1, true));
    }
}
