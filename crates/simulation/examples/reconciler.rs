//! A reconciler daemon on a durable subscription with key ordering,
//! killed and started again mid-run.
//!
//! ```text
//! ACTEON_KAFKA_BOOTSTRAP=localhost:9092 cargo run -p acteon-simulation --example reconciler
//! ```
//!
//! The "API" (this process) emits `Created`, `Updated` and `Deleted` events
//! for 20 agents, keyed by agent, each with the agent's next version. The
//! reconciler (this program again, as a child process with `--daemon`)
//! applies each event to its state file, writes it, then acknowledges the
//! event; an event whose version it has applied already (delivered again
//! after a crash between write and ack) is acknowledged without applying.
//! Midway the child is killed with SIGKILL and started again. The example
//! exits non-zero unless the final state equals the event history applied
//! in order per agent, and no event arrived out of order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use acteon_client::{Client, DurableEvent, DurableRef, DurableSubscriptionSpec};
use acteon_core::{Headers, OutgoingMessage, StartPosition, TopicName, TopicSpec};
use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

const AGENTS: u64 = 20;

#[derive(Debug, Parser)]
struct Args {
    /// Run as the reconciler daemon.
    #[arg(long)]
    daemon: bool,
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    state: Option<PathBuf>,
    /// Events the API emits.
    #[arg(long, default_value_t = 300)]
    events: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Change {
    Created { replicas: u64 },
    Updated { replicas: u64 },
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AgentEvent {
    agent: String,
    version: u64,
    change: Change,
}

/// What the reconciler made of the events: per agent, its replicas (`None`
/// once deleted) and the last version applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    agents: BTreeMap<String, (Option<u64>, u64)>,
    /// Events that arrived before an earlier one of their agent.
    out_of_order: Vec<String>,
    applied: u64,
}

impl State {
    /// Applies `event` unless it was applied already; false then.
    fn apply(&mut self, event: &AgentEvent) -> bool {
        let (replicas, version) = self.agents.entry(event.agent.clone()).or_default();
        if event.version <= *version {
            return false;
        }
        if event.version != *version + 1 {
            self.out_of_order.push(format!(
                "{} v{} after v{}",
                event.agent, event.version, version
            ));
        }
        *replicas = match event.change {
            Change::Created { replicas } | Change::Updated { replicas } => Some(replicas),
            Change::Deleted => None,
        };
        *version = event.version;
        self.applied += 1;
        true
    }

    fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(error.into()),
        }
    }

    /// Writes the state whole or not at all.
    fn store(&self, path: &Path) -> anyhow::Result<()> {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, serde_json::to_vec(self)?)?;
        std::fs::rename(partial, path)?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.daemon {
        return reconcile(args).await;
    }
    emit_and_check(args).await
}

