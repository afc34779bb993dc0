//! Broadcast reads of the Kafka backend: per topic, one consumer in no
//! group reads every partition into a bounded ring of records shared by
//! every broadcast stream of the topic in this process.
//!
//! Each stream has its own position in the ring. A stream that falls a
//! whole ring behind skips to the oldest record still there and is told
//! with `Lagged` how many records of each partition it missed: the reader
//! never waits for a slow stream.
//!
//! A stream from `earliest` first reads, with a consumer of its own (at most
//! [`CATCH_UPS_AT_ONCE`] at a time), each partition up to where the shared
//! reader stood when the stream joined the ring, then goes on in the ring.
//!
//! Group members that commit what they deliver take their caught-up
//! partitions' records from the same ring ([`MemberRing`]). The shared
//! reader starts with the topic's first user, stream or member, and stops
//! after its last. Readers run as tasks of the topic, so deleting the
//! topic ends them, and their streams, before the topic goes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use acteon_core::{BusMessage, StartPosition};
use futures::{FutureExt, StreamExt};
use rdkafka::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::KafkaConfig;
use super::error::{classify, is_partition_end};
use super::subscription::{Subscriptions, fetch_position, to_bus_message};
use crate::{BusError, EventStream, Operation, SubscriptionEvent};

/// Records of a topic held for its broadcast streams: how far a stream may
/// fall behind the shared reader before it misses records.
const RING_CAPACITY: usize = 4_096;

/// Records the shared reader puts in the ring per turn.
const READ_BATCH: usize = 256;

/// Records a catch-up reader buffers ahead of its stream.
const CATCH_UP_BUFFER: usize = 64;

/// Streams from `earliest` that read the log with a consumer of their own at
/// the same time; the others wait for a turn.
const CATCH_UPS_AT_ONCE: usize = 4;

/// How long the shared reader waits before trying again to find where the
/// topic's partitions end.
const POSITION_RETRY: Duration = Duration::from_secs(1);

type Event = Result<SubscriptionEvent, BusError>;

/// The shared readers of a backend, by Kafka topic.
#[derive(Debug)]
pub(super) struct Broadcasts {
    readers: Arc<Mutex<HashMap<String, SharedReader>>>,
    catch_ups: Arc<Semaphore>,
}

impl Default for Broadcasts {
    fn default() -> Self {
        Self {
            readers: Arc::default(),
            catch_ups: Arc::new(Semaphore::new(CATCH_UPS_AT_ONCE)),
        }
    }
}

/// A topic's shared reader and how many streams use it.
#[derive(Debug)]
struct SharedReader {
    feed: Arc<Feed>,
    partitions: u32,
    streams: usize,
}

/// The ring the shared reader of one topic fills.
#[derive(Debug)]
struct Feed {
    /// Per partition, the offset the shared reader puts in the ring next;
    /// locked while it does, so that joining the ring and reading these
    /// positions happen at one point of the record sequence.
    positions: Mutex<Vec<i64>>,
    ring: broadcast::Sender<Arc<BusMessage>>,
    /// True once the reader knows where each partition ends.
    positioned: watch::Sender<bool>,
    /// Cancelled when the reader stops, for good.
    stopped: CancellationToken,
    /// Set when the topic vanished under the reader.
    gone: Mutex<Option<String>>,
}

impl Feed {
    fn new() -> Self {
        Self {
            positions: Mutex::default(),
            ring: broadcast::channel(RING_CAPACITY).0,
            positioned: watch::channel(false).0,
            stopped: CancellationToken::new(),
            gone: Mutex::default(),
        }
    }

    fn positions(&self) -> MutexGuard<'_, Vec<i64>> {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `records` in the ring.
    fn publish(&self, records: &mut Vec<Arc<BusMessage>>) {
        let mut positions = self.positions();
        for record in records.drain(..) {
            if let Some(position) = positions.get_mut(record.partition as usize) {
                *position = record.offset + 1;
            }
            // No stream in the ring is not an error: one may join next.
            let _ = self.ring.send(record);
        }
    }

    /// A place in the ring, and where each partition stood there, once the
    /// reader is positioned; `None` if it stopped first.
    async fn place(&self) -> Option<Place> {
        let mut positioned = self.positioned.subscribe();
        tokio::select! {
            ready = positioned.wait_for(|&ready| ready) => ready.ok()?,
            () = self.stopped.cancelled() => return None,
        };
        let positions = self.positions();
        Some((self.ring.subscribe(), positions.clone()))
    }
}

/// Stops the shared reader after the last stream is dropped.
struct StreamGuard {
    readers: Arc<Mutex<HashMap<String, SharedReader>>>,
    kafka_name: String,
    feed: Arc<Feed>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(shared) = readers.get_mut(&self.kafka_name) else {
            return;
        };
        if !Arc::ptr_eq(&shared.feed, &self.feed) {
            return;
        }
        shared.streams -= 1;
        if shared.streams == 0 {
            readers.remove(&self.kafka_name);
            self.feed.stopped.cancel();
        }
    }
}

