//! Browser clients: CORS, subscribe tokens, and a real headless Chromium
//! reading a stream from a page on another origin.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const READER: &str = "reader-secret-5d1e";
const WRITER: &str = "writer-secret-0b7c";

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Auth on; `reader` may subscribe to tenant `web` and ask for tokens,
/// `writer` may publish and manage there.
fn config(origins: &[&str]) -> String {
    let origins: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
    format!(
        r#"
[server.cors]
allowed_origins = [{origins}]

[auth]
enabled = true

[[auth.keys]]
id = "reader"
key_sha256 = "{reader}"
grants = [{{ namespace = "test", tenant = "web", ops = ["subscribe"] }}]

[[auth.keys]]
id = "writer"
key_sha256 = "{writer}"
grants = [{{ namespace = "test", tenant = "web", ops = ["publish", "manage"] }}]
"#,
        origins = origins.join(", "),
        reader = hash(READER),
        writer = hash(WRITER),
    )
}

async fn create_topic(server: &TestServer, name: &str) -> String {
    let body = json!({
        "namespace": "test", "tenant": "web", "name": name,
        "partitions": 1, "replication_factor": 1,
    });
    let (status, text, _) = server
        .call(Method::POST, "/v1/bus/topics", Some(WRITER), Some(&body))
        .await;
    assert_eq!(status, 201, "{text}");
    format!("test.web.{name}")
}

async fn publish(server: &TestServer, topic: &str, text: &str) {
    let body = json!({ "topic": topic, "payload": { "text": text } });
    let (status, answer, _) = server
        .call(Method::POST, "/v1/bus/publish", Some(WRITER), Some(&body))
        .await;
    assert_eq!(status, 200, "{answer}");
}

async fn ask_token(server: &TestServer, key: &str, request: &Value) -> (u16, Value) {
    let (status, text, _) = server
        .call(
            Method::POST,
            "/v1/auth/sse-tokens",
            Some(key),
            Some(request),
        )
        .await;
    (status, serde_json::from_str(&text).unwrap())
}

/// The status of opening `path` with no Authorization header.
async fn open(server: &TestServer, path: &str) -> u16 {
    let response = server.http.get(server.url(path)).send().await.unwrap();
    response.status().as_u16()
}

/// The name of the first event of the SSE stream at `path`.
async fn first_event(server: &TestServer, path: &str) -> String {
    let mut response = server.http.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen.lines()
        .find_map(|line| line.strip_prefix("event: "))
        .expect("an event line")
        .to_owned()
}

