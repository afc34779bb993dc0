//! The seam between Acteon's HTTP pipeline and the transport.

use std::fmt;
use std::time::Duration;

use acteon_core::{
    DeliveryReceipt, OutgoingMessage, StartPosition, SubscriptionEvent, Topic, TopicName,
};
use async_trait::async_trait;
use futures::stream::BoxStream;
use thiserror::Error;

use crate::BusError;

/// The stream a subscription returns. It ends when the topic is deleted;
/// dropping it leaves the consumer group.
pub type EventStream = BoxStream<'static, Result<SubscriptionEvent, BusError>>;

/// A consumer group id: 1 to 249 printable ASCII characters.
///
/// 249 is Kafka's own limit for names; control characters and spaces are
/// refused because group ids show up in logs and admin tools.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(String);

/// A group id that [`GroupId::parse`] refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("subscription id {0:?} must be 1 to 249 printable ASCII characters without spaces")]
pub struct GroupIdError(pub String);

impl GroupId {
    pub fn parse(value: &str) -> Result<Self, GroupIdError> {
        let printable = value.bytes().all(|b| b.is_ascii_graphic());
        if value.is_empty() || value.len() > 249 || !printable {
            return Err(GroupIdError(value.to_owned()));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A transport for topics of JSON messages with Kafka's semantics:
/// partitions, keys, per-partition offsets and consumer groups.
///
/// Object safe; the server holds it as `Arc<dyn BusBackend>`.
#[async_trait]
pub trait BusBackend: Send + Sync + fmt::Debug {
    /// A short name for logs and readiness reports ("kafka", "memory").
    fn kind(&self) -> &'static str;

    /// Creates the topic. Creating a topic that already exists with the same
    /// partition count succeeds; a different count is
    /// [`BusError::TopicConflict`].
    async fn create_topic(&self, topic: &Topic) -> Result<(), BusError>;

    /// Deletes the topic and its records. Unknown: [`BusError::UnknownTopic`].
    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError>;

    /// Appends one message and returns where it landed. Messages with the same
    /// key always land on the same partition; offsets grow per partition.
    async fn produce(
        &self,
        topic: &TopicName,
        message: OutgoingMessage,
    ) -> Result<DeliveryReceipt, BusError>;

    /// Joins consumer group `group` on `topic`. Live members of one group
    /// share the topic's partitions, so each record reaches one of them;
    /// different groups each see every record. A partition the member has no
    /// position in is read from `start`. Nothing is committed: a group's
    /// position lives only as long as its members.
    async fn subscribe(
        &self,
        topic: &TopicName,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<EventStream, BusError>;

    /// Whether the transport can serve requests now.
    async fn check_ready(&self) -> Result<(), BusError>;

    /// Waits until every accepted message is acknowledged, for shutdown.
    async fn flush(&self, timeout: Duration) -> Result<(), BusError>;
}
