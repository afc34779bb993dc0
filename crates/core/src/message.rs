//! Messages on their way in and out, receipts, and where a reader starts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Message headers: UTF-8 names and values, kept in name order.
pub type Headers = BTreeMap<String, String>;

/// Header names with this prefix are stamped by the server; clients may not
/// set them, so a consumer can trust that such a header came from Acteon.
pub const RESERVED_HEADER_PREFIX: &str = "acteon.";

/// A header a client may not send.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("header {0:?} uses the reserved prefix \"acteon.\", which only the server may set")]
    Reserved(String),
    #[error("header names must not be empty")]
    EmptyName,
}

/// Checks the headers a client asked to publish.
pub fn check_client_headers(headers: &Headers) -> Result<(), HeaderError> {
    for name in headers.keys() {
        if name.is_empty() {
            return Err(HeaderError::EmptyName);
        }
        let reserved = name
            .get(..RESERVED_HEADER_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(RESERVED_HEADER_PREFIX));
        if reserved {
            return Err(HeaderError::Reserved(name.clone()));
        }
    }
    Ok(())
}

/// What a producer hands to the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    /// Messages with the same key land on the same partition.
    #[serde(default)]
    pub key: Option<String>,
    pub payload: serde_json::Value,
    #[serde(default)]
    pub headers: Headers,
}

/// A record as read back from a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BusMessage {
    /// Kafka name of the topic.
    pub topic: String,
    /// `null` for a record without a key.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub key: Option<String>,
    pub payload: serde_json::Value,
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub headers: Headers,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: DateTime<Utc>,
}

/// The broker's acknowledgement of a produced message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryReceipt {
    /// Kafka name of the topic.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub produced_at: DateTime<Utc>,
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionEvent {
    /// The partitions this member of the group reads from now on. Sent when
    /// the member first gets an assignment and after every rebalance, so a
    /// reader knows when records produced from now on will reach it.
    Assigned(Vec<i32>),
    /// One record, shared: a broadcast hands the same record to every
    /// reader.
    Message(Arc<BusMessage>),
    /// Retention removed records of `partition` before this reader got to
    /// them: `skipped` records were never delivered, and reading goes on
    /// from the oldest one retained.
    Lagged { partition: i32, skipped: i64 },
}

/// Where a subscription starts reading a partition it has no position in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// The oldest record still retained.
    Earliest,
    /// Only records produced after the partition was assigned.
    #[default]
    Latest,
}

impl fmt::Display for StartPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        })
    }
}

/// How the connections of one subscription id read a topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionMode {
    /// Connections with the same id compete for the topic's partitions, as
    /// the members of one Kafka consumer group do, and the group keeps its
    /// positions.
    #[default]
    Shared,
    /// Every connection gets every record from its start position, in no
    /// group: nothing is shared and no position is kept.
    Broadcast,
}

impl SubscriptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Broadcast => "broadcast",
        }
    }
}

/// A start position other than `earliest` or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("start position must be \"earliest\" or \"latest\", got {0:?}")]
pub struct StartPositionError(pub String);

impl FromStr for StartPosition {
    type Err = StartPositionError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            other => Err(StartPositionError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_prefix_is_refused_in_any_case() {
        for name in ["acteon.trace", "Acteon.Trace", "ACTEON.x"] {
            let headers = Headers::from([(name.to_owned(), "v".to_owned())]);
            assert_eq!(
                check_client_headers(&headers),
                Err(HeaderError::Reserved(name.to_owned()))
            );
        }
    }

    #[test]
    fn ordinary_headers_pass() {
        let headers = Headers::from([
            ("x-trace-id".to_owned(), "1".to_owned()),
            ("acteon".to_owned(), "no dot, not reserved".to_owned()),
        ]);
        assert_eq!(check_client_headers(&headers), Ok(()));
    }

    #[test]
    fn empty_header_names_are_refused() {
        let headers = Headers::from([(String::new(), "v".to_owned())]);
        assert_eq!(check_client_headers(&headers), Err(HeaderError::EmptyName));
    }

    #[test]
    fn a_message_serialises_with_the_specified_fields() {
        let message = BusMessage {
            topic: "a.b.c".into(),
            key: None,
            payload: serde_json::json!({ "seq": 3 }),
            headers: Headers::new(),
            partition: 1,
            offset: 2,
            timestamp: DateTime::from_timestamp_millis(0).unwrap(),
        };
        let json = serde_json::to_value(&message).unwrap();
        let mut fields: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        fields.sort();
        let expected = [
            "headers",
            "key",
            "offset",
            "partition",
            "payload",
            "timestamp",
            "topic",
        ];
        assert_eq!(fields, expected);
    }

    #[test]
    fn start_position_parses_both_words_only() {
        assert_eq!("earliest".parse(), Ok(StartPosition::Earliest));
        assert_eq!("latest".parse(), Ok(StartPosition::Latest));
        assert!("beginning".parse::<StartPosition>().is_err());
        assert_eq!(StartPosition::default(), StartPosition::Latest);
    }
}
