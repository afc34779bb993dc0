//! Subscriptions of the Kafka backend: each is a consumer in the
//! subscription's group, pumped by a task into a bounded channel.
//!
//! A member reads a newly assigned partition from the group's committed
//! offset, looked up inside the rebalance, and from its start position only
//! where the group has none. What a subscription commits depends on its
//! [`Commits`]: what it handed to its reader (stored as it goes, committed
//! every second and before a partition is revoked), or what its owner
//! commits through a [`CommitOffsets`].
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use acteon_core::{BusMessage, Headers, StartPosition};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use tokio::runtime::RuntimeFlavor;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::KafkaConfig;
use super::broadcast::{MemberRing, RingEvent};
use super::error::{classify, is_partition_end};
use crate::{
    BusError, CommitOffsets, EventStream, GroupId, GroupMember, Operation, PartitionOffsets,
    SubscriptionEvent,
};

/// Events buffered between the consumer task and the reader.
const BUFFER: usize = 64;

/// How often delivered positions are committed, besides before a revoke.
const AUTO_COMMIT_INTERVAL_MS: &str = "1000";

/// Who commits a subscription's positions.
#[derive(Debug)]
enum Commits {
    /// The pump, as it hands records to the reader.
    Delivered,
    /// The owner, through [`OwnerCommits`]; `left` is told when the
    /// consumer has closed.
    Owner {
        commits: watch::Receiver<PartitionOffsets>,
        left: oneshot::Sender<()>,
    },
}

/// The [`CommitOffsets`] of a [`GroupMember`]: the latest positions, which
/// the pump commits when they change.
#[derive(Debug)]
struct OwnerCommits(watch::Sender<PartitionOffsets>);

impl CommitOffsets for OwnerCommits {
    fn commit(&self, offsets: &PartitionOffsets) {
        self.0.send_modify(|pending| pending.extend(offsets));
    }
}

/// The tasks that read one topic.
#[derive(Debug, Default, Clone)]
pub(super) struct TopicTasks {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl TopicTasks {
    /// Runs `task`, given a token that is cancelled when the topic is
    /// deleted; the delete waits for the task to end.
    pub(super) fn spawn<F>(&self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.cancel.child_token()));
    }
}

/// Every live subscription of a backend, by Kafka topic.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    by_topic: Mutex<HashMap<String, TopicTasks>>,
}

impl Subscriptions {
    /// A subscription that commits what it delivers.
    /// A subscription that commits what it delivers; it takes a
    /// partition's records from `ring` once it has caught up with it.
    pub(super) async fn start(
        &self,
        config: &KafkaConfig,
        kafka_name: String,
        group: &GroupId,
        start: StartPosition,
        ring: MemberRing,
    ) -> Result<EventStream, BusError> {
        let feeds = RingFeeds {
            ring,
            partitions: HashMap::new(),
        };
        self.start_pump(
            config,
            kafka_name,
            group,
            start,
            Commits::Delivered,
            Some(feeds),
        )
        .await
    }

