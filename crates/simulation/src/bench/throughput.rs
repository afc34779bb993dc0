//! Scenarios 2, 3, 10 and 11: HTTP publish throughput against its
//! baselines, a bare axum handler (in-memory backend), rdkafka producing
//! directly (Kafka backend), and the same topic without its schema.

use std::sync::Arc;
use std::time::Duration;

use acteon_bus::{CountingContext, ProduceTally, kafka_payload, kafka_record};
use acteon_client::SubjectRef;
use acteon_core::{OutgoingMessage, SchemaBinding, SchemaVersionRef, TopicName};
use anyhow::Context;
use rdkafka::producer::FutureProducer;
use serde::Serialize;

use super::load::{
    ClosedLoop, HttpLoad, LoadRun, LoadShape, ProduceCounts, Tally, Window, drive_http, measure,
};
use super::process::ServerProcess;
use super::setup::{self, Pipeline};
use super::stats::LatencySummary;

/// The concurrencies, how long each is measured, and in how many rounds:
/// at each concurrency the targets take turns, `rounds` times, and a row
/// sums a target's rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputSize {
    pub concurrency: Vec<usize>,
    pub rounds: usize,
    pub warm_up: Duration,
    pub measure: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub baseline: String,
    pub rounds: usize,
    pub warm_up_ms: u128,
    /// Per round.
    pub measure_ms: u128,
    pub rows: Vec<ThroughputRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    pub target: String,
    pub concurrency: usize,
    pub per_second: f64,
    /// Against the baseline at the same concurrency.
    pub ratio: f64,
    pub latency: LatencySummary,
    pub failed: u64,
    /// CPU the server process used, in cores (none for direct rdkafka,
    /// which runs inside the generator).
    pub server_cores: Option<f64>,
    /// CPU the load generator used, in cores.
    pub generator_cores: f64,
    /// CPU the broker used, in cores, when it was watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cores: Option<f64>,
    /// Records per produce request the producer sent, on Kafka.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_per_produce_request: Option<f64>,
}

impl ThroughputReport {
    /// The rows of `runs` (target, concurrency, run), each against the
    /// baseline's run at its concurrency.
    fn new(baseline: &str, size: &ThroughputSize, runs: Vec<(&str, usize, LoadRun)>) -> Self {
        let baseline_rate = |concurrency: usize| {
            runs.iter()
                .find(|(target, at, _)| *target == baseline && *at == concurrency)
                .map(|(_, _, run)| run.per_second())
        };
        let rows = runs
            .iter()
            .map(|(target, concurrency, run)| {
                let per_second = run.per_second();
                ThroughputRow {
                    target: (*target).to_owned(),
                    concurrency: *concurrency,
                    per_second,
                    ratio: per_second / baseline_rate(*concurrency).unwrap_or(per_second),
                    latency: run.latencies.summary(),
                    failed: run.failed,
                    server_cores: run.server_cores,
                    generator_cores: run.generator_cores,
                    broker_cores: run.broker_cores,
                    records_per_produce_request: run
                        .produced
                        .filter(|produced| produced.requests > 0)
                        .map(|produced| produced.records as f64 / produced.requests as f64),
                }
            })
            .collect();
        Self {
            baseline: baseline.to_owned(),
            rounds: size.rounds,
            warm_up_ms: size.warm_up.as_millis(),
            measure_ms: size.measure.as_millis(),
            rows,
        }
    }

    /// The highest concurrency measured.
    pub fn top_concurrency(&self) -> usize {
        self.rows
            .iter()
            .map(|row| row.concurrency)
            .max()
            .unwrap_or(0)
    }

    /// The row of `target` at `concurrency`.
    pub fn row(&self, target: &str, concurrency: usize) -> Option<&ThroughputRow> {
        self.rows
            .iter()
            .find(|row| row.target == target && row.concurrency == concurrency)
    }
}

impl ThroughputRow {
    /// The server's CPU time per record, in microseconds.
    pub fn server_cpu_us_per_record(&self) -> f64 {
        self.server_cores.unwrap_or(0.0) * 1e6 / self.per_second.max(f64::EPSILON)
    }

    /// The load generator's CPU time per record, in microseconds: for a
    /// producer inside it, the producer's cost.
    pub fn generator_cpu_us_per_record(&self) -> f64 {
        self.generator_cores * 1e6 / self.per_second.max(f64::EPSILON)
    }

    /// The broker's CPU time per record, in microseconds, when it was
    /// watched.
    pub fn broker_cpu_us_per_record(&self) -> Option<f64> {
        self.broker_cores
            .map(|cores| cores * 1e6 / self.per_second.max(f64::EPSILON))
    }
}

