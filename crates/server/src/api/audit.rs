//! `GET /v1/audit`: audit records, newest first, a page at a time.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;

use super::extract::Query;
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::{ApiError, ServiceError};
use crate::pipeline::{AuditQuery, AuditRecord};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/audit", get(query))
}

#[derive(Debug, Serialize)]
struct AuditPage {
    records: Vec<AuditRecord>,
    /// Pass as `before` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<u64>,
}

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
