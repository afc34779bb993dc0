//! Publishing to and subscribing from registered topics.

use std::sync::Arc;

use acteon_bus::{BusBackend, EventStream, GroupId};
use acteon_core::{
    DeliveryReceipt, OutgoingMessage, StartPosition, TopicName, check_client_headers,
};

use crate::error::ServiceError;
use crate::topics::TopicRegistry;

#[derive(Debug, Clone)]
pub struct MessageService {
    topics: TopicRegistry,
    bus: Arc<dyn BusBackend>,
}

impl MessageService {
    pub fn new(topics: TopicRegistry, bus: Arc<dyn BusBackend>) -> Self {
        Self { topics, bus }
    }

    /// Produces `message` to a registered topic and returns the broker's receipt.
    pub async fn publish(
        &self,
        topic: &TopicName,
        message: OutgoingMessage,
    ) -> Result<DeliveryReceipt, ServiceError> {
        check_client_headers(&message.headers)?;
        self.topics.get(topic).await?;
        Ok(self.bus.produce(topic, message).await?)
    }

    /// Joins `group` on a registered topic.
    pub async fn subscribe(
        &self,
        topic: &TopicName,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<EventStream, ServiceError> {
        self.topics.get(topic).await?;
        Ok(self.bus.subscribe(topic, group, start).await?)
    }
}
