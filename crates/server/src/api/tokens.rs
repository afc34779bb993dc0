//! `POST /v1/auth/sse-tokens`: a subscribe token for one stream, for
//! clients that cannot send an `Authorization` header.

use acteon_core::{Scope, TopicName};
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::extract::Json;
use crate::app::AppState;
use crate::auth::{Caller, Op, TokenStream};
use crate::error::{ApiError, ServiceError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(issue))
}

/// A token's life unless asked otherwise, and the longest one given.
const DEFAULT_TTL_SECS: u64 = 300;
const MAX_TTL_SECS: u64 = 3_600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscriptionRef {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,80}$")]
    namespace: String,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,80}$")]
    tenant: String,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,80}$")]
    id: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// A Kafka topic name: opens `GET /v1/bus/subscribe/{id}?topic=`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,80}\\.[A-Za-z0-9_-]{1,80}\\.[A-Za-z0-9_-]{1,80}$")]
    topic: Option<String>,
    /// A durable subscription: opens its `.../events`.
    subscription: Option<SubscriptionRef>,
    #[schema(minimum = 1, maximum = 3600)]
    ttl_secs: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct IssuedToken {
    token: String,
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<SubscriptionRef>,
}

/// A subscribe token for one stream, for clients that cannot send an
/// `Authorization` header; the caller needs `subscribe` on the stream.
#[utoipa::path(
    post,
    path = "/v1/auth/sse-tokens",
    tag = "auth",
    request_body = TokenRequest,
    responses((status = 201, description = "Issued", body = IssuedToken), Refusals),
)]
async fn issue(
    State(app): State<AppState>,
    caller: Caller,
    Json(request): Json<TokenRequest>,
) -> Result<(StatusCode, axum::Json<IssuedToken>), ApiError> {
    let ttl = request.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttl_secs: from 1 to {MAX_TTL_SECS}"
        )));
    }
    let (stream, scope) = match (&request.topic, &request.subscription) {
        (Some(topic), None) => {
            let name: TopicName = topic.parse().map_err(ServiceError::from)?;
            (
                TokenStream::Topic(name.kafka_topic_name()),
                Scope::topic(&name),
            )
        }
        (None, Some(subscription)) => {
            let scope = Scope::new(
                Some(&subscription.namespace),
                Some(&subscription.tenant),
                None,
            )
            .map_err(ServiceError::from)?;
            let stream = TokenStream::Subscription {
                namespace: subscription.namespace.clone(),
                tenant: subscription.tenant.clone(),
                id: subscription.id.clone(),
            };
            (stream, scope)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either topic (a Kafka topic name) or subscription {namespace, tenant, id}",
            ));
        }
    };
    caller.require(Op::Subscribe, &scope)?;
    let expires_at = Utc::now() + chrono::Duration::seconds(ttl as i64);
    let token = app.keys.issue_token(&caller, stream, expires_at);
    Ok((
        StatusCode::CREATED,
        axum::Json(IssuedToken {
            token,
            expires_at,
            topic: request.topic,
            subscription: request.subscription,
        }),
    ))
}