/// Adds `run` to the runs of `target` at `concurrency`.
fn add_run<'a>(
    runs: &mut Vec<(&'a str, usize, LoadRun)>,
    target: &'a str,
    concurrency: usize,
    run: LoadRun,
) {
    match runs
        .iter_mut()
        .find(|(name, at, _)| *name == target && *at == concurrency)
    {
        Some((_, _, earlier)) => earlier.merge(run),
        None => runs.push((target, concurrency, run)),
    }
}

pub const BARE_HANDLER: &str = "bare axum handler";
pub const DIRECT_RDKAFKA: &str = "rdkafka, direct";
pub const PIPELINED_RDKAFKA: &str = "rdkafka, 100 records pipelined";
/// Acteon's defaults, each request with an idempotency key of its own.
pub const IDEMPOTENCY_KEYS: &str = "acteon (defaults), idempotency keys";

/// Scenario 11's baseline: its topic without a schema.
pub const UNBOUND_TOPIC: &str = "acteon (defaults), topic unbound";
/// Scenario 11's target: the same topic bound to a 20-property schema.
pub const BOUND_TOPIC: &str = "acteon (defaults), topic bound to a 20-property schema";

/// Records in each request of the batch scenario.
pub const BATCH_RECORDS: u64 = 100;

fn shape(size: &ThroughputSize, concurrency: usize) -> LoadShape {
    LoadShape {
        concurrency,
        warm_up: size.warm_up,
        measure: size.measure,
    }
}

/// Single publishes to `topic` at `server`, each request with an
/// idempotency key of its own when `keys`.
fn publish_load(
    server: &ServerProcess,
    bearer: Option<String>,
    topic: &TopicName,
    keys: bool,
) -> HttpLoad {
    HttpLoad {
        address: server.address,
        path: "/v1/bus/publish".into(),
        bearer,
        bodies: setup::publish_bodies(topic, 64),
        records_per_request: 1,
        idempotency_keys: keys,
    }
}

/// An Acteon server under load and what its requests are.
struct Target {
    label: &'static str,
    pipeline: Pipeline,
    load: HttpLoad,
}

impl Target {
    /// Single publishes to `topic`, with idempotency keys or without.
    fn publishes(
        server: &ServerProcess,
        pipeline: Pipeline,
        topic: &TopicName,
        keys: bool,
    ) -> Self {
        Self {
            label: if keys {
                IDEMPOTENCY_KEYS
            } else {
                pipeline.label()
            },
            pipeline,
            load: publish_load(server, pipeline.bearer(), topic, keys),
        }
    }

    /// Batches of [`BATCH_RECORDS`] to `topic`.
    fn batches(server: &ServerProcess, pipeline: Pipeline, topic: &TopicName) -> Self {
        Self {
            label: pipeline.batch_label(),
            pipeline,
            load: HttpLoad {
                address: server.address,
                path: format!("/v1/bus/topics/{}/records", topic.kafka_topic_name()).into(),
                bearer: pipeline.bearer(),
                bodies: setup::batch_bodies(16, BATCH_RECORDS),
                records_per_request: BATCH_RECORDS,
                idempotency_keys: false,
            },
        }
    }
}

/// Acteon servers with each of `pipelines`, on Kafka at `kafka` or on the
/// in-memory backend, with `topic` created and one record published to
/// it, as [`DirectProducer::new`] does before its first window.
async fn acteon_servers(
    pipelines: &[Pipeline],
    kafka: Option<&str>,
    topic: &TopicName,
) -> anyhow::Result<Vec<(Pipeline, ServerProcess)>> {
    let mut servers = Vec::new();
    for &pipeline in pipelines {
        let server = ServerProcess::acteon(setup::acteon_config(pipeline, kafka)).await?;
        let client = setup::client(&server.base_url)?;
        setup::create_topic(&client, topic).await?;
        client
            .publish_message(topic, &setup::message(0))
            .await
            .context("the first publish")?;
        servers.push((pipeline, server));
    }
    Ok(servers)
}

fn server_of(servers: &[(Pipeline, ServerProcess)], pipeline: Pipeline) -> &ServerProcess {
    &servers
        .iter()
        .find(|(configured, _)| *configured == pipeline)
        .expect("a server for every pipeline")
        .1
}

