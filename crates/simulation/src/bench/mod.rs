//! `bus-bench`: Acteon side by side with its baselines, in one run.
//!
//! Every scenario starts the servers it measures as child processes (the
//! benchmark binary in a server role), drives them from this process over
//! loopback, and reads their CPU time and resident memory from `/proc`.
//! See `docs/benchmarks.md` for what each scenario compares and a full run.

pub mod bare;
pub mod durable;
pub mod fanout;
pub mod in_process;
pub mod latency;
pub mod load;
pub mod process;
pub mod report;
pub mod setup;
pub mod stats;
pub mod subscriber;
pub mod throughput;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};

use self::durable::DurableSize;
use acteon_core::SubscriptionMode;

use self::fanout::{FanoutRun, FanoutSize};
use self::in_process::InProcessSize;
use self::report::Report;
use self::throughput::ThroughputSize;

/// The scenarios, as `--only` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1: a publish through the router, without a socket.
    InProcess,
    /// 2: HTTP publish on the in-memory backend.
    HttpMemory,
    /// 3: HTTP publish on Kafka.
    HttpKafka,
    /// 4: publish → SSE latency.
    Latency,
    /// 5 and 6: SSE fan-out.
    Fanout,
    /// 7 to 9: durable subscriptions.
    Durable,
    /// 10: batch publish on Kafka.
    Batch,
    /// 11: HTTP publish to a topic bound to a schema, in-memory backend.
    Typed,
}

impl Scenario {
    pub const ALL: [Self; 8] = [
        Self::InProcess,
        Self::HttpMemory,
        Self::HttpKafka,
        Self::Latency,
        Self::Fanout,
        Self::Durable,
        Self::Batch,
        Self::Typed,
    ];
}

/// How much of each scenario a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: &'static str,
    pub in_process: InProcessSize,
    pub throughput: ThroughputSize,
    /// Scenario 10; its rates count records, not requests.
    pub batch: ThroughputSize,
    pub latency_messages: u64,
    /// Fewer: each takes about Tansu's fetch wait (`docs/broker.md`).
    pub kafka_latency_messages: u64,
    pub fanout: FanoutSize,
    pub durable: DurableSize,
}

impl Plan {
    /// The run for the docs: a few minutes.
    pub fn full() -> Self {
        Self {
            name: "full",
            in_process: InProcessSize {
                rounds: 7,
                publishes_per_round: 20_000,
            },
            throughput: ThroughputSize {
                concurrency: vec![1, 16, 64],
                rounds: 3,
                warm_up: Duration::from_secs(1),
                measure: Duration::from_secs(3),
            },
            batch: ThroughputSize {
                concurrency: vec![1, 8],
                rounds: 3,
                warm_up: Duration::from_secs(1),
                measure: Duration::from_secs(3),
            },
            latency_messages: 2_000,
            kafka_latency_messages: 500,
            fanout: FanoutSize {
                runs: vec![
                    fanout_run("memory", SubscriptionMode::Shared, 1_000),
                    fanout_run("memory", SubscriptionMode::Shared, 10_000),
                    fanout_run("memory", SubscriptionMode::Broadcast, 10_000),
                    fanout_run("kafka", SubscriptionMode::Broadcast, 10_000),
                    fanout_run("kafka", SubscriptionMode::Shared, 1_000),
                ],
                paced: 20,
                paced_per_second: 10,
                burst: 100,
            },
            durable: DurableSize {
                records: 20_000,
                workers: 4,
                rounds: 3,
                redeliveries: 100,
                in_flight_subscriptions: 10,
                in_flight_per_subscription: 10_000,
            },
        }
    }