    /// A member whose owner commits.
    pub(super) async fn join(
        &self,
        config: &KafkaConfig,
        kafka_name: String,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<GroupMember, BusError> {
        let (offsets, commits) = watch::channel(PartitionOffsets::new());
        let (left_tx, left) = oneshot::channel();
        let commits = Commits::Owner {
            commits,
            left: left_tx,
        };
        let events = self
            .start_pump(config, kafka_name, group, start, commits, None)
            .await?;
        Ok(GroupMember {
            events,
            offsets: Box::new(OwnerCommits(offsets)),
            left: Box::pin(async move {
                // A pump that is gone has left too.
                let _ = left.await;
            }),
        })
    }

    async fn start_pump(
        &self,
        config: &KafkaConfig,
        kafka_name: String,
        group: &GroupId,
        start: StartPosition,
        commits: Commits,
        feeds: Option<RingFeeds>,
    ) -> Result<EventStream, BusError> {
        let (assignment_tx, assignments) = watch::channel(Assignment::default());
        let commits_delivered = matches!(commits, Commits::Delivered);
        let context = PositioningContext {
            start,
            watermark_timeout: config.admin_timeout(),
            assignment: assignment_tx,
            commits_delivered,
        };
        let mut consumer_config = config.consumer(group.as_str(), &start.to_string());
        if commits_delivered {
            consumer_config
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", AUTO_COMMIT_INTERVAL_MS)
                // A member hands a partition over to the ring only once it
                // has fetched all there is of it (see `RingFeeds`).
                .set("enable.partition.eof", "true");
        }
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
        self.spawn(&kafka_name.clone(), |cancel| {
            let pump = Pump {
                consumer,
                kafka_name,
                feeds,
            };
            pump.run(assignments, commits, events, cancel)
        });
        Ok(ReceiverStream::new(receiver).boxed())
    }

    /// Runs a task that reads `kafka_name`; see [`TopicTasks::spawn`].
    pub(super) fn spawn<F>(&self, kafka_name: &str, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawner(kafka_name).spawn(task);
    }

    /// Runs tasks that read `kafka_name`, later.
    pub(super) fn spawner(&self, kafka_name: &str) -> TopicTasks {
        let mut by_topic = self.by_topic.lock().unwrap_or_else(PoisonError::into_inner);
        by_topic.entry(kafka_name.to_owned()).or_default().clone()
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

/// A member's partitions and, where known, the offset each starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Assignment {
    partitions: Vec<i32>,
    starts: HashMap<i32, i64>,
}

/// Positions newly assigned partitions before they are handed to the
/// consumer, and publishes every assignment.
///
/// A partition the group has a committed offset for goes on from it. For
/// the others, librdkafka resolves `auto.offset.reset=latest` with a request
/// that runs after the assignment, so a record produced just after a
/// rebalance could land before that position and be skipped. Pinning the
/// offset to the high watermark inside the rebalance makes the reported
/// assignment mean "every record produced from now on reaches this member".
struct PositioningContext {
    start: StartPosition,
    watermark_timeout: Duration,
    assignment: watch::Sender<Assignment>,
    /// Whether the delivered positions are committed before a revoke.
    commits_delivered: bool,
}

impl ClientContext for PositioningContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_end(&error) {
            tracing::error!(%error, reason, "librdkafka");
        }
    }
}

impl ConsumerContext for PositioningContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assignment = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            self.position(consumer, tpl);
            if let Err(error) = consumer.assign(tpl) {
                tracing::error!(%error, "assigning partitions failed");
            }
            let mut assignment = Assignment::default();
            for element in tpl.elements() {
                assignment.partitions.push(element.partition());
                if let Offset::Offset(start) = element.offset() {
                    assignment.starts.insert(element.partition(), start);
                }
            }
            assignment.partitions.sort_unstable();
            assignment
        } else {
            // Revocation, or a rebalance error: drop the whole assignment
            // (eager protocol); the group assigns again, and the next owner
            // goes on from what was delivered here.
            if self.commits_delivered {
                let committed = off_the_worker(|| consumer.commit_consumer_state(CommitMode::Sync));
                if let Err(error) = committed {
                    // Nothing delivered since the assignment is not an error.
                    if !matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::NoOffset)) {
                        tracing::warn!(%error, "committing delivered offsets before a revoke failed");
                    }
                }
            }
            if let Err(error) = consumer.unassign() {
                tracing::error!(%error, "revoking partitions failed");
            }
            Assignment::default()
        };
        self.assignment.send_if_modified(|current| {
            let changed = *current != assignment;
            *current = assignment;
            changed
        });
    }
}

