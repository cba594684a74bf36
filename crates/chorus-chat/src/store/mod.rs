//! Storage, one trait per area. The domain only sees these traits; each database has a
//! backend module implementing all of them (`sqlite` now, `postgres` to come).

pub mod sqlite;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::*;

pub use sqlite::SqliteStore;

pub struct NewUser {
    pub name: String,
    pub display_name: String,
    pub kind: UserKind,
    pub webhook_url: Option<String>,
    pub is_admin: bool,
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
}

#[derive(Default)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub policy: Option<Policy>,
}

pub struct NewMessage {
    pub channel_id: ChannelId,
    pub author_id: UserId,
    pub text: String,
    pub thread_id: Option<MessageId>,
    pub mentions: Vec<UserId>,
    pub idempotency_key: Option<String>,
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
    async fn add_token(&self, user: UserId, hash: &str, label: &str) -> Result<()>;
    async fn user_by_token_hash(&self, hash: &str) -> Result<Option<User>>;
}

#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates the workspace with `owner` as its owner.
    async fn create_workspace(&self, name: &str, owner: UserId) -> Result<Workspace>;
    async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>>;
    async fn workspaces_of(&self, user: UserId) -> Result<Vec<WorkspaceMembership>>;
    async fn member_role(&self, ws: WorkspaceId, user: UserId) -> Result<Option<Role>>;
    /// Adds or re-roles a member; `true` when the user was not a member before.
    async fn put_member(&self, ws: WorkspaceId, user: UserId, role: Role) -> Result<bool>;
    async fn members(&self, ws: WorkspaceId) -> Result<Vec<Member>>;
}

#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Fails with `Conflict` when the name (or DM key) is taken in the workspace.
    async fn create_channel(&self, new: NewChannel) -> Result<Channel>;
    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>>;
    async fn dm_by_key(&self, ws: WorkspaceId, key: &str) -> Result<Option<Channel>>;
    /// Public channels of the workspace and every channel `user` is a member of there.
    async fn visible_channels(
        &self,
        ws: WorkspaceId,
        user: UserId,
        include_public: bool,
    ) -> Result<Vec<ChannelView>>;
    async fn update_channel(&self, id: ChannelId, patch: ChannelPatch) -> Result<Channel>;
    async fn is_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool>;
    /// `true` when the user was not a member before.
    async fn add_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool>;
    /// `true` when the user was a member.
    async fn remove_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool>;
    async fn channel_members(&self, ch: ChannelId) -> Result<Vec<UserId>>;
    /// Every channel the user is a member of, in any workspace.
    async fn member_channels(&self, user: UserId) -> Result<Vec<ChannelId>>;
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Inserts a message. With an idempotency key that `author_id` already used, returns
    /// the earlier message and `false` instead.
    async fn insert_message(&self, new: NewMessage) -> Result<(Message, bool)>;
    async fn message(&self, id: MessageId) -> Result<Option<Message>>;
    async fn list_messages(&self, ch: ChannelId, query: MessageQuery) -> Result<Vec<Message>>;
    async fn edit_message(&self, id: MessageId, text: &str) -> Result<Message>;
    async fn delete_message(&self, id: MessageId) -> Result<Message>;
}

/// Everything the domain needs from a database.
pub trait Store: UserStore + WorkspaceStore + ChannelStore + MessageStore {}

impl<T: UserStore + WorkspaceStore + ChannelStore + MessageStore> Store for T {}
