//! One module per command; each takes its arguments and the [`Context`].

mod audit;
mod keys;
mod publish;
mod rules;
mod schemas;
mod silences;
mod subs;
mod tail;
mod topics;

use acteon_client::Client;
use anyhow::Context as _;

use crate::args::{Cli, Command, Global};

/// What every command shares: where the server is, and how to print.
#[derive(Debug)]
pub(crate) struct Context {
    global: Global,
}

impl Context {
    /// Whether to print JSON instead of tables and sentences.
    pub(crate) fn json(&self) -> bool {
        self.global.json
    }

    /// A client of the server; built only by commands that need one, so
    /// `keys new` works with no server and a bad `--url` alike.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let mut builder = Client::builder(self.global.url.as_str());
        if let Some(key) = &self.global.api_key {
            builder = builder.api_key(key.0.as_str());
        }
        builder.build().context("--url / ACTEON_URL")
    }
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let context = Context { global: cli.global };
    match cli.command {
        Command::Topics(command) => topics::run(&context, command).await,
        Command::Publish(args) => publish::run(&context, args).await,
        Command::Tail(args) => tail::run(&context, args).await,
        Command::Subs(command) => subs::run(&context, command).await,
        Command::Silences(command) => silences::run(&context, command).await,
        Command::Rules(command) => rules::run(&context, command).await,
        Command::Schemas(command) => schemas::run(&context, command).await,
        Command::Audit(args) => audit::run(&context, args).await,
        Command::Keys(command) => keys::run(&context, command),
    }
}
