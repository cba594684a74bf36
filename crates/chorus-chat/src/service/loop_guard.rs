//! The loop guard: agents that answer each other forever stop on their own. Per
//! channel, agent-authored messages are counted since the last message by a person,
//! and over the last minute; once either reaches its limit (`ChatConfig::
//! loop_guard_run`, `loop_guard_per_minute`), no agent is woken in that channel (they
//! observe) until a person writes again. Both changes are announced as
//! `channel.loop_guard {channel_id, state, reason}` and recorded in the channel
//! (`Channel::loop_guard`), so a client that loads the channel later knows.
//!
//! The counts are this node's: with several nodes, each counts the messages sent
//! through it, so the limits hold per node (a loop still stops, a little later). The
//! recorded state is every node's: a channel held through one node holds on all, and a
//! person's message through any node releases it (and restarts every node's count).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chorus_api::events::LoopGuard;
use chorus_realtime::Publish;

use super::Chat;
use super::events::channel_scope;
use crate::model::{Channel, ChannelId, ChannelLoopGuard, LoopGuardState, Timestamp, UserKind};
use crate::store::events_only;

const MINUTE_MS: i64 = 60_000;

#[derive(Default)]
pub(crate) struct LoopGuards {
    channels: Mutex<HashMap<ChannelId, Guard>>,
}

#[derive(Default)]
struct Guard {
    /// Agent messages since a person's.
    run: u32,
    /// When the agent messages of the last minute were sent (ms).
    recent: VecDeque<i64>,
    /// Why agents are not woken, while this node held them.
    held: Option<&'static str>,
    /// The last release this count started after (ms): a later one recorded in the
    /// channel was a person writing through another node.
    released_at: i64,
}

/// What counting a message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuardChange {
    Held(&'static str),
    Released,
}

/// The limits; 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub run: u32,
    pub per_minute: u32,
}

impl LoopGuards {
    /// Counts a new message in `channel` (by an agent, or a person) sent at `now_ms`,
    /// given the state recorded in the channel. Returns whether agents must not be
    /// woken by it, and what to record and announce.
    pub(crate) fn count(
        &self,
        channel: ChannelId,
        by_agent: bool,
        now_ms: i64,
        limits: Limits,
        recorded: Option<&ChannelLoopGuard>,
    ) -> (bool, Option<GuardChange>) {
        let held_elsewhere = recorded.is_some_and(|g| g.state == LoopGuardState::Held);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if !by_agent {
            // A person wrote: the count starts again.
            let held = channels.remove(&channel).and_then(|g| g.held);
            if held.is_none() && !held_elsewhere {
                return (false, None);
            }
            channels.insert(
                channel,
                Guard {
                    released_at: now_ms,
                    ..Guard::default()
                },
            );
            return (false, Some(GuardChange::Released));
        }
        let guard = channels.entry(channel).or_default();
        if let Some(recorded) = recorded.filter(|g| g.state == LoopGuardState::Released)
            && recorded.since.0 > guard.released_at
        {
            // A person wrote through another node.
            *guard = Guard {
                released_at: recorded.since.0,
                ..Guard::default()
            };
        }
        guard.run = guard.run.saturating_add(1);
        guard.recent.push_back(now_ms);
        while guard
            .recent
            .front()
            .is_some_and(|&t| t <= now_ms - MINUTE_MS)
        {
            guard.recent.pop_front();
        }
        if guard.held.is_some() || held_elsewhere {
            return (true, None);
        }
        let reason = if limits.run > 0 && guard.run >= limits.run {
            "agent_messages"
        } else if limits.per_minute > 0 && guard.recent.len() >= limits.per_minute as usize {
            "per_minute"
        } else {
            return (false, None);
        };
        guard.held = Some(reason);
        (true, Some(GuardChange::Held(reason)))
    }
}

impl Chat {
    /// Counts a new message in `channel` by a user of kind `author` against the loop
    /// guard: whether agents must not be woken by it, and the change to pass to
    /// [`Chat::loop_guard_changed`] once the message is stored.
    pub(crate) fn count_for_loop_guard(
        &self,
        channel: &Channel,
        author: UserKind,
    ) -> (bool, Option<ChannelLoopGuard>) {
        let now = self.now();
        let limits = Limits {
            run: channel.loop_guard_run.unwrap_or(self.config.loop_guard_run),
            per_minute: channel
                .loop_guard_per_minute
                .unwrap_or(self.config.loop_guard_per_minute),
        };
        let (quiet, change) = self.loop_guards.count(
            channel.id,
            author == UserKind::Agent,
            now.0,
            limits,
            channel.loop_guard.as_ref(),
        );
        let change = change.map(|change| {
            let (state, reason) = match change {
                GuardChange::Held(reason) => (LoopGuardState::Held, reason),
                GuardChange::Released => (LoopGuardState::Released, "person_wrote"),
            };
            ChannelLoopGuard {
                state,
                reason: reason.into(),
                since: Timestamp(now.0),
            }
        });
        (quiet, change)
    }

