//! `GET /v1/rules`: the loaded rules in evaluation order.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::pipeline::RuleConfig;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// The rules whose scope the caller administers: a rule without a tenant
/// concerns every tenant, so only a `"*"` admin sees it. A key with no
/// `admin` grant at all is refused.
#[utoipa::path(
    get,
    path = "/v1/rules",
    tag = "pipeline",
    responses((status = 200, description = "The rules in evaluation order", body = Vec<RuleConfig>), Refusals),
)]
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
