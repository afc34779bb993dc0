//! Topic CRUD: `POST|GET /v1/bus/topics`, `DELETE /v1/bus/topics/{kafka_name}`.

use acteon_core::{Scope, Topic, TopicName, TopicRecord, TopicSpec};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};

use super::extract::{Json, Path, Query};
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::topics::TopicFilter;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/bus/topics", get(list).post(create))
        .route("/v1/bus/topics/{kafka_name}", delete(remove))
}

async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Json(spec): Json<TopicSpec>,
) -> Result<(StatusCode, axum::Json<TopicRecord>), ApiError> {
    let topic = Topic::try_from(spec).map_err(ServiceError::from)?;
    let name = topic.name();
    caller.require(Op::Manage, &Scope::topic(name))?;
    let record = app.topics.create(topic).await?;
    Ok((StatusCode::CREATED, axum::Json(record)))
}

/// Only the topics the caller's grants cover.
async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(filter): Query<TopicFilter>,
) -> Result<axum::Json<Vec<TopicRecord>>, ApiError> {
    let scope = filter.scope().map_err(ServiceError::from)?;
    let mut topics = app.topics.list(&scope).await?;
    topics.retain(|record| caller.sees(&Scope::topic(record.topic.name())));
    Ok(axum::Json(topics))
}

async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(kafka_name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name: TopicName = kafka_name.parse().map_err(ServiceError::from)?;
    caller.require(Op::Manage, &Scope::topic(&name))?;
    app.topics.delete(&name).await?;
    app.durable.forget_topic(&name).await;
    Ok(StatusCode::NO_CONTENT)
}
