//! What every scenario shares: the topic, the messages, and the Acteon
//! configurations under test.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use acteon_bus::KafkaConfig;
use acteon_client::Client;
use acteon_core::{Headers, OutgoingMessage, TopicName, TopicSpec};
use acteon_server::Config;
use acteon_server::auth::{ApiKeyConfig, Grant, Op};
use acteon_server::pipeline::{QuotaConfig, RuleConfig};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The benchmark's API key; its SHA-256 is configured in the server.
pub const API_KEY: &str = "bench-secret-not-for-production";

pub const PARTITIONS: u32 = 4;

const TENANT: &str = "demo";

/// Told apart per run: Kafka keeps topics after the servers that made them.
static RUN: LazyLock<String> =
    LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());

/// The topic of one scenario of this run.
pub fn topic(scenario: &str) -> TopicName {
    TopicName::new("bench", TENANT, &format!("{scenario}-{}", *RUN)).expect("a valid name")
}

/// The `seq`-th message: a small order, one of 64 keys.
pub fn message(seq: u64) -> OutgoingMessage {
    OutgoingMessage {
        key: Some(format!("order-{}", seq % 64)),
        payload: serde_json::json!({ "seq": seq, "amount": 120, "kind": "order", "items": [1, 2, 3] }),
        headers: Headers::from([("x-trace-id".to_owned(), "bench".to_owned())]),
    }
}

/// `count` publish request bodies, as the client library sends them.
pub fn publish_bodies(topic: &TopicName, count: u64) -> Arc<[Bytes]> {
    bodies(topic, count, message)
}

fn bodies(topic: &TopicName, count: u64, message: fn(u64) -> OutgoingMessage) -> Arc<[Bytes]> {
    (0..count)
        .map(|seq| {
            let message = message(seq);
            let body = serde_json::json!({
                "topic": topic,
                "key": message.key,
                "payload": message.payload,
                "headers": message.headers,
            });
            Bytes::from(body.to_string())
        })
        .collect()
}

/// `count` batch request bodies of `records` records each, the `seq`-th
/// message going on as in [`publish_bodies`].
pub fn batch_bodies(count: u64, records: u64) -> Arc<[Bytes]> {
    (0..count)
        .map(|body| {
            let records: Vec<_> = (0..records)
                .map(|index| {
                    let message = message(body * records + index);
                    serde_json::json!({
                        "key": message.key,
                        "payload": message.payload,
                        "headers": message.headers,
                    })
                })
                .collect();
            Bytes::from(serde_json::json!({ "records": records }).to_string())
        })
        .collect()
}

/// Properties of the typed scenario's payloads and schema.
const TYPED_PROPERTIES: usize = 20;

/// A JSON Schema of [`TYPED_PROPERTIES`] required properties of every
/// common kind (bounded strings, a pattern, integers, numbers, booleans,
/// an enum, an array), nothing else allowed: what a tool call's
/// arguments look like.
pub fn typed_schema() -> serde_json::Value {
    let properties: serde_json::Map<String, serde_json::Value> = (0..TYPED_PROPERTIES)
        .map(|index| {
            let property = match index % 5 {
                0 => serde_json::json!({ "type": "string", "minLength": 1, "maxLength": 64 }),
                1 => serde_json::json!({ "type": "integer", "minimum": 0, "maximum": 1_000_000 }),
                2 => serde_json::json!({ "type": "number", "exclusiveMinimum": 0 }),
                3 => serde_json::json!({ "enum": ["low", "normal", "high"] }),
                _ => serde_json::json!({
                    "type": "array", "maxItems": 8,
                    "items": { "type": "string", "pattern": "^[a-z]+$" },
                }),
            };
            (format!("p{index:02}"), property)
        })
        .collect();
    let required: Vec<&String> = properties.keys().collect();
    serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The `seq`-th typed message: [`message`] with a payload that
/// [`typed_schema`] accepts.
pub fn typed_message(seq: u64) -> OutgoingMessage {
    let payload: serde_json::Map<String, serde_json::Value> = (0..TYPED_PROPERTIES)
        .map(|index| {
            let value = match index % 5 {
                0 => serde_json::json!(format!("order-{seq}")),
                1 => serde_json::json!(seq % 1_000_000),
                2 => serde_json::json!(12.5),
                3 => serde_json::json!("normal"),
                _ => serde_json::json!(["red", "green"]),
            };
            (format!("p{index:02}"), value)
        })
        .collect();
    OutgoingMessage {
        payload: payload.into(),
        ..message(seq)
    }
}

/// `count` publish request bodies of typed messages.
pub fn typed_bodies(topic: &TopicName, count: u64) -> Arc<[Bytes]> {
    bodies(topic, count, typed_message)
}

/// How the Acteon server under test is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipeline {
    /// Defaults: no authentication, rules or quotas; audit on.
    Defaults,
    /// Authentication on, ten rules that all evaluate and none of which
    /// matches, one quota that never throttles, audit on.
    Full,
}

