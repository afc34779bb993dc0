//! The engine of one durable subscription: one task per subscription per
//! server process, owning its group member (one consumer, whatever the
//! number of connections), its [`Ledger`], and its connections.
//!
//! Each turn of the loop waits for one thing (a command, a record, a timer,
//! a finished dead-lettering or progress write), then takes every other
//! command already queued. A settlement is answered only once the state
//! that reflects it is stored, and the group commit follows the store. One
//! progress write is in flight at a time, beside the loop, which goes on
//! leasing meanwhile; the settlements that arrive during a write share the
//! next one. Leases alone (which only raise attempt counts) are stored at
//! most every [`LEASE_PERSIST`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use acteon_bus::{
    BusBackend, BusError, GroupId, GroupMember, PartitionOffsets, SubscriptionEvent, Watermarks,
};
use acteon_core::{BusMessage, OutgoingMessage, StartPosition, TopicName};
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::delivery_id::DeliveryId;
use super::ledger::{
    Admission, DeadLetter, HeldRecord, Ledger, PartitionFigures, Settlement, Slot, Totals,
};
use crate::pipeline::{AuditLog, AuditRecord, Outcome, SCHEMA_HEADER};
use crate::state::{KeyKind, StateError, StateStore};

/// Longest a lease's raised attempt count waits to be stored.
const LEASE_PERSIST: Duration = Duration::from_millis(200);

/// Wait before joining the group again after a failure.
const REJOIN_AFTER: Duration = Duration::from_secs(1);

/// Records taken from the member per turn of the loop, at most.
const READ_AT_ONCE: usize = 256;

/// Longest the engine waits for the log's watermarks.
const WATERMARKS_WAIT: Duration = Duration::from_secs(2);

/// Wait before storing the progress again after a failure.
const PERSIST_RETRY: Duration = Duration::from_millis(500);

/// What an engine needs to know about its subscription.
#[derive(Debug, Clone)]
pub(super) struct EngineConfig {
    /// `namespace/tenant/id`, the key of its stored progress.
    pub key: String,
    pub id: String,
    pub generation: String,
    pub topic: TopicName,
    pub group: GroupId,
    pub dead_letter_topic: TopicName,
    /// Records read and unsettled at most; reading pauses there.
    pub max_tracked: usize,
}

/// What a connection receives.
#[derive(Debug)]
pub enum Push {
    Delivery {
        record: Arc<HeldRecord>,
        id: String,
        attempt: u32,
        deadline: DateTime<Utc>,
    },
    /// Retention removed `records` unsettled records.
    Lost { records: u64 },
    /// The last push of a connection.
    Ended { reason: String },
}

/// The figures the engine knows; the service adds the log's end offsets.
#[derive(Debug, Clone)]
pub(super) struct EngineFigures {
    pub partitions: Vec<PartitionFigures>,
    pub totals: Totals,
    pub consumers: usize,
}

/// Requests to an engine.
#[derive(Debug)]
pub(super) enum Command {
    /// Answered with what the connection notifies when it takes a push.
    Connect {
        connection: u64,
        pushes: mpsc::Sender<Push>,
        reply: oneshot::Sender<Arc<Notify>>,
    },
    Disconnect {
        connection: u64,
    },
    /// Answered with, per id, whether it was settled (else stale), once
    /// stored.
    Settle {
        settlement: Settlement,
        ids: Vec<DeliveryId>,
        reply: oneshot::Sender<Vec<bool>>,
    },
    Figures {
        reply: oneshot::Sender<EngineFigures>,
    },
    /// Ends every connection with `reason` and stops.
    Stop {
        reason: String,
    },
}

/// What the engine woke up for.
enum Wake {
    Command(Option<Command>),
    Event(Option<Result<SubscriptionEvent, BusError>>),
    DeadLettered(Slot),
    Written(Result<(), StateError>),
    Timer,
    Cancelled,
}

/// The progress write in flight, and what waits for it.
struct Write {
    done: oneshot::Receiver<Result<(), StateError>>,
    /// The settled prefix the written progress has.
    committed: PartitionOffsets,
    replies: Vec<(oneshot::Sender<Vec<bool>>, Vec<bool>)>,
}

/// Shared services an engine uses.
#[derive(Debug, Clone)]
pub struct EngineServices {
    pub bus: Arc<dyn BusBackend>,
    pub state: Arc<dyn StateStore>,
    pub audit: AuditLog,
    /// Cancelled at server shutdown.
    pub shutdown: CancellationToken,
}

