//! The publish pipeline's resources: silences (`/v1/silences`), the loaded
//! rules (`/v1/rules`) and the audit trail (`/v1/audit`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Client, Error};

/// `POST /v1/silences`: give exactly one of `ends_at` and `duration_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SilenceSpec {
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The topic's short name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// A CEL condition; without one every publish in scope is silenced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub comment: String,
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
}

/// A loaded rule, as `[[rules]]` configures it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    /// Lower runs first.
    pub priority: i64,
    pub condition: String,
    /// `allow`, `deny` or `suppress`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// None: the rule concerns every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// What happened to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Produced,
    Denied,
    Suppressed,
    Throttled,
    Failed,
    /// The payload did not match the topic's schema.
    Invalid,
    /// A durable subscription moved the record to its dead-letter topic.
    DeadLettered,
}

impl AuditOutcome {
    pub const ALL: [Self; 7] = [
        Self::Produced,
        Self::Denied,
        Self::Suppressed,
        Self::Throttled,
        Self::Failed,
        Self::Invalid,
        Self::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Produced => "produced",
            Self::Denied => "denied",
            Self::Suppressed => "suppressed",
            Self::Throttled => "throttled",
            Self::Failed => "failed",
            Self::Invalid => "invalid",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an [`AuditOutcome`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown outcome {0:?}: one of produced, denied, suppressed, throttled, failed, dead_lettered"
)]
pub struct UnknownOutcome(pub String);

impl FromStr for AuditOutcome {
    type Err = UnknownOutcome;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == value)
            .ok_or_else(|| UnknownOutcome(value.to_owned()))
    }
}

/// One audited publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Grows with time: a record with a larger id was written later.
    pub id: u64,
    pub at: DateTime<Utc>,
    pub tenant: String,
    pub namespace: String,
    /// Kafka name of the topic.
    pub topic: String,
    pub key: Option<String>,
    /// The API key that published, when auth is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub outcome: AuditOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Filters and cursor of [`Client::query_audit`]; `None` matches
/// everything, or takes the server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kafka name; it implies its namespace and tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AuditOutcome>,
    /// Records per page: the server's default is 100, its most 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only records with a smaller id: the previous page's `next_before`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
}

/// One page of audit records, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// The `before` of the next page; `None` on the last one.
    #[serde(default)]
    pub next_before: Option<u64>,
}

impl Client {
    /// `POST /v1/silences`.
    pub async fn create_silence(&self, spec: &SilenceSpec) -> Result<Silence, Error> {
        let request = self.request(reqwest::Method::POST, &["v1", "silences"]);
        self.call_json(request.json(spec)).await
    }

    /// `GET /v1/silences`: the active ones, or with `all` the expired and
    /// ended ones too.
    pub async fn list_silences(&self, all: bool) -> Result<Vec<Silence>, Error> {
        let request = self.request(reqwest::Method::GET, &["v1", "silences"]);
        let request = if all {
            request.query(&[("all", "true")])
        } else {
            request
        };
        self.call_json(request).await
    }

    /// `DELETE /v1/silences/{id}`: ends the silence now.
    pub async fn end_silence(&self, id: &str) -> Result<(), Error> {
        let request = self.request(reqwest::Method::DELETE, &["v1", "silences", id]);
        self.call(request).await.map(drop)
    }

    /// `GET /v1/rules`: the rules the caller administers, in evaluation
    /// order.
    pub async fn list_rules(&self) -> Result<Vec<Rule>, Error> {
        self.call_json(self.request(reqwest::Method::GET, &["v1", "rules"]))
            .await
    }

    /// `GET /v1/audit`: one page of records, newest first.
    pub async fn query_audit(&self, query: &AuditQuery) -> Result<AuditPage, Error> {
        let request = self.request(reqwest::Method::GET, &["v1", "audit"]);
        self.call_json(request.query(query)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_parse_and_print_as_the_server_names_them() {
        for outcome in AuditOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<AuditOutcome>(), Ok(outcome));
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                serde_json::json!(outcome.as_str())
            );
        }
        assert!("lost".parse::<AuditOutcome>().is_err());
    }
}
