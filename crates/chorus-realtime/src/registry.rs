//! Live connections and who is subscribed to what, on this node: plain indexes and
//! each subscription's delivery state. It decides nothing about access and calls
//! nothing outside itself; the orchestrator ([`crate::subscriptions`]) drives it, and
//! a broker hands it events through [`EventSink`].
//!
//! Two indexes, each behind its own lock:
//! - `index`: connection → (user, scopes) and user → connections;
//! - `scopes`: scope → its subscribers, one `Mutex` per scope so fanout on one scope
//!   never waits for another.
//!
//! Lock order: `index` → the scope map → a scope's subscribers. A broker's per-scope log
//! lock may be held while a scope's subscribers are locked (that is how offsets reach
//! queues in order); nothing here takes a broker lock. All locks are
//! `std::sync::Mutex`: no `.await` happens while one is held.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Utf8Bytes;
use chorus_proto::{CloseCode, EventFrame, ServerFrame};
use tokio::sync::Notify;

use crate::broker::EventSink;
use crate::event::{Effect, Event, Mark, Membership};
use crate::outbox::{Outbox, PushError};
use crate::writer::Writers;
use crate::{Clock, Metrics, Roles, Scope, UserKey};

pub type ConnId = u64;

/// [`Control`]'s credential when the connection was opened with none known.
const NO_CREDENTIAL: i64 = i64::MIN;

/// Signals a connection's task: close with a given code (the first code wins), or
/// there is subscription [`Work`] to do. One `Notify` for both keeps an idle
/// connection small; the task looks at [`code`](Self::code) to tell them apart.
#[derive(Debug, Default)]
pub struct Control {
    code: AtomicU16,
    notify: Notify,
    closed: AtomicBool,
    /// Boxed: empty for almost every connection for almost all of its life.
    work: Mutex<Option<Box<Work>>>,
    /// The roles the connection's credential carries (see [`crate::Roles`]).
    roles: Mutex<Roles>,
    /// The application's id of the credential that opened (or refreshed) the
    /// connection, [`NO_CREDENTIAL`] for none: a close effect for that credential
    /// closes it ([`Effect::close`]).
    credential: AtomicI64,
    /// The connection's id for clients (`hello`'s `session_id`; who subscribed in
    /// [`SubscriptionWatch`] reports): random, unique across nodes and restarts.
    session_id: Box<str>,
}

impl Control {
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

    /// The connection's `session_id` (as in its `hello`).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn code(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.code.load(Ordering::Acquire))
    }

    /// Completes when the connection was told to close or has work queued.
    pub async fn signalled(&self) {
        self.notify.notified().await;
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether a close effect for `close` ends this connection: every connection of
    /// the user, or those opened with its credential.
    pub fn closed_by(&self, close: &crate::event::CloseSessions) -> bool {
        match close.credential {
            None => true,
            Some(id) => self.credential.load(Ordering::Acquire) == id,
        }
    }

    /// The application's id of the connection's credential, if it has one.
    pub fn credential(&self) -> Option<i64> {
        Some(self.credential.load(Ordering::Acquire)).filter(|&id| id != NO_CREDENTIAL)
    }

    /// The roles the connection's credential carries now.
    pub fn roles(&self) -> Roles {
        lock(&self.roles).clone()
    }

    /// Replaces the connection's roles (at open, and on `refresh`). Answers whether
    /// some role it had is gone: its subscriptions may need a re-check then.
    pub fn set_roles(&self, roles: Roles) -> bool {
        let mut current = lock(&self.roles);
        let lost = current.as_deref().unwrap_or_default().iter().any(|had| {
            !roles
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|has| has == had)
        });
        *current = roles;
        lost
    }

    /// Takes the subscription work queued for the connection.
    pub fn take_work(&self) -> Option<Box<Work>> {
        lock(&self.work).take()
    }

    fn add_work(&self, add: impl FnOnce(&mut Work)) {
        add(lock(&self.work).get_or_insert_with(Box::default));
        self.notify.notify_one();
    }
}

/// What a connection's task must do for its subscriptions, outside any lock: changes
/// that arrived with events (effects) and need the broker or the application.
#[derive(Debug, Default)]
pub struct Work {
    /// Scopes an effect subscribed: the broker must deliver them to this node.
    pub attach: Vec<Scope>,
    /// Subscriptions held until they are authorized again, with their generation
    /// (see [`Registry::resolve`]) and the reason of the change.
    pub recheck: Vec<(Scope, u32, Arc<str>)>,
    /// Scopes an effect subscribed after an offset (see `Effect::after`), with the
    /// connection's revocation fence at the effect: subscribed and replayed from there.
    pub join: Vec<(Scope, u64, u64)>,
}

/// What the registry holds of one connection: how to reach it.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    pub user: UserKey,
    outbox: Arc<Outbox>,
    pub control: Arc<Control>,
}

