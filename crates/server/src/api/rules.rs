//! `GET /v1/rules`: the loaded rules in evaluation order.

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::pipeline::RuleConfig;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/rules", get(list))
}

/// The rules whose scope the caller administers: a rule without a tenant
/// concerns every tenant, so only a `"*"` admin sees it. A key with no
/// `admin` grant at all is refused.
async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<RuleConfig>>, ApiError> {
    if !caller.may_anywhere(Op::Admin) {
        return Err(ServiceError::Forbidden(Op::Admin).into());
    }
    Ok(axum::Json(
        app.pipeline
            .rules
            .list(|scope| caller.may(Op::Admin, scope))
            .into_iter()
            .cloned()
            .collect(),
    ))
}
