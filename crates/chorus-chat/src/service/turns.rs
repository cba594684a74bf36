//! Turns and receipts (issue 19). Each agent a message woke has a turn at it (written
//! with the message): it reports what it does with it (`receipt.updated`); under
//! `round_robin` a turn not reported `working` within the channel's turn timeout
//! passes to the next agent (`turn.passed`, waking it); a person may cancel a turn
//! (`turn.cancelled`, which reaches the agent live or by webhook, and aborts its
//! streaming reply).
//!
//! Passing is done by a sweep that reads the deadlines from the database, so turns
//! pass whichever node woke the agent, and after a restart; each pass is a
//! compare-and-set in the database, so two nodes never pass one turn twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chorus_api::events::{ReceiptUpdated, TurnCancelled, TurnPassed};
use chorus_api::requests::{Cancelled, Receipts};
use chorus_realtime::{Mark, Marks, Publish};

use super::Chat;
use super::agents::{event_webhooks, message_webhooks};
use super::events::channel_scope;
use super::messages::{message_scopes, thread_key};
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::*;
use crate::store::{Outbox, Turn, events_only};

/// Overdue turns passed per sweep.
const SWEEP_BATCH: u32 = 100;

/// Marks that wake `agent` only (everyone else observes).
fn waking(agent: UserId) -> Arc<Marks> {
    Arc::new(Marks {
        default: Mark::Observe,
        users: [(agent.0, Mark::Wake)].into_iter().collect(),
    })
}

/// Not readable is not found, for routes that must not tell a stranger a message exists.
fn hidden(err: ChatError) -> ChatError {
    match err {
        ChatError::Forbidden(_) => not_found("no such message"),
        other => other,
    }
}

impl Chat {
    /// When a round-robin turn given now at a message of `channel` passes.
    pub(crate) fn turn_due(&self, channel: &Channel) -> Timestamp {
        let timeout = channel
            .turn_timeout_ms
            .map_or(self.config.turn_timeout, Duration::from_millis);
        Timestamp(self.now().0.saturating_add(timeout.as_millis() as i64))
    }

    /// The caller's receipt for message `id`: only an agent the message woke that may
    /// still read it (who may not: `NotFound`). A repeat of the same state changes and
    /// announces nothing. Returns the message's summary.
    pub async fn set_receipt(
        &self,
        caller: &User,
        id: MessageId,
        state: ReceiptState,
    ) -> Result<Receipts> {
        // Reading comes first: a turn does not outlive leaving the channel.
        let (message, _) = self.visible_message(caller, id).await.map_err(hidden)?;
        let Some(turn) = self.store.turn(id, caller.id).await? else {
            return Err(forbidden(
                "only an agent the message woke reports receipts for it",
            ));
        };
        // A round-robin turn declined passes to the next agent now, not at its timeout.
        if state == ReceiptState::Declined && turn.due_at.is_some() {
            self.pass_turn(&turn).await?;
        }
        let _order = self.gates.threads.lock(thread_key(&message)).await;
        let (channel_id, user_id) = (message.channel_id, caller.id);
        let scopes = message_scopes(&message);
        let events = events_only(move |receipts: &Vec<Receipt>| {
            let event = ReceiptUpdated {
                channel_id,
                message_id: id,
                user_id,
                state,
                receipts: receipts.clone(),
            };
            scopes
                .iter()
                .map(|scope| Publish::new(scope.clone(), "receipt.updated", &event))
                .collect()
        });
        let receipts = match self
            .store
            .set_receipt_logged(id, caller.id, state, events)
            .await?
        {
            Some((receipts, logged)) => {
                self.emit_logged(logged).await;
                receipts
            }
            None => self.reloaded(id).await?.receipts,
        };
        Ok(Receipts {
            message_id: id,
            receipts,
        })
    }

