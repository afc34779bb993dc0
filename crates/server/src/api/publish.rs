//! `POST /v1/bus/publish`.

use acteon_core::{DeliveryReceipt, Fragment, Headers, OutgoingMessage, Scope, TopicName};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::extract::Json;
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::pipeline::{Published, Suppressed};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(publish))
}

/// The `Idempotency-Key` header as sent, checked by the handler after the
/// topic and the caller's grants. Taken alone, not with a copy of every
/// header.
struct IdempotencyKeyHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(IDEMPOTENCY_KEY).cloned()))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    /// A Kafka name, or `{namespace, tenant, name}`.
    #[schema(schema_with = topic_schema)]
    topic: serde_json::Value,
    /// Records with one key land on one partition, in order.
    #[serde(default)]
    key: Option<String>,
    /// Any JSON value.
    payload: serde_json::Value,
    /// Names starting with `acteon.` are the server's.
    #[serde(default)]
    #[schema(inline)]
    headers: Headers,
}

/// `topic`'s two forms; [`topic_name`] reads them.
fn topic_schema() -> Schema {
    let named = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("namespace", Fragment::schema())
        .property("tenant", Fragment::schema())
        .property("name", Fragment::schema())
        .required("namespace")
        .required("tenant")
        .required("name");
    let forms = OneOfBuilder::new()
        .item(TopicName::schema())
        .item(named)
        .build();
    Schema::OneOf(forms)
}

/// A publish a silence or a rule stopped without producing it.
#[derive(Debug, Serialize, ToSchema)]
struct SuppressedBody {
    /// Always `suppressed`.
    outcome: &'static str,
    /// The suppressing rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// The matching silence's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    silence: Option<String>,
}

fn topic_name(topic: &serde_json::Value) -> Result<TopicName, ApiError> {
    let field = |name: &str| topic.get(name).and_then(serde_json::Value::as_str);
    let parsed = match topic {
        serde_json::Value::String(kafka_name) => kafka_name.parse(),
        serde_json::Value::Object(fields) if fields.len() == 3 => {
            match (field("namespace"), field("tenant"), field("name")) {
                (Some(namespace), Some(tenant), Some(name)) => {
                    TopicName::new(namespace, tenant, name)
                }
                _ => return Err(topic_shape_error()),
            }
        }
        _ => return Err(topic_shape_error()),
    };
    Ok(parsed.map_err(ServiceError::from)?)
}

fn topic_shape_error() -> ApiError {
    ApiError::bad_request(
        "topic must be a Kafka topic name string or an object {namespace, tenant, name} of strings",
    )
}

/// The header a client names a publish by, so a retry is not a duplicate.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// On the answer to a repeated idempotency key.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Publishes one record through silences, rules and quotas; the receipt is
/// the broker's acknowledgement. With an `Idempotency-Key`, a repeat within
/// the window gets the first answer and produces nothing.
#[utoipa::path(
    post,
    path = "/v1/bus/publish",
    tag = "publish",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1 to 255 printable ASCII characters, scoped by topic")),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Produced, or produced before under this idempotency key",
            body = DeliveryReceipt,
            headers(("Idempotent-Replayed" = String, description = "`true` on a repeated key's answer"))),
        (status = 202, description = "Accepted and suppressed: nothing was produced", body = SuppressedBody),
        Refusals,
    ),
)]
async fn publish(
    State(app): State<AppState>,
    caller: Caller,
    IdempotencyKeyHeader(idempotency_key): IdempotencyKeyHeader,
    Json(request): Json<PublishRequest>,
) -> Result<Response, ApiError> {
    let topic = topic_name(&request.topic)?;
    caller.require(Op::Publish, &Scope::topic(&topic))?;
    let idempotency_key = match &idempotency_key {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request("Idempotency-Key: printable ASCII characters only")
        })?),
        None => None,
    };
    let message = OutgoingMessage {
        key: request.key,
        payload: request.payload,
        headers: request.headers,
    };
    let answered = app
        .messages
        .publish(&topic, message, idempotency_key, caller.principal())
        .await?;
    let mut response = match answered.published {
        Published::Produced(receipt) => axum::Json::<DeliveryReceipt>(receipt).into_response(),
        Published::Suppressed(by) => {
            let (rule, silence) = match by {
                Suppressed::ByRule(rule) => (Some(rule), None),
                Suppressed::BySilence(id) => (None, Some(id)),
            };
            let body = SuppressedBody {
                outcome: "suppressed",
                rule,
                silence,
            };
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
    };
    if answered.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}
