//! Publishing to and subscribing from registered topics.

use std::future::Future;
use std::sync::Arc;

use acteon_bus::{BusBackend, EventStream, GroupId};
use acteon_core::{
    OutgoingMessage, StartPosition, SubscriptionMode, TopicName, check_client_headers,
};
use futures::future::{Either, join_all, ready};

use crate::error::ServiceError;
use crate::idempotency::{Claim, IdempotencyWindow};
use crate::limits::LimitsConfig;
use crate::pipeline::{Pipeline, Published};
use crate::schemas::registry::{Bound, SchemaError, SchemaRegistry, SubjectName};
use crate::shared::SharedSubscriptions;
use crate::topics::TopicRegistry;

/// A publish's answer, and whether it is an earlier publish's, given again
/// for a repeated idempotency key.
#[derive(Debug)]
pub struct Answered {
    pub published: Published,
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct MessageService {
    topics: TopicRegistry,
    bus: Arc<dyn BusBackend>,
    pipeline: Arc<Pipeline>,
    limits: Arc<LimitsConfig>,
    max_batch_records: usize,
    idempotency: Arc<IdempotencyWindow>,
    schemas: Arc<SchemaRegistry>,
    shared: SharedSubscriptions,
}

impl MessageService {
    pub fn new(
        topics: TopicRegistry,
        bus: Arc<dyn BusBackend>,
        pipeline: Arc<Pipeline>,
        limits: Arc<LimitsConfig>,
        max_batch_records: usize,
        idempotency: Arc<IdempotencyWindow>,
        schemas: Arc<SchemaRegistry>,
    ) -> Self {
        Self {
            topics,
            shared: SharedSubscriptions::new(Arc::clone(&bus)),
            bus,
            pipeline,
            limits,
            max_batch_records,
            idempotency,
            schemas,
        }
    }

    /// A client's headers only, and the key and headers within `[limits]`.
    fn check(&self, message: &OutgoingMessage) -> Result<(), ServiceError> {
        check_client_headers(&message.headers)?;
        let limits = &self.limits;
        let too_big = |what: String| Err(ServiceError::InvalidMessage(what));
        if let Some(key) = message
            .key
            .as_deref()
            .filter(|key| key.len() > limits.max_key_bytes)
        {
            return too_big(format!(
                "key is {} bytes; at most max_key_bytes ({}) are allowed",
                key.len(),
                limits.max_key_bytes
            ));
        }
        if message.headers.len() > limits.max_headers {
            return too_big(format!(
                "{} headers; at most max_headers ({}) are allowed",
                message.headers.len(),
                limits.max_headers
            ));
        }
        let header_bytes: usize = message.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if header_bytes > limits.max_header_bytes {
            return too_big(format!(
                "headers are {header_bytes} bytes; at most max_header_bytes ({}) are allowed",
                limits.max_header_bytes
            ));
        }
        Ok(())
    }

    /// Checks `message`, passes it through the pipeline, and produces it to
    /// a registered topic unless a stage stops it.
    pub async fn publish(
        &self,
        topic: &TopicName,
        message: OutgoingMessage,
        idempotency_key: Option<&str>,
        principal: Option<&str>,
    ) -> Result<Answered, ServiceError> {
        self.check(&message)?;
        let schema = self.schema_of(topic)?;
        self.admit(topic, message, idempotency_key, principal, schema.as_ref())
            .await
    }

    /// The validator of a registered topic's schema, if it is bound.
    fn schema_of(&self, topic: &TopicName) -> Result<Option<Bound>, ServiceError> {
        let Some(binding) = self.topics.schema_of(topic)? else {
            return Ok(None);
        };
        let subject = SubjectName::of_topic(topic, &binding.subject)?;
        let bound =
            self.schemas
                .bound(&subject, binding.version)
                .map_err(|_| SchemaError::Dangling {
                    topic: topic.kafka_topic_name().to_owned(),
                    binding: binding.to_string(),
                })?;
        Ok(Some(bound))
    }

    /// Decides `message`'s fate now, unless `idempotency_key` was used
    /// before on this topic, for this record; the future produces and
    /// audits it, or gives the earlier answer.
    fn admit(
        &self,
        topic: &TopicName,
        message: OutgoingMessage,
        idempotency_key: Option<&str>,
        principal: Option<&str>,
        schema: Option<&Bound>,
    ) -> impl Future<Output = Result<Answered, ServiceError>> + Send + use<> {
        let ticket = match idempotency_key.map(|key| self.idempotency.claim(topic, key, &message)) {
            None => None,
            Some(Ok(Claim::New(ticket))) => Some(ticket),
            Some(Ok(Claim::Replay(published))) => {
                return Either::Left(ready(Ok(Answered {
                    published,
                    replayed: true,
                })));
            }
            Some(Err(error)) => return Either::Left(ready(Err(error))),
        };
        let publishing = self
            .pipeline
            .admit(topic, message, principal, ticket, schema);
        Either::Right(async move {
            Ok(Answered {
                published: publishing.await?,
                replayed: false,
            })
        })
    }

    /// Publishes each of `messages` as [`publish`](Self::publish) would, to
    /// one registered topic, under one look-up of its schema; one record's
    /// failure is its own. Every record
    /// is decided before any is produced, and they are handed to the bus in
    /// order, so records of one key keep it.
    pub async fn publish_batch(
        &self,
        topic: &TopicName,
        messages: Vec<(OutgoingMessage, Option<String>)>,
        principal: Option<&str>,
    ) -> Result<Vec<Result<Answered, ServiceError>>, ServiceError> {
        let max = self.max_batch_records;
        if messages.is_empty() || messages.len() > max {
            return Err(ServiceError::InvalidMessage(format!(
                "records: from 1 to max_batch_records ({max}) records, got {}",
                messages.len()
            )));
        }
        let schema = self.schema_of(topic)?;
        let admitted: Vec<_> = messages
            .into_iter()
            .map(|(message, key)| match self.check(&message) {
                Ok(()) => Either::Right(self.admit(
                    topic,
                    message,
                    key.as_deref(),
                    principal,
                    schema.as_ref(),
                )),
                Err(error) => Either::Left(ready(Err(error))),
            })
            .collect();
        Ok(join_all(admitted).await)
    }

    /// Subscription `id` on a registered topic. Shared, it takes a share of
    /// this process's member of a consumer group of the topic's namespace
    /// and tenant (another tenant's subscription of the same id is another
    /// group); broadcast, it reads every record in no group.
    pub async fn subscribe(
        &self,
        topic: &TopicName,
        id: &GroupId,
        start: StartPosition,
        mode: SubscriptionMode,
    ) -> Result<EventStream, ServiceError> {
        self.topics.require_registered(topic)?;
        let events = match mode {
            SubscriptionMode::Shared => {
                let group = GroupId::scoped("sub", topic.namespace(), topic.tenant(), id);
                self.shared.connect(topic, group, start).await?
            }
            SubscriptionMode::Broadcast => self.bus.broadcast(topic, start).await?,
        };
        Ok(events)
    }
}
