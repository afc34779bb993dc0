//! Topic CRUD: `POST|GET /v1/bus/topics`, `DELETE /v1/bus/topics/{kafka_name}`,
//! and a topic's schema: `PUT|DELETE /v1/bus/topics/{kafka_name}/schema`.

use acteon_core::{SchemaBinding, Scope, Topic, TopicName, TopicRecord, TopicSpec};
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::extract::{Json, Path, Query};
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::topics::TopicFilter;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
        .routes(routes!(bind, unbind))
}

/// The topic a path names, once the caller may manage it.
fn managed_topic(caller: &Caller, kafka_name: &str) -> Result<TopicName, ApiError> {
    let name: TopicName = kafka_name.parse().map_err(ServiceError::from)?;
    caller.require(Op::Manage, &Scope::topic(&name))?;
    Ok(name)
}

/// Creates a topic, and its Kafka topic `{namespace}.{tenant}.{name}`;
/// with `schema`, bound to a subject of its tenant's registry.
#[utoipa::path(
    post,
    path = "/v1/bus/topics",
    tag = "topics",
    request_body = TopicSpec,
    responses((status = 201, description = "Created", body = TopicRecord), Refusals),
)]
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

/// The topics the caller's grants cover.
#[utoipa::path(
    get,
    path = "/v1/bus/topics",
    tag = "topics",
    params(TopicFilter),
    responses((status = 200, body = Vec<TopicRecord>), Refusals),
)]
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

/// Deletes a topic; its subscriptions end.
#[utoipa::path(
    delete,
    path = "/v1/bus/topics/{kafka_name}",
    tag = "topics",
    params(("kafka_name" = TopicName, Path)),
    responses((status = 204, description = "Deleted"), Refusals),
)]
async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(kafka_name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = managed_topic(&caller, &kafka_name)?;
    app.topics.delete(&name).await?;
    app.durable.forget_topic(&name).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Binds a topic to a version of a subject of its own tenant, or to its
/// latest; every record produced to it from then on must match.
#[utoipa::path(
    put,
    path = "/v1/bus/topics/{kafka_name}/schema",
    tag = "topics",
    params(("kafka_name" = TopicName, Path)),
    request_body = SchemaBinding,
    responses((status = 200, description = "Bound", body = TopicRecord), Refusals),
)]
async fn bind(
    State(app): State<AppState>,
    caller: Caller,
    Path(kafka_name): Path<String>,
    Json(binding): Json<SchemaBinding>,
) -> Result<axum::Json<TopicRecord>, ApiError> {
    let name = managed_topic(&caller, &kafka_name)?;
    Ok(axum::Json(app.topics.bind(&name, Some(binding)).await?))
}

/// Unbinds a topic's schema: its records are no longer checked.
#[utoipa::path(
    delete,
    path = "/v1/bus/topics/{kafka_name}/schema",
    tag = "topics",
    params(("kafka_name" = TopicName, Path)),
    responses((status = 200, description = "Unbound", body = TopicRecord), Refusals),
)]
async fn unbind(
    State(app): State<AppState>,
    caller: Caller,
    Path(kafka_name): Path<String>,
) -> Result<axum::Json<TopicRecord>, ApiError> {
    let name = managed_topic(&caller, &kafka_name)?;
    Ok(axum::Json(app.topics.bind(&name, None).await?))
}
