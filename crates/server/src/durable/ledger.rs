//! The settlement ledger of one durable subscription: which records it has
//! read, which are leased to which connection until when, how often each was
//! delivered, and the settled prefix of every partition.
//!
//! Plain data, no I/O: the engine feeds it records, settlements and the
//! clock, and hands out what it returns. Every record read and not yet
//! settled is tracked here; the engine stops reading when
//! [`Ledger::tracked`] reaches its bound.
//!
//! Per partition, `committed` is the first offset not settled; `through` is
//! one past the highest offset ever delivered. [`Ledger::progress`] keeps
//! the unsettled records below `through` with their attempt counts, so that
//! after a restart the records in `[committed, through)` that are missing
//! from it are known to be settled, and the others resume with their
//! counts. Records at or beyond `through` were never delivered and are
//! simply read again.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use acteon_core::BusMessage;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::progress::{PartitionProgress, Progress, Runs};

/// How records with the same key are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// In any order, several at once.
    #[default]
    None,
    /// At most one unsettled record per key, in offset order.
    Key,
}

/// A subscription's delivery settings.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Settings {
    pub ack_deadline: Duration,
    pub max_deliveries: u32,
    /// The delay before the n-th redelivery (the last one repeats); empty:
    /// at once.
    pub backoff: Vec<Duration>,
    pub max_in_flight: usize,
    pub ordering: Ordering,
}

/// One record's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Slot {
    pub partition: i32,
    pub offset: i64,
}

/// What a delivery id names: one delivery (attempt) of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DeliveryRef {
    pub slot: Slot,
    pub attempt: u32,
}

/// What a client does with a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Ack,
    /// Deliver again after `delay`, or after the backoff when `None`.
    Nack {
        delay: Option<Duration>,
    },
    Reject {
        reason: String,
    },
    /// A fresh deadline.
    Extend,
}

/// A settlement that does not apply: the record is settled or unknown, or
/// was delivered again since (attempt mismatch), or has no lease to extend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stale;

/// A record as the ledger holds it: the JSON text a delivery sends (a
/// fraction of the memory of its parsed form), and its key.
#[derive(Debug)]
pub struct HeldRecord {
    pub key: Option<String>,
    /// The record as `BusMessage` JSON.
    pub json: Box<str>,
}

impl HeldRecord {
    fn new(message: &BusMessage) -> Self {
        Self {
            key: message.key.clone(),
            json: serde_json::to_string(message)
                .expect("records serialise")
                .into_boxed_str(),
        }
    }

    /// The record parsed again, for the rare paths that need its parts.
    pub(super) fn message(&self) -> BusMessage {
        serde_json::from_str(&self.json).expect("held records are BusMessage JSON")
    }
}

/// A record leased to a connection.
#[derive(Debug, Clone)]
pub(super) struct Lease {
    pub delivery: DeliveryRef,
    pub message: Arc<HeldRecord>,
}

/// A record to produce to the dead-letter topic; settled once that is done
/// ([`Ledger::dead_lettered`]).
#[derive(Debug, Clone)]
pub(super) struct DeadLetter {
    pub slot: Slot,
    pub message: Arc<HeldRecord>,
    pub attempts: u32,
    pub reason: String,
}

/// Counters of a subscription's life, kept with its progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Totals {
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    /// Records retention removed before they were settled.
    pub lost: u64,
}

/// What [`Ledger::admit`] did with a record.
#[derive(Debug)]
pub(super) enum Admission {
    /// Tracked now; a record whose dead-lettering was under way before a
    /// restart comes back as that job.
    Tracked(Option<DeadLetter>),
    /// Already tracked or settled.
    Skipped,
    /// Offsets are missing before this record: call again with the oldest
    /// offset the log retains, so that records retention removed are
    /// counted.
    NeedsLogStart,
}

/// Live figures of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartitionFigures {
    pub partition: i32,
    pub committed: i64,
    pub in_flight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Behind an unsettled record of its key.
    Blocked,
    Ready,
    Delayed(Instant),
    Leased {
        connection: u64,
        deadline: Instant,
    },
    DeadLettering,
}

#[derive(Debug)]
struct Tracked {
    message: Arc<HeldRecord>,
    attempts: u32,
    state: State,
    /// Bumped on every state change; queue entries of older versions are
    /// stale and skipped.
    version: u64,
    dead_letter_reason: Option<String>,
}

#[derive(Debug, Default)]
struct PartitionLedger {
    /// The next offset expected from the log.
    next: i64,
    through: i64,
    records: BTreeMap<i64, Tracked>,
    /// Unsettled records of the stored progress not read again yet.
    restored: BTreeMap<i64, (u32, Option<String>)>,
    /// Unsettled records per key, under key ordering.
    unsettled_by_key: HashMap<String, usize>,
}

