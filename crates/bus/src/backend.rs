//! The seam between Acteon's HTTP pipeline and the transport.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use acteon_core::{
    DeliveryReceipt, OutgoingMessage, StartPosition, SubscriptionEvent, Topic, TopicName,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
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

    /// The id Acteon gives the group of subscription `id` of `kind`
    /// ("sub", "durable") in one namespace and tenant, so that tenants
    /// choosing the same id never share a group. Namespace and tenant
    /// names cannot contain '.', so the scoped ids of distinct triples
    /// differ.
    pub fn scoped(kind: &str, namespace: &str, tenant: &str, id: &GroupId) -> Self {
        Self(format!("acteon.{kind}.{namespace}.{tenant}.{id}"))
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Per partition, the offset of the next record a group reads.
pub type PartitionOffsets = BTreeMap<i32, i64>;

/// The offsets a partition holds: `start` is the oldest retained record,
/// `end` the offset the next record will get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// Commits a group member's positions. Commits are asynchronous and
/// coalesce: a later commit of a partition replaces an earlier one not yet
/// sent, and a commit that fails is retried with the next one.
pub trait CommitOffsets: Send + Sync + fmt::Debug {
    fn commit(&self, offsets: &PartitionOffsets);
}

/// A member of a consumer group that commits its positions itself.
pub struct GroupMember {
    pub events: EventStream,
    pub offsets: Box<dyn CommitOffsets>,
    /// Resolves once the member, its stream dropped, has made its last
    /// commit and left the group.
    pub left: BoxFuture<'static, ()>,
}

impl GroupMember {
    /// Leaves the group and waits until that is done, so that what is done
    /// to the group next (deleting it, setting its offsets) is not undone
    /// by this member's last commit.
    pub async fn leave(self) {
        drop(self.events);
        self.left.await;
    }
}

impl fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupMember")
            .field("offsets", &self.offsets)
            .finish_non_exhaustive()
    }
}

/// Produce requests sent to the broker and the records they carried, since
/// the backend started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProduceFigures {
    pub requests: u64,
    pub records: u64,
}

/// A transport for topics of JSON messages with Kafka's semantics:
/// partitions, keys, per-partition offsets and consumer groups.
///
/// Object safe; the server holds it as `Arc<dyn BusBackend>`.
#[async_trait]
pub trait BusBackend: Send + Sync + fmt::Debug {
    /// A short name for logs and readiness reports ("kafka", "memory").
    fn kind(&self) -> &'static str;

    /// Whether topics' records outlive this process (Kafka), or go with it
    /// (the in-memory backend): positions stored elsewhere only mean
    /// something in the first case.
    fn keeps_records(&self) -> bool;

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
    /// different groups each see every record. A member reads a partition
    /// from the group's committed position, or from `start` where the group
    /// has none. What the stream yields is committed as delivered, so a
    /// partition that moves to another member (or a member that joins after
    /// the last one left) goes on where the group stopped.
    async fn subscribe(
        &self,
        topic: &TopicName,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<EventStream, BusError>;

    /// Reads `topic` in no group: every stream gets every record, each
    /// partition from `start`. The stream first yields `Assigned` with
    /// every partition; every record produced after that reaches it. A
    /// stream too slow for what arrives is told with `Lagged` how many
    /// records of a partition it missed; it never holds back the others.
    async fn broadcast(
        &self,
        topic: &TopicName,
        start: StartPosition,
    ) -> Result<EventStream, BusError>;

    /// Joins `group` as [`BusBackend::subscribe`] does, but commits nothing
    /// by itself: the member commits through [`GroupMember::offsets`].
    /// After a rebalance a member may be handed records again from the
    /// group's committed position.
    async fn join_group(
        &self,
        topic: &TopicName,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<GroupMember, BusError>;

    /// Sets the committed positions of a group that has no live member.
    async fn set_group_offsets(
        &self,
        topic: &TopicName,
        group: &GroupId,
        offsets: &PartitionOffsets,
    ) -> Result<(), BusError>;

    /// Forgets a group's committed positions. A group that does not exist
    /// is not an error.
    async fn delete_group(&self, topic: &TopicName, group: &GroupId) -> Result<(), BusError>;

    /// The watermarks of every partition of `topic`, in partition order.
    async fn watermarks(&self, topic: &TopicName) -> Result<Vec<Watermarks>, BusError>;

    /// Whether the transport can serve requests now.
    async fn check_ready(&self) -> Result<(), BusError>;

    /// Waits until every accepted message is acknowledged, for shutdown.
    async fn flush(&self, timeout: Duration) -> Result<(), BusError>;

    /// What the transport's produce requests carried so far, where it sends
    /// requests of many records (Kafka); `None` otherwise.
    fn produce_figures(&self) -> Option<ProduceFigures> {
        None
    }
}
