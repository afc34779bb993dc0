//! The servers under test run as child processes of the benchmark (the
//! benchmark binary started again in a server role), so that their memory
//! and CPU time can be read apart from the load generator's.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use acteon_bus::ProduceFigures;
use acteon_server::Config;
use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::setup::API_KEY;

/// The environment variable that carries an Acteon server's configuration,
/// as JSON, to the `serve-acteon` role.
pub const CONFIG_ENV: &str = "ACTEON_BENCH_CONFIG";

/// Linux's `USER_HZ`, the unit of `/proc/<pid>/stat` CPU times; 100 on
/// every architecture Rust targets.
const CLOCK_TICKS_PER_SECOND: u64 = 100;

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a scrape of a server's metrics may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker's process, when the benchmark is told it: on two shared
/// cores the broker's CPU per record is part of what a target costs, and
/// it differs with how the records reach it.
static BROKER_PID: OnceLock<u32> = OnceLock::new();

/// Reads the CPU of process `pid`, the broker, beside every server's.
pub fn watch_broker(pid: u32) -> anyhow::Result<()> {
    cpu_time_of(&pid.to_string()).with_context(|| format!("the broker's process {pid}"))?;
    BROKER_PID
        .set(pid)
        .map_err(|_| anyhow!("the broker is watched already"))
}

/// A server started by the benchmark; killed when dropped, and gone when
/// the benchmark is, however it ends (see [`exit_with_parent`]).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Its end of the pipe the server watches for the benchmark's exit.
    _lifeline: ChildStdin,
    pid: u32,
    pub address: SocketAddr,
    pub base_url: String,
    /// For an Acteon server on Kafka, whose metrics count its produce
    /// requests: the client that reads them.
    metrics: Option<reqwest::Client>,
    /// The state store's directory, removed with the process.
    _data_dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// An Acteon server with `config`, its state in a new temporary directory.
    pub async fn acteon(mut config: Config) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir().context("creating the state directory")?;
        config.state.data_dir = data_dir.path().to_owned();
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let json = serde_json::to_string(&config)?;
        let mut server = Self::spawn(
            "serve-acteon",
            &[(CONFIG_ENV, json.as_str())],
            Some(data_dir),
        )
        .await?;
        if config.bus.kafka.is_some() {
            server.metrics = Some(
                reqwest::Client::builder()
                    .timeout(SCRAPE_TIMEOUT)
                    .build()
                    .context("building the metrics client")?,
            );
        }
        Ok(server)
    }

    /// The bare axum handler that Acteon's HTTP publish is compared with.
    pub async fn bare() -> anyhow::Result<Self> {
        Self::spawn("serve-bare", &[], None).await
    }

    async fn spawn(
        role: &str,
        envs: &[(&str, &str)],
        data_dir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the benchmark binary")?;
        let mut command = Command::new(exe);
        command
            .arg(role)
            .envs(envs.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {role}"))?;
        let pid = child.id().context("the server exited at once")?;
        let lifeline = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let announced = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .with_context(|| {
                format!("{role} did not announce its address in {START_TIMEOUT:?}")
            })??;
        let Some(line) = announced else {
            bail!("{role} exited before listening");
        };
        // Read on, so that a later line never finds the pipe closed.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let address: SocketAddr = line
            .rsplit_once("http://")
            .map(|(_, address)| address.trim())
            .with_context(|| format!("{role} announced {line:?}"))?
            .parse()
            .with_context(|| format!("{role} announced {line:?}"))?;
        Ok(Self {
            child,
            _lifeline: lifeline,
            pid,
            address,
            base_url: format!("http://{address}"),
            metrics: None,
            _data_dir: data_dir,
        })
    }

    /// Resident memory now, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let field = self.status_field("VmRSS")?;
        let kib: u64 = field
            .trim_end_matches("kB")
            .trim()
            .parse()
            .context("VmRSS is not a number")?;
        Ok(kib * 1024)
    }

    /// The server's threads now.
    pub fn threads(&self) -> anyhow::Result<u64> {
        self.status_field("Threads")?
            .parse()
            .context("Threads is not a number")
    }

    /// One field of `/proc/<pid>/status`, trimmed.
    fn status_field(&self, name: &str) -> anyhow::Result<String> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let value = status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("no {name} line in {path}"))?;
        Ok(value.trim().to_owned())
    }

    /// The produce requests its Kafka producer sent so far and the records
    /// in them, from its metrics; `None` but for an Acteon server on Kafka.
    /// The benchmark's key may read the metrics where auth is on.
    pub async fn produce_figures(&self) -> anyhow::Result<Option<ProduceFigures>> {
        let Some(client) = &self.metrics else {
            return Ok(None);
        };
        let text = client
            .get(format!("{}/metrics", self.base_url))
            .bearer_auth(API_KEY)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("scraping the server's metrics")?
            .text()
            .await?;
        let sample = |series: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        };
        let figures = sample("acteon_kafka_produce_requests_total")
            .zip(sample("acteon_kafka_produced_records_total"))
            .map(|(requests, records)| ProduceFigures { requests, records })
            .context("the server's metrics have no counts of produce requests")?;
        Ok(Some(figures))
    }

    /// CPU time the server has used so far, user and system.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(&self.pid.to_string())
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("stopping the server")
    }
}

