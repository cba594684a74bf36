//! The `chorus://wakes` resource: what a client subscribes to (`subscriptions/listen`,
//! protocol 2026-07-28) to be told of new wakes instead of holding a long poll open.
//!
//! A notification (`notifications/resources/updated {uri: "chorus://wakes"}`) says only
//! *that* something woke the agent: a message whose delivery to this user was marked
//! `wake` (what the channel's policy says it should act on) — never a message it only
//! observes. What woke it is fetched as always with `wait_for_messages` and the caller's
//! cursor, which stays the one source of truth: notifications are a hint, coalesced
//! (several wakes close together may make one) and not replayed (a client that
//! subscribes again calls `wait_for_messages` to catch up).
//!
//! The subscription watches the agent's bell ([`Live`](crate::agent::Live)): each ring,
//! it compares the newest wake offset per channel with what it saw before and notifies
//! when one moved. It runs inside the listen request, so it ends with it (the client
//! cancels it, the session or connection closes, the server stops): no task outlives
//! the subscription.

use std::collections::BTreeMap;
use std::sync::Arc;

use chorus_client::{ChannelId, ErrorCode};
use rmcp::ErrorData as McpError;
use rmcp::model::{
    ReadResourceResult, Resource, ResourceContents, ResourceUpdatedNotification,
    ResourceUpdatedNotificationParam, ServerNotification, SubscriptionFilter,
};
use rmcp::service::{SubscriptionContext, SubscriptionSendError};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::error::ToolError;
use crate::pool::{AgentPool, IDLE};

/// The one resource: the agent's wakes.
pub const WAKES_URI: &str = "chorus://wakes";

/// How to fetch what a notification announces (in the resource and the docs).
const HOW: &str = "Something woke you: call wait_for_messages with your cursor to get it.";

/// `resources/list`'s entry.
pub fn wakes_resource() -> Resource {
    Resource::new(WAKES_URI, "wakes")
        .with_title("Your wakes")
        .with_description(
            "The newest message that woke you in each channel. Subscribe to it to be \
             notified (notifications/resources/updated) when a new one arrives; then call \
             wait_for_messages with your cursor.",
        )
        .with_mime_type("application/json")
}

/// What a listen request may have: updates of [`WAKES_URI`] (the SDK keeps only what
/// was asked for).
pub fn accepted_filter() -> SubscriptionFilter {
    SubscriptionFilter::builder()
        .resource_subscription(WAKES_URI)
        .build()
}

#[derive(Debug, Serialize)]
struct WakesOut {
    /// Per channel that woke the agent since its connection opened.
    channels: Vec<ChannelWake>,
    how: &'static str,
}

#[derive(Debug, Serialize)]
struct ChannelWake {
    channel_id: i64,
    channel: String,
    /// The event-log offset of the newest wake the connection has seen.
    last_wake_offset: u64,
}

/// `resources/read` of [`WAKES_URI`]: a short JSON summary.
pub async fn read_wakes(agent: &Agent) -> ReadResourceResult {
    let seen = agent.live.seen();
    let mut channels = Vec::with_capacity(seen.last_wake.len());
    for (id, offset) in seen.last_wake {
        let channel = match agent.channel(id).await {
            Ok(info) => info.name,
            Err(_) => String::new(),
        };
        channels.push(ChannelWake {
            channel_id: id.0,
            channel,
            last_wake_offset: offset,
        });
    }
    let text = serde_json::to_string(&WakesOut { channels, how: HOW })
        .unwrap_or_else(|_| format!("{{\"how\":\"{HOW}\"}}"));
    ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
        uri: WAKES_URI.to_owned(),
        mime_type: Some("application/json".to_owned()),
        text,
        meta: None,
    }])
}

/// Whether a channel's newest wake moved from `before` to `now`.
fn woke(before: &BTreeMap<ChannelId, u64>, now: &BTreeMap<ChannelId, u64>) -> bool {
    now.iter()
        .any(|(channel, offset)| before.get(channel).is_none_or(|old| offset > old))
}

/// Where a subscription's agent comes from when its connection ends.
pub enum Source<'a> {
    /// `chorus mcp`: the one agent; its end ends the subscription.
    One,
    /// `/mcp`: the pool's agent of this token, kept in use while the subscription lives.
    Pool(&'a AgentPool, &'a str),
}

fn closed(err: &ToolError) -> McpError {
    McpError::internal_error(format!("the connection to Chorus ended: {err}"), None)
}

/// Runs one subscription: a notification per ring of the bell that saw a new wake,
/// until the listen request is cancelled or `stop` (graceful end).
pub async fn listen(
    mut agent: Arc<Agent>,
    source: Source<'_>,
    stop: &CancellationToken,
    subscription: &SubscriptionContext,
) -> Result<(), McpError> {
    let sink = subscription.sink();
    // Keeps the pool's agent from being swept as idle while it is listened to.
    let mut keep = tokio::time::interval(IDLE / 4);
    keep.reset();
    loop {
        let mut bell = agent.live.bell();
        let mut known = agent.live.seen().last_wake;
        let mut swapped = false;
        loop {
            tokio::select! {
                changed = bell.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = keep.tick() => {
                    if let Source::Pool(pool, token) = source {
                        let current = pool.get(token).await.map_err(|e| closed(&e))?;
                        if !Arc::ptr_eq(&current, &agent) {
                            agent = current;
                            swapped = true;
                            break;
                        }
                    }
                    continue;
                }
                () = subscription.cancelled() => return Ok(()),
                () = stop.cancelled() => return Ok(()),
            }
            let seen = agent.live.seen();
            let new = woke(&known, &seen.last_wake);
            known = seen.last_wake;
            if new {
                let updated = ServerNotification::ResourceUpdatedNotification(
                    ResourceUpdatedNotification::new(ResourceUpdatedNotificationParam::new(
                        WAKES_URI,
                    )),
                );
                match sink.send(updated).await {
                    Ok(()) => {}
                    Err(SubscriptionSendError::SubscriptionClosed) => return Ok(()),
                    Err(err) => {
                        tracing::debug!(%err, "a wake notification was not sent");
                        return Ok(());
                    }
                }
            }
            if seen.ended {
                break;
            }
        }
        if !swapped {
            // The connection ended. Wakes between the end and a new connection are not notified; the
            // client's next wait_for_messages finds them in the log. Credentials refused
            // are final: a new agent with the same token would only be refused again.
            agent = match source {
                Source::One => {
                    return Err(closed(&ToolError::unavailable(
                        "token revoked or expired, or the user deactivated",
                    )));
                }
                Source::Pool(..) if agent.live.seen().refused => {
                    return Err(closed(&ToolError::new(
                        ErrorCode::Unauthorized.as_str(),
                        "the token was revoked or has expired, or the user deactivated",
                    )));
                }
                Source::Pool(pool, token) => pool.get(token).await.map_err(|e| closed(&e))?,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_wake_counts() {
        let a = ChannelId(1);
        let b = ChannelId(2);
        let before = BTreeMap::from([(a, 5)]);
        assert!(!woke(&before, &before));
        assert!(!woke(&before, &BTreeMap::new()), "a channel left");
        assert!(woke(&before, &BTreeMap::from([(a, 6)])));
        assert!(woke(&before, &BTreeMap::from([(a, 5), (b, 1)])));
    }
}
