//! `wait_for_messages`: the long poll that makes an agent live. The realtime connection
//! only says *that* a followed channel has something new ([`Live`]); what is new is read
//! from the event log over HTTP after the cursor's offset for that channel, exactly as
//! the socket would have delivered it to this user (skipped events left out, `wake` as
//! marked; a `turn.passed` that gives this agent the turn at a message, or a
//! `turn.cancelled` that takes it away, returns that message as a wake, with `turn`
//! saying which). The cursor moves past every event looked at, taken or not, so a
//! caller that always passes back the cursor it got never sees an event twice.
//!
//! [`Live`]: crate::agent::Live

use std::collections::BTreeMap;
use std::time::Duration;

use chorus_client::{
    ChannelId, ErrorCode, HistoryQuery, Message, MessageId, ScopeEvent, WorkspaceId,
};
use schemars::JsonSchema;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, TURN_CANCELLED, TURN_PASSED, is_turn_wake};
use crate::cursor::Cursor;
use crate::error::ToolError;
use crate::render::{Budget, MessageOut};

/// Events read per request from the log.
const PAGE: u32 = 200;

/// How one wait is to be done.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// How long to wait for something when nothing is there yet (zero: only look).
    pub timeout: Duration,
    /// Every new message the agent may read, not only those that wake it.
    pub all: bool,
    /// Most events returned; the rest stay after the cursor.
    pub limit: usize,
    /// Character budget of the returned messages.
    pub max_chars: usize,
}

/// What `wait_for_messages` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Waited {
    /// The new messages after the cursor, oldest first: those that wake the agent (or,
    /// with `all`, every new message by others).
    pub events: Vec<WakeEvent>,
    /// Pass this as `cursor` to the next call: it is past every event returned (and past
    /// those looked at and left out), never past one that was not returned.
    pub cursor: String,
    /// True when the wait ended at its timeout (or the server is stopping) with nothing new.
    pub timed_out: bool,
    /// Channels whose events after the cursor are no longer kept (or a cursor from
    /// another server): they continue from now; catch up with `read_messages`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
}

/// A new message in a channel the agent follows.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WakeEvent {
    pub channel_id: i64,
    /// The channel's name.
    pub channel: String,
    pub workspace_id: i64,
    /// True: the channel's policy says this agent should act on it (a mention, its turn,
    /// its duty…, or the turn at it passed to this agent from another that did not take
    /// it). False (only with `all`): for its information.
    pub wake: bool,
    /// Absent for a new message. `passed`: the turn at `message` passed to this agent
    /// (another did not take it): act on it. `cancelled`: someone cancelled this
    /// agent's turn at `message`: stop working on it (its streaming reply was aborted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<&'static str>,
    pub message: MessageOut,
}

/// A channel whose events after the cursor could not all be read.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Gap {
    pub channel_id: i64,
    pub reason: String,
}

