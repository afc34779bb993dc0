//! Runnable examples of Acteon against a real broker; see `examples/`.
//!
//! `bus_simulation`: two competing agents and a tail consumer, checking that
//! a subscription id shares records and a distinct one sees them all:
//!
//! ```text
//! ACTEON_KAFKA_BOOTSTRAP=localhost:9092 cargo run -p acteon-simulation --features bus --example bus_simulation
//! ```
//!
//! `work_queue`: three workers on one durable subscription, one dropping its
//! connection mid-task and one task that always fails, checking that every
//! task is done or dead-lettered and none is done again after its ack.
//!
//! `reconciler`: an API emitting Created/Updated/Deleted events per agent
//! and a reconciler daemon (a child process, killed and started again
//! mid-run) whose final state must equal the history applied in order.
//!
//! `bus-bench`: Acteon side by side with its baselines (see [`bench`] and
//! `docs/benchmarks.md`):
//!
//! ```text
//! cargo run --release -p acteon-simulation --bin bus-bench -- [--quick] [--kafka <bootstrap>] [--out report.json]
//! ```

#[cfg(feature = "bus")]
pub mod bench;

#[cfg(feature = "bus")]
mod server;
#[cfg(feature = "bus")]
pub use server::start_server_on_kafka;
