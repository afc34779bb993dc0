//! Shared subscriptions of this process: the connections that use one
//! subscription id on one topic share one member of its consumer group,
//! however many they are.
//!
//! The member's partitions are split among the connections by range over
//! their join order, as a group splits them among its members; every join
//! and leave splits them again, and each connection whose share changed is
//! told with `Assigned`. One task per member reads the member's stream and
//! hands each record to the connection owning its partition, waiting while
//! that connection's buffer is full: a slow connection holds back its own
//! subscription id here, as a slow Kafka consumer holds back its own group
//! member, and no one else. A record whose connection went away goes to
//! the partition's next owner.
//!
//! The member leaves its group with the last connection. A connection that
//! joins a running member reads from where the group is: its `from` only
//! matters to the connection that starts the member.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use acteon_bus::{BusBackend, BusError, EventStream, GroupId, Operation, SubscriptionEvent};
use acteon_core::{StartPosition, TopicName};
use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Events buffered per connection.
const CONNECTION_BUFFER: usize = 64;

type Event = Result<SubscriptionEvent, BusError>;

type MemberKey = (TopicName, GroupId);

/// The shared subscriptions of this process, by topic and group.
#[derive(Debug, Clone)]
pub(crate) struct SharedSubscriptions {
    bus: Arc<dyn BusBackend>,
    members: Arc<Mutex<HashMap<MemberKey, Arc<Member>>>>,
}

/// One group member and the connections that share it.
#[derive(Debug, Default)]
struct Member {
    roster: Mutex<Roster>,
    /// Told when a connection joins or leaves.
    changed: Notify,
}

#[derive(Debug, Default)]
struct Roster {
    next_id: u64,
    /// By join order.
    connections: BTreeMap<u64, mpsc::Sender<Event>>,
}

impl Member {
    fn roster(&self) -> MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(self: &Arc<Self>) -> (ReceiverStream<Event>, Departure) {
        let (events, receiver) = mpsc::channel(CONNECTION_BUFFER);
        let id = {
            let mut roster = self.roster();
            let id = roster.next_id;
            roster.next_id += 1;
            roster.connections.insert(id, events);
            id
        };
        self.changed.notify_one();
        let departure = Departure {
            member: Arc::downgrade(self),
            id,
        };
        (ReceiverStream::new(receiver), departure)
    }
}

/// Takes a connection off its member's roster when its stream is dropped.
struct Departure {
    member: Weak<Member>,
    id: u64,
}

impl Drop for Departure {
    fn drop(&mut self) {
        if let Some(member) = self.member.upgrade() {
            member.roster().connections.remove(&self.id);
            member.changed.notify_one();
        }
    }
}

impl SharedSubscriptions {
    pub(crate) fn new(bus: Arc<dyn BusBackend>) -> Self {
        Self {
            bus,
            members: Arc::default(),
        }
    }

    fn members(&self) -> MutexGuard<'_, HashMap<MemberKey, Arc<Member>>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection to `group` on `topic`: a share of this process's member
    /// of the group, which joins the group if it is the first.
    pub(crate) async fn connect(
        &self,
        topic: &TopicName,
        group: GroupId,
        start: StartPosition,
    ) -> Result<EventStream, BusError> {
        let key = (topic.clone(), group);
        if let Some(member) = self.members().get(&key) {
            return Ok(connection(member.join()));
        }
        let events = self.bus.subscribe(topic, &key.1, start).await?;
        let mut members = self.members();
        if let Some(member) = members.get(&key) {
            // Another connection started the member meanwhile; this one's
            // stream leaves the group again when dropped.
            return Ok(connection(member.join()));
        }
        let member = Arc::new(Member::default());
        let joined = member.join();
        members.insert(key.clone(), Arc::clone(&member));
        let dispatch = Dispatch {
            subscriptions: self.clone(),
            key,
            member,
            assignment: Vec::new(),
            shares: BTreeMap::new(),
        };
        tokio::spawn(dispatch.run(events));
        Ok(connection(joined))
    }
}

fn connection((events, departure): (ReceiverStream<Event>, Departure)) -> EventStream {
    events
        .map(move |event| {
            // The connection leaves its member when the stream is dropped.
            let _member = &departure;
            event
        })
        .boxed()
}

/// The task that reads one member's stream for its connections.
struct Dispatch {
    subscriptions: SharedSubscriptions,
    key: MemberKey,
    member: Arc<Member>,
    /// The member's partitions.
    assignment: Vec<i32>,
    /// Each connection's share of them, as it was last told.
    shares: BTreeMap<u64, Vec<i32>>,
}