impl ConnHandle {
    /// Queues a reply frame (ack, error, pong) behind the events already queued, so a
    /// `subscribe` ack follows its replay. A full queue evicts like any slow consumer.
    pub fn send(&self, frame: Utf8Bytes) -> bool {
        match self.outbox.push_reply(frame) {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.control.fire(CloseCode::SlowConsumer);
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
    /// `claimed`: see the note below this type.
    Live {
        first: Option<u64>,
        last: u64,
        claimed: u64,
    },
    /// A replay is being fetched, the subscription is held until the client says where
    /// to resume, or it is held until it is authorized again: live events wait in
    /// `pending`. `seen` is the range of offsets already queued while it was live;
    /// `floor` the offset a live subscription had reached (queued, or covered by its
    /// replay), or where a join starts it — released without a replay of its own (a
    /// re-check, or a join's replay that failed), it continues after it, so a relay
    /// delivering late what the replay read from the log queues nothing twice.
    CatchingUp {
        pending: Vec<Arc<Event>>,
        seen: Option<(NonZeroU64, u64)>,
        floor: u64,
        claimed: u64,
    },
}

// `claimed` (in both states): the offset up to which the subscription's coverage rests
// on the client's word (0: none) — the highest position of a `resume` or a `since` that
// lay past what the subscription had reached (`SubState::claim`; one within it claims
// nothing new). Up to `last` (or `floor`) the subscription read everything else itself,
// live or in a replay read from the log with the user's membership, or it started there
// at the server's word (a join's offset, the head at connect): the user's leave at such
// an offset, arriving late (a relay delivering what a replay read, or the node's reading
// of the scope behind the user's scope), is old news and changes nothing. A leave at or
// below `claimed` was never read by it: the client may be past it (the user joined
// again before that position) or may claim a position it never reached, so the
// subscription is held and authorized again (`Registry::recheck_one`): allowed, it
// continues with what it held; refused, it ends with `subscription.revoked`.

impl SubState {
    const fn live() -> Self {
        Self::Live {
            first: None,
            last: 0,
            claimed: 0,
        }
    }

    /// The offset up to which the subscription has queued what it had to (0: none yet):
    /// the highest queued live, or where a held one continues.
    fn reached(&self) -> u64 {
        match self {
            Self::Live { last, .. } => *last,
            Self::CatchingUp { floor, .. } => *floor,
        }
    }

    /// The catching-up state that replaces `self` for a replay.
    fn catching_up(previous: Option<&Self>) -> Self {
        let (seen, floor, claimed) = match previous {
            Some(Self::Live {
                first,
                last,
                claimed,
            }) => (
                first.and_then(NonZeroU64::new).map(|first| (first, *last)),
                *last,
                *claimed,
            ),
            Some(Self::CatchingUp {
                seen,
                floor,
                claimed,
                ..
            }) => (*seen, *floor, *claimed),
            None => (None, 0, 0),
        };
        Self::CatchingUp {
            pending: Vec::new(),
            seen,
            floor,
            claimed,
        }
    }

    /// Begins another catch-up of an existing subscription. What it holds stays held: the
    /// new replay overlaps it (`finish` reads each offset once), and a leave among it
    /// must still end the subscription. With `keep_seen`, what it queued stays seen.
    fn restart(&mut self, keep_seen: bool) {
        let held = match self {
            Self::CatchingUp { pending, .. } => std::mem::take(pending),
            Self::Live { .. } => Vec::new(),
        };
        let mut next = Self::catching_up(keep_seen.then_some(&*self));
        if let Self::CatchingUp { pending, .. } = &mut next {
            *pending = held;
        }
        *self = next;
    }

    /// A catch-up that begins after a join's offset (see [`Admit::CatchUp`]).
    fn joined_at(&mut self, after: u64) {
        if let Self::CatchingUp { floor, .. } = self {
            *floor = (*floor).max(after);
        }
    }

    /// The client's word for where a catch-up begins (see `claimed` above): a position
    /// past what the subscription reached.
    fn claim(&mut self, position: u64) {
        if let Self::CatchingUp { floor, claimed, .. } = self
            && position > *floor
        {
            *claimed = (*claimed).max(position);
        }
    }
}

/// A subscription held for a re-check of its authorization.
#[derive(Clone, Copy)]
struct Recheck {
    /// Matches the work item that will settle it; an older answer is ignored.
    generation: u32,
    /// Whether the subscription goes live once allowed: it was live, or its replay
    /// arrived meanwhile. Otherwise its own replay (or a resume) still has to come.
    then_live: bool,
}

/// The generation of a re-check begun under a scope's lock, before the connection's
/// epoch (under the index lock) numbers it: no work item carries it (epochs start at 1).
const UNNUMBERED: u32 = 0;

/// How [`Registry::admit`] treats an existing subscription of the connection.
#[derive(Debug, Clone, Copy)]
pub enum Admit {
    /// Start live; keep an existing subscription as it is.
    Live,
    /// Start (or restart) catching up; live events are buffered until the replay.
    /// With `keep_seen`, what this connection already received live is not sent again.
    /// `joined`: a join effect's offset in the scope (`Effect::after`), where the
    /// subscription begins at the server's word — it continues after it even without
    /// a replay, and a leave at or before it is not this subscription's.
    CatchUp {
        keep_seen: bool,
        joined: Option<u64>,
    },
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
    recheck: Option<Recheck>,
}

impl Sub {
    /// Holds the subscription until a re-check of this generation settles it: live
    /// events are buffered from now on. It goes live again once allowed if it was live
    /// (or its replay already came); otherwise its replay or resume still completes it.
    fn hold_for_recheck(&mut self, generation: u32) {
        let live = matches!(self.state, SubState::Live { .. });
        let then_live = self.recheck.map_or(live, |r| r.then_live);
        if live {
            self.state = SubState::catching_up(Some(&self.state));
        }
        self.recheck = Some(Recheck {
            generation,
            then_live,
        });
    }

    /// Keeps a replay with the live events of a subscription held for a re-check: they
    /// are delivered when it is allowed.
    fn hold_replay(&mut self, replay: Replay) {
        if let Some(recheck) = &mut self.recheck {
            recheck.then_live = true;
        }
        let SubState::CatchingUp { pending, floor, .. } = &mut self.state else {
            return;
        };
        let held = std::mem::take(pending);
        // What is pending now starts at the replay's start.
        if let Some(start) = replay.start {
            *floor = start;
        }
        let start = replay.start.unwrap_or(0);
        let mut merged: Vec<Arc<Event>> = replay
            .events
            .into_iter()
            .filter(|e| e.offset.is_some_and(|o| o > start))
            .collect();
        let newest = merged.last().and_then(|e| e.offset).unwrap_or(start);
        merged.extend(
            held.into_iter()
                .filter(|e| e.offset.is_none_or(|o| o > newest)),
        );
        *pending = merged;
    }

    /// Whether the subscription holds the user's leave at or before where a replay from
    /// `start` (`None`: its floor) begins, and at or before what the client claimed: a
    /// leave it never read, which only the client vouches to be past (see `claimed` at
    /// `SubState`).
    fn holds_claimed_leave(&self, start: Option<u64>) -> bool {
        let SubState::CatchingUp {
            pending,
            floor,
            claimed,
            ..
        } = &self.state
        else {
            return false;
        };
        let upto = start.unwrap_or(*floor).min(*claimed);
        pending
            .iter()
            .any(|e| leave_upto(e, self.handle.user, upto))
    }
}

#[derive(Default)]
struct Subscribers {
    subs: SubMap,
}

/// Subscribers per map before a scope's [`SubMap`] becomes a hash map.
const FEW_SUBS: usize = 8;

/// A scope's subscribers by connection. Most scopes have one or a few (a user's own
/// scope, a DM, a small channel): those are a short list searched in order, because
/// the smallest hash map holds four entries, ~400 bytes for a user's scope — about 5 %
/// of an idle connection's memory. A scope with more becomes a hash map, and stays one.
enum SubMap {
    Few(Vec<(ConnId, Sub)>),
    Many(HashMap<ConnId, Sub>),
}

impl Default for SubMap {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl SubMap {
    fn len(&self) -> usize {
        match self {
            Self::Few(few) => few.len(),
            Self::Many(many) => many.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn contains_key(&self, id: &ConnId) -> bool {
        match self {
            Self::Few(few) => few.iter().any(|(c, _)| c == id),
            Self::Many(many) => many.contains_key(id),
        }
    }

    fn get_mut(&mut self, id: &ConnId) -> Option<&mut Sub> {
        match self {
            Self::Few(few) => few.iter_mut().find(|(c, _)| c == id).map(|(_, s)| s),
            Self::Many(many) => many.get_mut(id),
        }
    }

    fn remove(&mut self, id: &ConnId) -> Option<Sub> {
        match self {
            Self::Few(few) => {
                let at = few.iter().position(|(c, _)| c == id)?;
                let (_, sub) = few.swap_remove(at);
                if few.is_empty() {
                    // An emptied scope's slot may live on briefly: keep nothing.
                    *few = Vec::new();
                }
                Some(sub)
            }
            Self::Many(many) => many.remove(id),
        }
    }

    /// `id`'s subscription, made by `new` if it has none; and whether it had one.
    fn get_or_insert_with(&mut self, id: ConnId, new: impl FnOnce() -> Sub) -> (&mut Sub, bool) {
        if let Self::Few(few) = self
            && !few.iter().any(|(c, _)| *c == id)
            && few.len() >= FEW_SUBS
        {
            let many: HashMap<ConnId, Sub> = std::mem::take(few).into_iter().collect();
            *self = Self::Many(many);
        }
        match self {
            Self::Few(few) => match few.iter().position(|(c, _)| *c == id) {
                Some(at) => (&mut few[at].1, true),
                None => {
                    if few.is_empty() {
                        // Most scopes keep one subscriber per node (a user's own scope):
                        // room for one, not the four a first push would make.
                        few.reserve_exact(1);
                    }
                    few.push((id, new()));
                    let last = few.len() - 1;
                    (&mut few[last].1, false)
                }
            },
            Self::Many(many) => match many.entry(id) {
                std::collections::hash_map::Entry::Occupied(slot) => (slot.into_mut(), true),
                std::collections::hash_map::Entry::Vacant(slot) => (slot.insert(new()), false),
            },
        }
    }

    fn for_each(&self, mut f: impl FnMut(ConnId, &Sub)) {
        match self {
            Self::Few(few) => few.iter().for_each(|(id, sub)| f(*id, sub)),
            Self::Many(many) => many.iter().for_each(|(id, sub)| f(*id, sub)),
        }
    }

    /// Calls `f` on every subscription (a fanout's loop: no iterator adapter between
    /// the two kinds of map on the path of every delivery).
    fn for_each_mut(&mut self, mut f: impl FnMut(&mut Sub)) {
        match self {
            Self::Few(few) => few.iter_mut().for_each(|(_, sub)| f(sub)),
            Self::Many(many) => many.values_mut().for_each(f),
        }
    }
}

/// A revocation of a scope on a connection ([`ConnEntry::revoked`]).
struct Revoked {
    /// The connection's epoch at the revocation.
    at: u64,
    reached: Reached,
}

/// Where an ended subscription stood: the offset it had queued up to
/// ([`SubState::reached`]; 0: none or unknown), and whether it ended there out of the
/// scope (at the user's leave, taken as new). Ordered by offset: a further reach is the
/// later one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Reached {
    offset: u64,
    out: bool,
}

/// Revocations remembered per connection; beyond, the older half is folded into one floor.
const MAX_REVOKED: usize = 256;

struct ConnEntry {
    handle: ConnHandle,
    scopes: HashSet<Scope>,
    /// Counts the revocations and re-checks this connection received.
    epoch: u64,
    /// Scopes revoked by an effect or a leave since their latest join.
    revoked: HashMap<Scope, Revoked>,
    /// Every scope counts as revoked at this epoch (the older half of `revoked` folded
    /// into it when it overflowed).
    revoked_floor: u64,
    /// The epoch of the latest re-check.
    rechecked: u64,
}

impl ConnEntry {
    fn revoked_since(&self, scope: &Scope, fence: u64) -> bool {
        self.revoked_floor > fence || self.revoked.get(scope).is_some_and(|r| r.at > fence)
    }

    /// Records a revocation of `scope` now and what the ended subscription had reached.
    /// An earlier revocation's reach is kept when further (a leave's second revocation,
    /// from the user's scope, finds no subscription left).
    fn record_revoked(&mut self, scope: &Scope, reached: Reached) {
        self.epoch += 1;
        let kept = self
            .revoked
            .get(scope)
            .map(|r| r.reached)
            .unwrap_or_default();
        if self.revoked.len() >= MAX_REVOKED {
            // Forget the older half. A join trailing its leave comes moments after it,
            // so what those subscriptions reached no longer matters; for the fence they
            // all count as revoked at the newest forgotten epoch (a subscription
            // authorized before it is refused, and asked again).
            let mut epochs: Vec<u64> = self.revoked.values().map(|r| r.at).collect();
            epochs.sort_unstable();
            let cut = epochs[epochs.len() / 2];
            self.revoked.retain(|_, r| r.at > cut);
            self.revoked_floor = self.revoked_floor.max(cut);
        }
        let revoked = Revoked {
            at: self.epoch,
            reached: reached.max(kept),
        };
        self.revoked.insert(scope.clone(), revoked);
        self.scopes.remove(scope);
    }
}

#[derive(Default)]
struct Index {
    conns: HashMap<ConnId, ConnEntry>,
    users: HashMap<UserKey, HashSet<ConnId>>,
}

/// Why [`Registry::admit`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The connection is gone.
    Gone,
    /// The scope was revoked after the fence: the authorization may predate it.
    Revoked,
    /// The connection holds its most subscriptions.
    Limit,
}

/// The events a subscription catches up with, as the orchestrator fetched them.
#[derive(Debug, Default)]
pub struct Replay {
    /// Queue only events after this offset (`None`: everything held).
    pub start: Option<u64>,
    pub events: Vec<Arc<Event>>,
    /// `start` is the client's word (a `resume` position, a `since`), not an offset the
    /// server chose (a join's, the head at connect): see `claimed` at `SubState`.
    pub claimed: bool,
}

impl Replay {
    /// The client's position, when the replay starts there.
    fn claimed_start(&self) -> Option<u64> {
        self.start.filter(|_| self.claimed)
    }
}

/// Whether `event` is `user`'s leave of its scope at or before `upto`.
fn leave_upto(event: &Event, user: UserKey, upto: u64) -> bool {
    event.offset.is_some_and(|o| o <= upto)
        && event
            .effect
            .as_ref()
            .is_some_and(|e| e.drop_user == Some(user))
}

/// What [`Registry::finish`] did.
#[derive(Debug, Default)]
struct Finished {
    /// Events queued.
    replayed: usize,
    /// The subscriber is out of the scope after them: the subscription must end,
    /// having reached this (see [`Registry::revoke`]).
    left: Option<Reached>,
}

/// Result of [`Registry::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Number of events queued.
    pub replayed: usize,
    /// `false` when the subscription was gone (unsubscribed, revoked, disconnected)
    /// before the release. One the release itself ends at the user's leave in its run
    /// answers `true`: what came before the leave was queued.
    pub admitted: bool,
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

/// Told when a connection starts or stops being subscribed to a scope it watches (the
/// application's presence and join/leave of topics). Called under the registry's locks,
/// in the order the changes happen on this node: it must not block, nor call the
/// registry (hand the change to a task).
pub trait SubscriptionWatch: Send + Sync + 'static {
    /// Whether changes of `scope` are wanted (asked on every subscription's start and
    /// end: keep it cheap).
    fn watches(&self, scope: &Scope) -> bool;
    /// `conn` of `user` (its `session_id`: `session`) started (`joined`) or stopped
    /// being subscribed to `scope`: unsubscribed, revoked or disconnected.
    fn changed(&self, scope: &Scope, conn: ConnId, user: UserKey, session: &str, joined: bool);
}

pub struct Registry {
    metrics: Arc<Metrics>,
    queue_capacity: usize,
    next_id: AtomicU64,
    writers: Writers,
    index: Mutex<Index>,
    scopes: RwLock<HashMap<Scope, Arc<Mutex<Subscribers>>>>,
    /// See [`SubscriptionWatch`].
    watch: RwLock<Option<Arc<dyn SubscriptionWatch>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain maps behind, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The frame that ends a subscription whose authorization no longer holds.
fn revoked_frame(scope: &Scope, reason: &str) -> Utf8Bytes {
    let frame = ServerFrame::Event(EventFrame {
        scope: scope.as_str().to_owned(),
        offset: None,
        kind: "subscription.revoked".to_owned(),
        data: serde_json::json!({"scope": scope.as_str(), "reason": reason}),
        wake: None,
    });
    Utf8Bytes::from(frame.to_json())
}

impl Registry {
    /// A registry with one writer task per available core (see [`crate::writer`]),
    /// started on the current runtime; the writers pace themselves by `clock`.
    pub fn new(metrics: Arc<Metrics>, queue_capacity: usize, clock: Clock) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            writers: Writers::start(cores, &metrics, clock),
            metrics,
            queue_capacity: queue_capacity.max(1),
            next_id: AtomicU64::new(1),
            index: Mutex::new(Index::default()),
            scopes: RwLock::new(HashMap::new()),
            watch: RwLock::new(None),
        }
    }

    /// Installs (`None`: removes) the [`SubscriptionWatch`].
    pub fn set_watch(&self, watch: Option<Arc<dyn SubscriptionWatch>>) {
        *self.watch.write().unwrap_or_else(|e| e.into_inner()) = watch;
    }

    /// Tells the watch, if it wants `scope`, that `conn` joined or left it.
    fn notify(&self, scope: &Scope, conn: &ConnHandle, joined: bool) {
        let watch = self.watch.read().unwrap_or_else(|e| e.into_inner());
        if let Some(watch) = watch.as_ref()
            && watch.watches(scope)
        {
            watch.changed(scope, conn.id, conn.user, conn.control.session_id(), joined);
        }
    }

    /// The connections subscribed to `scope` on this node, with their users and
    /// `session_id`s.
    pub fn subscribers(&self, scope: &Scope) -> Vec<(ConnId, UserKey, Box<str>)> {
        let Some(slot) = self.slot(scope) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        lock(&slot).subs.for_each(|id, s| {
            out.push((id, s.handle.user, Box::from(s.handle.control.session_id())));
        });
        out
    }

    /// How many connections on this node are subscribed to `scope`.
    pub fn subscriber_count(&self, scope: &Scope) -> usize {
        self.slot(scope).map_or(0, |slot| lock(&slot).subs.len())
    }

    /// Whether any connection on this node is subscribed to `scope`.
    pub fn has_subscribers(&self, scope: &Scope) -> bool {
        self.slot(scope).is_some()
    }

    /// Registers a connection; returns its handle, the receiving end of its queue, and
    /// how many connections its user now has on this node.
    pub fn register(&self, user: UserKey) -> (ConnHandle, Arc<Outbox>, usize) {
        self.register_with(user, false)
    }

    /// As [`register`](Self::register), for a connection that negotiated
    /// `permessage-deflate` when `deflate` is set.
    pub fn register_with(&self, user: UserKey, deflate: bool) -> (ConnHandle, Arc<Outbox>, usize) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(
            Outbox::new(self.queue_capacity, self.writers.queue_for(id)).with_deflate(deflate),
        );
        let handle = ConnHandle {
            id,
            user,
            outbox: outbox.clone(),
            control: Arc::new(Control {
                session_id: format!("{:032x}", rand::random::<u128>()).into_boxed_str(),
                credential: AtomicI64::new(NO_CREDENTIAL),
                ..Control::default()
            }),
        };
        let mut index = lock(&self.index);
        index.conns.insert(
            handle.id,
            ConnEntry {
                handle: handle.clone(),
                scopes: HashSet::new(),
                epoch: 0,
                revoked: HashMap::new(),
                revoked_floor: 0,
                rechecked: 0,
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
        conn.control.closed.store(true, Ordering::Release);
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

    /// Records the credential a connection was opened (or refreshed) with.
    pub fn set_credential(&self, conn: ConnId, credential: Option<i64>) {
        if let Some(entry) = lock(&self.index).conns.get(&conn) {
            entry
                .handle
                .control
                .credential
                .store(credential.unwrap_or(NO_CREDENTIAL), Ordering::Release);
        }
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

    /// Scopes with at least one subscriber on this node.
    pub fn scope_count(&self) -> usize {
        self.scopes.read().unwrap_or_else(|e| e.into_inner()).len()
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
    fn with_slot<R>(&self, scope: &Scope, f: impl FnOnce(&mut Subscribers) -> R) -> R {
        {
            let scopes = self.scopes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = scopes.get(scope) {
                return f(&mut lock(slot));
            }
        }
        let mut scopes = self.scopes.write().unwrap_or_else(|e| e.into_inner());
        let slot = scopes.entry(scope.clone()).or_default();
        f(&mut lock(slot))
    }

    /// The connection's revocation epoch. Take it *before* reading whatever authorizes a
    /// subscription and pass it to [`admit`](Self::admit): if the scope is revoked after
    /// that (a `channel.left` effect, published after its change was committed), the
    /// read may predate the change and the subscription is refused instead of outliving
    /// it; after a re-check, the subscription is admitted held and checked again.
    pub fn fence(&self, conn: ConnId) -> u64 {
        lock(&self.index).conns.get(&conn).map_or(0, |e| e.epoch)
    }

    /// Adds `conn` to the subscribers of `scope` and `scope` to the connection's set in
    /// one step under the index lock, so neither a revocation nor the connection's
    /// removal can slip between the check and the insert. `Live` keeps an existing
    /// subscription as it is; `CatchUp` resets it to buffer live events until
    /// [`release`](Self::release). With a `fence` (see [`fence`](Self::fence)): refused
    /// when the scope was revoked since, held for a re-check when the connection was
    /// re-checked since. With a `limit`, a new subscription beyond that many is refused.
    pub fn admit(
        &self,
        conn: &ConnHandle,
        scope: &Scope,
        fence: Option<u64>,
        mode: Admit,
        limit: Option<usize>,
    ) -> Result<(), Refused> {
        if conn.control.is_closed() {
            return Err(Refused::Gone);
        }
        let mut index = lock(&self.index);
        let entry = index.conns.get_mut(&conn.id).ok_or(Refused::Gone)?;
        if fence.is_some_and(|f| entry.revoked_since(scope, f)) {
            return Err(Refused::Revoked);
        }
        if limit.is_some_and(|n| entry.scopes.len() >= n) && !entry.scopes.contains(scope) {
            return Err(Refused::Limit);
        }
        // Authorized before a re-check that this subscription did not take part in:
        // it is held and checked again like the others.
        let recheck = (fence.is_some_and(|f| entry.rechecked > f) && scope.kind() != "user")
            .then_some(entry.epoch as u32);
        let mut joined = false;
        self.with_slot(scope, |subs| {
            let (sub, existed) = subs.subs.get_or_insert_with(conn.id, || Sub {
                handle: conn.clone(),
                state: match mode {
                    Admit::Live => SubState::live(),
                    Admit::CatchUp { .. } => SubState::catching_up(None),
                },
                recheck: None,
            });
            if let Admit::CatchUp { keep_seen, joined } = mode {
                if existed {
                    sub.state.restart(keep_seen);
                    if let Some(r) = &mut sub.recheck {
                        r.then_live = false; // the replay is yet to come
                    }
                }
                if let Some(after) = joined {
                    sub.state.joined_at(after);
                }
            }
            joined = !existed;
            if let Some(generation) = recheck {
                sub.hold_for_recheck(generation);
            }
        });
        entry.scopes.insert(scope.clone());
        if let Some(generation) = recheck {
            let reason: Arc<str> = Arc::from("access_changed");
            entry
                .handle
                .control
                .add_work(|w| w.recheck.push((scope.clone(), generation, reason)));
        }
        if joined {
            self.notify(scope, conn, true);
        }
        Ok(())
    }

    /// A subscription started live ([`Admit::Live`]) that has queued nothing yet begins
    /// after `head`, the scope's head read once it was in place (the offset its
    /// `subscribe` answers): an event at or before it, arriving late, is older than the
    /// subscription — not queued, and the user's leave there changes nothing.
    pub fn begin_after(&self, conn: &ConnHandle, scope: &Scope, head: u64) {
        let Some(slot) = self.slot(scope) else {
            return;
        };
        if let Some(Sub {
            state: SubState::Live {
                first: None, last, ..
            },
            ..
        }) = lock(&slot).subs.get_mut(&conn.id)
        {
            *last = (*last).max(head);
        }
    }

    /// Ends a catch-up: queues `replay`'s events after its start, then the events that
    /// were held meanwhile, each once and in order, and turns the subscription live.
    /// A subscription held for a re-check keeps everything until it is settled.
    pub fn release(&self, conn: &ConnHandle, scope: &Scope, replay: Replay) -> Released {
        let gone = Released {
            replayed: 0,
            admitted: false,
        };
        let Some(slot) = self.slot(scope) else {
            return gone;
        };
        let mut effects = Vec::new();
        let mut tally = Tally::default();
        let replayed = {
            let mut subs = lock(&slot);
            let Some(sub) = subs.subs.get_mut(&conn.id) else {
                // Unsubscribed, revoked or disconnected while the history was fetched.
                return gone;
            };
            if let Some(position) = replay.claimed_start() {
                sub.state.claim(position);
            }
            // The user's leave, held, before a position only the client vouches for: the
            // client may be past it (they joined again) or not; it is authorized again
            // with everything held (see `claimed` at `SubState`).
            let claimed_leave = sub.holds_claimed_leave(replay.start);
            if claimed_leave {
                sub.hold_for_recheck(UNNUMBERED);
            }
            if sub.recheck.is_some() {
                // Held for a re-check: the replay waits with the live events.
                sub.hold_replay(replay);
                drop(subs);
                if claimed_leave {
                    self.recheck_one(conn, scope, "channel_left");
                }
                return Released {
                    replayed: 0,
                    admitted: true,
                };
            }
            self.finish(sub, &replay, &mut tally, &mut effects)
        };
        tally.record(&self.metrics);
        self.metrics
            .replayed_events
            .fetch_add(replayed.replayed as u64, Ordering::Relaxed);
        for effect in effects {
            self.apply_effect(conn.clone(), &effect, true);
        }
        if let Some(reached) = replayed.left {
            // As a live leave: the events up to it were delivered; the subscription
            // ends without a frame (the user's own scope says they left).
            self.revoke(conn.id, scope, reached);
        }
        Released {
            replayed: replayed.replayed,
            admitted: true,
        }
    }

    /// Queues `replay` then the held events of a catching-up subscription and turns it
    /// live. Returns the number of events queued; effects of replayed events are
    /// collected into `effects` (those of held events were applied when they arrived).
    fn finish(
        &self,
        sub: &mut Sub,
        replay: &Replay,
        tally: &mut Tally,
        effects: &mut Vec<Effect>,
    ) -> Finished {
        let (pending, seen, floor, claimed) =
            match std::mem::replace(&mut sub.state, SubState::live()) {
                SubState::CatchingUp {
                    pending,
                    seen,
                    floor,
                    claimed,
                } => (pending, seen.map(|(lo, hi)| (lo.get(), hi)), floor, claimed),
                live @ SubState::Live { .. } => {
                    sub.state = live; // already released
                    return Finished::default();
                }
            };
        // Without any usable history, the held events (all newer than the
        // subscription) are still delivered; the client closes the gap over HTTP.
        let mut last = replay.start.unwrap_or(floor);
        let mut first = None;
        let mut replayed = 0;
        let from_history = replay.events.len();
        // The run it catches up with: each offset once, in order (the replay and the
        // events held meanwhile overlap; a relay can deliver late what the replay read).
        let mut high = last;
        let run: Vec<(usize, &Arc<Event>)> = replay
            .events
            .iter()
            .chain(pending.iter())
            .enumerate()
            .filter(|(_, event)| match event.offset {
                Some(offset) if offset <= high => false,
                Some(offset) => {
                    high = offset;
                    true
                }
                None => true,
            })
            .collect();
        // Not theirs: what the scope published while the subscriber was out of it (a
        // resume from before a leave, a position kept across a leave and a re-join).
        let mut membership = Membership::before(
            sub.handle.user,
            run.iter().map(|(_, e)| e.effect.as_deref()),
        );
        for &(i, event) in &run {
            let theirs = membership.admits(event.effect.as_deref());
            if let Some(offset) = event.offset {
                last = offset;
                // Already queued while this subscription was live before.
                if seen.is_some_and(|(lo, hi)| (lo..=hi).contains(&offset)) {
                    continue;
                }
                first.get_or_insert(offset);
            }
            if !theirs {
                tally.skipped += 1;
                continue;
            }
            // Not this user's to receive (agent-aware `skip`): not replayed either.
            if event.mark_for(sub.handle.user) == Mark::Skip {
                tally.skipped += 1;
                continue;
            }
            replayed += 1;
            if self.push(&sub.handle, event, tally) == Pushed::Queued
                && let Some(effect) = &event.effect
            {
                if i < from_history {
                    effects.push(effect.as_ref().clone());
                } else if effect.close.is_some() {
                    // A held event's effect was applied when it arrived, but for the
                    // seal, which waits for the event to be queued: now.
                    effects.push(Effect {
                        close: effect.close.clone(),
                        ..Effect::default()
                    });
                }
                // A close of this connection is its last frame: nothing of the run
                // after it is queued.
                if effect
                    .close
                    .as_ref()
                    .is_some_and(|close| sub.handle.control.closed_by(close))
                {
                    break;
                }
            }
        }
        // What was queued before stays seen, so a later catch-up does not queue it again
        // — when it adjoins what this one covered (from a position past it, the offsets
        // between were never queued here: one range cannot say so, and a duplicate is
        // better than a loss).
        if let Some((lo, hi)) = seen {
            last = last.max(hi);
            if replay.start.is_none_or(|start| start <= hi) {
                first = Some(first.map_or(lo, |f| f.min(lo)));
            }
        }
        let live = SubState::Live {
            first,
            last,
            claimed,
        };
        if !membership.is_out() {
            sub.state = live;
            return Finished {
                replayed,
                left: None,
            };
        }
        // Ended out of the scope (they left): the subscription ends. Until its caller
        // removes it, outside the scope's lock, it holds what arrives (it is not live:
        // nothing after the leave is queued).
        sub.state = SubState::catching_up(Some(&live));
        Finished {
            replayed,
            left: Some(Reached {
                offset: last,
                out: true,
            }),
        }
    }

    /// Settles a re-check of `scope` on `conn` (see [`Work::recheck`]): allowed, the
    /// subscription continues with what it held; refused, it ends and the connection
    /// gets `subscription.revoked`. An answer for an older generation is ignored (a
    /// newer re-check of the same subscription is on its way).
    pub fn resolve(
        &self,
        conn: &ConnHandle,
        scope: &Scope,
        generation: u32,
        allowed: bool,
        reason: &str,
    ) {
        let mut tally = Tally::default();
        let mut effects = Vec::new();
        let mut left = None;
        {
            let mut index = lock(&self.index);
            let Some(entry) = index.conns.get_mut(&conn.id) else {
                return;
            };
            let Some(slot) = self.slot(scope) else { return };
            let mut subs = lock(&slot);
            let Some(sub) = subs.subs.get_mut(&conn.id) else {
                return;
            };
            let Some(recheck) = sub.recheck.filter(|r| r.generation == generation) else {
                return;
            };
            if allowed {
                sub.recheck = None;
                if recheck.then_live {
                    left = self
                        .finish(sub, &Replay::default(), &mut tally, &mut effects)
                        .left;
                }
            } else {
                // Under the index lock, like a revocation: no fenced admit slips between.
                let mut reached = 0;
                if let Some(sub) = subs.subs.remove(&conn.id) {
                    reached = sub.state.reached();
                    self.notify(scope, &sub.handle, false);
                }
                entry.record_revoked(
                    scope,
                    Reached {
                        offset: reached,
                        out: false,
                    },
                );
            }
        }
        tally.record(&self.metrics);
        for effect in effects {
            self.apply_effect(conn.clone(), &effect, true);
        }
        if let Some(reached) = left {
            self.revoke(conn.id, scope, reached);
        }
        if !allowed {
            self.remove_sub(scope, conn.id);
            Metrics::inc(&self.metrics.subscriptions_revoked);
            conn.send(revoked_frame(scope, reason));
        }
    }

    /// An unsubscribe effect or a leave: removes the subscription and records the
    /// revocation for [`fence`](Self::fence). Both under the index lock, so no fenced
    /// `admit` runs between. `known`: what the caller knows the subscription reached —
    /// with `out`, it ended at the user's leave, out of the scope (kept even when
    /// another path removed the subscription first).
    fn revoke(&self, conn: ConnId, scope: &Scope, known: Reached) {
        let mut index = lock(&self.index);
        if let Some(entry) = index.conns.get_mut(&conn) {
            entry.record_revoked(scope, Reached::default());
        }
        drop(index);
        let reached = Reached {
            offset: self.remove_sub(scope, conn).max(known.offset),
            out: known.out,
        };
        // What the subscription queued before it ended, for a join that follows (the
        // user's effects can trail the scope's own events: a leave and a join again
        // already delivered on it). Lost if a join took the entry meanwhile: it then
        // starts at its own offset, as without this.
        if reached.offset > 0
            && let Some(entry) = lock(&self.index).conns.get_mut(&conn)
            && let Some(revoked) = entry.revoked.get_mut(scope)
        {
            revoked.reached = revoked.reached.max(reached);
        }
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

    /// Removes a subscription; returns the offset it had reached (0 if none).
    fn remove_sub(&self, scope: &Scope, conn: ConnId) -> u64 {
        let Some(slot) = self.slot(scope) else {
            return 0;
        };
        let mut reached = 0;
        let now_empty = {
            let mut subs = lock(&slot);
            if let Some(sub) = subs.subs.remove(&conn) {
                reached = sub.state.reached();
                self.notify(scope, &sub.handle, false);
            }
            subs.subs.is_empty()
        };
        if now_empty {
            let mut scopes = self.scopes.write().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = scopes.get(scope)
                && lock(slot).subs.is_empty()
            {
                scopes.remove(scope);
                // A map keeps its capacity: after a burst of short-lived scopes, give
                // the memory back (amortized: only when three quarters are unused).
                if scopes.capacity() > 1_024 && scopes.len() * 4 < scopes.capacity() {
                    let keep = scopes.len() * 2;
                    scopes.shrink_to(keep);
                }
            }
        }
        reached
    }

    /// Queues an event's frame for one connection.
    fn push(&self, conn: &ConnHandle, event: &Event, tally: &mut Tally) -> Pushed {
        let mark = event.mark_for(conn.user);
        let frame = if conn.outbox.deflates() {
            // Compressed once per event (and mark) for every compressing connection.
            event.frame_deflated(mark)
        } else {
            event.outgoing(mark)
        };
        let Some(frame) = frame else {
            tally.skipped += 1;
            return Pushed::Not;
        };
        match conn.outbox.push_outgoing(frame) {
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
        if conn.control.fire(chorus_proto::CloseCode::SlowConsumer) {
            Metrics::inc(&self.metrics.slow_consumer_evictions);
            tracing::info!(conn = conn.id, user = conn.user, "slow consumer evicted");
        }
    }

    /// Applies a subscription effect synchronously: a close ends the connection (3502),
    /// unsubscribed scopes end, new scopes start live (the connection's task then
    /// attaches them at the broker), and a re-check holds every other subscription until
    /// the connection's task has authorized it again. `queued`: the event that carries
    /// it is in the connection's queue (not waiting in a catching-up subscription's
    /// pending events, whose release applies it again once it is queued).
    fn apply_effect(&self, conn: ConnHandle, effect: &Effect, queued: bool) {
        if let Some(close) = &effect.close
            && conn.control.closed_by(close)
        {
            // Nothing after the event that closes it reaches the connection: not what
            // other scopes publish while its task finishes an operation and drains its
            // queue, nor a replay or an ack it was still making. Sealed once the event
            // is queued, so that it still goes out.
            if queued {
                conn.outbox.seal();
            }
            conn.control.fire(CloseCode::Unauthorized);
            return;
        }
        for scope in &effect.unsubscribe {
            self.revoke(conn.id, scope, Reached::default());
        }
        let mut attach = Vec::new();
        let mut join = Vec::new();
        for scope in &effect.subscribe {
            if scope.kind() == "user" {
                continue; // user scopes are fixed for the life of a connection
            }
            match effect.after {
                // Subscribed by the connection's task, from the offset on (`settle`);
                // a revocation of the scope after this effect refuses it.
                // If a subscription of the scope ended since (a leave this effect
                // follows), it continues after what that one queued: the user's
                // effects can trail the scope's events, so it may have delivered this
                // join and what followed already.
                // One that ended out of the scope past this join (it delivered the join,
                // and the leave after it) leaves nothing to start: the user scope brings
                // that leave next.
                // The record stays then: for the fence, and for the joins the user scope
                // brings after that leave's.
                Some(after) => {
                    if let Some(entry) = lock(&self.index).conns.get_mut(&conn.id) {
                        let reached = entry
                            .revoked
                            .get(scope)
                            .map(|r| r.reached)
                            .unwrap_or_default();
                        if !(reached.out && reached.offset > after) {
                            entry.revoked.remove(scope);
                            let start = after.max(reached.offset);
                            join.push((scope.clone(), start, entry.epoch));
                        }
                    }
                    continue;
                }
                None => {
                    if self.admit(&conn, scope, None, Admit::Live, None).is_ok() {
                        attach.push(scope.clone());
                    }
                }
            }
            // Effects of one user arrive in order on their user scope: a join after a
            // revocation ends it.
            if let Some(entry) = lock(&self.index).conns.get_mut(&conn.id) {
                entry.revoked.remove(scope);
            }
        }
        let recheck = effect
            .recheck
            .as_deref()
            .map(|reason| self.hold_for_recheck(&conn, reason, &effect.recheck_kinds))
            .unwrap_or_default();
        if !attach.is_empty() || !recheck.is_empty() || !join.is_empty() {
            conn.control.add_work(|work| {
                work.attach.extend(attach);
                work.recheck.extend(recheck);
                work.join.extend(join);
            });
        }
    }

    /// Authorizes again, on every connection of this node, the subscriptions of the
    /// given kinds (all when empty) but user scopes: each is held, and its connection's
    /// task re-asks the application ([`crate::SessionHooks::authorize_subscribe`]); the
    /// ones refused end with `subscription.revoked {scope, reason}`, the others continue
    /// with what they held. For a change of the rules themselves (a configuration
    /// reload), which no user's event announces. Answers how many subscriptions it held.
    pub fn recheck_all(&self, reason: &str, kinds: &[String]) -> usize {
        let mut held = 0;
        for conn in self.all_connections() {
            held += self.recheck_conn(&conn, reason, kinds);
        }
        held
    }

    /// As [`Registry::recheck_all`], for one connection (e.g. its credential lost a
    /// role). Answers how many subscriptions it held.
    pub fn recheck_conn(&self, conn: &ConnHandle, reason: &str, kinds: &[String]) -> usize {
        let recheck = self.hold_for_recheck(conn, reason, kinds);
        let held = recheck.len();
        if held > 0 {
            conn.control.add_work(|work| work.recheck.extend(recheck));
        }
        held
    }

    /// Authorizes again one subscription already held (a late leave that only the
    /// client's position stands before, see `claimed` at `SubState`): numbers its hold
    /// and queues the re-check for the connection's task.
    fn recheck_one(&self, conn: &ConnHandle, scope: &Scope, reason: &str) {
        let mut index = lock(&self.index);
        let Some(entry) = index.conns.get_mut(&conn.id) else {
            return;
        };
        entry.epoch += 1;
        let generation = entry.epoch as u32;
        let Some(slot) = self.slot(scope) else {
            return;
        };
        let held = lock(&slot).subs.get_mut(&conn.id).is_some_and(|sub| {
            let held = sub.recheck.is_some();
            if held {
                sub.hold_for_recheck(generation);
            }
            held
        });
        if held {
            let reason: Arc<str> = Arc::from(reason);
            entry
                .handle
                .control
                .add_work(|w| w.recheck.push((scope.clone(), generation, reason)));
            Metrics::inc(&self.metrics.rechecks);
        }
    }

    /// Holds every subscription of `conn` of the given kinds (all when empty) but its
    /// user scope for a re-check; returns the work items that will settle them.
    fn hold_for_recheck(
        &self,
        conn: &ConnHandle,
        reason: &str,
        kinds: &[String],
    ) -> Vec<(Scope, u32, Arc<str>)> {
        let reason: Arc<str> = Arc::from(reason);
        let mut index = lock(&self.index);
        let Some(entry) = index.conns.get_mut(&conn.id) else {
            return Vec::new();
        };
        entry.epoch += 1;
        entry.rechecked = entry.epoch;
        let generation = entry.epoch as u32;
        let mut held = Vec::new();
        let concerned = |s: &&Scope| {
            s.kind() != "user" && (kinds.is_empty() || kinds.iter().any(|k| k == s.kind()))
        };
        for scope in entry.scopes.iter().filter(concerned) {
            let Some(slot) = self.slot(scope) else {
                continue;
            };
            let mut subs = lock(&slot);
            let Some(sub) = subs.subs.get_mut(&conn.id) else {
                continue;
            };
            sub.hold_for_recheck(generation);
            held.push((scope.clone(), generation, reason.clone()));
        }
        Metrics::inc(&self.metrics.rechecks);
        held
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
        for (user, conns) in &index.users {
            if conns.is_empty() {
                return Err(format!("user {user} has an empty connection set"));
            }
        }
        for (scope, slot) in scopes.iter() {
            let subs = lock(slot);
            if subs.subs.is_empty() {
                return Err(format!("{scope} has an empty subscriber slot"));
            }
            let mut problem = None;
            subs.subs.for_each(|id, sub| {
                let listed = index
                    .conns
                    .get(&id)
                    .is_some_and(|e| e.scopes.contains(scope));
                if !listed {
                    problem.get_or_insert(format!(
                        "{scope} has subscriber {id} that does not list it"
                    ));
                }
                if sub.recheck.is_some() && matches!(sub.state, SubState::Live { .. }) {
                    problem.get_or_insert(format!(
                        "{scope}: conn {id} is live while held for a re-check"
                    ));
                }
                if sub.recheck.is_some() && scope.kind() == "user" {
                    problem.get_or_insert(format!("{scope}: a user scope is held for a re-check"));
                }
            });
            if let Some(problem) = problem {
                return Err(problem);
            }
        }
        Ok(())
    }
}

impl EventSink for Registry {
    /// Hands one event to every local subscriber of its scope. Called by the broker, in
    /// offset order per scope. Never blocks: a full queue evicts its connection.
    fn deliver(&self, event: &Arc<Event>) {
        let Some(slot) = self.slot(&event.scope) else {
            return;
        };
        let mut affected = Vec::new();
        let mut tally = Tally::default();
        let mut closed = Vec::new();
        // The subscriber's leave (`Effect::drop_user`) ends their subscription to the
        // scope at this event's place in its order: nothing later reaches them. Live and
        // new to it, it ends out of the scope (`Reached::out`). Live past it, the
        // subscription read it already (and maybe their join again) or began after it —
        // unless only the client vouches for that (`claimed` at `SubState`): then it is
        // held and authorized again. Held, the leave waits with the live events and the
        // release ends it in its place, after what came before it (`finish`).
        let leaving = event.effect.as_ref().and_then(|e| e.drop_user);
        let mut left: Vec<(ConnId, Reached)> = Vec::new();
        let mut recheck: Vec<ConnHandle> = Vec::new();
        {
            let mut subs = lock(&slot);
            subs.subs.for_each_mut(|sub| {
                let theirs = leaving == Some(sub.handle.user);
                match &mut sub.state {
                    SubState::Live {
                        first,
                        last,
                        claimed,
                    } => {
                        if let Some(offset) = event.offset {
                            if offset <= *last {
                                if theirs && offset <= *claimed {
                                    recheck.push(sub.handle.clone());
                                    sub.hold_for_recheck(UNNUMBERED);
                                }
                                return;
                            }
                            *last = offset;
                            first.get_or_insert(offset);
                        }
                        if theirs {
                            let reached = Reached {
                                offset: *last,
                                out: true,
                            };
                            left.push((sub.handle.id, reached));
                        }
                        match self.push(&sub.handle, event, &mut tally) {
                            Pushed::Queued if event.effect.is_some() => {
                                affected.push((sub.handle.clone(), true));
                            }
                            Pushed::Queued | Pushed::Not => {}
                            // Gone: its subscriptions go with it. Asked only here, off
                            // the path every delivery takes (a load per subscriber on
                            // a line of its own).
                            Pushed::Closed if sub.handle.control.is_closed() => {
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
                                affected.push((sub.handle.clone(), false));
                            }
                        }
                    }
                }
            });
            for id in &closed {
                if let Some(sub) = subs.subs.remove(id) {
                    self.notify(&event.scope, &sub.handle, false);
                }
            }
        }
        tally.record(&self.metrics);
        if let Some(effect) = &event.effect {
            for (conn, reached) in left {
                self.revoke(conn, &event.scope, reached);
            }
            for conn in recheck {
                self.recheck_one(&conn, &event.scope, "channel_left");
            }
            for (conn, queued) in affected {
                self.apply_effect(conn, effect, queued);
            }
        }
    }

    fn wants(&self, scope: &Scope) -> bool {
        self.has_subscribers(scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_registry() -> (tokio::runtime::Runtime, Registry) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let registry = {
            let _guard = rt.enter();
            Registry::new(Arc::new(Metrics::default()), 8, Clock::system())
        };
        (rt, registry)
    }

    /// A connection of `user`, subscribed to `scope` and catching up with it (what
    /// arrives is held until its release).
    fn subscribed_catching_up(
        registry: &Registry,
        user: UserKey,
        scope: &Scope,
    ) -> (ConnHandle, Arc<Outbox>) {
        let (conn, outbox, _) = registry.register(user);
        let mode = Admit::CatchUp {
            keep_seen: true,
            joined: None,
        };
        registry
            .admit(&conn, scope, None, mode, None)
            .expect("admitted");
        (conn, outbox)
    }

    /// A connection that revoked more scopes than it remembers forgets the oldest: a
    /// recent revocation keeps what its subscription reached (a trailing join continues
    /// after it: nothing twice), and every scope still counts as revoked for a fence
    /// taken before the forgotten ones. (It used to forget them all, reaches included.)
    #[test]
    fn an_overflow_of_revocations_forgets_only_the_oldest() {
        let (_rt, registry) = test_registry();
        let (conn, _outbox, _) = registry.register(7);
        let mut index = lock(&registry.index);
        let entry = index.conns.get_mut(&conn.id).expect("registered");
        let reached = Reached {
            offset: 42,
            out: false,
        };
        for n in 1..MAX_REVOKED as i64 {
            entry.record_revoked(&Scope::of("thread", n), Reached::default());
        }
        let recent = Scope::of("channel", 1);
        entry.record_revoked(&recent, reached);
        entry.record_revoked(&Scope::of("thread", 0), Reached::default());
        assert!(entry.revoked.len() <= MAX_REVOKED);
        assert_eq!(entry.revoked.get(&recent).map(|r| r.reached), Some(reached));
        assert!(
            entry.revoked_since(&Scope::of("thread", 0), 0),
            "forgotten, still fenced"
        );
        assert!(!entry.revoked_since(&Scope::of("thread", 0), entry.epoch));
    }

    /// A release that ends a subscription at the user's leave (in its run) removes it
    /// only after the scope's lock is let go: until then it holds what arrives, never
    /// queues it (found in review: it was live in between, and a delivery on the
    /// broker's thread queued an event after the leave).
    #[test]
    fn a_subscription_ended_by_its_release_queues_nothing_more() {
        let (_rt, registry) = test_registry();
        let scope = Scope::of("channel", 1);
        let (conn, outbox) = subscribed_catching_up(&registry, 7, &scope);
        let event = |offset: u64, effect: Option<Effect>| {
            crate::event::logged_event(&scope, offset, "e", "", effect)
        };
        let leave = Effect {
            drop_user: Some(7),
            ..Effect::default()
        };
        let replay = Replay {
            start: Some(10),
            events: vec![event(11, None), event(12, Some(leave))],
            claimed: false,
        };
        let slot = registry.slot(&scope).expect("a slot");
        let finished = {
            let mut subs = lock(&slot);
            let sub = subs.subs.get_mut(&conn.id).expect("subscribed");
            let mut effects = Vec::new();
            registry.finish(sub, &replay, &mut Tally::default(), &mut effects)
        };
        assert!(
            finished.left.is_some_and(|r| r.out),
            "ends out of the scope"
        );
        assert_eq!(std::iter::from_fn(|| outbox.try_pop()).count(), 2);
        registry.deliver(&event(13, None));
        assert!(outbox.try_pop().is_none(), "nothing after the leave");
    }

    /// A close that arrives while the user's scope catches up waits with its event, and
    /// seals the connection's queue only once that event is queued: its
    /// `credentials.revoked` still goes out, and nothing after it — neither what the
    /// subscription held behind it nor later frames (found in review: the seal came at
    /// once, and the release then dropped the event itself).
    #[test]
    fn a_close_held_by_a_catch_up_seals_the_queue_after_its_event() {
        let (_rt, registry) = test_registry();
        let scope = Scope::of("user", 7);
        let (conn, outbox) = subscribed_catching_up(&registry, 7, &scope);
        let close = Effect {
            close: Some(crate::event::CloseSessions { credential: None }),
            ..Effect::default()
        };
        let revoked =
            crate::event::logged_event(&scope, 11, "credentials.revoked", "", Some(close));
        registry.deliver(&revoked);
        assert_eq!(conn.control.code(), Some(CloseCode::Unauthorized));
        registry.deliver(&crate::event::logged_event(&scope, 12, "later", "", None));
        let replay = Replay {
            start: Some(10),
            events: Vec::new(),
            claimed: false,
        };
        registry.release(&conn, &scope, replay);
        let queued: Vec<_> = std::iter::from_fn(|| outbox.try_pop()).collect();
        assert_eq!(
            queued.len(),
            1,
            "the revocation went out, and not what it held after"
        );
        assert_eq!(
            outbox.push_reply(Utf8Bytes::from_static("after")),
            Err(PushError::Closed),
            "and nothing after it"
        );
    }

    /// Every connection holds a few subscriptions for its whole life (its user scope
    /// alone takes one per connection): their size is part of the idle target (SPEC §6,
    /// ≤ 7 KiB per connection). A single subscriber's scope holds exactly one.
    #[test]
    fn a_subscription_stays_small() {
        assert!(std::mem::size_of::<SubState>() <= 56);
        assert!(std::mem::size_of::<(ConnId, Sub)>() <= 104);
        let (_rt, registry) = test_registry();
        let (conn, _outbox, _) = registry.register(7);
        let scope = Scope::of("user", 7);
        registry
            .admit(&conn, &scope, None, Admit::Live, None)
            .expect("admitted");
        let slot = registry.slot(&scope).expect("a slot");
        match &lock(&slot).subs {
            SubMap::Few(few) => assert_eq!(few.capacity(), 1),
            SubMap::Many(_) => panic!("one subscriber is a short list"),
        }
    }
}
