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

use chorus_client::{ChannelId, Client, Realtime, User, UserId, UserKind, WorkspaceId};
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
            live: Live::start(realtime),
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

/// The bell: one task reads the realtime connection and records, per channel the user
/// follows, the newest offset it saw; every event (and the end) rings the bell.
pub struct Live {
    state: Arc<Mutex<Seen>>,
    bell: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

/// What the connection has shown of each followed channel.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// The newest offset seen per channel.
    pub heads: BTreeMap<ChannelId, u64>,
    /// Where following each channel began: its offset when the connection opened, or
    /// just before the first event of a channel joined since.
    pub starts: BTreeMap<ChannelId, u64>,
    pub ended: bool,
}

impl Live {
    fn start(mut realtime: Realtime) -> Self {
        let mut seen = Seen::default();
        for (scope, offset) in realtime.positions() {
            if let Some(channel) = channel_of(&scope) {
                seen.heads.insert(channel, offset);
                seen.starts.insert(channel, offset);
            }
        }
        let state = Arc::new(Mutex::new(seen));
        let (ring, bell) = watch::channel(0u64);
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                // Draining the connection keeps it from being closed as a slow consumer.
                while let Some(event) = realtime.next_event().await {
                    {
                        let mut seen = lock(&state);
                        if let (Some(channel), Some(offset)) =
                            (channel_of(&event.scope), event.offset)
                        {
                            let head = seen.heads.entry(channel).or_insert(0);
                            *head = (*head).max(offset);
                            seen.starts
                                .entry(channel)
                                .or_insert(offset.saturating_sub(1));
                        } else if event.kind == "channel.left"
                            && let Some(id) = event.data.get("channel_id").and_then(|v| v.as_i64())
                        {
                            seen.heads.remove(&ChannelId(id));
                            seen.starts.remove(&ChannelId(id));
                        }
                    }
                    ring.send_modify(|n| *n = n.wrapping_add(1));
                }
                let why = realtime.disconnect();
                tracing::info!(?why, "the agent's realtime connection ended");
                lock(&state).ended = true;
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
