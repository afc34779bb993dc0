//! One subscription: a consumer in the subscription's group, pumped by a task
//! into a bounded channel.
//!
//! The task owns the consumer. When the stream is dropped the channel closes,
//! the task ends, and the consumer is closed on a blocking thread (closing
//! sends LeaveGroup and waits for it), so the group rebalances at once rather
//! than after a session timeout. The bounded channel is the back-pressure: a
//! slow reader stops the task from polling, and librdkafka's own fetch queue
//! is bounded too.

use acteon_core::{BusMessage, Headers, StartPosition};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::KafkaConfig;
use super::error::classify;
use crate::{BusError, EventStream, GroupId, Operation, SubscriptionEvent};

/// Events buffered between the consumer task and the reader.
const BUFFER: usize = 64;

/// Publishes the consumer's assignment after every rebalance.
struct AssignmentContext {
    assignment: watch::Sender<Vec<i32>>,
}

impl ClientContext for AssignmentContext {}

impl ConsumerContext for AssignmentContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut partitions = match rebalance {
            Rebalance::Assign(list) => list.elements().iter().map(|e| e.partition()).collect(),
            Rebalance::Revoke(_) => Vec::new(),
            Rebalance::Error(_) => return,
        };
        partitions.sort_unstable();
        self.assignment.send_if_modified(|current| {
            let changed = *current != partitions;
            *current = partitions;
            changed
        });
    }
}

pub(super) fn start(
    config: &KafkaConfig,
    kafka_name: String,
    group: &GroupId,
    start: StartPosition,
) -> Result<EventStream, BusError> {
    let (assignment_tx, assignments) = watch::channel(Vec::new());
    let context = AssignmentContext {
        assignment: assignment_tx,
    };
    let consumer: StreamConsumer<AssignmentContext> = config
        .consumer(group.as_str(), &start.to_string())
        .create_with_context(context)
        .map_err(|source| classify(Operation::Subscribe, &kafka_name, source))?;
    consumer
        .subscribe(&[&kafka_name])
        .map_err(|source| classify(Operation::Subscribe, &kafka_name, source))?;
    let (events, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(pump(consumer, assignments, events, kafka_name));
    Ok(ReceiverStream::new(receiver).boxed())
}

async fn pump(
    consumer: StreamConsumer<AssignmentContext>,
    mut assignments: watch::Receiver<Vec<i32>>,
    events: mpsc::Sender<Result<SubscriptionEvent, BusError>>,
    kafka_name: String,
) {
    loop {
        let event = tokio::select! {
            _ = events.closed() => break,
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
        if events.send(event).await.is_err() || ends_stream {
            break;
        }
    }
    // Closing blocks until the group has been left.
    tokio::task::spawn_blocking(move || drop(consumer));
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
