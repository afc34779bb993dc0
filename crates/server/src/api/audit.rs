//! `GET /v1/audit`: audit records, newest first, a page at a time.

use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::extract::Query;
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::pipeline::{AuditQuery, AuditRecord};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(query))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuditPage {
    records: Vec<AuditRecord>,
    /// Pass as `before` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<u64>,
}

/// Audit records, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = AuditPage), Refusals),
)]
async fn query(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    // A query without a tenant (or namespace) reads every tenant's (or
    // namespace's) records, which only a "*" grant covers; a topic names
    // its namespace and tenant.
    let filter = query.filter()?;
    caller.require(Op::Audit, &filter.scope)?;
    let records = app
        .state
        .query_audit(&filter)
        .await
        .map_err(ServiceError::from)?;
    let next_before = (records.len() == filter.limit)
        .then(|| records.last().map(|record| record.id))
        .flatten();
    Ok(axum::Json(AuditPage {
        records,
        next_before,
    }))
}
