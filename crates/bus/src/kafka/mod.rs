//! The Kafka backend, over rdkafka.
//!
//! One idempotent producer ([`producer`], replaced when it can no longer
//! deliver) and one admin client serve every call; each group subscription
//! is its own consumer ([`subscription`]), and the broadcast streams of a
//! topic share one ([`broadcast`]).

mod broadcast;
mod config;
mod error;
mod producer;
mod stats;
mod subscription;

use std::sync::Arc;
use std::time::Duration;

use acteon_core::{DeliveryReceipt, OutgoingMessage, StartPosition, Topic, TopicName};
use async_trait::async_trait;
use chrono::Utc;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use self::broadcast::Broadcasts;
pub use self::config::{KAFKA_BOOTSTRAP_ENV, KafkaConfig, ProtectedProperty};
use self::error::{classify, refuses_producer_state};
use self::producer::{KEEPS_FAILING_FOR, Producer};
pub use self::stats::{CountingContext, ProduceTally};
use self::subscription::Subscriptions;
use crate::{
    BusBackend, BusError, EventStream, GroupId, GroupMember, Operation, PartitionOffsets,
    ProduceFigures, Watermarks,
};

/// `message`'s payload as the JSON text a record carries. Written straight
/// into bytes: through `Display` each piece of the text would pass a
/// formatter and the string would start empty.
pub fn kafka_payload(message: &OutgoingMessage) -> Vec<u8> {
    serde_json::to_vec(&message.payload).expect("a JSON value's keys are strings")
}

/// The record the Kafka backend produces for `message` to `kafka_topic`:
/// its key, its headers, and `payload`, from [`kafka_payload`], which the
/// record borrows.
pub fn kafka_record<'a>(
    kafka_topic: &'a str,
    message: &'a OutgoingMessage,
    payload: &'a [u8],
) -> FutureRecord<'a, str, [u8]> {
    let headers = message.headers.iter().fold(
        OwnedHeaders::new_with_capacity(message.headers.len()),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        },
    );
    let record = FutureRecord::to(kafka_topic)
        .payload(payload)
        .headers(headers);
    match &message.key {
        Some(key) => record.key(key.as_str()),
        None => record,
    }
}

/// Longest a readiness check waits for the broker.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The Kafka backend. Cheap to share behind an `Arc`.
pub struct KafkaBackend {
    config: KafkaConfig,
    producer: Producer,
    admin: Arc<AdminClient<DefaultClientContext>>,
    subscriptions: Subscriptions,
    broadcasts: Broadcasts,
}

impl std::fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("bootstrap_servers", &self.config.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

impl KafkaBackend {
    /// Builds the clients. Connecting is lazy: this succeeds with the broker
    /// down, and calls fail as [`BusError::Unavailable`] until it is up.
    /// Properties that [`KafkaConfig::check_properties`] refuses are
    /// [`BusError::Rejected`].
    pub fn new(config: KafkaConfig) -> Result<Self, BusError> {
        config
            .check_properties()
            .map_err(|refused| BusError::Rejected {
                operation: Operation::Metadata,
                topic: "*".to_owned(),
                source: Box::new(refused),
            })?;
        let cluster = |source: KafkaError| classify(Operation::Metadata, "*", source);
        let admin = Arc::new(config.admin().create().map_err(cluster)?);
        let producer = Producer::new(&config, Arc::clone(&admin)).map_err(cluster)?;
        Ok(Self {
            config,
            producer,
            admin,
            subscriptions: Subscriptions::default(),
            broadcasts: Broadcasts::default(),
        })
    }

    fn admin_options(&self) -> AdminOptions {
        let timeout = self.config.admin_timeout();
        AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout))
    }

    /// Cluster metadata for one topic, or for all when `topic` is `None`,
    /// waiting at most `timeout` (it blocks a thread that long).
    async fn metadata(&self, topic: Option<&str>, timeout: Duration) -> Result<Metadata, BusError> {
        let admin = Arc::clone(&self.admin);
        let topic = topic.map(str::to_owned);
        let label = topic.clone().unwrap_or_else(|| "*".to_owned());
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(topic.as_deref(), timeout))
            .await
            .expect("metadata task panicked")
            .map_err(|source| classify(Operation::Metadata, &label, source))
    }

    /// The partition count of an existing topic.
    async fn partition_count(&self, kafka_name: &str) -> Result<u32, BusError> {
        let metadata = self
            .metadata(Some(kafka_name), self.config.admin_timeout())
            .await?;
        let topic = metadata
            .topics()
            .iter()
            .find(|topic| topic.name() == kafka_name);
        match topic {
            Some(topic) if topic.error().is_none() => Ok(topic.partitions().len() as u32),
            _ => Err(BusError::UnknownTopic {
                topic: kafka_name.to_owned(),
            }),
        }
    }
}

