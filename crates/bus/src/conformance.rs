//! The conformance suite every [`BusBackend`] must pass.
//!
//! Each case is an async function taking a fresh backend; the
//! [`conformance_tests!`](crate::conformance_tests) macro turns the whole list
//! into `#[tokio::test]`s for one backend, so both backends run exactly the
//! same checks. Cases wait on conditions with deadlines, never on fixed
//! sleeps: a Kafka consumer group takes seconds to form.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use acteon_core::{BusMessage, Headers, OutgoingMessage, StartPosition, Topic, TopicName};
use futures::StreamExt;
use tokio::time::{Instant, timeout};

use crate::{
    BusBackend, BusError, EventStream, GroupId, KAFKA_BOOTSTRAP_ENV, KafkaBackend, KafkaConfig,
    PartitionOffsets, SubscriptionEvent,
};

/// Longest wait for any one condition (group formation, a rebalance, delivery).
pub const DEADLINE: Duration = Duration::from_secs(45);

/// Set by the project's test command: a missing broker then fails the tests
/// instead of skipping them.
pub const REQUIRE_KAFKA_ENV: &str = "ACTEON_REQUIRE_KAFKA";

/// Settings for a test consumer: short group timeouts, so rebalances take
/// seconds rather than minutes.
pub fn test_kafka_config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig {
        session_timeout_ms: 6_000,
        max_poll_interval_ms: 10_000,
        heartbeat_interval_ms: 1_000,
        ..KafkaConfig::with_bootstrap(bootstrap)
    }
}

/// The broker address for Kafka tests, or `None` (said on stderr) when none
/// is configured. Panics when the test command requires a broker.
pub fn kafka_bootstrap_from_env(test: &str) -> Option<String> {
    match std::env::var(KAFKA_BOOTSTRAP_ENV) {
        Ok(bootstrap) if !bootstrap.is_empty() => Some(bootstrap),
        _ => {
            assert!(
                std::env::var_os(REQUIRE_KAFKA_ENV).is_none(),
                "{REQUIRE_KAFKA_ENV} is set but {KAFKA_BOOTSTRAP_ENV} is not: no broker for {test}"
            );
            eprintln!("skipping Kafka test {test}: {KAFKA_BOOTSTRAP_ENV} is not set");
            None
        }
    }
}

/// A Kafka backend for `test`, or `None` when no broker is configured.
pub fn kafka_backend_from_env(test: &str) -> Option<Arc<dyn BusBackend>> {
    let bootstrap = kafka_bootstrap_from_env(test)?;
    let backend = KafkaBackend::new(test_kafka_config(&bootstrap)).expect("kafka backend");
    Some(Arc::new(backend))
}

/// Generates one `#[tokio::test]` per conformance case. `$backend` is an
/// expression of type `Option<Arc<dyn BusBackend>>`, evaluated per test with
/// `test` bound to the case's name; `None` skips the case.
#[macro_export]
macro_rules! conformance_tests {
    ($test:ident => $backend:expr) => {
        $crate::conformance_tests!(@cases $test => $backend;
            create_then_delete,
            create_is_idempotent,
            conflicting_create_fails,
            offsets_increase_per_partition,
            a_key_always_lands_on_one_partition,
            earliest_replays_and_latest_does_not,
            headers_and_key_round_trip,
            members_of_one_group_share_records,
            distinct_groups_each_see_every_record,
            survivor_takes_over_when_a_member_leaves,
            a_group_goes_on_where_its_last_member_stopped,
            a_member_that_commits_itself_resumes_from_its_commit,
            offsets_set_without_a_member_apply_to_the_next_one,
            a_deleted_group_starts_afresh,
            watermarks_span_each_partition,
            unknown_topic_is_a_clear_error,
            deleting_a_topic_ends_its_subscriptions,
            a_group_from_earliest_reads_what_was_produced_concurrently,
            broadcast_streams_each_see_every_record,
            broadcast_from_earliest_replays_then_follows,
            a_slow_broadcast_stream_holds_back_no_other,
            deleting_a_topic_ends_its_broadcast_streams,
        );
    };
    (@cases $test:ident => $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let $test = stringify!($case);
                if let Some(backend) = $backend {
                    $crate::conformance::$case(backend).await;
                }
            }
        )*
    };
}

