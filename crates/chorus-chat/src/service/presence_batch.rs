//! Coalesced presence announcements, per workspace.
//!
//! A presence change is announced to every subscriber of the user's workspaces. When
//! thousands of clients connect at once (a deploy, a node failover), one event per user
//! to every connection is quadratic: 200 users coming online in front of 10,000
//! connections is two million frames, and they compete with the connects themselves.
//!
//! So a workspace announces a change at once when it announced nothing in the last
//! window ([`WINDOW`], longer for a large audience: [`window_for`]); otherwise the
//! change waits for the window to end, and everything that waited goes out together:
//! one `presence.updated` if a single user changed, else one `presence.batch` (the
//! latest state of each user, grouped by state: `{"groups": [{"user_ids": [...],
//! "online", "last_seen", "status_text"}, ...]}`). A lone change is never delayed; a
//! storm costs one frame per connection per window.
//!
//! Every announcement is a frame to every connection of the workspace, so the window
//! grows with that audience (on this node): 200 ms up to 2,000 connections, then 0.1 ms
//! more per connection, up to a second at 10,000 — on one node, up to 10,000
//! connections, a workspace's presence costs at most ~10,000 frames a second however
//! many connect at once (beyond, one frame per connection a second). Each node sizes
//! the windows of its own announcements from its own audience: with the workspace
//! spread over several nodes, each connection hears each node's batches. (A storm of 10,000
//! users took ~10 % less server time with a 1 s window than with 200 ms:
//! docs/benchmarks.md, round 2, session 17.) Presence in a workspace of thousands may
//! lag by up to a second; a small team sees changes within 200 ms, as before.
//!
//! The frames are few, but a storm of N users coming online still tells each
//! connection of everyone who came online after it: about N²/2 users in all (50 million
//! for 10,000). Grouping makes each of them an id in a list (users whose coming online
//! was recorded by one coalesced write share their `last_seen`) instead of a whole
//! presence: ~6 bytes instead of ~85, the largest cost of a storm before (the server
//! copying those bytes into 10,000 sockets; docs/benchmarks.md).
//!
//! On several nodes the batcher also remembers, per user, the online bit it published
//! last ([`PresenceBatcher::take_published`]): the chat checks those against the shared
//! tracker once they are in the broker's stream (see `Chat::verify_presence`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_api::events::PresenceBatch;
use chorus_realtime::{Clock, Engine, Publish};
use tokio::time::Instant;

use super::Background;
use super::events::workspace_scope;
use crate::model::{Presence, UserId, WorkspaceId};

/// The shortest time between two announcements in one workspace.
pub const WINDOW: Duration = Duration::from_millis(200);
/// The longest.
pub const MAX_WINDOW: Duration = Duration::from_secs(1);
/// How much each connection of the audience adds to the window, past [`WINDOW`].
const PER_CONNECTION: Duration = Duration::from_micros(100);

/// The time between two announcements in a workspace with `audience` connections on
/// this node ([module docs](self)).
pub fn window_for(audience: usize) -> Duration {
    PER_CONNECTION
        .saturating_mul(u32::try_from(audience).unwrap_or(u32::MAX))
        .clamp(WINDOW, MAX_WINDOW)
}

#[derive(Default)]
struct Workspace {
    /// When the workspace last announced something.
    last: Option<Instant>,
    /// The time from one announcement to the next: [`window_for`] its audience, as it
    /// was when the last publisher finished (`None`: [`WINDOW`]).
    window: Option<Duration>,
    /// Changes not yet published; the latest per user.
    waiting: BTreeMap<UserId, Presence>,
    /// Someone is publishing this workspace's changes (now, or at the end of the
    /// window): one publisher at a time, so announcements never overtake each other.
    busy: bool,
}

type Workspaces = Arc<Mutex<HashMap<WorkspaceId, Workspace>>>;

