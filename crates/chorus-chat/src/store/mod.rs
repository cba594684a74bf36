//! Storage, one trait per area. The domain only sees these traits. They are
//! implemented once, in `sql` (each query written once, for both databases); the
//! backend modules only open their database and say what differs in its dialect:
//! `sqlite` (embedded, one node) and `postgres` (shared by several nodes). Row types
//! are in `rows`.

mod keys;
pub mod postgres;
mod rows;
pub mod sql;
pub mod sqlite;

use std::collections::HashMap;

use async_trait::async_trait;

use chorus_realtime::Publish;

use crate::error::Result;
use crate::model::*;

pub use keys::{KeyPermission, KeyStore, NewServerKey, ServerKey, ServerKeyId};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub struct NewUser {
    pub name: String,
    pub display_name: String,
    pub kind: UserKind,
    pub webhook_url: Option<String>,
    pub is_admin: bool,
}

/// A token to store: only its hash, never the secret.
pub struct NewToken {
    pub user_id: UserId,
    pub hash: String,
    pub name: String,
    pub expires_at: Option<Timestamp>,
    /// The most tokens the user may hold for this one to be added (`Conflict` past
    /// it), counted under the user's row lock so that tokens added at once cannot pass
    /// it together; `None`: no cap.
    pub cap: Option<usize>,
}

/// A one-time sign-in link to store: only the hash of its code, never the code.
pub struct NewSignInCode {
    pub user_id: UserId,
    pub created_by: UserId,
    pub code_hash: String,
    pub expires_at: Timestamp,
}

/// What exchanging a sign-in link's code came to ([`UserStore::redeem_sign_in_link`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Redemption {
    /// The link is used up now, and the user holds the new token. (The user boxed:
    /// the refusals carry nothing.)
    SignedIn { user: Box<User>, token: ApiToken },
    /// No link has this code.
    Unknown,
    /// The link was used before.
    Used,
    /// The link's `expires_at` has passed (unused).
    Expired,
    /// The link's user is deactivated: nothing changed, the link is not used up.
    Deactivated,
}

/// Who a token belongs to, with the token's id and expiry. The user may be deactivated
/// and the token expired: judging that is the service's business.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOwner {
    pub user: User,
    pub token_id: TokenId,
    pub expires_at: Option<Timestamp>,
}

/// A channel as the transaction that created it saw its workspace: what the events
/// logged with it are built from.
pub struct CreatedChannel {
    pub channel: Channel,
    /// For a public channel, the workspace's guests that are not among its first
    /// members (its `channel.created` is not theirs: a guest lists only their own
    /// channels), read under the workspace's shared lock, which a guest's arrival and a
    /// demotion to guest take exclusively: each is ordered before the creation (and
    /// listed here) or after it (and joins the workspace's order after
    /// `channel.created`). Empty for other kinds.
    pub guests: Vec<UserId>,
}

pub struct NewChannel {
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub topic: String,
    pub kind: ChannelKind,
    pub policy: Policy,
    pub created_by: UserId,
    pub members: Vec<UserId>,
    /// For DMs: the sorted participant ids, unique per workspace.
    pub dm_key: Option<String>,
    pub settings: ChannelSettings,
}

/// A channel's own settings; `None`: the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelSettings {
    pub stream_rollup_ms: Option<u64>,
    pub turn_timeout_ms: Option<u64>,
    pub loop_guard_run: Option<u32>,
    pub loop_guard_per_minute: Option<u32>,
}

impl ChannelSettings {
    /// The settings `channel` has.
    pub fn of(channel: &Channel) -> Self {
        Self {
            stream_rollup_ms: channel.stream_rollup_ms,
            turn_timeout_ms: channel.turn_timeout_ms,
            loop_guard_run: channel.loop_guard_run,
            loop_guard_per_minute: channel.loop_guard_per_minute,
        }
    }
}

#[derive(Default)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub policy: Option<Policy>,
    /// All four settings, replaced.
    pub settings: Option<ChannelSettings>,
}

#[derive(Clone)]
pub struct NewMessage {
    pub channel_id: ChannelId,
    pub author_id: UserId,
    pub text: String,
    pub thread_id: Option<MessageId>,
    pub mentions: Vec<UserId>,
    pub idempotency_key: Option<String>,
    /// Opened as a stream (state `streaming`).
    pub streaming: bool,
    /// The agents the message wakes: each gets its turn at it, in its transaction.
    pub turns: NewTurns,
    /// `action` for `/me`.
    pub kind: MessageKind,
    /// Who the message is to be told to beyond its channel (the mentioned, on their own
    /// scope; woken agents, by webhook): the store keeps those who may read the channel
    /// at the message's place in the commit order ([`Inserted::readers`]). Woken agents
    /// (`turns.agents`) are checked the same way, and only readers get a turn.
    pub audience: Vec<UserId>,
}

/// The turns a new message gives (see [`TurnStore`]).
#[derive(Debug, Clone, Default)]
pub struct NewTurns {
    pub agents: Vec<UserId>,
    /// `round_robin`: when the turn passes unless the agent reported `working`.
    pub due_at: Option<Timestamp>,
}

/// An agent's turn at a message: it was woken by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub message_id: MessageId,
    pub agent_id: UserId,
    pub channel_id: ChannelId,
    /// Its latest receipt.
    pub state: Option<ReceiptState>,
    /// `round_robin`: when it passes to the next agent, while it may.
    pub due_at: Option<Timestamp>,
    /// Ended by someone else: `passed` or `cancelled`.
    pub outcome: Option<String>,
}

impl Turn {
    /// Still running: not ended by someone else, nor finished by the agent.
    pub fn open(&self) -> bool {
        self.outcome.is_none()
            && !matches!(
                self.state,
                Some(ReceiptState::Done | ReceiptState::Declined)
            )
    }
}

