//! Scenarios 7 to 9: durable subscriptions. A work queue against the
//! ephemeral subscription on the same topic, redelivery after a missed
//! deadline, and the server's memory per record in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use acteon_client::{Client, DurableEvent, DurableRef, DurableSubscriptionSpec};
use acteon_core::{StartPosition, SubscriptionEvent, TopicName};
use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::process::ServerProcess;
use super::setup::{self, Pipeline};
use super::stats::{Latencies, LatencySummary};

/// Longest any one wait of these scenarios takes.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Publishes in flight while filling a topic.
const PUBLISHING_AT_ONCE: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct DurableSize {
    /// Records on the work-queue topic.
    pub records: u64,
    pub workers: usize,
    pub rounds: usize,
    /// Records left to miss their deadline once.
    pub redeliveries: u64,
    pub in_flight_subscriptions: usize,
    pub in_flight_per_subscription: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkQueueRow {
    pub backend: String,
    pub workers: usize,
    pub records: u64,
    /// Records per second through C connections of one ephemeral
    /// subscription id (median round).
    pub ephemeral_per_second: f64,
    /// Records acknowledged per second through C connections of one
    /// durable subscription (median round).
    pub durable_per_second: f64,
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedeliveryRow {
    pub backend: String,
    pub ack_deadline_ms: u64,
    pub records: u64,
    /// From a record's first delivery reaching the client to its second.
    pub redelivered_after: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct InFlightRow {
    pub subscriptions: usize,
    pub in_flight: u64,
    pub idle_bytes: u64,
    pub in_flight_bytes: u64,
    pub bytes_per_record: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DurableReport {
    pub work_queue: Vec<WorkQueueRow>,
    pub redelivery: Vec<RedeliveryRow>,
    pub in_flight: Option<InFlightRow>,
}

pub async fn run(size: &DurableSize, kafka: Option<&str>) -> anyhow::Result<DurableReport> {
    let mut work_queue = vec![work_queue_on(size, None).await?];
    if let Some(bootstrap) = kafka {
        work_queue.push(work_queue_on(size, Some(bootstrap)).await?);
    }
    Ok(DurableReport {
        work_queue,
        redelivery: vec![redelivery(size.redeliveries).await?],
        in_flight: Some(in_flight(size).await?),
    })
}

async fn publish_all(client: &Client, topic: &TopicName, count: u64) -> anyhow::Result<()> {
    futures::stream::iter(0..count)
        .map(|seq| async move { client.publish_message(topic, &setup::message(seq)).await })
        .buffer_unordered(PUBLISHING_AT_ONCE)
        .for_each(|published| async move {
            if let Err(error) = published {
                eprintln!("publish failed: {error}");
            }
        })
        .await;
    Ok(())
}

fn spec(topic: &TopicName, id: &str) -> DurableSubscriptionSpec {
    DurableSubscriptionSpec {
        namespace: topic.namespace().to_owned(),
        tenant: topic.tenant().to_owned(),
        id: id.to_owned(),
        topic: topic.name().to_owned(),
        from: Some(StartPosition::Earliest),
        ..DurableSubscriptionSpec::default()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// The time from the first to the last of `count` events, counted by
/// the workers through `done`.
#[derive(Debug, Default)]
struct Span {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Span {
    fn mark(&mut self) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    fn per_second(&self, count: u64) -> f64 {
        match (self.first, self.last) {
            (Some(first), Some(last)) if last > first => {
                count as f64 / (last - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

async fn wait_until(done: &AtomicU64, count: u64, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while done.load(Ordering::Relaxed) < count {
        if Instant::now() >= deadline {
            bail!(
                "{what}: {} of {count} within {TIMEOUT:?}",
                done.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// C connections of one ephemeral subscription id read the topic from
/// its start.
async fn ephemeral_round(
    client: &Client,
    topic: &TopicName,
    id: &str,
    size: &DurableSize,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let span = Arc::new(Mutex::new(Span::default()));
    let mut workers = JoinSet::new();
    for _ in 0..size.workers {
        let mut events = client.subscribe(id, topic, StartPosition::Earliest).await?;
        let (done, span) = (Arc::clone(&done), Arc::clone(&span));
        workers.spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                if let SubscriptionEvent::Message(_) = event {
                    span.lock().await.mark();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    wait_until(&done, size.records, "ephemeral deliveries").await?;
    workers.abort_all();
    let rate = span.lock().await.per_second(size.records);
    Ok(rate)
}

/// C connections of one durable subscription, acknowledging every record
/// (the client batches the acks).
async fn durable_round(
    client: &Client,
    topic: &TopicName,
    id: &str,
    size: &DurableSize,
) -> anyhow::Result<f64> {
    client.create_durable_subscription(&spec(topic, id)).await?;
    let named = DurableRef::new(topic.namespace(), topic.tenant(), id);
    let acked = Arc::new(AtomicU64::new(0));
    let span = Arc::new(Mutex::new(Span::default()));
    let mut workers = JoinSet::new();
    for _ in 0..size.workers {
        let mut deliveries = client.consume(&named).await?;
        let (acked, span) = (Arc::clone(&acked), Arc::clone(&span));
        workers.spawn(async move {
            let mut acks = JoinSet::new();
            while let Some(Ok(event)) = deliveries.next().await {
                if let DurableEvent::Delivery(delivery) = event {
                    let (acked, span) = (Arc::clone(&acked), Arc::clone(&span));
                    acks.spawn(async move {
                        if let Ok(true) = delivery.ack().await {
                            span.lock().await.mark();
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                while acks.try_join_next().is_some() {}
            }
        });
    }
    wait_until(&acked, size.records, "durable acks").await?;
    workers.abort_all();
    let rate = span.lock().await.per_second(size.records);
    client.delete_durable_subscription(&named).await?;
    Ok(rate)
}

async fn work_queue_on(size: &DurableSize, kafka: Option<&str>) -> anyhow::Result<WorkQueueRow> {
    let backend = if kafka.is_some() { "kafka" } else { "memory" };
    let server = ServerProcess::acteon(setup::acteon_config(Pipeline::Defaults, kafka)).await?;
    let client = setup::client(&server.base_url)?;
    let topic = setup::topic(&format!("workqueue-{backend}"));
    setup::create_topic(&client, &topic).await?;
    publish_all(&client, &topic, size.records).await?;
    let (mut ephemeral, mut durable) = (Vec::new(), Vec::new());
    for round in 0..size.rounds {
        ephemeral.push(ephemeral_round(&client, &topic, &format!("tail-{round}"), size).await?);
        durable.push(durable_round(&client, &topic, &format!("queue-{round}"), size).await?);
    }
    server.stop().await.context("stopping the server")?;
    let (ephemeral, durable) = (median(ephemeral), median(durable));
    Ok(WorkQueueRow {
        backend: backend.to_owned(),
        workers: size.workers,
        records: size.records,
        ephemeral_per_second: ephemeral,
        durable_per_second: durable,
        ratio: durable / ephemeral.max(f64::EPSILON),
    })
}

/// Records whose first delivery is left to expire once, with a 1 s
/// deadline.
async fn redelivery(records: u64) -> anyhow::Result<RedeliveryRow> {
    const DEADLINE_MS: u64 = 1_000;
    let server = ServerProcess::acteon(setup::acteon_config(Pipeline::Defaults, None)).await?;
    let client = setup::client(&server.base_url)?;
    let topic = setup::topic("redelivery");
    setup::create_topic(&client, &topic).await?;
    client
        .create_durable_subscription(&DurableSubscriptionSpec {
            ack_deadline_ms: Some(DEADLINE_MS),
            ..spec(&topic, "late")
        })
        .await?;
    let named = DurableRef::new(topic.namespace(), topic.tenant(), "late");
    let mut deliveries = client.consume(&named).await?;
    publish_all(&client, &topic, records).await?;
    let mut first_seen: HashMap<u64, Instant> = HashMap::new();
    let mut delays = Latencies::default();
    // Acks go out beside the reading, so that none holds up the next
    // redelivery's arrival.
    let mut acks = JoinSet::new();
    let deadline = Instant::now() + TIMEOUT;
    while delays.count() < records {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(event)) = tokio::time::timeout(left, deliveries.next()).await else {
            bail!("redelivery: {} of {records} redelivered", delays.count());
        };
        let DurableEvent::Delivery(delivery) = event? else {
            continue;
        };
        let seq = delivery.message.payload["seq"].as_u64().unwrap_or_default();
        match delivery.attempt {
            1 => {
                first_seen.insert(seq, Instant::now());
            }
            _ => {
                if let Some(first) = first_seen.get(&seq) {
                    delays.record(first.elapsed());
                }
                acks.spawn(async move { delivery.ack().await });
            }
        }
    }
    while let Some(acked) = acks.join_next().await {
        acked??;
    }
    server.stop().await.context("stopping the server")?;
    Ok(RedeliveryRow {
        backend: "memory".to_owned(),
        ack_deadline_ms: DEADLINE_MS,
        records,
        redelivered_after: delays.summary(),
    })
}

/// S subscriptions whose records all stay delivered and unsettled; the
/// server's memory before and after.
async fn in_flight(size: &DurableSize) -> anyhow::Result<InFlightRow> {
    let server = ServerProcess::acteon(setup::acteon_config(Pipeline::Defaults, None)).await?;
    let client = setup::client(&server.base_url)?;
    let topic = setup::topic("inflight");
    setup::create_topic(&client, &topic).await?;
    let per_subscription = size.in_flight_per_subscription;
    publish_all(&client, &topic, per_subscription).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_bytes = server.rss_bytes()?;
    let received = Arc::new(AtomicU64::new(0));
    let mut holders = JoinSet::new();
    for index in 0..size.in_flight_subscriptions {
        let id = format!("holder-{index}");
        client
            .create_durable_subscription(&DurableSubscriptionSpec {
                max_in_flight: Some(per_subscription as usize),
                ack_deadline_ms: Some(3_600_000),
                ..spec(&topic, &id)
            })
            .await?;
        let named = DurableRef::new(topic.namespace(), topic.tenant(), &id);
        let mut deliveries = client.consume(&named).await?;
        let received = Arc::clone(&received);
        holders.spawn(async move {
            // Held, never settled.
            while let Some(Ok(DurableEvent::Delivery(_))) = deliveries.next().await {
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let in_flight = per_subscription * size.in_flight_subscriptions as u64;
    wait_until(&received, in_flight, "records in flight").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_flight_bytes = server.rss_bytes()?;
    holders.abort_all();
    server.stop().await.context("stopping the server")?;
    Ok(InFlightRow {
        subscriptions: size.in_flight_subscriptions,
        in_flight,
        idle_bytes,
        in_flight_bytes,
        bytes_per_record: in_flight_bytes.saturating_sub(idle_bytes) / in_flight.max(1),
    })
}
