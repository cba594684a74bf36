//! Rows as both backends read them, and their conversion into domain types.
//!
//! The two schemas store the same columns with the same representation (ids as
//! 64-bit integers, times as Unix milliseconds, enums as text, mentions as a JSON
//! array), so one row type per table serves both; only the SQL differs.

use std::collections::HashMap;
use std::str::FromStr;

use crate::error::{ChatError, Result};
use crate::model::*;

/// Maps a unique-constraint violation to `Conflict`, anything else as `From` does.
pub(crate) fn conflict_or(err: sqlx::Error, what: &str) -> ChatError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ChatError::Conflict(format!("{what} already exists"))
        }
        _ => err.into(),
    }
}

pub(crate) fn parse<T: FromStr<Err = String>>(text: &str) -> Result<T> {
    text.parse()
        .map_err(|e: String| ChatError::Internal(anyhow::anyhow!("corrupt row: {e}")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: i64,
    name: String,
    display_name: String,
    kind: String,
    webhook_url: Option<String>,
    status_text: String,
    is_admin: bool,
    created_at: i64,
    deactivated_at: Option<i64>,
}

impl UserRow {
    pub(crate) fn into_user(self) -> Result<User> {
        Ok(User {
            id: UserId(self.id),
            name: self.name,
            display_name: self.display_name,
            kind: parse(&self.kind)?,
            webhook_url: self.webhook_url,
            status_text: self.status_text,
            is_admin: self.is_admin,
            created_at: Timestamp(self.created_at),
            deactivated_at: self.deactivated_at.map(Timestamp),
        })
    }
}

/// A token as listed, read with either backend's `TOKEN_COLUMNS`.
#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    id: i64,
    name: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl From<TokenRow> for ApiToken {
    fn from(r: TokenRow) -> Self {
        Self {
            id: TokenId(r.id),
            name: r.name,
            created_at: Timestamp(r.created_at),
            expires_at: r.expires_at.map(Timestamp),
            last_used_at: r.last_used_at.map(Timestamp),
        }
    }
}

/// A token's owner with the token's id and expiry (`UserStore::token_owner`).
#[derive(sqlx::FromRow)]
pub(crate) struct TokenOwnerRow {
    #[sqlx(flatten)]
    user: UserRow,
    token_id: i64,
    token_expires_at: Option<i64>,
}

/// A [`TokenOwnerRow`] with the token's hash, for a lookup of many hashes at once.
#[derive(sqlx::FromRow)]
pub(crate) struct HashedTokenOwnerRow {
    #[sqlx(flatten)]
    pub(crate) owner: TokenOwnerRow,
    pub(crate) token_hash: String,
}

impl TokenOwnerRow {
    pub(crate) fn into_owner(self) -> Result<crate::store::TokenOwner> {
        Ok(crate::store::TokenOwner {
            user: self.user.into_user()?,
            token_id: TokenId(self.token_id),
            expires_at: self.token_expires_at.map(Timestamp),
        })
    }
}

/// A user as others see them, read with either backend's `PROFILE_COLUMNS`: the
/// webhook and the admin flag are not even selected.
#[derive(sqlx::FromRow)]
pub(crate) struct ProfileRow {
    id: i64,
    name: String,
    display_name: String,
    kind: String,
    status_text: String,
    created_at: i64,
}

impl ProfileRow {
    pub(crate) fn into_profile(self) -> Result<UserProfile> {
        Ok(UserProfile {
            id: UserId(self.id),
            name: self.name,
            display_name: self.display_name,
            kind: parse(&self.kind)?,
            status_text: self.status_text,
            created_at: Timestamp(self.created_at),
        })
    }
}

/// A presence read from the database (`id, last_seen, status_text`): `online` is the
/// tracker's to fill in.
pub(crate) fn presence_row((id, last_seen, status_text): (i64, Option<i64>, String)) -> Presence {
    Presence {
        user_id: UserId(id),
        online: false,
        last_seen: last_seen.map(Timestamp),
        status_text,
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct WorkspaceRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) created_by: i64,
    pub(crate) created_at: i64,
}

impl From<WorkspaceRow> for Workspace {
    fn from(r: WorkspaceRow) -> Self {
        Self {
            id: WorkspaceId(r.id),
            name: r.name,
            created_by: UserId(r.created_by),
            created_at: Timestamp(r.created_at),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ChannelRow {
    pub(crate) id: i64,
    workspace_id: i64,
    name: String,
    topic: String,
    kind: String,
    policy: String,
    created_by: i64,
    created_at: i64,
    stream_rollup_ms: Option<i64>,
    turn_timeout_ms: Option<i64>,
    loop_guard_run: Option<i64>,
    loop_guard_per_minute: Option<i64>,
    loop_guard_state: Option<String>,
    loop_guard_reason: Option<String>,
    loop_guard_since: Option<i64>,
}

impl ChannelRow {
    pub(crate) fn into_channel(self) -> Result<Channel> {
        Ok(Channel {
            id: ChannelId(self.id),
            workspace_id: WorkspaceId(self.workspace_id),
            name: self.name,
            topic: self.topic,
            kind: parse(&self.kind)?,
            policy: parse(&self.policy)?,
            created_by: UserId(self.created_by),
            created_at: Timestamp(self.created_at),
            stream_rollup_ms: self.stream_rollup_ms.and_then(|v| u64::try_from(v).ok()),
            turn_timeout_ms: self.turn_timeout_ms.and_then(|v| u64::try_from(v).ok()),
            loop_guard_run: self.loop_guard_run.and_then(|v| u32::try_from(v).ok()),
            loop_guard_per_minute: self
                .loop_guard_per_minute
                .and_then(|v| u32::try_from(v).ok()),
            loop_guard: match (
                self.loop_guard_state,
                self.loop_guard_reason,
                self.loop_guard_since,
            ) {
                (Some(state), Some(reason), Some(since)) => Some(ChannelLoopGuard {
                    state: parse(&state)?,
                    reason,
                    since: Timestamp(since),
                }),
                _ => None,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
    id: i64,
    channel_id: i64,
    author_id: i64,
    text: String,
    thread_id: Option<i64>,
    mentions: String,
    created_at: i64,
    edited_at: Option<i64>,
    deleted: bool,
    reply_count: i64,
    last_reply_at: Option<i64>,
    pinned: bool,
    state: String,
    stream_seq: i64,
    receipts: String,
    kind: String,
}

impl MessageRow {
    /// The message without its reactions; see [`attach_reactions`].
    pub(crate) fn into_message(self) -> Result<Message> {
        let mentions: Vec<i64> = serde_json::from_str(&self.mentions)
            .map_err(|e| ChatError::Internal(anyhow::anyhow!("corrupt mentions: {e}")))?;
        Ok(Message {
            id: MessageId(self.id),
            channel_id: ChannelId(self.channel_id),
            author_id: UserId(self.author_id),
            text: self.text,
            thread_id: self.thread_id.map(MessageId),
            mentions: mentions.into_iter().map(UserId).collect(),
            created_at: Timestamp(self.created_at),
            edited_at: self.edited_at.map(Timestamp),
            deleted: self.deleted,
            reply_count: self.reply_count,
            last_reply_at: self.last_reply_at.map(Timestamp),
            reactions: Vec::new(),
            pinned: self.pinned,
            state: self
                .state
                .parse()
                .map_err(|e| ChatError::Internal(anyhow::anyhow!("corrupt message state: {e}")))?,
            seq: u64::try_from(self.stream_seq).unwrap_or(0),
            receipts: serde_json::from_str(&self.receipts)
                .map_err(|e| ChatError::Internal(anyhow::anyhow!("corrupt receipts: {e}")))?,
            kind: self
                .kind
                .parse()
                .map_err(|e| ChatError::Internal(anyhow::anyhow!("corrupt message kind: {e}")))?,
        })
    }
}

/// A channel and whether a given user is a member of it (`ChannelStore::channel_for`).
#[derive(sqlx::FromRow)]
pub(crate) struct ChannelForRow {
    #[sqlx(flatten)]
    channel: ChannelRow,
    member: bool,
}

impl ChannelForRow {
    pub(crate) fn into_pair(self) -> Result<(Channel, bool)> {
        Ok((self.channel.into_channel()?, self.member))
    }
}

/// `(kind, id)` rows of `ChannelStore::memberships_of` (kind 0: a workspace, 1: a
/// channel) split into workspaces and channels.
pub(crate) fn memberships(rows: Vec<(i32, i64)>) -> (Vec<WorkspaceId>, Vec<ChannelId>) {
    let mut workspaces = Vec::new();
    let mut channels = Vec::new();
    for (kind, id) in rows {
        if kind == 0 {
            workspaces.push(WorkspaceId(id));
        } else {
            channels.push(ChannelId(id));
        }
    }
    (workspaces, channels)
}

/// The message a successful insert of `new` created: nothing has reacted to it, pinned
/// it or replied to it yet, so it needs no read back.
pub(crate) fn created_message(
    new: &crate::store::NewMessage,
    id: MessageId,
    created_at: Timestamp,
) -> Message {
    Message {
        id,
        channel_id: new.channel_id,
        author_id: new.author_id,
        text: new.text.clone(),
        thread_id: new.thread_id,
        mentions: new.mentions.clone(),
        created_at,
        edited_at: None,
        deleted: false,
        reply_count: 0,
        last_reply_at: None,
        reactions: Vec::new(),
        pinned: false,
        state: if new.streaming {
            MessageState::Streaming
        } else {
            MessageState::Complete
        },
        seq: 0,
        receipts: Vec::new(),
        kind: new.kind,
    }
}

pub(crate) fn mentions_json(mentions: &[UserId]) -> Result<String> {
    serde_json::to_string(&mentions.iter().map(|u| u.0).collect::<Vec<_>>())
        .map_err(|e| ChatError::Internal(e.into()))
}

/// Fills in `messages`' reactions from `(message_id, emoji, user_id)` rows ordered by
/// message, then by when each reaction was added.
pub(crate) fn attach_reactions(messages: &mut [Message], rows: Vec<(i64, String, i64)>) {
    let mut by_message: HashMap<i64, Vec<ReactionSummary>> = HashMap::new();
    for (message, emoji, user) in rows {
        let summaries = by_message.entry(message).or_default();
        match summaries.iter_mut().find(|s| s.emoji == emoji) {
            Some(summary) => {
                summary.count += 1;
                summary.user_ids.push(UserId(user));
            }
            None => summaries.push(ReactionSummary {
                emoji,
                count: 1,
                user_ids: vec![UserId(user)],
            }),
        }
    }
    for m in messages {
        if let Some(reactions) = by_message.remove(&m.id.0) {
            m.reactions = reactions;
        }
    }
}
