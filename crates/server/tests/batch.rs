//! Batch publish (`POST /v1/bus/topics/{kafka_name}/records`) against the
//! real server binary, on both backends.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use acteon_bus::conformance::DEADLINE;
use common::{Backend, TestServer};
use serde_json::{Value, json};

on_both_backends!(
    a_batch_is_published_in_order,
    each_record_passes_the_pipeline_and_fails_alone,
    malformed_batches_are_refused_whole,
);

/// A deny rule, a suppress rule and a quota for tenant `busy`; small batch
/// limits to test them.
const CONFIG: &str = r#"
[server]
max_batch_records = 5
max_batch_body_bytes = 65536

[[rules]]
name = "no-forbidden"
priority = 10
condition = 'has(payload.forbidden)'
action = "deny"
reason = "not here"

[[rules]]
name = "drop-heartbeats"
priority = 20
condition = 'has(payload.heartbeat)'
action = "suppress"

[[quotas]]
tenant = "busy"
max_per_second = 1
burst = 2

[audit]
flush_interval_ms = 20
"#;

fn tenant() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

async fn batch(server: &TestServer, topic: &str, records: Value) -> (u16, Value) {
    server
        .post(
            &format!("/v1/bus/topics/{topic}/records"),
            &json!({ "records": records }),
        )
        .await
}

async fn a_batch_is_published_in_order(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "orders", 3).await;
    let mut reader = server.subscribe("reader", &topic, "earliest").await;

    let records: Vec<Value> = (0..300)
        .map(|seq| json!({ "key": format!("key-{}", seq % 7), "payload": { "seq": seq } }))
        .collect();
    let (status, answer) = batch(&server, &topic, json!(records)).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 300);
    // Offsets grow in request order within each partition, and one key
    // keeps one partition.
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    let mut partition_of: BTreeMap<usize, i64> = BTreeMap::new();
    for (seq, result) in results.iter().enumerate() {
        let partition = result["partition"]
            .as_i64()
            .unwrap_or_else(|| panic!("{result}"));
        let offset = result["offset"].as_i64().unwrap();
        assert!(result["produced_at"].is_string());
        if let Some(before) = last.insert(partition, offset) {
            assert!(offset > before, "seq {seq}: {offset} after {before}");
        }
        let key = seq % 7;
        assert_eq!(*partition_of.entry(key).or_insert(partition), partition);
    }

    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..300 {
        let message = reader
            .next_message(DEADLINE)
            .await
            .expect("every record arrives");
        seen.entry(message.key.clone().unwrap())
            .or_default()
            .push(message.payload["seq"].as_u64().unwrap());
    }
    for (key, seqs) in seen {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "{key} arrives in the order published");
    }
}

