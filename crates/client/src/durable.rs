//! Durable subscriptions: their definitions, their deliveries, and the
//! settlements, which the client batches.
//!
//! A [`Deliveries`] stream yields [`DurableEvent`]s; each [`Delivery`]
//! settles itself ([`Delivery::ack`], [`Delivery::nack`],
//! [`Delivery::reject`], [`Delivery::extend`]). Settlements of one stream
//! are sent together: a batch goes out when it holds [`BATCH_IDS`] ids or
//! [`BATCH_WINDOW`] after its first, whichever comes first.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use acteon_core::{BusMessage, StartPosition, SubscriptionMode};
use chrono::{DateTime, Utc};
use eventsource_stream::{Event, Eventsource};
use futures::Stream;
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{Client, Error};

/// Ids per settlement request the client sends at most.
pub const BATCH_IDS: usize = 100;

/// How long a settlement waits for others to join its request.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// `POST /v1/bus/subscriptions`; `None` fields take the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DurableSubscriptionSpec {
    pub namespace: String,
    pub tenant: String,
    pub id: String,
    /// Short or Kafka name of a topic of the same namespace and tenant.
    pub topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<StartPosition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_deadline_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// `"none"` or `"key"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<String>,
    /// Durable subscriptions are shared; the server refuses `broadcast`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<SubscriptionMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
}

/// A durable subscription's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableSubscription {
    pub namespace: String,
    pub tenant: String,
    pub id: String,
    pub topic: String,
    pub from: StartPosition,
    pub ack_deadline_ms: u64,
    pub max_deliveries: u32,
    pub backoff_ms: Vec<u64>,
    pub max_in_flight: usize,
    pub ordering: String,
    pub mode: SubscriptionMode,
    pub dead_letter_topic: String,
    pub created_at: DateTime<Utc>,
    pub generation: String,
}

/// One partition's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionFigures {
    pub partition: i32,
    pub committed: i64,
    pub end_offset: Option<i64>,
    pub lag: Option<i64>,
    pub in_flight: usize,
}

/// A durable subscription with its live figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableSubscriptionView {
    #[serde(flatten)]
    pub subscription: DurableSubscription,
    pub partitions: Vec<PartitionFigures>,
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub lost: u64,
    pub in_flight: usize,
    pub consumers: usize,
}

/// Filters of [`Client::list_durable_subscriptions`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DurableFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Kafka name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// Which durable subscription: namespace, tenant, id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DurableRef {
    pub namespace: String,
    pub tenant: String,
    pub id: String,
}

impl DurableRef {
    pub fn new(
        namespace: impl Into<String>,
        tenant: impl Into<String>,
        id: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            tenant: tenant.into(),
            id: id.into(),
        }
    }

    fn segments<'a>(&'a self, last: Option<&'a str>) -> Vec<&'a str> {
        let mut segments = vec![
            "v1",
            "bus",
            "subscriptions",
            self.namespace.as_str(),
            self.tenant.as_str(),
            self.id.as_str(),
        ];
        segments.extend(last);
        segments
    }
}

/// The server's answer to a settlement: which ids it settled, and which
/// were stale (settled already, unknown, or delivered again since).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Settled {
    pub settled: Vec<String>,
    pub stale: Vec<String>,
}

/// How a delivery is settled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Settlement {
    Ack,
    /// Redeliver after this delay, or after the subscription's backoff.
    Nack(Option<Duration>),
    /// To the dead-letter topic, with this reason.
    Reject(String),
    Extend,
}

impl Settlement {
    fn path(&self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Nack(_) => "nack",
            Self::Reject(_) => "reject",
            Self::Extend => "extend",
        }
    }

    fn body(&self, ids: &[String]) -> serde_json::Value {
        let mut body = serde_json::json!({ "ids": ids });
        match self {
            Self::Nack(Some(delay)) => body["delay_ms"] = (delay.as_millis() as u64).into(),
            Self::Reject(reason) => body["reason"] = reason.clone().into(),
            Self::Ack | Self::Nack(None) | Self::Extend => {}
        }
        body
    }
}

