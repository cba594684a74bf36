//! Read cursors: how far a member has read a channel, and what that leaves unread.
//! Moving the cursor tells the user's other connections (`read.updated`), so a second
//! tab clears its badge.

pub use chorus_api::requests::MarkRead;

use super::Chat;
use super::events::user_scope;
use crate::error::{Result, bad, forbidden, not_found};
use crate::model::*;

impl Chat {
    /// Moves the caller's read cursor forward to `req.message_id` (never back: a
    /// stale tab cannot un-read what another tab read). Returns the resulting state.
    pub async fn mark_read(
        &self,
        caller: &User,
        channel_id: ChannelId,
        req: MarkRead,
    ) -> Result<ReadState> {
        self.readable_channel(caller, channel_id).await?;
        if !self.store.is_channel_member(channel_id, caller.id).await? {
            return Err(forbidden("join the channel to keep a read position in it"));
        }
        let message = self
            .store
            .message(req.message_id)
            .await?
            .ok_or_else(|| bad("message_id names no message"))?;
        if message.channel_id != channel_id {
            return Err(bad("message_id is not a message of this channel"));
        }
        let _order = self.gates.users.lock(caller.id.0).await;
        let moved = self
            .store
            .mark_read(channel_id, caller.id, message.id)
            .await?;
        let state = self
            .store
            .read_state(channel_id, caller.id)
            .await?
            .ok_or_else(|| not_found("not a member of this channel"))?;
        if moved {
            self.emit_event(user_scope(caller.id), "read.updated", &state)
                .await;
        }
        Ok(state)
    }
}
