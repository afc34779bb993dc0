//! An at-least-once task queue on one durable subscription.
//!
//! ```text
//! ACTEON_KAFKA_BOOTSTRAP=localhost:9092 cargo run -p acteon-simulation --example work_queue
//! ACTEON_URL=http://127.0.0.1:8080 cargo run -p acteon-simulation --example work_queue
//! ```
//!
//! Three workers share one durable subscription. Worker 1 drops its
//! connection in the middle of its fifth task, as a crashed worker would;
//! task 13 always fails, so it is nacked until it has had `max_deliveries`
//! and ends in the dead-letter topic. The example prints a table of tasks
//! published, completed, redelivered, dead-lettered and lost, and exits
//! non-zero if a task was lost or completed again after its ack was
//! accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use acteon_client::{Client, DurableEvent, DurableRef, DurableSubscriptionSpec};
use acteon_core::{Headers, OutgoingMessage, StartPosition, TopicName, TopicSpec};
use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The task that always fails.
const POISON: u64 = 13;

/// Worker 1 drops its connection during its task number...
const CRASH_AT: usize = 5;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 60)]
    tasks: u64,
    #[arg(long, default_value_t = 3)]
    max_deliveries: u32,
}

/// What the workers saw, shared between them.
#[derive(Debug, Default)]
struct Ledger {
    /// Tasks whose ack the server accepted.
    completed: BTreeSet<u64>,
    /// Tasks delivered again after their ack was accepted.
    completed_again: BTreeSet<u64>,
    deliveries: u64,
    redeliveries: u64,
    per_worker: BTreeMap<usize, u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
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
            name: "tasks".into(),
            partitions: 3,
            replication_factor: 1,
            retention_ms: None,
            schema: None,
        })
        .await
        .context("creating the topic")?;
    let topic = TopicName::new("simulation", &tenant, "tasks")?;
    let queue = DurableRef::new("simulation", &tenant, "workers");
    client
        .create_durable_subscription(&DurableSubscriptionSpec {
            namespace: "simulation".into(),
            tenant: tenant.clone(),
            id: "workers".into(),
            topic: "tasks".into(),
            from: Some(StartPosition::Earliest),
            ack_deadline_ms: Some(5_000),
            max_deliveries: Some(args.max_deliveries),
            ..DurableSubscriptionSpec::default()
        })
        .await
        .context("creating the durable subscription")?;
    println!("{} tasks on {topic} via {base_url}", args.tasks);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let workers: Vec<_> = (1..=3)
        .map(|worker| {
            let (client, queue, ledger) = (client.clone(), queue.clone(), Arc::clone(&ledger));
            tokio::spawn(async move { work(worker, client, queue, ledger).await })
        })
        .collect();
    for task in 0..args.tasks {
        let message = OutgoingMessage {
            key: Some(format!("task-{task}")),
            payload: serde_json::json!({ "task": task }),
            headers: Headers::new(),
        };
        client.publish_message(&topic, &message).await?;
    }

    // Done when every task is completed or dead-lettered.
    let dead_lettered = Arc::new(Mutex::new(BTreeSet::new()));
    let reader = tokio::spawn(read_dead_letters(
        client.clone(),
        topic.clone(),
        Arc::clone(&dead_lettered),
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = ledger.lock().await.completed.len() + dead_lettered.lock().await.len();
        if done as u64 >= args.tasks || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A moment more, to catch anything delivered again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for worker in &workers {
        worker.abort();
    }
    reader.abort();

    let ledger = ledger.lock().await;
    let dead = dead_lettered.lock().await;
    let lost: Vec<u64> = (0..args.tasks)
        .filter(|task| !ledger.completed.contains(task) && !dead.contains(task))
        .collect();
    let figures = client.get_durable_subscription(&queue).await?;
    println!("| tasks | count |");
    println!("|---|---|");
    println!("| published | {} |", args.tasks);
    println!("| completed | {} |", ledger.completed.len());
    println!("| deliveries | {} |", ledger.deliveries);
    println!("| redelivered | {} |", ledger.redeliveries);
    println!("| dead-lettered | {} |", dead.len());
    println!("| lost | {} |", lost.len());
    println!(
        "| completed again after their ack | {} |",
        ledger.completed_again.len()
    );
    println!("per worker: {:?}", ledger.per_worker);
    println!(
        "server figures: delivered {}, acked {}, redelivered {}, dead_lettered {}, lost {}",
        figures.delivered, figures.acked, figures.redelivered, figures.dead_lettered, figures.lost
    );
    if !lost.is_empty() {
        bail!("tasks lost: {lost:?}");
    }
    if !ledger.completed_again.is_empty() {
        bail!(
            "tasks completed again after their ack: {:?}",
            ledger.completed_again
        );
    }
    if !dead.contains(&POISON) || dead.len() != 1 {
        bail!("expected exactly task {POISON} dead-lettered, got {dead:?}");
    }
    if ledger.redeliveries == 0 {
        bail!("the crashed worker's task was not delivered again");
    }
    println!("ok: every task completed once or dead-lettered");
    Ok(ExitCode::SUCCESS)
}

/// One worker: completes each task it gets, except the poison one; worker
/// 1 vanishes in the middle of its `CRASH_AT`-th task and comes back.
async fn work(worker: usize, client: Client, queue: DurableRef, ledger: Arc<Mutex<Ledger>>) {
    let mut crashed = false;
    loop {
        let Ok(mut deliveries) = client.consume(&queue).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut started = 0;
        while let Some(event) = deliveries.next().await {
            let Ok(DurableEvent::Delivery(delivery)) = event else {
                continue;
            };
            let task = delivery.message.payload["task"]
                .as_u64()
                .unwrap_or(u64::MAX);
            started += 1;
            {
                let mut ledger = ledger.lock().await;
                ledger.deliveries += 1;
                if delivery.attempt > 1 {
                    ledger.redeliveries += 1;
                }
                if ledger.completed.contains(&task) {
                    ledger.completed_again.insert(task);
                }
            }
            if worker == 1 && !crashed && started == CRASH_AT {
                // The connection drops with the task unsettled.
                crashed = true;
                println!("worker 1 drops its connection during task {task}");
                break;
            }
            // The work itself.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if task == POISON {
                let _ = delivery.nack(Some(Duration::from_millis(100))).await;
                continue;
            }
            if let Ok(true) = delivery.ack().await {
                let mut ledger = ledger.lock().await;
                ledger.completed.insert(task);
                *ledger.per_worker.entry(worker).or_default() += 1;
            }
        }
    }
}

/// Collects the task numbers that reach the dead-letter topic.
async fn read_dead_letters(
    client: Client,
    topic: TopicName,
    dead: Arc<Mutex<BTreeSet<u64>>>,
) -> anyhow::Result<()> {
    let dead_letters = TopicName::new(
        topic.namespace(),
        topic.tenant(),
        &format!("{}-dlq", topic.name()),
    )?;
    let mut events = client
        .subscribe("dead-letter-reader", &dead_letters, StartPosition::Earliest)
        .await?;
    while let Some(event) = events.next().await {
        if let acteon_core::SubscriptionEvent::Message(message) = event? {
            if let Some(task) = message.payload["task"].as_u64() {
                dead.lock().await.insert(task);
            }
        }
    }
    Ok(())
}
