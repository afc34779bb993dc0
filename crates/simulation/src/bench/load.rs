//! A closed-loop HTTP load generator: C keep-alive connections, each
//! sending its next request when the previous response has been read.
//! Plain hyper, so the generator spends as little CPU per request as an
//! HTTP client can.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use acteon_bus::{ProduceFigures, ProduceTally};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::process::{CpuReading, ServerProcess};
use super::stats::Latencies;

/// How long past the window a request may take before the server counts as
/// stalled and the run fails.
const STALLED: Duration = Duration::from_secs(30);

/// What to send: `POST path` with one of `bodies`, round robin.
#[derive(Debug, Clone)]
pub struct HttpLoad {
    pub address: SocketAddr,
    pub path: Arc<str>,
    pub bearer: Option<String>,
    pub bodies: Arc<[Bytes]>,
    /// Records in each body: above one, a body is a batch, and each
    /// receipt in its answer counts as one record completed.
    pub records_per_request: u64,
    /// Sends every request with an `Idempotency-Key` of its own.
    pub idempotency_keys: bool,
}

/// How long to drive the load, and over how many connections.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    pub concurrency: usize,
    /// Requests before this are not counted.
    pub warm_up: Duration,
    pub measure: Duration,
}

/// What a measured span of load gave.
#[derive(Debug)]
pub struct LoadRun {
    /// Records produced within the measured span: 200 answers, or the
    /// receipts in them for batches.
    pub completed: u64,
    /// Records not produced (warm-up included).
    pub failed: u64,
    pub latencies: Latencies,
    pub measured: Duration,
    /// CPU the server used in the measured span, in cores.
    pub server_cores: Option<f64>,
    /// CPU the generator (this process) used in the measured span, in cores.
    pub generator_cores: f64,
    /// CPU the broker used in the measured span, in cores, when it is
    /// watched.
    pub broker_cores: Option<f64>,
    /// Produce requests sent to the broker in the measured span, and the
    /// records in them, when the producer counts them.
    pub produced: Option<ProduceFigures>,
}

impl LoadRun {
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.measured.as_secs_f64()
    }

    /// Adds a later run of the same target and concurrency.
    pub fn merge(&mut self, other: Self) {
        let (mine, theirs) = (self.measured.as_secs_f64(), other.measured.as_secs_f64());
        let weighted = |a: f64, b: f64| (a * mine + b * theirs) / (mine + theirs).max(f64::EPSILON);
        let both = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| weighted(a, b));
        self.server_cores = both(self.server_cores, other.server_cores);
        self.broker_cores = both(self.broker_cores, other.broker_cores);
        self.produced = self
            .produced
            .zip(other.produced)
            .map(|(a, b)| ProduceFigures {
                requests: a.requests + b.requests,
                records: a.records + b.records,
            });
        self.generator_cores = weighted(self.generator_cores, other.generator_cores);
        self.completed += other.completed;
        self.failed += other.failed;
        self.latencies.merge(&other.latencies);
        self.measured += other.measured;
    }
}

/// The instants a run starts counting and stops.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn after(shape: LoadShape) -> Self {
        let start = Instant::now() + shape.warm_up;
        Self {
            start,
            end: start + shape.measure,
        }
    }

    pub fn counts(&self, sent: Instant, done: Instant) -> bool {
        sent >= self.start && done <= self.end
    }
}

/// Tallies of one connection or producer task.
#[derive(Debug, Default)]
pub struct Tally {
    pub completed: u64,
    pub failed: u64,
    pub latencies: Latencies,
}

impl Tally {
    pub fn add(&mut self, other: Self) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.latencies.merge(&other.latencies);
    }
}

/// Where a run's producer counts its produce requests and their records.
#[derive(Debug, Clone, Copy)]
pub enum ProduceCounts<'a> {
    /// An Acteon server, in its metrics (on Kafka).
    Server(&'a ServerProcess),
    /// A producer in this process.
    Tally(&'a ProduceTally),
}

impl ProduceCounts<'_> {
    async fn read(self) -> anyhow::Result<Option<ProduceFigures>> {
        match self {
            Self::Server(server) => server.produce_figures().await,
            Self::Tally(tally) => Ok(Some(tally.figures())),
        }
    }
}