/// What a change leaves to be done after it commits, written in its own transaction:
/// the events to publish (logged at their scopes' next offsets) and the webhook
/// deliveries to make (queued). Both exist if and only if the change commits.
#[derive(Default)]
pub struct Outbox {
    pub events: Vec<Publish>,
    pub webhooks: Vec<NewWebhookDelivery>,
    /// More events, built from `events` as logged (with their offsets) and logged
    /// after them in the same transaction: `channel.joined` starts its subscription at
    /// the offset of the channel's `member.joined`. Not for plain message inserts
    /// (SQLite's group commit logs in one call).
    pub then: Option<Then>,
}

/// See [`Outbox::then`].
pub type Then = Box<dyn FnOnce(&[Publish]) -> Vec<Publish> + Send>;

impl From<Vec<Publish>> for Outbox {
    fn from(events: Vec<Publish>) -> Self {
        Self {
            events,
            ..Self::default()
        }
    }
}

/// Builds a change's [`Outbox`] from its result, inside the change's transaction.
pub type Events<T> = Box<dyn Fn(&T) -> Outbox + Send + Sync>;

/// An [`Events`] with events only (nothing to deliver by webhook).
pub fn events_only<T>(build: impl Fn(&T) -> Vec<Publish> + Send + Sync + 'static) -> Events<T> {
    Box::new(move |result| build(result).into())
}

/// Who makes a change to a workspace's members, and the least role it takes of them
/// (`Admin`: a manager; `Owner`), asked again in the change's transaction under the
/// workspace's lock: a manager demoted or removed meanwhile (say by another manager
/// acting on them at the same moment) makes no change (`Forbidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acting {
    pub user: UserId,
    pub least: Role,
}

/// A user's connect-proxy epoch ([`UserStore::proxy_epoch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyEpoch {
    pub epoch: i64,
    /// The number of the logout that ended the epoch before it (0: none did); see
    /// [`UserStore::proxy_logouts`].
    pub logout: i64,
}

/// Nothing to publish or deliver for this change.
pub fn no_events<T>() -> Events<T> {
    Box::new(|_| Outbox::default())
}

/// The event log (`store/sql/events.rs`; the engine reads it through
/// `service::StoreLog`). Offsets are per scope, consecutive, in commit order.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends events in a transaction of their own (events of no stored change, or of
    /// a change whose store method does not take [`Events`] yet).
    async fn append_events(&self, events: Vec<Publish>) -> Result<Vec<Publish>>;
    /// The scope's latest offset (the database's offset base when it has none).
    async fn scope_head(&self, scope: &chorus_realtime::Scope) -> Result<u64>;
    /// Every scope's head, with the offset base under the empty name `""`.
    async fn scope_heads(&self) -> Result<Vec<(String, u64)>>;
    /// Scopes with events logged at or after `since`, with their latest offset.
    async fn recent_scopes(&self, since: Timestamp) -> Result<Vec<(String, u64)>>;
    /// The scope's logged events after `after` (at most `limit`, ascending) and its head.
    async fn scope_events(
        &self,
        scope: &chorus_realtime::Scope,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Publish>, u64)>;
    /// The log's `limit` latest events (by log time) among each scope's last
    /// `per_scope`, ordered by scope and offset: what fills the memory windows when a
    /// single node starts.
    async fn latest_events(
        &self,
        limit: usize,
        per_scope: usize,
    ) -> Result<Vec<chorus_realtime::Publish>>;
    /// Deletes events logged before `before` and all but each scope's last
    /// `max_per_scope`. Returns how many went.
    async fn trim_events(&self, max_per_scope: usize, before: Timestamp) -> Result<u64>;
}

/// What inserting a message produced.
pub struct Inserted {
    pub message: Message,
    /// `false` when an earlier send with the same idempotency key was returned instead.
    pub created: bool,
    /// For a new reply: its thread's root with the updated reply count.
    pub root: Option<Message>,
    /// Of the message's [`audience`](NewMessage::audience) and woken agents, those who
    /// may read its channel, checked in its transaction (see
    /// [`MessageStore::insert_message_logged`] for the order this gives), ascending.
    pub readers: Vec<UserId>,
}

/// What editing a message produced.
pub struct Edited {
    pub message: Message,
    /// Of the edit's audience, those who may read the channel, checked in its
    /// transaction like [`Inserted::readers`].
    pub readers: Vec<UserId>,
}

/// What deleting a message changed, all in one transaction.
pub struct Deletion {
    /// The tombstone.
    pub message: Message,
    /// For a reply: its thread's root with the updated reply count.
    pub root: Option<Message>,
    /// The message was pinned (its pin, reactions and mention rows are gone).
    pub unpinned: bool,
}

