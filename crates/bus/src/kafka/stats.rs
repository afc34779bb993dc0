//! How full the producer's requests are, from librdkafka's statistics:
//! produce requests sent and records sent in them. The broker's cost is
//! largely per request, so records per request says what a record costs
//! it.
//!
//! librdkafka emits its statistics every `statistics.interval.ms`, with
//! counts since the producer was built. The backend replaces a producer
//! that can no longer deliver, so each producer's context adds what it
//! sent since its previous report to one tally shared by all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::ClientContext;
use serde::Deserialize;

use crate::ProduceFigures;

/// What every producer of the backend sent, as of their last statistics.
#[derive(Debug, Default)]
pub struct ProduceTally {
    requests: AtomicU64,
    records: AtomicU64,
}

impl ProduceTally {
    pub fn figures(&self) -> ProduceFigures {
        ProduceFigures {
            requests: self.requests.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
        }
    }

    fn add(&self, sent: ProduceFigures) {
        self.requests.fetch_add(sent.requests, Ordering::Relaxed);
        self.records.fetch_add(sent.records, Ordering::Relaxed);
    }
}

/// The parts of librdkafka's statistics read here.
#[derive(Debug, Deserialize)]
struct Statistics {
    /// Records sent to brokers.
    txmsgs: u64,
    brokers: HashMap<String, BrokerStatistics>,
}

#[derive(Debug, Deserialize)]
struct BrokerStatistics {
    /// Requests sent, by request type.
    #[serde(default)]
    req: HashMap<String, u64>,
}

impl Statistics {
    fn sent(&self) -> ProduceFigures {
        ProduceFigures {
            requests: self
                .brokers
                .values()
                .filter_map(|broker| broker.req.get("Produce"))
                .sum(),
            records: self.txmsgs,
        }
    }
}

/// A producer's client context: it adds the producer's statistics to a
/// tally.
#[derive(Debug)]
pub struct CountingContext {
    tally: Arc<ProduceTally>,
    /// This producer's counts at its previous report.
    reported: Mutex<ProduceFigures>,
}

impl CountingContext {
    pub fn new(tally: Arc<ProduceTally>) -> Self {
        Self {
            tally,
            reported: Mutex::default(),
        }
    }
}

impl ClientContext for CountingContext {
    fn stats_raw(&self, statistics: &[u8]) {
        let sent = match serde_json::from_slice::<Statistics>(statistics) {
            Ok(statistics) => statistics.sent(),
            Err(error) => {
                tracing::warn!(%error, "librdkafka's statistics did not parse");
                return;
            }
        };
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        // Counts only grow within one producer; a smaller one is not
        // counted twice.
        self.tally.add(ProduceFigures {
            requests: sent.requests.saturating_sub(reported.requests),
            records: sent.records.saturating_sub(reported.records),
        });
        *reported = ProduceFigures {
            requests: sent.requests.max(reported.requests),
            records: sent.records.max(reported.records),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statistics(produce_requests: u64, records: u64) -> Vec<u8> {
        serde_json::json!({
            "name": "acteon#producer-1",
            "txmsgs": records,
            "brokers": {
                "127.0.0.1:9092/bootstrap": { "req": { "Produce": 0, "Metadata": 2 } },
                "localhost:9092/1": { "req": { "Produce": produce_requests, "ApiVersion": 1 } },
                "GroupCoordinator": {},
            },
            "topics": {},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn each_producer_adds_what_it_sent_since_its_last_report() {
        let tally = Arc::new(ProduceTally::default());
        let first = CountingContext::new(Arc::clone(&tally));
        first.stats_raw(&statistics(2, 50));
        first.stats_raw(&statistics(5, 120));
        assert_eq!(
            tally.figures(),
            ProduceFigures {
                requests: 5,
                records: 120
            }
        );

        // A replacement starts counting from nothing again.
        let replacement = CountingContext::new(Arc::clone(&tally));
        replacement.stats_raw(&statistics(1, 10));
        first.stats_raw(&statistics(5, 120));
        assert_eq!(
            tally.figures(),
            ProduceFigures {
                requests: 6,
                records: 130
            }
        );

        replacement.stats_raw(b"not json");
        assert_eq!(tally.figures().requests, 6);
    }
}
