//! Scenario 4: from a publish request to its SSE event at a subscriber,
//! one message at a time.

use std::time::Duration;

use anyhow::{Context, ensure};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::process::ServerProcess;
use super::setup::{self, Pipeline};
use super::stats::{Latencies, LatencySummary};
use acteon_core::SubscriptionMode;

use super::subscriber::{Reader, SendTimes, subscribe_assigned};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A Kafka consumer group forms in a few seconds.
const ASSIGNMENT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct EndToEndRow {
    pub backend: String,
    pub messages: u64,
    /// Distinct messages the subscriber received.
    pub received: u64,
    pub duplicates: u64,
    /// Publish request sent → SSE event decoded.
    pub end_to_end: LatencySummary,
    /// Publish request sent → receipt read.
    pub publish: LatencySummary,
}

/// Publishes `count` messages through a server with the whole pipeline,
/// each after the previous one arrived, to one subscriber.
pub async fn end_to_end(kafka: Option<&str>, count: u64) -> anyhow::Result<EndToEndRow> {
    let server = ServerProcess::acteon(setup::acteon_config(Pipeline::Full, kafka)).await?;
    let client = setup::client(&server.base_url)?;
    let topic = setup::topic("latency");
    setup::create_topic(&client, &topic).await?;
    let (subscription, _) = subscribe_assigned(
        &client,
        &topic,
        "bench-latency",
        SubscriptionMode::Shared,
        ASSIGNMENT_TIMEOUT,
    )
    .await?;
    let sent = SendTimes::new(count);
    let (stop, stopped) = watch::channel(false);
    let mut reader = Reader::spawn(subscription, sent.clone(), count, stopped);
    let mut publish = Latencies::default();
    for seq in 0..count {
        let started = sent.mark(seq);
        let outcome = client.publish_message(&topic, &setup::message(seq)).await?;
        publish.record(started.elapsed());
        ensure!(outcome.receipt().is_some(), "message {seq} was suppressed");
        ensure!(
            reader
                .wait_for(seq + 1, Instant::now() + DELIVERY_TIMEOUT)
                .await,
            "message {seq} did not arrive within {DELIVERY_TIMEOUT:?}"
        );
    }
    stop.send_replace(true);
    let delivery = reader.finish().await?;
    if let Some(error) = delivery.error {
        anyhow::bail!("the subscriber failed: {error}");
    }
    server.stop().await.context("stopping the server")?;
    let [end_to_end, _] = delivery.latencies;
    Ok(EndToEndRow {
        backend: if kafka.is_some() { "kafka" } else { "memory" }.to_owned(),
        messages: count,
        received: delivery.received,
        duplicates: delivery.duplicates,
        end_to_end: end_to_end.summary(),
        publish: publish.summary(),
    })
}