impl Pipeline {
    pub fn label(self) -> &'static str {
        match self {
            Self::Defaults => "acteon (defaults)",
            Self::Full => "acteon (auth, 10 rules, quota, audit)",
        }
    }

    /// The label of this configuration's batch publishes.
    pub fn batch_label(self) -> &'static str {
        match self {
            Self::Defaults => "acteon (defaults), batches of 100",
            Self::Full => "acteon (auth, 10 rules, quota, audit), batches of 100",
        }
    }

    pub fn bearer(self) -> Option<String> {
        (self == Self::Full).then(|| format!("Bearer {API_KEY}"))
    }
}

/// The server configuration for `pipeline`, on Kafka at `kafka` or on
/// the in-memory backend.
pub fn acteon_config(pipeline: Pipeline, kafka: Option<&str>) -> Config {
    let mut config = Config::default();
    config.bus.kafka = kafka.map(kafka_config);
    if pipeline == Pipeline::Full {
        config.auth.enabled = true;
        config.auth.keys = vec![ApiKeyConfig {
            id: "bench".to_owned(),
            key_sha256: hex::encode(Sha256::digest(API_KEY)),
            grants: vec![Grant {
                namespace: "*".to_owned(),
                tenant: "*".to_owned(),
                ops: vec![Op::Publish, Op::Subscribe, Op::Manage, Op::Metrics],
            }],
        }];
        config.rules = rules();
        config.quotas = vec![QuotaConfig {
            tenant: TENANT.to_owned(),
            namespace: None,
            topic: None,
            max_per_second: u32::MAX,
            burst: None,
        }];
    }
    config
}

/// The Kafka settings of Acteon's producer and of the direct one alike:
/// the defaults, with statistics often enough that the counts of produce
/// requests at a window's edges are at most 100 ms old.
pub fn kafka_config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig {
        statistics_interval_ms: 100,
        ..KafkaConfig::with_bootstrap(bootstrap)
    }
}

/// Ten rules that all evaluate and none of which matches, so every publish
/// pays for all ten conditions.
fn rules() -> Vec<RuleConfig> {
    (0..10)
        .map(|i| RuleConfig {
            name: format!("rule-{i}"),
            priority: i,
            condition: format!(
                "tenant == \"other-{i}\" || (payload.amount > {} && headers[\"x-trace-id\"] == \"none\")",
                1000 + i
            ),
            action: if i % 2 == 0 { "deny" } else { "suppress" }.to_owned(),
            reason: None,
            tenant: None,
            namespace: None,
            topic: None,
        })
        .collect()
}

/// A client of the server at `base_url` with the benchmark's key.
pub fn client(base_url: &str) -> anyhow::Result<Client> {
    Ok(Client::builder(base_url)
        .api_key(API_KEY)
        .request_timeout(Duration::from_secs(30))
        .build()?)
}

/// Creates `topic` through the server's API.
pub async fn create_topic(client: &Client, topic: &TopicName) -> anyhow::Result<()> {
    client.create_bus_topic(&topic_spec(topic)).await?;
    Ok(())
}

/// How every benchmark topic is created.
pub fn topic_spec(topic: &TopicName) -> TopicSpec {
    TopicSpec {
        namespace: topic.namespace().to_owned(),
        tenant: topic.tenant().to_owned(),
        name: topic.name().to_owned(),
        partitions: PARTITIONS,
        replication_factor: 1,
        retention_ms: None,
        schema: None,
    }
}
