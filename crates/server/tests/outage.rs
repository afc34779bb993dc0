//! A broker outage: publish and topic create answer 503 while the broker is
//! down, a failed create leaves no state row, and the same server recovers
//! once the broker is back.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::broker::{OwnBroker, tansu_binary};
use common::{Backend, TestServer};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Waits until `/readyz` answers 200; its answers are up to a second old.
async fn wait_until_ready(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.get("/readyz").await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "not ready again: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What publishers saw: receipts by (partition, offset) with their seq, and
/// when each status was last answered.
#[derive(Debug, Default)]
struct Seen {
    receipts: BTreeMap<(i64, i64), u64>,
    first_503: Option<Instant>,
    last_ok: Option<Instant>,
    other: Vec<String>,
}

/// With default settings (an idempotent producer) the producer that lived
/// through the restart never delivered again, so publishing answered 503
/// until Acteon itself was restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_recovers_from_a_broker_restart_under_load_with_default_settings() {
    let Some(binary) = tansu_binary("publishing_recovers_from_a_broker_restart") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = OwnBroker::start(binary, dir.path());
    let backend = Backend::Kafka {
        bootstrap: broker.bootstrap(),
    };
    let server = Arc::new(TestServer::start(&backend, &dir.path().join("state")));
    let topic = server.create_topic("restart", "events", 2).await;
    server.publish_seq(&topic, 0).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..4u64)
        .map(|publisher| {
            let (server, topic, seen, stop) = (
                Arc::clone(&server),
                topic.clone(),
                Arc::clone(&seen),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut seq = publisher * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let (status, body) = server
                        .post(
                            "/v1/bus/publish",
                            &json!({ "topic": topic, "key": format!("k{seq}"), "payload": { "seq": seq } }),
                        )
                        .await;
                    let mut seen = seen.lock().await;
                    match status {
                        200 => {
                            let at = (body["partition"].as_i64().unwrap(), body["offset"].as_i64().unwrap());
                            assert_eq!(seen.receipts.insert(at, seq), None, "two receipts for {at:?}");
                            seen.last_ok = Some(Instant::now());
                        }
                        503 => {
                            seen.first_503.get_or_insert_with(Instant::now);
                            drop(seen);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        _ => seen.other.push(format!("{status} {body}")),
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.kill();
    let down = Instant::now();
    while seen.lock().await.first_503.is_none() {
        assert!(
            down.elapsed() < Duration::from_secs(30),
            "no 503 while the broker is down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart();
    let back = Instant::now();
    loop {
        let recovered = seen.lock().await.last_ok.is_some_and(|ok| ok > back);
        if recovered {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no publish answered 200 within 10 s of the broker's return"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "publishing recovered {:?} after the broker's return",
        back.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let seen = seen.lock().await;
    assert!(
        seen.other.is_empty(),
        "answers other than 200 and 503: {:?}",
        seen.other
    );
    wait_until_ready(&server).await;

    // Every record that got a 200 is in the log where its receipt said.
    let mut reader = server.subscribe("restart-check", &topic, "earliest").await;
    let mut unread = seen.receipts.clone();
    while !unread.is_empty() {
        let message = reader
            .next_message(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{} acknowledged records not read back, e.g. {:?}",
                    unread.len(),
                    unread.first_key_value()
                )
            });
        let at = (i64::from(message.partition), message.offset);
        if let Some(seq) = unread.remove(&at) {
            assert_eq!(message.payload["seq"], seq, "the record at {at:?}");
        }
    }
    eprintln!("{} acknowledged records read back", seen.receipts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_answers_503_and_the_server_recovers() {
    let Some(binary) = tansu_binary("broker_outage_answers_503_and_the_server_recovers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = OwnBroker::start(binary, dir.path());
    let backend = Backend::Kafka {
        bootstrap: broker.bootstrap(),
    };
    let server = TestServer::start_with(
        &backend,
        &dir.path().join("state"),
        &[
            ("ACTEON_BUS__KAFKA__PRODUCE_TIMEOUT_MS", "2000"),
            ("ACTEON_BUS__KAFKA__ADMIN_TIMEOUT_MS", "2000"),
            ("ACTEON_BUS__KAFKA__IDEMPOTENCE", "false"),
        ],
    );
    let topic = server.create_topic("outage", "events", 2).await;
    server.publish_seq(&topic, 0).await;

    broker.kill();
    let (status, body) = server
        .post(
            "/v1/bus/publish",
            &json!({ "topic": topic, "payload": { "seq": 1 } }),
        )
        .await;
    assert_eq!(status, 503, "publish with the broker down: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("broker unavailable"),
        "{body}"
    );
    let spec = json!({
        "namespace": "test", "tenant": "outage", "name": "created-during-outage",
        "partitions": 1, "replication_factor": 1,
    });
    let (status, body) = server.post("/v1/bus/topics", &spec).await;
    assert_eq!(status, 503, "create with the broker down: {body}");
    let names = server.topic_names("").await;
    assert_eq!(
        names,
        [topic.as_str()],
        "the failed create left no state row"
    );
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 503, "not ready without a broker");

    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server
            .post(
                "/v1/bus/publish",
                &json!({ "topic": topic, "payload": { "seq": 2 } }),
            )
            .await;
        if status == 200 {
            break;
        }
        eprintln!("recovering: {status} {body}");
        assert!(Instant::now() < deadline, "publish did not recover: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, body) = server.post("/v1/bus/topics", &spec).await;
    assert_eq!(status, 201, "create after recovery: {body}");
    wait_until_ready(&server).await;
}