    /// Cancels agents' turns. `id` is a message that woke agents (their open turns at
    /// it end, or only `agent`'s), or an agent's streaming reply (aborted, and its
    /// author's open turn at the message before it ends). Allowed to the author of the
    /// message that woke the agent and to the channel's managers. Returns whose turns
    /// (or streams) ended; `Conflict` when there was nothing to cancel.
    pub async fn cancel_turns(
        &self,
        caller: &User,
        id: MessageId,
        agent: Option<UserId>,
    ) -> Result<Cancelled> {
        let (message, channel) = self.visible_message(caller, id).await.map_err(hidden)?;
        let turns = self.store.turns(id).await?;
        if !turns.is_empty() {
            self.require_canceller(caller, &message, &channel).await?;
            let agents: Vec<UserId> = turns
                .iter()
                .filter(|t| t.open() && agent.is_none_or(|a| a == t.agent_id))
                .map(|t| t.agent_id)
                .collect();
            let cancelled = self.cancel(caller, &message, &agents).await?;
            if cancelled.is_empty() {
                return Err(nothing_to_cancel());
            }
            for &agent in &cancelled {
                for stream in self.store.streams_after(agent, channel.id, id).await? {
                    self.cancel_stream(stream).await?;
                }
            }
            return Ok(Cancelled { cancelled });
        }
        if message.state != MessageState::Streaming {
            return Err(nothing_to_cancel());
        }
        // An agent's streaming reply: the turn it answers is its latest open one here.
        // Anyone else's stream is not a turn's to cancel (its author or an admin
        // aborts it: `POST /messages/{id}/abort`).
        let author = message.author_id;
        if agent.is_some_and(|a| a != author) {
            return Err(bad("agent_id must be the author of the streaming message"));
        }
        let by_agent = self
            .store
            .user(author)
            .await?
            .is_some_and(|u| u.kind == UserKind::Agent);
        if !by_agent {
            return Err(ChatError::Conflict(
                "not an agent's reply: a person's streaming message is ended by its author \
                 or an admin (POST /api/v1/messages/{id}/abort)"
                    .into(),
            ));
        }
        let turn = self.store.open_turn_before(author, channel.id, id).await?;
        let woke = match &turn {
            Some(turn) => self.store.message(turn.message_id).await?,
            None => None,
        };
        match &woke {
            Some(woke) => self.require_canceller(caller, woke, &channel).await?,
            None => self.require_channel_manager(caller, &channel).await?,
        }
        if let Some(woke) = &woke {
            self.cancel(caller, woke, &[author]).await?;
        }
        if !self.cancel_stream(id).await? {
            return Err(nothing_to_cancel());
        }
        Ok(Cancelled {
            cancelled: vec![author],
        })
    }

    /// Who may cancel the turns `message` gave: its author and the channel's managers.
    async fn require_canceller(
        &self,
        caller: &User,
        message: &Message,
        channel: &Channel,
    ) -> Result<()> {
        if message.author_id == caller.id {
            return Ok(());
        }
        self.require_channel_manager(caller, channel)
            .await
            .map_err(|_| {
                forbidden(
                    "only the author of the message that woke the agent, or the channel's \
                     managers, can cancel its turn",
                )
            })
    }

    /// Ends the open turns of `agents` at `message` and announces each
    /// (`turn.cancelled`, waking the agent; by webhook to an agent with one that is
    /// not connected). Returns whose turns ended.
    async fn cancel(
        &self,
        caller: &User,
        message: &Message,
        agents: &[UserId],
    ) -> Result<Vec<UserId>> {
        let members = self.agent_members(message.channel_id).await?;
        let targets = self
            .unconnected_webhooks(members.iter().filter(|m| agents.contains(&m.id)))
            .await;
        let with_webhook: Vec<UserId> = targets.iter().map(|(id, _)| *id).collect();
        let (channel_id, message_id, by) = (message.channel_id, message.id, caller.id);
        let thread_id = message.thread_id;
        let due = self.now();
        let events = Box::new(move |cancelled: &Vec<UserId>| {
            let mut outbox = Outbox::default();
            let scope = channel_scope(channel_id);
            let event_id = format!("turn.cancelled:{message_id}");
            for &agent_id in cancelled {
                let event = TurnCancelled {
                    channel_id,
                    message_id,
                    thread_id,
                    agent_id,
                    by,
                };
                let mut publish = Publish::new(scope.clone(), "turn.cancelled", &event);
                publish.marks = Some(waking(agent_id));
                outbox.events.push(publish);
                let target: Vec<(UserId, String)> = targets
                    .iter()
                    .filter(|(id, _)| *id == agent_id)
                    .cloned()
                    .collect();
                outbox.webhooks.extend(event_webhooks(
                    "turn.cancelled",
                    &event_id,
                    &scope,
                    &event,
                    &target,
                    due,
                ));
            }
            outbox
        });
        let (cancelled, logged) = self
            .store
            .cancel_turns_logged(message.id, agents, events)
            .await?;
        let by_webhook = cancelled.iter().any(|a| with_webhook.contains(a));
        self.emit_logged(logged).await;
        if by_webhook {
            self.webhooks.notify_one();
        }
        Ok(cancelled)
    }

    /// Passes every round-robin turn that is overdue, on any node. Returns how many.
    pub async fn pass_overdue_turns(&self) -> Result<usize> {
        let mut passed = 0;
        for turn in self.store.overdue_turns(self.now(), SWEEP_BATCH).await? {
            if self.pass_turn(&turn).await? {
                passed += 1;
            }
        }
        Ok(passed)
    }

