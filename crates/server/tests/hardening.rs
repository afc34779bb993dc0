//! Reproductions of defects reported from outside: each test failed for the
//! reported reason before its fix.

mod common;

use common::{Backend, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn publish(server: &TestServer, topic: &str, seq: u64) -> (u16, Value) {
    server
        .post(
            "/v1/bus/publish",
            &json!({ "topic": topic, "payload": { "seq": seq } }),
        )
        .await
}

/// A silence dated at the end of chrono's range was accepted; the next
/// silence create overflowed a date inside the silences lock, and every
/// publish of every tenant answered 500 from then on, across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_dated_silence_cannot_stop_other_tenants_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&Backend::Memory, dir.path());
    let topic = server.create_topic("victim", "inbox", 1).await;

    let far = json!({ "tenant": "other", "ends_at": "+262142-12-31T23:59:59Z", "comment": "x" });
    let (status, body) = server.post("/v1/silences", &far).await;
    assert_eq!(status, 400, "a silence beyond max_silence_secs: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("max_silence_secs"),
        "{body}"
    );
    let (status, body) = server
        .post(
            "/v1/silences",
            &json!({ "tenant": "other", "duration_ms": 60_000, "comment": "y" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for seq in 0..3 {
        let (status, body) = publish(&server, &topic, seq).await;
        assert_eq!(status, 200, "another tenant's publish: {body}");
    }
    drop(server);

    // The same after a restart.
    let server = TestServer::start(&Backend::Memory, dir.path());
    let (status, body) = server
        .post(
            "/v1/silences",
            &json!({ "tenant": "other", "duration_ms": 60_000, "comment": "z" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = publish(&server, &topic, 3).await;
    assert_eq!(status, 200, "after a restart: {body}");
}

const READER: &str = "alpha-reader-secret-5b1e";
const ROOT: &str = "root-secret-93aa";

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

async fn call(
    server: &TestServer,
    key: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, text, _) = server.call(method, path, Some(key), body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A key granted `agents`/`alpha` was refused the audit of
/// `agents.alpha.t`, which names its namespace and tenant already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_query_by_full_topic_name_needs_no_other_filter() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[audit]
flush_interval_ms = 20

[auth]
enabled = true

[[auth.keys]]
id = "root"
key_sha256 = "{root}"
grants = [{{ namespace = "*", tenant = "*", ops = ["admin"] }}]

[[auth.keys]]
id = "alpha-reader"
key_sha256 = "{reader}"
grants = [{{ namespace = "agents", tenant = "alpha", ops = ["audit"] }}]
"#,
        root = hash(ROOT),
        reader = hash(READER),
    );
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), &config);
    for tenant in ["alpha", "beta"] {
        let spec = json!({ "namespace": "agents", "tenant": tenant, "name": "t",
                           "partitions": 1, "replication_factor": 1 });
        let (status, body) = call(&server, ROOT, Method::POST, "/v1/bus/topics", Some(&spec)).await;
        assert_eq!(status, 201, "{body}");
        let message = json!({ "topic": format!("agents.{tenant}.t"), "payload": {} });
        let (status, body) = call(
            &server,
            ROOT,
            Method::POST,
            "/v1/bus/publish",
            Some(&message),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let records = loop {
        let (status, body) = call(
            &server,
            READER,
            Method::GET,
            "/v1/audit?topic=agents.alpha.t",
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let records = body["records"].as_array().unwrap().clone();
        if !records.is_empty() || tokio::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["topic"], "agents.alpha.t");

    let (status, body) = call(
        &server,
        READER,
        Method::GET,
        "/v1/audit?topic=agents.beta.t",
        None,
    )
    .await;
    assert_eq!(status, 403, "another tenant's topic: {body}");
    let (status, body) = call(
        &server,
        READER,
        Method::GET,
        "/v1/audit?topic=agents.alpha.t&tenant=beta",
        None,
    )
    .await;
    assert_eq!(status, 400, "a topic outside the tenant asked for: {body}");
    let (status, body) = call(
        &server,
        READER,
        Method::GET,
        "/v1/audit?topic=agents.alpha",
        None,
    )
    .await;
    assert_eq!(status, 400, "not a topic name: {body}");
}
