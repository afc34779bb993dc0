//! Subscriptions of the Kafka backend: each is a consumer in the
//! subscription's group, pumped by a task into a bounded channel.
//!
//! The task owns the consumer. When the stream is dropped the channel closes,
//! the task ends, and the consumer is closed on a blocking thread (closing
//! sends LeaveGroup and waits for it), so the group rebalances at once rather
//! than after a session timeout. The bounded channel is the back-pressure: a
//! slow reader stops the task from polling, and librdkafka's own fetch queue
//! is bounded too.
//!
//! Tasks are tracked per topic so that deleting a topic first ends its
//! subscriptions and waits for their consumers to close, as the in-memory
//! backend does. That ordering also keeps consumers from fetching a topic
//! that no longer exists: Tansu answers such fetches with a `CurrentLeader`
//! tag that crashes librdkafka 2.12's leader discovery.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use acteon_core::{BusMessage, Headers, StartPosition};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::RuntimeFlavor;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::KafkaConfig;
use super::error::classify;
use crate::{BusError, EventStream, GroupId, Operation, SubscriptionEvent};

/// Events buffered between the consumer task and the reader.
const BUFFER: usize = 64;

/// The live subscriptions of one topic.
#[derive(Debug, Default)]
struct TopicSubscriptions {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Every live subscription of a backend, by Kafka topic.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    by_topic: Mutex<HashMap<String, TopicSubscriptions>>,
}

impl Subscriptions {
    pub(super) async fn start(
        &self,
        config: &KafkaConfig,
        kafka_name: String,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<EventStream, BusError> {
        let (assignment_tx, assignments) = watch::channel(Vec::new());
        let context = PositioningContext {
            start,
            watermark_timeout: config.admin_timeout(),
            assignment: assignment_tx,
        };
        let consumer_config = config.consumer(group.as_str(), &start.to_string());
        let topic = kafka_name.clone();
        // Creating a consumer starts librdkafka's threads and waits for
        // them: not on an async worker.
        let consumer = tokio::task::spawn_blocking(move || {
            let consumer: StreamConsumer<PositioningContext> =
                consumer_config.create_with_context(context)?;
            consumer.subscribe(&[&topic])?;
            Ok(consumer)
        })
        .await
        .expect("consumer creation panicked")
        .map_err(|source| classify(Operation::Subscribe, &kafka_name, source))?;
        let (events, receiver) = mpsc::channel(BUFFER);
        let mut by_topic = self.by_topic.lock().unwrap_or_else(PoisonError::into_inner);
        let topic = by_topic.entry(kafka_name.clone()).or_default();
        let cancel = topic.cancel.child_token();
        topic
            .tasks
            .spawn(pump(consumer, assignments, events, kafka_name, cancel));
        Ok(ReceiverStream::new(receiver).boxed())
    }

    /// Ends the topic's subscriptions and waits (up to `timeout`) until their
    /// consumers have left their groups.
    pub(super) async fn close_topic(&self, kafka_name: &str, timeout: Duration) {
        let Some(topic) = self
            .by_topic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(kafka_name)
        else {
            return;
        };
        topic.cancel.cancel();
        topic.tasks.close();
        if tokio::time::timeout(timeout, topic.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(topic = %kafka_name, "subscriptions did not close in time");
        }
    }
}

/// Positions newly assigned partitions before they are handed to the
/// consumer, and publishes every assignment.
///
/// librdkafka resolves `auto.offset.reset=latest` with a request that runs
/// after the assignment, so a record produced just after a rebalance could
/// land before that position and be skipped. Pinning the offset to the high
/// watermark inside the rebalance makes the reported assignment mean "every
/// record produced from now on reaches this member".
struct PositioningContext {
    start: StartPosition,
    watermark_timeout: Duration,
    assignment: watch::Sender<Vec<i32>>,
}

impl ClientContext for PositioningContext {}

impl ConsumerContext for PositioningContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            self.position(consumer, tpl);
            if let Err(error) = consumer.assign(tpl) {
                tracing::error!(%error, "assigning partitions failed");
            }
            let mut partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            partitions.sort_unstable();
            partitions
        } else {
            // Revocation, or a rebalance error: drop the whole assignment
            // (eager protocol); the group assigns again.
            if let Err(error) = consumer.unassign() {
                tracing::error!(%error, "revoking partitions failed");
            }
            Vec::new()
        };
        self.assignment.send_if_modified(|current| {
            let changed = *current != partitions;
            *current = partitions;
            changed
        });
    }
}

impl PositioningContext {
    fn position(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for (topic, partition) in partitions {
            let offset = match self.start {
                StartPosition::Earliest => Offset::Beginning,
                StartPosition::Latest => {
                    let watermarks = off_the_worker(|| {
                        consumer.client().fetch_watermarks(
                            &topic,
                            partition,
                            self.watermark_timeout,
                        )
                    });
                    match watermarks {
                        Ok((_, high)) => Offset::Offset(high),
                        // librdkafka resolves the end itself, a moment later.
                        Err(_) => Offset::End,
                    }
                }
            };
            if let Err(error) = tpl.set_partition_offset(&topic, partition, offset) {
                tracing::warn!(%topic, partition, %error, "cannot set start offset");
            }
        }
    }
}

/// Runs blocking `work` from a callback that librdkafka invokes inside
/// `recv()`, on an async worker: on a multi-threaded runtime the worker
/// first hands its other tasks to the rest, so they do not wait behind it.
fn off_the_worker<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

async fn pump(
    consumer: StreamConsumer<PositioningContext>,
    mut assignments: watch::Receiver<Vec<i32>>,
    events: mpsc::Sender<Result<SubscriptionEvent, BusError>>,
    kafka_name: String,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = events.closed() => break,
            () = cancel.cancelled() => break,
            Ok(()) = assignments.changed() => {
                Ok(SubscriptionEvent::Assigned(assignments.borrow_and_update().clone()))
            }
            received = consumer.recv() => match received {
                Ok(message) => Ok(SubscriptionEvent::Message(to_bus_message(&message))),
                Err(source) => {
                    let error = classify(Operation::Consume, &kafka_name, source);
                    if !matches!(error, BusError::UnknownTopic { .. }) {
                        // librdkafka reconnects and rejoins by itself.
                        tracing::warn!(topic = %kafka_name, %error, "consumer error");
                        continue;
                    }
                    Err(error)
                }
            },
        };
        let ends_stream = event.is_err();
        // A reader that stopped reading must not keep the consumer alive
        // past a topic delete.
        let sent = tokio::select! {
            sent = events.send(event) => sent.is_ok(),
            () = cancel.cancelled() => false,
        };
        if !sent || ends_stream {
            break;
        }
    }
    // Closing blocks until the group has been left.
    let closed = tokio::task::spawn_blocking(move || drop(consumer)).await;
    if let Err(error) = closed {
        tracing::error!(topic = %kafka_name, %error, "closing a consumer failed");
    }
}

fn to_bus_message(message: &BorrowedMessage<'_>) -> BusMessage {
    let payload = message.payload().unwrap_or_default();
    // Records written by other Kafka clients may not be JSON; they are
    // delivered as a JSON string rather than dropped.
    let payload = serde_json::from_slice(payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
    });
    let headers: Headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    let value = header
                        .value
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    (header.key.to_owned(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let timestamp = message
        .timestamp()
        .to_millis()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    BusMessage {
        topic: message.topic().to_owned(),
        key: message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        payload,
        headers,
        partition: message.partition(),
        offset: message.offset(),
        timestamp,
    }
}
