//! Consumer groups and broadcast readers of the in-memory backend.
//!
//! The live members of a group share the topic's partitions by range
//! assignment over their join order; every join and leave reassigns them. A
//! member keeps its position in partitions it retains across a rebalance and
//! reads a newly gained partition from the group's committed position, or
//! from its start position where the group has none.
//!
//! A group's committed positions outlive its members, as Kafka's do: the
//! next member to join goes on from them. Of the groups without members, a
//! topic remembers the [`MAX_IDLE_GROUPS`] that were used last.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use acteon_core::StartPosition;
use futures::StreamExt;
use tokio::sync::watch;

use super::log::TopicLog;
use crate::{
    CommitOffsets, EventStream, GroupId, GroupMember, PartitionOffsets, SubscriptionEvent,
};

/// Records read from the log per wake-up, so one busy partition cannot starve
/// the others and a member holds at most this many records in hand.
const READ_BATCH: usize = 64;

/// Groups without members whose positions a topic keeps.
pub(super) const MAX_IDLE_GROUPS: usize = 10_000;

/// No committed position.
const NONE: i64 = -1;

/// A group's committed position per partition, shared with its members so
/// that committing is a store, not a lock.
#[derive(Debug)]
pub(super) struct GroupPositions(Vec<AtomicI64>);

impl GroupPositions {
    fn new(partitions: u32) -> Self {
        Self((0..partitions).map(|_| AtomicI64::new(NONE)).collect())
    }

    fn get(&self, partition: i32) -> Option<i64> {
        let offset = self.0.get(partition as usize)?.load(Ordering::Acquire);
        (offset != NONE).then_some(offset)
    }

    fn set(&self, partition: i32, offset: i64) {
        if let Some(position) = self.0.get(partition as usize) {
            position.store(offset.max(0), Ordering::Release);
        }
    }
}

impl CommitOffsets for Arc<GroupPositions> {
    fn commit(&self, offsets: &PartitionOffsets) {
        for (&partition, &offset) in offsets {
            self.set(partition, offset);
        }
    }
}

/// One group on one topic: its live members and its committed positions.
#[derive(Debug)]
pub(super) struct GroupState {
    next_member_id: u64,
    /// Each member's assignment, by member id (join order).
    members: BTreeMap<u64, watch::Sender<Vec<i32>>>,
    positions: Arc<GroupPositions>,
    /// When the last member left.
    idle_since: Option<Instant>,
}

