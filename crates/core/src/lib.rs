//! Domain types shared by every Acteon crate.
//!
//! Nothing here does I/O. Types whose values have rules (topic names, topic
//! settings, header names) can only be built through a constructor that checks
//! them, so a value that exists is valid: "parse, don't validate later".

mod message;
mod name;
mod schema;
mod scope;
mod topic;

pub use message::{
    BusMessage, DeliveryReceipt, HeaderError, Headers, OutgoingMessage, RESERVED_HEADER_PREFIX,
    StartPosition, StartPositionError, SubscriptionEvent, SubscriptionMode, check_client_headers,
};
pub use name::{Fragment, FragmentKind, NameError, TopicName};
pub use schema::{
    Compatibility, SchemaBinding, SchemaVersion, SchemaVersionRef, SchemaVersionRefError,
};
pub use scope::{DisjointScopes, Pattern, Scope, WILDCARD};
pub use topic::{MAX_PARTITIONS, MAX_RETENTION_MS, Topic, TopicError, TopicRecord, TopicSpec};