    /// Passes `turn` to the next agent in the channel's rotation that has not had a
    /// turn at the message and may still read the channel (nobody, when there is no
    /// such agent): `turn.passed` wakes it, and an agent with a webhook and no
    /// connection gets the message by webhook, as when a message wakes it. `false` when
    /// the turn was no longer due.
    async fn pass_turn(&self, turn: &Turn) -> Result<bool> {
        let Some(channel) = self.store.channel(turn.channel_id).await? else {
            return Ok(false);
        };
        let _turns = self.gates.turns.lock(channel.id.0).await;
        let Some(message) = self.store.message(turn.message_id).await? else {
            return Ok(false);
        };
        let taken: BTreeSet<UserId> = self
            .store
            .turns(message.id)
            .await?
            .into_iter()
            .map(|t| t.agent_id)
            .collect();
        let members = self.agent_members(channel.id).await?;
        let pool: BTreeSet<UserId> = members
            .iter()
            .map(|m| m.id)
            .filter(|a| *a != message.author_id && !taken.contains(a))
            .collect();
        // Every candidate, in the rotation's order: the members read here may be stale
        // (cached, or changed since), so the store takes the first that may still read
        // the channel, asked in the pass's transaction as for a new message.
        let next = if message.deleted {
            Vec::new()
        } else {
            rotation(&pool, turn.agent_id)
        };
        let targets = self
            .unconnected_webhooks(members.iter().filter(|m| next.contains(&m.id)))
            .await;
        let with_webhook: Vec<UserId> = targets.iter().map(|(id, _)| *id).collect();
        let (channel_id, message_id, thread_id) = (channel.id, message.id, message.thread_id);
        let from = turn.agent_id;
        let due = self.now();
        let events = Box::new(move |to: &Option<UserId>| {
            let event = TurnPassed {
                channel_id,
                message_id,
                thread_id,
                from,
                to: *to,
            };
            let mut publish = Publish::new(channel_scope(channel_id), "turn.passed", &event);
            publish.marks = to.map(waking);
            let target: Vec<(UserId, String)> = targets
                .iter()
                .filter(|(id, _)| Some(*id) == *to)
                .cloned()
                .collect();
            Outbox {
                events: vec![publish],
                webhooks: message_webhooks(&message, &target, due),
                then: None,
            }
        });
        let Some((to, logged)) = self
            .store
            .pass_turn_logged(turn, &next, self.turn_due(&channel), events)
            .await?
        else {
            return Ok(false);
        };
        let by_webhook = to.is_some_and(|to| with_webhook.contains(&to));
        self.emit_logged(logged).await;
        if by_webhook {
            self.webhooks.notify_one();
        }
        Ok(true)
    }

    /// Passes overdue round-robin turns every quarter of the server's turn timeout
    /// (between 100 ms and 1 s), until the chat shuts down or is dropped.
    pub fn spawn_turn_sweeper(self: &Arc<Self>) {
        let chat = Arc::downgrade(self);
        let every = (self.config.turn_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        let stop = self.background.stop().clone();
        // Not a background task: those are what tests wait to settle.
        self.streams.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                let Some(chat) = chat.upgrade() else { return };
                match chat.pass_overdue_turns().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(turns = n, "overdue turns passed"),
                    Err(err) => tracing::warn!(cause = %err, "overdue turns not swept"),
                }
            }
        });
    }
}

/// The agents of `pool` in the order the rotation reaches them after `last`: those
/// after it by id, then from the lowest id on. The first is
/// [`next_in_rotation`](super::delivery::next_in_rotation)'s pick.
fn rotation(pool: &BTreeSet<UserId>, last: UserId) -> Vec<UserId> {
    let (before, after): (Vec<UserId>, Vec<UserId>) =
        pool.iter().copied().partition(|a| *a <= last);
    after.into_iter().chain(before).collect()
}

fn nothing_to_cancel() -> ChatError {
    ChatError::Conflict("no running turn or stream to cancel".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::delivery::next_in_rotation;

    #[test]
    fn the_rotation_goes_on_after_the_last_agent_and_wraps() {
        let pool: BTreeSet<UserId> = [3, 5, 8].map(UserId).into();
        for (last, order) in [
            (5, [8, 3, 5]),
            (4, [5, 8, 3]),
            (8, [3, 5, 8]),
            (1, [3, 5, 8]),
        ] {
            let order = order.map(UserId).to_vec();
            assert_eq!(rotation(&pool, UserId(last)), order, "after {last}");
            assert_eq!(next_in_rotation(&pool, Some(UserId(last))), Some(order[0]));
        }
        assert!(rotation(&BTreeSet::new(), UserId(1)).is_empty());
    }
}
