//! Per-tenant and per-key limits over HTTP: a tenant at a limit is refused
//! with the reason, and the others are not.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn spec(tenant: &str, name: &str) -> Value {
    json!({ "namespace": "test", "tenant": tenant, "name": name,
            "partitions": 1, "replication_factor": 1 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_silences_per_tenant_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(
        &Backend::Memory,
        dir.path(),
        &[
            ("ACTEON_LIMITS__MAX_TOPICS_PER_TENANT", "2"),
            ("ACTEON_LIMITS__MAX_SILENCES_PER_TENANT", "1"),
        ],
    );
    server.create_topic("greedy", "a", 1).await;
    server.create_topic("greedy", "b", 1).await;
    let (status, body) = server.post("/v1/bus/topics", &spec("greedy", "c")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("max_topics_per_tenant"),
        "{body}"
    );
    server.create_topic("modest", "a", 1).await;

    let silence = |tenant: &str| json!({ "tenant": tenant, "duration_ms": 60_000, "comment": "c" });
    assert_eq!(server.post("/v1/silences", &silence("greedy")).await.0, 201);
    let (status, body) = server.post("/v1/silences", &silence("greedy")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(server.post("/v1/silences", &silence("modest")).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_that_collide_in_kafka_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&Backend::Memory, dir.path());
    let first = json!({ "namespace": "ns", "tenant": "t", "name": "a_b",
                        "partitions": 1, "replication_factor": 1 });
    assert_eq!(server.post("/v1/bus/topics", &first).await.0, 201);
    let colliding = json!({ "namespace": "ns", "tenant": "t_a", "name": "b",
                            "partitions": 1, "replication_factor": 1 });
    let (status, body) = server.post("/v1/bus/topics", &colliding).await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("collides"), "{body}");
    assert!(
        !error.contains("ns.t.a_b"),
        "names another tenant's topic: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_keys_and_headers_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&Backend::Memory, dir.path());
    let topic = server.create_topic("sizes", "t", 1).await;
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("h{i}"), json!("v"))).collect();
    for (bad, limit) in [
        (
            json!({ "topic": topic, "key": "k".repeat(4097), "payload": {} }),
            "max_key_bytes",
        ),
        (
            json!({ "topic": topic, "headers": many, "payload": {} }),
            "max_headers",
        ),
        (
            json!({ "topic": topic, "headers": { "big": "v".repeat(16 * 1024) }, "payload": {} }),
            "max_header_bytes",
        ),
    ] {
        let (status, body) = server.post("/v1/bus/publish", &bad).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(limit), "{body}");
    }
    let fine = json!({ "topic": topic, "key": "k".repeat(4096), "payload": {} });
    assert_eq!(server.post("/v1/bus/publish", &fine).await.0, 200);
}

/// Opens an SSE subscription on a raw socket, reads its response head, and
/// then reads no more.
async fn stalled_subscriber(server: &TestServer, id: &str, topic: &str) -> tokio::net::TcpStream {
    let address = server.base_url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /v1/bus/subscribe/{id}?topic={topic}&from=earliest HTTP/1.1\r\nHost: {address}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(socket.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    socket
}

async fn subscribe_status(server: &TestServer, id: &str, topic: &str) -> u16 {
    let url = server.url(&format!("/v1/bus/subscribe/{id}?topic={topic}"));
    server.http.get(url).send().await.unwrap().status().as_u16()
}

/// A subscriber that stops reading is cut off after the send timeout, and
/// its place goes back to its tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_disconnected_and_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(
        &Backend::Memory,
        dir.path(),
        &[
            ("ACTEON_LIMITS__MAX_SUBSCRIPTIONS_PER_TENANT", "1"),
            ("ACTEON_SERVER__SEND_TIMEOUT_MS", "500"),
        ],
    );
    let topic = server.create_topic("slow", "t", 1).await;
    let other = server.create_topic("quick", "t", 1).await;
    let stalled = stalled_subscriber(&server, "stalled", &topic).await;
    // Its place is taken: a second subscription of the tenant is refused.
    assert_eq!(subscribe_status(&server, "second", &topic).await, 429);
    assert_eq!(subscribe_status(&server, "other-tenant", &other).await, 200);

    // Far more than the socket buffers hold.
    let payload = json!({ "blob": "x".repeat(256 * 1024) });
    for _ in 0..160 {
        let (status, body) = server
            .post(
                "/v1/bus/publish",
                &json!({ "topic": topic, "payload": payload }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = subscribe_status(&server, "second", &topic).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(
            Instant::now() < deadline,
            "the stalled subscriber kept its place"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
}
