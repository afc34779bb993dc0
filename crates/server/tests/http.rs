//! The HTTP API against the real server binary, on both backends.

#[macro_use]
mod common;

use std::time::Duration;

use acteon_bus::conformance::{DEADLINE, collect, wait_for_settled_group};
use common::{Backend, TestServer};
use serde_json::json;

on_both_backends!(
    topic_crud_follows_the_contract,
    publish_returns_receipts_and_rejects_bad_input,
    subscribers_receive_events_in_the_documented_format,
    one_subscription_id_shares_and_the_survivor_takes_over,
    tenants_choosing_one_subscription_id_do_not_share_a_group,
    topics_survive_a_restart,
    health_and_readiness_answer,
    shutdown_ends_open_streams,
);

fn tenant() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

async fn topic_crud_follows_the_contract(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let tenant = tenant();
    let spec = json!({
        "namespace": "agents", "tenant": tenant, "name": "inbox",
        "partitions": 3, "replication_factor": 1, "retention_ms": 3_600_000,
    });

    let (status, created) = server.post("/v1/bus/topics", &spec).await;
    assert_eq!(status, 201, "{created}");
    let kafka_name = format!("agents.{tenant}.inbox");
    assert_eq!(created["kafka_name"], kafka_name.as_str());
    assert_eq!(created["partitions"], 3);
    assert_eq!(created["retention_ms"], 3_600_000);

    let (status, body) = server.post("/v1/bus/topics", &spec).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&kafka_name));

    let mut other = spec.clone();
    other["tenant"] = json!(format!("{tenant}-b"));
    assert_eq!(server.post("/v1/bus/topics", &other).await.0, 201);
    let names = server.topic_names(&format!("?tenant={tenant}")).await;
    assert_eq!(
        names,
        [kafka_name.as_str()],
        "the filter keeps one tenant's topics"
    );

    for (field, value) in [
        ("tenant", json!("a.b")),
        ("name", json!("")),
        ("namespace", json!("x y")),
    ] {
        let mut bad = spec.clone();
        bad[field] = value;
        let (status, body) = server.post("/v1/bus/topics", &bad).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().starts_with(field), "{body}");
    }
    let (status, body) = server
        .post("/v1/bus/topics", &json!({ "namespace": "a" }))
        .await;
    assert_eq!(status, 400, "missing fields: {body}");
    let (status, body) = server
        .post("/v1/bus/topics", &json!({ "namespace": "a", "tenant": "b", "name": "c", "partitions": 0, "replication_factor": 1 }))
        .await;
    assert_eq!(status, 400, "zero partitions: {body}");
    // More replicas than Kafka could ever place; the in-memory backend
    // keeps one copy whatever is asked.
    let mut impossible = spec.clone();
    impossible["name"] = json!("replicas");
    impossible["replication_factor"] = json!(20_000);
    let (status, body) = server.post("/v1/bus/topics", &impossible).await;
    match backend {
        Backend::Kafka { .. } => assert_eq!(status, 400, "{body}"),
        Backend::Memory => assert_eq!(status, 201, "{body}"),
    }

    assert_eq!(
        server
            .delete(&format!("/v1/bus/topics/{kafka_name}"))
            .await
            .0,
        204
    );
    let (status, body) = server.delete(&format!("/v1/bus/topics/{kafka_name}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        server.delete("/v1/bus/topics/not-a-kafka-name").await.0,
        400
    );
    assert_eq!(
        server.post("/v1/bus/topics", &spec).await.0,
        201,
        "re-creation after delete"
    );
}

