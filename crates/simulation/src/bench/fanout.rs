//! Scenarios 5 and 6: S subscribers of one topic, each with a subscription
//! id of its own (shared mode: a consumer group each) or all in broadcast
//! mode, on either backend; the server's memory and threads before, during
//! and after.

use std::time::Duration;

use acteon_core::SubscriptionMode;
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::process::{CpuReading, ServerProcess};
use super::setup::{self, Pipeline};
use super::stats::{Latencies, LatencySummary};
use super::subscriber::{Reader, SendTimes, subscribe_assigned};

/// Subscriptions opened at once while connecting the subscribers.
const CONNECTING_AT_ONCE: usize = 32;
const ASSIGNMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the last message may take to reach every subscriber.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Time for the server to release closed subscriptions before the last
/// memory reading.
const SETTLE: Duration = Duration::from_secs(2);

/// One fan-out run: how many subscribers, how they subscribe, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FanoutRun {
    /// `memory` or `kafka`.
    pub backend: &'static str,
    pub mode: SubscriptionMode,
    pub subscribers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutSize {
    pub runs: Vec<FanoutRun>,
    /// Messages published at `paced_per_second`, for delivery latency.
    pub paced: u64,
    pub paced_per_second: u64,
    /// Messages then published back to back, for delivery throughput.
    pub burst: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutRow {
    #[serde(flatten)]
    pub run: FanoutRun,
    pub messages: u64,
    /// Messages received, summed over subscribers.
    pub delivered: u64,
    pub expected: u64,
    /// Messages received again, summed over subscribers.
    pub duplicates: u64,
    pub subscribers_short: usize,
    /// Delivery latency of the paced messages.
    pub paced_latency: LatencySummary,
    /// Deliveries per second of the burst: subscribers × burst messages,
    /// over the time from its first publish to its last delivery.
    pub burst_deliveries_per_second: f64,
    pub burst_latency: LatencySummary,
    pub server_cores_burst: f64,
    pub generator_cores_burst: f64,
    pub memory: ServerMemory,
    /// (RSS with subscribers − idle RSS) / subscribers.
    pub rss_per_subscriber_bytes: u64,
    /// From each subscribe request to its assignment.
    pub subscribe_latency: LatencySummary,
    /// From the first subscribe request to the last assignment.
    pub subscribe_seconds: f64,
    /// The server's threads idle and with every subscriber assigned.
    pub threads_idle: u64,
    pub threads_subscribed: u64,
}

impl FanoutRow {
    /// The run's name in reports.
    pub fn name(&self) -> String {
        format!(
            "fan-out to {} {} subscribers, {}",
            self.run.subscribers,
            self.run.mode.as_str(),
            self.run.backend
        )
    }
}

/// The server's resident memory at the points of a fan-out run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerMemory {
    /// Started, topic created, nothing else.
    pub idle_bytes: u64,
    /// Every subscriber assigned.
    pub subscribed_bytes: u64,
    /// Every message delivered, subscribers still connected.
    pub delivered_bytes: u64,
    /// Subscribers gone.
    pub closed_bytes: u64,
}

/// The server configuration of a fan-out: room for every subscriber.
fn config(run: FanoutRun, kafka: Option<&str>) -> acteon_server::Config {
    let mut config = setup::acteon_config(Pipeline::Full, kafka);
    let room = run.subscribers + CONNECTING_AT_ONCE;
    config.server.max_subscriptions = config.server.max_subscriptions.max(room);
    config.limits.max_subscriptions_per_tenant = room;
    config.limits.max_subscriptions_per_key = room;
    config
}

