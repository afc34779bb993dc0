//! Errors of the services and the one place they become HTTP statuses.
//!
//! Every error response is JSON: `{"error": "<reason>", "request_id"}`.

use acteon_bus::{BusError, GroupIdError};
use acteon_core::{DisjointScopes, HeaderError, NameError, StartPositionError, TopicError};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

use crate::pipeline::Throttled;
use crate::schemas::registry::{Issue, SchemaError, Violation};
use crate::state::StateError;

/// A failed service call.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error(transparent)]
    InvalidTopic(#[from] TopicError),
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error(transparent)]
    InvalidHeader(#[from] HeaderError),
    #[error(transparent)]
    InvalidSubscription(#[from] GroupIdError),
    #[error(transparent)]
    InvalidStart(#[from] StartPositionError),
    #[error("topic {topic} already exists")]
    TopicExists { topic: String },
    #[error("topic {topic} does not exist")]
    TopicNotFound { topic: String },
    #[error("invalid silence: {0}")]
    InvalidSilence(String),
    #[error("silence {id} does not exist or has ended")]
    SilenceNotFound { id: String },
    #[error("denied by rule {rule}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Denied {
        rule: String,
        reason: Option<String>,
    },
    #[error("over quota {}: retry in {} ms", .0.quota, .0.wait.as_millis())]
    Throttled(Throttled),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error(transparent)]
    BadToken(#[from] crate::auth::TokenError),
    #[error("this subscribe token opens another stream")]
    WrongStream,
    #[error("this idempotency key was used for a different record on this topic")]
    IdempotencyMismatch,
    #[error("a publish with this idempotency key is in progress; retry")]
    IdempotencyInProgress,
    #[error("this API key may not {0} here")]
    Forbidden(crate::auth::Op),
    #[error("too many open subscriptions; try again later")]
    TooManySubscriptions,
    /// A per-tenant or per-key connection limit.
    #[error("{0}; close one or try again later")]
    TooManyConnections(String),
    /// A per-tenant limit on stored things (topics, silences).
    #[error("{0}")]
    LimitReached(String),
    /// A message over a size limit.
    #[error("{0}")]
    InvalidMessage(String),
    #[error(transparent)]
    DisjointScopes(#[from] DisjointScopes),
    #[error(
        "topic {topic} collides with an existing topic: Kafka treats '.' and '_' alike in topic names"
    )]
    TopicCollides { topic: String },
    /// A durable subscription request with a field out of bounds.
    #[error("invalid subscription: {0}")]
    InvalidDurable(String),
    #[error(transparent)]
    MalformedDeliveryId(#[from] crate::durable::MalformedDeliveryId),
    #[error("subscription {id} already exists")]
    SubscriptionExists { id: String },
    #[error("subscription {id} does not exist")]
    SubscriptionNotFound { id: String },
    /// Its engine did not answer in time.
    #[error("subscription {id} is busy; retry later")]
    SubscriptionUnavailable { id: String },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    SchemaViolation(Box<Violation>),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The body of every error answer.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// Why the request failed, for people.
    pub(crate) error: String,
    /// The request's `x-request-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    /// The rule that denied a publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<String>,
    /// That rule's reason, if it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// The silence that suppressed a record of a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) silence: Option<String>,
    /// The quota a throttled publish is over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) quota: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retry_after_ms: Option<u64>,
    /// Why a schema was refused as incompatible, one reason per place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) messages: Option<Vec<String>>,
    /// The schema a refused payload was checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) schema: Option<CheckedSchema>,
    /// Why the payload does not match it: at most 10 issues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) issues: Option<Vec<Issue>>,
}

/// A version of a subject, as a refused payload's answer names it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CheckedSchema {
    subject: String,
    version: u32,
}

