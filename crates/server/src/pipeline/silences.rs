//! Silences: time-boxed suppression of a tenant's (or narrower) publishes.
//!
//! Kept in the state store (so they survive restarts) and mirrored in memory,
//! because every publish checks them. Silences that ended more than
//! [`KEEP_ENDED`] ago are dropped whenever one is created, so the set stays
//! bounded by how many are created in that time.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use acteon_core::Scope;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::condition::{Condition, ConditionBounds, MessageFacts};
use crate::error::ServiceError;
use crate::limits::LimitsConfig;
use crate::state::{KeyKind, StateError, StateStore};

/// How long an ended silence stays listed under `?all=true`.
const KEEP_ENDED: TimeDelta = TimeDelta::days(7);

/// Longest comment on a silence, in bytes.
const MAX_COMMENT_BYTES: usize = 4 * 1024;

/// `POST /v1/silences`: exactly one of `ends_at` and `duration_ms`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    #[schema(value_type = acteon_core::Fragment)]
    pub tenant: String,
    #[schema(value_type = Option<acteon_core::Fragment>)]
    pub namespace: Option<String>,
    /// The topic's short name.
    #[schema(value_type = Option<acteon_core::Fragment>)]
    pub topic: Option<String>,
    pub condition: Option<String>,
    pub ends_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub comment: String,
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Silence {
    pub id: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
}

impl Silence {
    fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Whether it ended more than [`KEEP_ENDED`] before `now`. A silence
    /// whose end is too far away to add to is not old.
    fn is_old(&self, now: DateTime<Utc>) -> bool {
        self.ends_at
            .checked_add_signed(KEEP_ENDED)
            .is_some_and(|kept_until| kept_until < now)
    }
}

#[derive(Debug)]
struct Compiled {
    silence: Silence,
    scope: Scope,
    condition: Option<Condition>,
}

impl Compiled {
    fn new(silence: Silence, bounds: &ConditionBounds) -> Result<Self, ServiceError> {
        let scope = Scope::new(
            silence.namespace.as_deref(),
            Some(&silence.tenant),
            silence.topic.as_deref(),
        )?;
        let condition = silence
            .condition
            .as_deref()
            .map(|text| Condition::compile_bounded(text, bounds))
            .transpose()
            .map_err(|error| ServiceError::InvalidSilence(error.to_string()))?;
        Ok(Self {
            silence,
            scope,
            condition,
        })
    }

    fn silences(&self, message: &MessageFacts<'_>, now: DateTime<Utc>) -> bool {
        self.silence.is_active(now)
            && self.scope.covers_topic(message.topic)
            && self.condition.as_ref().is_none_or(|c| c.holds(message))
    }
}

/// The silences, stored and mirrored.
#[derive(Debug)]
pub struct Silences {
    state: Arc<dyn StateStore>,
    limits: LimitsConfig,
    all: RwLock<Vec<Arc<Compiled>>>,
    /// Held by a create from its count against the limit to its insert, so
    /// concurrent creates cannot both pass the count.
    creating: tokio::sync::Mutex<()>,
}

impl Silences {
    /// Loads the stored silences; one that cannot be read is logged and
    /// skipped.
    pub async fn load(
        state: Arc<dyn StateStore>,
        limits: LimitsConfig,
    ) -> Result<Self, StateError> {
        let bounds = ConditionBounds::from(&limits);
        let mut all = Vec::new();
        for row in state.list(KeyKind::Silence).await? {
            match serde_json::from_value(row)
                .map_err(|e| e.to_string())
                .and_then(|silence| Compiled::new(silence, &bounds).map_err(|e| e.to_string()))
            {
                Ok(compiled) => all.push(Arc::new(compiled)),
                Err(error) => tracing::error!(%error, "a stored silence could not be loaded"),
            }
        }
        Ok(Self {
            state,
            limits,
            all: RwLock::new(all),
            creating: tokio::sync::Mutex::default(),
        })
    }