/// Which page of a channel's history to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageQuery {
    pub before: Option<MessageId>,
    pub after: Option<MessageId>,
    pub limit: u32,
    /// `Some`: the replies of that thread; `None`: top-level messages only.
    pub thread_id: Option<MessageId>,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with `Conflict` when the name is taken.
    async fn create_user(&self, new: NewUser) -> Result<User>;
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    async fn user_by_name(&self, name: &str) -> Result<Option<User>>;
    async fn count_users(&self) -> Result<i64>;
    /// Users by id, the first `limit` after `after`.
    async fn list_users(&self, after: Option<UserId>, limit: u32) -> Result<Vec<User>>;
    /// Deactivates (`Some`: keeps an earlier time when already deactivated) or
    /// reactivates (`None`) a user; `None` when there is no such user.
    async fn set_deactivated(&self, user: UserId, at: Option<Timestamp>) -> Result<Option<User>> {
        Ok(self
            .set_deactivated_logged(user, at, no_events())
            .await?
            .map(|(user, _)| user))
    }
    /// [`set_deactivated`](Self::set_deactivated), logging `events` (built from the
    /// user as changed) with the change.
    async fn set_deactivated_logged(
        &self,
        user: UserId,
        at: Option<Timestamp>,
        events: Events<User>,
    ) -> Result<Option<(User, Vec<Publish>)>>;
    /// The user's connect-proxy epoch: how many times the application logged them out,
    /// and the number of the last logout (`None`: no such user). Sockets and cached
    /// identities the connect proxy vouched for under an earlier epoch no longer count.
    async fn proxy_epoch(&self, user: UserId) -> Result<Option<ProxyEpoch>>;
    /// How many logouts the application made so far, of all users: each one commits
    /// with the next number, in commit order, so a logout committed after this read
    /// has a greater one.
    async fn proxy_logouts(&self) -> Result<i64>;
    /// A logout of `name`, a subject no user has yet: numbered as any logout and kept
    /// a few minutes, so a first sign-in asked about meanwhile is asked again.
    async fn note_unseen_proxy_logout(&self, name: &str) -> Result<()>;
    /// The number of the latest logout of `name` while it had no user (0: none kept).
    async fn unseen_proxy_logout(&self, name: &str) -> Result<i64>;
    /// Ends the user's connect-proxy epoch (the application logged them out), logging
    /// `events` (built from the epoch that ended) with the change: the epoch that ended,
    /// and what was logged; `None` when there is no such user.
    async fn end_proxy_epoch_logged(
        &self,
        user: UserId,
        events: Events<i64>,
    ) -> Result<Option<(i64, Vec<Publish>)>>;
    /// Stores a token. Fails with `Conflict` when the hash exists.
    async fn add_token(&self, new: NewToken) -> Result<ApiToken>;
    /// The token with this hash and its owner.
    async fn token_owner(&self, hash: &str) -> Result<Option<TokenOwner>>;
    /// [`token_owner`](Self::token_owner) of many hashes in one round trip: each known
    /// hash with its owner (unknown ones are left out), in no particular order.
    async fn token_owners(&self, hashes: &[String]) -> Result<Vec<(String, TokenOwner)>>;
    /// A user's tokens, oldest first.
    async fn tokens(&self, user: UserId) -> Result<Vec<ApiToken>>;
    /// Whether `user` has a token with this id (expired or not).
    async fn has_token(&self, user: UserId, id: TokenId) -> Result<bool>;
    /// Deletes one of `user`'s tokens; `false` when `user` has no token with this id.
    async fn delete_token(&self, user: UserId, id: TokenId) -> Result<bool> {
        Ok(self
            .delete_token_logged(user, id, no_events())
            .await?
            .is_some())
    }
    /// [`delete_token`](Self::delete_token), logging `events` with the deletion:
    /// `None` when there was no such token.
    async fn delete_token_logged(
        &self,
        user: UserId,
        id: TokenId,
        events: Events<()>,
    ) -> Result<Option<Vec<Publish>>>;
    /// Stores a sign-in link; returns its id. Fails with `Conflict` when the hash exists.
    async fn add_sign_in_link(&self, new: NewSignInCode) -> Result<i64>;
    /// A user's sign-in links that can still be used (not used, not expired at `now`),
    /// oldest first.
    async fn sign_in_links(&self, user: UserId, now: Timestamp) -> Result<Vec<SignInLink>>;
    /// Revokes one of a user's sign-in links that can still be used (at `now`); `false`
    /// when there is none of that id.
    async fn delete_sign_in_link(&self, user: UserId, id: i64, now: Timestamp) -> Result<bool>;
    /// Exchanges a sign-in link's code (by its hash) for a token of its user, stored
    /// with `token_hash` and named `token_name`: the link is marked used and the token
    /// added in one transaction, so of two exchanges at once one signs in and the other
    /// finds the link [`Used`](Redemption::Used).
    async fn redeem_sign_in_link(
        &self,
        code_hash: &str,
        token_hash: &str,
        token_name: &str,
    ) -> Result<Redemption>;
    /// Records when tokens were last used; a time never moves back (another node may
    /// have written a later one). Unknown ids are ignored.
    async fn touch_tokens(&self, used: &[(TokenId, Timestamp)]) -> Result<()>;
    /// What the database holds of a user's presence. `online` is always `false` here:
    /// connections are the presence tracker's business, not the database's.
    async fn presence(&self, user: UserId) -> Result<Option<Presence>>;
    /// Sets the status text; returns the presence as [`presence`](Self::presence) does.
    async fn set_status_text(&self, user: UserId, text: &str) -> Result<Presence>;
    async fn set_last_seen(&self, user: UserId, at: Timestamp) -> Result<Presence>;
    /// [`set_last_seen`](Self::set_last_seen) of many users in one statement: the
    /// presence of each user found (unknown ones are left out).
    async fn set_last_seen_of(&self, users: &[UserId], at: Timestamp) -> Result<Vec<Presence>>;
}

