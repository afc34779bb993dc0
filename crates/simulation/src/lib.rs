//! Runnable examples of Acteon against a real broker; see `examples/`.
//!
//! `bus_simulation`: two competing agents and a tail consumer, checking that
//! a subscription id shares records and a distinct one sees them all:
//!
//! ```text
//! ACTEON_KAFKA_BOOTSTRAP=localhost:9092 cargo run -p acteon-simulation --features bus --example bus_simulation
//! ```
