//! Per-tenant (and narrower) publish rate limits, with governor's GCRA.

use std::num::NonZeroU32;
use std::time::Duration;

use acteon_core::{Scope, TopicName};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as Gcra, RateLimiter};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A `[[quotas]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The topic's short name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub max_per_second: u32,
    /// Messages allowed at once above the steady rate (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl QuotaConfig {
    /// How the quota is named in answers and audit: `tenant[/namespace][/topic]`.
    pub fn label(&self) -> String {
        let mut label = self.tenant.clone();
        for part in [&self.namespace, &self.topic].into_iter().flatten() {
            label.push('/');
            label.push_str(part);
        }
        label
    }

    fn scope(&self) -> Result<Scope, QuotaError> {
        Scope::new(
            self.namespace.as_deref(),
            Some(&self.tenant),
            self.topic.as_deref(),
        )
        .map_err(|error| QuotaError {
            label: self.label(),
            reason: error.to_string(),
        })
    }
}

/// A quota that cannot be loaded.
#[derive(Debug, Error)]
#[error("quota {label}: {reason}")]
pub struct QuotaError {
    label: String,
    reason: String,
}

/// Over quota: which one, and how long until a message is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    pub quota: String,
    pub wait: Duration,
}

#[derive(Debug)]
struct Limiter {
    config: QuotaConfig,
    scope: Scope,
    limiter: DefaultDirectRateLimiter,
}

/// Every configured quota.
#[derive(Debug, Default)]
pub struct Quotas {
    limiters: Vec<Limiter>,
}

impl Quotas {
    pub fn new(configs: &[QuotaConfig]) -> Result<Self, QuotaError> {
        let limiters = configs
            .iter()
            .map(|config| {
                let invalid = || QuotaError {
                    label: config.label(),
                    reason: "max_per_second and burst must be at least 1".to_owned(),
                };
                let rate = NonZeroU32::new(config.max_per_second).ok_or_else(invalid)?;
                let burst = NonZeroU32::new(config.burst.unwrap_or(config.max_per_second))
                    .ok_or_else(invalid)?;
                Ok(Limiter {
                    scope: config.scope()?,
                    config: config.clone(),
                    limiter: RateLimiter::direct(Gcra::per_second(rate).allow_burst(burst)),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut limiters = limiters;
        limiters.sort_by_key(|l| {
            std::cmp::Reverse((l.config.topic.is_some(), l.config.namespace.is_some()))
        });
        Ok(Self { limiters })
    }

    /// Takes one message from every quota covering `topic`, narrowest first
    /// (topic, then namespace, then tenant), so a message refused by a narrow
    /// quota uses none of the broader ones; the first with none left answers.
    pub fn take(&self, topic: &TopicName) -> Result<(), Throttled> {
        for limiter in self.limiters.iter().filter(|l| l.scope.covers_topic(topic)) {
            if let Err(not_until) = limiter.limiter.check() {
                return Err(Throttled {
                    quota: limiter.config.label(),
                    wait: not_until.wait_time_from(DefaultClock::default().now()),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_quota_throttles_past_its_burst_and_spares_other_tenants() {
        let quotas = Quotas::new(&[QuotaConfig {
            tenant: "demo".into(),
            namespace: None,
            topic: None,
            max_per_second: 1,
            burst: Some(3),
        }])
        .unwrap();
        let demo = TopicName::new("agents", "demo", "inbox").unwrap();
        let other = TopicName::new("agents", "acme", "inbox").unwrap();
        for _ in 0..3 {
            quotas.take(&demo).unwrap();
        }
        let throttled = quotas.take(&demo).unwrap_err();
        assert_eq!(throttled.quota, "demo");
        assert!(throttled.wait > Duration::ZERO && throttled.wait <= Duration::from_secs(1));
        for _ in 0..10 {
            quotas.take(&other).unwrap();
        }
    }

    #[test]
    fn a_narrow_quota_covers_only_its_topic() {
        let quotas = Quotas::new(&[QuotaConfig {
            tenant: "demo".into(),
            namespace: Some("agents".into()),
            topic: Some("hot".into()),
            max_per_second: 1,
            burst: None,
        }])
        .unwrap();
        let hot = TopicName::new("agents", "demo", "hot").unwrap();
        let cold = TopicName::new("agents", "demo", "cold").unwrap();
        quotas.take(&hot).unwrap();
        assert_eq!(quotas.take(&hot).unwrap_err().quota, "demo/agents/hot");
        quotas.take(&cold).unwrap();
        quotas.take(&cold).unwrap();
    }

    #[test]
    fn a_zero_rate_is_refused() {
        let zero = QuotaConfig {
            tenant: "t".into(),
            namespace: None,
            topic: None,
            max_per_second: 0,
            burst: None,
        };
        assert!(Quotas::new(&[zero]).is_err());
    }
}