#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates the workspace with `owner` as its owner.
    async fn create_workspace(&self, name: &str, owner: UserId) -> Result<Workspace> {
        Ok(self
            .create_workspace_logged(name, (owner, None), no_events())
            .await?
            .0)
    }
    /// [`create_workspace`](Self::create_workspace), logging `events` (built from the
    /// new workspace) with it. With `cap`, `Conflict` when `owner` has created that
    /// many workspaces already (counted under the owner's row lock, so concurrent
    /// creations cannot pass it together).
    async fn create_workspace_logged(
        &self,
        name: &str,
        (owner, cap): (UserId, Option<usize>),
        events: Events<Workspace>,
    ) -> Result<(Workspace, Vec<Publish>)>;
    async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>>;
    async fn workspaces_of(&self, user: UserId) -> Result<Vec<WorkspaceMembership>>;
    async fn member_role(&self, ws: WorkspaceId, user: UserId) -> Result<Option<Role>>;
    /// What says since when `user` reads channel `ch` (`None` for a channel that does
    /// not exist): their present memberships of its workspace and of the channel.
    async fn channel_access(&self, ch: ChannelId, user: UserId) -> Result<Option<ChannelAccess>>;
    /// Since when `user` holds their present role in `ws` (their join, or the role's
    /// last change since); `None`: not a member.
    async fn role_since(&self, ws: WorkspaceId, user: UserId) -> Result<Option<Timestamp>>;
    /// Adds a member; `false`, and nothing changed, when the user already is one.
    async fn add_member(&self, ws: WorkspaceId, user: UserId, role: Role) -> Result<bool> {
        Ok(self
            .add_member_logged(ws, user, role, no_events())
            .await?
            .is_some())
    }
    /// [`add_member`](Self::add_member), logging `events` with the change: `None`
    /// when the user already is a member.
    async fn add_member_logged(
        &self,
        ws: WorkspaceId,
        user: UserId,
        role: Role,
        events: Events<()>,
    ) -> Result<Option<Vec<Publish>>>;
    /// Changes a member's role from `from` to `to` (a compare-and-set, so a rule checked
    /// against `from` still holds): `false`, and nothing changed, when the user is not a
    /// member with role `from`. `Conflict` when the workspace would be left without an
    /// owner.
    async fn set_member_role(
        &self,
        ws: WorkspaceId,
        user: UserId,
        from: Role,
        to: Role,
    ) -> Result<bool> {
        Ok(self
            .set_member_role_logged(ws, user, from, to, None, no_events())
            .await?
            .is_some())
    }
    /// [`set_member_role`](Self::set_member_role), logging `events` with the change:
    /// `None` when nothing changed. Made `by` a member whose role must still allow it
    /// when the change is made ([`Acting`]; `None`: a server admin, or the store's
    /// own callers).
    async fn set_member_role_logged(
        &self,
        ws: WorkspaceId,
        user: UserId,
        from: Role,
        to: Role,
        by: Option<Acting>,
        events: Events<()>,
    ) -> Result<Option<Vec<Publish>>>;
    /// Removes a member whose role is `role`, in one transaction with their memberships
    /// of the workspace's channels (DMs included) and their places on its on-duty / wake
    /// lists and observers; their messages stay. Returns the channels they were removed
    /// from (by id); `None`, and nothing changed, when the user is not a member with
    /// role `role`. `Conflict` when the workspace would be left without an owner.
    async fn remove_member(
        &self,
        ws: WorkspaceId,
        user: UserId,
        role: Role,
    ) -> Result<Option<Vec<ChannelId>>> {
        Ok(self
            .remove_member_logged(ws, user, role, None, no_events())
            .await?
            .map(|(channels, _)| channels))
    }
    /// [`remove_member`](Self::remove_member), logging `events` (built from the
    /// channels left) with the change; `by` as for
    /// [`set_member_role_logged`](Self::set_member_role_logged) (`None` for a leave).
    async fn remove_member_logged(
        &self,
        ws: WorkspaceId,
        user: UserId,
        role: Role,
        by: Option<Acting>,
        events: Events<Vec<ChannelId>>,
    ) -> Result<Option<(Vec<ChannelId>, Vec<Publish>)>>;
    /// The members, with `presence.online` left `false` (see [`UserStore::presence`]).
    async fn members(&self, ws: WorkspaceId) -> Result<Vec<Member>>;
}

#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Fails with `Conflict` when the name (or DM key) is taken in the workspace, and
    /// with `BadRequest` when a first member is neither a member of the workspace nor a
    /// server admin (checked in the transaction, in order with removals from it).
    async fn create_channel(&self, new: NewChannel) -> Result<Channel> {
        Ok(self.create_channel_logged(new, no_events()).await?.0)
    }
    /// [`create_channel`](Self::create_channel), logging `events` (built from the new
    /// channel: its creation and its first members' joins) with it.
    async fn create_channel_logged(
        &self,
        new: NewChannel,
        events: Events<CreatedChannel>,
    ) -> Result<(Channel, Vec<Publish>)>;
    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>>;
    /// The channel and whether `user` is a member of it who may post — a member, not
    /// deactivated — in one round trip (asked by every send, and by every append to a
    /// stream this node holds, where it is the only read of the author).
    async fn channel_for(&self, id: ChannelId, user: UserId) -> Result<Option<(Channel, bool)>>;
    async fn dm_by_key(&self, ws: WorkspaceId, key: &str) -> Result<Option<Channel>>;
    /// Public channels of the workspace and every channel `user` is a member of there.
    async fn visible_channels(
        &self,
        ws: WorkspaceId,
        user: UserId,
        include_public: bool,
    ) -> Result<Vec<ChannelView>>;
    async fn update_channel(&self, id: ChannelId, patch: ChannelPatch) -> Result<Channel> {
        Ok(self.update_channel_logged(id, patch, no_events()).await?.0)
    }
    /// [`update_channel`](Self::update_channel), logging `events` (built from the
    /// channel as changed) with the change.
    async fn update_channel_logged(
        &self,
        id: ChannelId,
        patch: ChannelPatch,
        events: Events<Channel>,
    ) -> Result<(Channel, Vec<Publish>)>;
    /// Records the loop guard's change in the channel (read back as `Channel::loop_guard`),
    /// logging `events` with it.
    async fn set_loop_guard(
        &self,
        id: ChannelId,
        guard: &ChannelLoopGuard,
        events: Events<()>,
    ) -> Result<Vec<Publish>>;
    async fn is_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool>;
    /// Adds the member (`true` when new). When new, `events` are logged in the same
    /// transaction: a user's joins and leaves of a channel are in the log in the order
    /// they committed, on every node. Fails with `BadRequest` when the user is neither
    /// a member of the channel's workspace nor a server admin, checked in the
    /// transaction: an add racing a removal from the workspace cannot outlive it.
    async fn add_channel_member_logged(
        &self,
        ch: ChannelId,
        user: UserId,
        events: Events<()>,
    ) -> Result<(bool, Vec<Publish>)>;
    async fn add_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool> {
        Ok(self
            .add_channel_member_logged(ch, user, no_events())
            .await?
            .0)
    }
    /// Removes the member (`true` when they were one), logging `events` with it then.
    async fn remove_channel_member_logged(
        &self,
        ch: ChannelId,
        user: UserId,
        events: Events<()>,
    ) -> Result<(bool, Vec<Publish>)>;
    /// `true` when the user was a member.
    async fn remove_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool> {
        Ok(self
            .remove_channel_member_logged(ch, user, no_events())
            .await?
            .0)
    }
    async fn channel_members(&self, ch: ChannelId) -> Result<Vec<UserId>>;
    /// Every channel the user is a member of, in any workspace.
    async fn member_channels(&self, user: UserId) -> Result<Vec<ChannelId>>;
    /// The workspaces and the channels the user is a member of, in one round trip:
    /// what a new connection subscribes to, asked once per connection.
    async fn memberships_of(&self, user: UserId) -> Result<(Vec<WorkspaceId>, Vec<ChannelId>)>;
    /// [`memberships_of`](Self::memberships_of) of many users in one round trip; a user
    /// who is a member of nothing is left out.
    async fn memberships_of_users(
        &self,
        users: &[UserId],
    ) -> Result<HashMap<UserId, (Vec<WorkspaceId>, Vec<ChannelId>)>>;
    /// The presence of every member (`online` left `false`).
    async fn channel_presence(&self, ch: ChannelId) -> Result<Vec<Presence>>;
}