async fn publish_returns_receipts_and_rejects_bad_input(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let tenant = tenant();
    let topic = server.create_topic(&tenant, "events", 2).await;

    let first = server.publish_seq(&topic, 0).await;
    assert_eq!(first["topic"], topic.as_str());
    assert!(first["produced_at"].is_string(), "{first}");
    let (status, again) = server
        .post(
            "/v1/bus/publish",
            &json!({
                "topic": { "namespace": "test", "tenant": tenant, "name": "events" },
                "key": "key-0", "payload": { "seq": 1 }, "headers": { "x-trace-id": "t-1" },
            }),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["partition"], first["partition"],
        "same key, same partition"
    );
    assert_eq!(
        again["offset"].as_i64().unwrap(),
        first["offset"].as_i64().unwrap() + 1
    );

    let cases = [
        (
            json!({ "topic": topic, "payload": 1, "headers": { "acteon.origin": "me" } }),
            400,
        ),
        (json!({ "topic": topic }), 400),
        (json!({ "topic": 7, "payload": 1 }), 400),
        (json!({ "topic": "no-dots", "payload": 1 }), 400),
        (
            json!({ "topic": { "namespace": "test" }, "payload": 1 }),
            400,
        ),
        (json!({ "topic": topic, "payload": 1, "partition": 3 }), 400),
        (
            json!({ "topic": format!("test.{tenant}.missing"), "payload": 1 }),
            404,
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = server.post("/v1/bus/publish", &body).await;
        assert_eq!(status, expected, "{body} -> {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }

    // The error names where in the body the wrong type is.
    let (status, answer) = server
        .post(
            "/v1/bus/publish",
            &json!({ "topic": topic, "payload": 1, "headers": { "x-trace-id": 5 } }),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("headers.x-trace-id"), "{error}");

    let oversized = json!({ "topic": topic, "payload": "x".repeat(1_100_000) });
    assert_eq!(server.post("/v1/bus/publish", &oversized).await.0, 413);
    let not_json = server
        .http
        .post(server.url("/v1/bus/publish"))
        .header("content-type", "application/json")
        .body("{\"topic\":")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let wrong_type = server
        .http
        .post(server.url("/v1/bus/publish"))
        .body("topic=x")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
}

async fn subscribers_receive_events_in_the_documented_format(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "feed", 2).await;
    let receipt = server.publish_seq(&topic, 0).await;

    let mut reader = server.subscribe("reader-1", &topic, "earliest").await;
    let message = reader.next_message(DEADLINE).await.expect("the record");
    assert_eq!(message.topic, topic);
    assert_eq!(message.key.as_deref(), Some("key-0"));
    assert_eq!(message.payload, json!({ "seq": 0 }));
    assert_eq!(json!(message.partition), receipt["partition"]);
    assert_eq!(json!(message.offset), receipt["offset"]);

    // The raw stream: content type, event name, id = offset, data.
    let mut raw = server
        .http
        .get(server.url(&format!(
            "/v1/bus/subscribe/raw?topic={topic}&from=earliest"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains("\ndata: {\"topic\"") {
        let chunk = tokio::time::timeout(DEADLINE, raw.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let expected = format!("event: bus.message\nid: {}\ndata: {{", receipt["offset"]);
    assert!(text.contains(&expected), "{text}");
    drop(raw);

    let (status, body) = server
        .get(&format!("/v1/bus/subscribe/x?topic={topic}&from=middle"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = server
        .get("/v1/bus/subscribe/x?topic=test.nobody.nothing")
        .await;
    assert_eq!(status, 404);
    let (status, _) = server.get("/v1/bus/subscribe/x").await;
    assert_eq!(status, 400, "topic is required");
}

async fn one_subscription_id_shares_and_the_survivor_takes_over(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "work", 4).await;
    let shared = format!("workers-{}", tenant());
    // One member at a time (see conformance::wait_for_settled_group).
    let mut agent_a = server.subscribe(&shared, &topic, "latest").await;
    wait_for_settled_group(&mut [&mut agent_a], 4).await;
    let mut agent_b = server.subscribe(&shared, &topic, "latest").await;
    let mut tail = server
        .subscribe(&format!("tail-{}", tenant()), &topic, "latest")
        .await;
    wait_for_settled_group(&mut [&mut agent_a, &mut agent_b], 4).await;
    wait_for_settled_group(&mut [&mut tail], 4).await;

    for seq in 0..40 {
        server.publish_seq(&topic, seq).await;
    }
    let seen = collect(&mut [&mut agent_a, &mut agent_b, &mut tail], 80).await;
    let mut both: Vec<_> = seen[0].iter().chain(&seen[1]).copied().collect();
    both.sort_unstable();
    assert_eq!(
        both,
        (0..40).collect::<Vec<_>>(),
        "each record reached exactly one agent"
    );
    assert!(
        !seen[0].is_empty() && !seen[1].is_empty(),
        "both agents got work: {seen:?}"
    );

    drop(agent_b);
    wait_for_settled_group(&mut [&mut agent_a], 4).await;
    for seq in 40..60 {
        server.publish_seq(&topic, seq).await;
    }
    let rest = collect(&mut [&mut agent_a, &mut tail], 40).await;
    let mut survivor = rest[0].clone();
    survivor.sort_unstable();
    assert_eq!(
        survivor,
        (40..60).collect::<Vec<_>>(),
        "the survivor receives the rest"
    );
    let mut tail_seen: Vec<_> = seen[2].iter().chain(&rest[1]).copied().collect();
    tail_seen.sort_unstable();
    assert_eq!(
        tail_seen,
        (0..60).collect::<Vec<_>>(),
        "the tail saw everything"
    );
}

/// Subscription ids belong to a namespace and tenant: when another tenant
/// subscribes with the same id, the first tenant's subscription sees no
/// rebalance.
async fn tenants_choosing_one_subscription_id_do_not_share_a_group(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let (first, second) = (tenant(), tenant());
    let first_topic = server.create_topic(&first, "jobs", 1).await;
    let second_topic = server.create_topic(&second, "jobs", 1).await;
    let id = format!("worker-{}", tenant());

    let mut first_reader = server.subscribe(&id, &first_topic, "latest").await;
    wait_for_settled_group(&mut [&mut first_reader], 1).await;
    let mut second_reader = server.subscribe(&id, &second_topic, "latest").await;
    wait_for_settled_group(&mut [&mut second_reader], 1).await;

    let mut foreign = Vec::new();
    while let Some(event) = first_reader.next_event(Duration::from_millis(500)).await {
        foreign.push(event.expect("subscription error"));
    }
    assert!(
        foreign.is_empty(),
        "another tenant's subscriber disturbed this one: {foreign:?}"
    );
    for seq in 0..3 {
        server.publish_seq(&first_topic, seq).await;
        server.publish_seq(&second_topic, 10 + seq).await;
    }
    let seen = collect(&mut [&mut first_reader, &mut second_reader], 6).await;
    assert_eq!(seen, vec![vec![0, 1, 2], vec![10, 11, 12]]);
}

async fn topics_survive_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "durable", 2).await;
    assert!(server.terminate(Duration::from_secs(20)), "clean exit");

    let server = TestServer::start(&backend, dir.path());
    let names = server.topic_names("").await;
    assert!(names.contains(&topic), "{names:?}");
    let receipt = server.publish_seq(&topic, 1).await;
    assert_eq!(receipt["topic"], topic.as_str());
}

async fn health_and_readiness_answer(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    assert_eq!(
        server.get("/healthz").await,
        (200, json!({ "status": "ok" }))
    );
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "ok");
    assert_eq!(body["bus"], "ok");
}

async fn shutdown_ends_open_streams(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "closing", 1).await;
    let mut reader = server.subscribe("closing", &topic, "latest").await;
    wait_for_settled_group(&mut [&mut reader], 1).await;
    let pid = server.pid();
    assert!(
        server.terminate(Duration::from_secs(20)),
        "server {pid} exited cleanly with a stream open"
    );
    let mut ended = false;
    for _ in 0..50 {
        match reader.next_event(Duration::from_millis(100)).await {
            None => {
                ended = true;
                break;
            }
            Some(event) => assert!(event.is_ok(), "{event:?}"),
        }
    }
    assert!(ended, "the SSE stream ended");
}
