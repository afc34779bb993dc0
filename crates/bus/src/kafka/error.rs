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

/// Whether the broker refused the producer's own state (its id, epoch or
/// sequence numbers), which a new producer starts afresh. Tansu answers
/// UNKNOWN_SERVER_ERROR (`Unknown`) where Kafka answers one of the others.
pub(super) fn refuses_producer_state(source: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        source.rdkafka_error_code(),
        Some(
            Unknown
                | OutOfOrderSequenceNumber
                | DuplicateSequenceNumber
                | UnknownProducerId
                | InvalidProducerEpoch
                | InvalidProducerIdMapping
                | ProducerFenced
        )
    )
}

/// Whether `error` only says a consumer reached the end of a partition,
/// which readers with `enable.partition.eof` wait for.
pub(super) fn is_partition_end(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
}

pub(super) fn classify(operation: Operation, topic: &str, source: KafkaError) -> BusError {
    let topic = topic.to_owned();
    // Admin results carry their code outside `rdkafka_error_code`.
    let code = match &source {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    if let KafkaError::AdminOpCreation(_) = source {
        // librdkafka refused to build the request (a replication factor
        // over 10000, say): the request itself is wrong.
        return BusError::Rejected {
            operation,
            topic,
            source: Box::new(source),
        };
    }
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
        let unbuildable = classify(
            Operation::CreateTopic,
            "t",
            KafkaError::AdminOpCreation("replication_factor out of expected range".into()),
        );
        assert!(
            matches!(unbuildable, BusError::Rejected { .. }),
            "{unbuildable}"
        );
        let refused = classify(
            Operation::Produce,
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert!(matches!(refused, BusError::Rejected { .. }));
    }

    #[test]
    fn refused_producer_state_is_told_from_other_failures() {
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownProducerId);
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        let replicas = KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas);
        assert!(refuses_producer_state(&refused));
        assert!(!refuses_producer_state(&timed_out));
        assert!(!refuses_producer_state(&replicas));
    }
}
