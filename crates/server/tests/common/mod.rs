//! Black-box harness: the real `acteon-server` binary on a free loopback
//! port, driven over HTTP, on either backend.

#![allow(dead_code, unreachable_pub, unused_macros)]

pub mod broker;

/// Generates one test per case and backend; Kafka cases skip without a
/// broker. Each case is `async fn case(backend: Backend)` in the calling
/// file, which has `Backend` in scope.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Memory).await;
                }
            )*
        }
        mod kafka {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(backend) = super::Backend::kafka(stringify!($case)) {
                        super::$case(backend).await;
                    }
                }
            )*
        }
    };
}

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use acteon_bus::KAFKA_BOOTSTRAP_ENV;
use acteon_bus::conformance::{DEADLINE, Reader, test_kafka_config};
use acteon_core::SubscriptionMode;
use serde_json::{Value, json};

/// Which backend a server under test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Memory,
    Kafka { bootstrap: String },
}

impl Backend {
    /// The Kafka backend at `ACTEON_KAFKA_BOOTSTRAP`, or `None` (said on
    /// stderr) when no broker is configured.
    pub fn kafka(test: &str) -> Option<Self> {
        acteon_bus::conformance::kafka_bootstrap_from_env(test)
            .map(|bootstrap| Self::Kafka { bootstrap })
    }

    /// Environment that selects this backend, with short group timeouts.
    fn env(&self) -> Vec<(String, String)> {
        match self {
            Self::Memory => Vec::new(),
            Self::Kafka { bootstrap } => {
                let kafka = test_kafka_config(bootstrap);
                vec![
                    (KAFKA_BOOTSTRAP_ENV.into(), bootstrap.clone()),
                    (
                        "ACTEON_BUS__KAFKA__SESSION_TIMEOUT_MS".into(),
                        kafka.session_timeout_ms.to_string(),
                    ),
                    (
                        "ACTEON_BUS__KAFKA__MAX_POLL_INTERVAL_MS".into(),
                        kafka.max_poll_interval_ms.to_string(),
                    ),
                    (
                        "ACTEON_BUS__KAFKA__HEARTBEAT_INTERVAL_MS".into(),
                        kafka.heartbeat_interval_ms.to_string(),
                    ),
                ]
            }
        }
    }
}

/// A running `acteon-server` process; killed when dropped.
#[derive(Debug)]
pub struct TestServer {
    child: Child,
    pub base_url: String,
    pub http: reqwest::Client,
}

impl TestServer {
    /// Starts the binary with its state in `data_dir`.
    pub fn start(backend: &Backend, data_dir: &Path) -> Self {
        Self::start_with(backend, data_dir, &[])
    }

    /// Starts the binary with `toml` as its configuration file.
    pub fn start_with_config(backend: &Backend, data_dir: &Path, toml: &str) -> Self {
        Self::start_with_config_env(backend, data_dir, toml, &[])
    }

    /// Starts the binary with a configuration file and extra environment.
    pub fn start_with_config_env(
        backend: &Backend,
        data_dir: &Path,
        toml: &str,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let file = data_dir.join("acteon.toml");
        std::fs::create_dir_all(data_dir).expect("data dir");
        std::fs::write(&file, toml).expect("write config");
        Self::launch(backend, data_dir, extra_env, Some(&file))
    }

    /// Where a server started with a configuration file writes its log.
    pub fn log_path(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("server.log")
    }

    /// Starts the binary with extra environment variables.
    pub fn start_with(backend: &Backend, data_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::launch(backend, data_dir, extra_env, None)
    }

