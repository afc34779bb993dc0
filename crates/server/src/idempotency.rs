//! Idempotency keys: a publish repeated with the key of an earlier one, to
//! the same topic, within the window, answers the first one's receipt and
//! produces nothing.
//!
//! A key is claimed before the pipeline runs and settled when the publish
//! has its answer, inside the publish's own future, which finishes even if
//! the caller goes away. Only answers that stand are kept (produced or
//! suppressed); after a failure the key is free, since nothing was
//! produced. The window is bounded by `max_keys` (the oldest go first) and
//! kept in the state store every `snapshot_interval_ms` and at shutdown, so
//! it survives a restart; a crash loses what came after the last snapshot.

use std::collections::{HashMap, VecDeque, hash_map};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use acteon_core::{OutgoingMessage, TopicName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ServiceError;
use crate::pipeline::Published;
use crate::state::{KeyKind, StateStore};

/// The `[idempotency]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a key is remembered.
    pub window_secs: u64,
    /// Keys remembered at most; the oldest are forgotten first.
    pub max_keys: usize,
    /// How often the window is stored when it changed.
    pub snapshot_interval_ms: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            window_secs: 86_400,
            max_keys: 100_000,
            snapshot_interval_ms: 5_000,
        }
    }
}

/// The longest key taken, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// The one document the window is stored as.
const SNAPSHOT_ID: &str = "window";

/// A topic and a key, as their SHA-256: fixed-size keys compare and move
/// without following pointers into a large map, and are copied, not
/// cloned.
type Slot = [u8; 32];

fn slot(topic: &TopicName, key: &str) -> Slot {
    // The bytes of the Kafka name, without building it. Topic names have
    // no NUL; it ends the name so that no other split of the same bytes
    // gives the same slot.
    let mut digest = Sha256::new();
    for part in [
        topic.namespace(),
        ".",
        topic.tenant(),
        ".",
        topic.name(),
        "\0",
    ] {
        digest.update(part);
    }
    digest.update(key);
    digest.finalize().into()
}

#[derive(Debug)]
enum State {
    /// Claimed; the publish has no answer yet.
    InFlight,
    Done(Published),
}

#[derive(Debug)]
struct Entry {
    /// Which claim made it: a ticket acts on its own claim only.
    claim: u64,
    fingerprint: [u8; 32],
    at: DateTime<Utc>,
    state: State,
}

/// A kept answer, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    /// The slot's SHA-256, in hex.
    slot: String,
    fingerprint: String,
    at: DateTime<Utc>,
    published: Published,
}

#[derive(Debug, Default)]
struct Window {
    entries: HashMap<Slot, Entry>,
    /// Claims in the order they were made, oldest first, with their
    /// entries' times, so that the oldest is found too young without a
    /// look-up in the large map (a cache miss on every claim). A claim whose
    /// entry is gone (or was claimed again) is left for [`Window::compact`].
    order: VecDeque<(u64, Slot, DateTime<Utc>)>,
    next_claim: u64,
    changed: bool,
}

impl Window {
    /// Whether `claim` still has its entry.
    fn is_current(&self, claim: u64, slot: &Slot) -> bool {
        self.entries
            .get(slot)
            .is_some_and(|entry| entry.claim == claim)
    }

