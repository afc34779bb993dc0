//! `bus-bench`: measures Acteon against its baselines and writes a report.
//!
//! ```text
//! cargo run --release -p acteon-simulation --bin bus-bench -- [--quick] [--kafka <bootstrap>] [--only <scenario,...>] [--out report.json]
//! ```

use std::path::PathBuf;

use acteon_server::Config;
use acteon_server::app::run;
use acteon_server::logging;
use acteon_simulation::bench::process::{CONFIG_ENV, exit_with_parent, watch_broker};
use acteon_simulation::bench::{self, Plan, Scenario, bare};
use anyhow::Context;
use clap::{Parser, Subcommand};

// The allocator `acteon-server` ships with, for every role of this binary:
// the Acteon servers under test and their baselines alike.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(about = "Acteon side by side with its baselines, in one run")]
struct Cli {
    /// Every scenario, small and fast: checks the harness, not the speed.
    #[arg(long)]
    quick: bool,
    /// A Kafka bootstrap address; adds the Kafka scenarios.
    #[arg(long, value_name = "HOST:PORT")]
    kafka: Option<String>,
    /// The broker's process id, on this machine: the Kafka scenarios then
    /// report its CPU per record beside the server's.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Only these scenarios (default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SCENARIO")]
    only: Vec<Scenario>,
    /// Where to write the JSON report.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Where to write the Markdown report (default: standard output).
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,
    #[command(subcommand)]
    role: Option<Role>,
}

/// The servers under test, started by the benchmark itself.
#[derive(Debug, Subcommand)]
enum Role {
    /// Acteon, configured by the JSON in `ACTEON_BENCH_CONFIG`.
    #[command(hide = true)]
    ServeActeon,
    /// The bare axum handler.
    #[command(hide = true)]
    ServeBare,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.role.is_some() {
        exit_with_parent();
    }
    match cli.role {
        Some(Role::ServeActeon) => {
            let json =
                std::env::var(CONFIG_ENV).with_context(|| format!("{CONFIG_ENV} is not set"))?;
            let config: Config =
                serde_json::from_str(&json).context("reading the configuration")?;
            logging::init(&config.log)?;
            return run(config).await;
        }
        Some(Role::ServeBare) => return bare::serve().await,
        None => {}
    }
    let plan = if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let scenarios = if cli.only.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        cli.only
    };
    if let Some(pid) = cli.broker_pid {
        watch_broker(pid)?;
    }
    let report = bench::run(&plan, &scenarios, cli.kafka.as_deref()).await?;
    if let Some(path) = &cli.out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    let markdown = report.markdown();
    match &cli.markdown {
        Some(path) => std::fs::write(path, &markdown)
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{markdown}"),
    }
    let problems = report.problems();
    anyhow::ensure!(
        problems.is_empty(),
        "the report is not sane:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}