/// What marking a channel read did.
#[derive(Debug, Clone, PartialEq)]
pub struct Marked {
    /// Whether the cursor moved (it never moves back).
    pub moved: bool,
    /// The member's read state after it; `None` when `user` is not a member.
    pub state: Option<ReadState>,
}

#[async_trait]
pub trait ReadStore: Send + Sync {
    /// Moves the member's read cursor forward to `message` (never back, so a stale tab
    /// cannot un-read what another tab read) and reads the member's state after it.
    /// When the cursor moved, `events` are built from that state and logged in the
    /// same transaction: a user's read events follow the cursors' commit order, on
    /// every node (their offsets are their versions).
    async fn mark_read_logged(
        &self,
        ch: ChannelId,
        user: UserId,
        message: MessageId,
        events: Events<ReadState>,
    ) -> Result<(Marked, Vec<Publish>)>;
    /// [`mark_read_logged`](Self::mark_read_logged) without events: `true` when the
    /// cursor moved.
    async fn mark_read(&self, ch: ChannelId, user: UserId, message: MessageId) -> Result<bool> {
        let (marked, _) = self
            .mark_read_logged(ch, user, message, no_events())
            .await?;
        Ok(marked.moved)
    }
    /// The member's cursor and unread counts; `None` when `user` is not a member.
    async fn read_state(&self, ch: ChannelId, user: UserId) -> Result<Option<ReadState>>;
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Inserts a message (and, for a reply, updates its root's reply count and last
    /// reply time in the same transaction). With an idempotency key that `author_id`
    /// already used, returns the earlier message with `created: false` instead.
    ///
    /// Messages come back complete: reactions summarized, pinned flag, thread summary.
    ///
    /// `events` are built from a new message (never from an earlier one) and logged in
    /// its transaction; they come back with their offsets.
    ///
    /// Who of the audience may read the channel ([`Inserted::readers`]) is checked in
    /// that transaction too, with the channel's row locked (PostgreSQL) or the single
    /// writer held (SQLite). Every change that takes reading away — leaving or removal,
    /// removal from the workspace, a demotion to guest — takes the same lock before it
    /// changes anything, so the check sees the changes committed before the message and
    /// none after: nothing about a message is logged on a user's scope, or queued for
    /// an agent, after the `channel.left` (or `workspace.left`, `member.role_changed`)
    /// that took their reading away. So is the author's membership of the channel:
    /// `Forbidden` (nothing stored) for an author who left it, or was removed, before
    /// the message.
    async fn insert_message_logged(
        &self,
        new: NewMessage,
        events: Events<Inserted>,
    ) -> Result<(Inserted, Vec<Publish>)>;
    async fn insert_message(&self, new: NewMessage) -> Result<Inserted> {
        Ok(self.insert_message_logged(new, no_events()).await?.0)
    }
    async fn message(&self, id: MessageId) -> Result<Option<Message>>;
    async fn list_messages(&self, ch: ChannelId, query: MessageQuery) -> Result<Vec<Message>>;
    /// Replaces the text and the mentions (re-parsed from the new text). `NotFound`
    /// when the message is deleted. `events` are logged in the same transaction, built
    /// knowing which of `audience` may read the channel ([`Edited::readers`]).
    async fn edit_message_logged(
        &self,
        id: MessageId,
        text: &str,
        mentions: &[UserId],
        audience: &[UserId],
        events: Events<Edited>,
    ) -> Result<(Edited, Vec<Publish>)>;
    async fn edit_message(
        &self,
        id: MessageId,
        text: &str,
        mentions: &[UserId],
    ) -> Result<Message> {
        let edit = self.edit_message_logged(id, text, mentions, &[], no_events());
        Ok(edit.await?.0.message)
    }
    /// Turns the message into a tombstone and drops its reactions, pin and mentions.
    /// `NotFound` when there is no such message or it is already deleted. `events` are
    /// logged in the same transaction.
    async fn delete_message_logged(
        &self,
        id: MessageId,
        events: Events<Deletion>,
    ) -> Result<(Deletion, Vec<Publish>)>;
    async fn delete_message(&self, id: MessageId) -> Result<Deletion> {
        Ok(self.delete_message_logged(id, no_events()).await?.0)
    }
    /// Adds each text to the end of its streaming message as the message's next
    /// roll-up, all in one transaction (a channel's roll-up): each message's `seq` goes
    /// up by one and its last write time becomes `at`. Returns the new `seq`s in the
    /// order given; `None` for a message that is not streaming (completed, aborted,
    /// deleted or gone).
    async fn append_streams(
        &self,
        appends: &[(MessageId, &str)],
        at: Timestamp,
    ) -> Result<Vec<Option<u64>>>;
    /// Ends a stream: state `to` (`complete` or `aborted`) and, as its text, `text` when
    /// given, else what it holds with `tail` added. `None`, and nothing changed, when
    /// the message is not streaming. `events` are logged in the same transaction.
    async fn end_stream_logged(
        &self,
        id: MessageId,
        to: MessageState,
        text: Option<&str>,
        tail: &str,
        events: Events<Message>,
    ) -> Result<Option<(Message, Vec<Publish>)>>;
    /// Streaming messages whose last write was before `before` (at most `limit`).
    async fn idle_streams(&self, before: Timestamp, limit: u32) -> Result<Vec<MessageId>>;
}

#[async_trait]
pub trait ReactionStore: Send + Sync {
    /// Adds or removes (`add: false`) a reaction; `true` when that changed something.
    /// `events` (given whether it changed) are logged in the same transaction. Either
    /// is refused as `Chat::visible_message` refuses, asked in that transaction:
    /// `NotFound` (no such or a deleted message), `Forbidden` (`user` may not read it).
    async fn set_reaction_logged(
        &self,
        message: MessageId,
        user: UserId,
        emoji: &str,
        add: bool,
        events: Events<bool>,
    ) -> Result<(bool, Vec<Publish>)>;
    /// `true` when the reaction is new.
    async fn add_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> Result<bool> {
        let set = self.set_reaction_logged(message, user, emoji, true, no_events());
        Ok(set.await?.0)
    }
    /// `true` when the reaction existed.
    async fn remove_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> Result<bool> {
        let set = self.set_reaction_logged(message, user, emoji, false, no_events());
        Ok(set.await?.0)
    }
}

#[async_trait]
pub trait PinStore: Send + Sync {
    /// Pins `message` in its channel; returns the pin and whether it is new. `events`
    /// (given the pin and whether it is new) are logged in the same transaction.
    /// Refused, asked in that transaction, as a reaction is ([`ReactionStore`]), and
    /// `Forbidden` unless `by` is a member of the channel.
    async fn pin_logged(
        &self,
        ch: ChannelId,
        message: MessageId,
        by: UserId,
        events: Events<(Pin, bool)>,
    ) -> Result<((Pin, bool), Vec<Publish>)>;
    async fn pin(&self, ch: ChannelId, message: MessageId, by: UserId) -> Result<(Pin, bool)> {
        Ok(self.pin_logged(ch, message, by, no_events()).await?.0)
    }
    /// `by` unpins `message`: `true` when it was pinned. `events` (given that) are
    /// logged in the same transaction. Refused, asked in that transaction, as a pin is.
    async fn unpin_logged(
        &self,
        ch: ChannelId,
        message: MessageId,
        by: UserId,
        events: Events<bool>,
    ) -> Result<(bool, Vec<Publish>)>;
    async fn unpin(&self, ch: ChannelId, message: MessageId, by: UserId) -> Result<bool> {
        Ok(self.unpin_logged(ch, message, by, no_events()).await?.0)
    }
    /// The channel's pins, most recently pinned first (none of a deleted message).
    async fn pins(&self, ch: ChannelId) -> Result<Vec<Pin>>;
    /// How many [`pins`](Self::pins) lists.
    async fn count_pins(&self, ch: ChannelId) -> Result<i64>;
}

// ---- Agent-aware delivery (SPEC §4) -------------------------------------------------
// Everything issue 6 added to storage is in this section and in `AgentStore`, so another
// backend can port it in one place.

/// The per-channel user lists of the delivery policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryList {
    /// Woken by every message of an `on_duty` channel.
    OnDuty,
    /// Woken by every message of a `custom` channel.
    Wake,
}