    /// Drops claims whose entries are gone once they outnumber the
    /// entries, so `order` stays within about twice the window.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(claim, slot, _)| entries.get(slot).is_some_and(|e| e.claim == *claim));
        }
    }

    /// Removes the oldest entry if it is settled (and claimed before
    /// `older_than`, when given); `false` when there is none to remove. An
    /// entry in flight stays until it settles.
    fn drop_oldest_settled(&mut self, older_than: Option<DateTime<Utc>>) -> bool {
        while let Some(&(claim, slot, at)) = self.order.front() {
            if older_than.is_some_and(|limit| at >= limit) {
                return false;
            }
            match self.entries.entry(slot) {
                hash_map::Entry::Occupied(entry) if entry.get().claim == claim => {
                    if matches!(entry.get().state, State::InFlight) {
                        return false;
                    }
                    entry.remove();
                    self.order.pop_front();
                    self.changed = true;
                    return true;
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
        false
    }
}

/// What a publish with a key should do.
#[derive(Debug)]
pub enum Claim {
    /// Go on, and settle the ticket with the answer.
    New(Ticket),
    /// The key's first publish answered this.
    Replay(Published),
}

/// The remembered keys of this server.
#[derive(Debug)]
pub struct IdempotencyWindow {
    window: Mutex<Window>,
    config: IdempotencyConfig,
}

/// A claimed key; settled with the publish's answer, or freed if dropped
/// without one.
#[derive(Debug)]
pub struct Ticket {
    window: Arc<IdempotencyWindow>,
    claim: u64,
    slot: Option<Slot>,
}

/// What identifies a record's content: a repeat must match it.
fn fingerprint(message: &OutgoingMessage) -> [u8; 32] {
    let content = (&message.key, &message.payload, &message.headers);
    let mut digest = Sha256::new();
    serde_json::to_writer(&mut digest, &content).expect("a message serialises");
    digest.finalize().into()
}

/// A key a client may send: 1 to [`MAX_KEY_BYTES`] printable ASCII bytes.
pub fn check_key(key: &str) -> Result<(), ServiceError> {
    let printable = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !printable {
        return Err(ServiceError::InvalidMessage(format!(
            "idempotency key: 1 to {MAX_KEY_BYTES} printable ASCII characters"
        )));
    }
    Ok(())
}

impl IdempotencyWindow {
    pub fn new(config: IdempotencyConfig) -> Arc<Self> {
        Arc::new(Self {
            window: Mutex::default(),
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // The maps stay consistent: every change is made under the lock in
        // one step.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn window_length(&self) -> chrono::Duration {
        // A century stands for any longer window, which chrono cannot add.
        const CENTURY_SECS: u64 = 100 * 366 * 86_400;
        chrono::Duration::seconds(self.config.window_secs.min(CENTURY_SECS) as i64)
    }

    /// Claims `key` for a publish of `message` to `topic`.
    pub fn claim(
        self: &Arc<Self>,
        topic: &TopicName,
        key: &str,
        message: &OutgoingMessage,
    ) -> Result<Claim, ServiceError> {
        check_key(key)?;
        let now = Utc::now();
        let slot = slot(topic, key);
        let print = fingerprint(message);
        let mut window = self.lock();
        let oldest_kept = now - self.window_length();
        while window.drop_oldest_settled(Some(oldest_kept)) {}
        if let Some(entry) = window.entries.get(&slot) {
            if entry.fingerprint != print {
                return Err(ServiceError::IdempotencyMismatch);
            }
            return match &entry.state {
                State::InFlight => Err(ServiceError::IdempotencyInProgress),
                State::Done(published) => Ok(Claim::Replay(published.clone())),
            };
        }
        // The oldest settled keys make room; keys in flight are never
        // forgotten, so the window may run over by as many as are in flight.
        while window.entries.len() >= self.config.max_keys.max(1)
            && window.drop_oldest_settled(None)
        {}
        let claim = window.next_claim;
        window.next_claim += 1;
        window.entries.insert(
            slot,
            Entry {
                claim,
                fingerprint: print,
                at: now,
                state: State::InFlight,
            },
        );
        window.order.push_back((claim, slot, now));
        Ok(Claim::New(Ticket {
            window: Arc::clone(self),
            claim,
            slot: Some(slot),
        }))
    }

    /// Reads the stored window; entries past it are left out.
    pub async fn restore(&self, state: &dyn StateStore) -> Result<(), ServiceError> {
        let Some(stored) = state.get(KeyKind::IdempotencyWindow, SNAPSHOT_ID).await? else {
            return Ok(());
        };
        let kept: Result<Vec<Kept>, _> = match stored {
            serde_json::Value::String(text) => serde_json::from_str(&text),
            // As servers before the text form stored it.
            tree => serde_json::from_value(tree),
        };
        let kept = kept.unwrap_or_else(|error| {
            tracing::warn!(%error, "the stored idempotency window is unreadable; starting empty");
            Vec::new()
        });
        let oldest_kept = Utc::now() - self.window_length();
        let mut kept: Vec<Kept> = kept
            .into_iter()
            .filter(|kept| kept.at >= oldest_kept)
            .collect();
        kept.sort_by_key(|kept| kept.at);
        let mut window = self.lock();
        for kept in kept {
            let (mut print, mut slot) = ([0u8; 32], [0u8; 32]);
            if hex::decode_to_slice(&kept.fingerprint, &mut print).is_err()
                || hex::decode_to_slice(&kept.slot, &mut slot).is_err()
            {
                continue;
            }
            let claim = window.next_claim;
            window.next_claim += 1;
            window.order.push_back((claim, slot, kept.at));
            window.entries.insert(
                slot,
                Entry {
                    claim,
                    fingerprint: print,
                    at: kept.at,
                    state: State::Done(kept.published),
                },
            );
        }
        tracing::info!(keys = window.entries.len(), "idempotency window restored");
        Ok(())
    }

    /// Stores the window if it changed since the last time.
    async fn store(&self, state: &dyn StateStore) {
        // Copied under the lock, encoded after it: publishes with keys
        // wait for the lock meanwhile.
        let copied: Vec<(Slot, [u8; 32], DateTime<Utc>, Published)> = {
            let mut window = self.lock();
            if !window.changed {
                return;
            }
            window.changed = false;
            window
                .entries
                .iter()
                .filter_map(|(slot, entry)| match &entry.state {
                    State::Done(published) => {
                        Some((*slot, entry.fingerprint, entry.at, published.clone()))
                    }
                    State::InFlight => None,
                })
                .collect()
        };
        let kept: Vec<Kept> = copied
            .into_iter()
            .map(|(slot, fingerprint, at, published)| Kept {
                slot: hex::encode(slot),
                fingerprint: hex::encode(fingerprint),
                at,
                published,
            })
            .collect();
        // One JSON text in a JSON string: building a tree of as many JSON
        // objects as there are keys cost more than the rest of the
        // snapshot, and is redone every interval.
        let value = serde_json::Value::String(
            serde_json::to_string(&kept).expect("kept answers serialise"),
        );
        if let Err(error) = state
            .put(KeyKind::IdempotencyWindow, SNAPSHOT_ID, &value)
            .await
        {
            // Kept for the next try.
            self.lock().changed = true;
            tracing::error!(%error, "the idempotency window could not be stored");
        }
    }

    /// Stores the window every `snapshot_interval_ms` while it changes,
    /// and once more when stopped.
    pub fn start_snapshots(self: &Arc<Self>, state: Arc<dyn StateStore>) -> IdempotencySnapshots {
        let stop = CancellationToken::new();
        let interval = Duration::from_millis(self.config.snapshot_interval_ms.max(100));
        let window = Arc::clone(self);
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stopped.cancelled() => break,
                    () = tokio::time::sleep(interval) => window.store(&*state).await,
                }
            }
            window.store(&*state).await;
        });
        IdempotencySnapshots { stop, task }
    }
}

