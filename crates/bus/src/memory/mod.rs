//! The in-memory backend: Kafka's semantics without a broker.
//!
//! Used when no broker is configured and in tests. Each topic is a set of
//! bounded partition logs ([`log`]); consumer groups share partitions among
//! their live members ([`group`]). Subscribers wait on a `watch` channel that
//! every append bumps, so nothing polls.

mod group;
mod log;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use acteon_core::{DeliveryReceipt, OutgoingMessage, StartPosition, Topic, TopicName};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use self::group::Reader;
use self::log::TopicLog;
use crate::{
    BusBackend, BusError, EventStream, GroupId, GroupMember, PartitionOffsets, Watermarks,
};

/// Retention of the in-memory backend. A partition drops its oldest records
/// when either bound is passed, or when they are older than the topic's
/// `retention_ms`; a reader that falls behind the oldest record skips ahead to
/// it, as a Kafka consumer does when its offset is out of range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    pub max_records_per_partition: usize,
    pub max_bytes_per_partition: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_records_per_partition: 100_000,
            max_bytes_per_partition: 64 * 1024 * 1024,
        }
    }
}

/// Kafka's semantics in process memory, bounded by [`MemoryConfig`].
#[derive(Debug, Default)]
pub struct MemoryBackend {
    config: MemoryConfig,
    topics: RwLock<HashMap<TopicName, Arc<TopicLog>>>,
}

impl MemoryBackend {
    pub fn new(config: MemoryConfig) -> Self {
        Self {
            config,
            topics: RwLock::default(),
        }
    }

    fn topic(&self, name: &TopicName) -> Result<Arc<TopicLog>, BusError> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownTopic {
                topic: name.kafka_topic_name().to_owned(),
            })
    }
}