impl DeliveryList {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OnDuty => "on_duty",
            Self::Wake => "wake",
        }
    }
}

/// An agent member of a channel, as webhook delivery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMember {
    pub id: UserId,
    pub webhook_url: Option<String>,
}

/// An event to queue for an agent's webhook.
pub struct NewWebhookDelivery {
    pub user_id: UserId,
    pub event_id: String,
    pub url: String,
    /// The exact JSON body to POST (what is signed).
    pub body: String,
    pub due_at: Timestamp,
}

/// Why a deactivated user's pending webhook deliveries were given up.
pub const DEACTIVATED_WEBHOOK: &str = "the agent was deactivated";

/// Why a delivery whose agent no longer has a webhook was given up.
pub const NO_WEBHOOK: &str = "the agent's webhook was removed";

/// How many due deliveries one claim takes ([`AgentStore::claim_due_webhooks`]): at most
/// `total`, at most `per_user` of one user's (the oldest due first), none of the `busy`
/// users'. The worker takes one per user a claim and skips the users whose attempts fill
/// their share of its slots, so one receiver that never answers (each attempt holds a
/// slot for the whole timeout) cannot keep everyone else's deliveries waiting.
#[derive(Debug, Clone)]
pub struct ClaimLimits {
    pub total: u32,
    pub per_user: u32,
    pub busy: Vec<UserId>,
}

impl ClaimLimits {
    /// At most `total`, whoever they are for.
    pub fn total(total: u32) -> Self {
        Self {
            total,
            per_user: total,
            busy: Vec::new(),
        }
    }
}

/// A delivery claimed for an attempt (see [`AgentStore::claim_due_webhooks`]).
#[derive(Debug, Clone)]
pub struct DueWebhook {
    pub id: i64,
    pub user_id: UserId,
    pub event_id: String,
    pub url: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The agent's current signing secret.
    pub secret: Option<String>,
}

/// What an attempt leaves a delivery in. `Refused`: the target was not allowed, nothing
/// was sent, and it is never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    Retry { at: Timestamp },
    Failed,
    Refused,
}