/// What a handler returns on failure.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The request itself was unreadable (body, query or path).
    #[error("{message}")]
    Request { status: StatusCode, message: String },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::Request {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// What the caller is told. Server errors carry internal detail (broker
    /// and storage messages, names of other tenants' topics), which goes to
    /// the log instead.
    fn public_message(&self, status: StatusCode) -> String {
        use ServiceError::*;
        if !status.is_server_error() {
            return self.to_string();
        }
        match self {
            Self::Service(Bus(BusError::Unavailable { operation, .. })) => {
                format!("broker unavailable: {operation} failed; retry later")
            }
            Self::Service(Bus(BusError::Broker { operation, .. })) => {
                format!("broker error: {operation} failed")
            }
            Self::Service(State(StateError::Storage { .. } | StateError::Audit { .. })) => {
                "state store unavailable; retry later".to_owned()
            }
            Self::Service(TooManySubscriptions | SubscriptionUnavailable { .. }) => {
                self.to_string()
            }
            _ => "internal error".to_owned(),
        }
    }

    fn status(&self) -> StatusCode {
        use ServiceError::*;
        match self {
            Self::Request { status, .. } => *status,
            Self::Service(error) => match error {
                InvalidTopic(_)
                | InvalidName(_)
                | InvalidHeader(_)
                | InvalidSubscription(_)
                | InvalidStart(_)
                | InvalidSilence(_)
                | InvalidMessage(_)
                | InvalidDurable(_)
                | MalformedDeliveryId(_)
                | SchemaViolation(_)
                | DisjointScopes(_) => StatusCode::BAD_REQUEST,
                Denied { .. } | Forbidden(_) | WrongStream | LimitReached(_) => {
                    StatusCode::FORBIDDEN
                }
                Unauthorized(_) | BadToken(_) => StatusCode::UNAUTHORIZED,
                Throttled(_) | TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
                SilenceNotFound { .. } | SubscriptionNotFound { .. } => StatusCode::NOT_FOUND,
                SubscriptionExists { .. } | IdempotencyInProgress => StatusCode::CONFLICT,
                IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
                SubscriptionUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                TopicExists { .. } | TopicCollides { .. } | Bus(BusError::TopicConflict { .. }) => {
                    StatusCode::CONFLICT
                }
                TopicNotFound { .. } | Bus(BusError::UnknownTopic { .. }) => StatusCode::NOT_FOUND,
                Bus(BusError::Unavailable { .. })
                | State(StateError::Storage { .. } | StateError::Audit { .. })
                | TooManySubscriptions => StatusCode::SERVICE_UNAVAILABLE,
                State(StateError::Corrupt { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
                Bus(BusError::Rejected { .. }) => StatusCode::BAD_REQUEST,
                Bus(BusError::Broker { .. }) => StatusCode::BAD_GATEWAY,
                Schema(error) => match error {
                    SchemaError::LimitReached(_) => StatusCode::FORBIDDEN,
                    SchemaError::InvalidName(_) | SchemaError::Invalid(_) => {
                        StatusCode::BAD_REQUEST
                    }
                    SchemaError::Incompatible { .. }
                    | SchemaError::TooManyVersions { .. }
                    | SchemaError::InUse { .. }
                    | SchemaError::Dangling { .. } => StatusCode::CONFLICT,
                    SchemaError::SubjectNotFound { .. } | SchemaError::VersionNotFound { .. } => {
                        StatusCode::NOT_FOUND
                    }
                    SchemaError::State(StateError::Corrupt { .. }) => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                    SchemaError::State(_) => StatusCode::SERVICE_UNAVAILABLE,
                },
            },
        }
    }
}

impl ApiError {
    /// The status, the body, and the `Retry-After` seconds of the answer;
    /// server errors are logged here, with the detail the body leaves out.
    pub(crate) fn answer(&self) -> (StatusCode, ErrorBody, Option<u64>) {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        let mut body = ErrorBody {
            error: self.public_message(status),
            request_id: crate::request_context::with_current(|request| request.id().to_owned()),
            ..ErrorBody::default()
        };
        let mut retry_after_secs = (status == StatusCode::SERVICE_UNAVAILABLE
            || matches!(
                self,
                Self::Service(
                    ServiceError::TooManyConnections(_) | ServiceError::IdempotencyInProgress
                )
            ))
        .then_some(1);
        match self {
            Self::Service(ServiceError::Denied { rule, reason }) => {
                body.rule = Some(rule.clone());
                body.reason.clone_from(reason);
            }
            Self::Service(ServiceError::Schema(SchemaError::Incompatible { reasons, .. })) => {
                body.messages = Some(reasons.clone());
            }
            Self::Service(ServiceError::SchemaViolation(violation)) => {
                body.schema = Some(CheckedSchema {
                    subject: violation.subject.clone(),
                    version: violation.version,
                });
                body.issues = Some(violation.issues.clone());
            }
            Self::Service(ServiceError::Throttled(throttled)) => {
                let wait_ms = throttled.wait.as_millis() as u64;
                body.quota = Some(throttled.quota.clone());
                body.retry_after_ms = Some(wait_ms);
                // Whole seconds, rounded up, at least one.
                retry_after_secs = Some(wait_ms.div_ceil(1000).max(1));
            }
            _ => {}
        }
        (status, body, retry_after_secs)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body, retry_after_secs) = self.answer();
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<SchemaError> for ApiError {
    fn from(error: SchemaError) -> Self {
        Self::Service(error.into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match &rejection {
            // axum answers 422 for a body of the wrong shape; a missing or
            // mistyped field is a bad request here like any other.
            JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
                StatusCode::BAD_REQUEST
            }
            other => other.status(),
        };
        Self::Request {
            status,
            message: rejection.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}