#[tokio::test]
async fn subscribe_tokens_open_their_one_stream_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let log_config = format!("{}\n[log]\nformat = \"json\"\n", config(&[]));
    let server = TestServer::start_with_config_env(
        &Backend::Memory,
        dir.path(),
        &log_config,
        &[("RUST_LOG", "debug")],
    );
    let inbox = create_topic(&server, "inbox").await;
    let other = create_topic(&server, "other").await;

    let request = json!({ "topic": inbox, "subscription_id": "page", "ttl_secs": 60 });
    let (status, issued) = ask_token(&server, READER, &request).await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["topic"], inbox.as_str());
    assert_eq!(issued["subscription_id"], "page");
    assert!(issued["expires_at"].is_string());
    let token = issued["token"].as_str().unwrap().to_owned();

    let subscribe_as = |id: &str, topic: &str, token: &str| {
        format!("/v1/bus/subscribe/{id}?topic={topic}&from=earliest&token={token}")
    };
    let subscribe = |topic: &str, token: &str| subscribe_as("page", topic, token);
    assert_eq!(
        first_event(&server, &subscribe(&inbox, &token)).await,
        "bus.assignment"
    );
    for mode in ["shared", "broadcast"] {
        let path = format!("{}&mode={mode}", subscribe(&inbox, &token));
        assert_eq!(
            first_event(&server, &path).await,
            "bus.assignment",
            "{mode}"
        );
    }
    assert_eq!(
        open(&server, &subscribe(&other, &token)).await,
        403,
        "another topic"
    );
    assert_eq!(
        open(&server, &subscribe_as("workers", &inbox, &token)).await,
        403,
        "another subscription id: no joining someone else's group"
    );
    // Without an id asked for, the token names a fresh one.
    let (_, fresh) = ask_token(&server, READER, &json!({ "topic": inbox })).await;
    let fresh_id = fresh["subscription_id"].as_str().unwrap();
    assert!(fresh_id.starts_with("page-"), "{fresh}");
    let fresh_token = fresh["token"].as_str().unwrap();
    assert_eq!(
        first_event(&server, &subscribe_as(fresh_id, &inbox, fresh_token)).await,
        "bus.assignment"
    );
    assert_eq!(
        open(&server, &format!("/v1/bus/subscribe/page?topic={inbox}")).await,
        401,
        "no token, no key"
    );
    let (status, ..) = server
        .call(Method::GET, "/v1/bus/topics", Some(&token), None)
        .await;
    assert_eq!(status, 401, "a token is no API key");
    let (status, ..) = server
        .call(
            Method::GET,
            &format!("/v1/bus/topics?token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401, "only subscribe endpoints take a token");
    // An API key in the URL is not a token.
    assert_eq!(open(&server, &subscribe(&inbox, READER)).await, 401);
    let tampered = format!("{}0", &token);
    assert_eq!(open(&server, &subscribe(&inbox, &tampered)).await, 401);

    // A durable subscription's token opens its events only.
    let durable = json!({ "namespace": "test", "tenant": "web", "id": "page", "topic": "inbox" });
    let (status, text, _) = server
        .call(
            Method::POST,
            "/v1/bus/subscriptions",
            Some(WRITER),
            Some(&durable),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let reference = json!({ "namespace": "test", "tenant": "web", "id": "page" });
    let (status, issued) = ask_token(&server, READER, &json!({ "subscription": reference })).await;
    assert_eq!(status, 201, "{issued}");
    let durable_token = issued["token"].as_str().unwrap();
    let events =
        |id: &str, token: &str| format!("/v1/bus/subscriptions/test/web/{id}/events?token={token}");
    assert_eq!(open(&server, &events("page", durable_token)).await, 200);
    assert_eq!(open(&server, &events("else", durable_token)).await, 403);
    // It settles what it receives, and nothing of another subscription.
    let shared = &server;
    let ack = |id: &str, token: &str| {
        let path = format!("/v1/bus/subscriptions/test/web/{id}/ack?token={token}");
        async move {
            // Well formed, and of no delivery: answered as stale.
            let body = json!({ "ids": ["000000000000-0-0-1"] });
            shared.call(Method::POST, &path, None, Some(&body)).await.0
        }
    };
    assert_eq!(ack("page", durable_token).await, 200);
    assert_eq!(ack("else", durable_token).await, 403);
    assert_eq!(
        ack("page", &token).await,
        403,
        "a topic token settles nothing"
    );
    assert_eq!(
        open(&server, &events("page", &token)).await,
        403,
        "a topic token"
    );
    assert_eq!(open(&server, &subscribe(&inbox, durable_token)).await, 403);

    // Who may ask, and for what.
    let (status, _) = ask_token(&server, WRITER, &json!({ "topic": inbox })).await;
    assert_eq!(status, 403, "asking needs subscribe");
    for bad in [
        json!({}),
        json!({ "topic": inbox, "subscription": reference }),
        json!({ "topic": inbox, "ttl_secs": 0 }),
        json!({ "topic": inbox, "ttl_secs": 86_400 }),
        json!({ "topic": "not a topic" }),
        json!({ "topic": inbox, "extra": true }),
        json!({ "topic": 5 }),
        json!({ "topic": inbox, "subscription_id": "" }),
        json!({ "subscription_id": "page" }),
        json!({ "subscription": { "namespace": "test", "tenant": "web", "id": "a.b" } }),
        json!({ "subscription": { "namespace": "test", "tenant": "web", "id": "x".repeat(81) } }),
    ] {
        let (status, answer) = ask_token(&server, READER, &bad).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer["error"].is_string());
    }

    // A token ends at its expiry, and so does the stream it opened.
    let request = json!({ "topic": inbox, "subscription_id": "page", "ttl_secs": 2 });
    let (_, issued) = ask_token(&server, READER, &request).await;
    let short = issued["token"].as_str().unwrap().to_owned();
    let mut stream = server
        .http
        .get(server.url(&subscribe(&inbox, &short)))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = server
            .http
            .get(server.url(&subscribe(&inbox, &short)))
            .send()
            .await
            .unwrap();
        if response.status() == 401 {
            let body: Value = response.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("expired"),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the token outlived its ttl");
        drop(response);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Neither keys nor tokens reach the log, even at debug.
    let log = std::fs::read_to_string(TestServer::log_path(dir.path())).unwrap();
    assert!(
        log.contains("/v1/bus/subscribe/{subscription_id}"),
        "requests are logged"
    );
    for secret in [READER, WRITER, &token, durable_token, &short] {
        assert!(!log.contains(secret), "a secret in the log");
    }
}

/// Tokens are checked against the key they were issued to at every use:
/// once the key is gone, so are they, even where another server signs
/// with the same token key.
#[tokio::test]
async fn a_token_ends_with_its_key() {
    let token_key = "[auth]\nsse_token_key = \"".to_owned() + &"ab".repeat(32) + "\"\n";
    let with_reader = config(&[]).replace("[auth]\n", &token_key);
    let without_reader = with_reader.replace(&hash(READER), &hash("another-secret"));
    let path = |token: &str| format!("/v1/bus/subscribe/page?topic=test.web.inbox&token={token}");

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), &with_reader);
    create_topic(&server, "inbox").await;
    let request = json!({ "topic": "test.web.inbox", "subscription_id": "page" });
    let (status, issued) = ask_token(&server, READER, &request).await;
    assert_eq!(status, 201, "{issued}");
    let token = issued["token"].as_str().unwrap().to_owned();
    drop(server);

    let other = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&Backend::Memory, other.path(), &with_reader);
    create_topic(&server, "inbox").await;
    assert_eq!(
        open(&server, &path(&token)).await,
        200,
        "one token key, two servers"
    );
    drop(server);

    let server = TestServer::start_with_config(&Backend::Memory, other.path(), &without_reader);
    assert_eq!(
        open(&server, &path(&token)).await,
        401,
        "the key was removed"
    );
}

