//! Metrics, request ids and logs, against the real server binary.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use acteon_client::{Client, DurableEvent, DurableRef, DurableSubscriptionSpec};
use common::{Backend, TestServer};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

on_both_backends!(metrics_move_with_traffic);

fn tenant() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The exposition's samples, by `name{labels}` as written.
fn samples(text: &str) -> BTreeMap<String, f64> {
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition: {text}"
    );
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.parse().expect("a number")))
        .collect()
}

async fn scrape(server: &TestServer, key: Option<&str>) -> (u16, String) {
    let (status, body, headers) = server.call(Method::GET, "/metrics", key, None).await;
    if status == 200 {
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
    }
    (status, body)
}

/// `series` in the last scrape, or 0 if it is absent.
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

async fn metrics_move_with_traffic(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[audit]
flush_interval_ms = 20

[[rules]]
name = "no-blocked"
priority = 1
action = "deny"
condition = "has(payload.blocked)"
"#;
    let server = TestServer::start_with_config(&backend, dir.path(), config);
    let tenant = tenant();
    let topic = server.create_topic(&tenant, "jobs", 2).await;
    let before = samples(&scrape(&server, None).await.1);

    for seq in 0..3 {
        server.publish_seq(&topic, seq).await;
    }
    let (status, _) = server
        .post(
            "/v1/bus/publish",
            &json!({ "topic": topic, "payload": { "blocked": true } }),
        )
        .await;
    assert_eq!(status, 403);
    let missing = format!("test.{tenant}.missing");
    let (status, _) = server
        .post(
            "/v1/bus/publish",
            &json!({ "topic": missing, "payload": {} }),
        )
        .await;
    assert_eq!(status, 404);

    // A durable subscription with one record delivered and not settled.
    let client = Client::builder(&server.base_url).build().unwrap();
    let spec = DurableSubscriptionSpec {
        namespace: "test".into(),
        tenant: tenant.clone(),
        id: "workers".into(),
        topic: "jobs".into(),
        from: Some(acteon_core::StartPosition::Earliest),
        ..DurableSubscriptionSpec::default()
    };
    client.create_durable_subscription(&spec).await.unwrap();
    let mut deliveries = client
        .consume(&DurableRef::new("test", &tenant, "workers"))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), deliveries.next())
        .await
        .expect("a delivery in time")
        .expect("an event")
        .expect("no error");
    assert!(matches!(first, DurableEvent::Delivery(_)), "{first:?}");

    let publish_200 =
        r#"acteon_http_requests_total{method="POST",route="/v1/bus/publish",status="200"}"#;
    let produced = format!(r#"acteon_publishes_total{{tenant="{tenant}",outcome="produced"}}"#);
    let denied = format!(r#"acteon_publishes_total{{tenant="{tenant}",outcome="denied"}}"#);
    let connections = format!(r#"acteon_sse_connections{{tenant="{tenant}"}}"#);
    let labels = format!(r#"{{namespace="test",tenant="{tenant}",subscription="workers"}}"#);
    let in_flight = format!("acteon_durable_in_flight{labels}");
    let delivered = format!("acteon_durable_delivered_total{labels}");
    let lag = format!("acteon_durable_lag{labels}");
    // Delivery of the other two goes on after the first.
    wait_for(&server, &in_flight, 3.0).await;
    let text = scrape(&server, None).await.1;
    let after = samples(&text);
    assert_eq!(
        value(&after, publish_200) - value(&before, publish_200),
        3.0
    );
    assert_eq!(value(&after, &produced), 3.0, "{text}");
    assert_eq!(value(&after, &denied), 1.0, "{text}");
    assert_eq!(
        value(
            &after,
            r#"acteon_http_requests_total{method="POST",route="/v1/bus/publish",status="404"}"#
        ),
        1.0
    );
    assert!(
        value(&after, "acteon_produce_duration_seconds_count")
            - value(&before, "acteon_produce_duration_seconds_count")
            >= 3.0
    );
    assert_eq!(value(&after, &connections), 1.0, "{text}");
    assert_eq!(value(&after, &delivered), 3.0, "{text}");
    assert_eq!(value(&after, &lag), 3.0, "{text}");
    assert_eq!(
        value(&after, r#"acteon_dependency_up{dependency="bus"}"#),
        1.0
    );
    assert!(
        value(
            &after,
            r#"acteon_state_operation_duration_seconds_count{operation="insert_new"}"#
        ) >= 1.0,
        "{text}"
    );
    assert!(after.contains_key("acteon_audit_queue_depth"), "{text}");
    assert!(
        !text.contains(&missing) && !text.contains(&topic),
        "no topic names in labels: {text}"
    );

    // The connection's place is given back when it closes.
    drop(deliveries);
    wait_for(&server, &connections, 0.0).await;
}

/// Scrapes until `series` reads `expected`.
async fn wait_for(server: &TestServer, series: &str, expected: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(server, None).await.1;
        if value(&samples(&text), series) == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never read {expected}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Kafka producer's statistics give its produce requests and the
/// records in them; the in-memory backend has neither series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_producer_counts_its_requests_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let memory = TestServer::start(&Backend::Memory, dir.path());
    let text = scrape(&memory, None).await.1;
    assert!(!text.contains("acteon_kafka_"), "{text}");
    drop(memory);

    let Some(backend) = Backend::kafka("the_kafka_producer_counts_its_requests_and_records") else {
        return;
    };
    let server = TestServer::start_with(
        &backend,
        dir.path(),
        &[("ACTEON_BUS__KAFKA__STATISTICS_INTERVAL_MS", "100")],
    );
    let topic = server.create_topic(&tenant(), "counted", 2).await;
    for seq in 0..5 {
        server.publish_seq(&topic, seq).await;
    }
    let records: Vec<Value> = (0..20).map(|n| json!({ "payload": { "n": n } })).collect();
    let (status, answer) = server
        .post(
            &format!("/v1/bus/topics/{topic}/records"),
            &json!({ "records": records }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(&server, None).await.1;
        let now = samples(&text);
        let requests = value(&now, "acteon_kafka_produce_requests_total");
        let produced = value(&now, "acteon_kafka_produced_records_total");
        // Five publishes, each awaited, then a batch: at least 6
        // requests, and no more than records.
        if produced >= 25.0 {
            assert!((6.0..=produced).contains(&requests), "{text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the producer's statistics never counted 25 records: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[tokio::test]
async fn metrics_need_the_metrics_op_on_every_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[auth]
enabled = true

[[auth.keys]]
id = "scraper"
key_sha256 = "{scraper}"
grants = [{{ namespace = "*", tenant = "*", ops = ["metrics"] }}]

[[auth.keys]]
id = "acme-admin"
key_sha256 = "{tenant_admin}"
grants = [{{ namespace = "*", tenant = "acme", ops = ["admin"] }}]

[[auth.keys]]
id = "root"
key_sha256 = "{root}"
grants = [{{ namespace = "*", tenant = "*", ops = ["admin"] }}]
"#,
        scraper = hash("scraper-secret"),
        tenant_admin = hash("acme-admin-secret"),
        root = hash("root-secret"),
    );
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), &config);
    assert_eq!(scrape(&server, None).await.0, 401);
    let (status, body) = scrape(&server, Some("acme-admin-secret")).await;
    assert_eq!(status, 403, "figures of every tenant: {body}");
    assert_eq!(scrape(&server, Some("scraper-secret")).await.0, 200);
    assert_eq!(scrape(&server, Some("root-secret")).await.0, 200);
    let (status, ..) = server
        .call(Method::GET, "/v1/bus/topics", Some("scraper-secret"), None)
        .await;
    assert_eq!(status, 200, "a metrics key lists nothing, but may ask");
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_config(&Backend::Memory, dir.path(), "[metrics]\nenabled = false\n");
    assert_eq!(scrape(&server, None).await.0, 404);
}

/// Every JSON line of the server's log.
fn json_lines(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(TestServer::log_path(dir))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

#[tokio::test]
async fn request_ids_are_returned_logged_and_put_in_error_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[log]\nformat = \"json\"\nlevel = \"info\"\n";
    let server = TestServer::start_with_config_env(
        &Backend::Memory,
        dir.path(),
        config,
        // The harness's own filter would win over `[log] level`.
        &[("RUST_LOG", "info")],
    );
    let tenant = tenant();

    // A caller's id is kept, on success and on failure.
    let create = json!({
        "namespace": "test", "tenant": tenant, "name": "jobs",
        "partitions": 1, "replication_factor": 1,
    });
    let response = server
        .http
        .post(server.url("/v1/bus/topics"))
        .header("x-request-id", "trace-create-1")
        .json(&create)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "trace-create-1");
    let response = server
        .http
        .post(server.url("/v1/bus/topics"))
        .header("x-request-id", "trace-create-2")
        .json(&create)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-create-2", "{body}");
    assert!(body["error"].as_str().unwrap().contains("already exists"));

    // Without one (or with one unfit for logs), one is made.
    for sent in [None, Some("has spaces in it")] {
        let mut request = server.http.get(server.url("/v1/nowhere"));
        if let Some(id) = sent {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 404);
        let header = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        uuid::Uuid::parse_str(&header).expect("a generated UUID");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["request_id"], header.as_str());
    }

    // The log line about the topic carries the request's id, route and
    // tenant; no line carries a secret or a query string.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = json_lines(dir.path())
            .into_iter()
            .find(|line| line["span"]["request_id"] == "trace-create-1");
        if let Some(line) = found {
            break line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line for the request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(line["span"]["route"], "/v1/bus/topics", "{line}");
    assert_eq!(line["span"]["tenant"], tenant.as_str(), "{line}");
    assert_eq!(line["level"], "INFO");
    assert!(
        line["timestamp"].is_string() && line["target"].is_string(),
        "{line}"
    );
}
