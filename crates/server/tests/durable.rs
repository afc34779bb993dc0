//! Durable subscriptions against the real server binary, on both backends,
//! driven through `acteon-client`: the conformance cases of at-least-once
//! delivery, and bad input on every route.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use acteon_bus::conformance::DEADLINE;
use acteon_client::{
    Client, Deliveries, Delivery, DurableEvent, DurableRef, DurableSubscriptionSpec,
    DurableSubscriptionView,
};
use acteon_core::StartPosition;
use common::{Backend, TestServer};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

on_both_backends!(
    every_route_answers_bad_input_with_a_clear_error,
    acked_records_are_not_delivered_again,
    nack_redelivers_after_its_delay,
    an_expired_deadline_redelivers_and_extend_holds_the_lease,
    the_last_failed_attempt_goes_to_the_dead_letter_topic,
    reject_dead_letters_at_once,
    key_ordering_delivers_one_record_per_key_at_a_time,
    two_connections_share_the_records,
    a_dropped_connection_hands_its_records_on_at_once,
    records_published_while_nobody_is_connected_are_delivered,
    deleting_the_subscription_ends_its_connections,
);

fn tenant() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

struct Fixture {
    server: TestServer,
    client: Client,
    tenant: String,
    topic: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(backend: &Backend, partitions: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(backend, dir.path());
        Self::on(server, dir, partitions).await
    }

    async fn on(server: TestServer, dir: tempfile::TempDir, partitions: u32) -> Self {
        let client = Client::builder(&server.base_url).build().unwrap();
        let tenant = tenant();
        let topic = server.create_topic(&tenant, "jobs", partitions).await;
        Self {
            server,
            client,
            tenant,
            topic,
            _dir: dir,
        }
    }

    fn spec(&self, id: &str) -> DurableSubscriptionSpec {
        DurableSubscriptionSpec {
            namespace: "test".into(),
            tenant: self.tenant.clone(),
            id: id.into(),
            topic: "jobs".into(),
            ..DurableSubscriptionSpec::default()
        }
    }

    fn named(&self, id: &str) -> DurableRef {
        DurableRef::new("test", &self.tenant, id)
    }

    async fn create(&self, spec: DurableSubscriptionSpec) -> DurableRef {
        let named = self.named(&spec.id);
        self.client
            .create_durable_subscription(&spec)
            .await
            .expect("create durable subscription");
        named
    }

    async fn publish(&self, seqs: std::ops::Range<usize>) {
        for seq in seqs {
            self.server.publish_seq(&self.topic, seq).await;
        }
    }

    async fn publish_keyed(&self, key: &str, seq: usize) {
        let (status, body) = self
            .server
            .post(
                "/v1/bus/publish",
                &json!({ "topic": self.topic, "key": key, "payload": { "seq": seq } }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    async fn view(&self, named: &DurableRef) -> DurableSubscriptionView {
        self.client
            .get_durable_subscription(named)
            .await
            .expect("get")
    }
}

fn seq(delivery: &Delivery) -> usize {
    delivery.message.payload["seq"].as_u64().expect("seq") as usize
}

/// The next delivery within `wait`, or `None`.
async fn next_delivery(deliveries: &mut Deliveries, wait: Duration) -> Option<Delivery> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, deliveries.next()).await.ok()?? {
            Ok(DurableEvent::Delivery(delivery)) => return Some(delivery),
            Ok(DurableEvent::Lost { .. }) => {}
            Ok(DurableEvent::Ended { reason }) => panic!("the stream ended: {reason}"),
            Err(error) => panic!("stream failed: {error}"),
        }
    }
}

async fn take(deliveries: &mut Deliveries, count: usize) -> Vec<Delivery> {
    let mut taken = Vec::with_capacity(count);
    while taken.len() < count {
        let next = next_delivery(deliveries, DEADLINE).await;
        let seqs: Vec<usize> = taken.iter().map(seq).collect();
        taken.push(next.unwrap_or_else(|| panic!("only {seqs:?} arrived")));
    }
    taken
}

async fn assert_quiet(deliveries: &mut Deliveries, wait: Duration) {
    if let Some(stray) = next_delivery(deliveries, wait).await {
        panic!("unexpected delivery {stray:?}");
    }
}