    // Every section under these locks is plain bookkeeping; a panic in one
    // request must not poison the silences for every other publish.
    fn read(&self) -> RwLockReadGuard<'_, Vec<Arc<Compiled>>> {
        self.all.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<Arc<Compiled>>> {
        self.all.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub async fn create(&self, request: SilenceRequest) -> Result<Silence, ServiceError> {
        let invalid = |message: String| ServiceError::InvalidSilence(message);
        if request.comment.len() > MAX_COMMENT_BYTES {
            return Err(invalid(format!(
                "comment is {} bytes; at most {MAX_COMMENT_BYTES} are allowed",
                request.comment.len()
            )));
        }
        let now = Utc::now();
        let longest = i64::try_from(self.limits.max_silence_secs)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .unwrap_or(TimeDelta::MAX);
        let too_long = || {
            invalid(format!(
                "a silence may last at most max_silence_secs ({} s)",
                self.limits.max_silence_secs
            ))
        };
        let ends_at = match (request.ends_at, request.duration_ms) {
            (Some(ends_at), None) => ends_at,
            (None, Some(ms)) => i64::try_from(ms)
                .ok()
                .and_then(TimeDelta::try_milliseconds)
                .and_then(|duration| now.checked_add_signed(duration))
                .ok_or_else(too_long)?,
            _ => {
                return Err(invalid(
                    "give exactly one of ends_at and duration_ms".into(),
                ));
            }
        };
        if ends_at <= now {
            return Err(invalid(format!("ends_at {ends_at} is not in the future")));
        }
        if ends_at.signed_duration_since(now) > longest {
            return Err(too_long());
        }
        let silence = Silence {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: request.tenant,
            namespace: request.namespace,
            topic: request.topic,
            condition: request.condition,
            starts_at: now,
            ends_at,
            comment: request.comment,
        };
        let compiled = Arc::new(Compiled::new(
            silence.clone(),
            &ConditionBounds::from(&self.limits),
        )?);
        let _creating = self.creating.lock().await;
        self.forget_ended(now).await;
        let held = self
            .read()
            .iter()
            .filter(|c| c.silence.tenant == silence.tenant)
            .count();
        if held >= self.limits.max_silences_per_tenant {
            return Err(ServiceError::LimitReached(format!(
                "tenant {} has {held} silences, the most max_silences_per_tenant allows \
                 (ended ones count until they are a week old)",
                silence.tenant
            )));
        }
        self.store(&silence).await?;
        self.write().push(compiled);
        Ok(silence)
    }

    /// Drops silences that ended more than [`KEEP_ENDED`] before `now`.
    async fn forget_ended(&self, now: DateTime<Utc>) {
        let old: Vec<String> = {
            let mut all = self.write();
            let (old, kept): (Vec<_>, Vec<_>) = all.drain(..).partition(|c| c.silence.is_old(now));
            *all = kept;
            old.into_iter().map(|c| c.silence.id.clone()).collect()
        };
        for id in old {
            if let Err(error) = self.state.delete(KeyKind::Silence, &id).await {
                tracing::warn!(%id, %error, "an old silence could not be removed from the store");
            }
        }
    }

    async fn store(&self, silence: &Silence) -> Result<(), ServiceError> {
        let row = serde_json::to_value(silence).expect("silences serialise");
        Ok(self.state.put(KeyKind::Silence, &silence.id, &row).await?)
    }

    /// Active silences, or all with `all`, whose scope `visible` accepts,
    /// newest first.
    pub fn list(&self, all: bool, visible: impl Fn(&Scope) -> bool) -> Vec<Silence> {
        let now = Utc::now();
        let mut silences: Vec<Silence> = self
            .read()
            .iter()
            .filter(|c| (all || c.silence.is_active(now)) && visible(&c.scope))
            .map(|c| c.silence.clone())
            .collect();
        silences.sort_by_key(|silence| std::cmp::Reverse(silence.starts_at));
        silences
    }

    /// Ends a silence now, if `visible` accepts its scope; it stays listed
    /// under `?all=true`. Another scope's silence is answered as missing.
    pub async fn end(
        &self,
        id: &str,
        visible: impl Fn(&Scope) -> bool,
    ) -> Result<(), ServiceError> {
        let now = Utc::now();
        let found = self
            .read()
            .iter()
            .find(|c| c.silence.id == id && c.silence.ends_at > now && visible(&c.scope))
            .map(|c| c.silence.clone());
        let Some(mut silence) = found else {
            return Err(ServiceError::SilenceNotFound { id: id.to_owned() });
        };
        silence.ends_at = now;
        self.store(&silence).await?;
        let compiled = Arc::new(Compiled::new(
            silence,
            &ConditionBounds::from(&self.limits),
        )?);
        let mut all = self.write();
        if let Some(slot) = all.iter_mut().find(|c| c.silence.id == id) {
            *slot = compiled;
        }
        Ok(())
    }

    /// The id of an active silence covering `message`.
    pub fn matching(&self, message: &MessageFacts<'_>) -> Option<String> {
        let now = Utc::now();
        self.read()
            .iter()
            .find(|c| c.silences(message, now))
            .map(|c| c.silence.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    /// Silences with `stored` already in the store, as after a restart.
    async fn loaded_with(stored: Silence) -> (Arc<dyn StateStore>, Silences) {
        let state: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let row = serde_json::to_value(&stored).unwrap();
        state.put(KeyKind::Silence, &stored.id, &row).await.unwrap();
        let silences = Silences::load(Arc::clone(&state), LimitsConfig::default())
            .await
            .unwrap();
        (state, silences)
    }

    fn stored(id: &str, starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Silence {
        Silence {
            id: id.into(),
            tenant: "other".into(),
            namespace: None,
            topic: None,
            condition: None,
            starts_at,
            ends_at,
            comment: "stored".into(),
        }
    }

    fn a_minute() -> SilenceRequest {
        SilenceRequest {
            tenant: "t".into(),
            namespace: None,
            topic: None,
            condition: None,
            ends_at: None,
            duration_ms: Some(60_000),
            comment: "now".into(),
        }
    }

    /// A row stored before silences were bounded, dated at the end of
    /// chrono's range: loading it and creating another must not overflow.
    #[tokio::test]
    async fn a_stored_far_dated_silence_does_not_break_the_next_create() {
        let (_, silences) = loaded_with(stored("far", Utc::now(), DateTime::<Utc>::MAX_UTC)).await;
        silences.create(a_minute()).await.unwrap();
        assert_eq!(silences.list(true, |_| true).len(), 2);
    }

    #[tokio::test]
    async fn silences_ended_long_ago_are_forgotten() {
        let long_ago = Utc::now() - TimeDelta::days(30);
        let (state, silences) =
            loaded_with(stored("old", long_ago, long_ago + TimeDelta::hours(1))).await;
        assert_eq!(silences.list(true, |_| true).len(), 1);

        let new = silences.create(a_minute()).await.unwrap();
        let ids: Vec<_> = silences
            .list(true, |_| true)
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [new.id]);
        assert_eq!(state.get(KeyKind::Silence, "old").await.unwrap(), None);
    }
}
