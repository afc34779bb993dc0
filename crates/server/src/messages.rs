//! Publishing to and subscribing from registered topics.

use std::sync::Arc;

use acteon_bus::{BusBackend, EventStream, GroupId};
use acteon_core::{OutgoingMessage, StartPosition, TopicName, check_client_headers};

use crate::error::ServiceError;
use crate::pipeline::{Pipeline, Published};
use crate::topics::TopicRegistry;

#[derive(Debug, Clone)]
pub struct MessageService {
    topics: TopicRegistry,
    bus: Arc<dyn BusBackend>,
    pipeline: Arc<Pipeline>,
}

impl MessageService {
    pub fn new(topics: TopicRegistry, bus: Arc<dyn BusBackend>, pipeline: Arc<Pipeline>) -> Self {
        Self {
            topics,
            bus,
            pipeline,
        }
    }

    /// Checks `message`, passes it through the pipeline, and produces it to
    /// a registered topic unless a stage stops it.
    pub async fn publish(
        &self,
        topic: &TopicName,
        message: OutgoingMessage,
        principal: Option<&str>,
    ) -> Result<Published, ServiceError> {
        check_client_headers(&message.headers)?;
        self.topics.require_registered(topic)?;
        self.pipeline.publish(topic, message, principal).await
    }

    /// Joins `group` on a registered topic.
    pub async fn subscribe(
        &self,
        topic: &TopicName,
        group: &GroupId,
        start: StartPosition,
    ) -> Result<EventStream, ServiceError> {
        self.topics.require_registered(topic)?;
        Ok(self.bus.subscribe(topic, group, start).await?)
    }
}
