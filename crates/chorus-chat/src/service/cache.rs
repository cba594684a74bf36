//! What is read on every send's path, kept briefly: who a token belongs to, the channel
//! with the caller's membership, and the channel's agent members; and whether an open
//! connection's credential still stands (asked before each of its ops). Each is a
//! round trip to a database thread, and on a busy server (or an idle one whose threads
//! sleep) those hand-offs are most of a send's latency.
//!
//! Staleness rule: a change made through this node drops every entry at once (an epoch
//! counter; a read that raced the change is stored under the old epoch and never used).
//! A change made through another node is seen within [`TTL`]: until then a member
//! removed elsewhere may still post here, for at most that long. Negative answers (no
//! such token, no such channel) are never kept. So a token revoked (or a user
//! deactivated) through another node is refused here within [`TTL`] too: the cache
//! keeps the token's row, and a revoked token has none.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chorus_realtime::Clock;
use tokio::time::Instant;

use crate::model::{Channel, ChannelId, UserId};
use crate::store::{AgentMember, TokenOwner};

/// How long an entry is trusted without a local change.
pub const TTL: Duration = Duration::from_secs(1);
/// Entries per map; past it the expired ones go, and if that is not enough the map is
/// emptied (a burst of distinct keys is rare, and refilling costs one read each).
const MAX_ENTRIES: usize = 10_000;

struct Entry<T> {
    value: T,
    epoch: u64,
    at: Instant,
}

struct Map<K, V>(Mutex<HashMap<K, Entry<V>>>);

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<V>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get<Q>(&self, key: &Q, epoch: u64, now: Instant) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.lock();
        let entry = map.get(key)?;
        (entry.epoch == epoch && now.saturating_duration_since(entry.at) < TTL)
            .then(|| entry.value.clone())
    }

    fn put(&self, key: K, value: V, epoch: u64, now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            // What can still be used stays; only a burst of live keys empties it all.
            map.retain(|_, e| e.epoch == epoch && now.saturating_duration_since(e.at) < TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(
            key,
            Entry {
                value,
                epoch,
                at: now,
            },
        );
    }
}

pub(crate) struct ReadCache {
    /// What [`TTL`] is measured on.
    clock: Clock,
    epoch: AtomicU64,
    /// The epoch of `credentials` alone: moved only by a revocation on this node, so
    /// other local changes do not send every open socket's next op to the database.
    credential_epoch: AtomicU64,
    /// By token hash: the owner, the token's id and expiry (checked on every use).
    tokens: Map<String, TokenOwner>,
    channels: Map<(ChannelId, UserId), (Channel, bool)>,
    agents: Map<ChannelId, Vec<AgentMember>>,
    /// Credentials of open connections found standing (`Chat::credential_stands`).
    credentials: Map<(UserId, i64), ()>,
}

