//! The baseline of the HTTP publish scenario: an axum handler that parses
//! the same JSON body as Acteon's `POST /v1/bus/publish` and answers a
//! receipt of the same shape, with nothing behind it.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use acteon_core::{DeliveryReceipt, Headers};
use axum::Router;
use axum::extract::{Json, State};
use axum::routing::post;
use chrono::Utc;
use serde::Deserialize;
use tokio::net::TcpListener;

/// The fields Acteon's publish body has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    topic: serde_json::Value,
    #[serde(default)]
    key: Option<String>,
    #[expect(dead_code, reason = "parsed like Acteon parses it, then dropped")]
    payload: serde_json::Value,
    #[serde(default)]
    #[expect(dead_code, reason = "parsed like Acteon parses it, then dropped")]
    headers: Headers,
}

fn router() -> Router {
    Router::new()
        .route("/v1/bus/publish", post(publish))
        .with_state(Arc::new(AtomicI64::new(0)))
}

async fn publish(
    State(next_offset): State<Arc<AtomicI64>>,
    Json(body): Json<PublishBody>,
) -> Json<DeliveryReceipt> {
    let partition = body.key.as_deref().map_or(0, |key| (key.len() % 4) as i32);
    Json(DeliveryReceipt {
        topic: body.topic.as_str().unwrap_or_default().to_owned(),
        partition,
        offset: next_offset.fetch_add(1, Ordering::Relaxed),
        produced_at: Utc::now(),
    })
}

/// Serves on a free loopback port, announcing it on stdout as Acteon does.
pub async fn serve() -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    println!(
        "bare handler listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, router()).await?;
    Ok(())
}
