//! `acteon`, the command line of the Acteon event bus: topics, publish,
//! tail, durable subscriptions, silences, rules, audit and API keys, over
//! the HTTP API through `acteon-client`.
//!
//! Exit codes: 0 done; 1 the server refused (its reason is printed) or
//! records failed to publish; 2 a usage error; 3 the server could not be
//! reached or a stream broke.

mod args;
mod commands;
mod exit;
mod output;
mod parse;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit with 2 here, as clap does for every CLI.
    let cli = args::Cli::parse();
    // One thread is plenty: the work is waiting on the server.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // A read of stdin may still be blocked on its thread (a publish that
    // stopped early); waiting for it would hang the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit::report(&error),
    }
}