/// Ends this process (a server role) when its standard input closes: the
/// benchmark holds the other end, so a benchmark killed without a chance to
/// stop its servers does not leave them running.
pub fn exit_with_parent() {
    tokio::spawn(async {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while let Ok(1..) = stdin.read(&mut buffer).await {}
        std::process::exit(0);
    });
}

/// CPU time this process (the load generator) has used so far.
fn own_cpu_time() -> anyhow::Result<Duration> {
    cpu_time_of("self")
}

fn cpu_time_of(pid: &str) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_time(&stat).with_context(|| format!("parsing {path}"))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_cpu_time(stat: &str) -> anyhow::Result<Duration> {
    let (_, after_name) = stat.rsplit_once(')').context("no command name")?;
    let mut fields = after_name.split_whitespace().skip(11);
    let mut ticks =
        || -> anyhow::Result<u64> { Ok(fields.next().context("too few fields")?.parse::<u64>()?) };
    let total = ticks()? + ticks()?;
    Ok(Duration::from_millis(total * 1000 / CLOCK_TICKS_PER_SECOND))
}

/// CPU time of this process, a server and the broker, read at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    at: tokio::time::Instant,
    generator: Duration,
    server: Option<Duration>,
    broker: Option<Duration>,
}

/// CPU used between two readings, in cores (1.0 = one core busy).
#[derive(Debug, Clone, Copy)]
pub struct CoresUsed {
    pub generator: f64,
    pub server: Option<f64>,
    /// When the broker is watched ([`watch_broker`]).
    pub broker: Option<f64>,
}

impl CpuReading {
    pub fn now(server: Option<&ServerProcess>) -> anyhow::Result<Self> {
        Ok(Self {
            at: tokio::time::Instant::now(),
            generator: own_cpu_time()?,
            server: server.map(ServerProcess::cpu_time).transpose()?,
            broker: BROKER_PID
                .get()
                .map(|pid| cpu_time_of(&pid.to_string()))
                .transpose()?,
        })
    }

    /// Over the wall time between the readings, not the planned span: a
    /// timer can wake late on a busy machine.
    pub fn cores_since(&self, earlier: &Self) -> CoresUsed {
        let wall = (self.at - earlier.at).as_secs_f64().max(f64::EPSILON);
        let cores = |now: Duration, then: Duration| now.saturating_sub(then).as_secs_f64() / wall;
        let both = |now: Option<Duration>, then: Option<Duration>| {
            now.zip(then).map(|(now, then)| cores(now, then))
        };
        CoresUsed {
            generator: cores(self.generator, earlier.generator),
            server: both(self.server, earlier.server),
            broker: both(self.broker, earlier.broker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_user_plus_system_ticks() {
        let stat = "4242 (bus (bench)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 2000 300";
        assert_eq!(parse_cpu_time(stat).unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        own_cpu_time().unwrap();
    }
}
