//! The Acteon HTTP server.
