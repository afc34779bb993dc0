//! A durable subscription's stored progress, and its compact form.
//!
//! Per partition: the settled prefix (`committed`), one past the highest
//! offset ever delivered (`through`), and the unsettled records between
//! them with their attempt counts. Unsettled records mostly come in runs of
//! consecutive offsets with one attempt count (a window of leases), so they
//! are stored as runs, `first-last:attempts` (or `offset:attempts`) joined
//! by commas: a thousand records in flight usually take a few bytes, not a
//! thousand JSON arrays, and the progress is written on every settlement.

use std::collections::BTreeMap;
use std::fmt::{self, Write};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ledger::Totals;

/// A partition's durable state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PartitionProgress {
    pub committed: i64,
    pub through: i64,
    /// Unsettled records below `through`, except those being dead-lettered.
    #[serde(default)]
    pub unsettled: Runs,
    /// Records whose dead-lettering was under way: offset, attempts, reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_lettering: Vec<(i64, u32, String)>,
}

/// What a restart needs to redeliver exactly the unsettled records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Progress {
    pub partitions: BTreeMap<i32, PartitionProgress>,
    pub totals: Totals,
}

impl Progress {
    /// The progress on a log that starts afresh (the in-memory backend
    /// after a restart): no positions; what was unsettled is lost.
    pub(super) fn for_a_new_log(self) -> Self {
        let unsettled: usize = self
            .partitions
            .values()
            .map(|p| p.unsettled.entries().count() + p.dead_lettering.len())
            .sum();
        let mut totals = self.totals;
        totals.lost += unsettled as u64;
        Self {
            partitions: BTreeMap::new(),
            totals,
        }
    }
}

/// Offsets with their attempt counts, as runs of consecutive offsets that
/// share a count: `(first, last, attempts)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Runs(Vec<(i64, i64, u32)>);

impl Runs {
    /// From `(offset, attempts)` in ascending offset order.
    pub(super) fn collect(entries: impl IntoIterator<Item = (i64, u32)>) -> Self {
        let mut runs: Vec<(i64, i64, u32)> = Vec::new();
        for (offset, attempts) in entries {
            match runs.last_mut() {
                Some((_, last, count)) if *last + 1 == offset && *count == attempts => {
                    *last = offset;
                }
                _ => runs.push((offset, offset, attempts)),
            }
        }
        Self(runs)
    }

    /// Every `(offset, attempts)`.
    pub(super) fn entries(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        self.0
            .iter()
            .flat_map(|&(first, last, attempts)| (first..=last).map(move |o| (o, attempts)))
    }
}

impl fmt::Display for Runs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, &(first, last, attempts)) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_char(',')?;
            }
            if first == last {
                write!(f, "{first}:{attempts}")?;
            } else {
                write!(f, "{first}-{last}:{attempts}")?;
            }
        }
        Ok(())
    }
}

impl Runs {
    fn parse(text: &str) -> Option<Self> {
        let mut runs = Vec::new();
        let mut previous_last = None;
        for run in text.split(',').filter(|run| !run.is_empty()) {
            let (range, attempts) = run.split_once(':')?;
            let attempts: u32 = attempts.parse().ok()?;
            let (first, last) = match range.split_once('-') {
                Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
                None => {
                    let offset: i64 = range.parse().ok()?;
                    (offset, offset)
                }
            };
            // Ascending and disjoint, or it was not written by `Display`.
            if first > last || first < 0 || previous_last.is_some_and(|p| first <= p) {
                return None;
            }
            previous_last = Some(last);
            runs.push((first, last, attempts));
        }
        Some(Self(runs))
    }
}

impl Serialize for Runs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Runs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| D::Error::custom(format!("malformed runs {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_compress_consecutive_offsets_with_one_count() {
        let entries = [(3, 1), (4, 1), (5, 1), (7, 1), (8, 2), (9, 2), (10, 1)];
        let runs = Runs::collect(entries);
        assert_eq!(runs.to_string(), "3-5:1,7:1,8-9:2,10:1");
        assert_eq!(runs.entries().collect::<Vec<_>>(), entries);
        let text = serde_json::to_string(&runs).unwrap();
        assert_eq!(serde_json::from_str::<Runs>(&text).unwrap(), runs);
        assert_eq!(Runs::collect([]).to_string(), "");
        assert_eq!(Runs::parse(""), Some(Runs::default()));
    }

    #[test]
    fn malformed_runs_are_refused() {
        for text in [
            "x",
            "3",
            "3:",
            "5-3:1",
            "3:1,3:1",
            "4-6:1,5:1",
            "-1:1",
            "1:-1",
        ] {
            assert!(Runs::parse(text).is_none(), "{text:?}");
        }
    }
}