async fn every_route_answers_bad_input_with_a_clear_error(backend: Backend) {
    let fixture = Fixture::start(&backend, 1).await;
    let server = &fixture.server;
    let base = json!({ "namespace": "test", "tenant": fixture.tenant, "id": "w", "topic": "jobs" });
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    for (body, names) in [
        (with("ack_deadline_ms", json!(999)), "ack_deadline_ms"),
        (with("ack_deadline_ms", json!(3_600_001)), "ack_deadline_ms"),
        (with("max_deliveries", json!(0)), "max_deliveries"),
        (with("max_deliveries", json!(101)), "max_deliveries"),
        (with("max_in_flight", json!(0)), "max_in_flight"),
        (with("from", json!("middle")), "from"),
        (with("ordering", json!("total")), "ordering"),
        (with("backoff_ms", json!("soon")), "backoff_ms"),
        (with("id", json!("a/b")), "subscription id"),
        (with("id", json!("")), "subscription id"),
        (with("tenant", json!("a.b")), "tenant"),
        (with("topic", json!("other.tenant.jobs")), "topic"),
        (
            with("dead_letter_topic", json!("jobs")),
            "dead_letter_topic",
        ),
        (with("surprise", json!(1)), "surprise"),
    ] {
        let (status, answer) = server.post("/v1/bus/subscriptions", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(names), "{body}: {error}");
    }
    let (status, answer) = server
        .post("/v1/bus/subscriptions", &with("topic", json!("absent")))
        .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(
        server.post("/v1/bus/subscriptions", &json!([])).await.0,
        400
    );

    let (status, created) = server.post("/v1/bus/subscriptions", &base).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["ack_deadline_ms"], 30_000);
    assert_eq!(created["max_deliveries"], 5);
    assert_eq!(created["max_in_flight"], 1_000);
    assert_eq!(created["ordering"], "none");
    assert_eq!(created["from"], "latest");
    let dead_letters = format!("test.{}.jobs-dlq", fixture.tenant);
    assert_eq!(created["dead_letter_topic"], dead_letters.as_str());
    let topics = server
        .topic_names(&format!("?tenant={}", fixture.tenant))
        .await;
    assert!(topics.contains(&dead_letters), "{topics:?}");
    let (status, answer) = server.post("/v1/bus/subscriptions", &base).await;
    assert_eq!(status, 409, "{answer}");

    let one = format!("/v1/bus/subscriptions/test/{}/w", fixture.tenant);
    let (status, listed) = server
        .get(&format!("/v1/bus/subscriptions?tenant={}", fixture.tenant))
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (status, shown) = server.get(&one).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["partitions"][0]["lag"], 0, "{shown}");
    assert_eq!(shown["consumers"], 0);

    for settle in ["ack", "nack", "reject", "extend"] {
        let path = format!("{one}/{settle}");
        let reason = json!("because");
        let mut body = json!({ "ids": ["not-an-id"] });
        if settle == "reject" {
            body["reason"] = reason.clone();
        }
        let (status, answer) = server.post(&path, &body).await;
        assert_eq!(status, 400, "{settle}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("not-an-id"));
        let mut empty = json!({ "ids": [] });
        if settle == "reject" {
            empty["reason"] = reason;
        }
        assert_eq!(
            server.post(&path, &empty).await.0,
            400,
            "{settle} of no ids"
        );
        assert_eq!(
            server.post(&path, &json!({})).await.0,
            400,
            "{settle}: no ids"
        );
        let unknown = format!(
            "/v1/bus/subscriptions/test/{}/nobody/{settle}",
            fixture.tenant
        );
        body["ids"] = json!(["0a1b-0-0-1"]);
        assert_eq!(server.post(&unknown, &body).await.0, 404, "{settle}");
    }
    let (status, answer) = server
        .post(&format!("{one}/ack"), &json!({ "ids": ["0a1b-0-0-1"] }))
        .await;
    assert_eq!(status, 200, "a well-formed unknown id is stale: {answer}");
    assert_eq!(answer, json!({ "settled": [], "stale": ["0a1b-0-0-1"] }));
    let (status, _) = server
        .post(
            &format!("{one}/nack"),
            &json!({ "ids": ["0a1b-0-0-1"], "delay_ms": -1 }),
        )
        .await;
    assert_eq!(status, 400);

    let missing = format!("/v1/bus/subscriptions/test/{}/nobody", fixture.tenant);
    assert_eq!(server.get(&missing).await.0, 404);
    assert_eq!(server.get(&format!("{missing}/events")).await.0, 404);
    assert_eq!(server.delete(&missing).await.0, 404);
    assert_eq!(server.delete(&one).await.0, 204);
    assert_eq!(server.get(&one).await.0, 404);
    assert_eq!(server.delete(&one).await.0, 404);
}

