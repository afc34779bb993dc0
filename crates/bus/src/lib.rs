//! The transport under Acteon: the [`BusBackend`] trait and its two
//! implementations, Kafka ([`KafkaBackend`]) and in-memory ([`MemoryBackend`]).
//!
//! Both backends have the same observable semantics, and one conformance suite
//! (the `testing` feature's [`conformance`] module) runs against each of them.

mod backend;
mod error;
mod kafka;
mod memory;

#[cfg(feature = "testing")]
pub mod conformance;

pub use acteon_core::SubscriptionEvent;
pub use backend::{
    BusBackend, CommitOffsets, EventStream, GroupId, GroupIdError, GroupMember, PartitionOffsets,
    ProduceFigures, Watermarks,
};
pub use error::{BusError, Operation};
pub use kafka::{
    CountingContext, KAFKA_BOOTSTRAP_ENV, KafkaBackend, KafkaConfig, ProduceTally,
    ProtectedProperty, kafka_payload, kafka_record,
};
pub use memory::{MemoryBackend, MemoryConfig};
