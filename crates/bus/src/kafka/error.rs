//! Sorting librdkafka's errors into [`BusError`]'s kinds.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::{BusError, Operation};

/// Codes that mean the broker is down, unreachable, going away or busy
/// electing a leader, or that the producer must be replaced: a later retry
/// can succeed, so they become 503s upstream. A broker that is shutting
/// down answers produces with UNKNOWN_SERVER_ERROR (`Unknown`), and so does
/// one that lost an idempotent producer's state ([`super::producer`]).
fn is_unavailable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        Unknown
            | Fatal
            | PurgeQueue
            | PurgeInflight
            | BrokerTransportFailure
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

/// Whether the error is the broker's own answer, as opposed to one that
/// librdkafka raised locally (timeouts, lost connections): Kafka's error
/// codes are -1 and up, librdkafka's own are below -100.
pub(super) fn broker_answered(source: &KafkaError) -> bool {
    source
        .rdkafka_error_code()
        .is_some_and(|code| code as i32 >= RDKafkaErrorCode::Unknown as i32)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_going_away_or_a_purged_producer_is_unavailable() {
        for code in [
            RDKafkaErrorCode::Unknown,
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::PurgeInflight,
            RDKafkaErrorCode::MessageTimedOut,
        ] {
            let error = classify(Operation::Produce, "t", KafkaError::MessageProduction(code));
            assert!(error.is_retriable(), "{code:?}: {error}");
        }
        let refused = classify(
            Operation::Produce,
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert!(matches!(refused, BusError::Rejected { .. }));
    }

    #[test]
    fn the_broker_answered_when_the_code_is_kafkas() {
        let answered = KafkaError::MessageProduction(RDKafkaErrorCode::Unknown);
        let local = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(broker_answered(&answered));
        assert!(!broker_answered(&local));
    }
}
