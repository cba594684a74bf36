//! Live connections and who is subscribed to what, on this node.
//!
//! Two indexes, each behind its own lock and never held together:
//! - `index`: connection → (user, scopes) and user → connections;
//! - `scopes`: scope → its subscribers, one `Mutex` per scope so fanout on one scope
//!   never waits for another.
//!
//! Lock order: a broker's per-scope log lock may be held while a scope's subscriber lock
//! is taken (that is how offsets reach queues in order); nothing here takes a broker lock.
//! All locks are `std::sync::Mutex`: no `.await` happens while one is held.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use axum::extract::ws::Utf8Bytes;
use chorus_proto::CloseCode;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::outbox::{Outbox, PushError};
use crate::writer::Writers;

use crate::broker::Broker;
use crate::event::{Effect, Event, Mark};
use crate::{Metrics, Scope, UserKey};

pub type ConnId = u64;

/// Signals a connection's task to close with a given code. The first code wins.
#[derive(Debug, Default)]
pub struct Kill {
    code: AtomicU16,
    notify: Notify,
    closed: AtomicBool,
}

impl Kill {
    /// Asks the connection to close; `true` if this call was the first.
    pub fn fire(&self, code: CloseCode) -> bool {
        let first = self
            .code
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.notify.notify_one();
        }
        first
    }

    pub fn code(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.code.load(Ordering::Acquire))
    }

    pub async fn fired(&self) {
        self.notify.notified().await;
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// What the registry holds of one connection: how to reach it.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    pub user: UserKey,
    outbox: Arc<Outbox>,
    pub kill: Arc<Kill>,
}

impl ConnHandle {
    /// Queues a reply frame (ack, error, pong) behind the events already queued, so a
    /// `subscribe` ack follows its replay. A full queue evicts like any slow consumer.
    pub fn send(&self, frame: Utf8Bytes) -> bool {
        match self.outbox.push(frame) {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.kill.fire(CloseCode::SlowConsumer);
                false
            }
            Err(PushError::Closed) => false,
        }
    }
}

enum SubState {
    /// Receiving live events. `last` is the highest offset queued, so an event that
    /// arrives twice (replay overlapping live) is queued once; `first` is the lowest
    /// offset queued live, so a later replay can skip what the client already has.
    Live { first: Option<u64>, last: u64 },
    /// A replay is being fetched (or held until the client says where to resume);
    /// live events wait in `pending`, then follow the replay. `seen` is the range of
    /// offsets already queued while the subscription was live before.
    CatchingUp {
        pending: Vec<Arc<Event>>,
        seen: Option<(u64, u64)>,
    },
}

impl SubState {
    const fn live() -> Self {
        Self::Live {
            first: None,
            last: 0,
        }
    }

    /// The catching-up state that replaces `self` for a replay.
    fn catching_up(previous: Option<&Self>) -> Self {
        let seen = match previous {
            Some(Self::Live {
                first: Some(first),
                last,
            }) => Some((*first, *last)),
            Some(Self::CatchingUp { seen, .. }) => *seen,
            _ => None,
        };
        Self::CatchingUp {
            pending: Vec::new(),
            seen,
        }
    }
}

/// How [`Registry::admit`] treats an existing subscription of the connection.
#[derive(Clone, Copy)]
enum Admit {
    /// Start live; keep an existing subscription as it is.
    Live,
    /// Start (or restart) catching up; live events are buffered until the replay.
    /// With `keep_seen`, what this connection already received live is not sent again.
    CatchUp { keep_seen: bool },
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// With the next event published.
    Now,
    /// After this offset, even if the connection already received some of those
    /// events (an explicit `subscribe` with `since`).
    Rewind(u64),
    /// After this offset, minus what the connection already received live on this
    /// subscription (`resume`: continue where the client left off).
    Continue(u64),
}

struct Sub {
    handle: ConnHandle,
    state: SubState,
}

#[derive(Default)]
struct Subscribers {
    subs: HashMap<ConnId, Sub>,
}

