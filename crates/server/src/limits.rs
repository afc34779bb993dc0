//! Per-tenant and per-key limits, so that no tenant can use up what the
//! others share: stored topics and silences, open SSE connections, and the
//! size of what a caller hands the pipeline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ServiceError;

/// The `[limits]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Topics one tenant may have; another create is refused with 403.
    pub max_topics_per_tenant: usize,
    /// Silences one tenant may have, ended ones still listed included.
    pub max_silences_per_tenant: usize,
    /// Longest a silence may last, in seconds.
    pub max_silence_secs: u64,
    /// SSE connections one tenant may hold open; more get 429.
    pub max_subscriptions_per_tenant: usize,
    /// SSE connections one API key may hold open; more get 429.
    pub max_subscriptions_per_key: usize,
    /// Longest message key, in bytes.
    pub max_key_bytes: usize,
    /// Most headers on one message.
    pub max_headers: usize,
    /// Longest total of a message's header names and values, in bytes.
    pub max_header_bytes: usize,
    /// Longest CEL condition a caller may supply (silences), in bytes.
    pub max_condition_bytes: usize,
    /// Deepest nesting of a caller's CEL condition: brackets, and calls
    /// within calls.
    pub max_condition_depth: usize,
    /// Schema subjects one tenant may have, those without versions left
    /// included.
    pub max_schema_subjects_per_tenant: usize,
    /// The JSON text of one tenant's kept schema versions, in all, in
    /// bytes: every version is held compiled in memory.
    pub max_schema_bytes_per_tenant: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_topics_per_tenant: 1_000,
            max_silences_per_tenant: 100,
            max_silence_secs: 30 * 24 * 3600,
            max_subscriptions_per_tenant: 1_000,
            max_subscriptions_per_key: 1_000,
            max_key_bytes: 4 * 1024,
            max_headers: 64,
            max_header_bytes: 16 * 1024,
            max_condition_bytes: 2 * 1024,
            max_condition_depth: 16,
            max_schema_subjects_per_tenant: 1_000,
            max_schema_bytes_per_tenant: 4 * 1024 * 1024,
        }
    }
}

/// Open SSE connections, counted server-wide, per tenant and per key.
#[derive(Debug)]
pub struct Connections {
    total: Arc<Semaphore>,
    counts: Arc<Mutex<Counts>>,
    per_tenant: usize,
    per_key: usize,
}

#[derive(Debug, Default)]
struct Counts {
    by_tenant: HashMap<String, usize>,
    by_key: HashMap<String, usize>,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    _total: OwnedSemaphorePermit,
    counts: Arc<Mutex<Counts>>,
    tenant: String,
    key: Option<String>,
}

fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // The counts are plain integers, consistent after any panic.
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lowers `name`'s count, forgetting it at zero, so the maps hold only
/// tenants and keys with open connections.
fn release(counts: &mut HashMap<String, usize>, name: &str) {
    if let Some(count) = counts.get_mut(name) {
        *count -= 1;
        if *count == 0 {
            counts.remove(name);
        }
    }
}

impl Connections {
    pub fn new(total: usize, limits: &LimitsConfig) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            counts: Arc::default(),
            per_tenant: limits.max_subscriptions_per_tenant,
            per_key: limits.max_subscriptions_per_key,
        }
    }

    /// How many connections each tenant has open.
    pub fn open_by_tenant(&self) -> Vec<(String, usize)> {
        lock(&self.counts)
            .by_tenant
            .iter()
            .map(|(tenant, open)| (tenant.clone(), *open))
            .collect()
    }

    /// A place for one more connection of `tenant`, opened with `key`.
    pub fn open(&self, tenant: &str, key: Option<&str>) -> Result<ConnectionPermit, ServiceError> {
        let total = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| ServiceError::TooManySubscriptions)?;
        let mut counts = lock(&self.counts);
        let tenant_count = counts.by_tenant.get(tenant).copied().unwrap_or(0);
        if tenant_count >= self.per_tenant {
            return Err(ServiceError::TooManyConnections(format!(
                "tenant {tenant} has {tenant_count} open subscriptions, \
                 the most max_subscriptions_per_tenant allows"
            )));
        }
        if let Some(key) = key {
            let key_count = counts.by_key.get(key).copied().unwrap_or(0);
            if key_count >= self.per_key {
                return Err(ServiceError::TooManyConnections(format!(
                    "API key {key} has {key_count} open subscriptions, \
                     the most max_subscriptions_per_key allows"
                )));
            }
            *counts.by_key.entry(key.to_owned()).or_default() += 1;
        }
        *counts.by_tenant.entry(tenant.to_owned()).or_default() += 1;
        Ok(ConnectionPermit {
            _total: total,
            counts: Arc::clone(&self.counts),
            tenant: tenant.to_owned(),
            key: key.map(str::to_owned),
        })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        release(&mut counts.by_tenant, &self.tenant);
        if let Some(key) = &self.key {
            release(&mut counts.by_key, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(total: usize, per_tenant: usize, per_key: usize) -> Connections {
        let limits = LimitsConfig {
            max_subscriptions_per_tenant: per_tenant,
            max_subscriptions_per_key: per_key,
            ..LimitsConfig::default()
        };
        Connections::new(total, &limits)
    }

    #[test]
    fn a_tenant_at_its_limit_leaves_room_for_others() {
        let connections = connections(10, 2, 10);
        let first = connections.open("a", None).unwrap();
        let _second = connections.open("a", None).unwrap();
        let refused = connections.open("a", None).unwrap_err();
        assert!(
            matches!(&refused, ServiceError::TooManyConnections(reason) if reason.contains("tenant a")),
            "{refused}"
        );
        connections.open("b", None).unwrap();
        drop(first);
        connections.open("a", None).unwrap();
    }

    #[test]
    fn a_key_at_its_limit_is_refused_across_tenants() {
        let connections = connections(10, 10, 1);
        let held = connections.open("a", Some("k")).unwrap();
        assert!(matches!(
            connections.open("b", Some("k")),
            Err(ServiceError::TooManyConnections(_))
        ));
        drop(held);
        let _held = connections.open("b", Some("k")).unwrap();
        assert_eq!(lock(&connections.counts).by_key.len(), 1);
    }

    #[test]
    fn the_server_wide_limit_comes_first() {
        let connections = connections(1, 10, 10);
        let _held = connections.open("a", None).unwrap();
        assert!(matches!(
            connections.open("b", None),
            Err(ServiceError::TooManySubscriptions)
        ));
        assert_eq!(
            lock(&connections.counts).by_tenant.len(),
            1,
            "a refusal counts nothing"
        );
    }
}
