//! Multi-tenant authorization over HTTP: a key of tenant A can do what its
//! grants allow and cannot reach tenant B, on every endpoint.

mod common;

use std::time::Duration;

use acteon_bus::KAFKA_BOOTSTRAP_ENV;
use common::{Backend, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ROOT: &str = "root-secret-0c1f";
const ACME_AGENT: &str = "acme-agent-secret-77aa";
const ACME_OPS: &str = "acme-ops-secret-19bd";
const GLOBEX_ADMIN: &str = "globex-admin-secret-4e02";
const ENV_KEY: &str = "env-key-secret-aa31";

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(with_ops_key: bool) -> String {
    let ops_key = if with_ops_key {
        format!(
            r#"
[[auth.keys]]
id = "acme-ops"
key_sha256 = "{}"
grants = [{{ namespace = "*", tenant = "acme", ops = ["manage", "audit"] }}]
"#,
            hash(ACME_OPS)
        )
    } else {
        String::new()
    };
    format!(
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
id = "acme-agent"
key_sha256 = "{agent}"
grants = [{{ namespace = "agents", tenant = "acme", ops = ["publish", "subscribe"] }}]

[[auth.keys]]
id = "globex-admin"
key_sha256 = "{globex}"
grants = [{{ namespace = "*", tenant = "globex", ops = ["admin"] }}]
{ops_key}"#,
        root = hash(ROOT),
        agent = hash(ACME_AGENT),
        globex = hash(GLOBEX_ADMIN),
    )
}

fn env_keys() -> String {
    json!([{ "id": "env-reader", "key_sha256": hash(ENV_KEY),
             "grants": [{ "namespace": "agents", "tenant": "acme", "ops": ["subscribe"] }] }])
    .to_string()
}

/// Sends a request as `key` (none: no Authorization header).
async fn call(
    server: &TestServer,
    method: Method,
    path: impl AsRef<str>,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let (status, text, headers) = server.call(method, path.as_ref(), key, body.as_ref()).await;
    for secret in [ROOT, ACME_AGENT, ACME_OPS, GLOBEX_ADMIN, ENV_KEY] {
        assert!(
            !text.contains(secret),
            "a response revealed a secret: {text}"
        );
    }
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body, headers)
}

/// Opens (and drops) an SSE subscription as `key`; its status.
async fn subscribe(server: &TestServer, key: &str, topic: &str) -> u16 {
    let path = format!(
        "/v1/bus/subscribe/s-{}?topic={topic}",
        uuid::Uuid::new_v4().simple()
    );
    let request = server.http.get(server.url(&path)).bearer_auth(key);
    request.send().await.unwrap().status().as_u16()
}

fn topic_spec(tenant: &str, name: &str) -> Value {
    json!({ "namespace": "agents", "tenant": tenant, "name": name, "partitions": 1, "replication_factor": 1 })
}