    /// Every scenario, small: checks that the harness works, in well under
    /// two minutes even in a debug build.
    pub fn quick() -> Self {
        Self {
            name: "quick",
            in_process: InProcessSize {
                rounds: 3,
                publishes_per_round: 1_000,
            },
            throughput: ThroughputSize {
                concurrency: vec![1, 16, 64],
                rounds: 1,
                warm_up: Duration::from_millis(200),
                measure: Duration::from_millis(800),
            },
            batch: ThroughputSize {
                concurrency: vec![1, 4],
                rounds: 1,
                warm_up: Duration::from_millis(200),
                measure: Duration::from_millis(800),
            },
            latency_messages: 100,
            kafka_latency_messages: 50,
            fanout: FanoutSize {
                runs: vec![
                    fanout_run("memory", SubscriptionMode::Shared, 100),
                    fanout_run("memory", SubscriptionMode::Broadcast, 100),
                    fanout_run("kafka", SubscriptionMode::Broadcast, 100),
                    fanout_run("kafka", SubscriptionMode::Shared, 20),
                ],
                paced: 10,
                paced_per_second: 50,
                burst: 20,
            },
            durable: DurableSize {
                records: 1_000,
                workers: 2,
                rounds: 1,
                redeliveries: 10,
                in_flight_subscriptions: 2,
                in_flight_per_subscription: 1_000,
            },
        }
    }
}

fn fanout_run(backend: &'static str, mode: SubscriptionMode, subscribers: usize) -> FanoutRun {
    FanoutRun {
        backend,
        mode,
        subscribers,
    }
}

/// Runs the `scenarios` of `plan`; the Kafka ones only with a broker.
pub async fn run(
    plan: &Plan,
    scenarios: &[Scenario],
    kafka: Option<&str>,
) -> anyhow::Result<Report> {
    let date = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let runs = |scenario| scenarios.contains(&scenario);
    let mut report = Report {
        date,
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        mode: plan.name.to_owned(),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_owned(),
        kafka_bootstrap: kafka.map(str::to_owned),
        scenarios: scenarios.to_vec(),
        in_process: None,
        http_memory: None,
        http_kafka: None,
        end_to_end: Vec::new(),
        fanout: Vec::new(),
        durable: None,
        batch_kafka: None,
        typed_memory: None,
        goals: Vec::new(),
    };
    if runs(Scenario::InProcess) {
        eprintln!("1. publish in process");
        report.in_process = Some(in_process::run(plan.in_process).await?);
    }
    if runs(Scenario::HttpMemory) {
        eprintln!("2. HTTP publish, in-memory backend");
        report.http_memory = Some(throughput::http_memory(&plan.throughput).await?);
    }
    if let (true, Some(bootstrap)) = (runs(Scenario::HttpKafka), kafka) {
        eprintln!("3. HTTP publish, Kafka backend at {bootstrap}");
        report.http_kafka = Some(throughput::http_kafka(&plan.throughput, bootstrap).await?);
    }
    if runs(Scenario::Latency) {
        eprintln!("4. publish → SSE latency");
        report
            .end_to_end
            .push(latency::end_to_end(None, plan.latency_messages).await?);
        if let Some(bootstrap) = kafka {
            report
                .end_to_end
                .push(latency::end_to_end(Some(bootstrap), plan.kafka_latency_messages).await?);
        }
    }
    for &run in plan.fanout.runs.iter().filter(|_| runs(Scenario::Fanout)) {
        if run.backend == "kafka" && kafka.is_none() {
            continue;
        }
        eprintln!(
            "5. SSE fan-out to {} {} subscribers, {} backend",
            run.subscribers,
            run.mode.as_str(),
            run.backend
        );
        report
            .fanout
            .push(fanout::fanout(run, &plan.fanout, kafka).await?);
    }
    if runs(Scenario::Durable) {
        eprintln!("7. durable subscriptions");
        report.durable = Some(durable::run(&plan.durable, kafka).await?);
    }
    if let (true, Some(bootstrap)) = (runs(Scenario::Batch), kafka) {
        eprintln!("10. batch publish, Kafka backend at {bootstrap}");
        report.batch_kafka = Some(throughput::batch_kafka(&plan.batch, bootstrap).await?);
    }
    if runs(Scenario::Typed) {
        eprintln!("11. HTTP publish to a topic bound to a schema, in-memory backend");
        report.typed_memory = Some(throughput::typed_memory(&plan.throughput).await?);
    }
    report.judge_goals();
    Ok(report)
}