    fn launch(
        backend: &Backend,
        data_dir: &Path,
        extra_env: &[(&str, &str)],
        config: Option<&Path>,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_acteon-server"));
        if let Some(config) = config {
            command.arg("--config").arg(config);
            let log = std::fs::File::create(Self::log_path(data_dir)).expect("log file");
            command.stderr(log);
        }
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove(KAFKA_BOOTSTRAP_ENV)
            // ACTEON_TEST_SERVER_LOG sets the servers' log filter when debugging.
            .env(
                "RUST_LOG",
                std::env::var("ACTEON_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::piped());
        if config.is_none() {
            command.stderr(Stdio::inherit());
        }
        if matches!(backend, Backend::Memory) {
            // Inherited Kafka settings would select the Kafka backend.
            for (name, _) in
                std::env::vars().filter(|(name, _)| name.starts_with("ACTEON_BUS__KAFKA__"))
            {
                command.env_remove(name);
            }
        }
        for (name, value) in backend.env() {
            command.env(name, value);
        }
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start acteon-server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's address");
        let base_url = line
            .trim()
            .strip_prefix(acteon_server::app::LISTENING)
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Self {
            child,
            base_url,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it
    /// exited cleanly within `within`.
    pub fn terminate(mut self, within: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// POSTs `body` as JSON; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        read(response).await
    }

    /// Sends a request with `key` as its bearer token (none: no
    /// Authorization header) and `body` as JSON; returns the status, the
    /// answer's text and its headers.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            response.text().await.expect("response body"),
            headers,
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        read(self.http.get(self.url(path)).send().await.expect("GET")).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        read(
            self.http
                .delete(self.url(path))
                .send()
                .await
                .expect("DELETE"),
        )
        .await
    }

    /// PUTs `body` as JSON; returns the status and the JSON answer.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PUT");
        read(response).await
    }

    /// The page of audit records `GET /v1/audit?{query}` answers, once it
    /// holds at least `count`.
    pub async fn audit(&self, query: &str, count: usize) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (status, page) = self.get(&format!("/v1/audit?{query}")).await;
            assert_eq!(status, 200, "{page}");
            if page["records"].as_array().expect("records").len() >= count {
                return page;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "audit never reached {count}: {page}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Kafka names `GET /v1/bus/topics{query}` lists.
    pub async fn topic_names(&self, query: &str) -> Vec<String> {
        let (status, listed) = self.get(&format!("/v1/bus/topics{query}")).await;
        assert_eq!(status, 200, "{listed}");
        listed
            .as_array()
            .expect("a list")
            .iter()
            .map(|topic| topic["kafka_name"].as_str().expect("kafka_name").to_owned())
            .collect()
    }

    /// Creates `namespace.tenant.name` and returns its Kafka name.
    pub async fn create_topic(&self, tenant: &str, name: &str, partitions: u32) -> String {
        let (status, body) = self
            .post(
                "/v1/bus/topics",
                &json!({
                    "namespace": "test", "tenant": tenant, "name": name,
                    "partitions": partitions, "replication_factor": 1,
                }),
            )
            .await;
        assert_eq!(status, 201, "create topic: {body}");
        body["kafka_name"].as_str().expect("kafka_name").to_owned()
    }

    /// Publishes `payload` to `topic`; returns the status and the answer.
    pub async fn publish(&self, topic: &str, payload: Value) -> (u16, Value) {
        self.post(
            "/v1/bus/publish",
            &json!({ "topic": topic, "payload": payload }),
        )
        .await
    }

    /// Publishes `{"seq": seq}` keyed `key-{seq}`; returns the receipt.
    pub async fn publish_seq(&self, topic: &str, seq: usize) -> Value {
        let (status, body) = self
            .post(
                "/v1/bus/publish",
                &json!({ "topic": topic, "key": format!("key-{seq}"), "payload": { "seq": seq } }),
            )
            .await;
        assert_eq!(status, 200, "publish: {body}");
        body
    }

    /// Opens an SSE subscription through `acteon-client`, as a conformance
    /// [`Reader`].
    pub async fn subscribe(&self, subscription: &str, topic: &str, from: &str) -> Reader {
        self.subscribe_in_mode(subscription, topic, from, SubscriptionMode::Shared)
            .await
    }

    pub async fn subscribe_in_mode(
        &self,
        subscription: &str,
        topic: &str,
        from: &str,
        mode: SubscriptionMode,
    ) -> Reader {
        let client = acteon_client::Client::builder(&self.base_url)
            .build()
            .expect("client");
        let events = client
            .subscribe_in_mode(
                subscription,
                &topic.parse().expect("topic name"),
                from.parse().expect("start"),
                mode,
            )
            .await
            .expect("subscribe");
        Reader::from_events(events)
    }

    /// A broadcast connection to `topic` of `partitions` partitions, past
    /// its assignment.
    pub async fn broadcast(&self, topic: &str, partitions: u32, from: &str) -> Reader {
        let mut reader = self
            .subscribe_in_mode("broadcast", topic, from, SubscriptionMode::Broadcast)
            .await;
        reader.wait_for_every_partition(partitions).await;
        reader
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, body)
}