/// Durable subscriptions: `manage` creates and deletes, `subscribe`
/// consumes and settles, and another tenant's subscription answers like a
/// missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_subscriptions_follow_the_grants() {
    use Method as M;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), &config(true));
    let spec = json!({ "namespace": "agents", "tenant": "acme", "id": "w", "topic": "jobs" });
    let topic = topic_spec("acme", "jobs");
    assert_eq!(
        call(
            &server,
            M::POST,
            "/v1/bus/topics",
            Some(ACME_OPS),
            Some(topic)
        )
        .await
        .0,
        201
    );
    let create = |key| {
        call(
            &server,
            M::POST,
            "/v1/bus/subscriptions",
            Some(key),
            Some(spec.clone()),
        )
    };
    assert_eq!(create(ACME_AGENT).await.0, 403, "subscribe is not manage");
    assert_eq!(create(GLOBEX_ADMIN).await.0, 403, "another tenant");
    assert_eq!(create(ACME_OPS).await.0, 201);

    let one = "/v1/bus/subscriptions/agents/acme/w";
    let missing = "/v1/bus/subscriptions/agents/acme/nobody";
    let stale = json!({ "ids": ["0a1b-0-0-1"] });
    let at = &server;
    let events = |key: &'static str, path: &'static str| async move {
        let request = at.http.get(at.url(&format!("{path}/events")));
        request
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    for path in [one, missing] {
        let (status, body, _) = call(&server, M::GET, path, Some(GLOBEX_ADMIN), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(events(GLOBEX_ADMIN, path).await, 403);
        let ack = format!("{path}/ack");
        let settled = call(
            &server,
            M::POST,
            &ack,
            Some(GLOBEX_ADMIN),
            Some(stale.clone()),
        );
        assert_eq!(settled.await.0, 403);
        assert_eq!(
            call(&server, M::DELETE, path, Some(GLOBEX_ADMIN), None)
                .await
                .0,
            403
        );
    }
    let listed = call(
        &server,
        M::GET,
        "/v1/bus/subscriptions",
        Some(GLOBEX_ADMIN),
        None,
    )
    .await;
    assert_eq!(
        listed.1,
        json!([]),
        "another tenant's subscriptions are not listed"
    );
    assert_eq!(call(&server, M::GET, one, None, None).await.0, 401);

    assert_eq!(
        call(&server, M::GET, one, Some(ACME_AGENT), None).await.0,
        200
    );
    assert_eq!(
        call(&server, M::GET, missing, Some(ACME_AGENT), None)
            .await
            .0,
        404
    );
    assert_eq!(events(ACME_AGENT, one).await, 200);
    let ack = format!("{one}/ack");
    let settled = call(
        &server,
        M::POST,
        &ack,
        Some(ACME_AGENT),
        Some(stale.clone()),
    )
    .await;
    assert_eq!(settled.0, 200, "{}", settled.1);
    let listed = call(
        &server,
        M::GET,
        "/v1/bus/subscriptions",
        Some(ACME_AGENT),
        None,
    )
    .await;
    assert_eq!(listed.1.as_array().map(Vec::len), Some(1));
    assert_eq!(
        call(&server, M::DELETE, one, Some(ACME_AGENT), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(&server, M::DELETE, one, Some(ACME_OPS), None).await.0,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reach_their_own_tenant_and_never_another() {
    use Method as M;
    let dir = tempfile::tempdir().unwrap();
    let keys = env_keys();
    let server = TestServer::start_with_config_env(
        &Backend::Memory,
        dir.path(),
        &config(true),
        &[("ACTEON_AUTH_KEYS", &keys), ("RUST_LOG", "debug")],
    );

    // Missing, malformed and unknown keys: 401 with a Bearer challenge.
    for (key, raw) in [
        (None, None),
        (Some("wrong"), None),
        (None, Some("Basic cm9vdA==")),
    ] {
        let mut request = server.http.get(server.url("/v1/bus/topics"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(raw) = raw {
            request = request.header("authorization", raw);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string());
    }
    assert_eq!(call(&server, M::GET, "/healthz", None, None).await.0, 200);
    assert_eq!(call(&server, M::GET, "/readyz", None, None).await.0, 200);

    // Topic management: acme-ops manages acme only; the agent manages nothing.
    let create = |key, tenant, name| {
        call(
            &server,
            M::POST,
            "/v1/bus/topics",
            Some(key),
            Some(topic_spec(tenant, name)),
        )
    };
    assert_eq!(create(ACME_OPS, "acme", "inbox").await.0, 201);
    assert_eq!(
        create(GLOBEX_ADMIN, "globex", "inbox").await.0,
        201,
        "admin allows manage"
    );
    assert_eq!(create(ACME_OPS, "globex", "other").await.0, 403);
    assert_eq!(
        create(ACME_AGENT, "acme", "mine").await.0,
        403,
        "publish/subscribe is not manage"
    );
    let list = |key| call(&server, M::GET, "/v1/bus/topics", Some(key), None);
    let names = |body: Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|t| t["kafka_name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(list(ACME_OPS).await.1), ["agents.acme.inbox"]);
    assert_eq!(names(list(ACME_AGENT).await.1), ["agents.acme.inbox"]);
    assert_eq!(names(list(GLOBEX_ADMIN).await.1), ["agents.globex.inbox"]);
    assert_eq!(
        names(list(ROOT).await.1).len(),
        2,
        "a * grant sees every tenant"
    );

    // Publishing: another tenant's topic answers exactly like a missing one
    // of that tenant (403), and the agent's own missing topic is 404.
    let publish = |key, topic: &str| {
        call(
            &server,
            M::POST,
            "/v1/bus/publish",
            Some(key),
            Some(json!({ "topic": topic, "payload": 1 })),
        )
    };
    assert_eq!(publish(ACME_AGENT, "agents.acme.inbox").await.0, 200);
    let (status, other_tenant, _) = publish(ACME_AGENT, "agents.globex.inbox").await;
    let (missing_status, missing, _) = publish(ACME_AGENT, "agents.globex.nothing").await;
    assert_eq!((status, missing_status), (403, 403));
    assert_eq!(
        other_tenant["error"], missing["error"],
        "an existing foreign topic and a missing one look the same"
    );
    assert_eq!(publish(ACME_AGENT, "agents.acme.nothing").await.0, 404);
    assert_eq!(
        publish(ACME_AGENT, "other.acme.inbox").await.0,
        403,
        "grant is for namespace agents"
    );
    assert_eq!(
        publish(ACME_OPS, "agents.acme.inbox").await.0,
        403,
        "manage is not publish"
    );

    // Subscribing.
    assert_eq!(
        subscribe(&server, ACME_AGENT, "agents.acme.inbox").await,
        200
    );
    assert_eq!(
        subscribe(&server, ENV_KEY, "agents.acme.inbox").await,
        200,
        "keys from the environment"
    );
    assert_eq!(
        subscribe(&server, ACME_AGENT, "agents.globex.inbox").await,
        403
    );
    assert_eq!(
        subscribe(&server, ENV_KEY, "agents.globex.inbox").await,
        403
    );

    // Topic delete.
    let delete = |key, topic: &str| {
        call(
            &server,
            M::DELETE,
            format!("/v1/bus/topics/{topic}"),
            Some(key),
            None,
        )
    };
    assert_eq!(delete(ACME_OPS, "agents.globex.inbox").await.0, 403);
    assert_eq!(delete(ACME_AGENT, "agents.acme.inbox").await.0, 403);

    // Audit: tenant-scoped, principal recorded.
    let audit = |key, query: &str| {
        call(
            &server,
            M::GET,
            format!("/v1/audit?{query}"),
            Some(key),
            None,
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (status, page, _) = audit(ACME_OPS, "tenant=acme").await;
        assert_eq!(status, 200, "{page}");
        if !page["records"].as_array().unwrap().is_empty() {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "no audit record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(page["records"][0]["principal"], "acme-agent");
    assert_eq!(page["records"][0]["tenant"], "acme");
    assert_eq!(audit(ACME_OPS, "tenant=globex").await.0, 403);
    assert_eq!(
        audit(ACME_OPS, "").await.0,
        403,
        "all tenants needs a * grant"
    );
    assert_eq!(audit(ACME_AGENT, "tenant=acme").await.0, 403);
    assert_eq!(audit(ROOT, "").await.0, 200);

    // Silences: admin of the silenced tenant only.
    let silence = |key, tenant: &str| {
        call(
            &server,
            M::POST,
            "/v1/silences",
            Some(key),
            Some(json!({ "tenant": tenant, "duration_ms": 60_000, "comment": "test" })),
        )
    };
    let (status, globex_silence, _) = silence(GLOBEX_ADMIN, "globex").await;
    assert_eq!(status, 201, "{globex_silence}");
    assert_eq!(silence(GLOBEX_ADMIN, "acme").await.0, 403);
    assert_eq!(
        silence(ACME_OPS, "acme").await.0,
        403,
        "silences need admin"
    );
    let (_, acme_view, _) = call(&server, M::GET, "/v1/silences", Some(ACME_OPS), None).await;
    assert_eq!(
        acme_view,
        json!([]),
        "another tenant's silences are not listed"
    );
    let (_, globex_view, _) = call(&server, M::GET, "/v1/silences", Some(GLOBEX_ADMIN), None).await;
    assert_eq!(globex_view.as_array().unwrap().len(), 1);
    let path = format!("/v1/silences/{}", globex_silence["id"].as_str().unwrap());
    assert_eq!(
        call(&server, M::DELETE, &path, Some(ACME_OPS), None)
            .await
            .0,
        404,
        "looks missing"
    );
    assert_eq!(
        call(&server, M::DELETE, &path, Some(GLOBEX_ADMIN), None)
            .await
            .0,
        204
    );

    // Rules: admin only.
    assert_eq!(
        call(&server, M::GET, "/v1/rules", Some(ACME_OPS), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(&server, M::GET, "/v1/rules", Some(GLOBEX_ADMIN), None)
            .await
            .0,
        200
    );

    // A key removed from the configuration is revoked.
    assert!(server.terminate(Duration::from_secs(20)));
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), &config(false));
    let (status, _, _) = call(&server, M::GET, "/v1/bus/topics", Some(ACME_OPS), None).await;
    assert_eq!(status, 401, "a revoked key");
    assert_eq!(
        call(&server, M::GET, "/v1/bus/topics", Some(ROOT), None)
            .await
            .0,
        200
    );
    drop(server);

    let log = std::fs::read_to_string(TestServer::log_path(dir.path())).unwrap();
    for secret in [ROOT, ACME_AGENT, ACME_OPS, GLOBEX_ADMIN, ENV_KEY] {
        assert!(!log.contains(secret), "the log revealed a secret");
    }
}

#[test]
fn without_auth_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_acteon-server"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove(KAFKA_BOOTSTRAP_ENV)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without authentication"),
        "{stderr}"
    );
}
