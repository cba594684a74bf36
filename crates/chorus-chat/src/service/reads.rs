//! Read cursors: how far a member has read a channel, and what that leaves unread.
//! Moving the cursor tells the user's other connections (`read.updated`), so a second
//! tab clears its badge.

pub use chorus_api::requests::MarkRead;

use chorus_realtime::Publish;

use super::Chat;
use super::events::user_scope;
use crate::error::{Result, bad, forbidden, not_found};
use crate::model::*;
use crate::store::events_only;

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
        // One answer for an id of no message and for one of another channel (which may
        // be one the caller cannot read, in any workspace): it tells no id's existence.
        let message = self
            .store
            .message(req.message_id)
            .await?
            .filter(|m| m.channel_id == channel_id)
            .ok_or_else(|| bad("message_id must be a message of this channel"))?;
        // Logged with the cursor's move: a user's `read.updated` events are in the
        // order the moves committed, whichever node made them.
        let scope = user_scope(caller.id);
        let (marked, logged) = self
            .store
            .mark_read_logged(
                channel_id,
                caller.id,
                message.id,
                events_only(move |state| vec![Publish::new(scope.clone(), "read.updated", state)]),
            )
            .await?;
        self.emit_logged(logged).await;
        let state = marked
            .state
            .ok_or_else(|| not_found("not a member of this channel"))?;
        Ok(state)
    }
}
