//! Latency histograms and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds: three significant digits up to a minute, in
/// constant memory however many are recorded.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds"))
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn merge(&mut self, other: &Self) {
        self.0
            .add(&other.0)
            .expect("histograms made by Latencies::default share their bounds");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            p50_us: self.0.value_at_quantile(0.50),
            p99_us: self.0.value_at_quantile(0.99),
            max_us: self.0.max(),
        }
    }
}

/// Percentiles of a [`Latencies`], in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    /// What is wrong with it, if anything: no samples, or percentiles out of order.
    pub fn problem(&self) -> Option<String> {
        if self.count == 0 {
            return Some("no latencies recorded".to_owned());
        }
        (!(self.p50_us <= self.p99_us && self.p99_us <= self.max_us)).then(|| {
            format!(
                "percentiles out of order: p50 {} µs, p99 {} µs, max {} µs",
                self.p50_us, self.p99_us, self.max_us
            )
        })
    }
}

/// Milliseconds with two decimals, for tables.
pub fn millis(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut latencies = Latencies::default();
        for micros in 1..=1000 {
            latencies.record(Duration::from_micros(micros));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 1000);
        assert!((499..=501).contains(&summary.p50_us), "{summary:?}");
        assert!((989..=991).contains(&summary.p99_us), "{summary:?}");
        assert_eq!(summary.max_us, 1000);
        assert_eq!(summary.problem(), None);
    }

    #[test]
    fn merging_adds_the_counts() {
        let mut first = Latencies::default();
        first.record(Duration::from_millis(1));
        let mut second = Latencies::default();
        second.record(Duration::from_millis(3));
        first.merge(&second);
        assert_eq!(first.count(), 2);
        assert!(first.summary().max_us >= 2_999);
    }

    #[test]
    fn an_empty_histogram_is_a_problem() {
        assert!(Latencies::default().summary().problem().is_some());
    }
}
