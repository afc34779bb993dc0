//! The HTTP API: one module per resource.

#[cfg(feature = "bus")]
mod audit;
#[cfg(feature = "bus")]
mod durable;
#[cfg(feature = "bus")]
mod extract;
mod health;
mod metrics;
#[cfg(feature = "bus")]
mod publish;
#[cfg(feature = "bus")]
mod rules;
#[cfg(feature = "bus")]
mod silences;
#[cfg(feature = "bus")]
mod subscribe;
#[cfg(feature = "bus")]
mod tokens;
#[cfg(feature = "bus")]
mod topics;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub(crate) use self::health::Readiness;
use crate::app::AppState;
use crate::config::Config;
use crate::error::ApiError;

/// A handler panicked: a JSON 500 instead of a dropped connection.
pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Request {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "internal error".to_owned(),
    }
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::Request {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint".to_owned(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::Request {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "method not allowed on this endpoint".to_owned(),
    }
}

/// Every route of the API the configuration enables.
pub(crate) fn router(config: &Config) -> Router<AppState> {
    let bus_enabled = config.bus.enabled;
    let router = health::routes();
    let router = if config.metrics.enabled {
        router.merge(metrics::routes())
    } else {
        router
    };
    #[cfg(feature = "bus")]
    let router = if bus_enabled {
        router
            .merge(topics::routes())
            .merge(publish::routes())
            .merge(subscribe::routes())
            .merge(durable::routes())
            .merge(rules::routes())
            .merge(silences::routes())
            .merge(audit::routes())
            .merge(tokens::routes())
    } else {
        router
    };
    #[cfg(not(feature = "bus"))]
    let _ = bus_enabled;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}
