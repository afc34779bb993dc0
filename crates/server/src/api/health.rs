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
    last: Mutex<Option<(Instant, Probed)>>,
    probing: tokio::sync::Mutex<()>,
}

/// What each dependency answered one probe.
#[derive(Debug, Clone)]
pub(crate) struct Probed {
    state: Result<(), String>,
    bus: Result<(), String>,
    audit: Result<(), String>,
    audit_dropped: u64,
}

impl Probed {
    fn ready(&self) -> bool {
        self.state.is_ok() && self.bus.is_ok() && self.audit.is_ok()
    }

    /// Whether each dependency answered, by name.
    pub(crate) fn up(&self) -> [(&'static str, bool); 3] {
        [
            ("state", self.state.is_ok()),
            ("bus", self.bus.is_ok()),
            ("audit", self.audit.is_ok()),
        ]
    }
}

impl Readiness {
    fn fresh(&self) -> Option<Probed> {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < READY_CACHE)
            .map(|(_, probed)| probed.clone())
    }

    /// The last answer if it is fresh, else a new probe's; concurrent
    /// callers share one probe.
    pub(crate) async fn answer(&self, app: &AppState) -> Probed {
        if let Some(probed) = self.fresh() {
            return probed;
        }
        let _turn = self.probing.lock().await;
        if let Some(probed) = self.fresh() {
            return probed;
        }
        let probed = probe(app).await;
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), probed.clone()));
        probed
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
    let probed = app.readiness.answer(&app).await;
    let describe = |result: &Result<(), String>| match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => error.clone(),
    };
    let mut body = json!({
        "state": describe(&probed.state),
        "bus": describe(&probed.bus),
        "audit": describe(&probed.audit),
        "audit_dropped": probed.audit_dropped,
        "backend": app.bus.kind(),
    });
    let status = if probed.ready() {
        StatusCode::OK
    } else {
        body["error"] = json!("not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Asks every dependency.
async fn probe(app: &AppState) -> Probed {
    let (state, bus) = tokio::join!(
        check("state", app.state.check_ready()),
        check("bus", app.bus.check_ready())
    );
    let audit = app.pipeline.audit.health();
    Probed {
        state,
        bus,
        audit: audit.check(),
        audit_dropped: audit.dropped(),
    }
}
