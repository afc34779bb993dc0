//! Durable subscriptions: records delivered at least once over SSE,
//! settled one by one over HTTP, redelivered when a worker fails and
//! dead-lettered when they keep failing.
//!
//! A subscription's definition is in the state store; so is its progress
//! (see [`ledger`]), written before the settled prefix is committed to its
//! consumer group. Each subscription has one [`engine`] task per server
//! process, started at creation and at server start, which every
//! connection to it shares.

mod delivery_id;
mod engine;
mod ledger;
mod progress;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use acteon_bus::{GroupId, PartitionOffsets};
use acteon_core::{
    Fragment, FragmentKind, NameError, Scope, StartPosition, SubscriptionMode, Topic, TopicName,
};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;

use self::delivery_id::DeliveryId;
pub use self::delivery_id::MalformedDeliveryId;
use self::engine::{Command, Engine, EngineConfig};
pub use self::engine::{EngineServices, Push};
pub use self::ledger::HeldRecord;
pub use self::ledger::Ordering;
pub use self::ledger::Settlement;
use self::ledger::{Ledger, Settings};
use self::progress::{PartitionProgress, Progress};
use crate::error::ServiceError;
use crate::state::{KeyKind, StateStore};
use crate::topics::TopicRegistry;

/// `[durable]`: bounds of durable subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurableConfig {
    /// Durable subscriptions per tenant.
    pub max_per_tenant: usize,
    /// Records a subscription holds read and unsettled; reading pauses
    /// there (the bound of its memory and of its stored progress).
    pub max_tracked_records: usize,
    /// Delivery ids per settlement request.
    pub max_ids_per_request: usize,
    /// Events buffered per connection.
    pub connection_buffer: usize,
    /// Longest a settlement waits for its engine before 503.
    pub settle_timeout_ms: u64,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            max_per_tenant: 100,
            max_tracked_records: 20_000,
            max_ids_per_request: 1_000,
            connection_buffer: 64,
            settle_timeout_ms: 10_000,
        }
    }
}

/// The largest `max_in_flight` a subscription may ask for.
const MAX_IN_FLIGHT: usize = 10_000;

/// `POST /v1/bus/subscriptions`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    #[schema(value_type = acteon_core::Fragment)]
    pub namespace: String,
    #[schema(value_type = acteon_core::Fragment)]
    pub tenant: String,
    #[schema(value_type = acteon_core::Fragment)]
    pub id: String,
    /// The short name, or the Kafka name, of a topic of the same namespace
    /// and tenant.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,80}(\\.[A-Za-z0-9_-]{1,80}\\.[A-Za-z0-9_-]{1,80})?$")]
    pub topic: String,
    #[serde(default)]
    pub from: StartPosition,
    #[serde(default = "default_ack_deadline_ms")]
    #[schema(minimum = 1000, maximum = 3_600_000)]
    pub ack_deadline_ms: u64,
    #[serde(default = "default_max_deliveries")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_deliveries: u32,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub backoff_ms: Vec<u64>,
    #[serde(default = "default_max_in_flight")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub max_in_flight: usize,
    #[serde(default)]
    pub ordering: Ordering,
    /// Only `shared`: see [`DurableSubscriptions::check`].
    #[serde(default)]
    pub mode: SubscriptionMode,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,80}(\\.[A-Za-z0-9_-]{1,80}\\.[A-Za-z0-9_-]{1,80})?$")]
    pub dead_letter_topic: Option<String>,
}

fn default_ack_deadline_ms() -> u64 {
    30_000
}

fn default_max_deliveries() -> u32 {
    5
}

fn default_max_in_flight() -> usize {
    1_000
}

/// A durable subscription as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    pub namespace: String,
    pub tenant: String,
    pub id: String,
    /// Kafka name.
    pub topic: String,
    pub from: StartPosition,
    pub ack_deadline_ms: u64,
    pub max_deliveries: u32,
    pub backoff_ms: Vec<u64>,
    pub max_in_flight: usize,
    pub ordering: Ordering,
    #[serde(default)]
    #[schema(required = true)]
    pub mode: SubscriptionMode,
    /// Kafka name.
    pub dead_letter_topic: String,
    pub created_at: DateTime<Utc>,
    /// Tells this subscription's delivery ids from those of an earlier one
    /// of the same name.
    pub generation: String,
}