/// Runs `tasks` (one per unit of concurrency, each ending at the window's
/// end) and measures the CPU that this process and `server` use while the
/// window is open, and what the producer of `counts` sent meanwhile.
pub async fn measure<F>(
    shape: LoadShape,
    server: Option<&ServerProcess>,
    counts: ProduceCounts<'_>,
    task: impl Fn(usize, Window) -> F,
) -> anyhow::Result<LoadRun>
where
    F: Future<Output = anyhow::Result<Tally>> + Send + 'static,
{
    let window = Window::after(shape);
    let tasks: Vec<_> = (0..shape.concurrency)
        .map(|index| tokio::spawn(task(index, window)))
        .collect();
    tokio::time::sleep_until(window.start).await;
    // A scrape of the server's counts is kept out of its CPU reading at
    // both edges.
    let produced_before = counts.read().await?;
    let at_start = CpuReading::now(server)?;
    tokio::time::sleep_until(window.end).await;
    let cores = CpuReading::now(server)?.cores_since(&at_start);
    let produced = counts
        .read()
        .await?
        .zip(produced_before)
        .and_then(|(after, before)| {
            Some(ProduceFigures {
                requests: after.requests.checked_sub(before.requests)?,
                records: after.records.checked_sub(before.records)?,
            })
        });
    let mut total = Tally::default();
    for task in tasks {
        total.add(task.await.context("load task panicked")??);
    }
    Ok(LoadRun {
        completed: total.completed,
        failed: total.failed,
        latencies: total.latencies,
        measured: shape.measure,
        server_cores: cores.server,
        generator_cores: cores.generator,
        broker_cores: cores.broker,
        produced,
    })
}

/// Drives `load` against `server` in the shape given.
pub async fn drive_http(
    load: &HttpLoad,
    shape: LoadShape,
    server: &ServerProcess,
) -> anyhow::Result<LoadRun> {
    // Keys of their own per run: a key seen in an earlier run would be a
    // replay, which costs less than a publish.
    let run: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    measure(
        shape,
        Some(server),
        ProduceCounts::Server(server),
        |index, window| connection(load.clone(), Arc::clone(&run), index, window),
    )
    .await
}

/// One closed-loop client's bookkeeping: request n = `index`, `index + 1`,
/// ... is sent when the previous one was answered, until the window ends;
/// successes inside the window count, with their latencies.
#[derive(Debug)]
pub struct ClosedLoop {
    window: Window,
    next: usize,
    tally: Tally,
}

impl ClosedLoop {
    pub fn new(index: usize, window: Window) -> Self {
        Self {
            window,
            next: index,
            tally: Tally::default(),
        }
    }

    /// The number of the next request and when it is sent, or `None` once
    /// the window has ended.
    pub fn send(&mut self) -> Option<(usize, Instant)> {
        let sent = Instant::now();
        (sent < self.window.end).then(|| {
            self.next += 1;
            (self.next - 1, sent)
        })
    }

    /// Notes the answer to the request sent at `sent`.
    pub fn answered(&mut self, sent: Instant, ok: bool) {
        self.answered_records(sent, u64::from(ok), u64::from(!ok));
    }

    /// Notes the answer to a request of several records sent at `sent`:
    /// `produced` of them were, `failed` were not.
    pub fn answered_records(&mut self, sent: Instant, produced: u64, failed: u64) {
        let done = Instant::now();
        self.tally.failed += failed;
        if self.window.counts(sent, done) {
            self.tally.completed += produced;
            if failed == 0 {
                self.tally.latencies.record(done - sent);
            }
        }
    }

    pub fn tally(self) -> Tally {
        self.tally
    }
}

/// The records an answer says were produced: one for a single publish's
/// 200, one per receipt in a batch's results.
fn produced_records(load: &HttpLoad, ok: bool, body: &[u8]) -> u64 {
    if !ok {
        0
    } else if load.records_per_request == 1 {
        1
    } else {
        let receipts = body
            .windows(RECEIPT_FIELD.len())
            .filter(|window| *window == RECEIPT_FIELD)
            .count() as u64;
        receipts.min(load.records_per_request)
    }
}

/// The field only a receipt has in a batch's results.
const RECEIPT_FIELD: &[u8] = b"\"offset\":";