async fn acked_records_are_not_delivered_again(backend: Backend) {
    let fixture = Fixture::start(&backend, 2).await;
    let named = fixture.create(fixture.spec("workers")).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    fixture.publish(0..10).await;
    let taken = take(&mut deliveries, 10).await;
    let seqs: BTreeSet<usize> = taken.iter().map(seq).collect();
    assert_eq!(seqs, (0..10).collect());
    assert!(taken.iter().all(|d| d.attempt == 1));
    for delivery in &taken {
        assert!(delivery.ack().await.unwrap(), "ack of {}", delivery.id);
    }
    assert!(!taken[0].ack().await.unwrap(), "a second ack is stale");
    drop(deliveries);

    let mut again = fixture.client.consume(&named).await.unwrap();
    assert_quiet(&mut again, Duration::from_secs(2)).await;
    let view = fixture.view(&named).await;
    assert_eq!((view.delivered, view.acked, view.redelivered), (10, 10, 0));
    let committed: i64 = view.partitions.iter().map(|p| p.committed).sum();
    assert_eq!(committed, 10, "{view:?}");
    assert!(view.partitions.iter().all(|p| p.lag == Some(0)), "{view:?}");
}

async fn nack_redelivers_after_its_delay(backend: Backend) {
    let fixture = Fixture::start(&backend, 1).await;
    let named = fixture.create(fixture.spec("retry")).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    fixture.publish(0..1).await;
    let first = take(&mut deliveries, 1).await.remove(0);
    let nacked_at = Instant::now();
    assert!(first.nack(Some(Duration::from_millis(700))).await.unwrap());
    let second = take(&mut deliveries, 1).await.remove(0);
    assert!(nacked_at.elapsed() >= Duration::from_millis(650));
    assert_eq!((seq(&second), second.attempt), (0, 2));
    assert_ne!(first.id, second.id);
    assert!(
        !first.ack().await.unwrap(),
        "the first delivery is stale now"
    );
    assert!(second.ack().await.unwrap());
    assert_eq!(fixture.view(&named).await.redelivered, 1);
}

async fn an_expired_deadline_redelivers_and_extend_holds_the_lease(backend: Backend) {
    let fixture = Fixture::start(&backend, 1).await;
    let spec = DurableSubscriptionSpec {
        ack_deadline_ms: Some(1_000),
        ..fixture.spec("slow")
    };
    let named = fixture.create(spec).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    // No lease can start before its record is published.
    let published_at = Instant::now();
    fixture.publish(0..2).await;
    let mut taken = take(&mut deliveries, 2).await;
    taken.sort_by_key(seq);
    // Keep extending the second one; let the first one expire.
    let held = &taken[1];
    let mut redelivered = None;
    while redelivered.is_none() {
        assert!(held.extend().await.unwrap(), "extend of a live lease");
        redelivered = next_delivery(&mut deliveries, Duration::from_millis(300)).await;
        assert!(published_at.elapsed() < Duration::from_secs(10));
    }
    let redelivered = redelivered.unwrap();
    assert_eq!((seq(&redelivered), redelivered.attempt), (0, 2));
    let after = published_at.elapsed();
    assert!(
        after >= Duration::from_millis(1_000),
        "redelivered after {after:?}"
    );
    assert!(redelivered.ack().await.unwrap());
    assert!(
        held.ack().await.unwrap(),
        "the extended lease is still valid"
    );
    assert!(
        !taken[0].ack().await.unwrap(),
        "the expired delivery is stale"
    );
}