/// Runs `run`; a Kafka run needs `kafka`, the broker's address.
pub async fn fanout(
    run: FanoutRun,
    size: &FanoutSize,
    kafka: Option<&str>,
) -> anyhow::Result<FanoutRow> {
    let subscribers = run.subscribers;
    let kafka = match run.backend {
        "kafka" => Some(kafka.context("a Kafka fan-out needs a broker")?),
        _ => None,
    };
    let server = ServerProcess::acteon(config(run, kafka)).await?;
    let client = setup::client(&server.base_url)?;
    let topic = setup::topic(&format!(
        "fanout-{}-{}-{subscribers}",
        run.backend,
        run.mode.as_str()
    ));
    setup::create_topic(&client, &topic).await?;
    tokio::time::sleep(SETTLE).await;
    let idle_bytes = server.rss_bytes()?;
    let threads_idle = server.threads()?;

    let subscribing = Instant::now();
    let subscriptions: Vec<_> = futures::stream::iter(0..subscribers)
        .map(|index| {
            let (client, topic) = (client.clone(), &topic);
            async move {
                subscribe_assigned(
                    &client,
                    topic,
                    &format!("fanout-{index}"),
                    run.mode,
                    ASSIGNMENT_TIMEOUT,
                )
                .await
            }
        })
        .buffer_unordered(CONNECTING_AT_ONCE)
        .try_collect()
        .await?;
    let subscribe_seconds = subscribing.elapsed().as_secs_f64();
    let subscribed_bytes = server.rss_bytes()?;
    let threads_subscribed = server.threads()?;
    let mut subscribe_latency = Latencies::default();
    let subscriptions: Vec<_> = subscriptions
        .into_iter()
        .map(|(subscription, latency)| {
            subscribe_latency.record(latency);
            subscription
        })
        .collect();

    let messages = size.paced + size.burst;
    let sent = SendTimes::new(messages);
    let (stop, stopped) = watch::channel(false);
    let mut readers: Vec<_> = subscriptions
        .into_iter()
        .map(|subscription| Reader::spawn(subscription, sent.clone(), size.paced, stopped.clone()))
        .collect();

    let mut ticks =
        tokio::time::interval(Duration::from_secs(1) / size.paced_per_second.max(1) as u32);
    // A late publish delays the next ones rather than bunching them up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0..size.paced {
        ticks.tick().await;
        sent.mark(seq);
        client.publish_message(&topic, &setup::message(seq)).await?;
    }
    let cpu_before = CpuReading::now(Some(&server))?;
    let burst_started = Instant::now();
    for seq in size.paced..messages {
        sent.mark(seq);
        client.publish_message(&topic, &setup::message(seq)).await?;
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut subscribers_short = 0;
    for reader in &mut readers {
        if !reader.wait_for(messages, deadline).await {
            subscribers_short += 1;
        }
    }
    let cores = CpuReading::now(Some(&server))?.cores_since(&cpu_before);
    let delivered_bytes = server.rss_bytes()?;

    stop.send_replace(true);
    let mut delivered = 0;
    let mut duplicates = 0;
    let mut paced = Latencies::default();
    let mut burst = Latencies::default();
    let mut last_arrival = burst_started;
    for reader in readers {
        let delivery = reader.finish().await?;
        if let Some(error) = delivery.error {
            anyhow::bail!("a subscriber failed: {error}");
        }
        delivered += delivery.received;
        duplicates += delivery.duplicates;
        paced.merge(&delivery.latencies[0]);
        burst.merge(&delivery.latencies[1]);
        last_arrival = last_arrival.max(delivery.last_arrival.unwrap_or(last_arrival));
    }
    tokio::time::sleep(SETTLE).await;
    let closed_bytes = server.rss_bytes()?;
    server.stop().await.context("stopping the server")?;

    let burst_span = last_arrival - burst_started;
    Ok(FanoutRow {
        run,
        messages,
        delivered,
        expected: messages * subscribers as u64,
        duplicates,
        subscribers_short,
        paced_latency: paced.summary(),
        burst_deliveries_per_second: (size.burst * subscribers as u64) as f64
            / burst_span.as_secs_f64().max(f64::EPSILON),
        burst_latency: burst.summary(),
        server_cores_burst: cores.server.unwrap_or_default(),
        generator_cores_burst: cores.generator,
        memory: ServerMemory {
            idle_bytes,
            subscribed_bytes,
            delivered_bytes,
            closed_bytes,
        },
        rss_per_subscriber_bytes: subscribed_bytes
            .max(delivered_bytes)
            .saturating_sub(idle_bytes)
            / subscribers.max(1) as u64,
        subscribe_latency: subscribe_latency.summary(),
        subscribe_seconds,
        threads_idle,
        threads_subscribed,
    })
}
