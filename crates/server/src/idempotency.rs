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
//!
//! A snapshot writes one page: the keys settled since the one before. A
//! page is deleted once every key in it has left the window. Writing the
//! whole window each time cost each snapshot the window's size, about
//! 25 MB at 100,000 keys, however little had changed.

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
    /// How often the keys settled since the last time are stored.
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

/// The one document servers before pages stored the whole window as.
const WHOLE_WINDOW_ID: &str = "window";
/// How a page's id starts; its number follows.
const PAGE_PREFIX: &str = "page-";

fn page_id(number: u64) -> String {
    format!("{PAGE_PREFIX}{number:020}")
}

/// A page's number; `None` for the whole window older servers stored,
/// which comes before every page.
fn page_number(id: &str) -> Option<u64> {
    id.strip_prefix(PAGE_PREFIX)?.parse().ok()
}

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

/// A stored page: its id and its newest key's time.
#[derive(Debug)]
struct Page {
    id: String,
    newest: DateTime<Utc>,
}

impl Page {
    fn holding(id: String, kept: &[Kept]) -> Self {
        let newest = kept.iter().map(|kept| kept.at).max();
        Self {
            id,
            newest: newest.unwrap_or(DateTime::<Utc>::MIN_UTC),
        }
    }
}

/// A page as stored: its keys as one JSON text in a JSON string, since a
/// tree of as many JSON objects as there are keys cost more than the rest
/// of the snapshot. [`read_page`] reads it back.
fn page_document(id: &str, kept: &[Kept]) -> serde_json::Value {
    serde_json::json!({
        "page": id,
        "kept": serde_json::to_string(kept).expect("kept answers serialise"),
    })
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
    /// Keys settled since the last snapshot; the next page holds those
    /// still in the window. Kept only once snapshots run, so that a window
    /// that is never stored does not gather them.
    unsaved: Vec<Slot>,
    snapshots: bool,
    /// The pages in the state store, oldest first.
    pages: VecDeque<Page>,
    next_page: u64,
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
                    return true;
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
        false
    }

    /// Takes off the pages none of whose keys is in the window any more:
    /// each key of a page was claimed by its newest time, so a page older
    /// than every key left holds only keys that are gone. The oldest is
    /// looked for among all the keys, not taken from the claim order, which
    /// a step back of the clock would leave out of time order.
    fn take_stale_pages(&mut self) -> Vec<Page> {
        if self.pages.is_empty() {
            return Vec::new();
        }
        let oldest = self.entries.values().map(|entry| entry.at).min();
        let stale = self
            .pages
            .iter()
            .take_while(|page| oldest.is_none_or(|oldest| page.newest < oldest))
            .count();
        self.pages.drain(..stale).collect()
    }

    /// The settled answers of the unsaved keys still in the window.
    fn take_unsaved(&mut self) -> Vec<(Slot, [u8; 32], DateTime<Utc>, Published)> {
        let mut slots = std::mem::take(&mut self.unsaved);
        slots.sort_unstable();
        slots.dedup();
        slots
            .into_iter()
            .filter_map(|slot| match self.entries.get(&slot) {
                Some(Entry {
                    fingerprint,
                    at,
                    state: State::Done(published),
                    ..
                }) => Some((slot, *fingerprint, *at, published.clone())),
                _ => None,
            })
            .collect()
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

/// A stored page's id and keys. The whole window that servers before pages
/// stored is read as one page, in either of its forms: a JSON text in a
/// string, or a tree.
fn read_page(stored: serde_json::Value) -> Result<(String, Vec<Kept>), serde_json::Error> {
    match stored {
        serde_json::Value::Object(mut page) => {
            let id = serde_json::from_value(page.remove("page").unwrap_or_default())?;
            let kept: String = serde_json::from_value(page.remove("kept").unwrap_or_default())?;
            Ok((id, serde_json::from_str(&kept)?))
        }
        serde_json::Value::String(text) => {
            Ok((WHOLE_WINDOW_ID.to_owned(), serde_json::from_str(&text)?))
        }
        tree => Ok((WHOLE_WINDOW_ID.to_owned(), serde_json::from_value(tree)?)),
    }
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

    /// Reads the stored pages; keys past the window are left out, and the
    /// newest `max_keys` kept.
    pub async fn restore(&self, state: &dyn StateStore) -> Result<(), ServiceError> {
        let mut pages = Vec::new();
        for stored in state.list(KeyKind::IdempotencyWindow).await? {
            match read_page(stored) {
                Ok(page) => pages.push(page),
                Err(error) => tracing::warn!(
                    %error,
                    "a stored page of the idempotency window is unreadable; its keys are lost"
                ),
            }
        }
        // A key claimed again after it left the window is in two pages; the
        // later page's claim is the one that stands (not the later time: the
        // clock may have stepped back between them).
        pages.sort_by_key(|(id, _)| page_number(id));
        let oldest_kept = Utc::now() - self.window_length();
        let mut window = self.lock();
        let mut latest: HashMap<String, Kept> = HashMap::new();
        for (id, page) in pages {
            if let Some(number) = page_number(&id) {
                window.next_page = window.next_page.max(number.saturating_add(1));
            }
            window.pages.push_back(Page::holding(id, &page));
            latest.extend(page.into_iter().map(|kept| (kept.slot.clone(), kept)));
        }
        window
            .pages
            .make_contiguous()
            .sort_by_key(|page| page.newest);
        let mut kept: Vec<Kept> = latest
            .into_values()
            .filter(|kept| kept.at >= oldest_kept)
            .collect();
        kept.sort_by_key(|kept| kept.at);
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
        while window.entries.len() > self.config.max_keys.max(1) && window.drop_oldest_settled(None)
        {
        }
        tracing::info!(
            keys = window.entries.len(),
            pages = window.pages.len(),
            "idempotency window restored"
        );
        Ok(())
    }

    /// Stores the keys settled since the last time as a page, and deletes
    /// the pages whose keys have all left the window.
    async fn store(&self, state: &dyn StateStore) {
        // Copied under the lock, encoded after it: publishes with keys
        // wait for the lock meanwhile.
        let (copied, stale, id) = {
            let mut window = self.lock();
            let copied = window.take_unsaved();
            let stale = window.take_stale_pages();
            let id = (!copied.is_empty()).then(|| {
                window.next_page += 1;
                page_id(window.next_page - 1)
            });
            (copied, stale, id)
        };
        if let Some(id) = id {
            self.store_page(state, id, copied).await;
        }
        for page in stale {
            if let Err(error) = state.delete(KeyKind::IdempotencyWindow, &page.id).await {
                tracing::error!(%error, "a page of the idempotency window could not be deleted");
                // Tried again at the next snapshot.
                self.lock().pages.push_front(page);
            }
        }
    }

    async fn store_page(
        &self,
        state: &dyn StateStore,
        id: String,
        copied: Vec<(Slot, [u8; 32], DateTime<Utc>, Published)>,
    ) {
        let slots: Vec<Slot> = copied.iter().map(|&(slot, ..)| slot).collect();
        let kept: Vec<Kept> = copied
            .into_iter()
            .map(|(slot, fingerprint, at, published)| Kept {
                slot: hex::encode(slot),
                fingerprint: hex::encode(fingerprint),
                at,
                published,
            })
            .collect();
        let document = page_document(&id, &kept);
        match state.put(KeyKind::IdempotencyWindow, &id, &document).await {
            Ok(()) => self.lock().pages.push_back(Page::holding(id, &kept)),
            Err(error) => {
                // Kept for the next try.
                self.lock().unsaved.extend(slots);
                tracing::error!(%error, "the idempotency window could not be stored");
            }
        }
    }

    /// Stores a page every `snapshot_interval_ms` while keys settle, and
    /// once more when stopped.
    pub fn start_snapshots(self: &Arc<Self>, state: Arc<dyn StateStore>) -> IdempotencySnapshots {
        self.lock().snapshots = true;
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
                if window.snapshots {
                    window.unsaved.push(slot);
                }
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

    /// A window whose settled keys are kept for snapshots, as
    /// `start_snapshots` makes it, without the timer.
    fn snapshotted(config: IdempotencyConfig) -> Arc<IdempotencyWindow> {
        let window = IdempotencyWindow::new(config);
        window.lock().snapshots = true;
        window
    }

    /// The stored pages of the window.
    async fn stored_pages(state: &dyn StateStore) -> Vec<(String, Vec<Kept>)> {
        let stored = state.list(KeyKind::IdempotencyWindow).await.unwrap();
        stored
            .into_iter()
            .map(|page| read_page(page).unwrap())
            .collect()
    }

    /// The page a window stores with one key, "k", produced at `offset`.
    async fn one_stored_key(offset: i64) -> Vec<Kept> {
        let state = crate::state::MemoryStore::default();
        let window = snapshotted(IdempotencyConfig::default());
        new_ticket(&window, "k", 1).settle(&produced(offset));
        window.store(&state).await;
        stored_pages(&state).await.pop().unwrap().1
    }

    fn replayed_offset(window: &Arc<IdempotencyWindow>, key: &str) -> i64 {
        match window.claim(&topic(), key, &message(1)).unwrap() {
            Claim::Replay(Published::Produced(receipt)) => receipt.offset,
            other => panic!("{key}: {other:?}"),
        }
    }

    /// Each snapshot stores only the keys settled since the one before, and
    /// a restart reads them all back.
    #[tokio::test]
    async fn a_snapshot_stores_what_settled_since_the_last_one() {
        let state = crate::state::MemoryStore::default();
        let window = snapshotted(IdempotencyConfig::default());
        new_ticket(&window, "a", 1).settle(&produced(1));
        new_ticket(&window, "b", 1).settle(&produced(2));
        window.store(&state).await;
        window.store(&state).await;
        new_ticket(&window, "c", 1).settle(&produced(3));
        let in_flight = new_ticket(&window, "d", 1);
        window.store(&state).await;
        let pages = stored_pages(&state).await;
        let sizes: Vec<usize> = pages.iter().map(|(_, kept)| kept.len()).collect();
        assert_eq!(sizes, [2, 1], "{pages:?}");

        in_flight.settle(&produced(4));
        let restored = snapshotted(IdempotencyConfig::default());
        restored.restore(&state).await.unwrap();
        for (key, offset) in [("a", 1), ("b", 2), ("c", 3)] {
            assert_eq!(replayed_offset(&restored, key), offset);
        }
        // Settled after the last snapshot: lost, as a crash would lose it.
        new_ticket(&restored, "d", 1).settle(&produced(5));
        restored.store(&state).await;
        let ids: Vec<String> = stored_pages(&state)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [page_id(0), page_id(1), page_id(2)]);
    }

    /// A page goes once every key in it has left the window, and a restart
    /// keeps the newest `max_keys` of what the pages hold.
    #[tokio::test]
    async fn pages_whose_keys_are_gone_are_deleted() {
        let state = crate::state::MemoryStore::default();
        let config = IdempotencyConfig {
            max_keys: 2,
            ..IdempotencyConfig::default()
        };
        let window = snapshotted(config.clone());
        // Apart in time, as a page is gone only once it is older than the
        // oldest key left.
        for (key, offset) in [("a", 1), ("b", 2), ("c", 3)] {
            tokio::time::sleep(Duration::from_millis(2)).await;
            // "c" pushes "a" out, and with it the first page.
            new_ticket(&window, key, 1).settle(&produced(offset));
            window.store(&state).await;
        }
        let pages = stored_pages(&state).await;
        let keys: Vec<usize> = pages.iter().map(|(_, kept)| kept.len()).collect();
        assert_eq!(keys, [1, 1], "{pages:?}");

        let restored = snapshotted(config);
        restored.restore(&state).await.unwrap();
        assert_eq!(replayed_offset(&restored, "b"), 2);
        assert_eq!(replayed_offset(&restored, "c"), 3);
        new_ticket(&restored, "a", 1);

        let one_key = IdempotencyConfig {
            max_keys: 1,
            ..IdempotencyConfig::default()
        };
        let restored = snapshotted(one_key);
        restored.restore(&state).await.unwrap();
        assert_eq!(replayed_offset(&restored, "c"), 3);
        new_ticket(&restored, "b", 1);
    }

    /// A key in two pages comes back as the later page has it, even when
    /// the clock stepped back between them.
    #[tokio::test]
    async fn the_later_page_wins_whatever_the_clock_said() {
        let state = crate::state::MemoryStore::default();
        let first = page_document(&page_id(0), &one_stored_key(1).await);
        state
            .put(KeyKind::IdempotencyWindow, &page_id(0), &first)
            .await
            .unwrap();
        let mut kept = one_stored_key(1).await;
        kept[0].at -= chrono::Duration::seconds(10);
        kept[0].published = produced(3).unwrap();
        let later = page_document(&page_id(1), &kept);
        state
            .put(KeyKind::IdempotencyWindow, &page_id(1), &later)
            .await
            .unwrap();
        let restored = snapshotted(IdempotencyConfig::default());
        restored.restore(&state).await.unwrap();
        assert_eq!(replayed_offset(&restored, "k"), 3);
    }

    /// A window that is never stored keeps nothing for a snapshot.
    #[test]
    fn without_snapshots_settled_keys_are_not_gathered() {
        let window = IdempotencyWindow::new(IdempotencyConfig::default());
        for n in 0..100 {
            new_ticket(&window, &format!("k-{n}"), 1).settle(&produced(n));
        }
        assert!(window.lock().unsaved.is_empty());
    }

    /// The whole window servers before pages stored, as a JSON text or as
    /// a tree, is read as a page and deleted once its keys are gone.
    #[tokio::test]
    async fn the_whole_window_older_servers_stored_is_read() {
        let text = serde_json::to_string(&one_stored_key(7).await).unwrap();
        let tree: serde_json::Value = serde_json::from_str(&text).unwrap();
        for whole in [serde_json::Value::String(text), tree] {
            let state = crate::state::MemoryStore::default();
            state
                .put(KeyKind::IdempotencyWindow, WHOLE_WINDOW_ID, &whole)
                .await
                .unwrap();
            let config = IdempotencyConfig {
                max_keys: 1,
                ..IdempotencyConfig::default()
            };
            let restored = snapshotted(config);
            restored.restore(&state).await.unwrap();
            assert_eq!(replayed_offset(&restored, "k"), 7, "{whole}");
            tokio::time::sleep(Duration::from_millis(2)).await;
            new_ticket(&restored, "other", 1).settle(&produced(8));
            restored.store(&state).await;
            let pages = stored_pages(&state).await;
            let ids: Vec<&str> = pages.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(ids, [page_id(0)], "{whole}");
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
