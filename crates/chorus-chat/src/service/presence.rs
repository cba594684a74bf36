//! Presence: a user is online while they have at least one live connection, and for a
//! short grace period after the last one closes, so a page reload does not flicker.
//! Only the server decides: the engine's connect/disconnect hooks drive it; clients
//! can set their `status_text`, never the online bit.
//!
//! Counting connections is a [`PresenceTracker`]; this file's [`LocalPresence`] counts
//! the connections of this node. A multi-node tracker (heartbeat keys in Redis, one per
//! node and user) implements the same trait; the grace timers, `last_seen` and the
//! `presence.updated` events stay here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chorus_api::TopicSubscriber;
pub use chorus_api::model::NodeStat;
pub use chorus_api::requests::SetStatus;
use chorus_realtime::Scope;

use super::Chat;
use crate::error::{Result, bad, not_found};
use crate::model::{Presence, Timestamp, User, UserId, WorkspaceId};

/// Proof that a user's last connection closed at a given moment; only the latest one
/// can take the user offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Ticket {
    pub(crate) const fn new(generation: u64) -> Self {
        Self(generation)
    }

    pub(crate) const fn get(self) -> u64 {
        self.0
    }
}

/// A connection that started (`joined`) or stopped being subscribed to a topic that
/// keeps presence.
#[derive(Debug, Clone, Copy)]
pub struct TopicMove<'a> {
    pub scope: &'a Scope,
    pub subscriber: &'a TopicSubscriber,
    pub joined: bool,
}

/// Who is connected. Implementations count connections; they never publish.
#[async_trait]
pub trait PresenceTracker: Send + Sync {
    /// Whether other nodes share this tracker. At shutdown a grace period still running
    /// is then left to their sweep of this node (the user may reconnect to one of them
    /// meanwhile), as after a crash, instead of settling here at once.
    fn shared(&self) -> bool {
        false
    }

    /// The live nodes sharing this tracker (empty on a single node).
    async fn nodes(&self) -> Vec<NodeStat> {
        Vec::new()
    }