#[async_trait]
impl BusBackend for KafkaBackend {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn keeps_records(&self) -> bool {
        true
    }

    async fn create_topic(&self, topic: &Topic) -> Result<(), BusError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        let retention = topic.retention_ms().map(|ms| ms.to_string());
        let mut new_topic = NewTopic::new(
            &kafka_name,
            topic.partitions() as i32,
            TopicReplication::Fixed(i32::from(topic.replication_factor())),
        );
        if let Some(retention) = &retention {
            new_topic = new_topic.set("retention.ms", retention);
        }
        let results = self
            .admin
            .create_topics([&new_topic], &self.admin_options())
            .await
            .map_err(|source| classify(Operation::CreateTopic, &kafka_name, source))?;
        match results.into_iter().next() {
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
                let existing = self.partition_count(&kafka_name).await?;
                if existing == topic.partitions() {
                    Ok(())
                } else {
                    Err(BusError::TopicConflict {
                        topic: kafka_name,
                        existing,
                        requested: topic.partitions(),
                    })
                }
            }
            Some(Err((_, code))) => Err(classify(
                Operation::CreateTopic,
                &kafka_name,
                KafkaError::AdminOp(code),
            )),
            Some(Ok(_)) | None => Ok(()),
        }
    }

    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        self.subscriptions
            .close_topic(&kafka_name, self.config.admin_timeout())
            .await;
        let results = self
            .admin
            .delete_topics(&[&kafka_name], &self.admin_options())
            .await
            .map_err(|source| classify(Operation::DeleteTopic, &kafka_name, source))?;
        match results.into_iter().next() {
            Some(Err((_, code))) => Err(classify(
                Operation::DeleteTopic,
                &kafka_name,
                KafkaError::AdminOp(code),
            )),
            Some(Ok(_)) | None => Ok(()),
        }
    }

    async fn produce(
        &self,
        topic: &TopicName,
        message: OutgoingMessage,
    ) -> Result<DeliveryReceipt, BusError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        let payload = kafka_payload(&message);
        let record = kafka_record(&kafka_name, &message, &payload);
        let producer = self.producer.current();
        let sent = producer.send(record, self.config.produce_timeout()).await;
        let delivery = match sent {
            Ok(delivery) => {
                self.producer.succeeded();
                delivery
            }
            Err((source, _)) => {
                let state_refused = refuses_producer_state(&source);
                let error = classify(Operation::Produce, &kafka_name, source);
                self.producer.failed(&producer, &error, state_refused);
                return Err(error);
            }
        };
        Ok(DeliveryReceipt {
            topic: kafka_name,
            partition: delivery.partition,
            offset: delivery.offset,
            produced_at: Utc::now(),
        })
    }

    async fn subscribe(
        &self,
        topic: &TopicName,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<EventStream, BusError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        // A consumer of a missing topic would wait forever; say so instead.
        let partitions = self.partition_count(&kafka_name).await?;
        let ring =
            self.broadcasts
                .member_ring(&self.subscriptions, &self.config, &kafka_name, partitions);
        self.subscriptions
            .start(&self.config, kafka_name, group, start, ring)
            .await
    }

    async fn broadcast(
        &self,
        topic: &TopicName,
        start: StartPosition,
    ) -> Result<EventStream, BusError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        let partitions = match self.broadcasts.partitions(&kafka_name) {
            Some(partitions) => partitions,
            None => self.partition_count(&kafka_name).await?,
        };
        Ok(self.broadcasts.open(
            &self.subscriptions,
            &self.config,
            kafka_name,
            partitions,
            start,
        ))
    }

    async fn join_group(
        &self,
        topic: &TopicName,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<GroupMember, BusError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        self.partition_count(&kafka_name).await?;
        self.subscriptions
            .join(&self.config, kafka_name, group, start)
            .await
    }

    async fn set_group_offsets(
        &self,
        topic: &TopicName,
        group: &GroupId,
        offsets: &PartitionOffsets,
    ) -> Result<(), BusError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (&partition, &offset) in offsets {
            tpl.add_partition_offset(&kafka_name, partition, Offset::Offset(offset))
                .map_err(|source| classify(Operation::Commit, &kafka_name, source))?;
        }
        // A consumer that is assigned, not subscribed, commits as a member
        // of no generation, which a group without live members accepts.
        let config = self.config.consumer(group.as_str(), "earliest");
        let label = kafka_name.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create()?;
            consumer.assign(&tpl)?;
            consumer.commit(&tpl, CommitMode::Sync)
        })
        .await
        .expect("commit task panicked")
        .map_err(|source| classify(Operation::Commit, &label, source))
    }

    async fn delete_group(&self, topic: &TopicName, group: &GroupId) -> Result<(), BusError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        let results = self
            .admin
            .delete_groups(&[group.as_str()], &self.admin_options())
            .await
            .map_err(|source| classify(Operation::DeleteGroup, &kafka_name, source))?;
        match results.into_iter().next() {
            Some(Err((_, RDKafkaErrorCode::GroupIdNotFound))) | Some(Ok(_)) | None => Ok(()),
            Some(Err((_, code))) => Err(classify(
                Operation::DeleteGroup,
                &kafka_name,
                KafkaError::AdminOp(code),
            )),
        }
    }

    async fn watermarks(&self, topic: &TopicName) -> Result<Vec<Watermarks>, BusError> {
        let kafka_name = topic.kafka_topic_name().to_owned();
        let partitions = self.partition_count(&kafka_name).await?;
        let admin = Arc::clone(&self.admin);
        let timeout = self.config.admin_timeout();
        let label = kafka_name.clone();
        tokio::task::spawn_blocking(move || {
            (0..partitions as i32)
                .map(|partition| {
                    let (start, end) =
                        admin
                            .inner()
                            .fetch_watermarks(&kafka_name, partition, timeout)?;
                    Ok(Watermarks {
                        partition,
                        start,
                        end,
                    })
                })
                .collect::<Result<Vec<_>, KafkaError>>()
        })
        .await
        .expect("watermark task panicked")
        .map_err(|source| classify(Operation::Metadata, &label, source))
    }

    async fn check_ready(&self) -> Result<(), BusError> {
        // Probes repeat: a short deadline keeps them from piling up blocked
        // threads while the broker is down.
        let timeout = self.config.admin_timeout().min(READY_TIMEOUT);
        self.metadata(None, timeout).await?;
        let unready = |reason: String| BusError::Unavailable {
            operation: Operation::Produce,
            topic: "*".to_owned(),
            source: reason.into(),
        };
        if let Some(fatal) = self.producer.fatal_error() {
            // Nobody may be publishing to find out: replace it here.
            let replaced = self.producer.replace("fatal error");
            let now = if replaced {
                "replaced"
            } else {
                "replaced shortly"
            };
            return Err(unready(format!(
                "the producer raised a fatal error ({fatal}); {now}"
            )));
        }
        match self.producer.failing_for() {
            Some(failing) if failing >= KEEPS_FAILING_FOR => Err(unready(format!(
                "produces have failed for {} s while the broker answers",
                failing.as_secs()
            ))),
            _ => Ok(()),
        }
    }

    async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let producer = self.producer.current();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .expect("flush task panicked")
            .map_err(|source| classify(Operation::Flush, "*", source))
    }

    fn produce_figures(&self) -> Option<ProduceFigures> {
        (self.config.statistics_interval_ms > 0).then(|| self.producer.figures())
    }
}