/// What a catch-up reader needs.
struct CatchUp {
    config: KafkaConfig,
    kafka_name: String,
    /// Per partition, the offset to read up to.
    until: Vec<i64>,
}

impl Broadcasts {
    /// The partition count of a topic with a running shared reader: asking
    /// the broker once per stream would cost a blocking request each.
    pub(super) fn partitions(&self, kafka_name: &str) -> Option<u32> {
        let readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        readers
            .get(kafka_name)
            .filter(|shared| !shared.feed.stopped.is_cancelled())
            .map(|shared| shared.partitions)
    }

    /// The shared reader of `kafka_name`, started if need be, and a guard
    /// that counts one more user of it until dropped.
    fn attach(
        &self,
        subscriptions: &Subscriptions,
        config: &KafkaConfig,
        kafka_name: &str,
        partitions: u32,
    ) -> StreamGuard {
        let feed = {
            let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
            let shared = match readers.get_mut(kafka_name) {
                Some(shared) if !shared.feed.stopped.is_cancelled() => shared,
                _ => {
                    let feed = Arc::new(Feed::new());
                    let reader = Arc::clone(&feed);
                    let (config, topic) = (config.clone(), kafka_name.to_owned());
                    subscriptions.spawn(kafka_name, move |cancel| {
                        read_shared(reader, config, topic, partitions, cancel)
                    });
                    let shared = SharedReader {
                        feed,
                        partitions,
                        streams: 0,
                    };
                    readers.insert(kafka_name.to_owned(), shared);
                    readers.get_mut(kafka_name).expect("just inserted")
                }
            };
            shared.streams += 1;
            Arc::clone(&shared.feed)
        };
        StreamGuard {
            readers: Arc::clone(&self.readers),
            kafka_name: kafka_name.to_owned(),
            feed,
        }
    }

    /// A broadcast stream of `kafka_name`, which has `partitions`
    /// partitions.
    pub(super) fn open(
        &self,
        subscriptions: &Subscriptions,
        config: &KafkaConfig,
        kafka_name: String,
        partitions: u32,
        start: StartPosition,
    ) -> EventStream {
        let guard = self.attach(subscriptions, config, &kafka_name, partitions);
        let catch_ups = Arc::clone(&self.catch_ups);
        let config = config.clone();
        let spawner = subscriptions.spawner(&kafka_name);
        let joined = async move {
            let (ring, positions) = guard.feed.place().await?;
            let catching_up = (start == StartPosition::Earliest).then(|| {
                let (events, receiver) = mpsc::channel(CATCH_UP_BUFFER);
                let catch_up = CatchUp {
                    config,
                    kafka_name,
                    until: positions.clone(),
                };
                spawner.spawn(|cancel| catch_up.run(events, catch_ups, cancel));
                receiver
            });
            let partitions = (0..positions.len() as i32).collect();
            Some(BroadcastStream {
                catching_up,
                ring,
                lagged: vec![false; positions.len()],
                next: positions,
                pending: VecDeque::from([SubscriptionEvent::Assigned(partitions)]),
                guard,
            })
        };
        futures::stream::once(joined)
            .filter_map(std::future::ready)
            .flat_map(BroadcastStream::into_stream)
            .boxed()
    }

    /// The ring of `kafka_name`, for a group member to take its records
    /// from once it has caught up with the shared reader.
    pub(super) fn member_ring(
        &self,
        subscriptions: &Subscriptions,
        config: &KafkaConfig,
        kafka_name: &str,
        partitions: u32,
    ) -> MemberRing {
        let guard = self.attach(subscriptions, config, kafka_name, partitions);
        let feed = Arc::clone(&guard.feed);
        MemberRing {
            joining: Some(Box::pin(async move { feed.place().await })),
            ring: None,
            next: Vec::new(),
            _guard: guard,
        }
    }
}

/// What a group member's ring yields.
pub(super) enum RingEvent {
    /// The member has its place in the ring.
    Joined,
    Record(Arc<BusMessage>),
    /// The member fell out of the ring: it must fetch for itself again.
    Lagged,
}

/// A group member's place in its topic's ring.
pub(super) struct MemberRing {
    joining: Option<futures::future::BoxFuture<'static, Option<Place>>>,
    ring: Option<broadcast::Receiver<Arc<BusMessage>>>,
    /// Per partition, the offset of the next record the ring shows.
    next: Vec<i64>,
    _guard: StreamGuard,
}

type Place = (broadcast::Receiver<Arc<BusMessage>>, Vec<i64>);