impl Client {
    /// `POST /v1/bus/subscriptions`.
    pub async fn create_durable_subscription(
        &self,
        spec: &DurableSubscriptionSpec,
    ) -> Result<DurableSubscription, Error> {
        let request = self.request(reqwest::Method::POST, &["v1", "bus", "subscriptions"]);
        self.call_json(request.json(spec)).await
    }

    /// `GET /v1/bus/subscriptions`.
    pub async fn list_durable_subscriptions(
        &self,
        filter: &DurableFilter,
    ) -> Result<Vec<DurableSubscription>, Error> {
        let request = self.request(reqwest::Method::GET, &["v1", "bus", "subscriptions"]);
        self.call_json(request.query(filter)).await
    }

    /// `GET /v1/bus/subscriptions/{namespace}/{tenant}/{id}`.
    pub async fn get_durable_subscription(
        &self,
        subscription: &DurableRef,
    ) -> Result<DurableSubscriptionView, Error> {
        let request = self.request(reqwest::Method::GET, &subscription.segments(None));
        self.call_json(request).await
    }

    /// `DELETE /v1/bus/subscriptions/{namespace}/{tenant}/{id}`.
    pub async fn delete_durable_subscription(
        &self,
        subscription: &DurableRef,
    ) -> Result<(), Error> {
        let request = self.request(reqwest::Method::DELETE, &subscription.segments(None));
        self.call(request).await.map(drop)
    }

    /// Settles `ids` in one request, without batching.
    pub async fn settle(
        &self,
        subscription: &DurableRef,
        settlement: &Settlement,
        ids: &[String],
    ) -> Result<Settled, Error> {
        let segments = subscription.segments(Some(settlement.path()));
        let request = self.request(reqwest::Method::POST, &segments);
        self.call_json(request.json(&settlement.body(ids))).await
    }

    /// `GET .../events`: the deliveries of this connection, which shares
    /// the subscription's records with its other connections.
    pub async fn consume(&self, subscription: &DurableRef) -> Result<Deliveries, Error> {
        let request = self
            .request(reqwest::Method::GET, &subscription.segments(Some("events")))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = crate::client::check(request.send().await?).await?;
        let (settlements, queue) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(self.clone(), subscription.clone(), queue));
        Ok(Deliveries::new(response, Settler { settlements }))
    }
}

/// A settlement waiting for its batch.
struct Queued {
    settlement: Settlement,
    id: String,
    reply: oneshot::Sender<Result<bool, Error>>,
}

/// Hands settlements to the batching task of one [`Deliveries`] stream.
#[derive(Clone)]
struct Settler {
    settlements: mpsc::UnboundedSender<Queued>,
}

impl Settler {
    async fn settle(&self, settlement: Settlement, id: &str) -> Result<bool, Error> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            settlement,
            id: id.to_owned(),
            reply,
        };
        let gone = || Error::Stream("the settlement queue is closed".to_owned());
        self.settlements.send(queued).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Collects settlements into batches per kind and sends them.
async fn send_batches(
    client: Client,
    subscription: DurableRef,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let window = tokio::time::sleep(BATCH_WINDOW);
        tokio::pin!(window);
        while batch.len() < BATCH_IDS {
            tokio::select! {
                () = &mut window => break,
                next = queue.recv() => match next {
                    Some(next) => batch.push(next),
                    None => break,
                },
            }
        }
        let mut by_kind: BTreeMap<Settlement, Vec<Queued>> = BTreeMap::new();
        for queued in batch {
            by_kind
                .entry(queued.settlement.clone())
                .or_default()
                .push(queued);
        }
        for (settlement, queued) in by_kind {
            let ids: Vec<String> = queued.iter().map(|q| q.id.clone()).collect();
            match client.settle(&subscription, &settlement, &ids).await {
                Ok(answer) => {
                    // Usually empty: what is not stale was settled.
                    let stale: std::collections::HashSet<&str> =
                        answer.stale.iter().map(String::as_str).collect();
                    for q in queued {
                        let settled = !stale.contains(q.id.as_str());
                        let _ = q.reply.send(Ok(settled));
                    }
                }
                Err(error) => {
                    for q in queued {
                        let _ = q.reply.send(Err(error.duplicate()));
                    }
                }
            }
        }
    }
}