    /// Connections that started or stopped being subscribed to topics whose namespace
    /// keeps presence (`presence = true`), in the order it happened. Only a tracker
    /// shared by several nodes records them: a single node answers from its registry.
    async fn topics_changed(&self, _changes: &[TopicMove<'_>]) {}

    /// The subscribers of `scope` on every live node; `None`: this node's registry is
    /// the whole answer (a single node, or the shared state cannot be read now).
    async fn topic_subscribers(&self, _scope: &Scope) -> Option<Vec<TopicSubscriber>> {
        None
    }

    /// A connection of `user` opened. `true` when the user was offline until now (a
    /// connection within the grace period after the last one closed is not a change).
    async fn open(&self, user: UserId) -> bool;
    /// A connection of `user` closed. `Some` when it was the user's last: once the grace
    /// period has passed, [`settle`](Self::settle) decides whether the user went offline.
    async fn close(&self, user: UserId) -> Option<Ticket>;
    /// `true` when no connection of `user` opened since `ticket` was issued: the user
    /// is now offline.
    async fn settle(&self, user: UserId, ticket: Ticket) -> bool;
    async fn is_online(&self, user: UserId) -> bool;
    /// Which of `users` have a live connection right now (the grace period after the
    /// last one closed does not count): a woken agent without one gets a webhook.
    /// Defaults to [`online_among`](Self::online_among) for trackers that cannot tell.
    async fn connected_among(&self, users: &[UserId]) -> HashSet<UserId> {
        self.online_among(users).await
    }
    /// Which of `users` are online according to the shared state itself, or `None`
    /// when it cannot be read now. Unlike [`online_among`](Self::online_among), never
    /// a guess: announcements are checked against it.
    async fn check_online(&self, users: &[UserId]) -> Option<HashSet<UserId>> {
        Some(self.online_among(users).await)
    }
    /// Which of `users` are online (one round trip for a remote tracker).
    async fn online_among(&self, users: &[UserId]) -> HashSet<UserId> {
        let mut online = HashSet::new();
        for &user in users {
            if self.is_online(user).await {
                online.insert(user);
            }
        }
        online
    }
}

/// Connections of this node, counted per user.
#[derive(Default)]
pub struct LocalPresence {
    /// Users who are online or within their grace period. A std mutex: every critical
    /// section is a map lookup, never held across an await.
    users: Mutex<HashMap<UserId, Local>>,
}

struct Local {
    connections: usize,
    /// Bumped by every open, so a pending offline check from before it fails.
    generation: u64,
}

impl LocalPresence {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Local>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PresenceTracker for LocalPresence {
    async fn open(&self, user: UserId) -> bool {
        let mut users = self.users();
        let mut came_online = false;
        let entry = users.entry(user).or_insert_with(|| {
            came_online = true;
            Local {
                connections: 0,
                generation: 0,
            }
        });
        entry.connections += 1;
        entry.generation += 1;
        came_online
    }

    async fn close(&self, user: UserId) -> Option<Ticket> {
        let mut users = self.users();
        let Some(entry) = users.get_mut(&user) else {
            tracing::warn!(%user, "presence: close without an open");
            return None;
        };
        entry.connections = entry.connections.saturating_sub(1);
        (entry.connections == 0).then_some(Ticket(entry.generation))
    }

    async fn settle(&self, user: UserId, ticket: Ticket) -> bool {
        let mut users = self.users();
        match users.get(&user) {
            Some(entry) if entry.connections == 0 && entry.generation == ticket.0 => {
                users.remove(&user);
                true
            }
            _ => false,
        }
    }

    async fn is_online(&self, user: UserId) -> bool {
        self.users().contains_key(&user)
    }

    async fn connected_among(&self, users: &[UserId]) -> HashSet<UserId> {
        let local = self.users();
        users
            .iter()
            .copied()
            .filter(|u| local.get(u).is_some_and(|l| l.connections > 0))
            .collect()
    }

    async fn online_among(&self, users: &[UserId]) -> HashSet<UserId> {
        let online = self.users();
        users
            .iter()
            .copied()
            .filter(|u| online.contains_key(u))
            .collect()
    }
}

const MAX_STATUS_CHARS: usize = 140;

impl Chat {
    /// A connection of `user` opened (engine hook).
    pub(crate) async fn presence_opened(&self, user: UserId) {
        let _order = self.gates.users.lock(user.0).await;
        if !self.presence.open(user).await {
            return;
        }
        // Coalesced with the other users coming online (a connect storm): one write.
        match self.lookups.came_online.get(user).await {
            Ok(Some(mut presence)) => {
                presence.online = true;
                self.announce_presence(&presence).await;
            }
            Ok(None) => tracing::warn!(%user, "presence: no such user"),
            Err(err) => tracing::warn!(%user, cause = %err, "presence: recording last_seen failed"),
        }
    }

    /// `user` came online, found late: their first connection's count reached the
    /// shared tracker only when it answered again.
    pub(crate) async fn presence_came_online(&self, user: UserId) {
        let _order = self.gates.users.lock(user.0).await;
        self.announce_online(user).await;
    }

    async fn announce_online(&self, user: UserId) {
        match self.store.set_last_seen(user, self.now()).await {
            Ok(mut presence) => {
                presence.online = true;
                self.announce_presence(&presence).await;
            }
            Err(err) => tracing::warn!(%user, cause = %err, "presence: recording last_seen failed"),
        }
    }

    /// A connection of `user` closed (engine hook). After the grace period, unless a
    /// connection of the user opened meanwhile, the user goes offline.
    pub(crate) async fn presence_closed(self: &Arc<Self>, user: UserId) {
        if let Some(ticket) = self.presence.close(user).await {
            self.start_grace(user, ticket);
        }
        self.closes_handled
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The last connection of `user` closed (`ticket`): offline after the grace period
    /// unless a connection opens meanwhile.
    pub(crate) fn start_grace(self: &Arc<Self>, user: UserId, ticket: Ticket) {
        let closed_at = self.now();
        let chat = Arc::clone(self);
        let grace = self.config.presence_grace;
        self.background.spawn(async move {
            // At shutdown the grace ends at once: on one node the user's connections are
            // gone for good (offline, `last_seen` recorded); on several, the other nodes'
            // sweep decides, so a user who reconnects to one of them never blinks.
            let full = chat.background.sleep(grace).await;
            if !full && chat.presence.shared() {
                return;
            }
            chat.presence_settle(user, ticket, closed_at).await;
        });
    }

    async fn presence_settle(&self, user: UserId, ticket: Ticket, closed_at: Timestamp) {
        let _order = self.gates.users.lock(user.0).await;
        if !self.presence.settle(user, ticket).await {
            return;
        }
        match self.store.set_last_seen(user, closed_at).await {
            Ok(presence) => self.announce_presence(&presence).await,
            Err(err) => tracing::warn!(%user, cause = %err, "presence: recording last_seen failed"),
        }
    }

    /// The nodes of a multi-node deployment and their connections (empty on one node).
    pub async fn cluster_nodes(&self) -> Vec<NodeStat> {
        self.presence.nodes().await
    }

    /// `user` is offline because the node that held their connections died (found by
    /// the multi-node sweeper, or a grace settled once Redis answered again): no grace,
    /// it already passed. A late sweep says nothing: when the user is online again by
    /// now (their node came back and announced them, or they connected elsewhere), the
    /// fresher announcement stands. The check and the publish are not one step, so
    /// [`verify_presence`](Self::verify_presence) checks what was published, too.
    pub(crate) async fn presence_expired(&self, user: UserId, at: Timestamp) {
        let _order = self.gates.users.lock(user.0).await;
        let online = self.presence.check_online(&[user]).await;
        if online.is_some_and(|online| online.contains(&user)) {
            tracing::info!(%user, "presence: a late sweep ignored, the user is back online");
            return;
        }
        match self.store.set_last_seen(user, at).await {
            Ok(presence) => self.announce_presence(&presence).await,
            Err(err) => tracing::warn!(%user, cause = %err, "presence: recording last_seen failed"),
        }
    }

    /// Checks this node's announcements once they are in the broker's stream: a user
    /// whose last announced online bit is not the shared tracker's any more (another
    /// node's announcement of an older state went out after it, or the state changed
    /// without one, as when Redis lost its data) is announced again with the current
    /// state, which is checked in turn. Every node checks its own announcements, so the
    /// last announcement of a user in the stream, the one every client applies last,
    /// agrees with the tracker. What cannot be checked yet (Redis away, the broker
    /// still holding announcements in its queue) waits for the next call.
    pub(crate) async fn verify_presence(&self) {
        let said = self.presence_batch.take_published();
        if said.is_empty() {
            return;
        }
        // Taken first, then asked: an announcement noted before the take was handed to
        // the broker, and an empty queue means it is in Redis.
        if !self.engine.broker.is_ready() {
            self.presence_batch.restore_published(said);
            return;
        }
        let users: Vec<UserId> = said.keys().copied().collect();
        let Some(online) = self.presence.check_online(&users).await else {
            self.presence_batch.restore_published(said);
            return;
        };
        for (user, announced) in said {
            if online.contains(&user) != announced {
                self.presence_correct(user, announced).await;
            }
        }
    }

    /// Announces `user`'s current online bit: clients last heard `announced` from
    /// this node, and the tracker disagrees.
    async fn presence_correct(&self, user: UserId, announced: bool) {
        let _order = self.gates.users.lock(user.0).await;
        let Some(online) = self.presence.check_online(&[user]).await else {
            self.presence_batch.expect(user, announced);
            return;
        };
        let online = online.contains(&user);
        if online == announced {
            return; // it changed back meanwhile
        }
        match self.store.presence(user).await {
            Ok(Some(mut presence)) => {
                tracing::info!(%user, online, "presence: announced again, clients were behind");
                presence.online = online;
                self.announce_presence(&presence).await;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%user, cause = %err, "presence: reading it failed");
                self.presence_batch.expect(user, announced);
            }
        }
    }

    /// `user` may be shown online to clients while the tracker no longer knows why
    /// (this node dropped a count change it could not send): checked like an
    /// announcement.
    pub(crate) fn presence_in_doubt(&self, user: UserId) {
        self.presence_batch.expect(user, true);
    }

    /// Sets the caller's status text; the online bit is untouched (the server's alone).
    pub async fn set_status(&self, caller: &User, req: SetStatus) -> Result<Presence> {
        let text = req.status_text.trim();
        if text.chars().count() > MAX_STATUS_CHARS {
            return Err(bad("status_text is at most 140 characters"));
        }
        if text.chars().any(char::is_control) {
            return Err(bad("status_text must not contain control characters"));
        }
        let _order = self.gates.users.lock(caller.id.0).await;
        let mut presence = self.store.set_status_text(caller.id, text).await?;
        self.cache.changed();
        presence.online = self.presence.is_online(caller.id).await;
        self.announce_presence(&presence).await;
        Ok(presence)
    }

    /// The presence of every member of a workspace.
    pub async fn workspace_presence(
        &self,
        caller: &User,
        ws: WorkspaceId,
    ) -> Result<Vec<Presence>> {
        let members = self.workspace_members(caller, ws).await?;
        Ok(members.into_iter().map(|m| m.presence).collect())
    }

    /// The caller's own presence.
    pub async fn my_presence(&self, caller: &User) -> Result<Presence> {
        let mut presence = self
            .store
            .presence(caller.id)
            .await?
            .ok_or_else(|| not_found("no such user"))?;
        presence.online = self.presence.is_online(caller.id).await;
        Ok(presence)
    }

    /// Sets `online` on presences read from the store (which cannot know it).
    pub(crate) async fn fill_online<'a>(
        &self,
        presences: impl IntoIterator<Item = &'a mut Presence>,
    ) {
        let mut presences: Vec<&mut Presence> = presences.into_iter().collect();
        let users: Vec<UserId> = presences.iter().map(|p| p.user_id).collect();
        let online = self.presence.online_among(&users).await;
        for p in &mut presences {
            p.online = online.contains(&p.user_id);
        }
    }

    /// `presence.updated` (ephemeral) on every workspace of the user; during a storm of
    /// changes, coalesced into `presence.batch` (see [`super::presence_batch`]).
    async fn announce_presence(&self, presence: &Presence) {
        // Coalesced with the other connections' membership reads (a connect storm).
        let workspaces = match self.lookups.memberships.get(presence.user_id).await {
            Ok(memberships) => memberships.map(|(workspaces, _)| workspaces),
            Err(err) => {
                tracing::warn!(user = %presence.user_id, cause = %err, "presence: no workspaces");
                return;
            }
        };
        for workspace in workspaces.unwrap_or_default() {
            self.presence_batch.announce(workspace, presence).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);

    #[tokio::test]
    async fn first_open_and_last_close_change_presence() {
        let p = LocalPresence::default();
        assert!(!p.is_online(ALICE).await);
        assert!(p.open(ALICE).await, "first connection: online");
        assert!(!p.open(ALICE).await, "second tab: no change");
        assert!(p.close(ALICE).await.is_none(), "a tab closed, one left");
        let ticket = p.close(ALICE).await.expect("last connection closed");
        assert!(p.is_online(ALICE).await, "online through the grace period");
        assert!(p.settle(ALICE, ticket).await, "offline after it");
        assert!(!p.is_online(ALICE).await);
        assert!(!p.is_online(BOB).await);
    }

    #[tokio::test]
    async fn a_reconnect_within_the_grace_cancels_the_offline() {
        let p = LocalPresence::default();
        assert!(p.open(ALICE).await);
        let reload = p.close(ALICE).await.expect("last closed");
        assert!(!p.open(ALICE).await, "back within the grace: no change");
        assert!(!p.settle(ALICE, reload).await, "the reload's check is void");
        assert!(p.is_online(ALICE).await);
        // Closing again issues a new ticket; the old one stays void.
        let later = p.close(ALICE).await.expect("last closed");
        assert!(!p.settle(ALICE, reload).await);
        assert!(p.settle(ALICE, later).await);
        assert!(!p.is_online(ALICE).await);
    }

    #[tokio::test]
    async fn a_close_without_open_is_ignored() {
        let p = LocalPresence::default();
        assert!(p.close(BOB).await.is_none());
        assert!(!p.is_online(BOB).await);
    }
}
