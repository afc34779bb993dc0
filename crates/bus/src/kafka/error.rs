//! Sorting librdkafka's errors into [`BusError`]'s kinds.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::{BusError, Operation};

/// Codes that mean the broker is down, unreachable, or busy electing a
/// leader: a later retry can succeed, so they become 503s upstream.
fn is_unavailable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | Resolve
            | MessageTimedOut
            | AllBrokersDown
            | OperationTimedOut
            | QueueFull
            | WaitingForCoordinator
            | TimedOutQueue
            | LeaderNotAvailable
            | NotLeaderForPartition
            | RequestTimedOut
            | BrokerNotAvailable
            | ReplicaNotAvailable
            | NetworkException
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | KafkaStorageError
            | PreferredLeaderNotAvailable
            | EligibleLeadersNotAvailable
    )
}

/// Codes that mean the request itself was wrong: a client error upstream.
fn is_rejection(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        InvalidPartitions
            | InvalidReplicationFactor
            | InvalidReplicaAssignment
            | InvalidConfig
            | PolicyViolation
            | InvalidRequest
            | InvalidTopic
            | MessageSizeTooLarge
            | MessageBatchTooLarge
            | InvalidRecord
    )
}

pub(super) fn classify(operation: Operation, topic: &str, source: KafkaError) -> BusError {
    let topic = topic.to_owned();
    // Admin results carry their code outside `rdkafka_error_code`.
    let code = match &source {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            BusError::UnknownTopic { topic }
        }
        Some(code) if is_rejection(code) => BusError::Rejected {
            operation,
            topic,
            source: Box::new(source),
        },
        Some(code) if is_unavailable(code) => BusError::Unavailable {
            operation,
            topic,
            source: Box::new(source),
        },
        _ => BusError::Broker {
            operation,
            topic,
            source: Box::new(source),
        },
    }
}
