//! `POST|GET /v1/silences`, `DELETE /v1/silences/{id}`.

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
    caller.require(
        Op::Admin,
        request.namespace.as_deref(),
        Some(&request.tenant),
    )?;
    let silence = app.pipeline.silences.create(request).await?;
    Ok((StatusCode::CREATED, axum::Json(silence)))
}

/// Only the silences the caller administers.
async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> axum::Json<Vec<Silence>> {
    let mut silences = app.pipeline.silences.list(query.all);
    silences.retain(|s| caller.may(Op::Admin, s.namespace.as_deref(), Some(&s.tenant)));
    axum::Json(silences)
}

/// Another tenant's silence is answered as a missing one.
async fn end(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let administered = app
        .pipeline
        .silences
        .get(&id)
        .is_some_and(|s| caller.may(Op::Admin, s.namespace.as_deref(), Some(&s.tenant)));
    if !administered {
        return Err(ServiceError::SilenceNotFound { id }.into());
    }
    app.pipeline.silences.end(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
