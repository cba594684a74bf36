//! [`Agent`]: one Chorus user as its MCP tools see it — an HTTP [`Client`] for every read
//! and write, and one realtime connection ([`Live`]) that only rings a bell when one of
//! the user's channels has a new event. What the bell announces is always read over
//! HTTP from the event log (`GET /api/v1/scopes/{scope}/events`), so every answer goes
//! through the API's own authorization and follows the log's offsets.
//!
//! The connection also makes the user *connected* for as long as the agent lives, which
//! is what tells Chorus that a wake reached it: no webhook is queued for a woken agent
//! with a live connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chorus_client::{
    ChannelId, Client, CloseCode, EventFrame, RESUME_GAP, Realtime, User, UserId, UserKind,
    WorkspaceId,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cursor::channel_of;
use crate::error::ToolError;

/// Names cached per agent before the cache starts over (a bound, not a tuning).
const MAX_CACHED: usize = 10_000;

/// Who wrote a message, as results show it.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub kind: UserKind,
}

/// A channel's name and workspace, as results show them.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub name: String,
    pub workspace_id: WorkspaceId,
}

/// One user's tools' view of Chorus.
pub struct Agent {
    pub client: Client,
    pub me: User,
    pub live: Live,
    /// A std mutex: lookups and inserts only, never held across an await.
    people: Mutex<HashMap<UserId, Person>>,
    channels: Mutex<HashMap<ChannelId, ChannelInfo>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Agent {
    /// Checks the token (`GET /api/v1/me`) and opens the realtime connection.
    pub async fn connect(client: Client) -> Result<Self, chorus_client::Error> {
        let me = client.me().await?;
        let realtime = client.realtime().await?;
        Ok(Self {
            live: Live::start(realtime, me.id),
            client,
            me,
            people: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// A user's name (`@name`) and kind, from the cache or the API; the id as the name
    /// when the user cannot be seen.
    pub async fn person(&self, id: UserId) -> Person {
        if id == self.me.id {
            return Person {
                name: self.me.name.clone(),
                kind: self.me.kind,
            };
        }
        if let Some(person) = lock(&self.people).get(&id) {
            return person.clone();
        }
        let person = match self.client.user(id).await {
            Ok(view) => {
                let profile = view.profile();
                Person {
                    name: profile.name,
                    kind: profile.kind,
                }
            }
            Err(_) => {
                return Person {
                    name: format!("user-{id}"),
                    kind: UserKind::Human,
                };
            }
        };
        let mut people = lock(&self.people);
        if people.len() >= MAX_CACHED {
            people.clear();
        }
        people.insert(id, person.clone());
        person
    }

    /// A channel's name and workspace (cached: a name may be stale after a rename).
    pub async fn channel(&self, id: ChannelId) -> Result<ChannelInfo, ToolError> {
        if let Some(info) = lock(&self.channels).get(&id) {
            return Ok(info.clone());
        }
        let view = self.client.get_channel(id).await?;
        let info = ChannelInfo {
            name: view.channel.name,
            workspace_id: view.channel.workspace_id,
        };
        let mut channels = lock(&self.channels);
        if channels.len() >= MAX_CACHED {
            channels.clear();
        }
        channels.insert(id, info.clone());
        Ok(info)
    }

    /// Whether the realtime connection has ended for good (token revoked, user
    /// deactivated): the agent must be made again.
    pub fn ended(&self) -> bool {
        self.live.ended()
    }
}

/// The event that wakes the agent a message's round-robin turn passed to.
pub const TURN_PASSED: &str = "turn.passed";
/// The event that tells an agent someone cancelled its turn at a message (it wakes only
/// that agent).
pub const TURN_CANCELLED: &str = "turn.cancelled";

/// Whether `event` is about this user's turn at a message and wakes it: a turn passed
/// to it, or its turn cancelled.
pub(crate) fn is_turn_wake(kind: &str, wake: Option<bool>) -> bool {
    (kind == TURN_PASSED || kind == TURN_CANCELLED) && wake == Some(true)
}

/// The bell: one task reads the realtime connection and records, per channel the user
/// follows, the newest offset it saw and the newest message that wakes the user (or is
/// by someone else); every event (and the end) rings the bell.
///
/// The connection delivers a channel's events in offset order with none missing (it
/// resumes after reconnects), so from `contiguous_from` on it has seen every event the
/// log holds for this user: a wait whose cursor is past that point and before which no
/// wanted message was seen can move its cursor to the head without reading the log. A
/// `resume.gap` (events the client could not recover) ends that knowledge until the
/// channel's next event.
pub struct Live {
    state: Arc<Mutex<Seen>>,
    bell: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

/// What the connection has shown of each followed channel (offsets of `channel:{id}`).
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// The newest offset seen.
    pub heads: BTreeMap<ChannelId, u64>,
    /// Where following each channel began: its offset when the connection opened, or
    /// just before the first event of a channel joined since.
    pub starts: BTreeMap<ChannelId, u64>,
    /// Every event after this offset has been seen (absent: not known).
    pub contiguous_from: BTreeMap<ChannelId, u64>,
    /// The newest `message.created` that woke the user, `turn.passed` that gave it the
    /// turn, or `turn.cancelled` that took it away.
    pub last_wake: BTreeMap<ChannelId, u64>,
    /// The newest `message.created` by someone else (woken or not).
    pub last_message: BTreeMap<ChannelId, u64>,
    pub ended: bool,
    /// It ended because its credentials were refused (3502: the token revoked or
    /// expired, the user deactivated): the token will not work again.
    pub refused: bool,
}

impl Seen {
    fn record(&mut self, event: &EventFrame, me: UserId) {
        if let (Some(channel), Some(offset)) = (channel_of(&event.scope), event.offset) {
            let head = self.heads.entry(channel).or_insert(0);
            *head = (*head).max(offset);
            let before = offset.saturating_sub(1);
            self.starts.entry(channel).or_insert(before);
            self.contiguous_from.entry(channel).or_insert(before);
            if is_turn_wake(&event.kind, event.wake) {
                // The turn at a message passed to this agent, or cancelled: a wake.
                self.last_wake.insert(channel, offset);
            }
            if event.kind == "message.created" {
                if event.wake == Some(true) {
                    self.last_wake.insert(channel, offset);
                }
                let author = event.data.get("author_id").and_then(|v| v.as_i64());
                if author != Some(me.0) {
                    self.last_message.insert(channel, offset);
                }
            }
        } else if event.kind == RESUME_GAP {
            let scope = event.data.get("scope").and_then(|v| v.as_str());
            if let Some(channel) = scope.and_then(channel_of) {
                self.contiguous_from.remove(&channel);
            }
        } else if event.kind == "channel.left"
            && let Some(id) = event.data.get("channel_id").and_then(|v| v.as_i64())
        {
            let channel = ChannelId(id);
            self.heads.remove(&channel);
            self.starts.remove(&channel);
            self.contiguous_from.remove(&channel);
            self.last_wake.remove(&channel);
            self.last_message.remove(&channel);
        }
    }

    /// Whether the connection has seen every event of `channel` after `after`, and none
    /// of them is a message that is wanted (one that wakes; with `all`, any by others).
    pub fn nothing_wanted_after(&self, channel: ChannelId, after: u64, all: bool) -> bool {
        let known = self
            .contiguous_from
            .get(&channel)
            .is_some_and(|from| *from <= after);
        let last_wake = self.last_wake.get(&channel).copied().unwrap_or(0);
        let last_message = self.last_message.get(&channel).copied().unwrap_or(0);
        let last = if all {
            last_wake.max(last_message)
        } else {
            last_wake
        };
        known && last <= after
    }
}

impl Live {
    fn start(mut realtime: Realtime, me: UserId) -> Self {
        let mut seen = Seen::default();
        for (scope, offset) in realtime.positions() {
            if let Some(channel) = channel_of(&scope) {
                seen.heads.insert(channel, offset);
                seen.starts.insert(channel, offset);
                seen.contiguous_from.insert(channel, offset);
            }
        }
        let state = Arc::new(Mutex::new(seen));
        let (ring, bell) = watch::channel(0u64);
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                // Draining the connection keeps it from being closed as a slow consumer.
                while let Some(event) = realtime.next_event().await {
                    lock(&state).record(&event, me);
                    ring.send_modify(|n| *n = n.wrapping_add(1));
                }
                let why = realtime.disconnect();
                tracing::info!(?why, "the agent's realtime connection ended");
                let refused = why.is_some_and(|d| d.close_code() == Some(CloseCode::Unauthorized));
                {
                    let mut seen = lock(&state);
                    seen.ended = true;
                    seen.refused = refused;
                }
                ring.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        Self { state, bell, task }
    }

    /// What has been seen so far.
    pub fn seen(&self) -> Seen {
        lock(&self.state).clone()
    }

    /// A receiver marked as having seen every ring so far: take it *before* reading
    /// [`seen`](Self::seen), then await its `changed()` for anything after.
    pub fn bell(&self) -> watch::Receiver<u64> {
        let mut bell = self.bell.clone();
        bell.mark_unchanged();
        bell
    }

    pub fn ended(&self) -> bool {
        lock(&self.state).ended
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Dropping the task drops the `Realtime`, which closes the socket.
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(scope: &str, offset: Option<u64>, kind: &str, data: serde_json::Value) -> EventFrame {
        let wake = data.get("wake").and_then(|w| w.as_bool());
        EventFrame {
            scope: scope.to_owned(),
            offset,
            kind: kind.to_owned(),
            data,
            wake,
        }
    }

    #[test]
    fn the_socket_tells_when_no_read_is_needed() {
        let me = UserId(7);
        let ch = ChannelId(3);
        let mut seen = Seen::default();
        seen.heads.insert(ch, 10);
        seen.starts.insert(ch, 10);
        seen.contiguous_from.insert(ch, 10);
        // Observed messages by others, and the agent's own.
        seen.record(
            &event(
                "channel:3",
                Some(11),
                "message.created",
                json!({"author_id": 2, "wake": false}),
            ),
            me,
        );
        seen.record(
            &event(
                "channel:3",
                Some(12),
                "message.created",
                json!({"author_id": 7, "wake": false}),
            ),
            me,
        );
        assert_eq!(seen.heads[&ch], 12);
        assert!(seen.nothing_wanted_after(ch, 10, false));
        assert!(
            !seen.nothing_wanted_after(ch, 10, true),
            "with all, 11 is wanted"
        );
        assert!(
            seen.nothing_wanted_after(ch, 11, true),
            "12 is the agent's own"
        );
        // A wake.
        seen.record(
            &event(
                "channel:3",
                Some(13),
                "message.created",
                json!({"author_id": 2, "wake": true}),
            ),
            me,
        );
        assert!(!seen.nothing_wanted_after(ch, 12, false));
        assert!(seen.nothing_wanted_after(ch, 13, false));
        // Before the connection's start nothing is known.
        assert!(!seen.nothing_wanted_after(ch, 9, false));
        // A gap ends the knowledge until the channel's next event.
        seen.record(
            &event("user:7", None, RESUME_GAP, json!({"scope": "channel:3"})),
            me,
        );
        assert!(!seen.nothing_wanted_after(ch, 13, false));
        seen.record(
            &event("channel:3", Some(20), "reaction.added", json!({})),
            me,
        );
        assert!(seen.nothing_wanted_after(ch, 19, false));
        assert!(!seen.nothing_wanted_after(ch, 18, false));
        // A channel joined later starts just before its first event; one left is gone.
        seen.record(
            &event("channel:5", Some(40), "member.joined", json!({})),
            me,
        );
        assert_eq!(seen.starts[&ChannelId(5)], 39);
        seen.record(
            &event("user:7", Some(2), "channel.left", json!({"channel_id": 5})),
            me,
        );
        assert!(!seen.heads.contains_key(&ChannelId(5)));
    }

    #[test]
    fn a_turn_passed_to_the_agent_is_a_wake_and_one_passed_to_another_is_not() {
        let me = UserId(7);
        let ch = ChannelId(3);
        let mut seen = Seen::default();
        seen.record(
            &event(
                "channel:3",
                Some(11),
                TURN_PASSED,
                json!({"to": 8, "wake": false}),
            ),
            me,
        );
        assert!(seen.nothing_wanted_after(ch, 10, false));
        seen.record(
            &event(
                "channel:3",
                Some(12),
                TURN_PASSED,
                json!({"to": 7, "wake": true}),
            ),
            me,
        );
        assert_eq!(seen.last_wake[&ch], 12);
        assert!(!seen.nothing_wanted_after(ch, 11, false));
    }
}
