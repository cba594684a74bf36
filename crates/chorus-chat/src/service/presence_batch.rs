//! Coalesced presence announcements, per workspace.
//!
//! A presence change is announced to every subscriber of the user's workspaces. When
//! thousands of clients connect at once (a deploy, a node failover), one event per user
//! to every connection is quadratic: 200 users coming online in front of 10,000
//! connections is two million frames, and they compete with the connects themselves.
//!
//! So a workspace announces a change at once when it announced nothing in the last
//! [`WINDOW`]; otherwise the change waits for the window to end, and everything that
//! waited goes out together: one `presence.updated` if a single user changed, else one
//! `presence.batch` (`{"presences": [...]}`, the latest state of each user, by user id).
//! A lone change is never delayed; a storm costs one frame per connection per window.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_realtime::{Engine, Publish};
use serde::Serialize;
use tokio::time::Instant;

use super::events::workspace_scope;
use crate::model::{Presence, UserId, WorkspaceId};

/// The shortest time between two announcements in one workspace.
pub const WINDOW: Duration = Duration::from_millis(200);

#[derive(Serialize)]
struct PresenceBatch<'a> {
    presences: Vec<&'a Presence>,
}

#[derive(Default)]
struct Workspace {
    /// When the workspace last announced something.
    last: Option<Instant>,
    /// Changes waiting for the window to end; the latest per user.
    waiting: BTreeMap<UserId, Presence>,
}

pub(crate) struct PresenceBatcher {
    engine: Arc<Engine>,
    /// A std mutex: held for a map update, never across an await.
    workspaces: Arc<Mutex<HashMap<WorkspaceId, Workspace>>>,
}

impl PresenceBatcher {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            workspaces: Arc::default(),
        }
    }

    /// Announces `presence` on `workspace` now, or with the others at the end of the
    /// current window. Callers serialize the changes of one user (its gate), so a user's
    /// announcements keep their order: once one of them waits, the next ones wait too.
    pub(crate) async fn announce(&self, workspace: WorkspaceId, presence: &Presence) {
        let now = Instant::now();
        let flush_at = {
            let mut all = lock(&self.workspaces);
            let ws = all.entry(workspace).or_default();
            let quiet = ws.last.is_none_or(|t| now.duration_since(t) >= WINDOW);
            if quiet && ws.waiting.is_empty() {
                ws.last = Some(now);
                None
            } else {
                let first = ws.waiting.is_empty();
                ws.waiting.insert(presence.user_id, presence.clone());
                if !first {
                    return; // a flush is already scheduled
                }
                Some(ws.last.map_or(now, |t| t + WINDOW))
            }
        };
        match flush_at {
            None => publish(&self.engine, workspace, &[presence]).await,
            Some(at) => {
                let engine = self.engine.clone();
                let workspaces = self.workspaces.clone();
                // Not tracked for shutdown: at worst a late flush publishes to nobody.
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    let waiting: Vec<Presence> = {
                        let mut all = lock(&workspaces);
                        let ws = all.entry(workspace).or_default();
                        ws.last = Some(Instant::now());
                        std::mem::take(&mut ws.waiting).into_values().collect()
                    };
                    let refs: Vec<&Presence> = waiting.iter().collect();
                    publish(&engine, workspace, &refs).await;
                });
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn publish(engine: &Engine, workspace: WorkspaceId, presences: &[&Presence]) {
    let scope = workspace_scope(workspace);
    let publish = match presences {
        [] => return,
        [one] => Publish::new(scope, "presence.updated", one),
        many => Publish::new(
            scope,
            "presence.batch",
            &PresenceBatch {
                presences: many.to_vec(),
            },
        ),
    };
    if let Err(err) = engine.publish(publish.ephemeral()).await {
        tracing::warn!(%workspace, cause = %err, "presence not published");
    }
}

#[cfg(test)]
mod tests {
    use chorus_realtime::{EngineConfig, StartAt};
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
        let subscribed = engine
            .registry
            .subscribe(engine.broker.as_ref(), &conn, &scope, StartAt::Now, None)
            .await;
        assert!(subscribed.admitted);
        let frames = || -> Vec<Value> {
            std::iter::from_fn(|| outbox.try_pop())
                .map(|f| serde_json::from_str(f.as_str()).expect("json"))
                .collect()
        };
        let batcher = PresenceBatcher::new(engine.clone());
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
        let batch = got[0]["data"]["presences"].as_array().expect("list");
        let states: Vec<(i64, bool)> = batch
            .iter()
            .map(|p| (p["user_id"].as_i64().unwrap_or(0), p["online"] == true))
            .collect();
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
}