impl GroupState {
    fn new(partitions: u32) -> Self {
        Self {
            next_member_id: 0,
            members: BTreeMap::new(),
            positions: Arc::new(GroupPositions::new(partitions)),
            idle_since: Some(Instant::now()),
        }
    }

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

/// Sets a group's committed positions, creating the group if need be.
pub(super) fn set_offsets(log: &TopicLog, group: &GroupId, offsets: &PartitionOffsets) {
    let mut groups = log.groups.lock().unwrap_or_else(PoisonError::into_inner);
    let state = groups
        .entry(group.clone())
        .or_insert_with(|| GroupState::new(log.partition_count()));
    state.positions.commit(offsets);
    forget_idle_groups(&mut groups);
}

/// Forgets a group's committed positions; its members, if any, stay.
pub(super) fn delete(log: &TopicLog, group: &GroupId) {
    let mut groups = log.groups.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(state) = groups.get_mut(group) {
        if state.members.is_empty() {
            groups.remove(group);
        } else {
            state.positions = Arc::new(GroupPositions::new(log.partition_count()));
        }
    }
}

/// Drops the groups without members that were used longest ago, beyond
/// [`MAX_IDLE_GROUPS`].
fn forget_idle_groups(groups: &mut HashMap<GroupId, GroupState>) {
    let idle = groups.values().filter(|g| g.idle_since.is_some()).count();
    if idle <= MAX_IDLE_GROUPS {
        return;
    }
    let mut by_age: Vec<(Instant, GroupId)> = groups
        .iter()
        .filter_map(|(id, group)| Some((group.idle_since?, id.clone())))
        .collect();
    by_age.sort_unstable();
    for (_, id) in by_age.into_iter().take(idle - MAX_IDLE_GROUPS) {
        groups.remove(&id);
    }
}

/// How a [`Reader`] comes by its partitions.
#[derive(Debug)]
enum Membership {
    /// A member of a group: the group assigns partitions, and positions in
    /// newly gained ones come from the group.
    Group {
        group: GroupId,
        id: u64,
        positions: Arc<GroupPositions>,
        /// Whether what the member yields is committed as it goes.
        commits_delivered: bool,
        assignment: watch::Receiver<Vec<i32>>,
    },
    /// A broadcast reader: every partition, from its own start position.
    Broadcast { announced: bool },
}

/// One subscription: a group member or a broadcast reader of one topic.
/// Dropping a member leaves its group.
#[derive(Debug)]
pub(super) struct Reader {
    log: Arc<TopicLog>,
    membership: Membership,
    start: StartPosition,
    appends: watch::Receiver<u64>,
    /// Next offset to read, per assigned partition.
    read_positions: BTreeMap<i32, i64>,
    pending: VecDeque<SubscriptionEvent>,
    /// Where the next read starts among the assigned partitions, rotated so
    /// one busy partition cannot starve the others.
    rotation: usize,
}

impl Reader {
    /// A member of `group` on the topic of `log` that commits what it
    /// yields.
    pub(super) fn subscribe(
        log: Arc<TopicLog>,
        group: GroupId,
        start: StartPosition,
    ) -> EventStream {
        Self::join(log, group, start, true).0.into_stream()
    }

    /// A member of `group` that commits through [`GroupMember::offsets`].
    pub(super) fn join_group(
        log: Arc<TopicLog>,
        group: GroupId,
        start: StartPosition,
    ) -> GroupMember {
        let (member, positions) = Self::join(log, group, start, false);
        GroupMember {
            events: member.into_stream(),
            offsets: Box::new(positions),
            // Dropping the stream leaves at once.
            left: Box::pin(std::future::ready(())),
        }
    }

    fn join(
        log: Arc<TopicLog>,
        group: GroupId,
        start: StartPosition,
        commits_delivered: bool,
    ) -> (Self, Arc<GroupPositions>) {
        let (assignment_tx, assignment) = watch::channel(Vec::new());
        let (id, positions) = {
            let mut groups = log.groups.lock().unwrap_or_else(PoisonError::into_inner);
            let state = groups
                .entry(group.clone())
                .or_insert_with(|| GroupState::new(log.partition_count()));
            let id = state.next_member_id;
            state.next_member_id += 1;
            state.idle_since = None;
            state.members.insert(id, assignment_tx);
            state.rebalance(log.partition_count());
            (id, Arc::clone(&state.positions))
        };
        let membership = Membership::Group {
            group,
            id,
            positions: Arc::clone(&positions),
            commits_delivered,
            assignment,
        };
        (Self::new(log, membership, start), positions)
    }

    /// Reads every partition of the topic of `log`, in no group.
    pub(super) fn broadcast(log: Arc<TopicLog>, start: StartPosition) -> EventStream {
        Self::new(log, Membership::Broadcast { announced: false }, start).into_stream()
    }

    fn new(log: Arc<TopicLog>, membership: Membership, start: StartPosition) -> Self {
        let appends = log.watch_appends();
        Self {
            log,
            membership,
            start,
            appends,
            read_positions: BTreeMap::new(),
            pending: VecDeque::new(),
            rotation: 0,
        }
    }

    fn into_stream(self) -> EventStream {
        futures::stream::unfold(self, |mut reader| async move {
            let event = reader.next_event().await?;
            Some((Ok(event), reader))
        })
        .boxed()
    }

    /// Whether the partitions to read changed since they were last taken.
    fn assignment_changed(&self) -> bool {
        match &self.membership {
            Membership::Group { assignment, .. } => assignment.has_changed().unwrap_or(false),
            Membership::Broadcast { announced } => !announced,
        }
    }

