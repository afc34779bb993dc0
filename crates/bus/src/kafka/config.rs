//! Settings of the Kafka backend and the librdkafka properties they become.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// The environment variable that names the Kafka bootstrap servers, for the
/// server's configuration and for the Kafka tests alike.
pub const KAFKA_BOOTSTRAP_ENV: &str = "ACTEON_KAFKA_BOOTSTRAP";

/// The group id of consumers in no group.
const READER_GROUP_ID: &str = "acteon.reader";

/// librdkafka properties that `properties` may not set, and why: each is
/// either a setting of its own here, or a guarantee the backend relies on
/// (acknowledged means written by every in-sync replica, retries never
/// duplicate, subscriptions commit nothing and create no topics).
const PROTECTED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set bootstrap_servers"),
    ("metadata.broker.list", "set bootstrap_servers"),
    ("client.id", "set client_id"),
    ("enable.idempotence", "set idempotence"),
    (
        "acks",
        "a receipt means every in-sync replica has the record",
    ),
    (
        "request.required.acks",
        "a receipt means every in-sync replica has the record",
    ),
    ("linger.ms", "set linger_ms"),
    ("queue.buffering.max.ms", "set linger_ms"),
    ("batch.size", "set batch_size"),
    ("max.in.flight.requests.per.connection", "set max_in_flight"),
    ("max.in.flight", "set max_in_flight"),
    ("message.timeout.ms", "set produce_timeout_ms"),
    ("delivery.timeout.ms", "set produce_timeout_ms"),
    ("statistics.interval.ms", "set statistics_interval_ms"),
    ("group.id", "subscriptions name their groups"),
    ("enable.auto.commit", "subscriptions commit nothing"),
    ("auto.commit.enable", "subscriptions commit nothing"),
    ("enable.auto.offset.store", "subscriptions commit nothing"),
    ("auto.offset.reset", "subscriptions pass from="),
    (
        "allow.auto.create.topics",
        "topics exist only through the topic API",
    ),
    (
        "topic.metadata.propagation.max.ms",
        "a produce to an unknown topic must fail as unknown, not time out",
    ),
    ("session.timeout.ms", "set session_timeout_ms"),
    ("max.poll.interval.ms", "set max_poll_interval_ms"),
    ("heartbeat.interval.ms", "set heartbeat_interval_ms"),
    ("fetch.wait.max.ms", "set fetch_wait_max_ms"),
    ("queued.max.messages.kbytes", "set consumer_queue_kbytes"),
    ("reconnect.backoff.max.ms", "set reconnect_backoff_max_ms"),
];

/// Parts of property names whose values are secrets, kept out of `Debug`.
const SECRET_PROPERTY_PARTS: &[&str] = &[
    "password",
    "secret",
    "jaas",
    "token",
    "ssl.key",
    "oauthbearer",
];

/// A `properties` entry that may not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus.kafka.properties may not set {property:?}: {reason}")]
pub struct ProtectedProperty {
    pub property: String,
    pub reason: &'static str,
}

/// The `[bus.kafka]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    pub client_id: String,
    /// How long a publish waits for the broker's acknowledgement.
    pub produce_timeout_ms: u64,
    /// librdkafka's `linger.ms`. Publishes are request/response: each caller
    /// awaits its own ack, so every millisecond of linger is added to each
    /// publish's latency. 0 still batches whatever queues up while a request
    /// is in flight, which is enough at HTTP rates.
    pub linger_ms: u64,
    /// librdkafka's `max.in.flight.requests.per.connection`: produce
    /// requests sent to a broker before the first is answered. At 1, the
    /// records that arrive while a request is out wait for its answer and
    /// leave together in the next: batching that grows with the load and
    /// costs a lone publish nothing, where `linger_ms` delays every one.
    /// Many concurrent single-record publishes then need far fewer
    /// requests, and less CPU per record in the server and the broker.
    pub max_in_flight: u32,
    /// librdkafka's `enable.idempotence`: retries never duplicate or reorder
    /// a partition's records.
    pub idempotence: bool,
    /// librdkafka's `batch.size`, in bytes.
    pub batch_size: u32,
    /// The producer's `statistics.interval.ms`: how often its counts of
    /// produce requests and records are brought up to date (the metrics
    /// `acteon_kafka_produce_requests_total` and
    /// `acteon_kafka_produced_records_total`). librdkafka writes its whole
    /// statistics document each time, so a producer of many partitions
    /// pays for a short interval; 0 turns the counts off.
    pub statistics_interval_ms: u64,
    /// How long topic create / delete and metadata requests may take.
    pub admin_timeout_ms: u64,
    /// Consumer `session.timeout.ms`: how soon a crashed server's
    /// subscriptions are evicted. A closed subscription leaves at once.
    pub session_timeout_ms: u64,
    /// Consumer `max.poll.interval.ms`; also bounds how long a rebalance
    /// waits for members.
    pub max_poll_interval_ms: u64,
    /// Consumer `heartbeat.interval.ms`: members learn of a rebalance at
    /// their next heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Consumer `fetch.wait.max.ms`: the longest a fetch waits at the broker
    /// for new records.
    pub fetch_wait_max_ms: u64,
    /// librdkafka's `reconnect.backoff.max.ms`: the longest wait between
    /// attempts to reach a broker that went away, so the backend notices
    /// within about this long that it is back (librdkafka's default is 10 s).
    pub reconnect_backoff_max_ms: u64,
    /// Consumer `queued.max.messages.kbytes`: the most each subscription
    /// prefetches from the broker. librdkafka's default (64 MiB) per
    /// subscription would let a few thousand idle readers hold gigabytes.
    pub consumer_queue_kbytes: u32,
    /// Further librdkafka properties, applied last (for TLS, SASL, tuning);
    /// none of [`PROTECTED_PROPERTIES`].
    pub properties: Properties,
}