/// Waits for what is new after `cursor` (absent: after now), up to `options.timeout`;
/// ends early with nothing when `cancel` fires.
pub async fn wait(
    agent: &Agent,
    cursor: Option<Cursor>,
    options: &WaitOptions,
    cancel: &CancellationToken,
) -> Result<Waited, ToolError> {
    let deadline = Instant::now() + options.timeout;
    // Taken before the first look: a ring after it is never missed.
    let mut bell = agent.live.bell();
    let mut cursor = cursor.unwrap_or_else(|| Cursor(agent.live.seen().heads));
    loop {
        let seen = agent.live.seen();
        if seen.ended {
            return Err(ToolError::unavailable(
                "the connection to Chorus ended (token revoked or expired, user \
                 deactivated, or the server is gone)",
            ));
        }
        // Exactly the channels the connection follows: a channel left is dropped from
        // the cursor, one joined since the cursor was made starts where following it began.
        let mut from: BTreeMap<ChannelId, u64> = BTreeMap::new();
        for (channel, head) in &seen.heads {
            let start = cursor
                .0
                .get(channel)
                .or_else(|| seen.starts.get(channel))
                .copied()
                .unwrap_or(*head);
            from.insert(*channel, start);
        }
        cursor = Cursor(from.clone());
        let mut scan = Scan {
            agent,
            options,
            budget: Budget::new(options.max_chars),
            found: Vec::new(),
            gaps: Vec::new(),
            full: false,
        };
        for (channel, after) in from {
            let head = seen.heads.get(&channel).copied().unwrap_or(after);
            if head <= after {
                continue;
            }
            // The socket saw it all and nothing wanted: no read of the log (an agent
            // observing a busy channel costs no request per message).
            if seen.nothing_wanted_after(channel, after, options.all) {
                cursor.0.insert(channel, head);
                continue;
            }
            match scan.channel(channel, after, head).await? {
                Some(position) => {
                    cursor.0.insert(channel, position);
                }
                None => {
                    cursor.0.remove(&channel);
                }
            }
            if scan.full {
                break;
            }
        }
        if !scan.found.is_empty() || !scan.gaps.is_empty() || options.timeout.is_zero() {
            let mut events = scan.found;
            events.sort_by_key(|e| e.message.id);
            return Ok(Waited {
                timed_out: false,
                events,
                cursor: cursor.encode(),
                gaps: scan.gaps,
            });
        }
        let quiet = || Waited {
            events: Vec::new(),
            cursor: cursor.encode(),
            timed_out: true,
            gaps: Vec::new(),
        };
        tokio::select! {
            rang = bell.changed() => {
                if rang.is_err() {
                    return Err(ToolError::unavailable("the connection to Chorus ended"));
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(quiet()),
            () = cancel.cancelled() => return Ok(quiet()),
        }
    }
}

/// One pass over the channels with something new.
struct Scan<'a> {
    agent: &'a Agent,
    options: &'a WaitOptions,
    budget: Budget,
    found: Vec<WakeEvent>,
    gaps: Vec<Gap>,
    /// The limit or the budget is reached: the pass ends.
    full: bool,
}

impl Scan<'_> {
    /// Reads `channel`'s events after `after`; returns the channel's new position, or
    /// `None` when the agent may no longer read it.
    async fn channel(
        &mut self,
        channel: ChannelId,
        mut after: u64,
        head: u64,
    ) -> Result<Option<u64>, ToolError> {
        let scope = format!("channel:{channel}");
        loop {
            let page = match self
                .agent
                .client
                .scope_events(&scope, after, Some(PAGE))
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    return match err.code() {
                        Some(ErrorCode::Gone) => {
                            self.gaps.push(Gap {
                                channel_id: channel.0,
                                reason: "events after the cursor are no longer kept (or the \
                                         cursor is another server's, or from before your \
                                         access to the channel); continuing from now"
                                    .to_owned(),
                            });
                            Ok(Some(head))
                        }
                        Some(ErrorCode::Forbidden | ErrorCode::NotFound) => Ok(None),
                        _ => Err(err.into()),
                    };
                }
            };
            for event in page.events {
                if let Some(wake) = self.wanted(&event) {
                    if self.found.len() >= self.options.limit {
                        self.full = true;
                        return Ok(Some(after));
                    }
                    let turn = match event.kind.as_str() {
                        TURN_PASSED => Some("passed"),
                        TURN_CANCELLED => Some("cancelled"),
                        _ => None,
                    };
                    let message = if turn.is_some() {
                        self.turn_message(channel, &event.data).await?
                    } else {
                        serde_json::from_value::<Message>(event.data).ok()
                    };
                    let Some(message) = message else {
                        after = event.offset;
                        continue;
                    };
                    let info = self.agent.channel(channel).await.ok();
                    let author = self.agent.person(message.author_id).await;
                    let mut out = MessageOut::new(&message, author, self.agent.me.id);
                    if !self.budget.take(&mut out) {
                        self.full = true;
                        return Ok(Some(after));
                    }
                    self.found.push(WakeEvent {
                        channel_id: channel.0,
                        channel: info.as_ref().map(|i| i.name.clone()).unwrap_or_default(),
                        workspace_id: info.map_or(WorkspaceId(0), |i| i.workspace_id).0,
                        wake,
                        turn,
                        message: out,
                    });
                }
                after = event.offset;
            }
            after = after.max(page.next);
            if !page.more {
                return Ok(Some(after));
            }
        }
    }

    /// The message whose turn `turn.passed` or `turn.cancelled` (`data`) is about, as
    /// it is now; `None` when it is gone or unreadable.
    async fn turn_message(
        &self,
        channel: ChannelId,
        data: &serde_json::Value,
    ) -> Result<Option<Message>, ToolError> {
        let field = |name: &str| data.get(name).and_then(|v| v.as_i64()).map(MessageId);
        let Some(id) = field("message_id") else {
            return Ok(None);
        };
        let query = HistoryQuery {
            before: Some(MessageId(id.0.saturating_add(1))),
            limit: Some(1),
            thread_id: field("thread_id"),
            ..HistoryQuery::default()
        };
        match self.agent.client.list_messages(channel, &query).await {
            Ok(page) => Ok(page.into_iter().find(|m| m.id == id)),
            Err(err) if matches!(err.code(), Some(ErrorCode::Forbidden | ErrorCode::NotFound)) => {
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the event is one to return, and its wake mark: a new message, or this
    /// agent's turn at a message passed to it or cancelled (which wake only it).
    fn wanted(&self, event: &ScopeEvent) -> Option<bool> {
        if event.kind == TURN_PASSED || event.kind == TURN_CANCELLED {
            return is_turn_wake(&event.kind, event.wake).then_some(true);
        }
        if event.kind != "message.created" {
            return None;
        }
        let wake = event.wake == Some(true);
        if wake {
            return Some(true);
        }
        let by_me = event
            .data
            .get("author_id")
            .and_then(|v| v.as_i64())
            .is_some_and(|id| id == self.agent.me.id.0);
        (self.options.all && !by_me).then_some(false)
    }
}