#[async_trait]
impl BusBackend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn keeps_records(&self) -> bool {
        false
    }

    async fn create_topic(&self, topic: &Topic) -> Result<(), BusError> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = topics.get(topic.name()) {
            let existing = existing.partition_count();
            return if existing == topic.partitions() {
                Ok(())
            } else {
                Err(BusError::TopicConflict {
                    topic: topic.kafka_topic_name().to_owned(),
                    existing,
                    requested: topic.partitions(),
                })
            };
        }
        let log = TopicLog::new(topic, self.config.clone());
        topics.insert(topic.name().clone(), Arc::new(log));
        Ok(())
    }

    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
        let removed = self
            .topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
        match removed {
            Some(log) => {
                log.close();
                Ok(())
            }
            None => Err(BusError::UnknownTopic {
                topic: topic.kafka_topic_name().to_owned(),
            }),
        }
    }

    async fn produce(
        &self,
        topic: &TopicName,
        message: OutgoingMessage,
    ) -> Result<DeliveryReceipt, BusError> {
        Ok(self.topic(topic)?.append(message))
    }

    async fn subscribe(
        &self,
        topic: &TopicName,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<EventStream, BusError> {
        let log = self.topic(topic)?;
        Ok(Reader::subscribe(log, group.clone(), start))
    }

    async fn broadcast(
        &self,
        topic: &TopicName,
        start: StartPosition,
    ) -> Result<EventStream, BusError> {
        let log = self.topic(topic)?;
        Ok(Reader::broadcast(log, start))
    }

    async fn join_group(
        &self,
        topic: &TopicName,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<GroupMember, BusError> {
        let log = self.topic(topic)?;
        Ok(Reader::join_group(log, group.clone(), start))
    }

    async fn set_group_offsets(
        &self,
        topic: &TopicName,
        group: &GroupId,
        offsets: &PartitionOffsets,
    ) -> Result<(), BusError> {
        let log = self.topic(topic)?;
        group::set_offsets(&log, group, offsets);
        Ok(())
    }

    async fn delete_group(&self, topic: &TopicName, group: &GroupId) -> Result<(), BusError> {
        match self.topic(topic) {
            Ok(log) => group::delete(&log, group),
            // The group went with its topic.
            Err(BusError::UnknownTopic { .. }) => {}
            Err(other) => return Err(other),
        }
        Ok(())
    }

    async fn watermarks(&self, topic: &TopicName) -> Result<Vec<Watermarks>, BusError> {
        let log = self.topic(topic)?;
        Ok((0..log.partition_count() as i32)
            .map(|partition| Watermarks {
                partition,
                start: log.start_offset(partition),
                end: log.end_offset(partition),
            })
            .collect())
    }

    async fn check_ready(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
        // Every append is complete when `produce` returns.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use acteon_core::Headers;
    use futures::StreamExt;

    use super::*;
    use crate::SubscriptionEvent;

    fn topic(partitions: u32) -> Topic {
        Topic::new(
            TopicName::new("test", "t", "log").unwrap(),
            partitions,
            1,
            None,
        )
        .unwrap()
    }

    fn message(seq: u64, padding: usize) -> OutgoingMessage {
        OutgoingMessage {
            key: None,
            payload: serde_json::json!({ "seq": seq, "pad": "x".repeat(padding) }),
            headers: Headers::new(),
        }
    }

    async fn offsets_from_earliest(backend: &MemoryBackend, topic: &Topic) -> Vec<i64> {
        let group = GroupId::parse("reader").unwrap();
        let mut stream = backend
            .subscribe(topic.name(), &group, StartPosition::Earliest)
            .await
            .unwrap();
        let mut offsets = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(50), stream.next()).await
        {
            if let SubscriptionEvent::Message(message) = event.unwrap() {
                offsets.push(message.offset);
            }
        }
        offsets
    }

    /// A subscription from the earliest record, past its first assignment.
    async fn assigned_from_earliest(
        backend: &MemoryBackend,
        topic: &Topic,
        group: &str,
    ) -> EventStream {
        let group = GroupId::parse(group).unwrap();
        let mut stream = backend
            .subscribe(topic.name(), &group, StartPosition::Earliest)
            .await
            .unwrap();
        assert!(matches!(
            stream.next().await,
            Some(Ok(SubscriptionEvent::Assigned(_)))
        ));
        stream
    }

    #[tokio::test]
    async fn retention_by_count_keeps_the_newest_records() {
        let backend = MemoryBackend::new(MemoryConfig {
            max_records_per_partition: 5,
            ..MemoryConfig::default()
        });
        let topic = topic(1);
        backend.create_topic(&topic).await.unwrap();
        for seq in 0..12 {
            backend
                .produce(topic.name(), message(seq, 0))
                .await
                .unwrap();
        }
        assert_eq!(
            offsets_from_earliest(&backend, &topic).await,
            (7..12).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn retention_by_bytes_bounds_a_partition() {
        let backend = MemoryBackend::new(MemoryConfig {
            max_bytes_per_partition: 10_000,
            ..MemoryConfig::default()
        });
        let topic = topic(1);
        backend.create_topic(&topic).await.unwrap();
        for seq in 0..100 {
            backend
                .produce(topic.name(), message(seq, 1_000))
                .await
                .unwrap();
        }
        let kept = offsets_from_earliest(&backend, &topic).await;
        assert!(
            kept.len() < 10,
            "kept {} records of ~1 KiB in 10 KB",
            kept.len()
        );
        assert_eq!(kept.last(), Some(&99), "the newest record is kept");
    }

    #[tokio::test]
    async fn a_reader_behind_retention_is_told_and_skips_to_the_oldest_record() {
        let backend = MemoryBackend::new(MemoryConfig {
            max_records_per_partition: 3,
            ..MemoryConfig::default()
        });
        let topic = topic(1);
        backend.create_topic(&topic).await.unwrap();
        backend.produce(topic.name(), message(0, 0)).await.unwrap();
        let mut stream = assigned_from_earliest(&backend, &topic, "slow").await;
        // The reader has not read offset 0 yet when 10 more arrive.
        for seq in 1..=10 {
            backend
                .produce(topic.name(), message(seq, 0))
                .await
                .unwrap();
        }
        assert!(matches!(
            stream.next().await,
            Some(Ok(SubscriptionEvent::Lagged {
                partition: 0,
                skipped: 8
            }))
        ));
        let Some(Ok(SubscriptionEvent::Message(first))) = stream.next().await else {
            panic!("expected a record");
        };
        assert_eq!(first.offset, 8);
    }

    /// A read that lagged hands back a `Lagged` event besides a full batch
    /// of records; the room left for the next partition must not underflow.
    #[tokio::test]
    async fn a_reader_behind_on_every_partition_reads_on() {
        let backend = MemoryBackend::new(MemoryConfig {
            max_records_per_partition: 80,
            ..MemoryConfig::default()
        });
        let topic = topic(2);
        backend.create_topic(&topic).await.unwrap();
        let mut stream = assigned_from_earliest(&backend, &topic, "behind").await;
        let mut per_partition = [0usize; 2];
        for seq in 0..400 {
            let mut message = message(seq, 0);
            message.key = Some(format!("key-{seq}"));
            let receipt = backend.produce(topic.name(), message).await.unwrap();
            per_partition[receipt.partition as usize] += 1;
        }
        assert!(
            per_partition.iter().all(|&n| n > 80 + 64),
            "{per_partition:?}"
        );
        let (mut lagged, mut records) = (0, 0);
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(100), stream.next()).await
        {
            match event.unwrap() {
                SubscriptionEvent::Lagged { .. } => lagged += 1,
                SubscriptionEvent::Message(_) => records += 1,
                SubscriptionEvent::Assigned(_) => {}
            }
        }
        assert_eq!(lagged, 2, "one per partition");
        assert_eq!(records, 160, "what retention kept of both partitions");
    }

    #[tokio::test]
    async fn more_members_than_partitions_leaves_some_idle() {
        let backend = MemoryBackend::default();
        let topic = topic(1);
        backend.create_topic(&topic).await.unwrap();
        let group = GroupId::parse("g").unwrap();
        let mut first = backend
            .subscribe(topic.name(), &group, StartPosition::Latest)
            .await
            .unwrap();
        let mut second = backend
            .subscribe(topic.name(), &group, StartPosition::Latest)
            .await
            .unwrap();
        let assigned = |event: Option<Result<SubscriptionEvent, BusError>>| match event {
            Some(Ok(SubscriptionEvent::Assigned(partitions))) => partitions,
            other => panic!("expected an assignment, got {other:?}"),
        };
        assert_eq!(assigned(first.next().await), vec![0]);
        let idle = tokio::time::timeout(Duration::from_millis(100), second.next()).await;
        assert!(
            idle.is_err(),
            "the second member has nothing to read: {idle:?}"
        );
        drop(first);
        assert_eq!(assigned(second.next().await), vec![0]);
    }
}
