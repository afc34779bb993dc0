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

/// How much of each scenario a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: &'static str,
    pub in_process: InProcessSize,
    pub throughput: ThroughputSize,
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

/// Runs every scenario of `plan`; the Kafka ones only with a broker.
pub async fn run(plan: &Plan, kafka: Option<&str>) -> anyhow::Result<Report> {
    let date = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    eprintln!("1/6 publish in process");
    let in_process = in_process::run(plan.in_process).await?;
    eprintln!("2/6 HTTP publish, in-memory backend");
    let http_memory = throughput::http_memory(&plan.throughput).await?;
    let http_kafka = match kafka {
        Some(bootstrap) => {
            eprintln!("3/6 HTTP publish, Kafka backend at {bootstrap}");
            Some(throughput::http_kafka(&plan.throughput, bootstrap).await?)
        }
        None => None,
    };
    eprintln!("4/6 publish → SSE latency");
    let mut end_to_end = vec![latency::end_to_end(None, plan.latency_messages).await?];
    if let Some(bootstrap) = kafka {
        end_to_end.push(latency::end_to_end(Some(bootstrap), plan.kafka_latency_messages).await?);
    }
    let mut fanout = Vec::new();
    for &run in &plan.fanout.runs {
        if run.backend == "kafka" && kafka.is_none() {
            continue;
        }
        eprintln!(
            "5/6 SSE fan-out to {} {} subscribers, {} backend",
            run.subscribers,
            run.mode.as_str(),
            run.backend
        );
        fanout.push(fanout::fanout(run, &plan.fanout, kafka).await?);
    }
    eprintln!("6/6 durable subscriptions");
    let durable = durable::run(&plan.durable, kafka).await?;
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
        in_process,
        http_memory,
        http_kafka,
        end_to_end,
        fanout,
        durable,
        goals: Vec::new(),
    };
    report.judge_goals();
    Ok(report)
}