#[async_trait]
pub trait AgentStore: Send + Sync {
    /// A channel's on-duty or wake list, by user id.
    async fn delivery_list(&self, ch: ChannelId, list: DeliveryList) -> Result<Vec<UserId>>;
    /// Replaces the list, logging `events` with the change (one transaction).
    async fn set_delivery_list(
        &self,
        ch: ChannelId,
        list: DeliveryList,
        users: &[UserId],
        events: Events<()>,
    ) -> Result<Vec<Publish>>;
    /// Who observes the workspace's `on_duty` channels, by user id.
    async fn observers(&self, ws: WorkspaceId) -> Result<Vec<UserId>>;
    /// Replaces the observers, logging `events` with the change (one transaction).
    async fn set_observers(
        &self,
        ws: WorkspaceId,
        users: &[UserId],
        events: Events<()>,
    ) -> Result<Vec<Publish>>;
    /// The channel's members of kind `agent`, by id; deactivated agents are left out (they
    /// are neither rotated to nor sent webhooks).
    async fn agent_members(&self, ch: ChannelId) -> Result<Vec<AgentMember>>;
    /// The agent a `round_robin` channel woke last.
    async fn last_woken(&self, ch: ChannelId) -> Result<Option<UserId>>;
    /// Compare-and-set of the turn state: moves it from `from` to `to` only if it is
    /// still `from`. `false` when another writer moved it first.
    async fn advance_turn(&self, ch: ChannelId, from: Option<UserId>, to: UserId) -> Result<bool>;
    /// Sets an agent's webhook URL and signing secret; returns the user.
    async fn set_webhook(
        &self,
        user: UserId,
        url: Option<&str>,
        secret: Option<&str>,
    ) -> Result<User>;
    /// Queues a delivery; `false` when this event is already queued (or delivered) for
    /// this agent.
    async fn enqueue_webhook(&self, new: NewWebhookDelivery) -> Result<bool>;
    /// Pending deliveries due at `now`, as `limits` say, each leased until `lease_until`
    /// (not due again before then, so a crashed attempt is retried but a running one is
    /// not claimed twice). A due delivery of a user deactivated now is given up
    /// ([`DEACTIVATED_WEBHOOK`]) instead, whenever it was queued; an agent's goes to its
    /// webhook URL as it is now (the row then shows the URL of its latest attempt), or
    /// is given up ([`NO_WEBHOOK`]) when it has none any more.
    async fn claim_due_webhooks(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limits: &ClaimLimits,
    ) -> Result<Vec<DueWebhook>>;
    /// When the earliest pending delivery is due.
    async fn next_webhook_due(&self) -> Result<Option<Timestamp>>;
    /// Records one attempt and its outcome; a retry leaves a delivery given up
    /// meanwhile as it is.
    async fn record_webhook_attempt(
        &self,
        delivery: i64,
        attempt: &WebhookAttempt,
        outcome: AttemptOutcome,
    ) -> Result<()>;
    /// An agent's deliveries, newest first, each with its attempts.
    async fn webhook_deliveries(&self, user: UserId, limit: u32) -> Result<Vec<WebhookDelivery>>;
    /// Gives up every pending delivery of `user` (recorded as failed with `error`, at
    /// `at`); how many there were. An attempt in flight still records its outcome.
    async fn fail_pending_webhooks(&self, user: UserId, at: Timestamp, error: &str) -> Result<u64>;
}

/// Turns and receipts (issue 19): one row per agent a message woke.
#[async_trait]
pub trait TurnStore: Send + Sync {
    /// Agent `agent`'s turn at `message`, if the message woke it.
    async fn turn(&self, message: MessageId, agent: UserId) -> Result<Option<Turn>>;
    /// Every turn at `message`, by agent id.
    async fn turns(&self, message: MessageId) -> Result<Vec<Turn>>;
    /// Records `agent`'s receipt `state` for `message` (`working`, `done` and
    /// `declined` stop a round-robin turn from passing) and rewrites the message's
    /// receipts summary. `None`, and nothing changed, when its receipt already was
    /// `state` (or it has no turn there). `events`, built from the new summary, are
    /// logged in the same transaction.
    async fn set_receipt_logged(
        &self,
        message: MessageId,
        agent: UserId,
        state: ReceiptState,
        events: Events<Vec<Receipt>>,
    ) -> Result<Option<(Vec<Receipt>, Vec<Publish>)>>;
    /// Ends the open turns of `agents` at `message` as `cancelled`; returns whose were
    /// (the others were not open). `events`, built from those, are logged in the same
    /// transaction.
    async fn cancel_turns_logged(
        &self,
        message: MessageId,
        agents: &[UserId],
        events: Events<Vec<UserId>>,
    ) -> Result<(Vec<UserId>, Vec<Publish>)>;
    /// Round-robin turns due at `now` (at most `limit`), the earliest first.
    async fn overdue_turns(&self, now: Timestamp, limit: u32) -> Result<Vec<Turn>>;
    /// Passes `turn` (still due) to the first of `next` (the rotation's order) that may
    /// still read the channel — a new turn due at `due` — and the channel's rotation
    /// with it when it still stood at the turn's agent; to nobody when none may. Who may
    /// read is asked in the pass's transaction, with the channel's row held, as for a
    /// new message ([`MessageStore::insert_message_logged`]): an agent removed before
    /// the pass commits is passed over, so neither its turn nor its wake follows its
    /// `member.left`. Returns whom the turn went to. `None`, and nothing changed, when
    /// the turn is no longer due (the agent reported, another node passed it).
    /// `events`, built knowing whom it went to, are logged in the same transaction.
    async fn pass_turn_logged(
        &self,
        turn: &Turn,
        next: &[UserId],
        due: Timestamp,
        events: Events<Option<UserId>>,
    ) -> Result<Option<(Option<UserId>, Vec<Publish>)>>;
    /// The streaming messages `author` opened in `channel` after `after`.
    async fn streams_after(
        &self,
        author: UserId,
        channel: ChannelId,
        after: MessageId,
    ) -> Result<Vec<MessageId>>;
    /// `agent`'s latest open turn in `channel` at a message before `before`.
    async fn open_turn_before(
        &self,
        agent: UserId,
        channel: ChannelId,
        before: MessageId,
    ) -> Result<Option<Turn>>;
}