struct ConnEntry {
    handle: ConnHandle,
    scopes: HashSet<Scope>,
    /// Counts the revocations (unsubscribe effects) this connection received.
    epoch: u64,
    /// Scopes revoked by an effect, with the epoch of their latest revocation.
    revoked: HashMap<Scope, u64>,
}

#[derive(Default)]
struct Index {
    conns: HashMap<ConnId, ConnEntry>,
    users: HashMap<UserKey, HashSet<ConnId>>,
}

/// Result of [`Registry::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// `Some(true)`: every event after `since` was queued. `Some(false)`: the window has
    /// passed; the client must catch up another way. `None`: no `since` was given.
    pub recovered: Option<bool>,
    /// Number of events replayed.
    pub replayed: usize,
    /// `false` when the subscription was not made: the connection is gone, or the scope
    /// was revoked after the given fence (see [`Registry::fence`]).
    pub admitted: bool,
}

/// A broker that reads scopes on demand (the multi-node one): the registry tells it
/// which scopes this node needs, before a subscription's replay is fetched, so that the
/// replay and the broker's live reading overlap instead of leaving a gap.
pub trait ScopeWatcher: Send + Sync + 'static {
    /// Makes this node receive `scope`'s events. The future completes once the broker's
    /// reading position for the scope is fixed: every event after it will be delivered.
    /// Scopes without subscribers are dropped by the broker itself
    /// (see [`Registry::has_subscribers`]).
    fn attach(self: Arc<Self>, scope: Scope) -> BoxFuture<'static, ()>;
}

/// What [`Registry::push`] did with one event for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    Queued,
    /// Skipped for this user, or the queue was full (the connection is evicted).
    Not,
    /// The connection's queue is closed.
    Closed,
}

/// Delivery counts of one fanout, added to the shared counters once: one atomic add
/// per event instead of one per recipient (the counters' cache line would otherwise
/// bounce between cores for every frame).
#[derive(Default)]
struct Tally {
    delivered: u64,
    skipped: u64,
    dropped: u64,
}

