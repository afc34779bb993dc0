//! A topic's partitions as bounded in-memory logs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use acteon_core::{BusMessage, DeliveryReceipt, OutgoingMessage, Topic};
use chrono::{TimeDelta, Utc};
use tokio::sync::watch;

use super::MemoryConfig;
use super::group::GroupState;
use crate::GroupId;

/// Fixed cost counted per record on top of its key, payload and headers, so
/// that many tiny records still count against the byte bound.
const RECORD_OVERHEAD_BYTES: usize = 64;

/// The length of `payload` as JSON text, counted without building the text.
fn serialized_len(payload: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a Value to a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, payload);
    counter.0
}

#[derive(Debug)]
struct StoredRecord {
    message: Arc<BusMessage>,
    size: usize,
}

#[derive(Debug, Default)]
struct PartitionLog {
    /// Offset of the oldest retained record (or of the next one, when empty).
    start_offset: i64,
    records: VecDeque<StoredRecord>,
    bytes: usize,
}

impl PartitionLog {
    fn end_offset(&self) -> i64 {
        self.start_offset + self.records.len() as i64
    }

    fn evict_front(&mut self) {
        if let Some(record) = self.records.pop_front() {
            self.bytes -= record.size;
            self.start_offset += 1;
        }
    }
}

/// What [`TopicLog::read`] found.
#[derive(Debug)]
pub(super) struct Read {
    pub(super) records: Vec<Arc<BusMessage>>,
    /// The offset to read next.
    pub(super) next: i64,
    /// Records removed by retention before they were read.
    pub(super) skipped: i64,
}

/// One topic: its partition logs, its consumer groups, and the signal readers
/// wait on.
#[derive(Debug)]
pub(super) struct TopicLog {
    kafka_name: String,
    partitions: Vec<Mutex<PartitionLog>>,
    config: MemoryConfig,
    max_age: Option<TimeDelta>,
    next_unkeyed_partition: AtomicU32,
    /// Bumped on every append and on close; readers wait for it to change.
    appended: watch::Sender<u64>,
    closed: AtomicBool,
    pub(super) groups: Mutex<HashMap<GroupId, GroupState>>,
}

impl TopicLog {
    pub(super) fn new(topic: &Topic, config: MemoryConfig) -> Self {
        Self {
            kafka_name: topic.kafka_topic_name().to_owned(),
            partitions: (0..topic.partitions()).map(|_| Mutex::default()).collect(),
            config,
            max_age: topic.retention_ms().map(TimeDelta::milliseconds),
            next_unkeyed_partition: AtomicU32::new(0),
            appended: watch::channel(0).0,
            closed: AtomicBool::new(false),
            groups: Mutex::default(),
        }
    }

    pub(super) fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Keyed records go to `crc32(key) % partitions`, so one key always lands
    /// on one partition; unkeyed records are spread round-robin.
    fn partition_for(&self, key: Option<&str>) -> u32 {
        let count = self.partition_count();
        match key {
            Some(key) => crc32fast::hash(key.as_bytes()) % count,
            None => self.next_unkeyed_partition.fetch_add(1, Ordering::Relaxed) % count,
        }
    }

    pub(super) fn append(&self, message: OutgoingMessage) -> DeliveryReceipt {
        let partition = self.partition_for(message.key.as_deref());
        let now = Utc::now();
        let size = RECORD_OVERHEAD_BYTES
            + message.key.as_ref().map_or(0, String::len)
            + serialized_len(&message.payload)
            + message
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>();
        let offset = {
            let mut log = self.lock(partition as i32);
            let offset = log.end_offset();
            log.records.push_back(StoredRecord {
                message: Arc::new(BusMessage {
                    topic: self.kafka_name.clone(),
                    key: message.key,
                    payload: message.payload,
                    headers: message.headers,
                    partition: partition as i32,
                    offset,
                    timestamp: now,
                }),
                size,
            });
            log.bytes += size;
            self.enforce_retention(&mut log);
            offset
        };
        self.appended.send_modify(|version| *version += 1);
        DeliveryReceipt {
            topic: self.kafka_name.clone(),
            partition: partition as i32,
            offset,
            produced_at: now,
        }
    }

    fn enforce_retention(&self, log: &mut PartitionLog) {
        while log.records.len() > self.config.max_records_per_partition
            || (log.bytes > self.config.max_bytes_per_partition && log.records.len() > 1)
        {
            log.evict_front();
        }
        if let Some(cutoff) = self
            .max_age
            .and_then(|age| Utc::now().checked_sub_signed(age))
        {
            while log
                .records
                .front()
                .is_some_and(|record| record.message.timestamp < cutoff)
            {
                log.evict_front();
            }
        }
    }

    fn lock(&self, partition: i32) -> std::sync::MutexGuard<'_, PartitionLog> {
        self.partitions[partition as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn start_offset(&self, partition: i32) -> i64 {
        self.lock(partition).start_offset
    }

    pub(super) fn end_offset(&self, partition: i32) -> i64 {
        self.lock(partition).end_offset()
    }

    /// Up to `max` records of `partition` from `offset` on, and the offset to
    /// read next. An offset older than the oldest retained record reads from
    /// the oldest one; [`Read::skipped`] says how many were lost.
    pub(super) fn read(&self, partition: i32, offset: i64, max: usize) -> Read {
        let log = self.lock(partition);
        let from = offset.max(log.start_offset);
        let skip = (from - log.start_offset) as usize;
        let records: Vec<Arc<BusMessage>> = log
            .records
            .iter()
            .skip(skip)
            .take(max)
            .map(|record| Arc::clone(&record.message))
            .collect();
        Read {
            next: from + records.len() as i64,
            skipped: from - offset,
            records,
        }
    }

    pub(super) fn watch_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Marks the topic deleted and wakes every reader so its stream ends.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.appended.send_modify(|version| *version += 1);
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_len_is_the_length_of_the_json_text() {
        let payload = serde_json::json!({ "text": "naïve \"quoted\"\n", "n": [1, 2.5, null] });
        assert_eq!(serialized_len(&payload), payload.to_string().len());
    }
}