/// The reconciler daemon: applies each delivered event, stores, acks.
async fn reconcile(args: Args) -> anyhow::Result<ExitCode> {
    let (Some(url), Some(tenant), Some(path)) = (args.url, args.tenant, args.state) else {
        bail!("--daemon needs --url, --tenant and --state");
    };
    let client = Client::builder(url).build()?;
    let mut state = State::load(&path)?;
    let subscription = DurableRef::new("simulation", tenant, "reconciler");
    let mut deliveries = client.consume(&subscription).await?;
    while let Some(event) = deliveries.next().await {
        let DurableEvent::Delivery(delivery) = event? else {
            continue;
        };
        let agent_event: AgentEvent = serde_json::from_value(delivery.message.payload.clone())?;
        if state.apply(&agent_event) {
            state.store(&path)?;
        }
        delivery.ack().await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The events for `count` steps, spread over the agents with a fixed
/// pseudo-random sequence.
fn history(count: u64) -> Vec<AgentEvent> {
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        seed >> 33
    };
    let mut live: BTreeMap<u64, (bool, u64)> = BTreeMap::new();
    (0..count)
        .map(|_| {
            let agent = next() % AGENTS;
            let (exists, version) = live.entry(agent).or_insert((false, 0));
            *version += 1;
            let change = match (*exists, next() % 4) {
                (false, _) => Change::Created {
                    replicas: next() % 5 + 1,
                },
                (true, 0) => Change::Deleted,
                (true, _) => Change::Updated {
                    replicas: next() % 5 + 1,
                },
            };
            *exists = !matches!(change, Change::Deleted);
            AgentEvent {
                agent: format!("agent-{agent}"),
                version: *version,
                change,
            }
        })
        .collect()
}

fn spawn_daemon(url: &str, tenant: &str, state: &Path) -> anyhow::Result<tokio::process::Child> {
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--daemon", "--url", url, "--tenant", tenant, "--state"])
        .arg(state)
        .kill_on_drop(true)
        .spawn()
        .context("starting the reconciler")?;
    Ok(child)
}

/// Waits until the state file shows `applied` events applied.
async fn wait_applied(path: &Path, applied: u64, within: Duration) -> anyhow::Result<State> {
    let deadline = Instant::now() + within;
    loop {
        // A missing or half-written file reads as nothing applied yet.
        let state = State::load(path).unwrap_or_default();
        if state.applied >= applied || Instant::now() >= deadline {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn emit_and_check(args: Args) -> anyhow::Result<ExitCode> {
    let base_url = match std::env::var("ACTEON_URL") {
        Ok(url) => url,
        Err(_) => acteon_simulation::start_server_on_kafka().await?,
    };
    let client = Client::builder(&base_url).build()?;
    let tenant = format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    client
        .create_bus_topic(&TopicSpec {
            namespace: "simulation".into(),
            tenant: tenant.clone(),
            name: "agent-events".into(),
            partitions: 3,
            replication_factor: 1,
            retention_ms: None,
            schema: None,
        })
        .await?;
    let topic = TopicName::new("simulation", &tenant, "agent-events")?;
    client
        .create_durable_subscription(&DurableSubscriptionSpec {
            namespace: "simulation".into(),
            tenant: tenant.clone(),
            id: "reconciler".into(),
            topic: "agent-events".into(),
            from: Some(StartPosition::Earliest),
            ordering: Some("key".into()),
            ack_deadline_ms: Some(5_000),
            ..DurableSubscriptionSpec::default()
        })
        .await?;
    let dir = tempfile::tempdir()?;
    let state_path = dir.path().join("reconciler.json");
    let events = history(args.events);
    let publish = |event: &AgentEvent| OutgoingMessage {
        key: Some(event.agent.clone()),
        payload: serde_json::to_value(event).expect("events serialise"),
        headers: Headers::new(),
    };
    println!(
        "{} events for {AGENTS} agents on {topic} via {base_url}",
        events.len()
    );

    let mut daemon = spawn_daemon(&base_url, &tenant, &state_path)?;
    let half = events.len() / 2;
    for event in &events[..half] {
        client.publish_message(&topic, &publish(event)).await?;
    }
    let before_kill = wait_applied(&state_path, half as u64 / 2, Duration::from_secs(60)).await?;
    daemon.kill().await?;
    println!(
        "killed the reconciler after {} applied events",
        before_kill.applied
    );
    for event in &events[half..] {
        client.publish_message(&topic, &publish(event)).await?;
    }
    let mut daemon = spawn_daemon(&base_url, &tenant, &state_path)?;
    let state = wait_applied(&state_path, events.len() as u64, Duration::from_secs(90)).await?;
    daemon.kill().await?;

    let mut expected = State::default();
    for event in &events {
        expected.apply(event);
    }
    println!(
        "applied {} of {} events; {} agents exist at the end",
        state.applied,
        events.len(),
        state
            .agents
            .values()
            .filter(|(replicas, _)| replicas.is_some())
            .count()
    );
    if !state.out_of_order.is_empty() {
        bail!("events out of order: {:?}", state.out_of_order);
    }
    if state.agents != expected.agents {
        bail!(
            "the reconciler's state differs from the history:\n got {:?}\nwant {:?}",
            state.agents,
            expected.agents
        );
    }
    println!("ok: the final state equals the history applied in order per agent");
    Ok(ExitCode::SUCCESS)
}
