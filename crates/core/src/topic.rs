//! A topic: its name plus the settings its Kafka topic is created with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::name::{NameError, TopicName};
use crate::schema::SchemaBinding;

/// Upper bound on partitions per topic. Every partition costs memory on the
/// in-memory backend and file handles on a broker; a typo such as `100000`
/// should be refused, not attempted.
pub const MAX_PARTITIONS: u32 = 1024;

/// Upper bound on `retention_ms`: ten years. Longer values are almost
/// certainly mistakes, and unbounded ones overflow date arithmetic; leave
/// `retention_ms` out to use the broker's default.
pub const MAX_RETENTION_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// Why a topic definition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("partitions must be between 1 and {MAX_PARTITIONS}, got {0}")]
    Partitions(u32),
    #[error("replication_factor must be at least 1, got {0}")]
    ReplicationFactor(i16),
    #[error("retention_ms must be between 1 and {MAX_RETENTION_MS} (ten years), got {0}")]
    RetentionMs(i64),
}

/// A topic definition as a client writes it, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicSpec {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::Fragment))]
    pub namespace: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::Fragment))]
    pub tenant: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::Fragment))]
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1024))]
    pub partitions: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub replication_factor: i16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 315_360_000_000_i64)
    )]
    pub retention_ms: Option<i64>,
    /// The schema every record produced to the topic must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaBinding>,
}

/// A validated topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TopicRepr", into = "TopicRepr")]
pub struct Topic {
    name: TopicName,
    partitions: u32,
    replication_factor: i16,
    retention_ms: Option<i64>,
    schema: Option<SchemaBinding>,
}

impl Topic {
    pub fn new(
        name: TopicName,
        partitions: u32,
        replication_factor: i16,
        retention_ms: Option<i64>,
    ) -> Result<Self, TopicError> {
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicError::Partitions(partitions));
        }
        if replication_factor < 1 {
            return Err(TopicError::ReplicationFactor(replication_factor));
        }
        if let Some(ms) = retention_ms.filter(|ms| !(1..=MAX_RETENTION_MS).contains(ms)) {
            return Err(TopicError::RetentionMs(ms));
        }
        Ok(Self {
            name,
            partitions,
            replication_factor,
            retention_ms,
            schema: None,
        })
    }

    /// The same topic bound to `schema`, or unbound with `None`.
    pub fn with_schema(self, schema: Option<SchemaBinding>) -> Result<Self, TopicError> {
        if let Some(binding) = &schema {
            binding.check()?;
        }
        Ok(Self { schema, ..self })
    }

    pub fn name(&self) -> &TopicName {
        &self.name
    }

    pub fn kafka_topic_name(&self) -> &str {
        self.name.kafka_topic_name()
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn replication_factor(&self) -> i16 {
        self.replication_factor
    }

    /// How long the broker keeps records; `None` leaves the broker's default.
    pub fn retention_ms(&self) -> Option<i64> {
        self.retention_ms
    }

    pub fn schema(&self) -> Option<&SchemaBinding> {
        self.schema.as_ref()
    }
}

impl TryFrom<TopicSpec> for Topic {
    type Error = TopicError;

    fn try_from(spec: TopicSpec) -> Result<Self, Self::Error> {
        let name = TopicName::new(&spec.namespace, &spec.tenant, &spec.name)?;
        Self::new(
            name,
            spec.partitions,
            spec.replication_factor,
            spec.retention_ms,
        )?
        .with_schema(spec.schema)
    }
}

/// A registered topic, as stored and as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicRecord {
    #[serde(flatten)]
    pub topic: Topic,
    pub created_at: DateTime<Utc>,
}

/// The wire form: the spec's fields plus the derived Kafka name.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct TopicRepr {
    #[serde(flatten)]
    spec: TopicSpec,
    /// `{namespace}.{tenant}.{name}`, the topic's name in Kafka.
    #[serde(default, skip_deserializing)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    kafka_name: String,
}

/// A topic's schema is its wire form's.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Topic {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <TopicRepr as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Topic {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <TopicRepr as utoipa::ToSchema>::schemas(schemas);
    }
}

impl TryFrom<TopicRepr> for Topic {
    type Error = TopicError;

    fn try_from(repr: TopicRepr) -> Result<Self, Self::Error> {
        repr.spec.try_into()
    }
}

impl From<Topic> for TopicRepr {
    fn from(topic: Topic) -> Self {
        Self {
            kafka_name: topic.kafka_topic_name().to_owned(),
            spec: TopicSpec {
                namespace: topic.name.namespace().to_owned(),
                tenant: topic.name.tenant().to_owned(),
                name: topic.name.name().to_owned(),
                partitions: topic.partitions,
                replication_factor: topic.replication_factor,
                retention_ms: topic.retention_ms,
                schema: topic.schema,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TopicSpec {
        TopicSpec {
            namespace: "agents".into(),
            tenant: "demo".into(),
            name: "inbox".into(),
            partitions: 4,
            replication_factor: 1,
            retention_ms: Some(60_000),
            schema: None,
        }
    }

    #[test]
    fn a_valid_spec_becomes_a_topic() {
        let topic = Topic::try_from(spec()).unwrap();
        assert_eq!(topic.kafka_topic_name(), "agents.demo.inbox");
        assert_eq!(topic.partitions(), 4);
        assert_eq!(topic.retention_ms(), Some(60_000));
    }

    #[test]
    fn settings_out_of_range_are_rejected() {
        let cases = [
            (
                TopicSpec {
                    partitions: 0,
                    ..spec()
                },
                TopicError::Partitions(0),
            ),
            (
                TopicSpec {
                    partitions: MAX_PARTITIONS + 1,
                    ..spec()
                },
                TopicError::Partitions(MAX_PARTITIONS + 1),
            ),
            (
                TopicSpec {
                    replication_factor: 0,
                    ..spec()
                },
                TopicError::ReplicationFactor(0),
            ),
            (
                TopicSpec {
                    retention_ms: Some(0),
                    ..spec()
                },
                TopicError::RetentionMs(0),
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(Topic::try_from(spec).unwrap_err(), expected);
        }
    }

    #[test]
    fn an_invalid_fragment_is_reported_as_a_name_error() {
        let err = Topic::try_from(TopicSpec {
            tenant: "a.b".into(),
            ..spec()
        })
        .unwrap_err();
        assert!(matches!(
            err,
            TopicError::Name(NameError::ContainsDot { .. })
        ));
    }

    #[test]
    fn json_carries_the_kafka_name_and_round_trips() {
        let topic = Topic::try_from(spec()).unwrap();
        let json = serde_json::to_value(&topic).unwrap();
        assert_eq!(json["kafka_name"], "agents.demo.inbox");
        assert_eq!(json["namespace"], "agents");
        let back: Topic = serde_json::from_value(json).unwrap();
        assert_eq!(back, topic);
    }
}