async fn the_last_failed_attempt_goes_to_the_dead_letter_topic(backend: Backend) {
    let fixture = Fixture::start(&backend, 1).await;
    let spec = DurableSubscriptionSpec {
        max_deliveries: Some(2),
        ..fixture.spec("poison")
    };
    let named = fixture.create(spec).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    fixture.publish(0..1).await;
    for attempt in 1..=2 {
        let delivery = take(&mut deliveries, 1).await.remove(0);
        assert_eq!(delivery.attempt, attempt);
        assert!(delivery.nack(None).await.unwrap());
    }
    assert_quiet(&mut deliveries, Duration::from_secs(1)).await;
    let dead = read_dead_letters(&fixture, 1).await;
    let headers = &dead[0]["headers"];
    assert_eq!(dead[0]["payload"], json!({ "seq": 0 }));
    assert_eq!(dead[0]["key"], "key-0");
    assert_eq!(headers["acteon.dlq.topic"], fixture.topic.as_str());
    assert_eq!(headers["acteon.dlq.partition"], "0");
    assert_eq!(headers["acteon.dlq.offset"], "0");
    assert_eq!(headers["acteon.dlq.subscription"], "poison");
    assert_eq!(headers["acteon.dlq.attempts"], "2");
    assert!(
        headers["acteon.dlq.reason"]
            .as_str()
            .unwrap()
            .contains("max_deliveries")
    );
    wait_for(&fixture, &named, |view| view.dead_lettered == 1).await;
    let (status, audit) = fixture
        .server
        .get(&format!(
            "/v1/audit?topic={}&outcome=dead_lettered",
            fixture.topic
        ))
        .await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(
        audit["records"].as_array().map(Vec::len),
        Some(1),
        "{audit}"
    );
}

/// Also with both topics bound to schemas: the dead-letter topic's, which
/// refuses everything, does not keep a record from it, and the copy says
/// which schema the record was checked against on its own topic.
async fn reject_dead_letters_at_once(backend: Backend) {
    let fixture = Fixture::start(&backend, 1).await;
    let named = fixture.create(fixture.spec("picky")).await;
    let registry = format!("/v1/schemas/test/{}", fixture.tenant);
    for (subject, schema, topic) in [
        (
            "jobs",
            json!({ "required": ["seq"] }),
            fixture.topic.clone(),
        ),
        ("nothing", json!(false), format!("{}-dlq", fixture.topic)),
    ] {
        let path = format!("{registry}/{subject}/versions");
        let (status, body) = fixture
            .server
            .post(&path, &json!({ "schema": schema }))
            .await;
        assert_eq!(status, 201, "{body}");
        let binding = json!({ "subject": subject, "version": 1 });
        let path = format!("/v1/bus/topics/{topic}/schema");
        let (status, body) = fixture.server.put(&path, &binding).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    fixture.publish(0..2).await;
    let mut taken = take(&mut deliveries, 2).await;
    taken.sort_by_key(seq);
    assert!(taken[0].reject("cannot parse it").await.unwrap());
    assert!(taken[1].ack().await.unwrap());
    let dead = read_dead_letters(&fixture, 1).await;
    assert_eq!(dead[0]["headers"]["acteon.dlq.reason"], "cannot parse it");
    assert_eq!(dead[0]["headers"]["acteon.dlq.attempts"], "1");
    assert_eq!(dead[0]["headers"]["acteon.dlq.schema"], "jobs:1");
    assert!(
        dead[0]["headers"].get("acteon.schema").is_none(),
        "{}",
        dead[0]
    );
    let view = wait_for(&fixture, &named, |view| view.dead_lettered == 1).await;
    assert_eq!(view.partitions[0].committed, 2);
}

async fn key_ordering_delivers_one_record_per_key_at_a_time(backend: Backend) {
    let fixture = Fixture::start(&backend, 1).await;
    let spec = DurableSubscriptionSpec {
        ordering: Some("key".into()),
        ..fixture.spec("ordered")
    };
    let named = fixture.create(spec).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    for (seq, key) in ["a", "a", "b", "a", "b"].into_iter().enumerate() {
        fixture.publish_keyed(key, seq).await;
    }
    let mut order: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut settled = 0;
    let mut nacked_once = false;
    while settled < 5 {
        let delivery = next_delivery(&mut deliveries, DEADLINE)
            .await
            .expect("a delivery");
        let key = delivery.message.key.clone().unwrap();
        // Nothing else of this key arrives until this one settles.
        if let Some(other) = next_delivery(&mut deliveries, Duration::from_millis(300)).await {
            assert_ne!(
                other.message.key,
                Some(key.clone()),
                "two of one key at once"
            );
            assert!(other.nack(Some(Duration::ZERO)).await.unwrap());
        }
        if seq(&delivery) == 0 && !nacked_once {
            // A nacked record keeps its place: it comes back before seq 1.
            nacked_once = true;
            assert!(delivery.nack(Some(Duration::ZERO)).await.unwrap());
            continue;
        }
        order.entry(key).or_default().push(seq(&delivery));
        assert!(delivery.ack().await.unwrap());
        settled += 1;
    }
    assert_eq!(order["a"], vec![0, 1, 3]);
    assert_eq!(order["b"], vec![2, 4]);
    let _ = named;
}

async fn two_connections_share_the_records(backend: Backend) {
    let fixture = Fixture::start(&backend, 2).await;
    let named = fixture.create(fixture.spec("pool")).await;
    let mut first = fixture.client.consume(&named).await.unwrap();
    let mut second = fixture.client.consume(&named).await.unwrap();
    wait_for(&fixture, &named, |view| view.consumers == 2).await;
    fixture.publish(0..40).await;
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(), Vec::new()];
    let deadline = Instant::now() + DEADLINE;
    while seen.iter().map(Vec::len).sum::<usize>() < 40 {
        assert!(Instant::now() < deadline, "only {seen:?} arrived");
        for (index, stream) in [&mut first, &mut second].into_iter().enumerate() {
            if let Some(delivery) = next_delivery(stream, Duration::from_millis(50)).await {
                assert!(delivery.ack().await.unwrap());
                seen[index].push(seq(&delivery));
            }
        }
    }
    assert!(
        seen.iter().all(|s| !s.is_empty()),
        "one connection got nothing: {seen:?}"
    );
    let all: BTreeSet<usize> = seen.iter().flatten().copied().collect();
    assert_eq!(all.len(), 40, "a record reached both: {seen:?}");
    assert_quiet(&mut first, Duration::from_millis(500)).await;
    assert_quiet(&mut second, Duration::from_millis(500)).await;
}

