//! Scenarios 2 and 3: HTTP publish throughput against its baselines, a
//! bare axum handler (in-memory backend) and rdkafka producing directly
//! (Kafka backend).

use std::sync::Arc;
use std::time::Duration;

use acteon_bus::{KafkaConfig, kafka_record};
use acteon_core::{OutgoingMessage, TopicName};
use anyhow::Context;
use rdkafka::producer::FutureProducer;
use serde::Serialize;

use super::load::{ClosedLoop, HttpLoad, LoadRun, LoadShape, Tally, Window, drive_http, measure};
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

    /// The row of `target` at `concurrency`.
    pub fn row(&self, target: &str, concurrency: usize) -> Option<&ThroughputRow> {
        self.rows
            .iter()
            .find(|row| row.target == target && row.concurrency == concurrency)
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

fn shape(size: &ThroughputSize, concurrency: usize) -> LoadShape {
    LoadShape {
        concurrency,
        warm_up: size.warm_up,
        measure: size.measure,
    }
}

fn publish_load(server: &ServerProcess, pipeline: Option<Pipeline>, topic: &TopicName) -> HttpLoad {
    HttpLoad {
        address: server.address,
        path: "/v1/bus/publish",
        bearer: pipeline.and_then(Pipeline::bearer),
        bodies: setup::publish_bodies(topic, 64),
    }
}

/// Scenario 2: the bare handler and Acteon on the in-memory backend, with
/// its defaults and with the whole pipeline, at each concurrency in turn.
pub async fn http_memory(size: &ThroughputSize) -> anyhow::Result<ThroughputReport> {
    let topic = setup::topic("http");
    let bare = ServerProcess::bare().await?;
    let mut acteons = Vec::new();
    for pipeline in [Pipeline::Defaults, Pipeline::Full] {
        let server = ServerProcess::acteon(setup::acteon_config(pipeline, None)).await?;
        setup::create_topic(&setup::client(&server.base_url)?, &topic).await?;
        acteons.push((pipeline, server));
    }
    let mut runs = Vec::new();
    for &concurrency in &size.concurrency {
        for _ in 0..size.rounds {
            let load = publish_load(&bare, None, &topic);
            let run = drive_http(&load, shape(size, concurrency), &bare).await?;
            add_run(&mut runs, BARE_HANDLER, concurrency, run);
            for (pipeline, server) in &acteons {
                let load = publish_load(server, Some(*pipeline), &topic);
                let run = drive_http(&load, shape(size, concurrency), server).await?;
                add_run(&mut runs, pipeline.label(), concurrency, run);
            }
        }
    }
    let report = ThroughputReport::new(BARE_HANDLER, size, runs);
    bare.stop().await?;
    for (_, server) in acteons {
        server.stop().await?;
    }
    Ok(report)
}

/// Scenario 3: rdkafka producing straight to the broker, and Acteon with
/// the whole pipeline on the Kafka backend, with the same producer
/// properties (acks, idempotence, linger) and concurrency.
pub async fn http_kafka(
    size: &ThroughputSize,
    bootstrap: &str,
) -> anyhow::Result<ThroughputReport> {
    let topic = setup::topic("kafka");
    let acteon =
        ServerProcess::acteon(setup::acteon_config(Pipeline::Full, Some(bootstrap))).await?;
    setup::create_topic(&setup::client(&acteon.base_url)?, &topic).await?;
    let producer: FutureProducer = KafkaConfig::with_bootstrap(bootstrap)
        .producer()
        .create()
        .context("creating the direct producer")?;
    let messages: Arc<[OutgoingMessage]> = (0..64).map(setup::message).collect();
    let kafka_name: Arc<str> = topic.kafka_topic_name().into();
    let mut runs = Vec::new();
    for &concurrency in &size.concurrency {
        for _ in 0..size.rounds {
            let run = measure(shape(size, concurrency), None, |index, window| {
                produce_directly(
                    producer.clone(),
                    Arc::clone(&kafka_name),
                    Arc::clone(&messages),
                    index,
                    window,
                )
            })
            .await?;
            add_run(&mut runs, DIRECT_RDKAFKA, concurrency, run);
            let load = publish_load(&acteon, Some(Pipeline::Full), &topic);
            let run = drive_http(&load, shape(size, concurrency), &acteon).await?;
            add_run(&mut runs, Pipeline::Full.label(), concurrency, run);
        }
    }
    let report = ThroughputReport::new(DIRECT_RDKAFKA, size, runs);
    acteon.stop().await?;
    Ok(report)
}

/// One producing task: the record Acteon's Kafka backend would produce for
/// each message, awaiting each acknowledgement before the next.
async fn produce_directly(
    producer: FutureProducer,
    kafka_name: Arc<str>,
    messages: Arc<[OutgoingMessage]>,
    index: usize,
    window: Window,
) -> anyhow::Result<Tally> {
    let mut produces = ClosedLoop::new(index, window);
    while let Some((next, sent)) = produces.send() {
        let message = &messages[next % messages.len()];
        let payload = message.payload.to_string();
        let record = kafka_record(&kafka_name, message, &payload);
        let delivered = producer.send(record, Duration::from_secs(5)).await;
        produces.answered(sent, delivered.is_ok());
    }
    Ok(produces.tally())
}
