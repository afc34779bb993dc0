//! Runnable examples of Acteon against a real broker; see `examples/`.
//!
//! `bus_simulation`: two competing agents and a tail consumer, checking that
//! a subscription id shares records and a distinct one sees them all:
//!
//! ```text
//! ACTEON_KAFKA_BOOTSTRAP=localhost:9092 cargo run -p acteon-simulation --features bus --example bus_simulation
//! ```
//!
//! `bus-bench`: Acteon side by side with its baselines (see [`bench`] and
//! `docs/benchmarks.md`):
//!
//! ```text
//! cargo run --release -p acteon-simulation --bin bus-bench -- [--quick] [--kafka <bootstrap>] [--out report.json]
//! ```

#[cfg(feature = "bus")]
pub mod bench;