/// A topic name no other run uses.
pub fn unique_topic_name(case: &str) -> TopicName {
    let run = uuid::Uuid::new_v4().simple().to_string();
    TopicName::new("conformance", &run[..12], case).expect("valid test topic name")
}

fn unique_group() -> GroupId {
    GroupId::parse(&format!("group-{}", uuid::Uuid::new_v4().simple())).expect("valid group")
}

async fn create(backend: &dyn BusBackend, case: &str, partitions: u32) -> Topic {
    let topic = Topic::new(unique_topic_name(case), partitions, 1, None).expect("valid topic");
    backend.create_topic(&topic).await.expect("create topic");
    topic
}

fn message(key: Option<&str>, seq: usize) -> OutgoingMessage {
    OutgoingMessage {
        key: key.map(str::to_owned),
        payload: serde_json::json!({ "seq": seq }),
        headers: Headers::new(),
    }
}

pub fn seq_of(message: &BusMessage) -> usize {
    message.payload["seq"].as_u64().expect("seq in payload") as usize
}

/// Produces `count` messages keyed `key-{seq}`, with `seq` from `first`.
async fn produce_keyed(backend: &dyn BusBackend, topic: &Topic, first: usize, count: usize) {
    for seq in first..first + count {
        let key = format!("key-{seq}");
        backend
            .produce(topic.name(), message(Some(&key), seq))
            .await
            .expect("produce");
    }
}

/// A subscription under test: its stream plus the assignment it last reported.
pub struct Reader {
    stream: EventStream,
    assignment: Vec<i32>,
}

impl Reader {
    /// Wraps a stream of subscription events from elsewhere, e.g. the
    /// HTTP client; its errors become [`BusError::Broker`].
    pub fn from_events<S, E>(events: S) -> Self
    where
        S: futures::Stream<Item = Result<acteon_core::SubscriptionEvent, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let events = events.map(|event| {
            event.map_err(|error| BusError::Broker {
                operation: crate::Operation::Consume,
                topic: "(remote subscription)".to_owned(),
                source: Box::new(error),
            })
        });
        Self::from(events.boxed() as EventStream)
    }
}

impl From<EventStream> for Reader {
    /// Wraps any stream of subscription events, e.g. one read over HTTP.
    fn from(stream: EventStream) -> Self {
        Self {
            stream,
            assignment: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("assignment", &self.assignment)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A broadcast stream, past its assignment.
    pub async fn broadcast(backend: &dyn BusBackend, topic: &Topic, start: StartPosition) -> Self {
        let mut reader: Self = backend
            .broadcast(topic.name(), start)
            .await
            .expect("broadcast")
            .into();
        reader.wait_for_every_partition(topic.partitions()).await;
        reader
    }

    /// Reads a broadcast's first event: its assignment of all `partitions`.
    pub async fn wait_for_every_partition(&mut self, partitions: u32) {
        match self.next_event(DEADLINE).await {
            Some(Ok(SubscriptionEvent::Assigned(assigned))) => self.assignment = assigned,
            other => panic!("expected the broadcast's assignment, got {other:?}"),
        }
        let every: Vec<i32> = (0..partitions as i32).collect();
        assert_eq!(self.assignment, every, "a broadcast reads every partition");
    }

    pub async fn join(
        backend: &dyn BusBackend,
        topic: &Topic,
        group: &GroupId,
        start: StartPosition,
    ) -> Self {
        backend
            .subscribe(topic.name(), group, start)
            .await
            .expect("subscribe")
            .into()
    }

    /// The partitions this reader last reported.
    pub fn assignment(&self) -> &[i32] {
        &self.assignment
    }

    /// The next event, or `None` once the stream ended or `wait` passed.
    pub async fn next_event(
        &mut self,
        wait: Duration,
    ) -> Option<Result<SubscriptionEvent, BusError>> {
        timeout(wait, self.stream.next()).await.ok().flatten()
    }

    /// The next record, tracking assignments on the way; `None` if nothing
    /// arrives within `wait`.
    pub async fn next_message(&mut self, wait: Duration) -> Option<Arc<BusMessage>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await?.expect("subscription error") {
                SubscriptionEvent::Assigned(partitions) => self.assignment = partitions,
                SubscriptionEvent::Message(message) => return Some(message),
                // Counted as missing by the checks that follow.
                SubscriptionEvent::Lagged { .. } => {}
            }
        }
    }