impl Dispatch {
    async fn run(mut self, mut events: EventStream) {
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = self.member.changed.notified() => {
                    if !self.split().await {
                        break;
                    }
                    continue;
                }
            };
            match event {
                Some(Ok(SubscriptionEvent::Assigned(partitions))) => {
                    self.assignment = partitions;
                    if !self.split().await {
                        break;
                    }
                }
                Some(Ok(SubscriptionEvent::Message(message))) => {
                    let partition = message.partition;
                    if !self
                        .hand(partition, SubscriptionEvent::Message(message))
                        .await
                    {
                        break;
                    }
                }
                Some(Ok(lagged @ SubscriptionEvent::Lagged { partition, .. })) => {
                    if !self.hand(partition, lagged).await {
                        break;
                    }
                }
                Some(Err(error)) => {
                    self.tell_everyone(&error).await;
                    break;
                }
                None => break,
            }
        }
        self.forget(&mut self.subscriptions.members());
        // Dropping the member's stream here leaves the group; dropping the
        // roster's senders ends the connections' streams.
    }

    /// Takes this member out of the registry, unless a newer member of the
    /// same group has taken its place there.
    fn forget(&self, members: &mut HashMap<MemberKey, Arc<Member>>) {
        if members
            .get(&self.key)
            .is_some_and(|member| Arc::ptr_eq(member, &self.member))
        {
            members.remove(&self.key);
        }
    }

    /// Splits the member's partitions among the connections on the roster
    /// and tells each whose share changed; false once nobody is left.
    async fn split(&mut self) -> bool {
        let connections: Vec<(u64, mpsc::Sender<Event>)> = {
            // Checked under the registry's lock, so that no connection can
            // join a member that is about to stop.
            let mut members = self.subscriptions.members();
            let roster = self.member.roster();
            if roster.connections.is_empty() {
                self.forget(&mut members);
                return false;
            }
            roster
                .connections
                .iter()
                .map(|(&id, events)| (id, events.clone()))
                .collect()
        };
        let count = connections.len();
        let (share, extra) = (self.assignment.len() / count, self.assignment.len() % count);
        let mut next = 0;
        let mut shares = BTreeMap::new();
        for (index, (id, events)) in connections.into_iter().enumerate() {
            let size = share + usize::from(index < extra);
            let partitions = self.assignment[next..next + size].to_vec();
            next += size;
            let told = self.shares.get(&id).map_or(&[][..], Vec::as_slice);
            if told != partitions.as_slice() {
                // A connection gone meanwhile is dropped at the next split.
                let _ = events
                    .send(Ok(SubscriptionEvent::Assigned(partitions.clone())))
                    .await;
            }
            shares.insert(id, partitions);
        }
        self.shares = shares;
        true
    }

    /// Hands `event` to the connection owning `partition`, or to its next
    /// owner if that one has gone; false once nobody is left.
    async fn hand(&mut self, partition: i32, event: SubscriptionEvent) -> bool {
        let mut event: Event = Ok(event);
        loop {
            // A record of a partition outside the member's assignment (read
            // just before a rebalance said so) is still the member's: its
            // first connection takes it.
            let owner = self
                .shares
                .iter()
                .find(|(_, share)| share.contains(&partition))
                .or_else(|| self.shares.first_key_value())
                .map(|(&id, _)| id);
            let Some(owner) = owner else {
                // Nobody has been told of a share yet.
                if !self.split().await {
                    return false;
                }
                if self.shares.is_empty() {
                    return true;
                }
                continue;
            };
            let events = self.member.roster().connections.get(&owner).cloned();
            if let Some(events) = events {
                match events.send(event).await {
                    Ok(()) => return true,
                    Err(mpsc::error::SendError(unsent)) => event = unsent,
                }
            }
            // The owner has left: split again and look once more.
            self.member.roster().connections.remove(&owner);
            if !self.split().await {
                return false;
            }
        }
    }

    /// Ends every connection with `error`.
    async fn tell_everyone(&self, error: &BusError) {
        let connections: Vec<_> = self.member.roster().connections.values().cloned().collect();
        for events in connections {
            let copy = match error {
                BusError::UnknownTopic { topic } => BusError::UnknownTopic {
                    topic: topic.clone(),
                },
                other => BusError::Broker {
                    operation: Operation::Consume,
                    topic: self.key.0.kafka_topic_name().to_owned(),
                    source: other.to_string().into(),
                },
            };
            let _ = events.send(Err(copy)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use acteon_bus::MemoryBackend;
    use acteon_core::{Headers, OutgoingMessage, Topic};

    use super::*;

    async fn topic(bus: &MemoryBackend, partitions: u32) -> TopicName {
        let name = TopicName::new("test", "t", "work").unwrap();
        let topic = Topic::new(name.clone(), partitions, 1, None).unwrap();
        bus.create_topic(&topic).await.unwrap();
        name
    }

    async fn produce(bus: &MemoryBackend, topic: &TopicName, seqs: std::ops::Range<u64>) {
        for seq in seqs {
            let message = OutgoingMessage {
                key: Some(format!("key-{seq}")),
                payload: serde_json::json!({ "seq": seq }),
                headers: Headers::new(),
            };
            bus.produce(topic, message).await.unwrap();
        }
    }

    /// Reads until nothing came for a while: the partitions last assigned
    /// and the sequence numbers read.
    async fn drain(stream: &mut EventStream) -> (Vec<i32>, BTreeSet<u64>) {
        let (mut assigned, mut seen) = (Vec::new(), BTreeSet::new());
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(200), stream.next()).await
        {
            match event.unwrap() {
                SubscriptionEvent::Assigned(partitions) => assigned = partitions,
                SubscriptionEvent::Message(message) => {
                    assert!(seen.insert(message.payload["seq"].as_u64().unwrap()));
                }
                SubscriptionEvent::Lagged { .. } => panic!("nothing is retained away"),
            }
        }
        (assigned, seen)
    }

    #[tokio::test]
    async fn connections_of_one_id_split_one_member_and_the_survivor_takes_over() {
        let bus = Arc::new(MemoryBackend::default());
        let topic = topic(&bus, 4).await;
        let shared = SharedSubscriptions::new(Arc::clone(&bus) as Arc<dyn BusBackend>);
        let group = GroupId::parse("workers").unwrap();
        let mut first = shared
            .connect(&topic, group.clone(), StartPosition::Latest)
            .await
            .unwrap();
        let mut second = shared
            .connect(&topic, group.clone(), StartPosition::Latest)
            .await
            .unwrap();
        assert_eq!(shared.members().len(), 1, "one member for both connections");
        let (first_share, _) = drain(&mut first).await;
        let (second_share, _) = drain(&mut second).await;
        assert_eq!((first_share, second_share), (vec![0, 1], vec![2, 3]));

        produce(&bus, &topic, 0..40).await;
        let (_, to_first) = drain(&mut first).await;
        let (_, to_second) = drain(&mut second).await;
        assert!(to_first.is_disjoint(&to_second));
        assert_eq!(to_first.len() + to_second.len(), 40);
        assert!(!to_first.is_empty() && !to_second.is_empty());

        drop(second);
        produce(&bus, &topic, 40..60).await;
        let (share, seen) = drain(&mut first).await;
        assert_eq!(share, vec![0, 1, 2, 3]);
        assert_eq!(seen, (40..60).collect());

        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            shared.members().is_empty(),
            "the member left with the last connection"
        );
    }

    /// A group member may hand over records of a partition before the
    /// assignment that gave it the partition (librdkafka reads them before
    /// the rebalance is told); they are the member's all the same.
    #[tokio::test]
    async fn records_read_before_their_assignment_are_not_lost() {
        let bus = Arc::new(MemoryBackend::default());
        let topic = topic(&bus, 1).await;
        let shared = SharedSubscriptions::new(bus as Arc<dyn BusBackend>);
        let record = |offset| {
            Ok(SubscriptionEvent::Message(Arc::new(
                acteon_core::BusMessage {
                    topic: topic.kafka_topic_name().to_owned(),
                    key: None,
                    payload: serde_json::json!({ "seq": offset }),
                    headers: Headers::new(),
                    partition: 0,
                    offset,
                    timestamp: chrono::Utc::now(),
                },
            )))
        };
        let member_events = futures::stream::iter([
            record(0),
            Ok(SubscriptionEvent::Assigned(vec![0])),
            record(1),
        ])
        .chain(futures::stream::pending())
        .boxed();
        let member = Arc::new(Member::default());
        let mut connection = connection(member.join());
        let key = (topic.clone(), GroupId::parse("early").unwrap());
        shared.members().insert(key.clone(), Arc::clone(&member));
        let dispatch = Dispatch {
            subscriptions: shared.clone(),
            key,
            member,
            assignment: Vec::new(),
            shares: BTreeMap::new(),
        };
        tokio::spawn(dispatch.run(member_events));
        let (assigned, seen) = drain(&mut connection).await;
        assert_eq!(assigned, vec![0]);
        assert_eq!(seen, BTreeSet::from([0, 1]));
    }
}
