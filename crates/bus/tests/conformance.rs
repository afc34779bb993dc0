//! The shared conformance suite against both backends.

mod memory {
    use std::sync::Arc;

    use acteon_bus::{BusBackend, MemoryBackend};

    acteon_bus::conformance_tests!(test => {
        let _ = test;
        Some(Arc::new(MemoryBackend::default()) as Arc<dyn BusBackend>)
    });
}

mod kafka {
    acteon_bus::conformance_tests!(test => acteon_bus::conformance::kafka_backend_from_env(test));
}