/// The snapshot task; [`IdempotencySnapshots::stop`] stores the window one
/// last time.
#[derive(Debug)]
pub struct IdempotencySnapshots {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl IdempotencySnapshots {
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the idempotency snapshot task failed");
        }
    }
}

impl Ticket {
    /// Keeps the answer if it stands; frees the key after a failure.
    pub fn settle(mut self, answer: &Result<Published, ServiceError>) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut window = self.window.lock();
        if !window.is_current(self.claim, &slot) {
            return;
        }
        match answer {
            Ok(published) => {
                let entry = window.entries.get_mut(&slot).expect("current");
                entry.state = State::Done(published.clone());
                window.changed = true;
            }
            Err(_) => {
                window.entries.remove(&slot);
                window.compact();
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut window = self.window.lock();
            if window.is_current(self.claim, &slot) {
                window.entries.remove(&slot);
                window.compact();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use acteon_core::{DeliveryReceipt, Headers};
    use serde_json::json;

    use super::*;

    fn message(n: i64) -> OutgoingMessage {
        OutgoingMessage {
            key: None,
            payload: json!({ "n": n }),
            headers: Headers::new(),
        }
    }

    fn produced(offset: i64) -> Result<Published, ServiceError> {
        Ok(Published::Produced(DeliveryReceipt {
            topic: "a.b.c".into(),
            partition: 0,
            offset,
            produced_at: Utc::now(),
        }))
    }

    fn topic() -> TopicName {
        TopicName::new("a", "b", "c").unwrap()
    }

    fn new_ticket(window: &Arc<IdempotencyWindow>, key: &str, n: i64) -> Ticket {
        match window.claim(&topic(), key, &message(n)).unwrap() {
            Claim::New(ticket) => ticket,
            Claim::Replay(published) => panic!("replayed {published:?}"),
        }
    }

    /// The window comes back from the text it is stored as, and from the
    /// tree of objects servers before stored.
    #[tokio::test]
    async fn a_stored_window_is_restored_from_either_form() {
        let state = crate::state::MemoryStore::default();
        let window = IdempotencyWindow::new(IdempotencyConfig::default());
        new_ticket(&window, "k", 1).settle(&produced(7));
        window.store(&state).await;
        let stored = state
            .get(KeyKind::IdempotencyWindow, SNAPSHOT_ID)
            .await
            .unwrap()
            .unwrap();
        let serde_json::Value::String(text) = &stored else {
            panic!("stored as text: {stored}");
        };
        let tree: serde_json::Value = serde_json::from_str(text).unwrap();
        for form in [stored.clone(), tree] {
            state
                .put(KeyKind::IdempotencyWindow, SNAPSHOT_ID, &form)
                .await
                .unwrap();
            let restored = IdempotencyWindow::new(IdempotencyConfig::default());
            restored.restore(&state).await.unwrap();
            match restored.claim(&topic(), "k", &message(1)).unwrap() {
                Claim::Replay(Published::Produced(receipt)) => assert_eq!(receipt.offset, 7),
                other => panic!("{form}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_settled_key_replays_and_a_failed_one_is_free_again() {
        let window = IdempotencyWindow::new(IdempotencyConfig::default());
        let ticket = new_ticket(&window, "k", 1);
        assert!(matches!(
            window.claim(&topic(), "k", &message(1)),
            Err(ServiceError::IdempotencyInProgress)
        ));
        ticket.settle(&produced(7));
        match window.claim(&topic(), "k", &message(1)).unwrap() {
            Claim::Replay(Published::Produced(receipt)) => assert_eq!(receipt.offset, 7),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            window.claim(&topic(), "k", &message(2)),
            Err(ServiceError::IdempotencyMismatch)
        ));

        let failed = new_ticket(&window, "f", 1);
        failed.settle(&Err(ServiceError::TooManySubscriptions));
        new_ticket(&window, "f", 2).settle(&produced(8));
        drop(new_ticket(&window, "dropped", 1));
        new_ticket(&window, "dropped", 1);
    }

    #[test]
    fn the_oldest_keys_go_first_when_the_window_is_full() {
        let config = IdempotencyConfig {
            max_keys: 2,
            ..IdempotencyConfig::default()
        };
        let window = IdempotencyWindow::new(config);
        for (key, offset) in [("a", 1), ("b", 2), ("c", 3)] {
            new_ticket(&window, key, 1).settle(&produced(offset));
        }
        new_ticket(&window, "a", 1);
        assert!(matches!(
            window.claim(&topic(), "c", &message(1)).unwrap(),
            Claim::Replay(_)
        ));
    }

    #[test]
    fn keys_in_flight_are_never_forgotten_and_freed_claims_leave_nothing() {
        let config = IdempotencyConfig {
            max_keys: 1,
            window_secs: 0,
            ..IdempotencyConfig::default()
        };
        let window = IdempotencyWindow::new(config);
        let first = new_ticket(&window, "a", 1);
        // Full and past the window, yet "a" is in flight: it stays, and
        // the window runs over by one.
        let second = new_ticket(&window, "b", 1);
        assert!(matches!(
            window.claim(&topic(), "a", &message(1)),
            Err(ServiceError::IdempotencyInProgress)
        ));
        first.settle(&produced(1));
        second.settle(&produced(2));
        // Many failed claims leave the claim order about the window's size.
        for n in 0..10_000 {
            new_ticket(&window, &format!("failed-{n}"), 1)
                .settle(&Err(ServiceError::TooManySubscriptions));
        }
        let (order, entries) = {
            let window = window.lock();
            (window.order.len(), window.entries.len())
        };
        assert!(
            order <= 2 * entries + 65,
            "{order} claims for {entries} keys"
        );
    }

    #[test]
    fn a_ticket_acts_on_its_own_claim_only() {
        let config = IdempotencyConfig {
            max_keys: 1,
            ..IdempotencyConfig::default()
        };
        let window = IdempotencyWindow::new(config);
        new_ticket(&window, "a", 1).settle(&produced(1));
        // "b" pushes settled "a" out; "a" is claimed again while the old
        // claim's ticket is long gone, and a stale ticket changes nothing.
        let stale = new_ticket(&window, "b", 1);
        let b_again_blocked = window.claim(&topic(), "b", &message(1));
        assert!(matches!(
            b_again_blocked,
            Err(ServiceError::IdempotencyInProgress)
        ));
        stale.settle(&produced(2));
        let again = new_ticket(&window, "a", 1);
        again.settle(&produced(3));
        match window.claim(&topic(), "a", &message(1)).unwrap() {
            Claim::Replay(Published::Produced(receipt)) => assert_eq!(receipt.offset, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_window_too_long_to_count_is_a_century() {
        let config = IdempotencyConfig {
            window_secs: u64::MAX,
            ..IdempotencyConfig::default()
        };
        let window = IdempotencyWindow::new(config);
        new_ticket(&window, "a", 1).settle(&produced(1));
        assert!(matches!(
            window.claim(&topic(), "a", &message(1)).unwrap(),
            Claim::Replay(_)
        ));
    }

    #[test]
    fn bad_keys_are_refused() {
        for key in ["", "é", "tab\there", &"k".repeat(MAX_KEY_BYTES + 1)] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
        check_key(&"k".repeat(MAX_KEY_BYTES)).unwrap();
    }
}
