//! Runnable examples and benchmarks of Acteon against a real broker.
