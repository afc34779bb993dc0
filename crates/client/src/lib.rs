//! Rust client for the Acteon HTTP API: topics, publish with receipts,
//! subscriptions read from Server-Sent Events as a [`Stream`](futures::Stream),
//! durable subscriptions, silences, rules, the audit trail and the schema
//! registry.
//!
//! ```
//! use acteon_client::{Client, TopicFilter};
//! use acteon_core::{OutgoingMessage, StartPosition, SubscriptionEvent, TopicName, TopicSpec};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut config = acteon_server::Config::default();
//! # config.server.listen = "127.0.0.1:0".parse()?;
//! # config.state.engine = acteon_server::config::StateEngine::Memory;
//! # let server = acteon_server::Server::build(config).await?;
//! # let listener = server.bind().await?;
//! # let base_url = format!("http://{}", listener.local_addr()?);
//! # tokio::spawn(server.serve(listener));
//! // e.g. "http://127.0.0.1:8080"
//! let client = Client::builder(base_url).build()?;
//! let topic = client
//!     .create_bus_topic(&TopicSpec {
//!         namespace: "agents".into(),
//!         tenant: "demo".into(),
//!         name: "inbox".into(),
//!         partitions: 4,
//!         replication_factor: 1,
//!         retention_ms: None,
//!         schema: None,
//!     })
//!     .await?;
//! let name: &TopicName = topic.topic.name();
//!
//! let mut events = client.subscribe("planner", name, StartPosition::Earliest).await?;
//! let receipt = client
//!     .publish_message(name, &OutgoingMessage {
//!         key: Some("task-1".into()),
//!         payload: serde_json::json!({ "seq": 1 }),
//!         headers: Default::default(),
//!     })
//!     .await?;
//! if let Some(receipt) = receipt.receipt() {
//!     println!("stored at partition {} offset {}", receipt.partition, receipt.offset);
//! }
//!
//! while let Some(event) = events.next().await {
//!     if let SubscriptionEvent::Message(message) = event? {
//!         println!("{}: {}", message.offset, message.payload);
//!         break;
//!     }
//! }
//! assert_eq!(client.list_bus_topics(&TopicFilter::default()).await?.len(), 1);
//! # Ok(())
//! # }
//! ```

mod client;
mod durable;
mod error;
mod pipeline;
mod schemas;
mod subscription;

pub use client::{BatchRecord, Client, ClientBuilder, PublishOutcome, TopicFilter};
pub use durable::{
    BATCH_IDS, BATCH_WINDOW, Deliveries, Delivery, DurableEvent, DurableFilter, DurableRef,
    DurableSubscription, DurableSubscriptionSpec, DurableSubscriptionView, PartitionFigures,
    Settled, Settlement,
};
pub use error::Error;
pub use pipeline::{
    AuditOutcome, AuditPage, AuditQuery, AuditRecord, Rule, Silence, SilenceSpec, UnknownOutcome,
};
pub use schemas::{CompatibilityCheck, Registered, SubjectRef};
pub use subscription::Subscription;
