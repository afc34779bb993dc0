//! `GET /healthz` (the process is up) and `GET /readyz` (its dependencies
//! answer).
//!
//! Readiness is probed at most once per [`READY_CACHE`]: probes are often
//! frequent (load balancers, orchestrators), and each one reads the state
//! store and asks the broker, which may block a thread for seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Debug, Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    status: &'static str,
}

/// What each dependency answered.
#[derive(Debug, Serialize, ToSchema)]
struct ReadinessBody {
    /// `ok`, or why not.
    state: String,
    bus: String,
    audit: String,
    /// Audit records that could not be stored since the server started.
    audit_dropped: u64,
    /// `kafka` or `memory`.
    backend: &'static str,
    /// `not ready` when something failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses((status = 200, body = Alive)),
)]
async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
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

/// The state store, the broker, the producer and the audit writer answer;
/// probed at most once a second.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = ReadinessBody),
        (status = 503, description = "A dependency failed", body = ReadinessBody),
    ),
)]
async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let probed = app.readiness.answer(&app).await;
    let describe = |result: &Result<(), String>| match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => error.clone(),
    };
    let ready = probed.ready();
    let body = ReadinessBody {
        state: describe(&probed.state),
        bus: describe(&probed.bus),
        audit: describe(&probed.audit),
        audit_dropped: probed.audit_dropped,
        backend: app.bus.kind(),
        error: (!ready).then_some("not ready"),
    };
    let status = if ready {
        StatusCode::OK
    } else {
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
