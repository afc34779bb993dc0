//! `POST /v1/bus/topics/{kafka_name}/records`: many records in one request.

use acteon_core::{Headers, OutgoingMessage, Scope, TopicName};
use axum::extract::{DefaultBodyLimit, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::extract::{Json, Path};
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::config::Config;
use crate::error::{ApiError, ErrorBody, ServiceError};
use crate::messages::Answered;
use crate::pipeline::{Published, Suppressed};

/// The batch route, with a body limit of its own.
pub(super) fn routes(config: &Config) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish_batch))
        .route_layer(DefaultBodyLimit::max(config.server.max_batch_body_bytes))
}

/// Parsed in one pass. A body that fails is parsed again by the extractor,
/// which then names the path of what failed, `records[3].key` say.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    /// From 1 to `server.max_batch_records` (1000) records, published in
    /// this order.
    records: Vec<BatchRecord>,
}

/// One record of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchRecord {
    #[serde(default)]
    key: Option<String>,
    /// Any JSON value.
    payload: serde_json::Value,
    #[serde(default)]
    #[schema(inline)]
    headers: Headers,
    /// As the `Idempotency-Key` header of a single publish: a repeat within
    /// the window gets the first answer, marked `replayed`.
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// What happened to one record, in the request's order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum RecordResult {
    /// The broker stored it.
    Produced {
        partition: i32,
        offset: i64,
        produced_at: DateTime<Utc>,
        /// Stored before, under the record's idempotency key.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        replayed: bool,
    },
    /// Not produced: suppressed (202), denied (403), throttled (429), bad
    /// (400), or the broker failed (5xx); the status a single publish would
    /// have answered, and its body.
    Stopped {
        status: u16,
        #[serde(flatten)]
        #[schema(value_type = ErrorBody)]
        body: Box<ErrorBody>,
        /// A suppression given before, under the record's idempotency key.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        replayed: bool,
    },
}

#[derive(Debug, Serialize, ToSchema)]
struct BatchAnswer {
    results: Vec<RecordResult>,
}

impl RecordResult {
    fn of(answered: Result<Answered, ServiceError>) -> Self {
        let (published, replayed) = match answered {
            Ok(answered) => (Ok(answered.published), answered.replayed),
            Err(error) => (Err(error), false),
        };
        match published {
            Ok(Published::Produced(receipt)) => Self::Produced {
                partition: receipt.partition,
                offset: receipt.offset,
                produced_at: receipt.produced_at,
                replayed,
            },
            Ok(Published::Suppressed(by)) => {
                let (error, rule, silence) = match by {
                    Suppressed::ByRule(rule) => {
                        (format!("suppressed by rule {rule}"), Some(rule), None)
                    }
                    Suppressed::BySilence(id) => {
                        (format!("suppressed by silence {id}"), None, Some(id))
                    }
                };
                Self::Stopped {
                    status: 202,
                    body: Box::new(ErrorBody {
                        error,
                        rule,
                        silence,
                        ..ErrorBody::default()
                    }),
                    replayed,
                }
            }
            Err(error) => {
                let (status, mut body, _) = ApiError::from(error).answer();
                // The answer's own id is on the response.
                body.request_id = None;
                Self::Stopped {
                    status: status.as_u16(),
                    body: Box::new(body),
                    replayed: false,
                }
            }
        }
    }
}

/// Publishes many records to one topic. Each goes through silences, rules,
/// quotas and the audit trail as a single publish does, and one record's
/// failure is its own: the answer is 200 with a result per record.
#[utoipa::path(
    post,
    path = "/v1/bus/topics/{kafka_name}/records",
    tag = "publish",
    params(("kafka_name" = TopicName, Path)),
    request_body = BatchRequest,
    responses(
        (status = 200, description = "A result per record, in the request's order", body = BatchAnswer),
        Refusals,
    ),
)]
async fn publish_batch(
    State(app): State<AppState>,
    caller: Caller,
    Path(kafka_name): Path<String>,
    Json(request): Json<BatchRequest>,
) -> Result<axum::Json<BatchAnswer>, ApiError> {
    let topic: TopicName = kafka_name.parse().map_err(ServiceError::from)?;
    caller.require(Op::Publish, &Scope::topic(&topic))?;
    let messages = request
        .records
        .into_iter()
        .map(|record| {
            let message = OutgoingMessage {
                key: record.key,
                payload: record.payload,
                headers: record.headers,
            };
            (message, record.idempotency_key)
        })
        .collect();
    let published = app
        .messages
        .publish_batch(&topic, messages, caller.principal())
        .await?;
    Ok(axum::Json(BatchAnswer {
        results: published.into_iter().map(RecordResult::of).collect(),
    }))
}