impl Subscription {
    fn key(&self) -> String {
        key(&self.namespace, &self.tenant, &self.id)
    }

    fn topic_name(&self) -> TopicName {
        self.topic.parse().expect("stored topic names are valid")
    }

    fn dead_letter_topic_name(&self) -> TopicName {
        self.dead_letter_topic
            .parse()
            .expect("stored topic names are valid")
    }

    fn group(&self) -> GroupId {
        let id = GroupId::parse(&self.id).expect("subscription ids are group ids");
        GroupId::scoped("durable", &self.namespace, &self.tenant, &id)
    }

    fn settings(&self) -> Settings {
        Settings {
            ack_deadline: Duration::from_millis(self.ack_deadline_ms),
            max_deliveries: self.max_deliveries,
            backoff: self
                .backoff_ms
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect(),
            max_in_flight: self.max_in_flight,
            ordering: self.ordering,
        }
    }

    /// The scope grants are checked against: its topic.
    pub fn scope(&self) -> Scope {
        Scope::topic(&self.topic_name())
    }
}

/// The store key of a subscription and its progress.
fn key(namespace: &str, tenant: &str, id: &str) -> String {
    format!("{namespace}/{tenant}/{id}")
}

/// Filters of the subscription list; `None` matches everything.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubscriptionFilter {
    #[param(value_type = Option<acteon_core::Fragment>)]
    pub namespace: Option<String>,
    #[param(value_type = Option<acteon_core::Fragment>)]
    pub tenant: Option<String>,
    /// Kafka name.
    #[param(value_type = Option<acteon_core::TopicName>)]
    pub topic: Option<String>,
}

/// One partition's live figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PartitionView {
    pub partition: i32,
    pub committed: i64,
    /// `null` while the broker cannot say.
    #[schema(required = true)]
    pub end_offset: Option<i64>,
    #[schema(required = true)]
    pub lag: Option<i64>,
    pub in_flight: usize,
}

/// `GET .../{id}`: the definition and its live figures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    #[serde(flatten)]
    pub subscription: Subscription,
    pub partitions: Vec<PartitionView>,
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub lost: u64,
    pub in_flight: usize,
    pub consumers: usize,
}

/// The answer to a settlement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Settled {
    pub settled: Vec<String>,
    pub stale: Vec<String>,
}

/// A field of a request outside its bounds.
fn invalid(field: &str, why: impl std::fmt::Display) -> ServiceError {
    ServiceError::InvalidDurable(format!("{field}: {why}"))
}

#[derive(Debug)]
struct Running {
    commands: mpsc::Sender<Command>,
    subscription: Arc<Subscription>,
}

/// The durable subscriptions of this server.
#[derive(Debug, Clone)]
pub struct DurableSubscriptions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    services: EngineServices,
    topics: TopicRegistry,
    config: DurableConfig,
    running: Mutex<HashMap<String, Running>>,
    /// Held by create and delete.
    changing: tokio::sync::Mutex<()>,
    engines: TaskTracker,
    next_connection: AtomicU64,
}