impl MemberRing {
    /// The next event; pending for good if the ring is gone.
    pub(super) async fn next(&mut self) -> RingEvent {
        if let Some(joining) = &mut self.joining {
            let place = joining.await;
            self.joining = None;
            return match place {
                Some((ring, next)) => {
                    (self.ring, self.next) = (Some(ring), next);
                    RingEvent::Joined
                }
                None => std::future::pending().await,
            };
        }
        let Some(ring) = &mut self.ring else {
            return std::future::pending().await;
        };
        match ring.recv().await {
            Ok(record) => {
                if let Some(next) = self.next.get_mut(record.partition as usize) {
                    *next = record.offset + 1;
                }
                RingEvent::Record(record)
            }
            Err(broadcast::error::RecvError::Lagged(_)) => RingEvent::Lagged,
            Err(broadcast::error::RecvError::Closed) => {
                self.ring = None;
                std::future::pending().await
            }
        }
    }

    /// Whether a member that delivers `partition` from `next` on can take
    /// the rest from the ring: it has every record before what the ring
    /// shows next.
    pub(super) fn covers(&self, partition: i32, next: i64) -> bool {
        self.ring.is_some()
            && self
                .next
                .get(partition as usize)
                .is_some_and(|&ring_next| next >= ring_next)
    }
}

/// One broadcast stream: its catch-up, if any, then its place in the ring.
struct BroadcastStream {
    catching_up: Option<mpsc::Receiver<Event>>,
    ring: broadcast::Receiver<Arc<BusMessage>>,
    /// Per partition, the offset this stream takes next from the ring.
    next: Vec<i64>,
    /// Per partition, whether the stream fell out of the ring since it last
    /// read a record of it: a gap before the next one is what it missed.
    lagged: Vec<bool>,
    pending: VecDeque<SubscriptionEvent>,
    /// Keeps the shared reader going.
    guard: StreamGuard,
}

impl BroadcastStream {
    fn into_stream(self) -> EventStream {
        futures::stream::unfold(self, |mut stream| async move {
            let event = stream.next_event().await?;
            Some((event, stream))
        })
        .boxed()
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if let Some(catching_up) = &mut self.catching_up {
                match catching_up.recv().await {
                    Some(event) => return Some(event),
                    None => self.catching_up = None,
                }
                continue;
            }
            let record = tokio::select! {
                received = self.ring.recv() => received,
                () = self.guard.feed.stopped.cancelled() => {
                    let feed = &self.guard.feed;
                    let gone = feed.gone.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    return gone.map(|topic| Err(BusError::UnknownTopic { topic }));
                }
            };
            match record {
                Ok(record) => self.take(record),
                Err(broadcast::error::RecvError::Lagged(_)) => self.lagged.fill(true),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Queues `record` if this stream has not had it, after what the
    /// stream missed of its partition.
    fn take(&mut self, record: Arc<BusMessage>) {
        let Some(next) = self.next.get_mut(record.partition as usize) else {
            return;
        };
        if record.offset < *next {
            return;
        }
        let lagged = std::mem::take(&mut self.lagged[record.partition as usize]);
        if lagged && record.offset > *next {
            self.pending.push_back(SubscriptionEvent::Lagged {
                partition: record.partition,
                skipped: record.offset - *next,
            });
        }
        *next = record.offset + 1;
        self.pending.push_back(SubscriptionEvent::Message(record));
    }
}

/// The shared reader: positions a consumer at the end of every partition,
/// then hands what it reads to the feed until cancelled.
async fn read_shared(
    feed: Arc<Feed>,
    config: KafkaConfig,
    kafka_name: String,
    partitions: u32,
    cancel: CancellationToken,
) {
    let stop = async {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = feed.stopped.cancelled() => {}
        }
    };
    tokio::pin!(stop);
    let consumer = loop {
        let positioned = position_at_end(&config, &kafka_name, partitions);
        tokio::select! {
            () = &mut stop => {
                feed.stopped.cancel();
                return;
            }
            positioned = positioned => match positioned {
                Ok((consumer, ends)) => {
                    *feed.positions() = ends;
                    feed.positioned.send_replace(true);
                    break consumer;
                }
                Err(error) => {
                    tracing::warn!(topic = %kafka_name, %error, "cannot start the broadcast reader");
                    tokio::time::sleep(POSITION_RETRY).await;
                }
            }
        }
    };
    let mut batch = Vec::with_capacity(READ_BATCH);
    loop {
        let received = tokio::select! {
            () = &mut stop => break,
            received = consumer.recv() => received,
        };
        match received {
            Ok(message) => batch.push(Arc::new(to_bus_message(&message))),
            Err(source) => {
                let error = classify(Operation::Consume, &kafka_name, source);
                if matches!(error, BusError::UnknownTopic { .. }) {
                    *feed.gone.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(kafka_name.clone());
                    break;
                }
                tracing::warn!(topic = %kafka_name, %error, "broadcast reader error");
                continue;
            }
        }
        // Whatever else is ready goes in under the same lock.
        while batch.len() < READ_BATCH {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(Arc::new(to_bus_message(&message))),
                _ => break,
            }
        }
        feed.publish(&mut batch);
    }
    feed.stopped.cancel();
    close(consumer, &kafka_name).await;
}

