//! The Acteon HTTP server: topic CRUD, publish with receipts, and SSE
//! subscriptions over a [`BusBackend`](acteon_bus::BusBackend), with topic
//! metadata in a [`state`] store.

mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod cors;
pub mod durable;
pub mod error;
pub mod idempotency;
pub mod limits;
mod listener;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod pipeline;
mod request_context;
pub mod schemas;
mod shared;
pub mod state;
pub mod topics;

pub use app::Server;
pub use config::{Cli, Config};
