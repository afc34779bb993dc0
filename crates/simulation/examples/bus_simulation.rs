//! Two competing agents and a tail consumer, through the HTTP API.
//!
//! ```text
//! ACTEON_KAFKA_BOOTSTRAP=localhost:9092 cargo run -p acteon-simulation --features bus --example bus_simulation
//! ACTEON_URL=http://127.0.0.1:8080 cargo run -p acteon-simulation --example bus_simulation
//! ```
//!
//! With `ACTEON_KAFKA_BOOTSTRAP` it starts an Acteon server in process, on a
//! free loopback port, on the Kafka backend; with `ACTEON_URL` it uses that
//! server. It creates a topic with four partitions; agents A and B subscribe
//! with one subscription id (so they share the partitions) and a tail
//! consumer with its own. Once the agents' group has settled it publishes a
//! keyed stream and prints what each reader saw. It exits non-zero if a
//! record reached both agents, reached neither, or was missed by the tail.

use std::collections::BTreeSet;
use std::process::ExitCode;

use acteon_bus::conformance::{Reader, collect, wait_for_settled_group};
use acteon_client::Client;
use acteon_core::{Headers, OutgoingMessage, StartPosition, TopicSpec};
use anyhow::{Context, bail};
use clap::Parser;

const PARTITIONS: u32 = 4;

#[derive(Debug, Parser)]
struct Args {
    /// How many keyed messages to publish.
    #[arg(long, default_value_t = 200)]
    messages: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let base_url = match std::env::var("ACTEON_URL") {
        Ok(url) => url,
        Err(_) => acteon_simulation::start_server_on_kafka().await?,
    };
    let client = Client::builder(&base_url).build()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let topic = client
        .create_bus_topic(&TopicSpec {
            namespace: "simulation".into(),
            tenant: format!("run-{run}"),
            name: "work".into(),
            partitions: PARTITIONS,
            replication_factor: 1,
            retention_ms: None,
            schema: None,
        })
        .await
        .context("creating the topic")?;
    let name = topic.topic.name();
    println!("topic {name} with {PARTITIONS} partitions on {base_url}");

    let shared = format!("agents-{run}");
    let subscribe = |id: String| {
        let client = client.clone();
        async move {
            let events = client.subscribe(&id, name, StartPosition::Latest).await?;
            Ok::<_, acteon_client::Error>(Reader::from_events(events))
        }
    };
    println!("waiting for the agents' group to settle ...");
    // Agents join one at a time, each once the group has settled: Tansu can
    // leave one of two members that join together without partitions.
    let mut agent_a = subscribe(shared.clone()).await?;
    wait_for_settled_group(&mut [&mut agent_a], PARTITIONS).await;
    let mut agent_b = subscribe(shared).await?;
    let mut tail = subscribe(format!("tail-{run}")).await?;
    wait_for_settled_group(&mut [&mut agent_a, &mut agent_b], PARTITIONS).await;
    wait_for_settled_group(&mut [&mut tail], PARTITIONS).await;
    println!(
        "agent A reads partitions {:?}, agent B {:?}",
        agent_a.assignment(),
        agent_b.assignment()
    );

    for seq in 0..args.messages {
        let message = OutgoingMessage {
            key: Some(format!("job-{seq}")),
            payload: serde_json::json!({ "seq": seq }),
            headers: Headers::new(),
        };
        client.publish_message(name, &message).await?;
    }
    let seen = collect(
        &mut [&mut agent_a, &mut agent_b, &mut tail],
        2 * args.messages,
    )
    .await;
    client.delete_bus_topic(name).await?;
    report(args.messages, &seen)
}

/// Starts a server in this process on the Kafka backend.
fn report(published: usize, seen: &[Vec<usize>]) -> anyhow::Result<ExitCode> {
    let [agent_a, agent_b, tail] = seen else {
        bail!("expected three readers");
    };
    let set = |seqs: &[usize]| seqs.iter().copied().collect::<BTreeSet<_>>();
    let (a, b, tail_set) = (set(agent_a), set(agent_b), set(tail));
    let overlap = a.intersection(&b).count();
    let neither = (0..published)
        .filter(|seq| !a.contains(seq) && !b.contains(seq))
        .count();
    let tail_missed = (0..published).filter(|seq| !tail_set.contains(seq)).count();
    let duplicates =
        agent_a.len() - a.len() + agent_b.len() - b.len() + tail.len() - tail_set.len();

    println!();
    println!("| published | agent A | agent B | overlap | neither | tail |");
    println!("|----------:|--------:|--------:|--------:|--------:|-----:|");
    println!(
        "| {published:>9} | {:>7} | {:>7} | {overlap:>7} | {neither:>7} | {:>4} |",
        agent_a.len(),
        agent_b.len(),
        tail.len()
    );
    println!();
    let mut failures = Vec::new();
    if overlap > 0 {
        failures.push(format!("{overlap} records reached both agents"));
    }
    if neither > 0 {
        failures.push(format!("{neither} records reached neither agent"));
    }
    if tail_missed > 0 {
        failures.push(format!("the tail missed {tail_missed} records"));
    }
    if duplicates > 0 {
        failures.push(format!(
            "{duplicates} records were delivered twice to one reader"
        ));
    }
    if a.is_empty() || b.is_empty() {
        failures.push("one agent received nothing: the partitions were not shared".to_owned());
    }
    if failures.is_empty() {
        println!("ok: every record reached exactly one agent, and the tail saw all {published}");
        Ok(ExitCode::SUCCESS)
    } else {
        for failure in &failures {
            eprintln!("FAILED: {failure}");
        }
        Ok(ExitCode::FAILURE)
    }
}
