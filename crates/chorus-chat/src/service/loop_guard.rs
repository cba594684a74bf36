//! The loop guard: agents that answer each other forever stop on their own. Per
//! channel, agent-authored messages are counted since the last message by a person,
//! and over the last minute; once either reaches its limit (`ChatConfig::
//! loop_guard_run`, `loop_guard_per_minute`), no agent is woken in that channel (they
//! observe) until a person writes again. Both changes are announced as
//! `channel.loop_guard {channel_id, state, reason}`.
//!
//! The counts are this node's: with several nodes, each counts the messages sent
//! through it, so the limits hold per node (a loop still stops, a little later).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::model::ChannelId;

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
    /// Why agents are not woken, while they are not.
    held: Option<&'static str>,
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
    /// Counts a new message in `channel` (by an agent, or a person) sent at `now_ms`.
    /// Returns whether agents must not be woken by it, and what to announce.
    pub(crate) fn count(
        &self,
        channel: ChannelId,
        by_agent: bool,
        now_ms: i64,
        limits: Limits,
    ) -> (bool, Option<GuardChange>) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if !by_agent {
            // A person wrote: the count starts again.
            let held = channels.remove(&channel).and_then(|g| g.held);
            return (false, held.map(|_| GuardChange::Released));
        }
        let guard = channels.entry(channel).or_default();
        guard.run = guard.run.saturating_add(1);
        guard.recent.push_back(now_ms);
        while guard
            .recent
            .front()
            .is_some_and(|&t| t <= now_ms - MINUTE_MS)
        {
            guard.recent.pop_front();
        }
        if guard.held.is_some() {
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
        assert_eq!(guards.count(ch, true, 0, limits), (false, None));
        assert_eq!(guards.count(ch, true, 1, limits), (false, None));
        assert_eq!(
            guards.count(ch, true, 2, limits),
            (true, Some(GuardChange::Held("agent_messages")))
        );
        assert_eq!(guards.count(ch, true, 3, limits), (true, None));
        // Another channel is not held.
        assert_eq!(guards.count(ChannelId(2), true, 3, limits), (false, None));
        assert_eq!(
            guards.count(ch, false, 4, limits),
            (false, Some(GuardChange::Released))
        );
        assert_eq!(guards.count(ch, false, 5, limits), (false, None));
        assert_eq!(guards.count(ch, true, 6, limits), (false, None));
    }

    #[test]
    fn holds_over_the_rate_per_minute() {
        let guards = LoopGuards::default();
        let ch = ChannelId(1);
        let limits = Limits {
            run: 0,
            per_minute: 2,
        };
        assert_eq!(guards.count(ch, true, 0, limits), (false, None));
        // A minute later the first no longer counts.
        assert_eq!(guards.count(ch, true, 60_000, limits), (false, None));
        assert_eq!(
            guards.count(ch, true, 60_001, limits),
            (true, Some(GuardChange::Held("per_minute")))
        );
    }
}
