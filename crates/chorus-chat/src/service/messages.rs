//! Messages: send (idempotent), history, threads, edit, delete, and the mentions they
//! carry. Every event about a thread's messages (root and replies) is published under
//! the root's gate, so clients see thread summaries and edits in commit order.

use std::collections::BTreeSet;
use std::sync::Arc;

use chorus_api::events::{MentionCreated, MessageDeleted as Deleted};
pub use chorus_api::requests::{EditMessage, SendMessage};
use chorus_realtime::{Publish, Scope};

use super::Chat;
use super::agents::message_webhooks;
use super::events::{channel_scope, thread_scope, user_scope};
use super::pins::Unpinned;
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::*;
use crate::store::{
    Deletion, Edited, Events, Inserted, MessageQuery, NewMessage, NewTurns, Outbox, events_only,
};

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// An `Idempotency-Key` (a send's, a command's) is 1 to 255 bytes.
pub(crate) fn check_idempotency_key(key: Option<&str>) -> Result<()> {
    match key {
        Some(key) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY => {
            Err(bad("Idempotency-Key must be 1 to 255 bytes"))
        }
        _ => Ok(()),
    }
}
const MAX_MENTIONS: usize = 50;
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

/// The key of the gate that orders a message's events: its thread's root.
pub(crate) fn thread_key(message: &Message) -> i64 {
    message.thread_id.unwrap_or(message.id).0
}

/// Where events about `message` go: its channel and, when it belongs to a thread (a
/// reply, or a root with replies), the thread's scope.
pub(crate) fn message_scopes(message: &Message) -> Vec<Scope> {
    let mut scopes = vec![channel_scope(message.channel_id)];
    match message.thread_id {
        Some(root) => scopes.push(thread_scope(root)),
        None if message.reply_count > 0 => scopes.push(thread_scope(message.id)),
        None => {}
    }
    scopes
}

/// `mention.created` for each of `users` (already known to be able to read the channel),
/// on their own scopes; the payload is serialized once.
fn mention_events(message: &Message, users: &[UserId]) -> Vec<Publish> {
    let Some((&first, rest)) = users.split_first() else {
        return Vec::new();
    };
    let event = MentionCreated {
        message: message.clone(),
        channel_id: message.channel_id,
    };
    let first = Publish::new(user_scope(first), "mention.created", &event);
    let mut events: Vec<Publish> = rest
        .iter()
        .map(|&user| Publish {
            scope: user_scope(user),
            ..first.clone()
        })
        .collect();
    events.insert(0, first);
    events
}

/// `message.updated` of a thread's root (its summary changed), on its channel and thread.
fn thread_root_events(root: &Message) -> Vec<Publish> {
    [channel_scope(root.channel_id), thread_scope(root.id)]
        .into_iter()
        .map(|scope| Publish::new(scope, "message.updated", root))
        .collect()
}

/// A message a send posted (`Sent::Message`), or the one its idempotency key matched.
#[derive(Debug)]
pub struct Posted {
    pub message: Message,
    /// `false` when the idempotency key matched an earlier send.
    pub created: bool,
    /// The message's JSON as its channel's `message.created` event carries it (when
    /// created now).
    pub json: Option<String>,
}

impl Chat {
    /// What a send, a slash command or a typing signal in a thread asks of `root`: a
    /// top-level message of channel `ch`. One answer for every other id (a reply, a
    /// message of another channel or workspace, none at all), so it tells nobody which
    /// messages exist where they cannot read.
    pub(crate) async fn check_thread_root(&self, ch: ChannelId, root: MessageId) -> Result<()> {
        let root = self.store.message(root).await?;
        if !root.is_some_and(|r| r.channel_id == ch && r.thread_id.is_none()) {
            return Err(bad("thread_id must be a top-level message of this channel"));
        }
        Ok(())
    }

    /// Sends a message. Returns it and whether it was created now (`false` when the
    /// idempotency key matched an earlier send, which is returned unchanged).
    pub async fn send_message(
        &self,
        caller: &User,
        channel_id: ChannelId,
        req: SendMessage,
        idempotency_key: Option<String>,
    ) -> Result<(Message, bool)> {
        let posted = self
            .post_message(caller, channel_id, req, idempotency_key, MessageKind::Text)
            .await?;
        Ok((posted.message, posted.created))
    }