impl DurableSubscriptions {
    pub fn new(services: EngineServices, topics: TopicRegistry, config: DurableConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                services,
                topics,
                config,
                running: Mutex::default(),
                changing: tokio::sync::Mutex::default(),
                engines: TaskTracker::new(),
                next_connection: AtomicU64::new(1),
            }),
        }
    }

    fn state(&self) -> &dyn StateStore {
        &*self.inner.services.state
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the engines of the stored subscriptions.
    pub async fn restore(&self) -> Result<(), ServiceError> {
        let keeps_records = self.inner.services.bus.keeps_records();
        for subscription in self.stored().await? {
            let key = subscription.key();
            let mut progress = self.stored_progress(&key).await?;
            if !keeps_records {
                // The records went with the last process; their offsets
                // start again at 0 and must not be taken as settled.
                progress = progress.for_a_new_log();
                let row = serde_json::to_value(&progress).expect("progress serialises");
                self.state()
                    .put(KeyKind::DurableProgress, &key, &row)
                    .await?;
            }
            self.start_engine(subscription, progress);
        }
        Ok(())
    }

    async fn stored(&self) -> Result<Vec<Subscription>, ServiceError> {
        let mut subscriptions = Vec::new();
        for row in self.state().list(KeyKind::DurableSubscription).await? {
            match serde_json::from_value::<Subscription>(row) {
                Ok(subscription) => subscriptions.push(subscription),
                Err(error) => {
                    tracing::error!(%error, "skipping an unreadable durable subscription")
                }
            }
        }
        Ok(subscriptions)
    }

    async fn stored_progress(&self, key: &str) -> Result<Progress, ServiceError> {
        let row = self.state().get(KeyKind::DurableProgress, key).await?;
        Ok(row
            .and_then(|row| match serde_json::from_value(row) {
                Ok(progress) => Some(progress),
                Err(error) => {
                    tracing::error!(subscription = key, %error, "unreadable progress; resuming from the group's offsets");
                    None
                }
            })
            .unwrap_or_default())
    }

    fn start_engine(&self, subscription: Subscription, progress: Progress) {
        let config = EngineConfig {
            key: subscription.key(),
            id: subscription.id.clone(),
            generation: subscription.generation.clone(),
            topic: subscription.topic_name(),
            group: subscription.group(),
            dead_letter_topic: subscription.dead_letter_topic_name(),
            max_tracked: self
                .inner
                .config
                .max_tracked_records
                .max(subscription.max_in_flight),
        };
        let ledger = Ledger::new(subscription.settings(), progress);
        let engine = Engine::new(config, self.inner.services.clone(), ledger);
        let (commands, receiver) = mpsc::channel(1024);
        self.inner.engines.spawn(engine.run(receiver));
        self.running().insert(
            subscription.key(),
            Running {
                commands,
                subscription: Arc::new(subscription),
            },
        );
    }

    /// Validates a request into the subscription it asks for.
    fn check(
        &self,
        request: SubscriptionRequest,
    ) -> Result<(Subscription, TopicName, TopicName), ServiceError> {
        let namespace = Fragment::parse(FragmentKind::Namespace, &request.namespace)?;
        let tenant = Fragment::parse(FragmentKind::Tenant, &request.tenant)?;
        Fragment::parse(FragmentKind::Subscription, &request.id)?;
        let topic = topic_of(&namespace, &tenant, &request.topic, "topic")?;
        if request.mode != SubscriptionMode::Shared {
            // Each record is settled once, by one consumer: there is
            // nothing for a broadcast to mean here.
            return Err(invalid(
                "mode",
                "a durable subscription is shared; for every connection to get every record, \
                 subscribe with mode=broadcast",
            ));
        }
        if !(1_000..=3_600_000).contains(&request.ack_deadline_ms) {
            return Err(invalid("ack_deadline_ms", "must be 1000 to 3600000"));
        }
        if !(1..=100).contains(&request.max_deliveries) {
            return Err(invalid("max_deliveries", "must be 1 to 100"));
        }
        if request.backoff_ms.len() > 100 || request.backoff_ms.iter().any(|&ms| ms > 86_400_000) {
            return Err(invalid(
                "backoff_ms",
                "at most 100 delays of at most 86400000 ms",
            ));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&request.max_in_flight) {
            return Err(invalid(
                "max_in_flight",
                format!("must be 1 to {MAX_IN_FLIGHT}"),
            ));
        }
        let dead_letter_topic = match &request.dead_letter_topic {
            Some(name) => topic_of(&namespace, &tenant, name, "dead_letter_topic")?,
            None => {
                let name = format!("{}-dlq", topic.name());
                TopicName::new(namespace.as_str(), tenant.as_str(), &name)
                    .map_err(|error| invalid("dead_letter_topic", error))?
            }
        };
        if dead_letter_topic == topic {
            return Err(invalid("dead_letter_topic", "must differ from topic"));
        }
        let subscription = Subscription {
            namespace: request.namespace,
            tenant: request.tenant,
            id: request.id,
            topic: topic.kafka_topic_name().to_owned(),
            from: request.from,
            ack_deadline_ms: request.ack_deadline_ms,
            max_deliveries: request.max_deliveries,
            backoff_ms: request.backoff_ms,
            max_in_flight: request.max_in_flight,
            ordering: request.ordering,
            mode: request.mode,
            dead_letter_topic: dead_letter_topic.kafka_topic_name().to_owned(),
            created_at: Utc::now(),
            generation: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        };
        Ok((subscription, topic, dead_letter_topic))
    }

    /// The topic a request's field names; checked before any grant, as
    /// the grant is checked against it.
    pub fn requested_scope(request: &SubscriptionRequest) -> Result<Scope, ServiceError> {
        let namespace = Fragment::parse(FragmentKind::Namespace, &request.namespace)?;
        let tenant = Fragment::parse(FragmentKind::Tenant, &request.tenant)?;
        Ok(Scope::topic(&topic_of(
            &namespace,
            &tenant,
            &request.topic,
            "topic",
        )?))
    }

    /// Creates a subscription: fixes its start in its group, creates its
    /// dead-letter topic if missing, stores it, and starts its engine.
    pub async fn create(&self, request: SubscriptionRequest) -> Result<Subscription, ServiceError> {
        let (subscription, topic, dead_letter_topic) = self.check(request)?;
        let _changing = self.inner.changing.lock().await;
        self.inner.topics.require_registered(&topic)?;
        let key = subscription.key();
        if self.running().contains_key(&key) {
            return Err(ServiceError::SubscriptionExists {
                id: subscription.id,
            });
        }
        let of_tenant = self
            .running()
            .values()
            .filter(|r| {
                r.subscription.namespace == subscription.namespace
                    && r.subscription.tenant == subscription.tenant
            })
            .count();
        let limit = self.inner.config.max_per_tenant;
        if of_tenant >= limit {
            return Err(ServiceError::LimitReached(format!(
                "tenant {} has {of_tenant} durable subscriptions; at most max_per_tenant ({limit}) are allowed",
                subscription.tenant
            )));
        }
        // A subscription stored but not running (unreadable at start, or
        // a delete that failed half way) keeps its group and progress.
        if self
            .state()
            .get(KeyKind::DurableSubscription, &key)
            .await?
            .is_some()
        {
            return Err(ServiceError::SubscriptionExists {
                id: subscription.id,
            });
        }
        let bus = &self.inner.services.bus;
        let marks = bus.watermarks(&topic).await?;
        if self
            .inner
            .topics
            .require_registered(&dead_letter_topic)
            .is_err()
        {
            // Shaped like its topic, replication included.
            let source = self.inner.topics.list(&Scope::topic(&topic)).await?;
            let (partitions, replication) = source
                .first()
                .map_or((marks.len().max(1) as u32, 1), |record| {
                    (record.topic.partitions(), record.topic.replication_factor())
                });
            let dead_letters =
                Topic::new(dead_letter_topic.clone(), partitions, replication, None)?;
            match self.inner.topics.create(dead_letters).await {
                Ok(_) | Err(ServiceError::TopicExists { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        // `from` becomes the group's position now, so that what is
        // published from here on is never missed, connected or not.
        let start: PartitionOffsets = marks
            .iter()
            .map(|m| {
                let offset = match subscription.from {
                    StartPosition::Earliest => m.start,
                    StartPosition::Latest => m.end,
                };
                (m.partition, offset)
            })
            .collect();
        let group = subscription.group();
        // Leftovers of an earlier subscription of this name.
        bus.delete_group(&topic, &group).await?;
        bus.set_group_offsets(&topic, &group, &start).await?;
        let progress = Progress {
            partitions: start
                .iter()
                .map(|(&partition, &offset)| {
                    let progress = PartitionProgress {
                        committed: offset,
                        through: offset,
                        unsettled: Default::default(),
                        dead_lettering: Vec::new(),
                    };
                    (partition, progress)
                })
                .collect(),
            totals: Default::default(),
        };
        let progress_row = serde_json::to_value(&progress).expect("progress serialises");
        self.state()
            .put(KeyKind::DurableProgress, &key, &progress_row)
            .await?;
        let row = serde_json::to_value(&subscription).expect("subscriptions serialise");
        if !self
            .state()
            .insert_new(KeyKind::DurableSubscription, &key, &row)
            .await?
        {
            return Err(ServiceError::SubscriptionExists {
                id: subscription.id,
            });
        }
        self.start_engine(subscription.clone(), progress);
        Ok(subscription)
    }

    /// The subscriptions matching `filter`.
    pub fn list(&self, filter: &SubscriptionFilter) -> Result<Vec<Subscription>, ServiceError> {
        let scope = Scope::new(filter.namespace.as_deref(), filter.tenant.as_deref(), None)?;
        let topic: Option<TopicName> = filter.topic.as_deref().map(str::parse).transpose()?;
        let mut subscriptions: Vec<Subscription> = self
            .running()
            .values()
            .map(|r| (*r.subscription).clone())
            .filter(|s| scope.covers_topic(&s.topic_name()))
            .filter(|s| topic.as_ref().is_none_or(|t| *t == s.topic_name()))
            .collect();
        subscriptions.sort_by_key(Subscription::key);
        Ok(subscriptions)
    }

    fn find(
        &self,
        namespace: &str,
        tenant: &str,
        id: &str,
    ) -> Result<(Arc<Subscription>, mpsc::Sender<Command>), ServiceError> {
        self.running()
            .get(&key(namespace, tenant, id))
            .map(|r| (Arc::clone(&r.subscription), r.commands.clone()))
            .ok_or_else(|| ServiceError::SubscriptionNotFound { id: id.to_owned() })
    }

    /// The definition and its live figures.
    pub async fn view(
        &self,
        namespace: &str,
        tenant: &str,
        id: &str,
    ) -> Result<SubscriptionView, ServiceError> {
        let (subscription, commands) = self.find(namespace, tenant, id)?;
        let (reply, answer) = oneshot::channel();
        let engine_gone = || ServiceError::SubscriptionNotFound { id: id.to_owned() };
        commands
            .send(Command::Figures { reply })
            .await
            .map_err(|_| engine_gone())?;
        let figures = answer.await.map_err(|_| engine_gone())?;
        let ends: HashMap<i32, i64> = match self
            .inner
            .services
            .bus
            .watermarks(&subscription.topic_name())
            .await
        {
            Ok(marks) => marks.iter().map(|m| (m.partition, m.end)).collect(),
            // The figures the engine has are worth showing without them.
            Err(error) => {
                tracing::warn!(%error, "cannot read watermarks for subscription figures");
                HashMap::new()
            }
        };
        let partitions = figures
            .partitions
            .iter()
            .map(|p| {
                let end_offset = ends.get(&p.partition).copied();
                PartitionView {
                    partition: p.partition,
                    committed: p.committed,
                    end_offset,
                    lag: end_offset.map(|end| (end - p.committed).max(0)),
                    in_flight: p.in_flight,
                }
            })
            .collect();
        let totals = figures.totals;
        Ok(SubscriptionView {
            subscription: (*subscription).clone(),
            in_flight: figures.partitions.iter().map(|p| p.in_flight).sum(),
            partitions,
            delivered: totals.delivered,
            acked: totals.acked,
            redelivered: totals.redelivered,
            dead_lettered: totals.dead_lettered,
            lost: totals.lost,
            consumers: figures.consumers,
        })
    }

    /// Ends its connections, deletes it, its progress and its group.
    pub async fn delete(
        &self,
        namespace: &str,
        tenant: &str,
        id: &str,
    ) -> Result<(), ServiceError> {
        let _changing = self.inner.changing.lock().await;
        let (subscription, commands) = self.find(namespace, tenant, id)?;
        self.stop(&subscription, &commands, "the subscription was deleted")
            .await;
        let key = subscription.key();
        self.state()
            .delete(KeyKind::DurableSubscription, &key)
            .await?;
        self.state().delete(KeyKind::DurableProgress, &key).await?;
        let bus = &self.inner.services.bus;
        if let Err(error) = bus
            .delete_group(&subscription.topic_name(), &subscription.group())
            .await
        {
            // A later create of the same name deletes it again.
            tracing::warn!(subscription = %key, %error, "cannot delete the consumer group");
        }
        Ok(())
    }

    /// Stops the engine and waits until it has left the group.
    async fn stop(
        &self,
        subscription: &Subscription,
        commands: &mpsc::Sender<Command>,
        reason: &str,
    ) {
        self.running().remove(&subscription.key());
        let stop = Command::Stop {
            reason: reason.to_owned(),
        };
        if commands.send(stop).await.is_ok() {
            // The engine drops its receiver when it is done.
            commands.closed().await;
        }
    }

    /// Deletes the subscriptions of a deleted topic.
    pub async fn forget_topic(&self, topic: &TopicName) {
        let of_topic: Vec<Arc<Subscription>> = self
            .running()
            .values()
            .filter(|r| r.subscription.topic_name() == *topic)
            .map(|r| Arc::clone(&r.subscription))
            .collect();
        for subscription in of_topic {
            if let Err(error) = self
                .delete(
                    &subscription.namespace,
                    &subscription.tenant,
                    &subscription.id,
                )
                .await
            {
                tracing::warn!(subscription = %subscription.key(), %error, "cannot delete the subscription of a deleted topic");
            }
        }
    }

    /// A new connection: its stream of pushes ends when the subscription
    /// is deleted or the server shuts down; dropping it hands its unsettled
    /// records to the other connections.
    pub async fn connect(
        &self,
        namespace: &str,
        tenant: &str,
        id: &str,
    ) -> Result<impl Stream<Item = Push> + Send + use<>, ServiceError> {
        let (_, commands) = self.find(namespace, tenant, id)?;
        let connection = self
            .inner
            .next_connection
            .fetch_add(1, AtomicOrdering::Relaxed);
        let (pushes, receiver) = mpsc::channel(self.inner.config.connection_buffer.max(1));
        let (reply, room) = oneshot::channel();
        let gone = || ServiceError::SubscriptionNotFound { id: id.to_owned() };
        commands
            .send(Command::Connect {
                connection,
                pushes,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        let room = room.await.map_err(|_| gone())?;
        let guard = Disconnect {
            connection,
            commands,
        };
        let pushes = ReceiverStream::new(receiver);
        Ok(futures::StreamExt::map(pushes, move |push| {
            let _connected = &guard;
            // The engine waits for room when every buffer was full.
            room.notify_one();
            push
        }))
    }

    /// Settles deliveries; answers once the result is stored.
    pub async fn settle(
        &self,
        namespace: &str,
        tenant: &str,
        id: &str,
        settlement: Settlement,
        ids: Vec<String>,
    ) -> Result<Settled, ServiceError> {
        let max = self.inner.config.max_ids_per_request;
        if ids.is_empty() || ids.len() > max {
            return Err(ServiceError::InvalidDurable(format!(
                "ids: between 1 and {max} delivery ids are required"
            )));
        }
        let parsed = ids
            .iter()
            .map(|text| text.parse::<DeliveryId>())
            .collect::<Result<Vec<_>, MalformedDeliveryId>>()?;
        let (_, commands) = self.find(namespace, tenant, id)?;
        let (reply, answer) = oneshot::channel();
        let unavailable = || ServiceError::SubscriptionUnavailable { id: id.to_owned() };
        let settle = Command::Settle {
            settlement,
            ids: parsed,
            reply,
        };
        let timeout = Duration::from_millis(self.inner.config.settle_timeout_ms);
        let answered = tokio::time::timeout(timeout, async move {
            commands.send(settle).await.ok()?;
            answer.await.ok()
        });
        let results = answered.await.ok().flatten().ok_or_else(unavailable)?;
        let mut settled = Settled::default();
        for (text, ok) in ids.into_iter().zip(results) {
            if ok {
                settled.settled.push(text);
            } else {
                settled.stale.push(text);
            }
        }
        Ok(settled)
    }

    /// Waits for the engines to store their last progress, at shutdown
    /// (the shutdown token stops them).
    pub async fn wait_stopped(&self, timeout: Duration) {
        self.inner.engines.close();
        if tokio::time::timeout(timeout, self.inner.engines.wait())
            .await
            .is_err()
        {
            tracing::warn!("durable subscriptions did not stop in time");
        }
    }
}

/// A connection's end: hands its records to the others.
#[derive(Debug)]
struct Disconnect {
    connection: u64,
    commands: mpsc::Sender<Command>,
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        let command = Command::Disconnect {
            connection: self.connection,
        };
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(command) {
            let commands = self.commands.clone();
            tokio::spawn(async move {
                let _ = commands.send(command).await;
            });
        }
    }
}

/// The topic `name` names in `namespace`/`tenant`: a short name, or the
/// Kafka name of a topic there.
fn topic_of(
    namespace: &Fragment,
    tenant: &Fragment,
    name: &str,
    field: &str,
) -> Result<TopicName, ServiceError> {
    let topic = if name.contains('.') {
        let topic: TopicName = name
            .parse()
            .map_err(|error: NameError| invalid(field, error))?;
        if topic.namespace() != namespace.as_str() || topic.tenant() != tenant.as_str() {
            return Err(invalid(
                field,
                "must be a topic of the subscription's namespace and tenant",
            ));
        }
        topic
    } else {
        TopicName::new(namespace.as_str(), tenant.as_str(), name)
            .map_err(|error| invalid(field, error))?
    };
    Ok(topic)
}