/// Further librdkafka properties. Its `Debug` output shows secret-looking
/// ones (SASL passwords, key passwords, tokens) as `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Properties(pub BTreeMap<String, String>);

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, value)| {
                let lowered = key.to_ascii_lowercase();
                let secret = SECRET_PROPERTY_PARTS
                    .iter()
                    .any(|part| lowered.contains(part));
                (key, if secret { "<redacted>" } else { value.as_str() })
            }))
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "localhost:9092".to_owned(),
            client_id: "acteon".to_owned(),
            produce_timeout_ms: 5_000,
            linger_ms: 0,
            max_in_flight: 1,
            idempotence: true,
            batch_size: 1_000_000,
            statistics_interval_ms: 10_000,
            admin_timeout_ms: 10_000,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 30_000,
            heartbeat_interval_ms: 3_000,
            fetch_wait_max_ms: 100,
            reconnect_backoff_max_ms: 1_000,
            consumer_queue_kbytes: 2_048,
            properties: Properties::default(),
        }
    }
}

impl KafkaConfig {
    pub fn with_bootstrap(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            ..Self::default()
        }
    }

    /// Refuses `properties` that would override a setting of its own or a
    /// guarantee of the backend.
    pub fn check_properties(&self) -> Result<(), ProtectedProperty> {
        for key in self.properties.0.keys() {
            if let Some((property, reason)) = PROTECTED_PROPERTIES
                .iter()
                .find(|(property, _)| property.eq_ignore_ascii_case(key.trim()))
            {
                return Err(ProtectedProperty {
                    property: (*property).to_owned(),
                    reason,
                });
            }
        }
        Ok(())
    }

    pub(super) fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }

    pub(super) fn admin_timeout(&self) -> Duration {
        Duration::from_millis(self.admin_timeout_ms)
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            // Topics exist only through Acteon's topic API.
            .set("allow.auto.create.topics", "false")
            .set(
                "reconnect.backoff.max.ms",
                self.reconnect_backoff_max_ms.to_string(),
            );
        config
    }

    fn with_overrides(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.properties.0 {
            config.set(key, value);
        }
        config
    }

    /// The librdkafka properties of the backend's producer; public so that
    /// a benchmark's direct producer can use exactly the same ones.
    pub fn producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_size.to_string())
            .set(
                "max.in.flight.requests.per.connection",
                self.max_in_flight.to_string(),
            )
            .set("message.timeout.ms", self.produce_timeout_ms.to_string())
            .set(
                "statistics.interval.ms",
                self.statistics_interval_ms.to_string(),
            )
            // A produce to a topic the broker does not know must fail as
            // "unknown topic" before it fails as a timeout.
            .set(
                "topic.metadata.propagation.max.ms",
                (self.produce_timeout_ms / 2).to_string(),
            )
            .set("enable.idempotence", self.idempotence.to_string());
        self.with_overrides(config)
    }

    pub(super) fn admin(&self) -> ClientConfig {
        self.with_overrides(self.base())
    }

    /// Base settings of every consumer.
    fn fetching(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set(
                "queued.max.messages.kbytes",
                self.consumer_queue_kbytes.to_string(),
            );
        config
    }

    /// A consumer in group `group_id`.
    pub(super) fn consumer(&self, group_id: &str, auto_offset_reset: &str) -> ClientConfig {
        let mut config = self.fetching();
        config
            .set("group.id", group_id)
            .set("auto.offset.reset", auto_offset_reset)
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "max.poll.interval.ms",
                self.max_poll_interval_ms.to_string(),
            );
        self.with_overrides(config)
    }

    /// A consumer in no group, reading the partitions it assigns itself;
    /// with `partition_eof`, it says when it reaches a partition's end.
    pub(super) fn reader(&self, partition_eof: bool) -> ClientConfig {
        let mut config = self.fetching();
        config
            // librdkafka assigns partitions only with a group id set; this
            // one is never joined and never committed to.
            .set("group.id", READER_GROUP_ID)
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", partition_eof.to_string());
        self.with_overrides(config)
    }
}
