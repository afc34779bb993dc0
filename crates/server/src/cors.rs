//! Cross-origin requests from browsers: `[server.cors] allowed_origins`.
//!
//! No origin is allowed by default. Preflights are answered for every
//! route, SSE included; credentials (cookies) are never allowed, since the
//! API takes bearer keys and subscribe tokens instead.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The `[server.cors]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`https://app.example.com`, `http://localhost:5173`) whose
    /// pages may call the API; `"*"` allows any.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Error)]
#[error(
    "[server.cors] allowed_origins: {origin:?} is not an origin (scheme://host[:port]) or \"*\""
)]
pub struct BadOrigin {
    origin: String,
}

fn is_origin(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once("://") else {
        return false;
    };
    let scheme_ok = !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic());
    // An origin has no path, query or fragment, and no trailing slash.
    let host_ok = !rest.is_empty() && !rest.contains(['/', '?', '#', ' ']);
    scheme_ok && host_ok
}

impl CorsConfig {
    /// The layer, or `None` when no origin is allowed.
    pub fn layer(&self) -> Result<Option<CorsLayer>, BadOrigin> {
        if self.allowed_origins.is_empty() {
            return Ok(None);
        }
        let origins = if self.allowed_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            let mut values = Vec::with_capacity(self.allowed_origins.len());
            for origin in &self.allowed_origins {
                // Browsers send scheme and host in lower case.
                let origin = origin.to_ascii_lowercase();
                let value = HeaderValue::from_str(&origin)
                    .ok()
                    .filter(|_| is_origin(&origin))
                    .ok_or(BadOrigin { origin })?;
                values.push(value);
            }
            AllowOrigin::list(values)
        };
        let layer = CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotent-replayed"),
                header::RETRY_AFTER,
            ])
            .max_age(PREFLIGHT_MAX_AGE);
        Ok(Some(layer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn origins_are_checked_when_loaded() {
        assert!(config(&[]).layer().unwrap().is_none());
        assert!(config(&["*"]).layer().unwrap().is_some());
        assert!(
            config(&["https://app.example.com", "http://127.0.0.1:5173"])
                .layer()
                .unwrap()
                .is_some()
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://",
            "://x",
            "http://a b",
        ] {
            assert!(config(&[bad]).layer().is_err(), "{bad}");
        }
    }
}