impl PositioningContext {
    fn position(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let committed =
            off_the_worker(|| consumer.committed_offsets(tpl.clone(), self.watermark_timeout));
        let committed: HashMap<(String, i32), i64> = match committed {
            Ok(committed) => committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(offset) => Some(((e.topic().to_owned(), e.partition()), offset)),
                    _ => None,
                })
                .collect(),
            Err(error) => {
                // librdkafka then looks the committed offsets up itself.
                tracing::warn!(%error, "cannot read the group's committed offsets");
                return;
            }
        };
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        // Where the group had no position, the start position becomes its
        // position, so a later owner goes on from there too.
        let mut started = TopicPartitionList::new();
        for (topic, partition) in partitions {
            let offset = match committed.get(&(topic.clone(), partition)) {
                Some(&offset) => Offset::Offset(offset),
                None => {
                    let offset = self.start_offset(consumer, &topic, partition);
                    if let Offset::Offset(_) = offset {
                        let _ = started.add_partition_offset(&topic, partition, offset);
                    }
                    offset
                }
            };
            if let Err(error) = tpl.set_partition_offset(&topic, partition, offset) {
                tracing::warn!(%topic, partition, %error, "cannot set start offset");
            }
        }
        if started.count() > 0 {
            if let Err(error) = off_the_worker(|| consumer.commit(&started, CommitMode::Sync)) {
                tracing::warn!(%error, "cannot commit the start positions");
            }
        }
    }

    /// The offset `start` means in `partition` now; a logical offset, which
    /// librdkafka resolves a moment later, when the watermarks are unknown.
    fn start_offset(&self, consumer: &BaseConsumer<Self>, topic: &str, partition: i32) -> Offset {
        let watermarks = off_the_worker(|| {
            consumer
                .client()
                .fetch_watermarks(topic, partition, self.watermark_timeout)
        });
        match (watermarks, self.start) {
            (Ok((low, _)), StartPosition::Earliest) => Offset::Offset(low),
            (Ok((_, high)), StartPosition::Latest) => Offset::Offset(high),
            (Err(_), StartPosition::Earliest) => Offset::Beginning,
            (Err(_), StartPosition::Latest) => Offset::End,
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

/// Commits the positions the owner last committed.
fn commit_owner_offsets(
    consumer: &StreamConsumer<PositioningContext>,
    kafka_name: &str,
    offsets: &PartitionOffsets,
    mode: CommitMode,
) {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (&partition, &offset) in offsets {
        if let Err(error) = tpl.add_partition_offset(kafka_name, partition, Offset::Offset(offset))
        {
            tracing::warn!(topic = %kafka_name, partition, %error, "cannot commit offset");
        }
    }
    if let Err(error) = consumer.commit(&tpl, mode) {
        tracing::warn!(topic = %kafka_name, %error, "committing offsets failed");
    }
}

/// Resolves when the owner commits; never for [`Commits::Delivered`].
async fn owner_committed(commits: &mut Commits) -> Option<PartitionOffsets> {
    match commits {
        Commits::Owner {
            commits: offsets, ..
        } => {
            if offsets.changed().await.is_err() {
                // The owner is gone; so is the stream, shortly.
                std::future::pending::<()>().await;
            }
            Some(offsets.borrow_and_update().clone())
        }
        Commits::Delivered => std::future::pending().await,
    }
}

/// A member's consumer and where its records come from.
struct Pump {
    consumer: StreamConsumer<PositioningContext>,
    kafka_name: String,
    /// For a member that commits what it delivers: the topic's ring.
    feeds: Option<RingFeeds>,
}

impl Pump {
    async fn run(
        mut self,
        mut assignments: watch::Receiver<Assignment>,
        mut commits: Commits,
        events: mpsc::Sender<Result<SubscriptionEvent, BusError>>,
        cancel: CancellationToken,
    ) {
        let (consumer, kafka_name) = (&self.consumer, self.kafka_name.as_str());
        loop {
            let event = tokio::select! {
                // An assignment is told before the records read after it.
                biased;
                _ = events.closed() => break,
                () = cancel.cancelled() => break,
                Some(offsets) = owner_committed(&mut commits) => {
                    commit_owner_offsets(consumer, kafka_name, &offsets, CommitMode::Async);
                    continue;
                }
                Ok(()) = assignments.changed() => {
                    let assignment = assignments.borrow_and_update().clone();
                    if let Some(feeds) = &mut self.feeds {
                        feeds.assigned(&assignment, consumer, kafka_name);
                    }
                    Ok(SubscriptionEvent::Assigned(assignment.partitions))
                }
                ring = ring_event(&mut self.feeds) => {
                    let feeds = self.feeds.as_mut().expect("only a member with a ring has its events");
                    match ring {
                        RingEvent::Joined => {
                            feeds.take_caught_up(consumer, kafka_name);
                            continue;
                        }
                        RingEvent::Record(record) if feeds.takes_from_ring(&record) => {
                            Ok(SubscriptionEvent::Message(record))
                        }
                        RingEvent::Record(_) => continue,
                        RingEvent::Lagged => {
                            feeds.fetch_again(consumer, kafka_name);
                            continue;
                        }
                    }
                }
                received = consumer.recv() => match received {
                    Ok(message) => {
                        let fetched = self.feeds.as_mut().is_none_or(|feeds| {
                            feeds.takes_fetched(message.partition(), message.offset())
                        });
                        if !fetched {
                            continue;
                        }
                        Ok(SubscriptionEvent::Message(Arc::new(to_bus_message(&message))))
                    }
                    Err(KafkaError::PartitionEOF(partition)) => {
                        if let Some(feeds) = &mut self.feeds {
                            if let Some(next) = fetch_position(consumer, kafka_name, partition) {
                                feeds.reached_end(partition, next);
                                feeds.take_caught_up(consumer, kafka_name);
                            }
                        }
                        continue;
                    }
                    Err(source) => {
                        let error = classify(Operation::Consume, kafka_name, source);
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
            let delivered = match (&commits, &event) {
                (Commits::Delivered, Ok(SubscriptionEvent::Message(message))) => {
                    Some((message.partition, message.offset))
                }
                _ => None,
            };
            // A reader that stopped reading must not keep the consumer alive
            // past a topic delete, nor hold back its owner's commits.
            let permit = loop {
                tokio::select! {
                    permit = events.reserve() => break permit.ok(),
                    () = cancel.cancelled() => break None,
                    Some(offsets) = owner_committed(&mut commits) => {
                        commit_owner_offsets(consumer, kafka_name, &offsets, CommitMode::Async);
                    }
                }
            };
            let Some(permit) = permit else { break };
            permit.send(event);
            if let Some((partition, offset)) = delivered {
                // Stores `offset + 1`; a partition revoked meanwhile refuses it.
                if let Err(error) = consumer.store_offset(kafka_name, partition, offset) {
                    tracing::debug!(topic = %kafka_name, partition, %error, "offset not stored");
                }
            }
            if ends_stream {
                break;
            }
        }
        self.close(commits).await;
    }

    /// Makes the owner's last commit and closes the consumer.
    async fn close(self, commits: Commits) {
        // The owner's last positions, in case their commit had not gone out.
        let (last, left) = match commits {
            Commits::Owner { commits, left } => (commits.borrow().clone(), Some(left)),
            Commits::Delivered => (PartitionOffsets::new(), None),
        };
        // Committing synchronously and closing block until done, the latter
        // until the group has been left.
        let Self {
            consumer,
            kafka_name,
            feeds,
        } = self;
        drop(feeds);
        let topic = kafka_name.clone();
        let closed = tokio::task::spawn_blocking(move || {
            if !last.is_empty() {
                commit_owner_offsets(&consumer, &topic, &last, CommitMode::Sync);
            }
            drop(consumer);
        })
        .await;
        if let Err(error) = closed {
            tracing::error!(topic = %kafka_name, %error, "closing a consumer failed");
        }
        if let Some(left) = left {
            let _ = left.send(());
        }
    }
}

/// Where `consumer` reads `partition` next.
pub(super) fn fetch_position<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    kafka_name: &str,
    partition: i32,
) -> Option<i64> {
    let positions = consumer.position().ok()?;
    match positions.find_partition(kafka_name, partition)?.offset() {
        Offset::Offset(next) => Some(next),
        _ => None,
    }
}

/// The next event of a member's ring; never for a member without one.
async fn ring_event(feeds: &mut Option<RingFeeds>) -> RingEvent {
    match feeds {
        Some(feeds) => feeds.ring.next().await,
        None => std::future::pending().await,
    }
}

/// Where a member that commits what it delivers takes each partition's
/// records from: its own consumer while it is behind the topic's shared
/// reader, the topic's ring once it has caught up (the consumer then
/// pauses the partition, so an idle member fetches nothing), and its own
/// consumer again if it falls out of the ring.
///
/// Caught up means: the consumer has fetched all there is of the partition
/// (it said so with a partition end) and the ring shows nothing before
/// where it stopped. Watermarks alone are not trusted for this: Tansu can
/// report a partition's end short of records it has acknowledged
/// (`docs/broker.md`), and a member that trusted them would wait on the
/// ring for records it could have fetched.
struct RingFeeds {
    ring: MemberRing,
    partitions: HashMap<i32, Fed>,
}

/// One assigned partition of a [`RingFeeds`].
#[derive(Debug, Clone, Copy)]
struct Fed {
    /// The offset delivered next, where known.
    next: Option<i64>,
    /// Whether the consumer has fetched all there is of the partition;
    /// only then is what the ring shows next trusted to follow on.
    at_end: bool,
    from_ring: bool,
}

impl RingFeeds {
    fn assigned(
        &mut self,
        assignment: &Assignment,
        consumer: &StreamConsumer<PositioningContext>,
        kafka_name: &str,
    ) {
        // Every assignment assigns afresh (eager protocol); whatever an
        // earlier one paused fetches again until it has caught up.
        let mut assigned = TopicPartitionList::new();
        for &partition in &assignment.partitions {
            assigned.add_partition(kafka_name, partition);
        }
        if let Err(error) = consumer.resume(&assigned) {
            tracing::debug!(topic = %kafka_name, %error, "cannot resume assigned partitions");
        }
        self.partitions = assignment
            .partitions
            .iter()
            .map(|&partition| {
                let next = assignment.starts.get(&partition).copied();
                let fed = Fed {
                    next,
                    at_end: false,
                    from_ring: false,
                };
                (partition, fed)
            })
            .collect();
    }

    /// Moves every partition whose ring has nothing this member lacks over
    /// to the ring, and pauses it in the consumer.
    fn take_caught_up(&mut self, consumer: &StreamConsumer<PositioningContext>, kafka_name: &str) {
        let mut caught_up = TopicPartitionList::new();
        for (&partition, fed) in &mut self.partitions {
            let Some(next) = fed.next.filter(|_| fed.at_end && !fed.from_ring) else {
                continue;
            };
            if self.ring.covers(partition, next) {
                fed.from_ring = true;
                caught_up.add_partition(kafka_name, partition);
            }
        }
        if caught_up.count() > 0 {
            if let Err(error) = consumer.pause(&caught_up) {
                tracing::warn!(topic = %kafka_name, %error, "cannot pause caught-up partitions");
            }
        }
    }

    /// Whether a record the consumer fetched is to be delivered: not when
    /// the ring supplies its partition (it was fetched before the pause).
    fn takes_fetched(&mut self, partition: i32, offset: i64) -> bool {
        match self.partitions.get_mut(&partition) {
            Some(fed) if fed.from_ring => false,
            Some(fed) => {
                fed.next = Some(offset + 1);
                fed.at_end = false;
                true
            }
            None => true,
        }
    }

    /// The consumer has fetched all there is of `partition` and reads it
    /// next at `next`.
    fn reached_end(&mut self, partition: i32, next: i64) {
        if let Some(fed) = self.partitions.get_mut(&partition) {
            if !fed.from_ring {
                fed.next = Some(next);
                fed.at_end = true;
            }
        }
    }

    /// Whether a record of the ring is to be delivered.
    fn takes_from_ring(&mut self, record: &BusMessage) -> bool {
        match self.partitions.get_mut(&record.partition) {
            Some(Fed {
                next: Some(next),
                from_ring: true,
                ..
            }) if record.offset >= *next => {
                *next = record.offset + 1;
                true
            }
            _ => false,
        }
    }

    /// After falling out of the ring: fetch every partition from where
    /// delivery stopped.
    fn fetch_again(&mut self, consumer: &StreamConsumer<PositioningContext>, kafka_name: &str) {
        let mut resumed = TopicPartitionList::new();
        for (&partition, fed) in &mut self.partitions {
            if let (Some(next), true) = (fed.next, fed.from_ring) {
                (fed.from_ring, fed.at_end) = (false, false);
                if let Err(error) =
                    consumer.seek(kafka_name, partition, Offset::Offset(next), Duration::ZERO)
                {
                    tracing::warn!(topic = %kafka_name, partition, %error, "cannot seek a partition");
                }
                resumed.add_partition(kafka_name, partition);
            }
        }
        if resumed.count() > 0 {
            if let Err(error) = consumer.resume(&resumed) {
                tracing::warn!(topic = %kafka_name, %error, "cannot resume partitions");
            }
        }
    }
}

pub(super) fn to_bus_message(message: &BorrowedMessage<'_>) -> BusMessage {
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