    /// Records a loop guard change in the channel (for every node, and for clients
    /// that load the channel later) and announces it (`channel.loop_guard`, logged with
    /// the change).
    pub(crate) async fn loop_guard_changed(&self, channel: &Channel, change: ChannelLoopGuard) {
        let event = Publish::new(
            channel_scope(channel.id),
            "channel.loop_guard",
            &LoopGuard {
                channel_id: channel.id,
                state: change.state.as_str().into(),
                reason: change.reason.clone(),
            },
        );
        let logged = self
            .store
            .set_loop_guard(channel.id, &change, events_only(move |()| vec![event.clone()]))
            .await;
        self.cache.changed();
        match logged {
            Ok(logged) => self.emit_logged(logged).await,
            // Nothing was recorded, so nothing is announced: the next message decides
            // again from the recorded state.
            Err(err) => {
                tracing::warn!(channel = channel.id.0, cause = %err, "loop guard not recorded")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_the_limit_and_releases_when_a_person_writes() {
        let guards = LoopGuards::default();
        let ch = ChannelId(1);
        let limits = Limits {
            run: 3,
            per_minute: 0,
        };
        assert_eq!(guards.count(ch, true, 0, limits, None), (false, None));
        assert_eq!(guards.count(ch, true, 1, limits, None), (false, None));
        assert_eq!(
            guards.count(ch, true, 2, limits, None),
            (true, Some(GuardChange::Held("agent_messages")))
        );
        assert_eq!(guards.count(ch, true, 3, limits, None), (true, None));
        // Another channel is not held.
        assert_eq!(
            guards.count(ChannelId(2), true, 3, limits, None),
            (false, None)
        );
        assert_eq!(
            guards.count(ch, false, 4, limits, None),
            (false, Some(GuardChange::Released))
        );
        assert_eq!(guards.count(ch, false, 5, limits, None), (false, None));
        assert_eq!(guards.count(ch, true, 6, limits, None), (false, None));
    }

    #[test]
    fn holds_over_the_rate_per_minute() {
        let guards = LoopGuards::default();
        let ch = ChannelId(1);
        let limits = Limits {
            run: 0,
            per_minute: 2,
        };
        assert_eq!(guards.count(ch, true, 0, limits, None), (false, None));
        // A minute later the first no longer counts.
        assert_eq!(guards.count(ch, true, 60_000, limits, None), (false, None));
        assert_eq!(
            guards.count(ch, true, 60_001, limits, None),
            (true, Some(GuardChange::Held("per_minute")))
        );
    }

    fn recorded(state: LoopGuardState, since: i64) -> ChannelLoopGuard {
        ChannelLoopGuard {
            state,
            reason: "x".into(),
            since: Timestamp(since),
        }
    }

    const LIMITS: Limits = Limits {
        run: 2,
        per_minute: 0,
    };

    #[test]
    fn a_hold_recorded_by_another_node_holds_here_and_a_person_releases_it() {
        let guards = LoopGuards::default();
        let ch = ChannelId(1);
        let held = recorded(LoopGuardState::Held, 0);
        assert_eq!(guards.count(ch, true, 1, LIMITS, Some(&held)), (true, None));
        assert_eq!(
            guards.count(ch, false, 2, LIMITS, Some(&held)),
            (false, Some(GuardChange::Released))
        );
    }

    #[test]
    fn a_release_recorded_by_another_node_restarts_the_count_here() {
        let guards = LoopGuards::default();
        let ch = ChannelId(1);
        assert_eq!(guards.count(ch, true, 1, LIMITS, None), (false, None));
        assert_eq!(
            guards.count(ch, true, 2, LIMITS, None),
            (true, Some(GuardChange::Held("agent_messages")))
        );
        // Our own hold, not yet read back: still held.
        assert_eq!(guards.count(ch, true, 3, LIMITS, None), (true, None));
        // A person wrote through another node at 4.
        let released = recorded(LoopGuardState::Released, 4);
        assert_eq!(
            guards.count(ch, true, 5, LIMITS, Some(&released)),
            (false, None)
        );
        assert_eq!(
            guards.count(ch, true, 6, LIMITS, Some(&released)),
            (true, Some(GuardChange::Held("agent_messages")))
        );
    }

    #[test]
    fn a_release_through_this_node_is_not_counted_twice() {
        let guards = LoopGuards::default();
        let ch = ChannelId(1);
        guards.count(ch, true, 1, LIMITS, None);
        guards.count(ch, true, 2, LIMITS, None);
        assert_eq!(
            guards.count(ch, false, 3, LIMITS, None),
            (false, Some(GuardChange::Released))
        );
        let released = recorded(LoopGuardState::Released, 3);
        assert_eq!(
            guards.count(ch, true, 4, LIMITS, Some(&released)),
            (false, None)
        );
        assert_eq!(
            guards.count(ch, true, 5, LIMITS, Some(&released)),
            (true, Some(GuardChange::Held("agent_messages")))
        );
    }
}