pub(super) struct Engine {
    config: EngineConfig,
    services: EngineServices,
    ledger: Ledger,
    member: Option<GroupMember>,
    join_at: Option<Instant>,
    connections: BTreeMap<u64, mpsc::Sender<Push>>,
    /// The connection served last, for round-robin.
    last_served: u64,
    /// Every connection had no room at the last dispatch.
    connections_full: bool,
    /// Notified when a connection takes a push from its buffer.
    room: Arc<Notify>,
    waiting: Vec<(oneshot::Sender<Vec<bool>>, Vec<bool>)>,
    writing: Option<Write>,
    last_persist: Instant,
    persist_retry_at: Option<Instant>,
    announced_lost: u64,
    dead_lettered_tx: mpsc::UnboundedSender<Slot>,
    dead_lettered_rx: mpsc::UnboundedReceiver<Slot>,
    dead_letter_tasks: TaskTracker,
    /// Ends this engine's dead-lettering tasks.
    dead_letters_cancel: CancellationToken,
    end_reason: Option<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("key", &self.config.key)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(super) fn new(config: EngineConfig, services: EngineServices, ledger: Ledger) -> Self {
        let (dead_lettered_tx, dead_lettered_rx) = mpsc::unbounded_channel();
        let dead_letters_cancel = services.shutdown.child_token();
        let totals = ledger.totals();
        Self {
            config,
            services,
            ledger,
            member: None,
            join_at: Some(Instant::now()),
            connections: BTreeMap::new(),
            last_served: 0,
            connections_full: false,
            room: Arc::new(Notify::new()),
            waiting: Vec::new(),
            writing: None,
            last_persist: Instant::now(),
            persist_retry_at: None,
            announced_lost: totals.lost,
            dead_lettered_tx,
            dead_lettered_rx,
            dead_letter_tasks: TaskTracker::new(),
            dead_letters_cancel,
            end_reason: None,
        }
    }

