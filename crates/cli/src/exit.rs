//! How a failed command ends: the message on stderr and the exit code.

use std::process::ExitCode;

/// The server refused, or some records were not published.
const REFUSED: u8 = 1;
/// The command line asked for something impossible (as clap exits).
const USAGE: u8 = 2;
/// The server could not be reached, or a stream broke.
const TRANSPORT: u8 = 3;

/// An argument that parsed but makes no sense; exits with [`USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// Whoever reads stdout went away (`acteon tail ... | head`): not a
/// failure, the command just stops.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub(crate) struct StdoutClosed;

/// Prints `error` and picks the exit code from the first cause that
/// decides one.
pub(crate) fn report(error: &anyhow::Error) -> ExitCode {
    if error.chain().any(|cause| cause.is::<StdoutClosed>()) {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {}", message(error));
    for cause in error.chain() {
        if let Some(error) = cause.downcast_ref::<acteon_client::Error>() {
            if let Some(wait) = retry_after(error) {
                eprintln!("the server asks to retry after {} s", wait.as_secs());
            }
            return ExitCode::from(client_code(error));
        }
        if cause.is::<UsageError>() {
            return ExitCode::from(USAGE);
        }
    }
    ExitCode::from(REFUSED)
}

/// The causes joined with `: `, leaving out a cause whose text the one
/// before already includes (a transport error repeats its source's).
fn message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if previous.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
        previous = text;
    }
    message
}

fn client_code(error: &acteon_client::Error) -> u8 {
    use acteon_client::Error;
    match error {
        Error::Api { .. } | Error::Decode(_) => REFUSED,
        Error::InvalidBaseUrl(_) => USAGE,
        Error::Transport(_) | Error::Stream(_) => TRANSPORT,
    }
}

fn retry_after(error: &acteon_client::Error) -> Option<std::time::Duration> {
    match error {
        acteon_client::Error::Api { retry_after, .. } => *retry_after,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("transport error: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn a_cause_is_not_repeated() {
        let error = anyhow::Error::new(Repeats(std::io::Error::other("refused"))).context("list");
        assert_eq!(message(&error), "list: transport error: refused");
    }

    #[test]
    fn the_client_error_under_a_context_decides_the_code() {
        let refused = anyhow::Error::new(acteon_client::Error::Api {
            status: 404,
            message: "no such topic".into(),
            retry_after: None,
        })
        .context("publish");
        assert_eq!(report(&refused), ExitCode::from(REFUSED));
        let usage = anyhow::Error::new(UsageError("two names".into())).context("create");
        assert_eq!(report(&usage), ExitCode::from(USAGE));
        let broken = anyhow::Error::new(acteon_client::Error::Stream("reset".into()));
        assert_eq!(report(&broken), ExitCode::from(TRANSPORT));
        assert_eq!(report(&anyhow::anyhow!("other")), ExitCode::from(REFUSED));
        assert_eq!(report(&anyhow::Error::new(StdoutClosed)), ExitCode::SUCCESS);
    }
}
