//! `acteon-server`: loads the configuration and serves until SIGINT/SIGTERM.

use acteon_server::app::{init_logging, run};
use acteon_server::{Cli, Config};
use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    let config = Config::load(&cli).context("loading configuration")?;
    run(config).await
}
