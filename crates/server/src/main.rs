//! `acteon-server`: loads the configuration and serves until SIGINT/SIGTERM.

use acteon_server::app::run;
use acteon_server::logging;
use acteon_server::{Cli, Config};
use anyhow::Context;
use clap::Parser;

// glibc's allocator took a tenth of the server's CPU under load, most of
// it in its free-list upkeep; jemalloc's thread caches cost less.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli).context("loading configuration")?;
    logging::init(&config.log)?;
    run(config).await
}
