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

use std::collections::{HashMap, VecDeque};
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

/// A topic and a key.
type Slot = (String, String);

#[derive(Debug)]
enum State {
    /// Claimed; the publish has no answer yet.
    InFlight,
    Done(Published),
}

#[derive(Debug)]
struct Entry {
    fingerprint: [u8; 32],
    at: DateTime<Utc>,
    state: State,
}

/// A kept answer, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    topic: String,
    key: String,
    fingerprint: String,
    at: DateTime<Utc>,
    published: Published,
}

#[derive(Debug, Default)]
struct Window {
    entries: HashMap<Slot, Entry>,
    /// Slots by the time they were claimed, oldest first; a slot claimed
    /// again appears again, and only its newest place counts.
    order: VecDeque<(DateTime<Utc>, Slot)>,
    changed: bool,
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
    slot: Option<Slot>,
}

/// What identifies a record's content: a repeat must match it.
fn fingerprint(message: &OutgoingMessage) -> [u8; 32] {
    let content = (&message.key, &message.payload, &message.headers);
    let bytes = serde_json::to_vec(&content).expect("a message serialises");
    Sha256::digest(bytes).into()
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
        chrono::Duration::seconds(i64::try_from(self.config.window_secs).unwrap_or(i64::MAX))
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
        let slot = (topic.kafka_topic_name(), key.to_owned());
        let print = fingerprint(message);
        let mut window = self.lock();
        self.forget_old(&mut window, now);
        if let Some(entry) = window.entries.get(&slot) {
            if entry.fingerprint != print {
                return Err(ServiceError::IdempotencyMismatch);
            }
            return match &entry.state {
                State::InFlight => Err(ServiceError::IdempotencyInProgress),
                State::Done(published) => Ok(Claim::Replay(published.clone())),
            };
        }
        while window.entries.len() >= self.config.max_keys.max(1) {
            let Some((at, oldest)) = window.order.pop_front() else {
                break;
            };
            if window
                .entries
                .get(&oldest)
                .is_some_and(|entry| entry.at == at)
            {
                window.entries.remove(&oldest);
            }
        }
        window.entries.insert(
            slot.clone(),
            Entry {
                fingerprint: print,
                at: now,
                state: State::InFlight,
            },
        );
        window.order.push_back((now, slot.clone()));
        Ok(Claim::New(Ticket {
            window: Arc::clone(self),
            slot: Some(slot),
        }))
    }

    /// Drops the entries older than the window.
    fn forget_old(&self, window: &mut Window, now: DateTime<Utc>) {
        let oldest_kept = now - self.window_length();
        while let Some((at, _)) = window.order.front() {
            if *at >= oldest_kept {
                break;
            }
            let (at, slot) = window.order.pop_front().expect("looked at");
            if window
                .entries
                .get(&slot)
                .is_some_and(|entry| entry.at == at)
            {
                window.entries.remove(&slot);
                window.changed = true;
            }
        }
    }

    /// Reads the stored window; entries past it are left out.
    pub async fn restore(&self, state: &dyn StateStore) -> Result<(), ServiceError> {
        let Some(stored) = state.get(KeyKind::IdempotencyWindow, SNAPSHOT_ID).await? else {
            return Ok(());
        };
        let kept: Vec<Kept> = serde_json::from_value(stored).unwrap_or_else(|error| {
            tracing::warn!(%error, "the stored idempotency window is unreadable; starting empty");
            Vec::new()
        });
        let oldest_kept = Utc::now() - self.window_length();
        let mut window = self.lock();
        for kept in kept.into_iter().filter(|kept| kept.at >= oldest_kept) {
            let mut print = [0u8; 32];
            if hex::decode_to_slice(&kept.fingerprint, &mut print).is_err() {
                continue;
            }
            let slot = (kept.topic, kept.key);
            window.order.push_back((kept.at, slot.clone()));
            window.entries.insert(
                slot,
                Entry {
                    fingerprint: print,
                    at: kept.at,
                    state: State::Done(kept.published),
                },
            );
        }
        window.order.make_contiguous().sort_by_key(|(at, _)| *at);
        tracing::info!(keys = window.entries.len(), "idempotency window restored");
        Ok(())
    }

    /// Stores the window if it changed since the last time.
    async fn store(&self, state: &dyn StateStore) {
        let kept: Vec<Kept> = {
            let mut window = self.lock();
            if !window.changed {
                return;
            }
            window.changed = false;
            window
                .entries
                .iter()
                .filter_map(|((topic, key), entry)| match &entry.state {
                    State::Done(published) => Some(Kept {
                        topic: topic.clone(),
                        key: key.clone(),
                        fingerprint: hex::encode(entry.fingerprint),
                        at: entry.at,
                        published: published.clone(),
                    }),
                    State::InFlight => None,
                })
                .collect()
        };
        let value = serde_json::to_value(&kept).expect("kept answers serialise");
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
        match answer {
            Ok(published) => {
                if let Some(entry) = window.entries.get_mut(&slot) {
                    entry.state = State::Done(published.clone());
                    window.changed = true;
                }
            }
            Err(_) => {
                window.entries.remove(&slot);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.window.lock().entries.remove(&slot);
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
    fn bad_keys_are_refused() {
        for key in ["", "é", "tab\there", &"k".repeat(MAX_KEY_BYTES + 1)] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
        check_key(&"k".repeat(MAX_KEY_BYTES)).unwrap();
    }
}
