//! Messages: send (idempotent), history, edit, delete.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Chat;
use super::events::{channel_scope, thread_scope};
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::*;
use crate::store::{MessageQuery, NewMessage};

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SendMessage {
    pub text: String,
    #[serde(default)]
    pub thread_id: Option<MessageId>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EditMessage {
    pub text: String,
}

#[derive(Serialize)]
struct Deleted {
    id: MessageId,
    channel_id: ChannelId,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<MessageId>,
}

const MAX_IDEMPOTENCY_KEY: usize = 255;
const MAX_MENTIONS: usize = 50;
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

impl Chat {
    /// Sends a message. Returns it and whether it was created now (`false` when the
    /// idempotency key matched an earlier send, which is returned unchanged).
    pub async fn send_message(
        &self,
        caller: &User,
        channel_id: ChannelId,
        req: SendMessage,
        idempotency_key: Option<String>,
    ) -> Result<(Message, bool)> {
        let channel = self
            .store
            .channel(channel_id)
            .await?
            .ok_or_else(|| not_found("no such channel"))?;
        if !self.store.is_channel_member(channel_id, caller.id).await? {
            self.readable_channel(caller, channel_id).await?;
            return Err(forbidden("join the channel to post in it"));
        }
        self.check_text(&req.text)?;
        if let Some(key) = &idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
        {
            return Err(bad("Idempotency-Key must be 1 to 255 bytes"));
        }
        if let Some(root) = req.thread_id {
            let root = self
                .store
                .message(root)
                .await?
                .ok_or_else(|| bad("thread_id names no message"))?;
            if root.channel_id != channel.id || root.thread_id.is_some() {
                return Err(bad("thread_id must be a top-level message of this channel"));
            }
        }
        let mentions = self
            .resolve_mentions(channel.workspace_id, &req.text)
            .await?;
        let (message, created) = self
            .store
            .insert_message(NewMessage {
                channel_id,
                author_id: caller.id,
                text: req.text,
                thread_id: req.thread_id,
                mentions,
                idempotency_key,
            })
            .await?;
        if !created {
            if message.channel_id != channel_id {
                return Err(ChatError::Conflict(
                    "this Idempotency-Key was used for a message in another channel".into(),
                ));
            }
            return Ok((message, false));
        }
        self.emit_event(channel_scope(channel_id), "message.created", &message)
            .await;
        if let Some(root) = message.thread_id {
            self.emit_event(thread_scope(root), "message.created", &message)
                .await;
        }
        Ok((message, true))
    }

    pub async fn list_messages(
        &self,
        caller: &User,
        channel_id: ChannelId,
        mut query: MessageQuery,
    ) -> Result<Vec<Message>> {
        self.readable_channel(caller, channel_id).await?;
        query.limit = match query.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        self.store.list_messages(channel_id, query).await
    }

    pub async fn edit_message(
        &self,
        caller: &User,
        id: MessageId,
        text: String,
    ) -> Result<Message> {
        let message = self.writable_message(caller, id).await?;
        self.check_text(&text)?;
        let edited = self.store.edit_message(message.id, &text).await?;
        self.emit_event(channel_scope(edited.channel_id), "message.updated", &edited)
            .await;
        Ok(edited)
    }

    pub async fn delete_message(&self, caller: &User, id: MessageId) -> Result<Message> {
        let message = self.writable_message(caller, id).await?;
        let deleted = self.store.delete_message(message.id).await?;
        let event = Deleted {
            id: deleted.id,
            channel_id: deleted.channel_id,
            thread_id: deleted.thread_id,
        };
        self.emit_event(channel_scope(deleted.channel_id), "message.deleted", &event)
            .await;
        Ok(deleted)
    }

    /// The message, if the caller may change it: its author, or a workspace admin.
    async fn writable_message(&self, caller: &User, id: MessageId) -> Result<Message> {
        let message = self
            .store
            .message(id)
            .await?
            .ok_or_else(|| not_found("no such message"))?;
        let channel = self.readable_channel(caller, message.channel_id).await?;
        if message.deleted {
            return Err(not_found("message was deleted"));
        }
        if message.author_id != caller.id
            && !self.role_in(caller, channel.workspace_id).await?.manages()
        {
            return Err(forbidden(
                "only the author or an admin can change a message",
            ));
        }
        Ok(message)
    }

    fn check_text(&self, text: &str) -> Result<()> {
        if text.trim().is_empty() {
            return Err(bad("text must not be empty"));
        }
        if text.len() > self.config.max_message_bytes {
            return Err(ChatError::PayloadTooLarge(format!(
                "text is {} bytes; the limit is {}",
                text.len(),
                self.config.max_message_bytes
            )));
        }
        Ok(())
    }

    /// Ids of the workspace members named by `@name` tokens; unknown names stay text.
    async fn resolve_mentions(&self, ws: WorkspaceId, text: &str) -> Result<Vec<UserId>> {
        let mut ids = BTreeSet::new();
        for name in mention_names(text).into_iter().take(MAX_MENTIONS) {
            if let Some(user) = self.store.user_by_name(&name).await?
                && self.store.member_role(ws, user.id).await?.is_some()
            {
                ids.insert(user.id);
            }
        }
        Ok(ids.into_iter().collect())
    }
}

/// The distinct names of `@name` tokens: `@` at the start or after a non-name
/// character, followed by `[a-z0-9_.-]`, without a trailing `.` or `-`.
pub(crate) fn mention_names(text: &str) -> Vec<String> {
    let is_name =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-');
    let mut out: Vec<String> = Vec::new();
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        let starts = c == '@' && !prev.is_some_and(|p| is_name(p) || p == '@');
        prev = Some(c);
        if !starts {
            continue;
        }
        let rest = &text[i + 1..];
        let len = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
        let name = rest[..len].trim_end_matches(['.', '-']);
        if (1..=32).contains(&name.len()) && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mention_names;

    #[test]
    fn finds_mentions() {
        assert_eq!(mention_names("hi @bob and @alice."), ["bob", "alice"]);
        assert_eq!(mention_names("@bob @bob"), ["bob"]);
        assert!(mention_names("mail me@example.com").is_empty());
        assert!(mention_names("@ lone").is_empty());
        assert_eq!(mention_names("(@agent-1)"), ["agent-1"]);
        assert_eq!(mention_names("@Bob"), Vec::<String>::new());
    }
}