async fn each_record_passes_the_pipeline_and_fails_alone(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&backend, dir.path(), CONFIG);
    let topic = server.create_topic("busy", "mixed", 1).await;
    let (status, silence) = server
        .post(
            "/v1/silences",
            &json!({ "tenant": "busy", "topic": "mixed", "condition": "has(payload.quiet)",
                     "duration_ms": 600_000, "comment": "maintenance" }),
        )
        .await;
    assert_eq!(status, 201, "{silence}");

    let (status, answer) = batch(
        &server,
        &topic,
        json!([
            { "payload": { "n": 1 } },
            { "payload": { "forbidden": true } },
            { "payload": { "heartbeat": true } },
            { "payload": { "quiet": true } },
            { "payload": { "n": 2 }, "headers": { "acteon.schema": "x" } },
        ]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    // The quota is tenant "busy"'s, so the topic's name is fixed: on a
    // broker that outlives one run it may hold records already.
    assert!(results[0]["offset"].is_i64(), "{answer}");
    assert_eq!(results[1]["status"], 403);
    assert_eq!(results[1]["rule"], "no-forbidden");
    assert_eq!(results[1]["reason"], "not here");
    assert_eq!(results[2]["status"], 202);
    assert_eq!(results[2]["rule"], "drop-heartbeats");
    assert_eq!(results[3]["status"], 202);
    assert_eq!(results[3]["silence"], silence["id"]);
    assert_eq!(results[4]["status"], 400);
    assert!(
        results[4]["error"].as_str().unwrap().contains("acteon."),
        "{answer}"
    );

    // The quota (burst 2, one used above) throttles within a batch too.
    let (_, answer) = batch(
        &server,
        &topic,
        json!([{ "payload": 1 }, { "payload": 2 }, { "payload": 3 }]),
    )
    .await;
    let results = answer["results"].as_array().unwrap();
    let throttled: Vec<&Value> = results.iter().filter(|r| r["status"] == 429).collect();
    assert!(!throttled.is_empty(), "{answer}");
    assert_eq!(throttled[0]["quota"], "busy");
    assert!(throttled[0]["retry_after_ms"].is_u64());
    assert!(results[0]["offset"].is_i64(), "{answer}");

    // One audit record per record that reached the pipeline; the bad
    // header never did.
    let page = server.audit(&format!("topic={topic}"), 7).await;
    let records = page["records"].as_array().unwrap();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for record in records {
        *outcomes
            .entry(record["outcome"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(outcomes.get("denied"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("suppressed"), Some(&2), "{outcomes:?}");
    assert_eq!(
        outcomes.get("throttled").copied().unwrap_or(0),
        throttled.len()
    );
    assert_eq!(records.len(), 7, "{records:?}");

    // The broker refusing one record fails that record only.
    if let Backend::Kafka { .. } = backend {
        let dir = tempfile::tempdir().unwrap();
        let big = "[server]\nmax_batch_body_bytes = 4194304\n";
        let server = TestServer::start_with_config(&backend, dir.path(), big);
        let topic = server.create_topic(&tenant(), "sizes", 1).await;
        let too_big = "x".repeat(2 * 1024 * 1024);
        let (status, answer) = batch(
            &server,
            &topic,
            json!([{ "payload": 1 }, { "payload": too_big }, { "payload": 3 }]),
        )
        .await;
        assert_eq!(status, 200);
        let results = answer["results"].as_array().unwrap();
        assert!(results[0]["offset"].is_i64(), "{}", results[0]);
        assert_eq!(results[1]["status"], 400, "{}", results[1]);
        assert!(results[2]["offset"].is_i64(), "{}", results[2]);
    }
}

async fn malformed_batches_are_refused_whole(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&backend, dir.path(), CONFIG);
    let topic = server.create_topic(&tenant(), "strict", 1).await;
    let path = format!("/v1/bus/topics/{topic}/records");
    let refused = |body: Value| {
        let path = path.clone();
        let server = &server;
        async move { server.post(&path, &body).await }
    };

    for (body, says) in [
        (json!({ "records": [] }), "records: from 1"),
        (
            json!({ "records": (0..6).map(|n| json!({ "payload": n })).collect::<Vec<_>>() }),
            "at most 5",
        ),
        (json!({ "records": {} }), "records"),
        (json!({}), "records"),
        (json!([{ "payload": 1 }]), ""),
        (
            json!({ "records": [{ "payload": 1 }, { "key": 5, "payload": 2 }] }),
            "records[1]",
        ),
        (
            json!({ "records": [{ "payload": 1 }, { "key": "k" }] }),
            "records[1]: missing field `payload`",
        ),
        (
            json!({ "records": [{ "payload": 1 }], "extra": 1 }),
            "extra",
        ),
        (
            json!({ "records": [{ "payload": 1, "headers": { "h": 1 } }] }),
            "records[0]",
        ),
    ] {
        let (status, answer) = refused(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        let expected = says.replace("at most 5", "max_batch_records (5)");
        assert!(error.contains(&expected), "{body}: {error}");
    }

    let huge = "x".repeat(70_000);
    let (status, answer) = refused(json!({ "records": [{ "payload": huge }] })).await;
    assert_eq!(status, 413, "{answer}");
    let (status, _) = server
        .post(
            &format!("/v1/bus/topics/test.{}.absent/records", tenant()),
            &json!({ "records": [{ "payload": 1 }] }),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .post(
            "/v1/bus/topics/not-a-name/records",
            &json!({ "records": [{ "payload": 1 }] }),
        )
        .await;
    assert_eq!(status, 400);

    // Nothing of a refused batch was produced.
    let (status, answer) = batch(&server, &topic, json!([{ "payload": "after" }])).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["offset"], 0, "{answer}");
}
