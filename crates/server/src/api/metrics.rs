//! `GET /metrics`: the Prometheus exposition.
//!
//! The figures cover every tenant, so with auth enabled the key needs the
//! `metrics` (or `admin`) operation on every namespace and tenant.

use acteon_core::Scope;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::metrics;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(scrape))
}

/// Prometheus metrics; the README lists every series.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenMetrics text exposition",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        Refusals,
    ),
)]
async fn scrape(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let everywhere = Scope::new(None, None, None).map_err(ServiceError::from)?;
    caller.require(Op::Metrics, &everywhere)?;
    let live = metrics::gather(&app).await;
    Ok((
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        app.metrics.encode(live.registry()),
    ))
}