    /// Reads until nothing arrives for `wait`, tracking assignments; returns
    /// the records read meanwhile.
    async fn drain_assignments(&mut self, wait: Duration) -> Vec<Arc<BusMessage>> {
        let mut seen = Vec::new();
        while let Some(message) = self.next_message(wait).await {
            seen.push(message);
        }
        seen
    }
}

/// How long a group's assignment must stay unchanged to count as settled.
/// Longer than the broker's rebalance rhythm and the consumers' heartbeat
/// interval (about 3 s each on Tansu), so a rebalance already under way is
/// seen before the test produces anything.
pub const SETTLE_QUIET: Duration = Duration::from_secs(4);

/// Waits until the readers' assignments are disjoint, together cover all
/// `partitions`, and have not changed for [`SETTLE_QUIET`]: the group has
/// settled, and records produced now reach exactly one member.
///
/// Tests add members one at a time, calling this after each join: when two
/// new members join a group at the same moment, Tansu can leave one of them
/// without partitions for longer than any deadline (Apache Kafka coalesces
/// such joins). The semantics checked are the same.
pub async fn wait_for_settled_group(readers: &mut [&mut Reader], partitions: u32) {
    let deadline = Instant::now() + DEADLINE;
    let mut settled: Option<(Instant, Vec<Vec<i32>>)> = None;
    loop {
        for reader in readers.iter_mut() {
            let stray = reader.drain_assignments(Duration::from_millis(100)).await;
            assert!(
                stray.is_empty(),
                "records arrived before any were produced: {stray:?}"
            );
        }
        let assignments: Vec<Vec<i32>> = readers
            .iter()
            .map(|reader| reader.assignment.clone())
            .collect();
        let mut covered = BTreeSet::new();
        let disjoint = assignments.iter().flatten().all(|p| covered.insert(*p));
        let complete = disjoint
            && covered.len() == partitions as usize
            && assignments.iter().all(|assigned| !assigned.is_empty());
        settled = match settled {
            Some((since, seen)) if complete && seen == assignments => {
                if since.elapsed() >= SETTLE_QUIET {
                    return;
                }
                Some((since, seen))
            }
            _ if complete => Some((Instant::now(), assignments.clone())),
            _ => None,
        };
        assert!(
            Instant::now() < deadline,
            "group did not settle: {assignments:?}"
        );
    }
}

/// Reads from all readers until `expected` records arrived in total (or the
/// deadline passed), then briefly longer to catch duplicates. Returns the
/// sequence numbers each reader saw.
pub async fn collect(readers: &mut [&mut Reader], expected: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![Vec::new(); readers.len()];
    let deadline = Instant::now() + DEADLINE;
    let mut settle_until = None;
    loop {
        let now = Instant::now();
        let total: usize = seen.iter().map(Vec::len).sum();
        if total >= expected && settle_until.is_none() {
            settle_until = Some(now + Duration::from_millis(500));
        }
        if settle_until.is_some_and(|until| now >= until) || now >= deadline {
            return seen;
        }
        for (index, reader) in readers.iter_mut().enumerate() {
            if let Some(message) = reader.next_message(Duration::from_millis(20)).await {
                seen[index].push(seq_of(&message));
            }
        }
    }
}