impl Tally {
    fn record(&self, metrics: &Metrics) {
        for (counter, n) in [
            (&metrics.events_delivered, self.delivered),
            (&metrics.events_skipped, self.skipped),
            (&metrics.events_dropped, self.dropped),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

pub struct Registry {
    metrics: Arc<Metrics>,
    watcher: OnceLock<Weak<dyn ScopeWatcher>>,
    queue_capacity: usize,
    next_id: AtomicU64,
    writers: Writers,
    index: Mutex<Index>,
    scopes: RwLock<HashMap<Scope, Arc<Mutex<Subscribers>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain maps behind, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// A registry with one writer task per available core (see [`crate::writer`]),
    /// started on the current runtime.
    pub fn new(metrics: Arc<Metrics>, queue_capacity: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            writers: Writers::start(cores, &metrics),
            metrics,
            watcher: OnceLock::new(),
            queue_capacity: queue_capacity.max(1),
            next_id: AtomicU64::new(1),
            index: Mutex::new(Index::default()),
            scopes: RwLock::new(HashMap::new()),
        }
    }

    /// Installs the broker that reads scopes on demand. Weak: the broker owns the
    /// registry, not the other way round.
    pub fn set_watcher(&self, watcher: Weak<dyn ScopeWatcher>) {
        let _ = self.watcher.set(watcher);
    }

    /// The watcher's attach future for `scope`, when there is a watcher.
    fn attach(&self, scope: &Scope) -> Option<BoxFuture<'static, ()>> {
        let watcher = self.watcher.get()?.upgrade()?;
        Some(watcher.attach(scope.clone()))
    }

    /// Whether any connection on this node is subscribed to `scope`.
    pub fn has_subscribers(&self, scope: &Scope) -> bool {
        self.slot(scope).is_some()
    }

    /// Registers a connection; returns its handle, the receiving end of its queue, and
    /// how many connections its user now has on this node.
    pub fn register(&self, user: UserKey) -> (ConnHandle, Arc<Outbox>, usize) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(self.queue_capacity, self.writers.queue_for(id)));
        let handle = ConnHandle {
            id,
            user,
            outbox: outbox.clone(),
            kill: Arc::new(Kill::default()),
        };
        let mut index = lock(&self.index);
        index.conns.insert(
            handle.id,
            ConnEntry {
                handle: handle.clone(),
                scopes: HashSet::new(),
                epoch: 0,
                revoked: HashMap::new(),
            },
        );
        let user_conns = index.users.entry(user).or_default();
        user_conns.insert(handle.id);
        let count = user_conns.len();
        Metrics::inc(&self.metrics.connections_current);
        Metrics::inc(&self.metrics.connections_total);
        (handle, outbox, count)
    }

    /// Removes a connection and all its subscriptions. Returns how many connections
    /// its user still has on this node.
    pub fn unregister(&self, conn: &ConnHandle) -> usize {
        conn.kill.closed.store(true, Ordering::Release);
        conn.outbox.close();
        let (scopes, remaining) = {
            let mut index = lock(&self.index);
            let Some(entry) = index.conns.remove(&conn.id) else {
                return index.users.get(&conn.user).map_or(0, HashSet::len);
            };
            let remaining = match index.users.get_mut(&conn.user) {
                Some(set) => {
                    set.remove(&conn.id);
                    let n = set.len();
                    if n == 0 {
                        index.users.remove(&conn.user);
                    }
                    n
                }
                None => 0,
            };
            (entry.scopes, remaining)
        };
        for scope in scopes {
            self.remove_sub(&scope, conn.id);
        }
        self.metrics
            .connections_current
            .fetch_sub(1, Ordering::Relaxed);
        remaining
    }

    /// Live connections of a user on this node.
    pub fn connections_of(&self, user: UserKey) -> Vec<ConnHandle> {
        let index = lock(&self.index);
        index
            .users
            .get(&user)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| index.conns.get(id).map(|e| e.handle.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every live connection on this node (for shutdown).
    pub fn all_connections(&self) -> Vec<ConnHandle> {
        lock(&self.index)
            .conns
            .values()
            .map(|e| e.handle.clone())
            .collect()
    }

    pub fn is_subscribed(&self, conn: ConnId, scope: &Scope) -> bool {
        lock(&self.index)
            .conns
            .get(&conn)
            .is_some_and(|e| e.scopes.contains(scope))
    }

    /// Scopes a connection is subscribed to.
    pub fn scopes_of(&self, conn: ConnId) -> Vec<Scope> {
        lock(&self.index)
            .conns
            .get(&conn)
            .map(|e| e.scopes.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Subscriber counts per scope kind.
    pub fn subscriptions_by_kind(&self) -> HashMap<String, u64> {
        let scopes = self.scopes.read().unwrap_or_else(|e| e.into_inner());
        let mut out: HashMap<String, u64> = HashMap::new();
        for (scope, subs) in scopes.iter() {
            *out.entry(scope.kind().to_owned()).or_default() += lock(subs).subs.len() as u64;
        }
        out
    }

    fn slot(&self, scope: &Scope) -> Option<Arc<Mutex<Subscribers>>> {
        self.scopes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .cloned()
    }

    /// Runs `f` on the scope's subscribers (creating the slot if needed) while holding
    /// the scope map, so `remove_sub` cannot drop the slot from the map in between and
    /// leave the new subscriber in an orphaned slot that no delivery reaches.
    fn with_slot(
        &self,
        scope: &Scope,
        f: impl FnOnce(&mut Subscribers),
    ) -> Arc<Mutex<Subscribers>> {
        {
            let scopes = self.scopes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = scopes.get(scope) {
                f(&mut lock(slot));
                return slot.clone();
            }
        }
        let mut scopes = self.scopes.write().unwrap_or_else(|e| e.into_inner());
        let slot = scopes.entry(scope.clone()).or_default();
        f(&mut lock(slot));
        slot.clone()
    }

    /// The connection's revocation epoch. Take it *before* reading whatever authorizes a
    /// subscription and pass it to [`subscribe`](Self::subscribe): if the scope is revoked
    /// after that (a `channel.left` effect, published after its change was committed), the
    /// read may predate the change and the subscription is refused instead of outliving it.
    pub fn fence(&self, conn: ConnId) -> u64 {
        lock(&self.index).conns.get(&conn).map_or(0, |e| e.epoch)
    }

    /// Subscribes a connection to a scope. From [`StartAt::Now`] it receives events
    /// published from now on; from an offset it first receives the retained events after
    /// it, then live ones, with no gap and no duplicate between the two. With a `fence`,
    /// the subscription is refused if the scope was revoked since the fence was taken.
    pub async fn subscribe(
        &self,
        broker: &dyn Broker,
        conn: &ConnHandle,
        scope: &Scope,
        from: StartAt,
        fence: Option<u64>,
    ) -> Subscribed {
        let refused = Subscribed {
            recovered: None,
            replayed: 0,
            admitted: false,
        };
        if conn.kill.is_closed() {
            return refused;
        }
        let (since, keep_seen) = match from {
            StartAt::Now => {
                let admitted = self.admit(conn, scope, fence, Admit::Live).is_some();
                if admitted && let Some(attach) = self.attach(scope) {
                    attach.await;
                }
                return Subscribed {
                    admitted,
                    ..refused
                };
            }
            StartAt::Rewind(since) => (since, false),
            StartAt::Continue(since) => (since, true),
        };
        if self
            .admit(conn, scope, fence, Admit::CatchUp { keep_seen })
            .is_none()
        {
            return refused;
        }
        // Attached before the replay is read: the replay then reaches at least where
        // the broker's live reading starts.
        if let Some(attach) = self.attach(scope) {
            attach.await;
        }
        self.release(broker, conn, scope, since, None).await
    }

    /// Subscribes a connection to `scope` but holds its events (buffered, bounded by the
    /// queue capacity) until [`release`](Self::release) says where to resume from.
    /// `false` when refused (see `fence` in [`subscribe`](Self::subscribe)).
    pub async fn hold(&self, conn: &ConnHandle, scope: &Scope, fence: Option<u64>) -> bool {
        let mode = Admit::CatchUp { keep_seen: true };
        let held = !conn.kill.is_closed() && self.admit(conn, scope, fence, mode).is_some();
        if held && let Some(attach) = self.attach(scope) {
            attach.await;
        }
        held
    }

    /// Ends a catch-up: queues the retained events after `since`, then the events that
    /// were held meanwhile, each once and in order, and turns the subscription live.
    /// When `since` is outside the retention window, the replay starts after `fallback`
    /// instead (the offset the subscription was held from), so the events published
    /// since the hold began are not lost; `recovered` still says `false`.
    pub async fn release(
        &self,
        broker: &dyn Broker,
        conn: &ConnHandle,
        scope: &Scope,
        since: u64,
        fallback: Option<u64>,
    ) -> Subscribed {
        let refused = Subscribed {
            recovered: None,
            replayed: 0,
            admitted: false,
        };
        let (recovered, start, retained) = match broker.history(scope, since).await {
            Ok(h) if h.recovered => (true, Some(since), h.events),
            first => {
                if let Err(err) = first {
                    tracing::warn!(%scope, cause = %err, "history unavailable");
                }
                match fallback.filter(|&f| f != since) {
                    Some(f) => match broker.history(scope, f).await {
                        Ok(h) if h.recovered => (false, Some(f), h.events),
                        _ => (false, None, Vec::new()),
                    },
                    None => (false, None, Vec::new()),
                }
            }
        };
        let Some(slot) = self.slot(scope) else {
            return refused;
        };

        let mut effects = Vec::new();
        let mut tally = Tally::default();
        let replayed = {
            let mut subs = lock(&slot);
            let Some(sub) = subs.subs.get_mut(&conn.id) else {
                // Unsubscribed, revoked or disconnected while the history was fetched.
                return Subscribed {
                    recovered: Some(recovered),
                    ..refused
                };
            };
            let (pending, seen) = match std::mem::replace(&mut sub.state, SubState::live()) {
                SubState::CatchingUp { pending, seen } => (pending, seen),
                live @ SubState::Live { .. } => {
                    sub.state = live; // already released
                    return Subscribed {
                        recovered: Some(recovered),
                        replayed: 0,
                        admitted: true,
                    };
                }
            };
            // Without any usable history, the held events (all newer than the
            // subscription) are still delivered; the client closes the gap over HTTP.
            let mut last = start.unwrap_or(0);
            let mut first = None;
            let mut replayed = 0;
            let from_history = retained.len();
            for (i, event) in retained.iter().chain(pending.iter()).enumerate() {
                if let Some(offset) = event.offset {
                    if offset <= last {
                        continue;
                    }
                    last = offset;
                    // Already queued while this subscription was live before.
                    if seen.is_some_and(|(lo, hi)| (lo..=hi).contains(&offset)) {
                        continue;
                    }
                    first.get_or_insert(offset);
                }
                // Not this user's to receive (agent-aware `skip`): not replayed either.
                if event.mark_for(sub.handle.user) == Mark::Skip {
                    tally.skipped += 1;
                    continue;
                }
                replayed += 1;
                // Effects of held events were applied when they arrived.
                if self.push(&sub.handle, event, &mut tally) == Pushed::Queued
                    && i < from_history
                    && let Some(effect) = &event.effect
                {
                    effects.push(effect.clone());
                }
            }
            if let Some((_, hi)) = seen {
                last = last.max(hi);
            }
            sub.state = SubState::Live { first, last };
            replayed
        };
        tally.record(&self.metrics);
        self.metrics
            .replayed_events
            .fetch_add(replayed as u64, Ordering::Relaxed);
        for effect in effects {
            self.apply_effect(conn.clone(), &effect);
        }
        Subscribed {
            recovered: Some(recovered),
            replayed,
            admitted: true,
        }
    }

    /// Adds `conn` to the subscribers of `scope` and `scope` to the connection's set in
    /// one step under the index lock, so neither a revocation nor the connection's
    /// removal can slip between the check and the insert. `replace` resets an existing
    /// subscription to `state`; otherwise an existing one is kept. Returns the scope's
    /// slot, or `None` when refused (connection gone, or revoked after `fence`).
    fn admit(
        &self,
        conn: &ConnHandle,
        scope: &Scope,
        fence: Option<u64>,
        mode: Admit,
    ) -> Option<Arc<Mutex<Subscribers>>> {
        let mut index = lock(&self.index);
        let entry = index.conns.get_mut(&conn.id)?;
        if fence.is_some_and(|f| entry.revoked.get(scope).is_some_and(|&at| at > f)) {
            return None;
        }
        let slot = self.with_slot(scope, |subs| match (mode, subs.subs.get_mut(&conn.id)) {
            (Admit::Live, Some(_)) => {}
            (Admit::CatchUp { keep_seen }, Some(sub)) => {
                let previous = keep_seen.then_some(&sub.state);
                sub.state = SubState::catching_up(previous);
            }
            (mode, None) => {
                let state = match mode {
                    Admit::Live => SubState::live(),
                    Admit::CatchUp { .. } => SubState::catching_up(None),
                };
                subs.subs.insert(
                    conn.id,
                    Sub {
                        handle: conn.clone(),
                        state,
                    },
                );
            }
        });
        entry.scopes.insert(scope.clone());
        Some(slot)
    }

    /// An unsubscribe effect: removes the subscription and records the revocation for
    /// [`fence`](Self::fence). Both under the index lock, so no fenced `admit` runs between.
    fn revoke(&self, conn: ConnId, scope: &Scope) {
        let mut index = lock(&self.index);
        if let Some(entry) = index.conns.get_mut(&conn) {
            entry.epoch += 1;
            let epoch = entry.epoch;
            entry.revoked.insert(scope.clone(), epoch);
            entry.scopes.remove(scope);
        }
        self.remove_sub(scope, conn);
    }

    /// Unsubscribes a connection from a scope; `false` if it was not subscribed.
    pub fn unsubscribe(&self, conn: ConnId, scope: &Scope) -> bool {
        let was = lock(&self.index)
            .conns
            .get_mut(&conn)
            .is_some_and(|e| e.scopes.remove(scope));
        self.remove_sub(scope, conn);
        was
    }

    fn remove_sub(&self, scope: &Scope, conn: ConnId) {
        let Some(slot) = self.slot(scope) else { return };
        let now_empty = {
            let mut subs = lock(&slot);
            subs.subs.remove(&conn);
            subs.subs.is_empty()
        };
        if now_empty {
            let mut scopes = self.scopes.write().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = scopes.get(scope)
                && lock(slot).subs.is_empty()
            {
                scopes.remove(scope);
            }
        }
    }

    /// Hands one event to every local subscriber of its scope. Called by the broker, in
    /// offset order per scope. Never blocks: a full queue evicts its connection.
    pub fn deliver(&self, event: &Arc<Event>) {
        let Some(slot) = self.slot(&event.scope) else {
            return;
        };
        let mut affected = Vec::new();
        let mut tally = Tally::default();
        let mut closed = Vec::new();
        {
            let mut subs = lock(&slot);
            for sub in subs.subs.values_mut() {
                match &mut sub.state {
                    SubState::Live { first, last } => {
                        if let Some(offset) = event.offset {
                            if offset <= *last {
                                continue;
                            }
                            *last = offset;
                            first.get_or_insert(offset);
                        }
                        match self.push(&sub.handle, event, &mut tally) {
                            Pushed::Queued if event.effect.is_some() => {
                                affected.push(sub.handle.clone());
                            }
                            Pushed::Queued | Pushed::Not => {}
                            // Gone: its subscriptions go with it. Asked only here, off
                            // the path every delivery takes (a load per subscriber on
                            // a line of its own).
                            Pushed::Closed if sub.handle.kill.is_closed() => {
                                closed.push(sub.handle.id);
                            }
                            Pushed::Closed => {}
                        }
                    }
                    SubState::CatchingUp { pending, .. } => {
                        if pending.len() >= self.queue_capacity {
                            self.evict(&sub.handle);
                        } else {
                            pending.push(event.clone());
                            if event.effect.is_some() {
                                affected.push(sub.handle.clone());
                            }
                        }
                    }
                }
            }
            for id in &closed {
                subs.subs.remove(id);
            }
        }
        tally.record(&self.metrics);
        if let Some(effect) = &event.effect {
            for conn in affected {
                self.apply_effect(conn, effect);
            }
        }
    }

    /// Queues an event's frame for one connection.
    fn push(&self, conn: &ConnHandle, event: &Event, tally: &mut Tally) -> Pushed {
        let Some(frame) = event.frame(event.mark_for(conn.user)) else {
            tally.skipped += 1;
            return Pushed::Not;
        };
        match conn.outbox.push(frame) {
            Ok(()) => {
                tally.delivered += 1;
                Pushed::Queued
            }
            Err(PushError::Full) => {
                tally.dropped += 1;
                self.evict(conn);
                Pushed::Not
            }
            Err(PushError::Closed) => {
                tally.dropped += 1;
                Pushed::Closed
            }
        }
    }

    fn evict(&self, conn: &ConnHandle) {
        if conn.kill.fire(chorus_proto::CloseCode::SlowConsumer) {
            Metrics::inc(&self.metrics.slow_consumer_evictions);
            tracing::info!(conn = conn.id, user = conn.user, "slow consumer evicted");
        }
    }

    /// Applies a subscription effect synchronously: new scopes start live, no replay.
    fn apply_effect(&self, conn: ConnHandle, effect: &Effect) {
        for scope in &effect.unsubscribe {
            self.revoke(conn.id, scope);
        }
        for scope in &effect.subscribe {
            if scope.kind() == "user" {
                continue; // user scopes are fixed for the life of a connection
            }
            if self.admit(&conn, scope, None, Admit::Live).is_some()
                && let Some(attach) = self.attach(scope)
            {
                tokio::spawn(attach);
            }
            // Effects of one user arrive in order on their user scope: a join after a
            // revocation ends it.
            if let Some(entry) = lock(&self.index).conns.get_mut(&conn.id) {
                entry.revoked.remove(scope);
            }
        }
    }

    /// Checks that the two indexes agree. For tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let index = lock(&self.index);
        let scopes = self.scopes.read().unwrap_or_else(|e| e.into_inner());
        for (id, entry) in &index.conns {
            if !index
                .users
                .get(&entry.handle.user)
                .is_some_and(|s| s.contains(id))
            {
                return Err(format!("conn {id} missing from its user's set"));
            }
            for scope in &entry.scopes {
                let present = scopes
                    .get(scope)
                    .is_some_and(|s| lock(s).subs.contains_key(id));
                if !present {
                    return Err(format!("conn {id} lists {scope} but is not a subscriber"));
                }
            }
        }
        for (scope, slot) in scopes.iter() {
            for id in lock(slot).subs.keys() {
                let listed = index
                    .conns
                    .get(id)
                    .is_some_and(|e| e.scopes.contains(scope));
                if !listed {
                    return Err(format!("{scope} has subscriber {id} that does not list it"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::broker::{MemoryBroker, Retention};
    use crate::event::{Marks, Publish};

    fn texts(outbox: &Outbox) -> Vec<String> {
        std::iter::from_fn(|| outbox.try_pop())
            .filter_map(|f| f.as_text().map(str::to_owned))
            .collect()
    }

    /// `skip` holds live, on a rewind, and for events held during a resume.
    #[tokio::test]
    async fn skipped_recipients_get_nothing_live_or_replayed() {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(metrics.clone(), 64));
        let broker = MemoryBroker::new(registry.clone(), Retention::default());
        let scope = Scope::parse("channel:1").expect("scope");
        let (reader, reader_box, _) = registry.register(1);
        let (skipped, skipped_box, _) = registry.register(2);
        for conn in [&reader, &skipped] {
            let at = registry
                .subscribe(&broker, conn, &scope, StartAt::Now, None)
                .await;
            assert!(at.admitted);
        }
        let start = broker.head(&scope).await.expect("head");
        let publish = |text: &str| {
            Publish::new(scope.clone(), "message.created", &text).with_marks(Marks {
                default: Mark::Wake,
                users: std::collections::BTreeMap::from([(2, Mark::Skip)]),
            })
        };
        broker.publish(publish("one")).await.expect("published");
        assert_eq!(texts(&reader_box).len(), 1);
        assert!(texts(&skipped_box).is_empty(), "live");

        // A rewind replays nothing to the skipped user, and counts nothing.
        let again = registry
            .subscribe(&broker, &skipped, &scope, StartAt::Rewind(start), None)
            .await;
        assert_eq!((again.recovered, again.replayed), (Some(true), 0));
        assert!(texts(&skipped_box).is_empty(), "rewind");

        // Held while resuming: the skipped event is dropped, a plain one delivered.
        let (late, late_box, _) = registry.register(2);
        assert!(registry.hold(&late, &scope, None).await);
        broker.publish(publish("two")).await.expect("published");
        broker
            .publish(Publish::new(scope.clone(), "member.joined", &"x"))
            .await
            .expect("published");
        let released = registry.release(&broker, &late, &scope, start, None).await;
        assert_eq!(released.replayed, 1);
        let got = texts(&late_box);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("member.joined"));
        assert!(metrics.events_skipped.load(Ordering::Relaxed) >= 4);
        registry.check_invariants().expect("invariants");
    }
}