/// What this node published last about each user, while nobody checked it yet.
#[derive(Default)]
struct Published {
    /// Off on one node: there, nobody else announces, nothing to check.
    on: AtomicBool,
    /// The online bit of each user's latest announcement. A std mutex: map updates only.
    /// At most one entry per user.
    users: Mutex<HashMap<UserId, bool>>,
}

impl Published {
    fn note(&self, bits: Vec<(UserId, bool)>) {
        if self.on.load(Ordering::Acquire) {
            lock(&self.users).extend(bits);
        }
    }
}

pub(crate) struct PresenceBatcher {
    engine: Arc<Engine>,
    clock: Clock,
    /// Where the end-of-window flushes run; at shutdown they flush at once.
    background: Background,
    /// A std mutex: held for a map update, never across an await.
    workspaces: Workspaces,
    published: Arc<Published>,
}

impl PresenceBatcher {
    pub(crate) fn new(engine: Arc<Engine>, clock: Clock, background: Background) -> Self {
        Self {
            engine,
            clock,
            background,
            workspaces: Arc::default(),
            published: Arc::default(),
        }
    }

    /// From now on, remember what is published ([`take_published`](Self::take_published)).
    pub(crate) fn remember_published(&self) {
        self.published.on.store(true, Ordering::Release);
    }

    /// The online bit last published per user since the previous call, each handed to
    /// the broker already (which may still hold it in its queue while Redis is away).
    pub(crate) fn take_published(&self) -> HashMap<UserId, bool> {
        std::mem::take(&mut *lock(&self.published.users))
    }

    /// Puts back what could not be checked; a newer announcement of a user wins.
    pub(crate) fn restore_published(&self, unchecked: HashMap<UserId, bool>) {
        let mut users = lock(&self.published.users);
        for (user, online) in unchecked {
            users.entry(user).or_insert(online);
        }
    }

    /// Marks `user` as shown `online` to clients, to be checked like an announcement
    /// (e.g. a user whose close this node could not count while Redis was away).
    pub(crate) fn expect(&self, user: UserId, online: bool) {
        if self.published.on.load(Ordering::Acquire) {
            lock(&self.published.users).entry(user).or_insert(online);
        }
    }

    /// Announces `presence` on `workspace` now, or with the others at the end of the
    /// current window. Callers serialize the changes of one user (its gate); one
    /// publisher per workspace keeps them in that order.
    pub(crate) async fn announce(&self, workspace: WorkspaceId, presence: &Presence) {
        let now_out = {
            let mut all = lock(&self.workspaces);
            let ws = all.entry(workspace).or_default();
            ws.waiting.insert(presence.user_id, presence.clone());
            if ws.busy {
                return; // the publisher at work takes it
            }
            ws.busy = true;
            let now = self.clock.instant();
            let window = ws.window.unwrap_or(WINDOW);
            if ws.last.is_none_or(|t| now.duration_since(t) >= window) {
                ws.last = Some(now);
                Some(std::mem::take(&mut ws.waiting))
            } else {
                None
            }
        };
        if let Some(changes) = now_out {
            publish(&self.engine, &self.published, workspace, changes).await;
        }
        // What arrived meanwhile (or this change, inside the window) leaves at the end
        // of the window, from a task: the caller is not held up.
        if finish(&self.engine, &self.workspaces, workspace) {
            return;
        }
        let engine = self.engine.clone();
        let published = self.published.clone();
        let workspaces = self.workspaces.clone();
        let (clock, background) = (self.clock, self.background.clone());
        self.background.spawn(async move {
            loop {
                let at = {
                    let mut all = lock(&workspaces);
                    let ws = all.entry(workspace).or_default();
                    let window = ws.window.unwrap_or(WINDOW);
                    ws.last.map_or_else(|| clock.instant(), |t| t + window)
                };
                // At shutdown, what waits goes out now rather than not at all.
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = background.stop().cancelled() => {}
                }
                let changes = {
                    let mut all = lock(&workspaces);
                    let ws = all.entry(workspace).or_default();
                    ws.last = Some(clock.instant());
                    std::mem::take(&mut ws.waiting)
                };
                publish(&engine, &published, workspace, changes).await;
                if finish(&engine, &workspaces, workspace) {
                    return;
                }
            }
        });
    }
}