/// At each concurrency, `rounds` times: the baseline's run (from
/// `baseline`), then each target's; the report against the baseline.
async fn alternate<B, F>(
    size: &ThroughputSize,
    baseline_label: &str,
    baseline: B,
    targets: &[Target],
    servers: &[(Pipeline, ServerProcess)],
) -> anyhow::Result<ThroughputReport>
where
    B: Fn(LoadShape) -> F,
    F: Future<Output = anyhow::Result<LoadRun>>,
{
    let mut runs = Vec::new();
    for &concurrency in &size.concurrency {
        for _ in 0..size.rounds {
            let run = baseline(shape(size, concurrency)).await?;
            add_run(&mut runs, baseline_label, concurrency, run);
            for target in targets {
                let server = server_of(servers, target.pipeline);
                let run = drive_http(&target.load, shape(size, concurrency), server).await?;
                add_run(&mut runs, target.label, concurrency, run);
            }
        }
    }
    Ok(ThroughputReport::new(baseline_label, size, runs))
}

async fn stop_all(servers: Vec<(Pipeline, ServerProcess)>) -> anyhow::Result<()> {
    for (_, server) in servers {
        server.stop().await?;
    }
    Ok(())
}

/// Scenario 2: the bare handler and Acteon on the in-memory backend, with
/// its defaults (also with idempotency keys) and with the whole pipeline,
/// at each concurrency in turn.
pub async fn http_memory(size: &ThroughputSize) -> anyhow::Result<ThroughputReport> {
    let topic = setup::topic("http");
    let bare = ServerProcess::bare().await?;
    let servers = acteon_servers(&[Pipeline::Defaults, Pipeline::Full], None, &topic).await?;
    let targets = single_publish_targets(&servers, &topic);
    let bare_load = publish_load(&bare, None, &topic, false);
    let baseline = |shape| drive_http(&bare_load, shape, &bare);
    let report = alternate(size, BARE_HANDLER, baseline, &targets, &servers).await?;
    bare.stop().await?;
    stop_all(servers).await?;
    Ok(report)
}

fn single_publish_targets(servers: &[(Pipeline, ServerProcess)], topic: &TopicName) -> Vec<Target> {
    let defaults = server_of(servers, Pipeline::Defaults);
    vec![
        Target::publishes(defaults, Pipeline::Defaults, topic, false),
        Target::publishes(defaults, Pipeline::Defaults, topic, true),
        Target::publishes(
            server_of(servers, Pipeline::Full),
            Pipeline::Full,
            topic,
            false,
        ),
    ]
}

/// A producer with the properties of Acteon's own (acks, idempotence,
/// linger), to produce straight to the broker, counting its requests into
/// `tally` as Acteon's does.
fn direct_producer(
    bootstrap: &str,
    tally: &Arc<ProduceTally>,
) -> anyhow::Result<FutureProducer<CountingContext>> {
    setup::kafka_config(bootstrap)
        .producer()
        .create_with_context(CountingContext::new(Arc::clone(tally)))
        .context("creating the direct producer")
}

/// Scenario 3: rdkafka producing straight to the broker, one record per
/// task at a time, and Acteon on the Kafka backend with the same producer
/// properties and concurrency.
pub async fn http_kafka(
    size: &ThroughputSize,
    bootstrap: &str,
) -> anyhow::Result<ThroughputReport> {
    let topic = setup::topic("kafka");
    let servers = acteon_servers(
        &[Pipeline::Defaults, Pipeline::Full],
        Some(bootstrap),
        &topic,
    )
    .await?;
    let targets = single_publish_targets(&servers, &topic);
    let direct = DirectProducer::new(bootstrap, &topic, 1).await?;
    let baseline = |shape| direct.drive(shape);
    let report = alternate(size, DIRECT_RDKAFKA, baseline, &targets, &servers).await?;
    stop_all(servers).await?;
    Ok(report)
}

/// Scenario 10: batches of [`BATCH_RECORDS`] on the Kafka backend against
/// rdkafka producing the same records straight to the broker, each task
/// sending a batch's worth and awaiting all their acknowledgements.
pub async fn batch_kafka(
    size: &ThroughputSize,
    bootstrap: &str,
) -> anyhow::Result<ThroughputReport> {
    let topic = setup::topic("batch");
    let pipelines = [Pipeline::Defaults, Pipeline::Full];
    let servers = acteon_servers(&pipelines, Some(bootstrap), &topic).await?;
    let targets: Vec<_> = pipelines
        .iter()
        .map(|&pipeline| Target::batches(server_of(&servers, pipeline), pipeline, &topic))
        .collect();
    let direct = DirectProducer::new(bootstrap, &topic, BATCH_RECORDS).await?;
    let baseline = |shape| direct.drive(shape);
    let report = alternate(size, PIPELINED_RDKAFKA, baseline, &targets, &servers).await?;
    stop_all(servers).await?;
    Ok(report)
}

