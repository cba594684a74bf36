//! Pins: members pin and unpin a channel's messages; anyone who may read the channel
//! sees its pins.

pub(crate) use chorus_api::events::Unpinned;

use chorus_realtime::Publish;

use super::Chat;
use super::events::channel_scope;
use super::messages::thread_key;
use crate::error::{Result, bad, forbidden};
use crate::model::*;
use crate::store::events_only;

const MAX_PINS: i64 = 100;

impl Chat {
    /// Pins a message in its channel (members only). Pinning again returns the pin.
    pub async fn pin_message(&self, caller: &User, id: MessageId) -> Result<Pin> {
        let message = self.pinnable(caller, id).await?;
        let _order = self.gates.threads.lock(thread_key(&message)).await;
        // Again under the gate, for the count below; the gate orders this node only, so
        // the store asks again, in the transaction, with the message held.
        let message = self.pinnable(caller, id).await?;
        if !message.pinned && self.store.count_pins(message.channel_id).await? >= MAX_PINS {
            return Err(bad("a channel has at most 100 pins; unpin one first"));
        }
        let events = events_only(|(pin, created): &(Pin, bool)| {
            if !created {
                return Vec::new();
            }
            vec![Publish::new(
                channel_scope(pin.channel_id),
                "message.pinned",
                pin,
            )]
        });
        let ((pin, _), logged) = self
            .store
            .pin_logged(message.channel_id, message.id, caller.id, events)
            .await?;
        self.emit_logged(logged).await;
        Ok(pin)
    }

    /// Unpins a message (members only); unpinning what is not pinned changes nothing.
    pub async fn unpin_message(&self, caller: &User, id: MessageId) -> Result<()> {
        // The store asks again, in the transaction, with the message held.
        let message = self.pinnable(caller, id).await?;
        let _order = self.gates.threads.lock(thread_key(&message)).await;
        let event = Unpinned {
            channel_id: message.channel_id,
            message_id: message.id,
            user_id: caller.id,
        };
        let events = events_only(move |&unpinned: &bool| {
            if !unpinned {
                return Vec::new();
            }
            vec![Publish::new(
                channel_scope(event.channel_id),
                "message.unpinned",
                &event,
            )]
        });
        let (_, logged) = self
            .store
            .unpin_logged(message.channel_id, message.id, caller.id, events)
            .await?;
        self.emit_logged(logged).await;
        Ok(())
    }

    /// The channel's pins, most recent first.
    pub async fn list_pins(&self, caller: &User, channel: ChannelId) -> Result<Vec<Pin>> {
        self.readable_channel(caller, channel).await?;
        self.store.pins(channel).await
    }

    /// A live message the caller may pin or unpin: a member of its channel.
    async fn pinnable(&self, caller: &User, id: MessageId) -> Result<Message> {
        let (message, channel) = self.visible_message(caller, id).await?;
        if !self.store.is_channel_member(channel.id, caller.id).await? {
            return Err(forbidden("only members of the channel can pin"));
        }
        Ok(message)
    }
}