    /// Runs until stopped, the server shuts down, or the topic is deleted.
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while self.end_reason.is_none() {
            let now = Instant::now();
            if self.join_at.is_some_and(|at| at <= now) {
                self.join().await;
            }
            for job in self.ledger.tick(now) {
                self.dead_letter(job);
            }
            self.dispatch(now);
            self.announce_lost();
            self.persist_if_due(now);
            match self.wait(&mut commands).await {
                Wake::Cancelled => break,
                Wake::Command(None) => break,
                Wake::Command(Some(command)) => self.handle(command),
                Wake::Event(event) => {
                    self.on_event(event).await;
                    self.read_ready().await;
                }
                Wake::DeadLettered(slot) => self.ledger.dead_lettered(slot),
                Wake::Written(result) => self.written(result),
                Wake::Timer => {}
            }
            // Whatever else is queued joins this turn's write.
            while self.end_reason.is_none() {
                match commands.try_recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => break,
                }
            }
        }
        self.finish().await;
    }

    async fn wait(&mut self, commands: &mut mpsc::Receiver<Command>) -> Wake {
        let reading = self.member.is_some() && self.ledger.tracked() < self.config.max_tracked;
        let timer = [
            self.ledger.next_wakeup(),
            self.join_at,
            // The next write, once the one in flight is done.
            self.writing
                .is_none()
                .then(|| self.next_persist())
                .flatten(),
        ]
        .into_iter()
        .flatten()
        .min();
        let member = &mut self.member;
        let full = self.connections_full;
        tokio::select! {
            () = self.room.notified(), if full => Wake::Timer,
            () = self.services.shutdown.cancelled() => Wake::Cancelled,
            command = commands.recv() => Wake::Command(command),
            event = next_event(member), if reading => Wake::Event(event),
            Some(slot) = self.dead_lettered_rx.recv() => Wake::DeadLettered(slot),
            written = write_done(&mut self.writing) => Wake::Written(written),
            () = sleep_until(timer) => Wake::Timer,
        }
    }

    fn handle(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Connect {
                connection,
                pushes,
                reply,
            } => {
                self.connections.insert(connection, pushes);
                let _ = reply.send(Arc::clone(&self.room));
            }
            Command::Disconnect { connection } => self.disconnect(connection, now),
            Command::Settle {
                settlement,
                ids,
                reply,
            } => {
                let mut results = Vec::with_capacity(ids.len());
                for id in ids {
                    let settled = if id.generation == self.config.generation {
                        match self.ledger.settle(id.delivery, settlement.clone(), now) {
                            Ok(dead_letter) => {
                                if let Some(job) = dead_letter {
                                    self.dead_letter(job);
                                }
                                true
                            }
                            Err(_stale) => false,
                        }
                    } else {
                        false
                    };
                    results.push(settled);
                }
                self.waiting.push((reply, results));
            }
            Command::Figures { reply } => {
                let _ = reply.send(EngineFigures {
                    partitions: self.ledger.figures(),
                    totals: self.ledger.totals(),
                    consumers: self.connections.len(),
                });
            }
            Command::Stop { reason } => self.end_reason = Some(reason),
        }
    }

    fn disconnect(&mut self, connection: u64, now: Instant) {
        if self.connections.remove(&connection).is_some() {
            for job in self.ledger.disconnect(connection, now) {
                self.dead_letter(job);
            }
        }
    }

    /// Takes the records the member has ready without waiting, up to
    /// [`READ_AT_ONCE`] or the tracking bound: one turn of the loop per
    /// batch rather than per record.
    async fn read_ready(&mut self) {
        for _ in 0..READ_AT_ONCE {
            if self.ledger.tracked() >= self.config.max_tracked {
                return;
            }
            let Some(member) = self.member.as_mut() else {
                return;
            };
            match member.events.next().now_or_never() {
                Some(event) => self.on_event(event).await,
                None => return,
            }
        }
    }

    async fn on_event(&mut self, event: Option<Result<SubscriptionEvent, BusError>>) {
        match event {
            // A topic deleted through Acteon stops its subscriptions'
            // engines; anything else (a broker that lost the topic for a
            // while) is waited out.
            None => {
                tracing::warn!(subscription = %self.config.key, "the consumer's stream ended; joining again");
                self.member = None;
                self.join_at = Some(Instant::now() + REJOIN_AFTER);
            }
            Some(Err(error)) => {
                tracing::warn!(subscription = %self.config.key, %error, "consumer failed; joining again");
                self.member = None;
                self.join_at = Some(Instant::now() + REJOIN_AFTER);
            }
            Some(Ok(SubscriptionEvent::Assigned(partitions))) => {
                if partitions.is_empty() {
                    return;
                }
                // Records retention removed while the subscription was
                // away, or a log that is not the one the progress is of.
                if let Some(marks) = self.watermarks().await {
                    for mark in marks.values() {
                        if partitions.contains(&mark.partition) {
                            self.ledger.log_spans(mark.partition, mark.start, mark.end);
                        }
                    }
                }
            }
            Some(Ok(SubscriptionEvent::Message(message))) => {
                let admitted = match self.ledger.admit(&message, None) {
                    Admission::NeedsLogStart => {
                        let start = self
                            .watermarks()
                            .await
                            .and_then(|marks| marks.get(&message.partition).map(|m| m.start))
                            // Unknown: count nothing as lost.
                            .unwrap_or(i64::MIN);
                        self.ledger.admit(&message, Some(start))
                    }
                    admitted => admitted,
                };
                if let Admission::Tracked(Some(job)) = admitted {
                    self.dead_letter(job);
                }
            }
            // Gaps are found from the offsets themselves (see `admit`).
            Some(Ok(SubscriptionEvent::Lagged { .. })) => {}
        }
    }

    /// The watermarks of every partition, by partition, if the log says
    /// within [`WATERMARKS_WAIT`].
    fn watermarks(&self) -> impl Future<Output = Option<BTreeMap<i32, Watermarks>>> + Send + use<> {
        let bus = Arc::clone(&self.services.bus);
        let topic = self.config.topic.clone();
        let key = self.config.key.clone();
        async move {
            match tokio::time::timeout(WATERMARKS_WAIT, bus.watermarks(&topic)).await {
                Ok(Ok(marks)) => Some(marks.into_iter().map(|m| (m.partition, m)).collect()),
                Ok(Err(error)) => {
                    tracing::warn!(subscription = %key, %error, "cannot read watermarks");
                    None
                }
                Err(_) => {
                    tracing::warn!(subscription = %key, "watermarks did not come in time");
                    None
                }
            }
        }
    }

    async fn join(&mut self) {
        self.join_at = None;
        // `from` was fixed as the group's offsets at creation; `earliest`
        // here only matters where retention overtook them.
        let joined = self
            .services
            .bus
            .join_group(
                &self.config.topic,
                &self.config.group,
                StartPosition::Earliest,
            )
            .await;
        match joined {
            Ok(member) => self.member = Some(member),
            Err(error) => {
                tracing::warn!(subscription = %self.config.key, %error, "cannot join the group; retrying");
                self.join_at = Some(Instant::now() + REJOIN_AFTER);
            }
        }
    }

    /// Leases ready records to connections with room, round-robin.
    fn dispatch(&mut self, now: Instant) {
        self.connections_full = false;
        // Every lease of one pass gets the same deadline.
        let deadline = Utc::now() + self.ledger.ack_deadline();
        while self.ledger.has_ready() {
            let Some(connection) = self.connection_with_room(now) else {
                self.connections_full = !self.connections.is_empty();
                return;
            };
            let lease = self.ledger.lease(connection, now).expect("a ready record");
            let push = Push::Delivery {
                record: lease.message,
                id: DeliveryId::format(&self.config.generation, lease.delivery),
                attempt: lease.delivery.attempt,
                deadline,
            };
            let sent = self
                .connections
                .get(&connection)
                .is_some_and(|pushes| pushes.try_send(push).is_ok());
            if !sent {
                self.disconnect(connection, now);
            }
            self.last_served = connection;
        }
    }

    /// The next connection after the last one served that has room in its
    /// buffer; connections found closed are dropped on the way.
    fn connection_with_room(&mut self, now: Instant) -> Option<u64> {
        let after = self.last_served;
        let mut closed = None;
        let chosen = self
            .connections
            .range(after + 1..)
            .chain(self.connections.range(..=after))
            .find_map(|(&id, pushes)| {
                if pushes.is_closed() {
                    closed.get_or_insert(id);
                    None
                } else {
                    (pushes.capacity() > 0).then_some(id)
                }
            });
        if let Some(connection) = closed {
            // Found on the way; the next round looks again.
            self.disconnect(connection, now);
        }
        chosen
    }

    fn announce_lost(&mut self) {
        let lost = self.ledger.totals().lost;
        if lost == self.announced_lost {
            return;
        }
        let records = lost - self.announced_lost;
        self.announced_lost = lost;
        tracing::warn!(subscription = %self.config.key, records, "retention removed unsettled records");
        for pushes in self.connections.values() {
            let _ = pushes.try_send(Push::Lost { records });
        }
    }

    fn persist_if_due(&mut self, now: Instant) {
        if self.writing.is_none() && self.next_persist().is_some_and(|at| at <= now) {
            self.start_write(now);
        }
    }

    /// When the progress is to be written next: at once for waiting
    /// settlements, within [`LEASE_PERSIST`] for leases alone; not while a
    /// failed write waits for its retry.
    fn next_persist(&self) -> Option<Instant> {
        if let Some(retry) = self.persist_retry_at {
            return Some(retry);
        }
        if !self.waiting.is_empty() {
            // At once: any instant already past.
            return Some(self.last_persist);
        }
        self.ledger
            .is_dirty()
            .then_some(self.last_persist + LEASE_PERSIST)
    }

    /// Starts writing the progress; the waiting settlements are answered
    /// when it is stored ([`Engine::written`]).
    fn start_write(&mut self, now: Instant) {
        self.persist_retry_at = None;
        self.last_persist = now;
        let replies = std::mem::take(&mut self.waiting);
        let committed = self.ledger.committed();
        let (done_tx, done) = oneshot::channel();
        if self.ledger.is_dirty() {
            let progress = self.ledger.take_progress();
            let value = serde_json::to_value(&progress).expect("progress serialises");
            let state = Arc::clone(&self.services.state);
            let key = self.config.key.clone();
            tokio::spawn(async move {
                let stored = state.put(KeyKind::DurableProgress, &key, &value).await;
                let _ = done_tx.send(stored);
            });
        } else {
            // Only stale ids: nothing to write, answered on the next turn.
            let _ = done_tx.send(Ok(()));
        }
        self.writing = Some(Write {
            done,
            committed,
            replies,
        });
    }

    /// A write finished: commit its prefix and answer its settlements, or
    /// keep them for the retry.
    fn written(&mut self, result: Result<(), StateError>) {
        let Some(write) = self.writing.take() else {
            return;
        };
        match result {
            Ok(()) => {
                if let Some(member) = &self.member {
                    member.offsets.commit(&write.committed);
                }
                for (reply, results) in write.replies {
                    let _ = reply.send(results);
                }
            }
            Err(error) => {
                tracing::warn!(subscription = %self.config.key, %error, "cannot store progress; retrying");
                self.ledger.mark_dirty();
                self.persist_retry_at = Some(Instant::now() + PERSIST_RETRY);
                let mut replies = write.replies;
                replies.append(&mut self.waiting);
                self.waiting = replies;
            }
        }
    }

    /// Finishes the write in flight, then writes what changed since.
    async fn persist_now(&mut self) {
        if self.writing.is_some() {
            let result = write_done(&mut self.writing).await;
            self.written(result);
        }
        if self.ledger.is_dirty() || !self.waiting.is_empty() {
            self.start_write(Instant::now());
            let result = write_done(&mut self.writing).await;
            self.written(result);
        }
    }

    /// Produces `job` to the dead-letter topic (retrying until it lands or
    /// the server stops), audits it, and reports back.
    fn dead_letter(&self, job: DeadLetter) {
        let services = self.services.clone();
        let config = self.config.clone();
        let done = self.dead_lettered_tx.clone();
        let cancel = self.dead_letters_cancel.clone();
        self.dead_letter_tasks.spawn(async move {
            let original = job.message.message();
            let message = dead_letter_message(&config, &job, &original);
            let mut backoff = Duration::from_millis(100);
            loop {
                let produced = tokio::select! {
                    () = cancel.cancelled() => return,
                    produced = services.bus.produce(&config.dead_letter_topic, message.clone()) => produced,
                };
                match produced {
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(subscription = %config.key, %error, "dead-lettering failed; retrying");
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            services
                .audit
                .record(AuditRecord {
                    id: 0,
                    at: Utc::now(),
                    tenant: config.topic.tenant().to_owned(),
                    namespace: config.topic.namespace().to_owned(),
                    topic: config.topic.kafka_topic_name().to_owned(),
                    key: job.message.key.clone(),
                    principal: None,
                    outcome: Outcome::DeadLettered,
                    rule: None,
                    silence: None,
                    partition: Some(job.slot.partition),
                    offset: Some(job.slot.offset),
                    error: Some(format!(
                        "subscription {} moved it to {} after {} attempts: {}",
                        config.id, config.dead_letter_topic, job.attempts, job.reason
                    )),
                })
                .await;
            let _ = done.send(job.slot);
        });
    }

    /// Stores the last progress, commits, and ends the connections.
    async fn finish(&mut self) {
        // Dead-letterings not done are redone from the stored progress.
        self.dead_letters_cancel.cancel();
        self.dead_letter_tasks.close();
        self.persist_now().await;
        let reason = self
            .end_reason
            .clone()
            .unwrap_or_else(|| "the server is shutting down".to_owned());
        for pushes in std::mem::take(&mut self.connections).into_values() {
            let _ = pushes.try_send(Push::Ended {
                reason: reason.clone(),
            });
        }
        if let Some(member) = self.member.take() {
            member.leave().await;
        }
    }
}

fn dead_letter_message(
    config: &EngineConfig,
    job: &DeadLetter,
    original: &BusMessage,
) -> OutgoingMessage {
    let mut headers = original.headers.clone();
    // The copy is not checked against the dead-letter topic's schema; the
    // one the record was checked against on its own topic goes along as
    // the origin's, like its topic and offset.
    if let Some(schema) = headers.remove(SCHEMA_HEADER) {
        headers.insert("acteon.dlq.schema".to_owned(), schema);
    }
    let stamps = [
        ("acteon.dlq.topic", original.topic.clone()),
        ("acteon.dlq.partition", job.slot.partition.to_string()),
        ("acteon.dlq.offset", job.slot.offset.to_string()),
        ("acteon.dlq.subscription", config.id.clone()),
        ("acteon.dlq.attempts", job.attempts.to_string()),
        ("acteon.dlq.reason", job.reason.clone()),
    ];
    headers.extend(stamps.map(|(name, value)| (name.to_owned(), value)));
    OutgoingMessage {
        key: original.key.clone(),
        payload: original.payload.clone(),
        headers,
    }
}

/// Resolves when the write in flight is done; never without one.
async fn write_done(writing: &mut Option<Write>) -> Result<(), StateError> {
    match writing {
        // A dropped sender means the write task panicked: not stored.
        Some(write) => (&mut write.done).await.unwrap_or_else(|_| {
            Err(StateError::Storage {
                operation: "put",
                kind: KeyKind::DurableProgress,
                id: String::new(),
                source: "the write task ended".into(),
            })
        }),
        None => std::future::pending().await,
    }
}

async fn next_event(
    member: &mut Option<GroupMember>,
) -> Option<Result<SubscriptionEvent, BusError>> {
    match member {
        Some(member) => member.events.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