impl ReadCache {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            clock,
            epoch: AtomicU64::new(0),
            credential_epoch: AtomicU64::new(0),
            tokens: Map::new(),
            channels: Map::new(),
            agents: Map::new(),
            credentials: Map::new(),
        }
    }

    /// A user, a channel or a membership changed on this node: nothing kept is used again.
    pub(crate) fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The epoch to read under; take it before the database read it will label.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn token(&self, hash: &str) -> Option<TokenOwner> {
        self.tokens.get(hash, self.epoch(), self.clock.instant())
    }

    pub(crate) fn put_token(&self, hash: String, owner: TokenOwner, epoch: u64) {
        self.tokens.put(hash, owner, epoch, self.clock.instant());
    }

    pub(crate) fn channel(&self, ch: ChannelId, user: UserId) -> Option<(Channel, bool)> {
        self.channels
            .get(&(ch, user), self.epoch(), self.clock.instant())
    }

    pub(crate) fn put_channel(
        &self,
        ch: ChannelId,
        user: UserId,
        value: (Channel, bool),
        epoch: u64,
    ) {
        self.channels
            .put((ch, user), value, epoch, self.clock.instant());
    }

    /// A token was revoked or a connect-proxy epoch ended on this node: no credential
    /// kept is used again.
    pub(crate) fn credentials_changed(&self) {
        self.credential_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The epoch to read a credential under (as [`epoch`](Self::epoch)).
    pub(crate) fn credential_epoch(&self) -> u64 {
        self.credential_epoch.load(Ordering::Acquire)
    }

    /// Whether the credential was found standing within the TTL.
    pub(crate) fn credential(&self, user: UserId, credential: i64) -> bool {
        self.credentials
            .get(
                &(user, credential),
                self.credential_epoch(),
                self.clock.instant(),
            )
            .is_some()
    }

    pub(crate) fn put_credential(&self, user: UserId, credential: i64, epoch: u64) {
        self.credentials
            .put((user, credential), (), epoch, self.clock.instant());
    }

    pub(crate) fn agents(&self, ch: ChannelId) -> Option<Vec<AgentMember>> {
        self.agents.get(&ch, self.epoch(), self.clock.instant())
    }

    pub(crate) fn put_agents(&self, ch: ChannelId, agents: Vec<AgentMember>, epoch: u64) {
        self.agents.put(ch, agents, epoch, self.clock.instant());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Timestamp, TokenId, User, UserKind};

    fn owner(id: i64) -> TokenOwner {
        TokenOwner {
            user: user(id),
            token_id: TokenId(id),
            expires_at: None,
        }
    }

    fn user(id: i64) -> User {
        User {
            id: UserId(id),
            name: format!("u{id}"),
            display_name: String::new(),
            kind: UserKind::Human,
            webhook_url: None,
            status_text: String::new(),
            is_admin: false,
            created_at: Timestamp(0),
            deactivated_at: None,
        }
    }

    #[test]
    fn a_local_change_drops_entries_and_a_raced_read_is_never_used() {
        let cache = ReadCache::new(Clock::system());
        let epoch = cache.epoch();
        cache.put_token("h".into(), owner(1), epoch);
        assert_eq!(cache.token("h").map(|o| o.user.id), Some(UserId(1)));
        cache.changed();
        assert!(cache.token("h").is_none(), "dropped by the change");
        // A read that began before a change and is stored after it.
        let before = cache.epoch();
        cache.changed();
        cache.put_token("h".into(), owner(1), before);
        assert!(cache.token("h").is_none(), "stored under the old epoch");
    }

    #[test]
    fn a_credential_is_dropped_by_a_revocation_not_by_other_changes() {
        let cache = ReadCache::new(Clock::system());
        cache.put_credential(UserId(1), 7, cache.credential_epoch());
        cache.changed();
        assert!(
            cache.credential(UserId(1), 7),
            "a membership change keeps it"
        );
        assert!(
            !cache.credential(UserId(1), 8),
            "another credential is not kept"
        );
        let before = cache.credential_epoch();
        cache.credentials_changed();
        assert!(!cache.credential(UserId(1), 7), "dropped by the revocation");
        cache.put_credential(UserId(1), 7, before);
        assert!(
            !cache.credential(UserId(1), 7),
            "stored under the old epoch"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_map_keeps_its_live_entries_and_lets_the_expired_go() {
        let cache = ReadCache::new(Clock::following_tokio(1_000_000));
        let epoch = cache.credential_epoch();
        for id in 0..MAX_ENTRIES as i64 / 2 {
            cache.put_credential(UserId(id), id, epoch);
        }
        tokio::time::advance(TTL).await;
        for id in MAX_ENTRIES as i64 / 2..MAX_ENTRIES as i64 + 1 {
            cache.put_credential(UserId(id), id, epoch);
        }
        let last = MAX_ENTRIES as i64;
        assert!(cache.credential(UserId(last), last), "the newest is kept");
        assert!(
            cache.credential(UserId(last - 1), last - 1),
            "so are the live ones"
        );
        assert!(!cache.credential(UserId(0), 0), "the expired went");
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_after_the_ttl_on_the_clock() {
        let cache = ReadCache::new(Clock::following_tokio(1_000_000));
        cache.put_token("h".into(), owner(1), cache.epoch());
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(cache.token("h").is_some(), "still fresh");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.token("h").is_none(), "expired at the TTL");
    }
}
