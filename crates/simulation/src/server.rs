//! An Acteon server in this process, for the examples.

use acteon_bus::KAFKA_BOOTSTRAP_ENV;
use acteon_server::config::StateEngine;
use acteon_server::{Cli, Config, Server};
use anyhow::bail;

/// Starts a server on a free loopback port on the Kafka backend at
/// `ACTEON_KAFKA_BOOTSTRAP`, with short group timings; returns its base URL.
pub async fn start_server_on_kafka() -> anyhow::Result<String> {
    if std::env::var_os(KAFKA_BOOTSTRAP_ENV).is_none() {
        bail!("set {KAFKA_BOOTSTRAP_ENV} (a broker) or ACTEON_URL (a running server)");
    }
    let mut config = Config::load(&Cli::default())?;
    config.server.listen = "127.0.0.1:0".parse()?;
    config.state.engine = StateEngine::Memory;
    if let Some(kafka) = &mut config.bus.kafka {
        // Short group timings: members notice rebalances within a second.
        kafka.session_timeout_ms = 6_000;
        kafka.heartbeat_interval_ms = 1_000;
    }
    let server = Server::build(config).await?;
    let listener = server.bind().await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(server.serve(listener));
    Ok(base_url)
}
