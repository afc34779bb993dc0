//! The HTTP API: one module per resource.

#[cfg(feature = "bus")]
mod audit;
#[cfg(feature = "bus")]
mod extract;
mod health;
#[cfg(feature = "bus")]
mod publish;
#[cfg(feature = "bus")]
mod rules;
#[cfg(feature = "bus")]
mod silences;
#[cfg(feature = "bus")]
mod subscribe;
#[cfg(feature = "bus")]
mod topics;

use axum::Router;

use crate::app::AppState;

/// Every route of the API.
pub(crate) fn router(bus_enabled: bool) -> Router<AppState> {
    let router = health::routes();
    #[cfg(feature = "bus")]
    let router = if bus_enabled {
        router
            .merge(topics::routes())
            .merge(publish::routes())
            .merge(subscribe::routes())
            .merge(rules::routes())
            .merge(silences::routes())
            .merge(audit::routes())
    } else {
        router
    };
    #[cfg(not(feature = "bus"))]
    let _ = bus_enabled;
    router
}
