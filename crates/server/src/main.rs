//! `acteon-server`: loads the configuration and serves until SIGINT/SIGTERM.

use acteon_server::app::cancel_on_signal;
use acteon_server::{Cli, Config, Server};
use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = Config::load(&cli).context("loading configuration")?;
    let server = Server::build(config).await?;
    let listener = server.bind().await?;
    // One line on stdout with the bound address, for scripts and tests that
    // start the server on port 0.
    println!(
        "acteon-server listening on http://{}",
        listener.local_addr()?
    );
    tokio::spawn(cancel_on_signal(server.shutdown_token()));
    server.serve(listener).await
}