    /// [`send_message`](Self::send_message) of a message of `kind` (`/me`: `action`).
    pub(crate) async fn post_message(
        &self,
        caller: &User,
        channel_id: ChannelId,
        req: SendMessage,
        idempotency_key: Option<String>,
        kind: MessageKind,
    ) -> Result<Posted> {
        let (channel, member) = self.channel_for(channel_id, caller.id).await?;
        if !member {
            self.readable_channel(caller, channel_id).await?;
            return Err(forbidden("join the channel to post in it"));
        }
        // A stream may open empty: its text comes with the appends.
        if !req.streaming || !req.text.trim().is_empty() {
            self.check_text(&req.text)?;
        }
        check_idempotency_key(idempotency_key.as_deref())?;
        // A reply changes its root (reply count): both are published in commit order.
        let order = match req.thread_id {
            Some(root) => Some(self.gates.threads.lock(root.0).await),
            None => None,
        };
        // Round-robin turns follow the order of the messages.
        let turn = match channel.policy {
            Policy::RoundRobin => Some(self.gates.turns.lock(channel.id.0).await),
            _ => None,
        };
        if let Some(root) = req.thread_id {
            self.check_thread_root(channel.id, root).await?;
        }
        let mentions = self
            .resolve_mentions(channel.workspace_id, &req.text)
            .await?;
        // Agent-aware delivery is decided before the message is stored: its events are
        // logged with their marks in the message's transaction (one set of marks for
        // every scope the message goes to).
        let (mut decision, agents) = self.delivery_for(&channel, caller.id, &mentions).await;
        let (quiet, guard_change) = self.count_for_loop_guard(&channel, caller.kind);
        if quiet {
            let ids: Vec<UserId> = agents.iter().map(|a| a.id).collect();
            decision.quiet(&ids);
        }
        // Each woken agent gets its turn at the message (receipts, cancel); under
        // `round_robin` it passes on unless the agent reports `working` in time.
        let woken: Vec<UserId> = agents
            .iter()
            .map(|a| a.id)
            .filter(|&a| decision.mark_for(a) == chorus_realtime::Mark::Wake)
            .collect();
        let turns = NewTurns {
            due_at: (channel.policy == Policy::RoundRobin && !woken.is_empty())
                .then(|| self.turn_due(&channel)),
            agents: woken,
        };
        let marks = Arc::new(decision.marks());
        // Woken agents with a webhook and no live connection: their deliveries are
        // queued in the message's transaction too.
        let targets = self.webhook_targets(&decision, &agents).await;
        let by_webhook = !targets.is_empty();
        // The mentioned (the author aside) are told: `mention.created` on their scope,
        // logged with the message too. Whether they, and the webhook targets, may read
        // the channel is not asked here but by the store, in the message's transaction
        // (`Inserted::readers`): a check made now would miss a removal committing before
        // the message, and the removed user would get it after their `channel.left`.
        let told: Vec<UserId> = mentions
            .iter()
            .copied()
            .filter(|&u| u != caller.id)
            .collect();
        let audience = told
            .iter()
            .copied()
            .chain(targets.iter().map(|(agent, _)| *agent))
            .collect();
        let due = self.now();
        let events: Events<Inserted> = Box::new(move |inserted| {
            let mut events: Vec<Publish> = message_scopes(&inserted.message)
                .into_iter()
                .map(|scope| {
                    let mut publish = Publish::new(scope, "message.created", &inserted.message);
                    publish.marks = Some(marks.clone());
                    publish
                })
                .collect();
            if let Some(root) = &inserted.root {
                events.extend(thread_root_events(root));
            }
            let reads = |user: &UserId| inserted.readers.binary_search(user).is_ok();
            let told: Vec<UserId> = told.iter().copied().filter(reads).collect();
            events.extend(mention_events(&inserted.message, &told));
            let targets: Vec<(UserId, String)> =
                targets.iter().filter(|(a, _)| reads(a)).cloned().collect();
            Outbox {
                events,
                webhooks: message_webhooks(&inserted.message, &targets, due),
                then: None,
            }
        });
        let (inserted, logged) = self
            .store
            .insert_message_logged(
                NewMessage {
                    channel_id,
                    author_id: caller.id,
                    text: req.text,
                    thread_id: req.thread_id,
                    mentions,
                    idempotency_key,
                    streaming: req.streaming,
                    turns,
                    kind,
                    audience,
                },
                events,
            )
            .await?;
        let message = inserted.message;
        if !inserted.created {
            if message.channel_id != channel_id {
                return Err(ChatError::Conflict(
                    "this Idempotency-Key was used for a message in another channel".into(),
                ));
            }
            return Ok(Posted {
                message,
                created: false,
                json: None,
            });
        }
        // The message as its channel's event carries it: the HTTP answer's body too,
        // serialized once (docs/benchmarks.md, "Round 2, session 12").
        let channel_scope = channel_scope(message.channel_id);
        let json = logged
            .iter()
            .find(|e| e.kind == "message.created" && e.scope == channel_scope)
            .map(|e| e.data.clone());
        if req.streaming {
            self.hold_stream(&message, self.rollup_window(&channel));
        }
        self.emit_logged(logged).await;
        drop(turn);
        drop(order);
        if by_webhook {
            self.webhooks.notify_one();
        }
        if let Some(change) = guard_change {
            self.loop_guard_changed(&channel, change).await;
        }
        Ok(Posted {
            message,
            created: true,
            json,
        })
    }

