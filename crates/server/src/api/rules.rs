//! `GET /v1/rules`: the loaded rules in evaluation order.

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::app::AppState;
use crate::pipeline::RuleConfig;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/rules", get(list))
}

async fn list(State(app): State<AppState>) -> axum::Json<Vec<RuleConfig>> {
    axum::Json(app.pipeline.rules.list().into_iter().cloned().collect())
}
