//! The `acteon` binary, run as a user runs it, against a real server on a
//! free loopback port (memory backends), built with the same builder as
//! the `acteon-server` binary.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use acteon_server::config::{Cli as ServerCli, StateEngine};
use acteon_server::{Config, Server};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

/// How long any one wait of a test may take before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// An in-process server; stopped when dropped.
struct TestServer {
    url: String,
    stop: CancellationToken,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    async fn start_with(mut config: Config) -> Self {
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.state.engine = StateEngine::Memory;
        // Audit records are written soon after each publish.
        config.audit.flush_interval_ms = 10;
        let server = Server::build(config).await.expect("server");
        let listener = server.bind().await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = server.shutdown_token();
        tokio::spawn(server.serve(listener));
        Self { url, stop }
    }

    /// `acteon ARGS` against this server.
    async fn run(&self, args: &[&str]) -> Run {
        run(command(&self.url, args), None).await
    }

    /// `acteon ARGS` with `input` on stdin.
    async fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        run(command(&self.url, args), Some(input)).await
    }

    /// `acteon ARGS`, left running.
    fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(command(&self.url, args))
    }

    async fn create_topic(&self, name: &str, partitions: u32) {
        let partitions = partitions.to_string();
        self.run(&["topics", "create", name, "--partitions", &partitions])
            .await
            .success();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn command(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_acteon"));
    command
        .args(args)
        .env("ACTEON_URL", url)
        // Whatever the machine has set must not reach the tests.
        .env_remove("ACTEON_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A finished run.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit code 0; the run, for more checks.
    #[track_caller]
    fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    /// Asserts exit code `code`.
    #[track_caller]
    fn fails_with(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {self:#?}"))
    }

    /// Stdout's lines, each one JSON value.
    #[track_caller]
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

async fn run(mut command: Command, input: Option<&str>) -> Run {
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("start acteon");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("write stdin");
        // Closing stdin ends the input.
        drop(stdin);
    }
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("acteon finished in time")
        .expect("acteon ran");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// A run that goes on (tail, audit --follow), read line by line.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("start acteon");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        Self {
            child,
            stdout,
            stderr,
        }
    }

    async fn next_line(&mut self) -> String {
        match tokio::time::timeout(PATIENCE, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!("no line on stdout in time: {other:?}"),
        }
    }

    /// Reads stderr up to a line that contains `needle`.
    async fn wait_stderr(&mut self, needle: &str) -> String {
        let wait = async {
            while let Some(line) = self.stderr.next_line().await.expect("read stderr") {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("stderr ended before {needle:?}");
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} on stderr in time"))
    }

    /// Waits for the process to end by itself: its code and the rest of
    /// stderr.
    async fn finish(mut self) -> Run {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("ends in time")
            .expect("wait");
        let mut stderr = String::new();
        while let Ok(Some(line)) = self.stderr.next_line().await {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        Run {
            code: status.code(),
            stdout: String::new(),
            stderr,
        }
    }

    /// Kills the process by its pid and waits until it is gone.
    async fn kill(mut self) {
        let pid = self.child.id().expect("still running");
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(killed.success());
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("gone in time")
            .expect("wait");
        assert!(!status.success());
    }
}

/// Polls `check` until it returns something, failing after [`PATIENCE`].
async fn eventually<T, F>(what: &str, mut check: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A server with auth on, configured by the TOML `keys` (whole
/// `[[auth.keys]]` tables) through the server's own configuration loader.
async fn auth_server(keys: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acteon.toml");
    std::fs::write(&path, format!("[auth]\nenabled = true\n\n{keys}")).unwrap();
    let cli = ServerCli {
        config: Some(path),
        ..ServerCli::default()
    };
    let config = Config::load_from(&cli, HashMap::new()).expect("the key's TOML loads");
    (TestServer::start_with(config).await, dir)
}

#[tokio::test]
async fn topics_are_created_listed_and_removed() {
    let server = TestServer::start().await;
    let created = server
        .run(&[
            "topics",
            "create",
            "agents",
            "demo",
            "inbox",
            "--partitions",
            "3",
        ])
        .await
        .success();
    let row = created.stdout.lines().nth(1).expect("a row");
    assert!(row.starts_with("agents.demo.inbox "), "{created:#?}");
    assert_eq!(row.split_whitespace().nth(1), Some("3"), "{created:#?}");

    let other = server
        .run(&[
            "topics",
            "create",
            "agents.demo.outbox",
            "--retention-ms",
            "60000",
            "--json",
        ])
        .await
        .success()
        .json();
    assert_eq!(other["kafka_name"], "agents.demo.outbox");
    assert_eq!(other["partitions"], 1);
    assert_eq!(other["retention_ms"], 60000);

    let duplicate = server
        .run(&["topics", "create", "agents.demo.inbox"])
        .await
        .fails_with(1);
    assert!(
        duplicate.stderr.contains("409") && duplicate.stderr.contains("already exists"),
        "{duplicate:#?}"
    );

    let table = server.run(&["topics", "ls"]).await.success();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{table:#?}");
    assert!(lines[0].starts_with("TOPIC") && lines[0].contains("PARTITIONS"));
    assert!(lines[1].starts_with("agents.demo.inbox "), "{table:#?}");
    assert!(lines[2].contains("60000"), "{table:#?}");

    server
        .run(&["topics", "create", "agents", "globex", "inbox"])
        .await
        .success();
    let listed = server
        .run(&["--json", "topics", "ls", "--tenant", "demo"])
        .await
        .success()
        .json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|topic| topic["kafka_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["agents.demo.inbox", "agents.demo.outbox"]);

    let removed = server
        .run(&["topics", "rm", "agents.demo.inbox"])
        .await
        .success();
    assert_eq!(removed.stdout.trim(), "deleted agents.demo.inbox");
    let left = server
        .run(&["topics", "ls", "--json"])
        .await
        .success()
        .json();
    assert_eq!(left.as_array().unwrap().len(), 2, "{left}");
    let again = server
        .run(&["topics", "rm", "agents.demo.inbox"])
        .await
        .fails_with(1);
    assert!(again.stderr.contains("404"), "{again:#?}");

    // Two words are neither a Kafka name nor three fragments.
    let usage = server
        .run(&["topics", "create", "agents", "demo"])
        .await
        .fails_with(2);
    assert!(usage.stderr.contains("NAMESPACE.TENANT.NAME"), "{usage:#?}");
}

#[tokio::test]
async fn one_payload_is_published_with_its_key_and_headers() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.inbox", 4).await;
    let published = server
        .run(&[
            "publish",
            "agents.demo.inbox",
            "--key",
            "task-1",
            "-H",
            "x-trace-id=abc",
            "--header",
            "origin=cli",
            r#"{"seq":1}"#,
        ])
        .await
        .success();
    let words: Vec<&str> = published.stdout.split_whitespace().collect();
    assert_eq!(
        words[..5],
        ["produced", "to", "agents.demo.inbox", "partition", words[4]],
        "{published:#?}"
    );
    let receipt = server
        .run(&[
            "publish",
            "agents.demo.inbox",
            "--key",
            "task-1",
            "2",
            "--json",
        ])
        .await
        .success()
        .json();
    assert_eq!(receipt["topic"], "agents.demo.inbox");
    assert_eq!(
        receipt["partition"].to_string(),
        words[4],
        "same key, same partition"
    );
    assert_eq!(receipt["offset"], 1);

    let tail = server
        .run(&[
            "tail",
            "agents.demo.inbox",
            "--from",
            "earliest",
            "-n",
            "2",
            "--json",
        ])
        .await
        .success();
    let records = tail.json_lines();
    assert_eq!(records.len(), 2, "{tail:#?}");
    assert_eq!(records[0]["key"], "task-1");
    assert_eq!(records[0]["payload"], json!({ "seq": 1 }));
    assert_eq!(
        records[0]["headers"],
        json!({ "x-trace-id": "abc", "origin": "cli" })
    );
    assert_eq!(records[1]["payload"], json!(2));
    assert_eq!(records[1]["offset"], receipt["offset"]);
}

#[tokio::test]
async fn ndjson_from_stdin_is_published_and_counted() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.bulk", 2).await;
    server
        .run(&[
            "silences",
            "add",
            "--tenant",
            "demo",
            "--condition",
            r#"payload.kind == "noise""#,
            "--duration",
            "1h",
            "--comment",
            "drop noise",
        ])
        .await
        .success();

    let mut input = String::new();
    for seq in 0..200 {
        input.push_str(&format!("{{\"seq\":{seq}}}\n"));
        if seq % 50 == 0 {
            input.push_str("{\"kind\":\"noise\"}\n\n");
        }
    }
    let summary = server
        .run_with_input(
            &["publish", "agents.demo.bulk", "-", "--concurrency", "8"],
            &input,
        )
        .await
        .success();
    assert_eq!(
        summary.stdout.trim(),
        "published 200, suppressed 4, failed 0",
        "{summary:#?}"
    );

    let envelopes = concat!(
        r#"{"payload":{"n":1},"key":"a","headers":{"h":"1"}}"#,
        "\n",
        r#"{"payload":{"n":2},"key":null}"#,
        "\n",
        r#"{"payload":{"kind":"noise"}}"#,
        "\n",
    );
    let summary = server
        .run_with_input(
            &[
                "publish",
                "agents.demo.bulk",
                "--envelope",
                "--key",
                "fallback",
                "-",
                "--json",
            ],
            envelopes,
        )
        .await
        .success()
        .json();
    assert_eq!(
        summary,
        json!({ "published": 2, "suppressed": 1, "failed": 0, "errors": [] })
    );
    let tail = server
        .run(&[
            "tail",
            "agents.demo.bulk",
            "--from",
            "earliest",
            "-n",
            "202",
            "--json",
        ])
        .await
        .success();
    let keyed: HashMap<String, Value> = tail
        .json_lines()
        .into_iter()
        .filter_map(|record| Some((record["key"].as_str()?.to_owned(), record)))
        .collect();
    assert_eq!(keyed["a"]["headers"], json!({ "h": "1" }));
    assert_eq!(keyed["fallback"]["payload"], json!({ "n": 2 }));
}

#[tokio::test]
async fn a_bad_line_is_reported_with_its_number_and_fails_the_run() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.bulk", 1).await;
    let run = server
        .run_with_input(
            &["publish", "agents.demo.bulk", "-"],
            "{\"seq\":1}\n2\n{nope\n\n\"five\"\n",
        )
        .await
        .fails_with(1);
    assert_eq!(run.stdout.trim(), "published 3, suppressed 0, failed 1");
    assert!(run.stderr.contains("line 3: not JSON"), "{run:#?}");
    assert!(run.stderr.contains("1 of 4 records failed"), "{run:#?}");

    let run = server
        .run_with_input(
            &["publish", "agents.demo.bulk", "--envelope", "-", "--json"],
            "{\"payload\":1}\n{\"seq\":2}\n",
        )
        .await
        .fails_with(1);
    let summary = run.json();
    assert_eq!(summary["published"], 1);
    assert_eq!(summary["failed"], 1);
    assert_eq!(summary["errors"][0]["line"], 2);
    let error = summary["errors"][0]["error"].as_str().unwrap();
    assert!(error.contains("missing field `payload`"), "{error}");

    // A record the server refuses is a failed line too, with the reason.
    let run = server
        .run_with_input(
            &["publish", "agents.demo.bulk", "--envelope", "-"],
            "{\"payload\":1}\n{\"payload\":2,\"headers\":{\"acteon.x\":\"1\"}}\n",
        )
        .await
        .fails_with(1);
    assert!(run.stderr.contains("line 2: 400"), "{run:#?}");
    assert!(run.stderr.contains("acteon."), "{run:#?}");
}

#[tokio::test]
async fn tail_prints_records_as_they_arrive() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.feed", 2).await;
    for (key, seq) in [("k1", 1), ("k2", 2)] {
        server
            .run(&[
                "publish",
                "agents.demo.feed",
                "--key",
                key,
                "-H",
                "x-trace-id=t",
                &format!("{{\"seq\":{seq}}}"),
            ])
            .await
            .success();
    }
    let mut tail = server.spawn(&["tail", "agents.demo.feed", "--from", "earliest"]);
    let started = tail
        .wait_stderr("tailing agents.demo.feed as acteon-tail-")
        .await;
    assert!(started.contains("(shared, from earliest)"), "{started}");
    let mut lines = vec![tail.next_line().await, tail.next_line().await];
    lines.sort_by_key(|line| line.contains("key=k2"));
    assert!(
        lines[0].contains(" key=k1 [x-trace-id=t] {\"seq\":1}"),
        "{lines:?}"
    );
    assert!(lines[1].contains(" key=k2 "), "{lines:?}");
    // `partition/offset` after the time.
    let position = lines[0].split_whitespace().nth(1).unwrap();
    assert!(position.ends_with("/0"), "{lines:?}");

    // Assigned before the first record, so what is published now arrives.
    server
        .run(&["publish", "agents.demo.feed", "--key", "k3", r#""live""#])
        .await
        .success();
    let live = tail.next_line().await;
    assert!(live.contains(" key=k3 [] \"live\""), "{live}");
    tail.kill().await;

    // Two tails with no --subscription each get every record.
    let (one, two) = tokio::join!(
        server.run(&[
            "tail",
            "agents.demo.feed",
            "--from",
            "earliest",
            "-n",
            "3",
            "--json"
        ]),
        server.run(&[
            "tail",
            "agents.demo.feed",
            "--from",
            "earliest",
            "-n",
            "3",
            "--json"
        ]),
    );
    for run in [one.success(), two.success()] {
        let mut keys: Vec<String> = run
            .json_lines()
            .iter()
            .map(|record| record["key"].as_str().unwrap().to_owned())
            .collect();
        keys.sort();
        assert_eq!(keys, ["k1", "k2", "k3"]);
    }
}

#[tokio::test]
async fn broadcast_tails_with_one_id_both_get_every_record() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.news", 2).await;
    let args = [
        "tail",
        "agents.demo.news",
        "--subscription",
        "screens",
        "--mode",
        "broadcast",
        "--json",
    ];
    let mut one = server.spawn(&args);
    let mut two = server.spawn(&args);
    for tail in [&mut one, &mut two] {
        tail.wait_stderr("assigned partitions").await;
    }
    server
        .run(&["publish", "agents.demo.news", r#"{"headline":1}"#])
        .await
        .success();
    for tail in [&mut one, &mut two] {
        let record: Value = serde_json::from_str(&tail.next_line().await).unwrap();
        assert_eq!(record["payload"], json!({ "headline": 1 }));
    }
    one.kill().await;
    two.kill().await;
}

#[tokio::test]
async fn durable_subscriptions_are_created_listed_shown_and_removed() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.jobs", 3).await;
    let created = server
        .run(&[
            "subs",
            "create",
            "agents",
            "demo",
            "workers",
            "--topic",
            "jobs",
            "--from",
            "earliest",
            "--ack-deadline-ms",
            "5000",
            "--max-deliveries",
            "3",
            "--backoff-ms",
            "100,200",
            "--ordering",
            "key",
        ])
        .await
        .success();
    assert_eq!(
        created.stdout.trim(),
        "created agents.demo.workers on agents.demo.jobs (from earliest)"
    );
    let duplicate = server
        .run(&["subs", "create", "agents.demo.workers", "--topic", "jobs"])
        .await
        .fails_with(1);
    assert!(duplicate.stderr.contains("409"), "{duplicate:#?}");

    let table = server.run(&["subs", "ls"]).await.success();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{table:#?}");
    assert!(lines[0].starts_with("SUBSCRIPTION"));
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row,
        [
            "agents.demo.workers",
            "agents.demo.jobs",
            "earliest",
            "5000",
            "3",
            "key",
            "agents.demo.jobs-dlq"
        ]
    );
    let listed = server
        .run(&["subs", "ls", "--json", "--topic", "agents.demo.jobs"])
        .await
        .success()
        .json();
    assert_eq!(listed[0]["backoff_ms"], json!([100, 200]));

    let shown = server
        .run(&["subs", "show", "agents.demo.workers"])
        .await
        .success();
    assert!(shown.stdout.contains("ack deadline ms  5000"), "{shown:#?}");
    assert!(shown.stdout.contains("PARTITION"), "{shown:#?}");
    let view = server
        .run(&["--json", "subs", "show", "agents", "demo", "workers"])
        .await
        .success()
        .json();
    assert_eq!(view["partitions"].as_array().unwrap().len(), 3, "{view}");
    assert_eq!(view["consumers"], 0);

    let removed = server
        .run(&["subs", "rm", "agents", "demo", "workers"])
        .await
        .success();
    assert_eq!(removed.stdout.trim(), "deleted agents.demo.workers");
    let gone = server
        .run(&["subs", "show", "agents.demo.workers"])
        .await
        .fails_with(1);
    assert!(gone.stderr.contains("404"), "{gone:#?}");
    let empty = server.run(&["subs", "ls", "--json"]).await.success().json();
    assert_eq!(empty, json!([]));
}

#[tokio::test]
async fn silences_are_added_listed_and_ended() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.alerts", 1).await;
    let silence = server
        .run(&[
            "silences",
            "add",
            "--tenant",
            "demo",
            "--topic",
            "alerts",
            "--duration",
            "30m",
            "--comment",
            "maintenance window",
            "--json",
        ])
        .await
        .success()
        .json();
    let id = silence["id"].as_str().unwrap().to_owned();
    assert_eq!(silence["topic"], "alerts");

    let table = server.run(&["silences", "ls"]).await.success();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{table:#?}");
    assert!(lines[1].starts_with(&id), "{table:#?}");
    assert!(lines[1].ends_with("maintenance window"), "{table:#?}");

    let suppressed = server
        .run(&["publish", "agents.demo.alerts", r#"{"disk":"full"}"#])
        .await
        .success();
    assert_eq!(
        suppressed.stdout.trim(),
        format!("suppressed by silence {id}: nothing was produced")
    );

    let ended = server.run(&["silences", "rm", &id]).await.success();
    assert_eq!(ended.stdout.trim(), format!("ended silence {id}"));
    let active = server
        .run(&["silences", "ls", "--json"])
        .await
        .success()
        .json();
    assert_eq!(active, json!([]));
    let all = server
        .run(&["silences", "ls", "--all", "--json"])
        .await
        .success()
        .json();
    assert_eq!(all[0]["id"], id.as_str());
    server
        .run(&["publish", "agents.demo.alerts", r#"{"disk":"full"}"#])
        .await
        .success();

    let again = server.run(&["silences", "rm", &id]).await.fails_with(1);
    assert!(again.stderr.contains("404"), "{again:#?}");
    // Neither --duration nor --until.
    server
        .run(&["silences", "add", "--tenant", "demo", "--comment", "x"])
        .await
        .fails_with(2);
    let past = server
        .run(&[
            "silences",
            "add",
            "--tenant",
            "demo",
            "--until",
            "2000-01-01T00:00:00Z",
            "--comment",
            "too late",
        ])
        .await
        .fails_with(1);
    assert!(past.stderr.contains("not in the future"), "{past:#?}");
}

#[tokio::test]
async fn audit_shows_publishes_and_follows_new_ones() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.trail", 1).await;
    for key in ["a", "b", "c"] {
        server
            .run(&["publish", "agents.demo.trail", "--key", key, "{}"])
            .await
            .success();
    }
    let records = eventually("three audit records", || async {
        let run = server
            .run(&["audit", "--topic", "agents.demo.trail", "--json"])
            .await
            .success();
        let records = run.json();
        (records.as_array().unwrap().len() == 3).then_some(records)
    })
    .await;
    let keys: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["c", "b", "a"], "newest first");
    assert!(records[0]["id"].as_u64() > records[1]["id"].as_u64());
    assert_eq!(records[0]["outcome"], "produced");

    let table = server
        .run(&["audit", "--tenant", "demo", "--limit", "2"])
        .await
        .success();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{table:#?}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("OUTCOME"));
    assert!(
        lines[1].contains("produced") && lines[1].contains(" c "),
        "{table:#?}"
    );
    let none = server
        .run(&["audit", "--outcome", "denied", "--json"])
        .await
        .success()
        .json();
    assert_eq!(none, json!([]));
    server
        .run(&["audit", "--outcome", "lost"])
        .await
        .fails_with(2);

    let mut follow = server.spawn(&[
        "audit",
        "--follow",
        "--json",
        "--topic",
        "agents.demo.trail",
        "--limit",
        "1",
        "--interval",
        "100ms",
    ]);
    let last: Value = serde_json::from_str(&follow.next_line().await).unwrap();
    assert_eq!(last["key"], "c");
    for key in ["d", "e"] {
        server
            .run(&["publish", "agents.demo.trail", "--key", key, "{}"])
            .await
            .success();
    }
    let d: Value = serde_json::from_str(&follow.next_line().await).unwrap();
    let e: Value = serde_json::from_str(&follow.next_line().await).unwrap();
    assert_eq!(
        (d["key"].as_str(), e["key"].as_str()),
        (Some("d"), Some("e"))
    );
    assert!(d["id"].as_u64() < e["id"].as_u64(), "oldest first");
    follow.kill().await;
}

#[tokio::test]
async fn keys_new_makes_a_key_the_server_accepts() {
    // No server: an address nothing listens on.
    let nowhere = "http://127.0.0.1:1";
    let made = run(
        command(
            nowhere,
            &[
                "keys",
                "new",
                "--id",
                "planner",
                "--namespace",
                "agents",
                "--tenant",
                "demo",
                "--ops",
                "publish,subscribe,manage",
            ],
        ),
        None,
    )
    .await
    .success();
    let secret = made
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("secret: "))
        .expect("a secret line")
        .to_owned();
    assert_eq!(secret.len(), 64, "{made:#?}");
    let toml = &made.stdout[made.stdout.find("[[auth.keys]]").expect("a key table")..];
    assert!(!toml.contains(&secret), "the secret stays out of the TOML");
    assert!(
        toml.contains(&format!("key_sha256 = \"{}\"", hash(&secret))),
        "{toml}"
    );

    let other = run(command(nowhere, &["keys", "new", "--json"]), None)
        .await
        .success()
        .json();
    let other_secret = other["secret"].as_str().unwrap();
    assert_ne!(other_secret, secret);
    assert_eq!(other["key_sha256"].as_str().unwrap(), hash(other_secret));
    assert_eq!(other["grants"], json!([]));

    let (server, _dir) = auth_server(toml).await;
    server
        .run(&[
            "--api-key",
            &secret,
            "topics",
            "create",
            "agents.demo.inbox",
        ])
        .await
        .success();
    let mut publish = command(&server.url, &["publish", "agents.demo.inbox", "1"]);
    publish.env("ACTEON_API_KEY", &secret);
    run(publish, None).await.success();
    // Its grant is for tenant demo only.
    let foreign = server
        .run(&[
            "--api-key",
            &secret,
            "topics",
            "create",
            "agents.globex.inbox",
        ])
        .await
        .fails_with(1);
    assert!(foreign.stderr.contains("403"), "{foreign:#?}");
    assert!(!foreign.stderr.contains(&secret));
}

#[tokio::test]
async fn without_a_valid_key_an_auth_server_answers_401() {
    let keys = format!(
        "[[auth.keys]]\nid = \"root\"\nkey_sha256 = \"{}\"\n\
         grants = [{{ namespace = \"*\", tenant = \"*\", ops = [\"admin\"] }}]\n",
        hash("root-secret")
    );
    let (server, _dir) = auth_server(&keys).await;
    let anonymous = server.run(&["topics", "ls"]).await.fails_with(1);
    assert!(
        anonymous.stderr.contains("401") && anonymous.stderr.contains("an API key is required"),
        "{anonymous:#?}"
    );
    let wrong = server
        .run(&["--api-key", "not-the-secret", "topics", "ls"])
        .await
        .fails_with(1);
    assert!(wrong.stderr.contains("401: unknown API key"), "{wrong:#?}");
    assert!(!wrong.stderr.contains("not-the-secret"), "{wrong:#?}");
    server
        .run(&["--api-key", "root-secret", "topics", "ls"])
        .await
        .success();

    // `--help` names the variable but never shows its value.
    let mut help = command(&server.url, &["--help"]);
    help.env("ACTEON_API_KEY", "root-secret");
    let help = run(help, None).await.success();
    assert!(help.stdout.contains("ACTEON_API_KEY"), "{help:#?}");
    assert!(!help.stdout.contains("root-secret"), "{help:#?}");
}

#[tokio::test]
async fn a_refusal_prints_the_servers_reason() {
    let server = TestServer::start().await;
    let run = server
        .run(&["publish", "agents.demo.nowhere", r#"{"seq":1}"#])
        .await
        .fails_with(1);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("404: topic agents.demo.nowhere does not exist"),
        "{run:#?}"
    );

    // Every line of a batch would meet the same refusal: it stops.
    let input: String = (0..1000).map(|seq| format!("{seq}\n")).collect();
    let batch = server
        .run_with_input(
            &["publish", "agents.demo.nowhere", "-", "--concurrency", "4"],
            &input,
        )
        .await
        .fails_with(1);
    assert!(batch.stderr.contains("stopped at line"), "{batch:#?}");
    let failed: u64 = batch
        .stdout
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // At most the batches already in flight (4 of 100) were sent.
    assert!(failed <= 400, "{batch:#?}");
}

#[tokio::test]
async fn usage_errors_and_an_unreachable_server_have_their_own_codes() {
    let server = TestServer::start().await;
    for args in [
        &["publish", "agents.demo.inbox", "not json"][..],
        &["publish", "agents.demo.inbox", "-H", "no-equals", "1"],
        &["publish", "agents.demo", "1"],
        &["tail", "agents.demo.inbox", "--from", "middle"],
        &["subs", "show", "agents", "demo"],
        &["keys", "new", "--tenant", "a.b"],
        &["publish", "agents.demo.inbox", "--envelope", "{}"],
    ] {
        server.run(args).await.fails_with(2);
    }
    let bad_url = run(command("not a url", &["topics", "ls"]), None)
        .await
        .fails_with(2);
    assert!(bad_url.stderr.contains("base URL"), "{bad_url:#?}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = run(
        command(&format!("http://127.0.0.1:{port}"), &["topics", "ls"]),
        None,
    )
    .await
    .fails_with(3);
    assert!(
        unreachable.stderr.contains("transport error"),
        "{unreachable:#?}"
    );
}

#[tokio::test]
async fn an_overlong_line_fails_alone_and_is_never_held() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.bulk", 1).await;
    // Over the CLI's 8 MiB line limit, with no newline for a while.
    let long = format!("\"{}\"", "x".repeat(9 * 1024 * 1024));
    let input = format!("1\n{long}\n3\n");
    let run = server
        .run_with_input(&["publish", "agents.demo.bulk", "-"], &input)
        .await
        .fails_with(1);
    assert_eq!(run.stdout.trim(), "published 2, suppressed 0, failed 1");
    assert!(run.stderr.contains("line 2: longer than"), "{run:#?}");
}

#[tokio::test]
async fn throttled_lines_are_tried_again_until_the_quota_lets_them_through() {
    let config = Config {
        quotas: vec![acteon_server::pipeline::QuotaConfig {
            tenant: "demo".into(),
            namespace: None,
            topic: None,
            max_per_second: 4,
            burst: Some(1),
        }],
        ..Config::default()
    };
    let server = TestServer::start_with(config).await;
    server.create_topic("agents.demo.bulk", 1).await;
    let input: String = (0..6).map(|seq| format!("{{\"seq\":{seq}}}\n")).collect();
    let run = server
        .run_with_input(
            &["publish", "agents.demo.bulk", "-", "--concurrency", "3"],
            &input,
        )
        .await
        .success();
    assert_eq!(run.stdout.trim(), "published 6, suppressed 0, failed 0");
}

#[tokio::test]
async fn a_tail_that_gets_fewer_records_than_asked_fails() {
    let server = TestServer::start().await;
    server.create_topic("agents.demo.short", 1).await;
    server
        .run(&["publish", "agents.demo.short", "1"])
        .await
        .success();
    let mut tail = server.spawn(&["tail", "agents.demo.short", "--from", "earliest", "-n", "5"]);
    tail.next_line().await;
    server
        .run(&["topics", "rm", "agents.demo.short"])
        .await
        .success();
    let run = tail.finish().await.fails_with(1);
    assert!(
        run.stderr.contains("ended the stream after 1 of 5 records"),
        "{run:#?}"
    );
}

#[tokio::test]
async fn schemas_are_registered_checked_and_bound_to_topics() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let strict = dir.path().join("strict.json");
    let loose = dir.path().join("loose.json");
    std::fs::write(&strict, r#"{"type": "object", "required": ["tool"]}"#).unwrap();
    std::fs::write(&loose, r#"{"type": "object"}"#).unwrap();
    let (strict, loose) = (strict.to_str().unwrap(), loose.to_str().unwrap());

    let registered = server
        .run(&["schemas", "register", "agents.demo.calls", strict])
        .await
        .success();
    assert_eq!(
        registered.stdout.trim(),
        "registered agents.demo.calls version 1"
    );
    let again = server
        .run_with_input(
            &["schemas", "register", "agents.demo.calls", "-"],
            r#"{"required": ["tool"], "type": "object"}"#,
        )
        .await
        .success();
    assert_eq!(
        again.stdout.trim(),
        "already registered agents.demo.calls version 1"
    );
    let listed = server
        .run(&["schemas", "ls", "agents", "demo"])
        .await
        .success();
    assert_eq!(listed.stdout.trim(), "calls");
    let shown = server
        .run(&["schemas", "show", "agents.demo.calls", "--json"])
        .await
        .success()
        .json();
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["schema"]["required"], json!(["tool"]));

    server
        .run(&["schemas", "config", "agents.demo.calls", "--set", "forward"])
        .await
        .success();
    let mode = server
        .run(&["schemas", "config", "agents.demo.calls"])
        .await
        .success();
    assert_eq!(mode.stdout.trim(), "forward");
    let refused = server
        .run(&["schemas", "check", "agents.demo.calls", loose])
        .await
        .fails_with(1);
    assert!(refused.stdout.contains("forward:"), "{refused:#?}");
    assert!(refused.stderr.contains("not compatible"), "{refused:#?}");
    server
        .run(&[
            "schemas",
            "config",
            "agents.demo.calls",
            "--set",
            "sideways",
        ])
        .await
        .fails_with(2);
    server
        .run(&["schemas", "register", "agents.demo.calls", "/no/such/file"])
        .await
        .fails_with(2);

    server
        .run(&[
            "topics",
            "create",
            "agents.demo.calls",
            "--schema",
            "calls:1",
        ])
        .await
        .success();
    let table = server.run(&["topics", "ls"]).await.success();
    assert!(table.stdout.contains("calls:1"), "{table:#?}");
    let invalid = server
        .run(&["publish", "agents.demo.calls", r#"{"no": "tool"}"#])
        .await
        .fails_with(1);
    assert!(invalid.stderr.contains("400"), "{invalid:#?}");
    assert!(invalid.stderr.contains("\"tool\""), "{invalid:#?}");
    let in_use = server
        .run(&["schemas", "rm", "agents.demo.calls", "1"])
        .await
        .fails_with(1);
    assert!(in_use.stderr.contains("409"), "{in_use:#?}");

    server
        .run(&["topics", "unbind", "agents.demo.calls"])
        .await
        .success();
    server
        .run(&["publish", "agents.demo.calls", r#"{"no": "tool"}"#])
        .await
        .success();
    let bound = server
        .run(&["topics", "bind", "agents.demo.calls", "calls", "--json"])
        .await
        .success()
        .json();
    assert_eq!(
        bound["schema"],
        json!({ "subject": "calls", "version": "latest" })
    );
    server
        .run(&["publish", "agents.demo.calls", r#"{"tool": "search"}"#])
        .await
        .success();
}
