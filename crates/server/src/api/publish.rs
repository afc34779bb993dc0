//! `POST /v1/bus/publish`.

use acteon_core::{Headers, OutgoingMessage, Scope, TopicName};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use super::extract::Json;
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::pipeline::{Published, Suppressed};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/bus/publish", post(publish))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    /// A Kafka name, or `{namespace, tenant, name}`.
    topic: serde_json::Value,
    #[serde(default)]
    key: Option<String>,
    payload: serde_json::Value,
    #[serde(default)]
    headers: Headers,
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

/// 200 with the receipt, or 202 when suppressed.
async fn publish(
    State(app): State<AppState>,
    caller: Caller,
    Json(request): Json<PublishRequest>,
) -> Result<Response, ApiError> {
    let topic = topic_name(&request.topic)?;
    caller.require(Op::Publish, &Scope::topic(&topic))?;
    let message = OutgoingMessage {
        key: request.key,
        payload: request.payload,
        headers: request.headers,
    };
    Ok(
        match app
            .messages
            .publish(&topic, message, caller.principal())
            .await?
        {
            Published::Produced(receipt) => axum::Json(receipt).into_response(),
            Published::Suppressed(by) => {
                let body = match by {
                    Suppressed::ByRule(rule) => json!({ "outcome": "suppressed", "rule": rule }),
                    Suppressed::BySilence(id) => json!({ "outcome": "suppressed", "silence": id }),
                };
                (StatusCode::ACCEPTED, axum::Json(body)).into_response()
            }
        },
    )
}
