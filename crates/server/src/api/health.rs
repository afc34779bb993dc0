//! `GET /healthz` (the process is up) and `GET /readyz` (its dependencies
//! answer).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use crate::app::AppState;

/// Readiness must answer quickly even when the broker does not.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn routes() -> axum::Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Runs a readiness check with a deadline, as a description of the outcome.
async fn check<E: std::fmt::Display>(
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {READY_CHECK_TIMEOUT:?}")),
    }
}

async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let (state, bus) = tokio::join!(check(app.state.check_ready()), check(app.bus.check_ready()));
    let describe = |result: &Result<(), String>| match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => error.clone(),
    };
    let mut body = json!({
        "state": describe(&state),
        "bus": describe(&bus),
        "backend": app.bus.kind(),
    });
    if state.is_ok() && bus.is_ok() {
        (StatusCode::OK, Json(body))
    } else {
        body["error"] = json!("not ready");
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}