    /// The channel and whether `user` is a member, through the read cache.
    pub(crate) async fn channel_for(
        &self,
        channel_id: ChannelId,
        user: UserId,
    ) -> Result<(Channel, bool)> {
        if let Some(found) = self.cache.channel(channel_id, user) {
            return Ok(found);
        }
        let epoch = self.cache.epoch();
        let found = self
            .store
            .channel_for(channel_id, user)
            .await?
            .ok_or_else(|| not_found("no such channel"))?;
        self.cache
            .put_channel(channel_id, user, found.clone(), epoch);
        Ok(found)
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

    /// Replaces the text; mentions are parsed again, and users newly mentioned are told.
    pub async fn edit_message(
        &self,
        caller: &User,
        id: MessageId,
        text: String,
    ) -> Result<Message> {
        let (message, channel) = self.writable_message(caller, id).await?;
        self.check_text(&text)?;
        let order = self.gates.threads.lock(thread_key(&message)).await;
        let mentions = self.resolve_mentions(channel.workspace_id, &text).await?;
        // Those newly mentioned (the author aside) who may read the channel are told,
        // logged with the edit; who may is asked in its transaction, as for a send.
        let added: Vec<UserId> = mentions
            .iter()
            .filter(|&&u| !message.mentions.contains(&u) && u != message.author_id)
            .copied()
            .collect();
        let events = events_only(move |edited: &Edited| {
            let message = &edited.message;
            let mut events: Vec<Publish> = message_scopes(message)
                .into_iter()
                .map(|scope| Publish::new(scope, "message.updated", message))
                .collect();
            events.extend(mention_events(message, &edited.readers));
            events
        });
        let (edited, logged) = self
            .store
            .edit_message_logged(message.id, &text, &mentions, &added, events)
            .await?;
        self.emit_logged(logged).await;
        drop(order);
        Ok(edited.message)
    }

    /// Leaves a tombstone; the message's reactions and pin go with its text.
    pub async fn delete_message(&self, caller: &User, id: MessageId) -> Result<Message> {
        let (message, _) = self.writable_message(caller, id).await?;
        let _order = self.gates.threads.lock(thread_key(&message)).await;
        let user = caller.id;
        let events = events_only(move |deletion: &Deletion| {
            let deleted = &deletion.message;
            let event = Deleted {
                id: deleted.id,
                channel_id: deleted.channel_id,
                thread_id: deleted.thread_id,
            };
            let mut events: Vec<Publish> = message_scopes(deleted)
                .into_iter()
                .map(|scope| Publish::new(scope, "message.deleted", &event))
                .collect();
            if deletion.unpinned {
                let unpinned = Unpinned {
                    channel_id: deleted.channel_id,
                    message_id: deleted.id,
                    user_id: user,
                };
                events.push(Publish::new(
                    channel_scope(deleted.channel_id),
                    "message.unpinned",
                    &unpinned,
                ));
            }
            if let Some(root) = &deletion.root {
                events.extend(thread_root_events(root));
            }
            events
        });
        let (deletion, logged) = self.store.delete_message_logged(message.id, events).await?;
        self.emit_logged(logged).await;
        let deleted = deletion.message;
        Ok(deleted)
    }

    /// A thread's root changed (reply count, last reply time): `message.updated` on its
    /// channel and its thread.
    /// A live message, if the caller may see it; with its channel.
    pub(crate) async fn visible_message(
        &self,
        caller: &User,
        id: MessageId,
    ) -> Result<(Message, Channel)> {
        let message = self
            .store
            .message(id)
            .await?
            .ok_or_else(|| not_found("no such message"))?;
        let channel = self.readable_channel(caller, message.channel_id).await?;
        if message.deleted {
            return Err(not_found("message was deleted"));
        }
        Ok((message, channel))
    }

    /// The message, if the caller may change it: its author, or a workspace admin.
    async fn writable_message(&self, caller: &User, id: MessageId) -> Result<(Message, Channel)> {
        let (message, channel) = self.visible_message(caller, id).await?;
        if message.author_id != caller.id
            && !self.role_in(caller, channel.workspace_id).await?.manages()
        {
            return Err(forbidden(
                "only the author or an admin can change a message",
            ));
        }
        Ok((message, channel))
    }

    pub(crate) fn check_text(&self, text: &str) -> Result<()> {
        if text.trim().is_empty() {
            return Err(bad("text must not be empty"));
        }
        check_no_nul("text", text)?;
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
