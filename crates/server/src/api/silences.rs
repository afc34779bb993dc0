//! `POST|GET /v1/silences`, `DELETE /v1/silences/{id}`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::Deserialize;

use super::extract::{Json, Path, Query};
use crate::app::AppState;
use crate::error::ApiError;
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
    Json(request): Json<SilenceRequest>,
) -> Result<(StatusCode, axum::Json<Silence>), ApiError> {
    let silence = app.pipeline.silences.create(request).await?;
    Ok((StatusCode::CREATED, axum::Json(silence)))
}

async fn list(
    State(app): State<AppState>,
    Query(query): Query<ListQuery>,
) -> axum::Json<Vec<Silence>> {
    axum::Json(app.pipeline.silences.list(query.all))
}

async fn end(State(app): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    app.pipeline.silences.end(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
