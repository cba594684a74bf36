//! Reactions: anyone who may read a message may react to it, once per emoji.

use chorus_api::events::ReactionChanged as ReactionEvent;

use chorus_realtime::Publish;

use super::Chat;
use super::messages::{message_scopes, thread_key};
use crate::error::{Result, bad, not_found};
use crate::model::*;
use crate::store::events_only;

/// Different emoji one message may carry, so a message's size stays bounded.
const MAX_EMOJI_PER_MESSAGE: usize = 50;

impl Chat {
    /// Adds the caller's `emoji` reaction; a repeat changes nothing and announces
    /// nothing. Returns the message with its reactions.
    pub async fn add_reaction(&self, caller: &User, id: MessageId, emoji: &str) -> Result<Message> {
        check_emoji(emoji)?;
        let (message, _) = self.visible_message(caller, id).await?;
        let _order = self.gates.threads.lock(thread_key(&message)).await;
        // Read again under the gate, for the count below. The gate orders this node
        // only: the store asks again, in the transaction, with the message held.
        let (message, _) = self.visible_message(caller, id).await?;
        if !message.reactions.iter().any(|r| r.emoji == emoji)
            && message.reactions.len() >= MAX_EMOJI_PER_MESSAGE
        {
            return Err(bad("a message carries at most 50 different reactions"));
        }
        if !self.set_reaction(&message, emoji, caller.id, true).await? {
            return Ok(message);
        }
        self.reloaded(id).await
    }

    /// Removes the caller's `emoji` reaction, if there is one.
    pub async fn remove_reaction(
        &self,
        caller: &User,
        id: MessageId,
        emoji: &str,
    ) -> Result<Message> {
        check_emoji(emoji)?;
        // The store asks again, in the transaction, with the message held.
        let (message, _) = self.visible_message(caller, id).await?;
        let _order = self.gates.threads.lock(thread_key(&message)).await;
        if !self.set_reaction(&message, emoji, caller.id, false).await? {
            return Ok(message);
        }
        self.reloaded(id).await
    }

    /// Adds or removes the reaction and, when that changed something, logs
    /// `reaction.added` / `reaction.removed` on the message's scopes in the same
    /// transaction and publishes them. Returns whether it changed something.
    async fn set_reaction(
        &self,
        message: &Message,
        emoji: &str,
        user: UserId,
        add: bool,
    ) -> Result<bool> {
        let kind = if add {
            "reaction.added"
        } else {
            "reaction.removed"
        };
        let event = ReactionEvent {
            message_id: message.id,
            channel_id: message.channel_id,
            thread_id: message.thread_id,
            emoji: emoji.to_owned(),
            user_id: user,
        };
        let scopes = message_scopes(message);
        let events = events_only(move |&changed: &bool| {
            if !changed {
                return Vec::new();
            }
            scopes
                .iter()
                .map(|scope| Publish::new(scope.clone(), kind, &event))
                .collect()
        });
        let (changed, logged) = self
            .store
            .set_reaction_logged(message.id, user, emoji, add, events)
            .await?;
        self.emit_logged(logged).await;
        Ok(changed)
    }

    pub(crate) async fn reloaded(&self, id: MessageId) -> Result<Message> {
        self.store
            .message(id)
            .await?
            .ok_or_else(|| not_found("no such message"))
    }
}

fn check_emoji(emoji: &str) -> Result<()> {
    if valid_emoji(emoji) {
        Ok(())
    } else {
        Err(bad(
            "emoji must be 1 to 64 bytes without whitespace or control characters",
        ))
    }
}
