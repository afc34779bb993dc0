//! The client's one error type.

use std::time::Duration;

use thiserror::Error;

/// A failed call.
#[derive(Debug, Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{status}: {message}")]
    Api {
        status: u16,
        /// The server's `error` text.
        message: String,
        /// The server's `Retry-After`, on 429 and 503 answers.
        retry_after: Option<Duration>,
    },
    /// The base URL given to the builder is not an http(s) URL.
    #[error("invalid base URL {0:?}")]
    InvalidBaseUrl(String),
    /// The server could not be reached, or the connection failed.
    #[error("transport error: {0}")]
    Transport(#[from] reqwest::Error),
    /// The server answered with a body this client does not understand.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// A subscription stream broke or the server reported a `bus.error`.
    #[error("subscription failed: {0}")]
    Stream(String),
}

impl Error {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The same error again, for each of the callers a failed batch
    /// answers (a transport error is kept as its text).
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Api {
                status,
                message,
                retry_after,
            } => Self::Api {
                status: *status,
                message: message.clone(),
                retry_after: *retry_after,
            },
            Self::InvalidBaseUrl(url) => Self::InvalidBaseUrl(url.clone()),
            Self::Decode(text) => Self::Decode(text.clone()),
            Self::Transport(error) => Self::Stream(error.to_string()),
            Self::Stream(text) => Self::Stream(text.clone()),
        }
    }

    /// Whether the same call may succeed later (503, 429, or transport).
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Api { status, .. } => matches!(status, 429 | 503),
            Self::Transport(_) => true,
            Self::InvalidBaseUrl(_) | Self::Decode(_) | Self::Stream(_) => false,
        }
    }
}