async fn connection(
    load: HttpLoad,
    run: Arc<str>,
    index: usize,
    window: Window,
) -> anyhow::Result<Tally> {
    let stream = TcpStream::connect(load.address)
        .await
        .with_context(|| format!("connecting to {}", load.address))?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let mut requests = ClosedLoop::new(index, window);
    while let Some((next, sent)) = requests.send() {
        let mut request = Request::post(&*load.path)
            .header(HOST, "bench")
            .header(CONTENT_TYPE, "application/json");
        if let Some(bearer) = &load.bearer {
            request = request.header(AUTHORIZATION, bearer);
        }
        if load.idempotency_keys {
            request = request.header("idempotency-key", format!("{run}-{index}-{next}"));
        }
        let body = load.bodies[next % load.bodies.len()].clone();
        let request = request.body(Full::new(body))?;
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let ok = response.status() == hyper::StatusCode::OK;
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(produced_records(&load, ok, &body))
        };
        let produced = tokio::time::timeout_at(window.end + STALLED, exchange)
            .await
            .with_context(|| format!("no answer from {} within {STALLED:?}", load.address))??;
        let failed = load.records_per_request.saturating_sub(produced);
        requests.answered_records(sent, produced, failed);
    }
    drop(sender);
    driver.await?.context("HTTP connection")?;
    Ok(requests.tally())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(completed: u64, seconds: u64, generator_cores: f64) -> LoadRun {
        LoadRun {
            completed,
            failed: 0,
            latencies: Latencies::default(),
            measured: Duration::from_secs(seconds),
            server_cores: Some(generator_cores * 2.0),
            generator_cores,
            broker_cores: Some(generator_cores / 2.0),
            produced: Some(ProduceFigures {
                requests: completed / 100,
                records: completed,
            }),
        }
    }

    #[test]
    fn merged_rounds_sum_their_counts_and_weigh_their_cores_by_time() {
        let mut first = run(1_000, 1, 0.5);
        first.merge(run(9_000, 3, 0.9));
        assert_eq!(first.completed, 10_000);
        assert_eq!(first.measured, Duration::from_secs(4));
        assert!((first.per_second() - 2_500.0).abs() < 1e-9);
        assert!((first.generator_cores - 0.8).abs() < 1e-9);
        assert!((first.server_cores.unwrap() - 1.6).abs() < 1e-9);
        assert!((first.broker_cores.unwrap() - 0.4).abs() < 1e-9);
        assert_eq!(
            first.produced,
            Some(ProduceFigures {
                requests: 100,
                records: 10_000
            })
        );
    }

    #[test]
    fn a_batch_answer_counts_its_receipts_and_a_single_answer_its_status() {
        let mut load = HttpLoad {
            address: SocketAddr::from(([127, 0, 0, 1], 1)),
            path: "/".into(),
            bearer: None,
            bodies: Arc::new([]),
            records_per_request: 3,
            idempotency_keys: false,
        };
        let batch = br#"{"results":[{"partition":0,"offset":7,"produced_at":"t"},{"status":429,"error":"over quota"},{"partition":1,"offset":2,"produced_at":"t"}]}"#;
        assert_eq!(produced_records(&load, true, batch), 2);
        assert_eq!(produced_records(&load, false, batch), 0);
        load.records_per_request = 1;
        assert_eq!(produced_records(&load, true, b"{}"), 1);
        assert_eq!(produced_records(&load, false, b"{}"), 0);
    }

    #[test]
    fn a_partly_failed_batch_counts_what_it_produced_but_not_its_latency() {
        let start = Instant::now();
        let window = Window {
            start,
            end: start + Duration::from_secs(60),
        };
        let mut requests = ClosedLoop::new(0, window);
        requests.answered_records(start, 98, 2);
        requests.answered_records(start, 100, 0);
        let tally = requests.tally();
        assert_eq!((tally.completed, tally.failed), (198, 2));
        assert_eq!(tally.latencies.summary().count, 1);
    }

    #[test]
    fn only_requests_inside_the_window_count() {
        let start = Instant::now();
        let window = Window {
            start,
            end: start + Duration::from_secs(1),
        };
        let inside = start + Duration::from_millis(10);
        assert!(window.counts(inside, inside + Duration::from_millis(5)));
        assert!(!window.counts(start - Duration::from_millis(1), inside));
        assert!(!window.counts(inside, window.end + Duration::from_millis(1)));
    }
}