pub async fn create_then_delete(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "create_then_delete", 2).await;
    backend
        .produce(topic.name(), message(None, 0))
        .await
        .expect("produce to a created topic");
    backend.delete_topic(topic.name()).await.expect("delete");
    let again = backend.delete_topic(topic.name()).await;
    assert!(
        matches!(again, Err(BusError::UnknownTopic { .. })),
        "second delete: {again:?}"
    );
}

pub async fn create_is_idempotent(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "create_is_idempotent", 3).await;
    backend
        .create_topic(&topic)
        .await
        .expect("creating the same topic again succeeds");
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn conflicting_create_fails(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "conflicting_create_fails", 2).await;
    let conflicting = Topic::new(topic.name().clone(), 3, 1, None).unwrap();
    match backend.create_topic(&conflicting).await {
        Err(BusError::TopicConflict {
            topic: name,
            existing: 2,
            requested: 3,
        }) => assert_eq!(name, topic.kafka_topic_name()),
        other => panic!("expected a conflict, got {other:?}"),
    }
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn offsets_increase_per_partition(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "offsets_increase_per_partition", 3).await;
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for seq in 0..30 {
        let receipt = backend
            .produce(topic.name(), message(Some(&format!("k{seq}")), seq))
            .await
            .expect("produce");
        assert_eq!(receipt.topic, topic.kafka_topic_name());
        assert!((0..3).contains(&receipt.partition), "{receipt:?}");
        let expected = last.get(&receipt.partition).map_or(0, |offset| offset + 1);
        assert_eq!(
            receipt.offset, expected,
            "offsets of one partition are consecutive"
        );
        last.insert(receipt.partition, receipt.offset);
    }
    assert!(
        last.len() > 1,
        "30 keys all landed on one partition: {last:?}"
    );
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn a_key_always_lands_on_one_partition(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "a_key_always_lands_on_one_partition", 4).await;
    for key in ["alpha", "beta", "gamma"] {
        let mut partitions = BTreeSet::new();
        for seq in 0..10 {
            let receipt = backend
                .produce(topic.name(), message(Some(key), seq))
                .await
                .expect("produce");
            partitions.insert(receipt.partition);
        }
        assert_eq!(partitions.len(), 1, "key {key} spread over {partitions:?}");
    }
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn earliest_replays_and_latest_does_not(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "earliest_replays_and_latest_does_not", 2).await;
    produce_keyed(&*backend, &topic, 0, 5).await;

    let mut latest = Reader::join(&*backend, &topic, &unique_group(), StartPosition::Latest).await;
    wait_for_settled_group(&mut [&mut latest], 2).await;
    let mut earliest =
        Reader::join(&*backend, &topic, &unique_group(), StartPosition::Earliest).await;
    produce_keyed(&*backend, &topic, 5, 1).await;

    let replayed = collect(&mut [&mut earliest], 6).await.remove(0);
    assert_eq!(
        replayed.iter().copied().collect::<BTreeSet<_>>(),
        (0..6).collect(),
        "earliest replays the retained log"
    );
    let live = collect(&mut [&mut latest], 1).await.remove(0);
    assert_eq!(live, vec![5], "latest sees only what came after it joined");
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn headers_and_key_round_trip(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "headers_and_key_round_trip", 1).await;
    let sent = OutgoingMessage {
        key: Some("order-7".to_owned()),
        payload: serde_json::json!({ "seq": 0, "nested": { "list": [1, "two", null] } }),
        headers: Headers::from([
            ("x-trace-id".to_owned(), "abc-123".to_owned()),
            ("content-kind".to_owned(), "test ünïcode".to_owned()),
        ]),
    };
    let receipt = backend
        .produce(topic.name(), sent.clone())
        .await
        .expect("produce");
    let mut reader =
        Reader::join(&*backend, &topic, &unique_group(), StartPosition::Earliest).await;
    let received = reader.next_message(DEADLINE).await.expect("the record");
    assert_eq!(received.topic, topic.kafka_topic_name());
    assert_eq!(received.key, sent.key);
    assert_eq!(received.payload, sent.payload);
    assert_eq!(received.headers, sent.headers);
    assert_eq!(
        (received.partition, received.offset),
        (receipt.partition, receipt.offset)
    );
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn members_of_one_group_share_records(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "members_of_one_group_share_records", 4).await;
    let group = unique_group();
    let mut a = Reader::join(&*backend, &topic, &group, StartPosition::Latest).await;
    // One member at a time: see wait_for_settled_group.
    wait_for_settled_group(&mut [&mut a], 4).await;
    let mut b = Reader::join(&*backend, &topic, &group, StartPosition::Latest).await;
    wait_for_settled_group(&mut [&mut a, &mut b], 4).await;

    produce_keyed(&*backend, &topic, 0, 40).await;
    let seen = collect(&mut [&mut a, &mut b], 40).await;
    let (to_a, to_b): (BTreeSet<_>, BTreeSet<_>) = (
        seen[0].iter().copied().collect(),
        seen[1].iter().copied().collect(),
    );
    assert_eq!(
        to_a.len() + to_b.len(),
        seen[0].len() + seen[1].len(),
        "a record was read twice by one member"
    );
    assert!(
        to_a.is_disjoint(&to_b),
        "records reached both members: {:?}",
        to_a.intersection(&to_b).collect::<Vec<_>>()
    );
    assert_eq!(
        to_a.union(&to_b).copied().collect::<BTreeSet<_>>(),
        (0..40).collect(),
        "a record was lost"
    );
    assert!(
        !to_a.is_empty() && !to_b.is_empty(),
        "one member got nothing: {seen:?}"
    );
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn distinct_groups_each_see_every_record(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "distinct_groups_each_see_every_record", 3).await;
    let mut a = Reader::join(&*backend, &topic, &unique_group(), StartPosition::Latest).await;
    let mut b = Reader::join(&*backend, &topic, &unique_group(), StartPosition::Latest).await;
    wait_for_settled_group(&mut [&mut a], 3).await;
    wait_for_settled_group(&mut [&mut b], 3).await;

    produce_keyed(&*backend, &topic, 0, 20).await;
    let seen = collect(&mut [&mut a, &mut b], 40).await;
    for (reader, seqs) in seen.iter().enumerate() {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..20).collect::<Vec<_>>(),
            "group {reader} saw {seqs:?}"
        );
    }
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn survivor_takes_over_when_a_member_leaves(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "survivor_takes_over_when_a_member_leaves", 4).await;
    let group = unique_group();
    let mut survivor = Reader::join(&*backend, &topic, &group, StartPosition::Latest).await;
    wait_for_settled_group(&mut [&mut survivor], 4).await;
    let mut leaver = Reader::join(&*backend, &topic, &group, StartPosition::Latest).await;
    wait_for_settled_group(&mut [&mut survivor, &mut leaver], 4).await;
    drop(leaver);
    // Produced during the rebalance: the survivor takes the leaver's
    // partitions over from the group's positions, so nothing is skipped.
    produce_keyed(&*backend, &topic, 0, 20).await;
    let mut seen = collect(&mut [&mut survivor], 20).await.remove(0);
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn unknown_topic_is_a_clear_error(backend: Arc<dyn BusBackend>) {
    let name = unique_topic_name("unknown_topic_is_a_clear_error");
    let produced = backend.produce(&name, message(None, 0)).await;
    match produced {
        Err(BusError::UnknownTopic { topic }) => assert_eq!(topic, name.kafka_topic_name()),
        other => panic!("produce to a missing topic: {other:?}"),
    }
    let subscribed = backend
        .subscribe(&name, &unique_group(), StartPosition::Earliest)
        .await;
    assert!(
        matches!(subscribed, Err(BusError::UnknownTopic { .. })),
        "subscribe to a missing topic must fail"
    );
}