async fn a_dropped_connection_hands_its_records_on_at_once(backend: Backend) {
    let fixture = Fixture::start(&backend, 1).await;
    let named = fixture.create(fixture.spec("crashy")).await;
    let mut crashing = fixture.client.consume(&named).await.unwrap();
    fixture.publish(0..3).await;
    let held = take(&mut crashing, 3).await;
    let mut survivor = fixture.client.consume(&named).await.unwrap();
    wait_for(&fixture, &named, |view| view.consumers == 2).await;
    let dropped_at = Instant::now();
    drop(crashing);
    let moved = take(&mut survivor, 3).await;
    assert!(
        dropped_at.elapsed() < Duration::from_secs(10),
        "handed on after {:?}, not at the 30 s deadline",
        dropped_at.elapsed()
    );
    assert!(moved.iter().all(|d| d.attempt == 2), "{moved:?}");
    // The dropped connection's ids are stale now; the new ones settle.
    let client = &fixture.client;
    let stale: Vec<String> = held.iter().map(|d| d.id.clone()).collect();
    let answer = client
        .settle(&named, &acteon_client::Settlement::Ack, &stale)
        .await
        .unwrap();
    assert_eq!(answer.stale.len(), 3, "{answer:?}");
    for delivery in &moved {
        assert!(delivery.ack().await.unwrap());
    }
}

async fn records_published_while_nobody_is_connected_are_delivered(backend: Backend) {
    let fixture = Fixture::start(&backend, 2).await;
    fixture.publish(0..3).await;
    let spec = DurableSubscriptionSpec {
        from: Some(StartPosition::Latest),
        ..fixture.spec("later")
    };
    let named = fixture.create(spec).await;
    // `latest` is fixed at creation: these are after it.
    fixture.publish(3..8).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    let mut seqs: Vec<usize> = take(&mut deliveries, 5).await.iter().map(seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![3, 4, 5, 6, 7]);
    assert_quiet(&mut deliveries, Duration::from_secs(1)).await;

    let earliest = DurableSubscriptionSpec {
        from: Some(StartPosition::Earliest),
        ..fixture.spec("everything")
    };
    let named = fixture.create(earliest).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    let mut seqs: Vec<usize> = take(&mut deliveries, 8).await.iter().map(seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..8).collect::<Vec<_>>());
}

async fn deleting_the_subscription_ends_its_connections(backend: Backend) {
    let fixture = Fixture::start(&backend, 1).await;
    let named = fixture.create(fixture.spec("doomed")).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    wait_for(&fixture, &named, |view| view.consumers == 1).await;
    fixture
        .client
        .delete_durable_subscription(&named)
        .await
        .unwrap();
    let ended = timeout(DEADLINE, async {
        while let Some(event) = deliveries.next().await {
            if let Ok(DurableEvent::Ended { reason }) = event {
                return Some(reason);
            }
        }
        None
    })
    .await
    .expect("the stream ends");
    assert!(ended.is_some_and(|reason| reason.contains("deleted")));
    // Created again under the same name, it starts afresh.
    fixture.publish(0..1).await;
    let named = fixture.create(fixture.spec("doomed")).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    fixture.publish(1..2).await;
    let fresh = take(&mut deliveries, 1).await;
    assert_eq!((seq(&fresh[0]), fresh[0].attempt), (1, 1));
}