impl PartitionLedger {
    fn committed(&self) -> i64 {
        let first_record = self.records.keys().next().copied();
        let first_restored = self.restored.keys().next().copied();
        [first_record, first_restored]
            .into_iter()
            .flatten()
            .fold(self.next, i64::min)
    }

    /// Counts and forgets the unsettled offsets in `[self.next, to)`, which
    /// the log no longer holds.
    fn lose_until(&mut self, to: i64) -> u64 {
        if to <= self.next {
            return 0;
        }
        let restored: Vec<i64> = self
            .restored
            .range(self.next..to)
            .map(|(&o, _)| o)
            .collect();
        for offset in &restored {
            self.restored.remove(offset);
        }
        let never_delivered = (to - self.next.max(self.through)).max(0);
        self.next = to;
        restored.len() as u64 + never_delivered as u64
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Ledger {
    settings: Settings,
    partitions: BTreeMap<i32, PartitionLedger>,
    ready: VecDeque<(Slot, u64)>,
    delayed: BinaryHeap<Reverse<(Instant, Slot, u64)>>,
    deadlines: BinaryHeap<Reverse<(Instant, Slot, u64)>>,
    next_version: u64,
    in_flight: usize,
    tracked: usize,
    totals: Totals,
    dirty: bool,
}

impl Ledger {
    pub(super) fn new(settings: Settings, progress: Progress) -> Self {
        let partitions = progress
            .partitions
            .into_iter()
            .map(|(partition, stored)| {
                let ledger =
                    PartitionLedger {
                        next: stored.committed,
                        through: stored.through.max(stored.committed),
                        restored: stored
                            .unsettled
                            .entries()
                            .map(|(offset, attempts)| (offset, (attempts, None)))
                            .chain(stored.dead_lettering.into_iter().map(
                                |(offset, attempts, reason)| (offset, (attempts, Some(reason))),
                            ))
                            .collect(),
                        ..PartitionLedger::default()
                    };
                (partition, ledger)
            })
            .collect();
        Self {
            settings,
            partitions,
            ready: VecDeque::new(),
            delayed: BinaryHeap::new(),
            deadlines: BinaryHeap::new(),
            next_version: 0,
            in_flight: 0,
            tracked: 0,
            totals: progress.totals,
            dirty: false,
        }
    }

    pub(super) fn ack_deadline(&self) -> Duration {
        self.settings.ack_deadline
    }

    /// Records read and not settled.
    pub(super) fn tracked(&self) -> usize {
        self.tracked
    }

    pub(super) fn totals(&self) -> Totals {
        self.totals
    }

    /// Whether anything changed since [`Ledger::take_progress`].
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the state as changed again, after storing it failed.
    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Takes a record read from the log. `log_start` is the partition's
    /// oldest retained offset, when [`Admission::NeedsLogStart`] asked.
    pub(super) fn admit(&mut self, message: &BusMessage, log_start: Option<i64>) -> Admission {
        let slot = Slot {
            partition: message.partition,
            offset: message.offset,
        };
        let ledger = self.partitions.entry(slot.partition).or_insert_with(|| {
            // A partition without stored progress starts where the group
            // handed it over.
            PartitionLedger {
                next: slot.offset,
                through: slot.offset,
                ..PartitionLedger::default()
            }
        });
        if slot.offset < ledger.next {
            return Admission::Skipped;
        }
        if slot.offset > ledger.next {
            let Some(log_start) = log_start else {
                return Admission::NeedsLogStart;
            };
            let mut lost = ledger.lose_until(log_start.min(slot.offset));
            // The rest of the gap holds no records (transaction markers,
            // compaction); stored unsettled records in it are gone too.
            let vanished: Vec<i64> = ledger
                .restored
                .range(..slot.offset)
                .map(|(&o, _)| o)
                .collect();
            for offset in vanished {
                ledger.restored.remove(&offset);
                lost += 1;
            }
            self.totals.lost += lost;
            ledger.next = slot.offset;
            self.dirty = true;
        }
        ledger.next = slot.offset + 1;
        let restored = ledger.restored.remove(&slot.offset);
        if restored.is_none() && slot.offset < ledger.through {
            // Settled before the restart.
            self.dirty = true;
            return Admission::Skipped;
        }
        let (attempts, dead_letter_reason) = restored.unwrap_or((0, None));
        let blocked = match (&message.key, self.settings.ordering) {
            (Some(key), Ordering::Key) => {
                let unsettled = ledger.unsettled_by_key.entry(key.clone()).or_default();
                *unsettled += 1;
                *unsettled > 1
            }
            _ => false,
        };
        let message = Arc::new(HeldRecord::new(message));
        let dead_letter = dead_letter_reason.as_ref().map(|reason| DeadLetter {
            slot,
            message: Arc::clone(&message),
            attempts,
            reason: reason.clone(),
        });
        let state = match (&dead_letter, blocked) {
            (Some(_), _) => State::DeadLettering,
            (None, true) => State::Blocked,
            (None, false) => State::Ready,
        };
        ledger.records.insert(
            slot.offset,
            Tracked {
                message,
                attempts,
                state: State::Blocked,
                version: 0,
                dead_letter_reason,
            },
        );
        self.tracked += 1;
        self.set_state(slot, state);
        Admission::Tracked(dead_letter)
    }

    /// The log of `partition` holds `[start, end)` now: unsettled records
    /// before `start` are lost. A log that ends before what was delivered
    /// of it, read nothing from yet, is another log than the progress is of (a
    /// topic deleted and created again behind Acteon's back): the
    /// partition starts afresh on it, its stored unsettled records lost.
    /// Returns how many were lost.
    pub(super) fn log_spans(&mut self, partition: i32, start: i64, end: i64) -> u64 {
        let Some(ledger) = self.partitions.get_mut(&partition) else {
            return 0;
        };
        let read_up_to = ledger.next.max(ledger.through);
        let lost = if end < read_up_to && ledger.records.is_empty() {
            let lost = ledger.restored.len() as u64;
            *ledger = PartitionLedger {
                next: start,
                through: start,
                ..PartitionLedger::default()
            };
            self.dirty = true;
            lost
        } else {
            ledger.lose_until(start)
        };
        if lost > 0 {
            self.totals.lost += lost;
            self.dirty = true;
        }
        lost
    }

    fn set_state(&mut self, slot: Slot, state: State) {
        let version = self.next_version;
        self.next_version += 1;
        let record = self
            .partitions
            .get_mut(&slot.partition)
            .and_then(|ledger| ledger.records.get_mut(&slot.offset))
            .expect("state of a tracked record");
        record.state = state;
        record.version = version;
        self.compact_queues();
        match state {
            State::Ready => self.ready.push_back((slot, version)),
            State::Delayed(at) => self.delayed.push(Reverse((at, slot, version))),
            State::Leased { deadline, .. } => {
                self.deadlines.push(Reverse((deadline, slot, version)));
            }
            State::Blocked | State::DeadLettering => {}
        }
    }

    /// Drops the queue entries of states that changed since, once they
    /// outnumber the tracked records: settled leases would otherwise stay
    /// in `deadlines` until their (up to an hour long) deadline.
    fn compact_queues(&mut self) {
        let bound = 2 * self.tracked + 1024;
        if self.deadlines.len() > bound {
            let heap = std::mem::take(&mut self.deadlines);
            self.deadlines = heap
                .into_iter()
                .filter(|Reverse((_, slot, version))| self.is_current(*slot, *version))
                .collect();
        }
        if self.delayed.len() > bound {
            let heap = std::mem::take(&mut self.delayed);
            self.delayed = heap
                .into_iter()
                .filter(|Reverse((_, slot, version))| self.is_current(*slot, *version))
                .collect();
        }
        if self.ready.len() > bound {
            let queue = std::mem::take(&mut self.ready);
            self.ready = queue
                .into_iter()
                .filter(|&(slot, version)| self.is_current(slot, version))
                .collect();
        }
    }

    fn record(&self, slot: Slot) -> Option<&Tracked> {
        self.partitions
            .get(&slot.partition)?
            .records
            .get(&slot.offset)
    }

    fn is_current(&self, slot: Slot, version: u64) -> bool {
        self.record(slot).is_some_and(|r| r.version == version)
    }

    /// Whether a record waits for a connection and `max_in_flight` allows
    /// another lease.
    pub(super) fn has_ready(&mut self) -> bool {
        if self.in_flight >= self.settings.max_in_flight {
            return false;
        }
        while let Some(&(slot, version)) = self.ready.front() {
            if self.is_current(slot, version) {
                return true;
            }
            self.ready.pop_front();
        }
        false
    }

    /// Leases the next ready record to `connection`.
    pub(super) fn lease(&mut self, connection: u64, now: Instant) -> Option<Lease> {
        if !self.has_ready() {
            return None;
        }
        let (slot, _) = self.ready.pop_front()?;
        let deadline = now + self.settings.ack_deadline;
        let ledger = self.partitions.get_mut(&slot.partition)?;
        ledger.through = ledger.through.max(slot.offset + 1);
        let record = ledger.records.get_mut(&slot.offset)?;
        record.attempts += 1;
        let attempt = record.attempts;
        let message = Arc::clone(&record.message);
        self.in_flight += 1;
        self.totals.delivered += 1;
        if attempt > 1 {
            self.totals.redelivered += 1;
        }
        self.dirty = true;
        self.set_state(
            slot,
            State::Leased {
                connection,
                deadline,
            },
        );
        Some(Lease {
            delivery: DeliveryRef { slot, attempt },
            message,
        })
    }

    /// Applies a client's settlement of one delivery. Nack and reject may
    /// start a dead-lettering.
    pub(super) fn settle(
        &mut self,
        delivery: DeliveryRef,
        settlement: Settlement,
        now: Instant,
    ) -> Result<Option<DeadLetter>, Stale> {
        let slot = delivery.slot;
        if self.settles_restored(delivery, &settlement)? {
            return Ok(None);
        }
        let record = self.record(slot).ok_or(Stale)?;
        let state = record.state;
        if record.attempts != delivery.attempt
            || matches!(state, State::DeadLettering | State::Blocked)
        {
            return Err(Stale);
        }
        let leased = matches!(state, State::Leased { .. });
        match settlement {
            Settlement::Extend => {
                let State::Leased { connection, .. } = state else {
                    return Err(Stale);
                };
                let deadline = now + self.settings.ack_deadline;
                self.set_state(
                    slot,
                    State::Leased {
                        connection,
                        deadline,
                    },
                );
                Ok(None)
            }
            Settlement::Ack => {
                self.release(leased);
                self.totals.acked += 1;
                self.remove(slot);
                Ok(None)
            }
            Settlement::Nack { delay } => {
                self.release(leased);
                Ok(self.failed(slot, delay, now))
            }
            Settlement::Reject { reason } => {
                self.release(leased);
                Ok(Some(self.start_dead_letter(slot, reason)))
            }
        }
    }

    /// Settles a record of the stored progress that was not read again
    /// yet, so that ids from before a restart stay valid at once. `Ok(false)`
    /// when the record is not such a one.
    fn settles_restored(
        &mut self,
        delivery: DeliveryRef,
        settlement: &Settlement,
    ) -> Result<bool, Stale> {
        let slot = delivery.slot;
        let Some(ledger) = self.partitions.get_mut(&slot.partition) else {
            return Ok(false);
        };
        let Some((attempts, reason)) = ledger.restored.get_mut(&slot.offset) else {
            return Ok(false);
        };
        if *attempts != delivery.attempt || reason.is_some() {
            return Err(Stale);
        }
        match settlement {
            Settlement::Ack => {
                ledger.restored.remove(&slot.offset);
                self.totals.acked += 1;
            }
            // Delivered again when it is read, after the other records
            // that wait.
            Settlement::Nack { .. } => {}
            // Produced to the dead-letter topic when it is read.
            Settlement::Reject { reason: why } => *reason = Some(why.clone()),
            Settlement::Extend => return Err(Stale),
        }
        self.dirty = true;
        Ok(true)
    }

    fn release(&mut self, leased: bool) {
        if leased {
            self.in_flight -= 1;
        }
        self.dirty = true;
    }

    /// A delivery failed (nack, deadline, dropped connection): deliver
    /// again after `delay` (the backoff when `None`), or dead-letter it
    /// once it has had `max_deliveries`.
    fn failed(&mut self, slot: Slot, delay: Option<Duration>, now: Instant) -> Option<DeadLetter> {
        let attempts = self.record(slot).map_or(0, |r| r.attempts);
        if attempts >= self.settings.max_deliveries {
            let reason = format!("max_deliveries reached after {attempts} attempts");
            return Some(self.start_dead_letter(slot, reason));
        }
        let delay = delay.unwrap_or_else(|| self.backoff(attempts));
        let state = if delay.is_zero() {
            State::Ready
        } else {
            State::Delayed(now + delay)
        };
        self.set_state(slot, state);
        None
    }

    /// The delay before the redelivery that follows `attempts` deliveries.
    fn backoff(&self, attempts: u32) -> Duration {
        let backoff = &self.settings.backoff;
        let index = (attempts as usize).saturating_sub(1);
        backoff
            .get(index)
            .or(backoff.last())
            .copied()
            .unwrap_or_default()
    }

    fn start_dead_letter(&mut self, slot: Slot, reason: String) -> DeadLetter {
        self.dirty = true;
        self.set_state(slot, State::DeadLettering);
        let record = self
            .partitions
            .get_mut(&slot.partition)
            .and_then(|ledger| ledger.records.get_mut(&slot.offset))
            .expect("a tracked record");
        record.dead_letter_reason = Some(reason.clone());
        DeadLetter {
            slot,
            message: Arc::clone(&record.message),
            attempts: record.attempts,
            reason,
        }
    }

    /// The record is in the dead-letter topic now: settled.
    pub(super) fn dead_lettered(&mut self, slot: Slot) {
        if self
            .record(slot)
            .is_some_and(|r| r.state == State::DeadLettering)
        {
            self.totals.dead_lettered += 1;
            self.dirty = true;
            self.remove(slot);
        }
    }

    fn remove(&mut self, slot: Slot) {
        let Some(ledger) = self.partitions.get_mut(&slot.partition) else {
            return;
        };
        let Some(record) = ledger.records.remove(&slot.offset) else {
            return;
        };
        self.tracked -= 1;
        let Some(key) = record.message.key.as_ref() else {
            return;
        };
        let Some(unsettled) = ledger.unsettled_by_key.get_mut(key) else {
            return;
        };
        *unsettled -= 1;
        if *unsettled == 0 {
            ledger.unsettled_by_key.remove(key);
            return;
        }
        let next = ledger
            .records
            .range(slot.offset + 1..)
            .find(|(_, r)| r.message.key.as_ref() == Some(key))
            .filter(|(_, r)| r.state == State::Blocked)
            .map(|(&offset, _)| offset);
        if let Some(offset) = next {
            self.set_state(
                Slot {
                    partition: slot.partition,
                    offset,
                },
                State::Ready,
            );
        }
    }

    /// Moves leases past their deadline and delays that are over; returns
    /// the records that are to be dead-lettered.
    pub(super) fn tick(&mut self, now: Instant) -> Vec<DeadLetter> {
        let mut dead_letters = Vec::new();
        while let Some(&Reverse((deadline, slot, version))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if self.is_current(slot, version) {
                self.in_flight -= 1;
                self.dirty = true;
                dead_letters.extend(self.failed(slot, None, now));
            }
        }
        while let Some(&Reverse((at, slot, version))) = self.delayed.peek() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if self.is_current(slot, version) {
                self.set_state(slot, State::Ready);
            }
        }
        dead_letters
    }

    /// When [`Ledger::tick`] has work next.
    pub(super) fn next_wakeup(&mut self) -> Option<Instant> {
        let deadline = self.deadlines.peek().map(|Reverse((at, ..))| *at);
        let delayed = self.delayed.peek().map(|Reverse((at, ..))| *at);
        deadline.into_iter().chain(delayed).min()
    }

    /// A connection is gone: its leases go to the others at once.
    pub(super) fn disconnect(&mut self, connection: u64, now: Instant) -> Vec<DeadLetter> {
        let leased: Vec<Slot> = self
            .partitions
            .iter()
            .flat_map(|(&partition, ledger)| {
                ledger.records.iter().filter_map(move |(&offset, r)| {
                    matches!(r.state, State::Leased { connection: c, .. } if c == connection)
                        .then_some(Slot { partition, offset })
                })
            })
            .collect();
        let mut dead_letters = Vec::new();
        for slot in leased {
            self.in_flight -= 1;
            self.dirty = true;
            dead_letters.extend(self.failed(slot, Some(Duration::ZERO), now));
        }
        dead_letters
    }

    /// Per partition, the offset below which everything is settled.
    pub(super) fn committed(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .iter()
            .map(|(&partition, ledger)| (partition, ledger.committed()))
            .collect()
    }

    pub(super) fn figures(&self) -> Vec<PartitionFigures> {
        self.partitions
            .iter()
            .map(|(&partition, ledger)| PartitionFigures {
                partition,
                committed: ledger.committed(),
                in_flight: ledger
                    .records
                    .values()
                    .filter(|r| matches!(r.state, State::Leased { .. }))
                    .count(),
            })
            .collect()
    }

    /// The state to store, and clears [`Ledger::is_dirty`].
    pub(super) fn take_progress(&mut self) -> Progress {
        self.dirty = false;
        let partitions = self
            .partitions
            .iter()
            .map(|(&partition, ledger)| {
                let committed = ledger.committed();
                let through = ledger.through.max(committed);
                let tracked = ledger
                    .records
                    .range(..through)
                    .map(|(&offset, r)| (offset, r.attempts, r.dead_letter_reason.as_ref()));
                let restored = ledger
                    .restored
                    .iter()
                    .map(|(&offset, (attempts, reason))| (offset, *attempts, reason.as_ref()));
                let mut unsettled: Vec<(i64, u32, Option<&String>)> =
                    tracked.chain(restored).collect();
                if !ledger.restored.is_empty() {
                    unsettled.sort_unstable_by_key(|entry| entry.0);
                }
                let dead_lettering = unsettled
                    .iter()
                    .filter_map(|&(offset, attempts, reason)| {
                        Some((offset, attempts, reason?.clone()))
                    })
                    .collect();
                let unsettled = Runs::collect(
                    unsettled
                        .iter()
                        .filter(|entry| entry.2.is_none())
                        .map(|&(offset, attempts, _)| (offset, attempts)),
                );
                let progress = PartitionProgress {
                    committed,
                    through,
                    unsettled,
                    dead_lettering,
                };
                (partition, progress)
            })
            .collect();
        Progress {
            partitions,
            totals: self.totals,
        }
    }
}

#[cfg(test)]
mod tests {
    use acteon_core::Headers;
    use chrono::Utc;