/// rdkafka producing the records Acteon's Kafka backend would produce,
/// `pipelined` at a time per task.
struct DirectProducer {
    producer: FutureProducer<CountingContext>,
    tally: Arc<ProduceTally>,
    kafka_name: Arc<str>,
    messages: Arc<[OutgoingMessage]>,
    pipelined: u64,
}

impl DirectProducer {
    /// A producer that has produced once. Its first record waits for the
    /// topic's metadata and the broker's producer id, which in a debug
    /// build could outlast a quick run's warm-up and leave the first
    /// measured window empty.
    async fn new(bootstrap: &str, topic: &TopicName, pipelined: u64) -> anyhow::Result<Self> {
        let tally = Arc::default();
        let direct = Self {
            producer: direct_producer(bootstrap, &tally)?,
            tally,
            kafka_name: topic.kafka_topic_name().into(),
            messages: (0..64).map(setup::message).collect(),
            pipelined,
        };
        let first = &direct.messages[0];
        let payload = kafka_payload(first);
        direct
            .producer
            .send(
                kafka_record(&direct.kafka_name, first, &payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| error)
            .context("the direct producer's first record")?;
        Ok(direct)
    }

    async fn drive(&self, shape: LoadShape) -> anyhow::Result<LoadRun> {
        measure(
            shape,
            None,
            ProduceCounts::Tally(&self.tally),
            |index, window| {
                produce_directly(
                    self.producer.clone(),
                    Arc::clone(&self.kafka_name),
                    Arc::clone(&self.messages),
                    self.pipelined,
                    index,
                    window,
                )
            },
        )
        .await
    }
}

/// One producing task: `pipelined` records at a time, each awaiting all
/// their acknowledgements before the next.
async fn produce_directly(
    producer: FutureProducer<CountingContext>,
    kafka_name: Arc<str>,
    messages: Arc<[OutgoingMessage]>,
    pipelined: u64,
    index: usize,
    window: Window,
) -> anyhow::Result<Tally> {
    let mut produces = ClosedLoop::new(index, window);
    while let Some((next, sent)) = produces.send() {
        let records: Vec<_> = (0..pipelined as usize)
            .map(|offset| {
                let message = &messages[(next * pipelined as usize + offset) % messages.len()];
                (message, kafka_payload(message))
            })
            .collect();
        let deliveries = records.iter().map(|(message, payload)| {
            producer.send(
                kafka_record(&kafka_name, message, payload),
                Duration::from_secs(5),
            )
        });
        let delivered = futures::future::join_all(deliveries).await;
        let produced = delivered.iter().filter(|result| result.is_ok()).count() as u64;
        produces.answered_records(sent, produced, pipelined - produced);
    }
    Ok(produces.tally())
}

/// Scenario 11: single publishes of 20-property payloads to one topic on
/// the in-memory backend, in turns unbound and bound to a schema that
/// checks every property; the payloads are valid, so both produce alike.
pub async fn typed_memory(size: &ThroughputSize) -> anyhow::Result<ThroughputReport> {
    let topic = setup::topic("typed");
    let server = ServerProcess::acteon(setup::acteon_config(Pipeline::Defaults, None)).await?;
    let client = setup::client(&server.base_url)?;
    setup::create_topic(&client, &topic).await?;
    let subject = SubjectRef::new(topic.namespace(), topic.tenant(), "typed");
    let registered = client
        .register_schema(&subject, &setup::typed_schema())
        .await
        .context("registering the schema")?;
    let binding = SchemaBinding {
        subject: subject.subject.clone(),
        version: SchemaVersionRef::Number(registered.version.version),
    };
    client.bind_topic_schema(&topic, &binding).await?;
    client
        .publish_message(&topic, &setup::typed_message(0))
        .await
        .context("a typed publish to the bound topic")?;
    let load = HttpLoad {
        bodies: setup::typed_bodies(&topic, 64),
        ..publish_load(&server, None, &topic, false)
    };
    let mut runs = Vec::new();
    for &concurrency in &size.concurrency {
        for _ in 0..size.rounds {
            client.unbind_topic_schema(&topic).await?;
            let run = drive_http(&load, shape(size, concurrency), &server).await?;
            add_run(&mut runs, UNBOUND_TOPIC, concurrency, run);
            client.bind_topic_schema(&topic, &binding).await?;
            let run = drive_http(&load, shape(size, concurrency), &server).await?;
            add_run(&mut runs, BOUND_TOPIC, concurrency, run);
        }
    }
    server.stop().await?;
    Ok(ThroughputReport::new(UNBOUND_TOPIC, size, runs))
}
