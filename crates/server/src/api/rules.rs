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

/// Rules concern every tenant: any `admin` grant may read them.
async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<RuleConfig>>, ApiError> {
    if !caller.may_anywhere(Op::Admin) {
        return Err(ServiceError::Forbidden(Op::Admin).into());
    }
    Ok(axum::Json(
        app.pipeline.rules.list().into_iter().cloned().collect(),
    ))
}