    use super::*;

    fn settings() -> Settings {
        Settings {
            ack_deadline: Duration::from_secs(10),
            max_deliveries: 3,
            backoff: Vec::new(),
            max_in_flight: 100,
            ordering: Ordering::None,
        }
    }

    fn record(partition: i32, offset: i64, key: Option<&str>) -> BusMessage {
        BusMessage {
            topic: "ns.t.jobs".to_owned(),
            key: key.map(str::to_owned),
            payload: serde_json::json!({ "offset": offset }),
            headers: Headers::new(),
            partition,
            offset,
            timestamp: Utc::now(),
        }
    }

    fn admit_all(ledger: &mut Ledger, records: impl IntoIterator<Item = BusMessage>) {
        for message in records {
            assert!(matches!(
                ledger.admit(&message, None),
                Admission::Tracked(None)
            ));
        }
    }

    fn lease_all(ledger: &mut Ledger, connection: u64, now: Instant) -> Vec<Lease> {
        std::iter::from_fn(|| ledger.lease(connection, now)).collect()
    }

    fn offsets(leases: &[Lease]) -> Vec<i64> {
        leases.iter().map(|l| l.delivery.slot.offset).collect()
    }

    #[test]
    fn acks_advance_the_committed_prefix_only_when_contiguous() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, (0..4).map(|o| record(0, o, None)));
        let leases = lease_all(&mut ledger, 1, now);
        assert_eq!(offsets(&leases), vec![0, 1, 2, 3]);
        for lease in [&leases[1], &leases[2]] {
            ledger.settle(lease.delivery, Settlement::Ack, now).unwrap();
        }
        assert_eq!(ledger.committed()[&0], 0);
        ledger
            .settle(leases[0].delivery, Settlement::Ack, now)
            .unwrap();
        assert_eq!(ledger.committed()[&0], 3);
        assert!(
            matches!(
                ledger.settle(leases[0].delivery, Settlement::Ack, now),
                Err(Stale)
            ),
            "a second ack of one delivery is stale"
        );
        assert_eq!(ledger.totals().acked, 3);
    }

    #[test]
    fn an_expired_lease_is_redelivered_and_its_old_delivery_goes_stale() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, [record(0, 0, None)]);
        let first = ledger.lease(1, now).unwrap();
        assert!(ledger.tick(now + Duration::from_secs(9)).is_empty());
        assert!(ledger.lease(2, now).is_none(), "still leased");
        let later = now + Duration::from_secs(10);
        assert!(ledger.tick(later).is_empty());
        let second = ledger.lease(2, later).unwrap();
        assert_eq!(second.delivery.attempt, 2);
        assert!(matches!(
            ledger.settle(first.delivery, Settlement::Ack, later),
            Err(Stale)
        ));
        ledger
            .settle(second.delivery, Settlement::Ack, later)
            .unwrap();
        assert_eq!(ledger.totals().redelivered, 1);
    }

    #[test]
    fn the_last_failed_attempt_dead_letters_the_record() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, [record(0, 0, None)]);
        for attempt in 1..=2 {
            let lease = ledger.lease(1, now).unwrap();
            assert_eq!(lease.delivery.attempt, attempt);
            let nacked = ledger.settle(lease.delivery, Settlement::Nack { delay: None }, now);
            assert!(nacked.unwrap().is_none());
        }
        let last = ledger.lease(1, now).unwrap();
        let dead = ledger
            .settle(last.delivery, Settlement::Nack { delay: None }, now)
            .unwrap()
            .expect("dead-lettered");
        assert_eq!(dead.attempts, 3);
        assert!(ledger.lease(1, now).is_none());
        assert_eq!(ledger.committed()[&0], 0, "unsettled until produced");
        ledger.dead_lettered(dead.slot);
        assert_eq!(ledger.committed()[&0], 1);
        assert_eq!(ledger.totals().dead_lettered, 1);
    }

    #[test]
    fn nack_delays_follow_the_request_then_the_backoff() {
        let now = Instant::now();
        let mut ledger = Ledger::new(
            Settings {
                backoff: vec![Duration::from_secs(1), Duration::from_secs(5)],
                max_deliveries: 10,
                ..settings()
            },
            Progress::default(),
        );
        admit_all(&mut ledger, [record(0, 0, None)]);
        let lease = ledger.lease(1, now).unwrap();
        let delay = Some(Duration::from_millis(300));
        ledger
            .settle(lease.delivery, Settlement::Nack { delay }, now)
            .unwrap();
        assert_eq!(ledger.next_wakeup(), Some(now + Duration::from_millis(300)));
        ledger.tick(now + Duration::from_millis(300));
        let lease = ledger.lease(1, now).unwrap();
        ledger
            .settle(lease.delivery, Settlement::Nack { delay: None }, now)
            .unwrap();
        // The second delivery failed: the second backoff step.
        assert_eq!(ledger.next_wakeup(), Some(now + Duration::from_secs(5)));
    }

    #[test]
    fn key_ordering_holds_back_a_key_until_its_record_settles() {
        let now = Instant::now();
        let mut ledger = Ledger::new(
            Settings {
                ordering: Ordering::Key,
                ..settings()
            },
            Progress::default(),
        );
        admit_all(
            &mut ledger,
            [
                record(0, 0, Some("a")),
                record(0, 1, Some("a")),
                record(0, 2, Some("b")),
                record(0, 3, Some("a")),
            ],
        );
        let leases = lease_all(&mut ledger, 1, now);
        assert_eq!(offsets(&leases), vec![0, 2]);
        ledger
            .settle(leases[0].delivery, Settlement::Nack { delay: None }, now)
            .unwrap();
        let again = lease_all(&mut ledger, 1, now);
        assert_eq!(offsets(&again), vec![0], "a nacked record keeps its key");
        ledger
            .settle(again[0].delivery, Settlement::Ack, now)
            .unwrap();
        let next = lease_all(&mut ledger, 1, now);
        assert_eq!(offsets(&next), vec![1]);
    }

    #[test]
    fn settled_leases_do_not_pile_up_in_the_deadline_queue() {
        let now = Instant::now();
        let mut ledger = Ledger::new(
            Settings {
                ack_deadline: Duration::from_secs(3600),
                ..settings()
            },
            Progress::default(),
        );
        for offset in 0..20_000 {
            admit_all(&mut ledger, [record(0, offset, None)]);
            let lease = ledger.lease(1, now).unwrap();
            ledger
                .settle(lease.delivery, Settlement::Extend, now)
                .unwrap();
            ledger.settle(lease.delivery, Settlement::Ack, now).unwrap();
        }
        assert!(
            ledger.deadlines.len() <= 1024 + 2,
            "{}",
            ledger.deadlines.len()
        );
        assert!(ledger.ready.len() <= 1024 + 2);
    }

    #[test]
    fn a_dropped_connection_hands_its_leases_on_at_once() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, (0..3).map(|o| record(0, o, None)));
        let first = ledger.lease(1, now).unwrap();
        let second = ledger.lease(2, now).unwrap();
        assert!(ledger.disconnect(1, now).is_empty());
        let mut moved = lease_all(&mut ledger, 3, now);
        moved.sort_by_key(|lease| lease.delivery.slot);
        assert_eq!(offsets(&moved), vec![0, 2]);
        assert_eq!(moved[0].delivery.attempt, 2);
        assert!(matches!(
            ledger.settle(first.delivery, Settlement::Ack, now),
            Err(Stale)
        ));
        ledger
            .settle(second.delivery, Settlement::Ack, now)
            .unwrap();
    }

    #[test]
    fn max_in_flight_pauses_deliveries() {
        let now = Instant::now();
        let mut ledger = Ledger::new(
            Settings {
                max_in_flight: 2,
                ..settings()
            },
            Progress::default(),
        );
        admit_all(&mut ledger, (0..5).map(|o| record(0, o, None)));
        let leases = lease_all(&mut ledger, 1, now);
        assert_eq!(leases.len(), 2);
        ledger
            .settle(leases[0].delivery, Settlement::Ack, now)
            .unwrap();
        assert_eq!(lease_all(&mut ledger, 1, now).len(), 1);
    }

    #[test]
    fn a_restart_redelivers_exactly_the_unsettled_records_with_their_counts() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, (0..6).map(|o| record(0, o, None)));
        let leases: Vec<Lease> = (0..4).map(|_| ledger.lease(1, now).unwrap()).collect();
        ledger
            .settle(leases[0].delivery, Settlement::Ack, now)
            .unwrap();
        ledger
            .settle(leases[2].delivery, Settlement::Ack, now)
            .unwrap();
        ledger
            .settle(leases[3].delivery, Settlement::Nack { delay: None }, now)
            .unwrap();
        let progress = ledger.take_progress();
        assert_eq!(
            progress.partitions[&0],
            PartitionProgress {
                committed: 1,
                through: 4,
                unsettled: Runs::collect([(1, 1), (3, 1)]),
                dead_lettering: Vec::new(),
            }
        );

        // The group's commit is the prefix: the log is read again from 1.
        let mut restarted = Ledger::new(settings(), progress);
        for offset in 1..6 {
            let admitted = restarted.admit(&record(0, offset, None), None);
            let expected_tracked = offset != 2;
            assert_eq!(
                matches!(admitted, Admission::Tracked(None)),
                expected_tracked,
                "offset {offset}: {admitted:?}"
            );
        }
        let leases = lease_all(&mut restarted, 1, now);
        let attempts: Vec<(i64, u32)> = leases
            .iter()
            .map(|l| (l.delivery.slot.offset, l.delivery.attempt))
            .collect();
        assert_eq!(attempts, vec![(1, 2), (3, 2), (4, 1), (5, 1)]);
        assert_eq!(restarted.totals().acked, 2, "totals are kept");
    }

    #[test]
    fn a_delivery_id_from_before_a_restart_still_settles() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, [record(0, 0, None)]);
        let lease = ledger.lease(1, now).unwrap();
        let mut restarted = Ledger::new(settings(), ledger.take_progress());
        admit_all(&mut restarted, [record(0, 0, None)]);
        restarted
            .settle(lease.delivery, Settlement::Ack, now)
            .unwrap();
        assert_eq!(restarted.committed()[&0], 1);
    }

    #[test]
    fn an_id_from_before_a_restart_settles_before_its_record_is_read_again() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, (0..2).map(|o| record(0, o, None)));
        let leases = lease_all(&mut ledger, 1, now);
        let mut restarted = Ledger::new(settings(), ledger.take_progress());
        restarted
            .settle(leases[0].delivery, Settlement::Ack, now)
            .unwrap();
        let reason = "bad".to_owned();
        let rejected = Settlement::Reject { reason };
        restarted.settle(leases[1].delivery, rejected, now).unwrap();
        assert!(matches!(
            restarted.settle(leases[1].delivery, Settlement::Ack, now),
            Err(Stale)
        ));
        assert!(matches!(
            restarted.admit(&record(0, 0, None), None),
            Admission::Skipped
        ));
        let Admission::Tracked(Some(dead)) = restarted.admit(&record(0, 1, None), None) else {
            panic!("the rejected record is dead-lettered once read");
        };
        assert_eq!(dead.reason, "bad");
    }

    #[test]
    fn records_retention_removed_before_settling_are_counted_lost() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, (0..3).map(|o| record(0, o, None)));
        let lease = ledger.lease(1, now).unwrap();
        let mut restarted = Ledger::new(settings(), ledger.take_progress());
        // Offsets 0..=9 are gone; the log now starts at 10.
        assert!(matches!(
            restarted.admit(&record(0, 10, None), None),
            Admission::NeedsLogStart
        ));
        assert!(matches!(
            restarted.admit(&record(0, 10, None), Some(10)),
            Admission::Tracked(None)
        ));
        assert_eq!(restarted.totals().lost, 10);
        assert!(matches!(
            restarted.settle(lease.delivery, Settlement::Ack, now),
            Err(Stale)
        ));
    }

    #[test]
    fn a_log_shorter_than_the_stored_position_is_read_afresh() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, (0..5).map(|o| record(0, o, None)));
        let leases = lease_all(&mut ledger, 1, now);
        ledger
            .settle(leases[0].delivery, Settlement::Ack, now)
            .unwrap();
        let mut restarted = Ledger::new(settings(), ledger.take_progress());
        // The topic was made again: it holds two records, from offset 0.
        assert_eq!(restarted.log_spans(0, 0, 2), 4);
        admit_all(&mut restarted, (0..2).map(|o| record(0, o, None)));
        assert_eq!(offsets(&lease_all(&mut restarted, 1, now)), vec![0, 1]);
        // A log that only moved its start keeps the progress.
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, (0..3).map(|o| record(0, o, None)));
        let mut restarted = Ledger::new(settings(), ledger.take_progress());
        assert_eq!(restarted.log_spans(0, 0, 10), 0);
    }

    #[test]
    fn a_dead_lettering_under_way_resumes_after_a_restart() {
        let now = Instant::now();
        let mut ledger = Ledger::new(settings(), Progress::default());
        admit_all(&mut ledger, [record(0, 0, None)]);
        let lease = ledger.lease(1, now).unwrap();
        let reason = "poison".to_owned();
        ledger
            .settle(lease.delivery, Settlement::Reject { reason }, now)
            .unwrap()
            .expect("dead-lettering");
        let mut restarted = Ledger::new(settings(), ledger.take_progress());
        let Admission::Tracked(Some(dead)) = restarted.admit(&record(0, 0, None), None) else {
            panic!("the dead-lettering resumes");
        };
        assert_eq!((dead.reason.as_str(), dead.attempts), ("poison", 1));
        assert!(restarted.lease(1, now).is_none());
    }
}
