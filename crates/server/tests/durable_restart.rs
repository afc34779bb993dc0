//! Durable subscriptions across failures of what they run on: the server
//! process killed and started again on the same state and broker, and the
//! broker stopped during delivery. Kafka only: the in-memory backend's
//! records do not outlive its process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use acteon_bus::conformance::DEADLINE;
use acteon_client::{
    Client, Deliveries, Delivery, DurableEvent, DurableRef, DurableSubscriptionSpec,
};
use common::broker::{OwnBroker, tansu_binary};
use common::{Backend, TestServer};
use futures::StreamExt;
use tokio::time::{Instant, timeout};

fn seq(delivery: &Delivery) -> usize {
    delivery.message.payload["seq"].as_u64().expect("seq") as usize
}

async fn take(deliveries: &mut Deliveries, count: usize) -> Vec<Delivery> {
    let mut taken = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while taken.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let seqs: Vec<usize> = taken.iter().map(seq).collect();
        match timeout(left, deliveries.next()).await {
            Ok(Some(Ok(DurableEvent::Delivery(delivery)))) => taken.push(delivery),
            Ok(Some(Ok(_))) => {}
            other => panic!("after {seqs:?}: {other:?}"),
        }
    }
    taken
}

async fn quiet(deliveries: &mut Deliveries, wait: Duration) {
    if let Ok(Some(event)) = timeout(wait, deliveries.next()).await {
        panic!("unexpected {event:?}");
    }
}

fn spec(tenant: &str, id: &str, ack_deadline_ms: u64) -> DurableSubscriptionSpec {
    DurableSubscriptionSpec {
        namespace: "test".into(),
        tenant: tenant.into(),
        id: id.into(),
        topic: "jobs".into(),
        ack_deadline_ms: Some(ack_deadline_ms),
        ..DurableSubscriptionSpec::default()
    }
}

fn tenant() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_redelivers_exactly_the_unsettled_records_after_its_restart() {
    let Some(backend) = Backend::kafka("a_killed_server_redelivers_exactly_the_unsettled") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let tenant = tenant();
    let topic = server.create_topic(&tenant, "jobs", 2).await;
    let client = Client::builder(&server.base_url).build().unwrap();
    let named = DurableRef::new("test", &tenant, "workers");
    client
        .create_durable_subscription(&spec(&tenant, "workers", 60_000))
        .await
        .unwrap();
    let mut deliveries = client.consume(&named).await.unwrap();
    for seq in 0..10 {
        server.publish_seq(&topic, seq).await;
    }
    let taken: BTreeMap<usize, Delivery> = take(&mut deliveries, 10)
        .await
        .into_iter()
        .map(|delivery| (seq(&delivery), delivery))
        .collect();
    for acked in [0, 1, 3, 4, 8] {
        assert!(taken[&acked].ack().await.unwrap());
    }
    let nacked = &taken[&9];
    assert!(nacked.nack(Some(Duration::from_secs(3600))).await.unwrap());
    // Leases are stored lazily (within 200 ms); acks before they answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(deliveries);
    drop(server); // SIGKILL

    let server = TestServer::start(&backend, dir.path());
    let client = Client::builder(&server.base_url).build().unwrap();
    // An id from before the restart still settles.
    assert!(
        client
            .settle(
                &named,
                &acteon_client::Settlement::Ack,
                &[taken[&5].id.clone()]
            )
            .await
            .unwrap()
            .settled
            .len()
            == 1
    );
    let mut deliveries = client.consume(&named).await.unwrap();
    let again = take(&mut deliveries, 4).await;
    let seqs: BTreeSet<usize> = again.iter().map(seq).collect();
    assert_eq!(seqs, BTreeSet::from([2, 6, 7, 9]));
    let attempts: BTreeMap<usize, u32> = again.iter().map(|d| (seq(d), d.attempt)).collect();
    assert_eq!(attempts[&2], 2, "the attempt count survived: {attempts:?}");
    assert_eq!(attempts[&9], 2, "the nack delay is not kept, the count is");
    for delivery in &again {
        assert!(delivery.ack().await.unwrap());
    }
    quiet(&mut deliveries, Duration::from_secs(2)).await;
    let view = client.get_durable_subscription(&named).await.unwrap();
    let committed: i64 = view.partitions.iter().map(|p| p.committed).sum();
    assert_eq!(committed, 10, "{view:?}");
    assert_eq!(view.acked, 10, "{view:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_a_broker_outage_and_nothing_acked_comes_back() {
    let Some(binary) = tansu_binary("delivery_resumes_after_a_broker_outage") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = OwnBroker::start(binary, dir.path());
    let backend = Backend::Kafka {
        bootstrap: broker.bootstrap(),
    };
    let server = TestServer::start(&backend, &dir.path().join("state"));
    let tenant = tenant();
    let topic = server.create_topic(&tenant, "jobs", 1).await;
    let client = Client::builder(&server.base_url).build().unwrap();
    let named = DurableRef::new("test", &tenant, "workers");
    client
        .create_durable_subscription(&spec(&tenant, "workers", 3_000))
        .await
        .unwrap();
    let mut deliveries = client.consume(&named).await.unwrap();
    for seq in 0..5 {
        server.publish_seq(&topic, seq).await;
    }
    let taken = take(&mut deliveries, 5).await;

    broker.kill();
    // Settling needs only the state store: acks answer while the broker
    // is down.
    for delivery in taken.iter().filter(|d| seq(d) < 3) {
        assert!(delivery.ack().await.unwrap());
    }
    broker.restart();

    let deadline = Instant::now() + DEADLINE;
    let mut published = 5;
    while published < 8 {
        let (status, body) = server
            .post(
                "/v1/bus/publish",
                &serde_json::json!({ "topic": topic, "key": format!("key-{published}"), "payload": { "seq": published } }),
            )
            .await;
        match status {
            200 => published += 1,
            503 => {
                assert!(
                    Instant::now() < deadline,
                    "publishing did not recover: {body}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("publish answered {other}: {body}"),
        }
    }
    // The two unacked come back after their deadline, the three new ones
    // arrive; the acked ones never do.
    let mut seen = BTreeMap::new();
    for delivery in take(&mut deliveries, 5).await {
        assert!(delivery.ack().await.unwrap());
        seen.insert(seq(&delivery), delivery.attempt);
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![3, 4, 5, 6, 7]
    );
    assert_eq!((seen[&3], seen[&5]), (2, 1), "{seen:?}");
    quiet(&mut deliveries, Duration::from_secs(4)).await;
}
