//! Subscribers that time each message from the moment its publish request
//! was sent to the moment its SSE event was decoded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use acteon_client::{Client, Subscription};
use acteon_core::{StartPosition, SubscriptionEvent, SubscriptionMode, TopicName};
use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::stats::Latencies;

const NOT_SENT: u64 = u64::MAX;

/// When each message (by its `seq`) was sent, shared by the publisher and
/// every subscriber of one run.
#[derive(Debug)]
pub struct SendTimes {
    epoch: Instant,
    nanos: Box<[AtomicU64]>,
}

impl SendTimes {
    pub fn new(count: u64) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            nanos: (0..count).map(|_| AtomicU64::new(NOT_SENT)).collect(),
        })
    }

    /// Notes that `seq` is being sent now.
    pub fn mark(&self, seq: u64) -> Instant {
        let now = Instant::now();
        let nanos = u64::try_from((now - self.epoch).as_nanos()).unwrap_or(NOT_SENT - 1);
        self.nanos[seq as usize].store(nanos, Ordering::Release);
        now
    }

    fn len(&self) -> usize {
        self.nanos.len()
    }

    fn since_sent(&self, seq: u64, arrived: Instant) -> Option<Duration> {
        let sent = self
            .nanos
            .get(usize::try_from(seq).ok()?)?
            .load(Ordering::Acquire);
        (sent != NOT_SENT)
            .then(|| (arrived - self.epoch).saturating_sub(Duration::from_nanos(sent)))
    }
}

/// Opens a subscription from `latest` in `mode` and waits for its
/// assignment, after which every message published reaches it; returns it
/// with the time from the request to the assignment.
pub async fn subscribe_assigned(
    client: &Client,
    topic: &TopicName,
    subscription_id: &str,
    mode: SubscriptionMode,
    timeout: Duration,
) -> anyhow::Result<(Subscription, Duration)> {
    let asked = Instant::now();
    let mut subscription = client
        .subscribe_in_mode(subscription_id, topic, StartPosition::Latest, mode)
        .await
        .with_context(|| format!("subscribing {subscription_id}"))?;
    let assigned = async {
        while let Some(event) = subscription.next().await {
            if let SubscriptionEvent::Assigned(_) = event? {
                return Ok(());
            }
        }
        bail!("the stream ended before an assignment")
    };
    tokio::time::timeout(timeout, assigned)
        .await
        .with_context(|| format!("{subscription_id} was not assigned in {timeout:?}"))??;
    Ok((subscription, asked.elapsed()))
}

/// What one subscriber received.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Distinct messages received.
    pub received: u64,
    /// Messages received again (Kafka delivers at least once).
    pub duplicates: u64,
    /// Latencies of messages with `seq` below the split, and of the rest.
    pub latencies: [Latencies; 2],
    pub last_arrival: Option<Instant>,
    pub error: Option<String>,
}

/// A subscription read in its own task until told to stop.
#[derive(Debug)]
pub struct Reader {
    pub progress: watch::Receiver<u64>,
    task: JoinHandle<Delivery>,
}

impl Reader {
    /// Reads `subscription`, timing each message against `sent`; messages
    /// with `seq < split` go to the first histogram.
    pub fn spawn(
        mut subscription: Subscription,
        sent: Arc<SendTimes>,
        split: u64,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let (progress, watched) = watch::channel(0);
        let task = tokio::spawn(async move {
            let mut delivery = Delivery::default();
            let mut seen = vec![false; sent.len()];
            loop {
                let event = tokio::select! {
                    event = subscription.next() => event,
                    _ = stop.changed() => break,
                };
                let arrived = Instant::now();
                match event {
                    Some(Ok(SubscriptionEvent::Message(message))) => {
                        let seq = message.payload["seq"].as_u64().unwrap_or(NOT_SENT);
                        let Some(latency) = sent.since_sent(seq, arrived) else {
                            delivery.error = Some(format!("a message nobody sent: {seq}"));
                            break;
                        };
                        // since_sent found seq, so it indexes `seen`.
                        if std::mem::replace(&mut seen[seq as usize], true) {
                            delivery.duplicates += 1;
                            continue;
                        }
                        delivery.latencies[usize::from(seq >= split)].record(latency);
                        delivery.received += 1;
                        delivery.last_arrival = Some(arrived);
                        progress.send_replace(delivery.received);
                    }
                    Some(Ok(SubscriptionEvent::Assigned(_))) => {}
                    Some(Ok(SubscriptionEvent::Lagged { partition, skipped })) => {
                        delivery.error =
                            Some(format!("{skipped} skipped on partition {partition}"));
                        break;
                    }
                    Some(Err(error)) => {
                        delivery.error = Some(error.to_string());
                        break;
                    }
                    None => {
                        delivery.error = Some("the server ended the stream".to_owned());
                        break;
                    }
                }
            }
            delivery
        });
        Self {
            progress: watched,
            task,
        }
    }

    /// Waits until this reader has received `count` messages or `deadline`
    /// passes; whether it got them.
    pub async fn wait_for(&mut self, count: u64, deadline: Instant) -> bool {
        tokio::time::timeout_at(
            deadline,
            self.progress.wait_for(|&received| received >= count),
        )
        .await
        .is_ok_and(|waited| waited.is_ok())
    }

    pub async fn finish(self) -> anyhow::Result<Delivery> {
        self.task.await.context("a subscriber task panicked")
    }
}
