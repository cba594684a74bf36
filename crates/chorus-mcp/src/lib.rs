//! Chorus as an MCP server: the tools an agent runtime (a coding agent, a desktop
//! assistant, an agent framework) uses to be a member of Chorus channels — list them,
//! read, post, react, set a status, and wait for what wakes it.
//!
//! Layout:
//! - [`tools`]: [`ChorusMcp`], the tool server (rmcp's tool router; schemas from the
//!   argument and result types). Written once, against the Rust client.
//! - [`agent`]: [`Agent`], one user's client and the realtime connection whose events
//!   ring the bell `wait_for_messages` listens to.
//! - [`wait`]: the long poll: what is new after a cursor, read from the event log.
//! - [`cursor`]: the wait cursor, per-channel event-log offsets in an opaque string.
//! - [`render`]: messages as tools return them, within a character budget.
//! - [`notify`]: the `chorus://wakes` resource and its subscription (a notification
//!   per new wake).
//! - [`pool`]: the agents of the server's `/mcp` endpoint, one per bearer token.
//! - [`error`]: [`ToolError`], Chorus's error codes as tool errors.
//!
//! Two transports, one implementation: [`serve_stdio`] (what `chorus mcp` runs; it talks
//! to a Chorus server through the Rust client) and [`McpEndpoint`] (the server's own
//! `/mcp`, Streamable HTTP; the same tools, with a client pointed at the server itself
//! for each bearer). See `docs/mcp.md`.

pub mod agent;
pub mod cursor;
pub mod error;
pub mod notify;
pub mod pool;
pub mod render;
pub mod tools;
pub mod wait;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

pub use agent::Agent;
pub use error::ToolError;
pub use pool::AgentPool;
/// The MCP SDK this crate is built on (its transport types appear in this API).
pub use rmcp;
pub use tools::ChorusMcp;

use rmcp::ServiceExt;
use rmcp::transport::common::server_side_http::SessionId;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

/// Serves the tools on stdin/stdout for `agent` until the client goes away.
pub async fn serve_stdio(agent: Arc<Agent>) -> std::io::Result<()> {
    let running = ChorusMcp::for_agent(agent)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(())
}

/// Most MCP sessions one user keeps open on `/mcp` at once. Clients of the protocol
/// versions before 2026-07-28 get a session (two tasks and a tool router) per
/// `initialize`, kept until it idles out; without a bound, one user's requests could
/// keep tens of thousands alive. Past it, that user's least recently used session is
/// closed (a client still holding it gets `404` and initializes again), so a runaway
/// client costs its own user an idle session, never the server its memory.
pub const MAX_SESSIONS_PER_USER: usize = 16;

/// The server's `/mcp` endpoint: the Streamable HTTP service, and who opened which of
/// its sessions.
pub struct McpEndpoint {
    pub service: StreamableHttpService<ChorusMcp, LocalSessionManager>,
    sessions: Arc<LocalSessionManager>,
    /// Each user's sessions, least recently used first (ids of sessions since ended
    /// are dropped whenever the user opens another).
    by_user: Mutex<HashMap<i64, VecDeque<SessionId>>>,
}

impl McpEndpoint {
    /// The endpoint of `pool`'s agents; requests past `max_body_bytes` are refused.
    /// The caller authenticates every request first (the same way as the API's
    /// routes); the tools act as the request's bearer through `pool`.
    pub fn new(pool: Arc<AgentPool>, max_body_bytes: usize) -> Self {
        let sessions = Arc::new(LocalSessionManager::default());
        Self {
            service: http_service(pool, max_body_bytes, sessions.clone()),
            sessions,
            by_user: Mutex::new(HashMap::new()),
        }
    }

    fn by_user(&self) -> std::sync::MutexGuard<'_, HashMap<i64, VecDeque<SessionId>>> {
        // A panic while holding it leaves a map of ids: nothing to repair.
        self.by_user.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request of `user` in session `id` (its `Mcp-Session-Id`): that session is now
    /// their most recently used.
    pub fn used(&self, user: i64, id: &str) {
        let mut by_user = self.by_user();
        if let Some(ids) = by_user.get_mut(&user)
            && let Some(at) = ids.iter().position(|s| &**s == id)
            && let Some(session) = ids.remove(at)
        {
            ids.push_back(session);
        }
    }

    /// After a response to `user` that opened session `id` (rmcp names it in the
    /// `initialize` answer's `Mcp-Session-Id`): counts it as theirs, and closes their
    /// least recently used session past [`MAX_SESSIONS_PER_USER`].
    pub async fn answered(&self, user: i64, id: &str) {
        let oldest = {
            let live = self.sessions.sessions.read().await;
            let mut by_user = self.by_user();
            // Users whose sessions have all ended take no room.
            by_user.retain(|_, ids| {
                ids.retain(|s| live.contains_key(s));
                !ids.is_empty()
            });
            if !live.contains_key(id) {
                return;
            }
            let ids = by_user.entry(user).or_default();
            if ids.iter().any(|s| &**s == id) {
                return;
            }
            ids.push_back(id.into());
            if ids.len() > MAX_SESSIONS_PER_USER {
                ids.pop_front()
            } else {
                None
            }
        };
        if let Some(oldest) = oldest
            && let Err(err) = self.sessions.close_session(&oldest).await
        {
            tracing::warn!(cause = %err, "an MCP session over its user's bound not closed");
        }
    }
}

/// The Streamable HTTP service of the server's `/mcp` endpoint, its sessions kept by
/// `sessions`. Requests past `max_body_bytes` are refused.
fn http_service(
    pool: Arc<AgentPool>,
    max_body_bytes: usize,
    sessions: Arc<LocalSessionManager>,
) -> StreamableHttpService<ChorusMcp, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        // Every request carries its bearer token, which a DNS-rebinding page cannot
        // have; the server's public host names are the operator's, not ours to list.
        .disable_allowed_hosts()
        .with_cancellation_token(pool.stop().child_token())
        .with_max_request_body_bytes(max_body_bytes);
    StreamableHttpService::new(
        move || Ok(ChorusMcp::for_pool(pool.clone())),
        sessions,
        config,
    )
}