/// Polls the subscription's figures until `done` holds.
async fn wait_for(
    fixture: &Fixture,
    named: &DurableRef,
    done: impl Fn(&DurableSubscriptionView) -> bool,
) -> DurableSubscriptionView {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view = fixture.view(named).await;
        if done(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "never reached: {view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `count` records of the dead-letter topic from its start.
async fn read_dead_letters(fixture: &Fixture, count: usize) -> Vec<Value> {
    let topic = format!("{}-dlq", fixture.topic);
    let mut reader = fixture
        .server
        .subscribe(&format!("dlq-{}", tenant()), &topic, "earliest")
        .await;
    let mut records = Vec::new();
    while records.len() < count {
        let message = reader
            .next_message(DEADLINE)
            .await
            .expect("a dead-lettered record");
        records.push(serde_json::to_value(&*message).unwrap());
    }
    records
}

/// Retention that removes records before the subscription got to them is
/// counted and announced, never silent (in-memory backend: its retention
/// can be made to overtake a reader at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_retention_removes_first_are_counted_lost_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        "[bus.memory]\nmax_records_per_partition = 5\n\n[durable]\nmax_tracked_records = 2\n";
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), config);
    let fixture = Fixture::on(server, dir, 1).await;
    let spec = DurableSubscriptionSpec {
        from: Some(StartPosition::Earliest),
        max_in_flight: Some(1),
        ..fixture.spec("behind")
    };
    let named = fixture.create(spec).await;
    fixture.publish(0..3).await;
    let mut deliveries = fixture.client.consume(&named).await.unwrap();
    let first = take(&mut deliveries, 1).await.remove(0);
    // The subscription holds at most two records; these push the rest of
    // its backlog out of the five-record log.
    fixture.publish(3..23).await;
    assert!(first.ack().await.unwrap());
    let (mut delivered, mut lost) = (BTreeSet::from([seq(&first)]), 0);
    let deadline = Instant::now() + DEADLINE;
    while delivered.len() as u64 + lost < 23 {
        assert!(
            Instant::now() < deadline,
            "delivered {delivered:?}, lost {lost}"
        );
        match timeout(Duration::from_secs(5), deliveries.next()).await {
            Ok(Some(Ok(DurableEvent::Delivery(delivery)))) => {
                delivered.insert(seq(&delivery));
                assert!(delivery.ack().await.unwrap());
            }
            Ok(Some(Ok(DurableEvent::Lost { records }))) => lost += records,
            other => panic!("after {delivered:?}: {other:?}"),
        }
    }
    assert!(lost > 0, "nothing was lost: {delivered:?}");
    assert!(delivered.contains(&22), "the newest record arrives");
    assert_eq!(fixture.view(&named).await.lost, lost);
}

/// The in-memory backend's records do not outlive the server, while a
/// durable subscription's progress does (in the SQLite state store): after
/// a restart the subscription must start on the new, empty log, not skip
/// the new records because they reuse settled offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_on_the_memory_backend_new_records_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&Backend::Memory, dir.path());
    let tenant = tenant();
    let topic = server.create_topic(&tenant, "jobs", 1).await;
    let client = Client::builder(&server.base_url).build().unwrap();
    let spec = DurableSubscriptionSpec {
        namespace: "test".into(),
        tenant: tenant.clone(),
        id: "workers".into(),
        topic: "jobs".into(),
        ..DurableSubscriptionSpec::default()
    };
    client.create_durable_subscription(&spec).await.unwrap();
    let named = DurableRef::new("test", &tenant, "workers");
    let mut deliveries = client.consume(&named).await.unwrap();
    for seq in 0..3 {
        server.publish_seq(&topic, seq).await;
    }
    for delivery in take(&mut deliveries, 3).await {
        assert!(delivery.ack().await.unwrap());
    }
    drop(deliveries);
    assert!(server.terminate(Duration::from_secs(10)), "graceful stop");

    let server = TestServer::start(&Backend::Memory, dir.path());
    let client = Client::builder(&server.base_url).build().unwrap();
    let mut deliveries = client.consume(&named).await.unwrap();
    for seq in 3..5 {
        server.publish_seq(&topic, seq).await;
    }
    let mut seqs: Vec<usize> = take(&mut deliveries, 2).await.iter().map(seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![3, 4]);
}
