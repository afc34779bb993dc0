//! The HTTP API: one module per resource, and extractors whose rejections
//! are JSON errors like every other failure.

mod health;
#[cfg(feature = "bus")]
mod publish;
#[cfg(feature = "bus")]
mod subscribe;
#[cfg(feature = "bus")]
mod topics;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts};

use crate::app::AppState;
use crate::error::ApiError;

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct Json<T>(pub(crate) T);

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct Query<T>(pub(crate) T);

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct Path<T>(pub(crate) T);

/// Every route of the API.
pub(crate) fn router(bus_enabled: bool) -> Router<AppState> {
    let router = health::routes();
    #[cfg(feature = "bus")]
    let router = if bus_enabled {
        router
            .merge(topics::routes())
            .merge(publish::routes())
            .merge(subscribe::routes())
    } else {
        router
    };
    #[cfg(not(feature = "bus"))]
    let _ = bus_enabled;
    router
}
