//! Consumer groups of the in-memory backend.
//!
//! The live members of a group share the topic's partitions by range
//! assignment over their join order; every join and leave reassigns them. A
//! member keeps its position in partitions it retains across a rebalance and
//! reads a newly gained partition from its start position, since nothing is
//! ever committed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use acteon_core::StartPosition;
use futures::StreamExt;
use tokio::sync::watch;

use super::log::TopicLog;
use crate::{EventStream, GroupId, SubscriptionEvent};

/// Records read from the log per wake-up, so one busy partition cannot starve
/// the others and a member holds at most this many records in hand.
const READ_BATCH: usize = 64;

/// The live members of one group on one topic.
#[derive(Debug, Default)]
pub(super) struct GroupState {
    next_member_id: u64,
    /// Each member's assignment, by member id (join order).
    members: BTreeMap<u64, watch::Sender<Vec<i32>>>,
}

impl GroupState {
    /// Range assignment: members in join order take contiguous runs of
    /// partitions, the first `partitions % members` one more than the rest.
    fn rebalance(&self, partitions: u32) {
        let members = self.members.len() as u32;
        if members == 0 {
            return;
        }
        let (share, extra) = (partitions / members, partitions % members);
        let mut next = 0;
        for (index, assignment) in self.members.values().enumerate() {
            let count = share + u32::from((index as u32) < extra);
            let assigned: Vec<i32> = (next..next + count).map(|p| p as i32).collect();
            next += count;
            assignment.send_if_modified(|current| {
                let changed = *current != assigned;
                *current = assigned;
                changed
            });
        }
    }
}

/// One subscription: a member of a group that reads its assigned partitions.
/// Dropping it leaves the group.
#[derive(Debug)]
pub(super) struct Member {
    log: Arc<TopicLog>,
    group: GroupId,
    id: u64,
    start: StartPosition,
    assignment: watch::Receiver<Vec<i32>>,
    appends: watch::Receiver<u64>,
    /// Next offset to read, per assigned partition.
    positions: BTreeMap<i32, i64>,
    pending: VecDeque<SubscriptionEvent>,
    /// Where the next read starts among the assigned partitions, rotated so
    /// one busy partition cannot starve the others.
    rotation: usize,
}

impl Member {
    pub(super) fn join(log: Arc<TopicLog>, group: GroupId, start: StartPosition) -> Self {
        let (assignment_tx, assignment) = watch::channel(Vec::new());
        let id = {
            let mut groups = log
                .groups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let state = groups.entry(group.clone()).or_default();
            let id = state.next_member_id;
            state.next_member_id += 1;
            state.members.insert(id, assignment_tx);
            state.rebalance(log.partition_count());
            id
        };
        let appends = log.watch_appends();
        Self {
            log,
            group,
            id,
            start,
            assignment,
            appends,
            positions: BTreeMap::new(),
            pending: VecDeque::new(),
            rotation: 0,
        }
    }

    pub(super) fn into_stream(self) -> EventStream {
        futures::stream::unfold(self, |mut member| async move {
            let event = member.next_event().await?;
            Some((Ok(event), member))
        })
        .boxed()
    }

    /// The next event, or `None` once the topic is deleted.
    async fn next_event(&mut self) -> Option<SubscriptionEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.log.is_closed() {
                return None;
            }
            if self.assignment.has_changed().unwrap_or(false) {
                return Some(SubscriptionEvent::Assigned(self.take_assignment()));
            }
            // Mark the current version seen before reading, so an append that
            // lands after the read still wakes the wait below.
            self.appends.borrow_and_update();
            if self.read_batch() {
                continue;
            }
            tokio::select! {
                changed = self.appends.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                changed = self.assignment.changed() => {
                    // `changed` marks the new assignment seen: take it now.
                    changed.ok()?;
                    return Some(SubscriptionEvent::Assigned(self.take_assignment()));
                }
            }
        }
    }

    fn take_assignment(&mut self) -> Vec<i32> {
        let partitions = self.assignment.borrow_and_update().clone();
        let mut positions = BTreeMap::new();
        for &partition in &partitions {
            let position = match self.positions.get(&partition) {
                Some(&kept) => kept,
                None => match self.start {
                    StartPosition::Earliest => self.log.start_offset(partition),
                    StartPosition::Latest => self.log.end_offset(partition),
                },
            };
            positions.insert(partition, position);
        }
        self.positions = positions;
        partitions
    }

    /// Reads up to [`READ_BATCH`] records across the assigned partitions into
    /// `pending`; false when there was nothing new.
    fn read_batch(&mut self) -> bool {
        let partitions: Vec<i32> = self.positions.keys().copied().collect();
        self.rotation = self.rotation.wrapping_add(1);
        for index in 0..partitions.len() {
            // A lagged read adds its `Lagged` event beside a full batch.
            let room = READ_BATCH.saturating_sub(self.pending.len());
            if room == 0 {
                break;
            }
            let partition = partitions[(self.rotation + index) % partitions.len()];
            let position = self
                .positions
                .get_mut(&partition)
                .expect("assigned partition");
            let read = self.log.read(partition, *position, room);
            *position = read.next;
            if read.skipped > 0 {
                self.pending.push_back(SubscriptionEvent::Lagged {
                    partition,
                    skipped: read.skipped,
                });
            }
            self.pending
                .extend(read.records.into_iter().map(SubscriptionEvent::Message));
        }
        !self.pending.is_empty()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let Ok(mut groups) = self.log.groups.lock() else {
            return;
        };
        if let Some(state) = groups.get_mut(&self.group) {
            state.members.remove(&self.id);
            if state.members.is_empty() {
                groups.remove(&self.group);
            } else {
                state.rebalance(self.log.partition_count());
            }
        }
    }
}
