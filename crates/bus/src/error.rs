//! Errors of the transport, typed so the HTTP layer can pick a status.

use std::error::Error as StdError;
use std::fmt;

use thiserror::Error;

/// The backend operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    CreateTopic,
    DeleteTopic,
    Produce,
    Subscribe,
    Consume,
    Commit,
    DeleteGroup,
    Metadata,
    Flush,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CreateTopic => "create topic",
            Self::DeleteTopic => "delete topic",
            Self::Produce => "produce",
            Self::Subscribe => "subscribe",
            Self::Consume => "consume",
            Self::Commit => "commit offsets",
            Self::DeleteGroup => "delete group",
            Self::Metadata => "fetch metadata",
            Self::Flush => "flush",
        })
    }
}

type Source = Box<dyn StdError + Send + Sync>;

/// A failed backend operation.
#[derive(Debug, Error)]
pub enum BusError {
    #[error("topic {topic} does not exist")]
    UnknownTopic { topic: String },

    #[error("topic {topic} already exists with {existing} partitions, not {requested}")]
    TopicConflict {
        topic: String,
        existing: u32,
        requested: u32,
    },

    /// The broker could not be reached or did not answer in time; a retry
    /// later may succeed.
    #[error("broker unavailable: {operation} on {topic} failed: {source}")]
    Unavailable {
        operation: Operation,
        topic: String,
        source: Source,
    },

    /// The broker refused the request itself (invalid replication factor,
    /// partition count or topic setting, a message too large).
    #[error("{operation} on {topic} was refused: {source}")]
    Rejected {
        operation: Operation,
        topic: String,
        source: Source,
    },

    /// The broker answered with an error that a retry will not fix.
    #[error("{operation} on {topic} failed: {source}")]
    Broker {
        operation: Operation,
        topic: String,
        source: Source,
    },
}

impl BusError {
    /// Whether trying the same operation again later can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
