//! How full the producer's requests are, from librdkafka's statistics:
//! produce requests sent and records sent in them. The broker's cost is
//! largely per request, so records per request says what a record costs
//! it.
//!
//! librdkafka emits its statistics every `statistics.interval.ms`: each
//! broker's produce requests and each partition's records, since the
//! producer first knew them (retries included on both sides). The backend
//! replaces a producer that can no longer deliver, so each producer's
//! context adds what it sent since its previous report to one tally
//! shared by all of them; what a replaced producer sent after its last
//! report is not counted.

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
    #[serde(default)]
    brokers: HashMap<String, BrokerStatistics>,
    #[serde(default)]
    topics: HashMap<String, TopicStatistics>,
}

#[derive(Debug, Deserialize)]
struct BrokerStatistics {
    /// Requests sent, by request type.
    #[serde(default)]
    req: HashMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(Debug, Deserialize)]
struct PartitionStatistics {
    /// Records sent to the partition's leader.
    #[serde(default)]
    txmsgs: u64,
}

/// A count of the statistics, by where it is kept: a broker's produce
/// requests or a partition's records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Broker(String),
    Partition(String, String),
}

impl Statistics {
    fn counts(self) -> impl Iterator<Item = (Source, u64)> {
        let requests = self.brokers.into_iter().filter_map(|(name, broker)| {
            let produced = *broker.req.get("Produce")?;
            Some((Source::Broker(name), produced))
        });
        let records = self.topics.into_iter().flat_map(|(topic, statistics)| {
            statistics
                .partitions
                .into_iter()
                // The partition of records not yet assigned one sends nothing.
                .filter(|(partition, _)| partition != "-1")
                .map(move |(partition, sent)| {
                    (Source::Partition(topic.clone(), partition), sent.txmsgs)
                })
        });
        requests.chain(records)
    }
}

/// A producer's client context: it adds the producer's statistics to a
/// tally.
#[derive(Debug)]
pub struct CountingContext {
    tally: Arc<ProduceTally>,
    /// Each count at this producer's previous report. The totals are not
    /// monotonic: a deleted topic's partitions and a broker that left the
    /// cluster drop out of the statistics, and come back from zero.
    reported: Mutex<HashMap<Source, u64>>,
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
        let statistics = match serde_json::from_slice::<Statistics>(statistics) {
            Ok(statistics) => statistics,
            Err(error) => {
                tracing::warn!(%error, "librdkafka's statistics did not parse");
                return;
            }
        };
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sent = ProduceFigures::default();
        let mut now = HashMap::with_capacity(reported.len());
        for (source, count) in statistics.counts() {
            // A count below the last one started again from zero.
            let since = match reported.get(&source) {
                Some(&last) if last <= count => count - last,
                _ => count,
            };
            match source {
                Source::Broker(_) => sent.requests += since,
                Source::Partition(..) => sent.records += since,
            }
            now.insert(source, count);
        }
        *reported = now;
        self.tally.add(sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics of a producer with `produce_requests` sent to its broker
    /// and `records` to each of `topics`' partition 0.
    fn statistics(produce_requests: u64, topics: &[(&str, u64)]) -> Vec<u8> {
        let topics: serde_json::Map<String, serde_json::Value> = topics
            .iter()
            .map(|&(topic, records)| {
                let partitions = serde_json::json!({
                    "0": { "txmsgs": records },
                    "-1": { "txmsgs": 0 },
                });
                (
                    topic.to_owned(),
                    serde_json::json!({ "partitions": partitions }),
                )
            })
            .collect();
        serde_json::json!({
            "name": "acteon#producer-1",
            "txmsgs": 0,
            "brokers": {
                "127.0.0.1:9092/bootstrap": { "req": { "Produce": 0, "Metadata": 2 } },
                "localhost:9092/1": { "req": { "Produce": produce_requests, "ApiVersion": 1 } },
                "GroupCoordinator": {},
            },
            "topics": topics,
        })
        .to_string()
        .into_bytes()
    }

    fn figures(requests: u64, records: u64) -> ProduceFigures {
        ProduceFigures { requests, records }
    }

    #[test]
    fn each_producer_adds_what_it_sent_since_its_last_report() {
        let tally = Arc::new(ProduceTally::default());
        let first = CountingContext::new(Arc::clone(&tally));
        first.stats_raw(&statistics(2, &[("a", 50)]));
        first.stats_raw(&statistics(5, &[("a", 100), ("b", 20)]));
        assert_eq!(tally.figures(), figures(5, 120));

        // A replacement starts counting from nothing again.
        let replacement = CountingContext::new(Arc::clone(&tally));
        replacement.stats_raw(&statistics(1, &[("a", 10)]));
        first.stats_raw(&statistics(5, &[("a", 100), ("b", 20)]));
        assert_eq!(tally.figures(), figures(6, 130));

        replacement.stats_raw(b"not json");
        assert_eq!(tally.figures(), figures(6, 130));
    }

    #[test]
    fn a_topic_that_drops_out_counts_again_from_zero_when_it_returns() {
        let tally = Arc::new(ProduceTally::default());
        let producer = CountingContext::new(Arc::clone(&tally));
        producer.stats_raw(&statistics(4, &[("a", 100), ("b", 30)]));
        // "a" was deleted: the others go on counting.
        producer.stats_raw(&statistics(6, &[("b", 40)]));
        assert_eq!(tally.figures(), figures(6, 140));
        // Created again, and written to.
        producer.stats_raw(&statistics(7, &[("a", 5), ("b", 40)]));
        assert_eq!(tally.figures(), figures(7, 145));
        // The broker left the cluster and came back.
        producer.stats_raw(&statistics(2, &[("a", 5), ("b", 41)]));
        assert_eq!(tally.figures(), figures(9, 146));
    }
}