/// When its lease ends, and which delivery of the record this is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct DeliveryInfo {
    id: String,
    attempt: u32,
    deadline: DateTime<Utc>,
}

#[derive(Deserialize)]
struct DeliveredRecord {
    #[serde(flatten)]
    message: BusMessage,
    delivery: DeliveryInfo,
}

/// One delivery of one record, to be settled.
pub struct Delivery {
    pub message: BusMessage,
    /// The delivery id, valid across reconnects and server restarts.
    pub id: String,
    /// 1 for the first delivery.
    pub attempt: u32,
    /// When the lease ends unless extended.
    pub deadline: DateTime<Utc>,
    settler: Settler,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("deadline", &self.deadline)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Done with: never delivered again. `Ok(false)`: the delivery was
    /// stale (its lease had passed to another connection).
    pub async fn ack(&self) -> Result<bool, Error> {
        self.settler.settle(Settlement::Ack, &self.id).await
    }

    /// Deliver again after `delay`, or after the subscription's backoff.
    pub async fn nack(&self, delay: Option<Duration>) -> Result<bool, Error> {
        self.settler.settle(Settlement::Nack(delay), &self.id).await
    }

    /// To the dead-letter topic at once.
    pub async fn reject(&self, reason: impl Into<String>) -> Result<bool, Error> {
        let settlement = Settlement::Reject(reason.into());
        self.settler.settle(settlement, &self.id).await
    }

    /// A fresh deadline, for work still in progress.
    pub async fn extend(&self) -> Result<bool, Error> {
        self.settler.settle(Settlement::Extend, &self.id).await
    }
}

/// What a durable subscription's stream yields.
#[derive(Debug)]
pub enum DurableEvent {
    Delivery(Delivery),
    /// Retention removed this many unsettled records.
    Lost {
        records: u64,
    },
    /// The server ended the stream: the subscription or its topic was
    /// deleted, or the server is stopping. The last event.
    Ended {
        reason: String,
    },
}

/// The deliveries of one connection. Dropping it closes the connection:
/// its unsettled records go to the subscription's other connections.
pub struct Deliveries {
    events: BoxStream<'static, Result<DurableEvent, Error>>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Lost {
    records: u64,
}

#[derive(Deserialize)]
struct Ended {
    reason: String,
}

impl Deliveries {
    fn new(response: reqwest::Response, settler: Settler) -> Self {
        let events = response
            .bytes_stream()
            .eventsource()
            .filter_map(move |event| {
                let settler = settler.clone();
                async move {
                    match event {
                        Ok(event) => decode(event, settler),
                        Err(error) => Some(Err(Error::Stream(error.to_string()))),
                    }
                }
            })
            .boxed();
        Self { events }
    }
}

fn decode(event: Event, settler: Settler) -> Option<Result<DurableEvent, Error>> {
    let decoded = match event.event.as_str() {
        "bus.message" => serde_json::from_str::<DeliveredRecord>(&event.data)
            .map(|record| {
                DurableEvent::Delivery(Delivery {
                    message: record.message,
                    id: record.delivery.id,
                    attempt: record.delivery.attempt,
                    deadline: record.delivery.deadline,
                    settler,
                })
            })
            .map_err(|error| Error::Decode(format!("bus.message: {error}"))),
        "bus.lost" => serde_json::from_str::<Lost>(&event.data)
            .map(|lost| DurableEvent::Lost {
                records: lost.records,
            })
            .map_err(|error| Error::Decode(format!("bus.lost: {error}"))),
        "bus.end" => serde_json::from_str::<Ended>(&event.data)
            .map(|ended| DurableEvent::Ended {
                reason: ended.reason,
            })
            .map_err(|error| Error::Decode(format!("bus.end: {error}"))),
        // Event kinds added later are skipped.
        _ => return None,
    };
    Some(decoded)
}

impl Stream for Deliveries {
    type Item = Result<DurableEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_next_unpin(cx)
    }
}
