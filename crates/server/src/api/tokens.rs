//! `POST /v1/auth/sse-tokens`: a subscribe token for one stream, for
//! clients that cannot send an `Authorization` header.

use acteon_bus::GroupId;
use acteon_core::{Fragment, FragmentKind, Scope, TopicName};
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::durable::{Named, tenant_scope};
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// A Kafka topic name: opens `GET /v1/bus/subscribe/{subscription_id}?topic=`.
    #[schema(value_type = Option<acteon_core::TopicName>)]
    topic: Option<String>,
    /// With `topic`: the one subscription id the token opens it as; a
    /// fresh one when absent.
    subscription_id: Option<String>,
    /// A durable subscription: opens its `.../events` and settlements.
    subscription: Option<Named>,
    #[schema(minimum = 1, maximum = 3600)]
    ttl_secs: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct IssuedToken {
    token: String,
    /// The token opens nothing from this second on, and streams it opened
    /// end.
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<Named>,
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
    let mut issued = IssuedToken {
        token: String::new(),
        expires_at: Utc::now(),
        topic: None,
        subscription_id: None,
        subscription: None,
    };
    let (stream, scope) = match (request.topic, request.subscription_id, request.subscription) {
        (Some(topic), subscription_id, None) => {
            let name: TopicName = topic.parse().map_err(ServiceError::from)?;
            let subscription_id = match subscription_id {
                Some(id) => GroupId::parse(&id).map_err(ServiceError::from)?.to_string(),
                None => format!("page-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            };
            issued.topic = Some(name.kafka_topic_name().to_owned());
            issued.subscription_id = Some(subscription_id.clone());
            let stream = TokenStream::Topic {
                topic: name.kafka_topic_name().to_owned(),
                subscription_id,
            };
            (stream, Scope::topic(&name))
        }
        (None, None, Some(subscription)) => {
            let scope = tenant_scope(&subscription.namespace, &subscription.tenant)?;
            Fragment::parse(FragmentKind::Subscription, &subscription.id)
                .map_err(ServiceError::from)?;
            let stream = subscription.stream();
            issued.subscription = Some(subscription);
            (stream, scope)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either topic (a Kafka topic name, with an optional subscription_id) \
                 or subscription {namespace, tenant, id}",
            ));
        }
    };
    caller.require(Op::Subscribe, &scope)?;
    // Whole seconds, as the token holds them.
    let expires = Utc::now().timestamp() + ttl as i64;
    issued.expires_at = DateTime::from_timestamp(expires, 0).expect("now plus an hour is a time");
    issued.token = app.keys.issue_token(&caller, stream, expires);
    Ok((StatusCode::CREATED, axum::Json(issued)))
}