/// A consumer assigned every partition at its end, and those ends.
async fn position_at_end(
    config: &KafkaConfig,
    kafka_name: &str,
    partitions: u32,
) -> Result<(StreamConsumer, Vec<i64>), BusError> {
    let reader = config.reader(false);
    let timeout = config.admin_timeout();
    let topic = kafka_name.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: StreamConsumer = reader.create()?;
        let mut assignment = TopicPartitionList::with_capacity(partitions as usize);
        let mut ends = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions as i32 {
            let (_, end) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            assignment.add_partition_offset(&topic, partition, Offset::Offset(end))?;
            ends.push(end);
        }
        consumer.assign(&assignment)?;
        Ok((consumer, ends))
    })
    .await
    .expect("positioning a broadcast reader panicked")
    .map_err(|source| classify(Operation::Subscribe, kafka_name, source))
}

impl CatchUp {
    /// Reads every partition from its start up to [`CatchUp::until`] into
    /// `events`.
    async fn run(
        self,
        events: mpsc::Sender<Event>,
        catch_ups: Arc<Semaphore>,
        cancel: CancellationToken,
    ) {
        let Self {
            config,
            kafka_name,
            until,
        } = self;
        // Partitions with records before `until`, by the offset read next.
        let mut behind: BTreeMap<i32, i64> = until
            .iter()
            .enumerate()
            .filter(|&(_, &until)| until > 0)
            .map(|(partition, _)| (partition as i32, 0))
            .collect();
        if behind.is_empty() {
            return;
        }
        let _turn = tokio::select! {
            turn = catch_ups.acquire_owned() => turn.expect("the semaphore is never closed"),
            () = cancel.cancelled() => return,
            () = events.closed() => return,
        };
        let reader = config.reader(true);
        let (topic, partitions) = (
            kafka_name.clone(),
            behind.keys().copied().collect::<Vec<_>>(),
        );
        let created = tokio::task::spawn_blocking(move || {
            let consumer: StreamConsumer<CatchUpContext> =
                reader.create_with_context(CatchUpContext)?;
            let mut assignment = TopicPartitionList::with_capacity(partitions.len());
            for partition in partitions {
                assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
            }
            consumer.assign(&assignment)?;
            Ok(consumer)
        })
        .await
        .expect("creating a catch-up reader panicked");
        let consumer = match created {
            Ok(consumer) => consumer,
            Err(source) => {
                let error = classify(Operation::Subscribe, &kafka_name, source);
                let _ = events.send(Err(error)).await;
                return;
            }
        };
        while !behind.is_empty() {
            let received = tokio::select! {
                () = cancel.cancelled() => break,
                () = events.closed() => break,
                received = consumer.recv() => received,
            };
            let (partition, next) = match received {
                Ok(message) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    if !behind.contains_key(&partition) || offset >= until[partition as usize] {
                        continue;
                    }
                    let record = Arc::new(to_bus_message(&message));
                    let sent = tokio::select! {
                        sent = events.send(Ok(SubscriptionEvent::Message(record))) => sent,
                        () = cancel.cancelled() => break,
                    };
                    if sent.is_err() {
                        break;
                    }
                    (partition, offset + 1)
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    match fetch_position(&consumer, &kafka_name, partition) {
                        Some(next) => (partition, next),
                        None => continue,
                    }
                }
                Err(source) => {
                    let error = classify(Operation::Consume, &kafka_name, source);
                    if matches!(error, BusError::UnknownTopic { .. }) {
                        break;
                    }
                    tracing::warn!(topic = %kafka_name, %error, "catch-up reader error");
                    continue;
                }
            };
            if next >= until[partition as usize] {
                behind.remove(&partition);
            }
        }
        close(consumer, &kafka_name).await;
    }
}

/// The context of catch-up readers: reaching a partition's end is what they
/// wait for, not an error to log.
struct CatchUpContext;

impl ClientContext for CatchUpContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_end(&error) {
            tracing::error!(%error, reason, "catch-up reader");
        }
    }
}

impl ConsumerContext for CatchUpContext {}

/// Closes a consumer on a blocking thread: closing waits for librdkafka.
async fn close<C: ConsumerContext + 'static>(consumer: StreamConsumer<C>, kafka_name: &str) {
    if let Err(error) = tokio::task::spawn_blocking(move || drop(consumer)).await {
        tracing::error!(topic = %kafka_name, %error, "closing a broadcast reader failed");
    }
}