#[tokio::test]
async fn preflights_are_answered_for_allowed_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = "http://app.example.test:5173";
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), &config(&[allowed]));
    let preflight = |origin: &'static str, path: &'static str| {
        server
            .http
            .request(Method::OPTIONS, server.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let answer = preflight(allowed, "/v1/bus/publish").await.unwrap();
    assert_eq!(answer.status(), 200);
    let headers = answer.headers();
    assert_eq!(headers["access-control-allow-origin"], allowed);
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let answer = preflight("http://elsewhere.test", "/v1/bus/publish")
        .await
        .unwrap();
    assert!(!answer.headers().contains_key("access-control-allow-origin"));

    // The SSE route too, and the header on the stream itself.
    let topic = create_topic(&server, "inbox").await;
    let (_, issued) = ask_token(&server, READER, &json!({ "topic": topic })).await;
    let answer = server
        .http
        .get(server.url(&format!(
            "/v1/bus/subscribe/{}?topic={topic}&token={}",
            issued["subscription_id"].as_str().unwrap(),
            issued["token"].as_str().unwrap()
        )))
        .header("origin", allowed)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["access-control-allow-origin"], allowed);
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

#[tokio::test]
async fn without_allowed_origins_there_is_no_cors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&Backend::Memory, dir.path());
    let answer = server
        .http
        .request(Method::OPTIONS, server.url("/v1/bus/publish"))
        .header("origin", "http://app.example.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
}

/// Chromium and ChromeDriver, where the test command installs them.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let path = |var: &str, default: &str| {
        PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
    };
    let chromium = path("ACTEON_CHROMIUM", "/usr/bin/chromium");
    let driver = path("ACTEON_CHROMEDRIVER", "/usr/bin/chromedriver");
    if chromium.exists() && driver.exists() {
        return Some((chromium, driver));
    }
    assert!(
        std::env::var_os("ACTEON_REQUIRE_BROWSER").is_none(),
        "ACTEON_REQUIRE_BROWSER is set, but {} or {} is missing",
        chromium.display(),
        driver.display()
    );
    eprintln!("skipped: no Chromium and ChromeDriver (set ACTEON_CHROMIUM, ACTEON_CHROMEDRIVER)");
    None
}