/// Ends a publisher's turn if nothing is waiting; `false` if it must go on. Either way,
/// the next window is sized for the audience now.
fn finish(engine: &Engine, workspaces: &Workspaces, workspace: WorkspaceId) -> bool {
    // Counted before the batcher's lock: the registry's locks are never taken under it.
    let audience = engine
        .registry
        .subscriber_count(&workspace_scope(workspace));
    let mut all = lock(workspaces);
    let ws = all.entry(workspace).or_default();
    ws.window = Some(window_for(audience));
    if ws.waiting.is_empty() {
        ws.busy = false;
        true
    } else {
        false
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn publish(
    engine: &Engine,
    published: &Published,
    workspace: WorkspaceId,
    changes: BTreeMap<UserId, Presence>,
) {
    let scope = workspace_scope(workspace);
    let presences: Vec<Presence> = changes.into_values().collect();
    let bits: Vec<(UserId, bool)> = presences.iter().map(|p| (p.user_id, p.online)).collect();
    let publish = match presences.len() {
        0 => return,
        1 => Publish::new(scope, "presence.updated", &presences[0]),
        _ => Publish::new(scope, "presence.batch", &PresenceBatch::grouped(presences)),
    };
    if let Err(err) = engine.publish(publish.ephemeral()).await {
        tracing::warn!(%workspace, cause = %err, "presence not published");
    }
    // Noted even when refused: the check then finds clients may be behind and says
    // the state again.
    published.note(bits);
}

#[cfg(test)]
mod tests {
    use chorus_realtime::EngineConfig;
    use chorus_realtime::registry::Admit;
    use serde_json::Value;

    use super::*;

    fn presence(user: i64, online: bool) -> Presence {
        Presence {
            user_id: UserId(user),
            online,
            last_seen: None,
            status_text: String::new(),
        }
    }

    /// A lone change goes out at once; changes inside the window wait and leave as one
    /// `presence.batch` holding each user's latest state; after a quiet window, a
    /// change goes out at once again.
    #[tokio::test(start_paused = true)]
    async fn a_storm_is_one_frame_per_window_and_a_lone_change_is_immediate() {
        let engine = Engine::in_memory(EngineConfig::default());
        let (conn, outbox, _) = engine.registry.register(99);
        let scope = workspace_scope(WorkspaceId(1));
        let admitted = engine
            .registry
            .admit(&conn, &scope, None, Admit::Live, None);
        assert!(admitted.is_ok());
        let frames = || -> Vec<Value> {
            std::iter::from_fn(|| outbox.try_pop())
                .map(|f| serde_json::from_str(f.as_text().expect("text")).expect("json"))
                .collect()
        };
        let batcher = PresenceBatcher::new(
            engine.clone(),
            Clock::following_tokio(0),
            Background::default(),
        );
        let ws = WorkspaceId(1);

        batcher.announce(ws, &presence(1, true)).await;
        let got = frames();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["type"], "presence.updated");
        assert_eq!(got[0]["data"]["user_id"], 1);

        for p in [presence(2, true), presence(3, true), presence(2, false)] {
            batcher.announce(ws, &p).await;
        }
        assert!(frames().is_empty(), "inside the window, changes wait");
        // Paused time: the flush's timer fires first, its task runs while this one waits.
        tokio::time::sleep(WINDOW + Duration::from_millis(10)).await;
        let got = frames();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["type"], "presence.batch");
        let batch: PresenceBatch = serde_json::from_value(got[0]["data"].clone()).expect("a batch");
        let states: Vec<(i64, bool)> = batch.presences().map(|p| (p.user_id.0, p.online)).collect();
        assert_eq!(states, [(2, false), (3, true)], "latest per user, by id");

        // One change waiting alone leaves as a plain `presence.updated`.
        batcher.announce(ws, &presence(4, true)).await;
        tokio::time::sleep(WINDOW + Duration::from_millis(10)).await;
        let got = frames();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["type"], "presence.updated");

        tokio::time::sleep(WINDOW * 2).await;
        batcher.announce(ws, &presence(5, true)).await;
        assert_eq!(frames().len(), 1, "after a quiet window: at once");
    }

    #[test]
    fn the_window_grows_with_the_audience() {
        assert_eq!(window_for(0), WINDOW);
        assert_eq!(window_for(2_000), WINDOW);
        assert_eq!(window_for(5_000), Duration::from_millis(500));
        assert_eq!(window_for(10_000), MAX_WINDOW);
        assert_eq!(window_for(usize::MAX), MAX_WINDOW);
    }

    /// In front of 5,000 connections, a change 300 ms after an announcement waits,
    /// and leaves 500 ms after it, not 200 ms.
    #[tokio::test(start_paused = true)]
    async fn a_large_audience_waits_a_longer_window() {
        let engine = Engine::in_memory(EngineConfig::default());
        let scope = workspace_scope(WorkspaceId(1));
        let conns: Vec<_> = (0..5_000)
            .map(|user| {
                let (conn, outbox, _) = engine.registry.register(1_000 + user);
                let admitted = engine
                    .registry
                    .admit(&conn, &scope, None, Admit::Live, None);
                assert!(admitted.is_ok());
                (conn, outbox)
            })
            .collect();
        let outbox = &conns[0].1;
        let frames = || std::iter::from_fn(|| outbox.try_pop()).count();
        let batcher = PresenceBatcher::new(
            engine.clone(),
            Clock::following_tokio(0),
            Background::default(),
        );
        let ws = WorkspaceId(1);
        let start = tokio::time::Instant::now();
        batcher.announce(ws, &presence(1, true)).await;
        assert_eq!(frames(), 1, "a lone change: at once");
        tokio::time::sleep(Duration::from_millis(300)).await;
        batcher.announce(ws, &presence(2, true)).await;
        assert_eq!(
            frames(),
            0,
            "past 200 ms, still inside the audience's window"
        );
        // Paused time: the flush's timer fires before a sleep ends if it is due.
        tokio::time::sleep_until(start + window_for(5_000) - Duration::from_millis(1)).await;
        assert_eq!(frames(), 0, "waits for the whole window");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(frames(), 1, "out at the end of the window");
    }

    /// At shutdown, changes waiting for the window go out at once, and the flush task
    /// has ended when the background's tracker says so.
    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_what_waits_without_waiting_for_the_window() {
        let engine = Engine::in_memory(EngineConfig::default());
        let (conn, outbox, _) = engine.registry.register(99);
        let scope = workspace_scope(WorkspaceId(1));
        let admitted = engine
            .registry
            .admit(&conn, &scope, None, Admit::Live, None);
        assert!(admitted.is_ok());
        let background = Background::default();
        let batcher = PresenceBatcher::new(
            engine.clone(),
            Clock::following_tokio(0),
            background.clone(),
        );
        let ws = WorkspaceId(1);
        let start = tokio::time::Instant::now();
        batcher.announce(ws, &presence(1, true)).await;
        batcher.announce(ws, &presence(2, true)).await;
        assert_eq!(
            background.tasks.len(),
            1,
            "the second change waits in a task"
        );

        background.stop.cancel();
        background.tasks.close();
        background.tasks.wait().await;
        assert!(start.elapsed() < WINDOW, "did not wait for the window");
        let got: Vec<Value> = std::iter::from_fn(|| outbox.try_pop())
            .map(|f| serde_json::from_str(f.as_text().expect("text")).expect("json"))
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1]["data"]["user_id"], 2);
    }
}