/// Whether the database answers (feeds `/readyz`), and closing it at shutdown.
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// One trivial query.
    async fn ping(&self) -> Result<()>;
    /// Stops the backend's background tasks, leaves the database tidy (SQLite: the WAL
    /// copied into the file) and closes the connections. Nothing may use the store
    /// afterwards.
    async fn close(&self);
}

// ---- Slash commands (issue 21) ------------------------------------------------------

/// Commands that can be invoked in one workspace, at most (every member lists them all,
/// and any agent may register its own): one more is refused (`Conflict`). One whose
/// agent or registrant is gone is listed nowhere and does not count.
pub const MAX_COMMANDS_PER_WORKSPACE: usize = 500;

/// A slash command to register; exactly one of `target_user_id` and `webhook_url`.
pub struct NewCommand {
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub description: String,
    pub target_user_id: Option<UserId>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub created_by: UserId,
}

/// What invoking a command delivers ([`CommandStore::invoke_command_logged`]).
#[derive(Default)]
pub struct Invocation {
    /// Logged and queued as a change's are: `command.invoked` on the agent's scope, and
    /// the agent's webhook delivery.
    pub outbox: Outbox,
    /// A `webhook_url` command's deliveries: queued under its registrant, signed with
    /// the command's secret.
    pub command_webhooks: Vec<NewWebhookDelivery>,
}

#[async_trait]
pub trait CommandStore: Send + Sync {
    /// Registers a command; `None` when the workspace has one of that name already
    /// that can be invoked. One that cannot (the rule of
    /// [`invoke_command_logged`](Self::invoke_command_logged)) is replaced: it is listed
    /// nowhere, so its name would otherwise be taken for good. The returned command
    /// carries no secret. `Conflict` when the workspace holds
    /// [`MAX_COMMANDS_PER_WORKSPACE`] (counted under the workspace's lock).
    async fn create_command(&self, new: NewCommand) -> Result<Option<Command>>;
    /// A workspace's commands that can be invoked now (the rule of
    /// [`invoke_command_logged`](Self::invoke_command_logged)), by name.
    async fn commands(&self, ws: WorkspaceId) -> Result<Vec<Command>>;
    async fn command(&self, id: CommandId) -> Result<Option<Command>>;
    /// The command of that name, whether or not it can be invoked now.
    async fn command_named(&self, ws: WorkspaceId, name: &str) -> Result<Option<Command>>;
    /// `false` when there was no such command.
    async fn delete_command(&self, id: CommandId) -> Result<bool>;
    /// Logs and queues `invocation`, typed by `invoker` in channel `ch`, if command `id`
    /// can be invoked: whom it acts for — its agent, or a `webhook_url` command's
    /// registrant — is active and a member of the workspace (a registrant who is a
    /// server admin needs no membership), and the invoker is still a member of the
    /// channel. Asked in the invocation's transaction, holding (shared) the workspace's
    /// row as removals from the workspace and role changes hold it, the channel's as
    /// leaves and sends do, and the acting user's as deactivation does: a removal
    /// either commits first (and is seen) or waits for the invocation, so nothing of
    /// it is logged or queued after the removal's `workspace.left` or `channel.left`.
    /// [`Invoked::Refused`], and nothing logged or queued, when it cannot (or is gone).
    ///
    /// With an idempotency key, the invocation is remembered with its `answer` in the
    /// same transaction; one the invoker made with that key before is
    /// [`Invoked::Replayed`] (asked first, whatever became of the command since), and
    /// nothing is logged or queued again.
    async fn invoke_command_logged(
        &self,
        id: CommandId,
        (ch, invoker): (ChannelId, UserId),
        invocation: Invocation,
        key: Option<IdempotentAnswer<'_>>,
    ) -> Result<Invoked>;
    /// The channel and answer of the invocation `user` made with idempotency key `key`,
    /// if any (what [`invoke_command_logged`](Self::invoke_command_logged) remembered).
    async fn command_invocation(
        &self,
        user: UserId,
        key: &str,
    ) -> Result<Option<(ChannelId, String)>>;
    /// Forgets the invocations remembered before `before`: a retry with one of their
    /// keys runs anew. Returns how many went.
    async fn forget_command_invocations(&self, before: Timestamp) -> Result<u64>;
}

/// An invocation's idempotency key and the answer a retry with it gets.
#[derive(Debug, Clone, Copy)]
pub struct IdempotentAnswer<'a> {
    pub key: &'a str,
    pub answer: &'a str,
}

/// What became of an invocation ([`CommandStore::invoke_command_logged`]).
#[derive(Debug)]
pub enum Invoked {
    /// Delivered: its events, logged.
    Logged(Vec<Publish>),
    /// The command cannot be invoked (its rule), or the invoker left the channel.
    Refused,
    /// The invoker used the key before, in `channel_id`, and was answered `answer`.
    Replayed {
        channel_id: ChannelId,
        answer: String,
    },
}

/// Everything the domain needs from a database.
pub trait Store:
    HealthStore
    + EventStore
    + UserStore
    + WorkspaceStore
    + ChannelStore
    + ReadStore
    + MessageStore
    + ReactionStore
    + PinStore
    + AgentStore
    + TurnStore
    + KeyStore
    + CommandStore
{
}

impl<T> Store for T where
    T: HealthStore
        + EventStore
        + UserStore
        + WorkspaceStore
        + ChannelStore
        + ReadStore
        + MessageStore
        + ReactionStore
        + PinStore
        + AgentStore
        + TurnStore
        + KeyStore
        + CommandStore
{
}

/// A user's standing in a channel and its workspace, for when their read access began
/// ([`WorkspaceStore::channel_access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAccess {
    /// The channel is public: its workspace's members (not guests) read it without
    /// joining it.
    pub public: bool,
    /// When their present read access through the workspace began (they joined it, or
    /// were made a member from a guest); `None`: not a member of it.
    pub workspace_since: Option<Timestamp>,
    /// A guest of the workspace.
    pub guest: bool,
    /// When they joined the channel (a re-join is a new membership); `None`: not in it.
    pub channel_since: Option<Timestamp>,
}