    /// Resolves when the assignment changes, `None` when the group is gone.
    async fn next_assignment(membership: &mut Membership) -> Option<()> {
        match membership {
            Membership::Group { assignment, .. } => assignment.changed().await.ok(),
            Membership::Broadcast { .. } => std::future::pending().await,
        }
    }

    /// The next event, or `None` once the topic is deleted.
    async fn next_event(&mut self) -> Option<SubscriptionEvent> {
        loop {
            // Before handing out what was read: records of a partition that
            // moved to another member are the new owner's now.
            if self.assignment_changed() {
                return Some(SubscriptionEvent::Assigned(self.take_assignment()));
            }
            if let Some(event) = self.pending.pop_front() {
                if let (
                    Membership::Group {
                        positions,
                        commits_delivered: true,
                        ..
                    },
                    SubscriptionEvent::Message(message),
                ) = (&self.membership, &event)
                {
                    positions.set(message.partition, message.offset + 1);
                }
                return Some(event);
            }
            if self.log.is_closed() {
                return None;
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
                changed = Self::next_assignment(&mut self.membership) => {
                    // `changed` marks the new assignment seen: take it now.
                    changed?;
                    return Some(SubscriptionEvent::Assigned(self.take_assignment()));
                }
            }
        }
    }

    /// Where reading `partition` starts when nothing else says.
    fn start_offset(&self, partition: i32) -> i64 {
        match self.start {
            StartPosition::Earliest => self.log.start_offset(partition),
            StartPosition::Latest => self.log.end_offset(partition),
        }
    }

    fn take_assignment(&mut self) -> Vec<i32> {
        let partitions = match &mut self.membership {
            Membership::Group { assignment, .. } => assignment.borrow_and_update().clone(),
            Membership::Broadcast { announced } => {
                *announced = true;
                (0..self.log.partition_count() as i32).collect()
            }
        };
        let mut positions = BTreeMap::new();
        for &partition in &partitions {
            let position = match (self.read_positions.get(&partition), &self.membership) {
                (Some(&kept), _) => kept,
                (None, Membership::Group { positions, .. }) => {
                    positions.get(partition).unwrap_or_else(|| {
                        // The start position becomes the group's, so a later
                        // owner goes on from there too.
                        let start = self.start_offset(partition);
                        positions.set(partition, start);
                        start
                    })
                }
                (None, Membership::Broadcast { .. }) => self.start_offset(partition),
            };
            positions.insert(partition, position);
        }
        self.pending.retain(|event| match event {
            SubscriptionEvent::Message(message) => positions.contains_key(&message.partition),
            SubscriptionEvent::Lagged { partition, .. } => positions.contains_key(partition),
            SubscriptionEvent::Assigned(_) => true,
        });
        self.read_positions = positions;
        partitions
    }

    /// Reads up to [`READ_BATCH`] records across the assigned partitions into
    /// `pending`; false when there was nothing new.
    fn read_batch(&mut self) -> bool {
        let partitions: Vec<i32> = self.read_positions.keys().copied().collect();
        self.rotation = self.rotation.wrapping_add(1);
        for index in 0..partitions.len() {
            // A lagged read adds its `Lagged` event beside a full batch.
            let room = READ_BATCH.saturating_sub(self.pending.len());
            if room == 0 {
                break;
            }
            let partition = partitions[(self.rotation + index) % partitions.len()];
            let position = self
                .read_positions
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

impl Drop for Reader {
    fn drop(&mut self) {
        let Membership::Group { group, id, .. } = &self.membership else {
            return;
        };
        let mut groups = self
            .log
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = groups.get_mut(group) {
            state.members.remove(id);
            if state.members.is_empty() {
                state.idle_since = Some(Instant::now());
                forget_idle_groups(&mut groups);
            } else {
                state.rebalance(self.log.partition_count());
            }
        }
    }
}
