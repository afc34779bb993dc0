//! `POST|GET /v1/silences`, `DELETE /v1/silences/{id}`.

use acteon_core::Scope;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::Deserialize;

use super::extract::{Json, Path, Query};
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::pipeline::{Silence, SilenceRequest};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/silences", get(list).post(create))
        .route("/v1/silences/{id}", delete(end))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

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

/// Only the silences the caller administers.
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

/// Another tenant's silence is answered as a missing one.
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