pub async fn deleting_a_topic_ends_its_subscriptions(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "deleting_a_topic_ends_its_subscriptions", 2).await;
    let mut reader = Reader::join(&*backend, &topic, &unique_group(), StartPosition::Latest).await;
    wait_for_settled_group(&mut [&mut reader], 2).await;
    backend.delete_topic(topic.name()).await.expect("delete");
    let deadline = Instant::now() + DEADLINE;
    loop {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            reader.stream.next(),
        )
        .await
        {
            Ok(None) => return,
            Ok(Some(Ok(SubscriptionEvent::Assigned(_)))) => continue,
            other => panic!("expected the stream to end, got {other:?}"),
        }
    }
}

/// Reads `count` records from `reader`, failing after [`DEADLINE`].
async fn read_seqs(reader: &mut Reader, count: usize) -> Vec<usize> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let message = reader.next_message(DEADLINE).await;
        seen.push(seq_of(
            &message.unwrap_or_else(|| panic!("only {seen:?} arrived")),
        ));
    }
    seen
}

/// Nothing more arrives within a short wait.
async fn assert_quiet(reader: &mut Reader) {
    let stray = reader.next_message(Duration::from_secs(1)).await;
    assert!(stray.is_none(), "unexpected record {stray:?}");
}

pub async fn a_group_goes_on_where_its_last_member_stopped(backend: Arc<dyn BusBackend>) {
    let topic = create(
        &*backend,
        "a_group_goes_on_where_its_last_member_stopped",
        2,
    )
    .await;
    let group = unique_group();
    let mut first = Reader::join(&*backend, &topic, &group, StartPosition::Latest).await;
    wait_for_settled_group(&mut [&mut first], 2).await;
    produce_keyed(&*backend, &topic, 0, 6).await;
    let mut seen = read_seqs(&mut first, 6).await;
    drop(first);

    // Published while the group has no member: `latest` must not skip it.
    produce_keyed(&*backend, &topic, 6, 6).await;
    let mut second = Reader::join(&*backend, &topic, &group, StartPosition::Latest).await;
    seen.extend(read_seqs(&mut second, 6).await);
    seen.sort_unstable();
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
    assert_quiet(&mut second).await;
    drop(second);

    // And `earliest` must not replay what the group already read.
    let mut third = Reader::join(&*backend, &topic, &group, StartPosition::Earliest).await;
    produce_keyed(&*backend, &topic, 12, 2).await;
    let mut tail = read_seqs(&mut third, 2).await;
    tail.sort_unstable();
    assert_eq!(tail, vec![12, 13]);
    assert_quiet(&mut third).await;
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn a_member_that_commits_itself_resumes_from_its_commit(backend: Arc<dyn BusBackend>) {
    let topic = create(
        &*backend,
        "a_member_that_commits_itself_resumes_from_its_commit",
        1,
    )
    .await;
    let group = unique_group();
    produce_keyed(&*backend, &topic, 0, 6).await;
    let member = backend
        .join_group(topic.name(), &group, StartPosition::Earliest)
        .await
        .expect("join");
    let mut reader = Reader::from(member.events);
    assert_eq!(read_seqs(&mut reader, 6).await, (0..6).collect::<Vec<_>>());
    member.offsets.commit(&PartitionOffsets::from([(0, 3)]));
    drop((reader, member.offsets));

    let member = backend
        .join_group(topic.name(), &group, StartPosition::Earliest)
        .await
        .expect("join again");
    let mut reader = Reader::from(member.events);
    assert_eq!(read_seqs(&mut reader, 3).await, vec![3, 4, 5]);
    assert_quiet(&mut reader).await;
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn offsets_set_without_a_member_apply_to_the_next_one(backend: Arc<dyn BusBackend>) {
    let topic = create(
        &*backend,
        "offsets_set_without_a_member_apply_to_the_next_one",
        1,
    )
    .await;
    let group = unique_group();
    produce_keyed(&*backend, &topic, 0, 4).await;
    backend
        .set_group_offsets(topic.name(), &group, &PartitionOffsets::from([(0, 2)]))
        .await
        .expect("set offsets");
    let mut reader = Reader::join(&*backend, &topic, &group, StartPosition::Latest).await;
    assert_eq!(read_seqs(&mut reader, 2).await, vec![2, 3]);
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn a_deleted_group_starts_afresh(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "a_deleted_group_starts_afresh", 1).await;
    let group = unique_group();
    produce_keyed(&*backend, &topic, 0, 3).await;
    backend
        .set_group_offsets(topic.name(), &group, &PartitionOffsets::from([(0, 3)]))
        .await
        .expect("set offsets");
    backend
        .delete_group(topic.name(), &group)
        .await
        .expect("delete group");
    backend
        .delete_group(topic.name(), &unique_group())
        .await
        .expect("deleting an unknown group is no error");
    let mut reader = Reader::join(&*backend, &topic, &group, StartPosition::Earliest).await;
    assert_eq!(read_seqs(&mut reader, 3).await, vec![0, 1, 2]);
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn watermarks_span_each_partition(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "watermarks_span_each_partition", 3).await;
    let mut produced = BTreeMap::<i32, i64>::new();
    for seq in 0..10 {
        let receipt = backend
            .produce(topic.name(), message(Some(&format!("key-{seq}")), seq))
            .await
            .expect("produce");
        *produced.entry(receipt.partition).or_default() += 1;
    }
    let watermarks = backend.watermarks(topic.name()).await.expect("watermarks");
    let partitions: Vec<i32> = watermarks.iter().map(|w| w.partition).collect();
    assert_eq!(partitions, vec![0, 1, 2]);
    for mark in watermarks {
        assert_eq!(mark.start, 0);
        assert_eq!(
            mark.end,
            produced.get(&mark.partition).copied().unwrap_or(0)
        );
    }
    backend.delete_topic(topic.name()).await.expect("delete");
}

/// Reads `reader` until `expected` records and skips arrived or nothing
/// came for a while; checks that no record came twice and that each
/// partition's records came in order. Returns the sequence numbers read
/// and the records reported skipped.
pub async fn read_broadcast(reader: &mut Reader, expected: usize) -> (BTreeSet<usize>, i64) {
    let (mut seen, mut skipped) = (BTreeSet::new(), 0);
    let mut last_offsets = BTreeMap::new();
    while seen.len() + (skipped as usize) < expected {
        match reader.next_event(DEADLINE).await {
            Some(Ok(SubscriptionEvent::Message(message))) => {
                assert!(seen.insert(seq_of(&message)), "{message:?} came twice");
                let last = last_offsets.insert(message.partition, message.offset);
                assert!(
                    last.is_none_or(|last| last < message.offset),
                    "partition {} went from {last:?} to {}",
                    message.partition,
                    message.offset
                );
            }
            Some(Ok(SubscriptionEvent::Lagged { skipped: n, .. })) => skipped += n,
            other => panic!("after {} records: {other:?}", seen.len()),
        }
    }
    assert_quiet(reader).await;
    (seen, skipped)
}

pub async fn broadcast_streams_each_see_every_record(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "broadcast_streams_each_see_every_record", 3).await;
    let mut a = Reader::broadcast(&*backend, &topic, StartPosition::Latest).await;
    let mut b = Reader::broadcast(&*backend, &topic, StartPosition::Latest).await;
    // A group on the same topic takes nothing from them.
    let mut member = Reader::join(&*backend, &topic, &unique_group(), StartPosition::Latest).await;
    wait_for_settled_group(&mut [&mut member], 3).await;
    produce_keyed(&*backend, &topic, 0, 20).await;
    for reader in [&mut a, &mut b] {
        assert_eq!(read_broadcast(reader, 20).await, ((0..20).collect(), 0));
    }
    assert_eq!(collect(&mut [&mut member], 20).await[0].len(), 20);
    // The last stream gone, a new one starts afresh from `latest`.
    drop((a, b));
    let mut c = Reader::broadcast(&*backend, &topic, StartPosition::Latest).await;
    produce_keyed(&*backend, &topic, 20, 5).await;
    assert_eq!(read_broadcast(&mut c, 5).await, ((20..25).collect(), 0));
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn broadcast_from_earliest_replays_then_follows(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "broadcast_from_earliest_replays_then_follows", 3).await;
    produce_keyed(&*backend, &topic, 0, 30).await;
    let mut live = Reader::broadcast(&*backend, &topic, StartPosition::Latest).await;
    let mut replay = Reader::broadcast(&*backend, &topic, StartPosition::Earliest).await;
    // Produced while the replay is under way: each must come exactly once,
    // whether the replay reads it or the shared feed hands it over.
    let producing = {
        let backend = Arc::clone(&backend);
        let topic = topic.clone();
        tokio::spawn(async move { produce_keyed(&*backend, &topic, 30, 30).await })
    };
    assert_eq!(
        read_broadcast(&mut replay, 60).await,
        ((0..60).collect(), 0)
    );
    producing.await.expect("producer");
    assert_eq!(read_broadcast(&mut live, 30).await, ((30..60).collect(), 0));
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn a_slow_broadcast_stream_holds_back_no_other(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "a_slow_broadcast_stream_holds_back_no_other", 2).await;
    let mut slow = Reader::broadcast(&*backend, &topic, StartPosition::Latest).await;
    let mut fast = Reader::broadcast(&*backend, &topic, StartPosition::Latest).await;
    // More than a Kafka broadcast buffers per topic; `slow` reads nothing
    // meanwhile.
    let count = 5_000;
    let producing = {
        let backend = Arc::clone(&backend);
        let topic = topic.clone();
        tokio::spawn(async move { produce_keyed(&*backend, &topic, 0, count).await })
    };
    assert_eq!(
        read_broadcast(&mut fast, count).await,
        ((0..count).collect(), 0)
    );
    producing.await.expect("producer");
    // Whatever `slow` missed it is told about, and nothing comes twice.
    let (seen, skipped) = read_broadcast(&mut slow, count).await;
    assert_eq!(seen.len() + skipped as usize, count, "{skipped} skipped");
    backend.delete_topic(topic.name()).await.expect("delete");
}

pub async fn deleting_a_topic_ends_its_broadcast_streams(backend: Arc<dyn BusBackend>) {
    let topic = create(&*backend, "deleting_a_topic_ends_its_broadcast_streams", 2).await;
    let mut latest = Reader::broadcast(&*backend, &topic, StartPosition::Latest).await;
    let mut earliest = Reader::broadcast(&*backend, &topic, StartPosition::Earliest).await;
    backend.delete_topic(topic.name()).await.expect("delete");
    for reader in [&mut latest, &mut earliest] {
        let end = reader.next_event(DEADLINE).await;
        assert!(end.is_none(), "expected the stream to end, got {end:?}");
    }
}

/// Records produced many at a time, then read by a new group from the
/// start: every one arrives. On Tansu the partitions' reported ends can
/// fall short of what was acknowledged; a reader must not stop there.
pub async fn a_group_from_earliest_reads_what_was_produced_concurrently(
    backend: Arc<dyn BusBackend>,
) {
    let topic = create(
        &*backend,
        "a_group_from_earliest_reads_what_was_produced_concurrently",
        4,
    )
    .await;
    let count = 1_000;
    futures::stream::iter(0..count)
        .map(|seq| {
            let (backend, topic) = (&backend, &topic);
            async move {
                let key = format!("key-{}", seq % 64);
                backend
                    .produce(topic.name(), message(Some(&key), seq))
                    .await
                    .expect("produce")
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let mut reader =
        Reader::join(&*backend, &topic, &unique_group(), StartPosition::Earliest).await;
    let seen: BTreeSet<usize> = read_seqs(&mut reader, count).await.into_iter().collect();
    assert_eq!(seen.len(), count, "a record came twice");
    backend.delete_topic(topic.name()).await.expect("delete");
}
