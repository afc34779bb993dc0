//! `GET /healthz` (the process is up) and `GET /readyz` (its dependencies
//! answer).
//!
//! Readiness is probed at most once per [`READY_CACHE`]: probes are often
//! frequent (load balancers, orchestrators), and each one reads the state
//! store and asks the broker, which may block a thread for seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use crate::app::AppState;

/// Readiness must answer quickly even when the broker does not.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one probe's answer is given to every caller.
const READY_CACHE: Duration = Duration::from_secs(1);

/// The last readiness answer, and a turn to probe.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    last: Mutex<Option<(Instant, bool, serde_json::Value)>>,
    probing: tokio::sync::Mutex<()>,
}

impl Readiness {
    fn fresh(&self) -> Option<(bool, serde_json::Value)> {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, ..)| at.elapsed() < READY_CACHE)
            .map(|(_, ready, body)| (*ready, body.clone()))
    }
}

pub(super) fn routes() -> axum::Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Runs the readiness check of `dependency` with a deadline. Its error's
/// detail goes to the log, not to the answer.
async fn check<E: std::fmt::Display>(
    dependency: &str,
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::warn!(dependency, %error, "readiness check failed");
            Err("unavailable".to_owned())
        }
        Err(_) => Err(format!("no answer within {READY_CHECK_TIMEOUT:?}")),
    }
}

async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let (ready, body) = match app.readiness.fresh() {
        Some(answer) => answer,
        None => {
            let _turn = app.readiness.probing.lock().await;
            match app.readiness.fresh() {
                Some(answer) => answer,
                None => {
                    let (ready, body) = probe(&app).await;
                    *app.readiness
                        .last
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((Instant::now(), ready, body.clone()));
                    (ready, body)
                }
            }
        }
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Asks every dependency; whether all answered, and what each said.
async fn probe(app: &AppState) -> (bool, serde_json::Value) {
    let (state, bus) = tokio::join!(
        check("state", app.state.check_ready()),
        check("bus", app.bus.check_ready())
    );
    let audit = app.pipeline.audit.health();
    let audit_check = audit.check();
    let describe = |result: &Result<(), String>| match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => error.clone(),
    };
    let mut body = json!({
        "state": describe(&state),
        "bus": describe(&bus),
        "audit": describe(&audit_check),
        "audit_dropped": audit.dropped(),
        "backend": app.bus.kind(),
    });
    let ready = state.is_ok() && bus.is_ok() && audit_check.is_ok();
    if !ready {
        body["error"] = json!("not ready");
    }
    (ready, body)
}