/// A ChromeDriver process; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(binary: &PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // It says on stdout when it listens.
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let started = lines.any(|line| line.is_ok_and(|l| l.contains("started successfully")));
        assert!(started, "chromedriver did not start");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `html` for every request on `listener` until the task ends.
async fn serve_page(listener: tokio::net::TcpListener, html: String) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let html = html.clone();
        tokio::spawn(async move {
            let mut head = vec![0u8; 8192];
            let _ = socket.read(&mut head).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

/// The page: asks for a token with a key, then subscribes with
/// `EventSource` and lists each message's `payload.text`.
fn page(api: &str, topic: &str) -> String {
    format!(
        r#"<!doctype html>
<html><body>
<p id="status">starting</p>
<ul id="messages"></ul>
<script>
const api = {api:?}, topic = {topic:?}, key = {READER:?};
const status = document.getElementById('status');
fetch(api + '/v1/auth/sse-tokens', {{
  method: 'POST',
  headers: {{ 'authorization': 'Bearer ' + key, 'content-type': 'application/json' }},
  body: JSON.stringify({{ topic: topic, ttl_secs: 120 }}),
}})
  .then(r => {{ if (!r.ok) throw new Error('token answered ' + r.status); return r.json(); }})
  .then(issued => {{
    const url = api + '/v1/bus/subscribe/' + issued.subscription_id
      + '?topic=' + encodeURIComponent(topic)
      + '&from=earliest&token=' + encodeURIComponent(issued.token);
    const events = new EventSource(url);
    events.addEventListener('bus.assignment', () => {{ status.textContent = 'subscribed'; }});
    events.addEventListener('bus.message', e => {{
      const item = document.createElement('li');
      item.textContent = JSON.parse(e.data).payload.text;
      document.getElementById('messages').appendChild(item);
    }});
    events.onerror = () => {{ status.textContent = 'stream error'; }};
  }})
  .catch(error => {{ status.textContent = 'failed: ' + error.message; }});
</script>
</body></html>"#
    )
}

/// Runs `script` in the page until it returns `wanted`.
async fn wait_in_page(http: &reqwest::Client, session: &str, script: &str, wanted: &Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let answer: Value = http
            .post(format!("{session}/execute/sync"))
            .json(&json!({ "script": script, "args": [] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        last = answer["value"].clone();
        if &last == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page shows {last}, not {wanted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_reads_a_stream_with_a_token() {
    let Some((chromium, driver_binary)) = browser() else {
        return;
    };
    let page_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_origin = format!("http://{}", page_listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_config(&Backend::Memory, dir.path(), &config(&[&page_origin]));
    let topic = create_topic(&server, "inbox").await;
    let pages = tokio::spawn(serve_page(page_listener, page(&server.base_url, &topic)));

    let driver = Driver::start(&driver_binary);
    let http = reqwest::Client::new();
    let profile = tempfile::tempdir().unwrap();
    let capabilities = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        },
    }}});
    let created: Value = http
        .post(format!("{}/session", driver.url))
        .json(&capabilities)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no browser session: {created}"));
    let session = format!("{}/session/{id}", driver.url);
    let navigated = http
        .post(format!("{session}/url"))
        .json(&json!({ "url": format!("{page_origin}/") }))
        .send()
        .await
        .unwrap();
    assert!(navigated.status().is_success());

    wait_in_page(
        &http,
        &session,
        "return document.getElementById('status').textContent",
        &json!("subscribed"),
    )
    .await;
    let texts = ["first", "second", "third"];
    for text in texts {
        publish(&server, &topic, text).await;
    }
    wait_in_page(
        &http,
        &session,
        "return Array.from(document.querySelectorAll('#messages li')).map(li => li.textContent)",
        &json!(texts),
    )
    .await;

    let _ = http.delete(&session).send().await;
    pages.abort();
}
