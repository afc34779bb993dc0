//! Rust client for the Acteon HTTP API.
