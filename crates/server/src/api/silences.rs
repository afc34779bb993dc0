//! `POST|GET /v1/silences`, `DELETE /v1/silences/{id}`.

use acteon_core::Scope;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::extract::{Json, Path, Query};
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::pipeline::{Silence, SilenceRequest};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(end))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Ended silences too.
    #[serde(default)]
    all: bool,
}

/// Suppresses a tenant's matching publishes until it ends: they are
/// accepted (202) and not produced.
#[utoipa::path(
    post,
    path = "/v1/silences",
    tag = "pipeline",
    request_body = SilenceRequest,
    responses((status = 201, description = "Created", body = Silence), Refusals),
)]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Json(request): Json<SilenceRequest>,
) -> Result<(StatusCode, axum::Json<Silence>), ApiError> {
    let scope = Scope::new(
        request.namespace.as_deref(),
        Some(&request.tenant),
        request.topic.as_deref(),
    )
    .map_err(ServiceError::from)?;
    caller.require(Op::Admin, &scope)?;
    let silence = app.pipeline.silences.create(request).await?;
    Ok((StatusCode::CREATED, axum::Json(silence)))
}

/// The silences the caller administers.
#[utoipa::path(
    get,
    path = "/v1/silences",
    tag = "pipeline",
    params(ListQuery),
    responses((status = 200, body = Vec<Silence>), Refusals),
)]
async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> axum::Json<Vec<Silence>> {
    axum::Json(
        app.pipeline
            .silences
            .list(query.all, |scope| caller.may(Op::Admin, scope)),
    )
}

/// Ends a silence now; another tenant's is answered as a missing one.
#[utoipa::path(
    delete,
    path = "/v1/silences/{id}",
    tag = "pipeline",
    params(("id" = String, Path)),
    responses((status = 204, description = "Ended"), Refusals),
)]
async fn end(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.pipeline
        .silences
        .end(&id, |scope| caller.may(Op::Admin, scope))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
