//! Idempotency keys on single and batch publish, against the real server
//! binary, on both backends; across a graceful restart on Kafka.

#[macro_use]
mod common;

use std::time::Duration;

use acteon_bus::conformance::DEADLINE;
use common::{Backend, TestServer};
use serde_json::{Value, json};

on_both_backends!(
    a_repeated_key_gets_the_first_receipt_and_produces_nothing,
    keys_are_scoped_by_topic_and_checked,
    batch_records_take_keys_too,
);

fn tenant() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// `POST /v1/bus/publish` with `key` as its Idempotency-Key: status, body,
/// and whether the answer says it was replayed.
async fn publish(
    server: &TestServer,
    key: &str,
    topic: &str,
    payload: Value,
) -> (u16, Value, bool) {
    let response = server
        .http
        .post(server.url("/v1/bus/publish"))
        .header("idempotency-key", key)
        .json(&json!({ "topic": topic, "payload": payload }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true");
    (status, response.json().await.unwrap(), replayed)
}

async fn a_repeated_key_gets_the_first_receipt_and_produces_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "orders", 1).await;

    let (status, first, replayed) = publish(&server, "order-1", &topic, json!({ "n": 1 })).await;
    assert_eq!((status, replayed), (200, false), "{first}");
    let (status, again, replayed) = publish(&server, "order-1", &topic, json!({ "n": 1 })).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again, first, "the first receipt, as it was");
    // Nothing was produced for the repeat: the next record takes offset 1.
    let next = server.publish_seq(&topic, 2).await;
    assert_eq!(next["offset"], 1, "{next}");
    let mut reader = server.subscribe("reader", &topic, "earliest").await;
    let first = reader
        .next_message(DEADLINE)
        .await
        .expect("the first record");
    let second = reader
        .next_message(DEADLINE)
        .await
        .expect("the next record");
    assert_eq!(first.payload, json!({ "n": 1 }));
    assert_eq!(second.payload["seq"], 2);
}

async fn keys_are_scoped_by_topic_and_checked(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let tenant = tenant();
    let orders = server.create_topic(&tenant, "orders", 1).await;
    let refunds = server.create_topic(&tenant, "refunds", 1).await;
    let other_tenant = server.create_topic(&self::tenant(), "orders", 1).await;

    publish(&server, "k", &orders, json!(1)).await;
    for topic in [&refunds, &other_tenant] {
        let (status, body, replayed) = publish(&server, "k", topic, json!(1)).await;
        assert_eq!((status, replayed), (200, false), "{topic}: {body}");
        assert_eq!(body["offset"], 0);
    }
    let (status, body, _) = publish(&server, "k", &orders, json!(2)).await;
    assert_eq!(status, 422, "another record under the key: {body}");
    assert!(body["error"].as_str().unwrap().contains("idempotency key"));

    for bad in ["", "é", &"k".repeat(256)] {
        let response = server
            .http
            .post(server.url("/v1/bus/publish"))
            .header("idempotency-key", bad.as_bytes())
            .json(&json!({ "topic": orders, "payload": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad:?}");
    }
}

async fn batch_records_take_keys_too(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "orders", 1).await;
    let (_, single, _) = publish(&server, "a", &topic, json!("a")).await;
    let path = format!("/v1/bus/topics/{topic}/records");
    let records = json!({ "records": [
        { "payload": "a", "idempotency_key": "a" },
        { "payload": "b", "idempotency_key": "b" },
        { "payload": "c" },
        { "payload": "changed", "idempotency_key": "b2" },
    ]});
    let (status, first) = server.post(&path, &records).await;
    assert_eq!(status, 200, "{first}");
    let results = first["results"].as_array().unwrap();
    assert_eq!(results[0]["replayed"], true, "{first}");
    assert_eq!(results[0]["offset"], single["offset"]);
    assert!(results[1].get("replayed").is_none(), "{first}");

    // The whole batch again: the keyed records are replayed, the other
    // one is new.
    let (_, again) = server.post(&path, &records).await;
    let repeated = again["results"].as_array().unwrap();
    for index in [0, 1, 3] {
        assert_eq!(repeated[index]["replayed"], true, "{again}");
        assert_eq!(repeated[index]["offset"], results[index]["offset"]);
    }
    assert!(repeated[2]["offset"].as_i64() > results[3]["offset"].as_i64());

    let mismatch = json!({ "records": [{ "payload": "other", "idempotency_key": "b" }] });
    let (_, answer) = server.post(&path, &mismatch).await;
    assert_eq!(answer["results"][0]["status"], 422, "{answer}");
}

/// The window outlives a graceful restart where the records do (Kafka,
/// SQLite state); the in-memory backend starts both afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_survives_a_graceful_restart() {
    let Some(backend) = Backend::kafka("the_window_survives_a_graceful_restart") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = "[idempotency]\nsnapshot_interval_ms = 60000\n";
    let server = TestServer::start_with_config(&backend, dir.path(), config);
    let topic = server.create_topic(&tenant(), "orders", 1).await;
    let (_, first, _) = publish(&server, "retry-me", &topic, json!({ "n": 1 })).await;
    assert!(server.terminate(Duration::from_secs(20)), "a clean stop");

    let server = TestServer::start_with_config(&backend, dir.path(), config);
    let (status, again, replayed) = publish(&server, "retry-me", &topic, json!({ "n": 1 })).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again, first);
    let next = server.publish_seq(&topic, 2).await;
    assert_eq!(next["offset"], 1, "nothing produced for the retry: {next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_memory_backend_a_restart_forgets_the_window_with_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&Backend::Memory, dir.path());
    let topic = server.create_topic(&tenant(), "orders", 1).await;
    publish(&server, "k", &topic, json!(1)).await;
    assert!(server.terminate(Duration::from_secs(20)));

    let server = TestServer::start(&Backend::Memory, dir.path());
    let (status, body, replayed) = publish(&server, "k", &topic, json!(1)).await;
    assert_eq!((status, replayed), (200, false), "{body}");
    assert_eq!(
        body["offset"], 0,
        "the log started afresh, and so did the window"
    );
}
