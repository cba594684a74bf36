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

/// The header a request names its session in (rmcp reads it by this name too).
const SESSION_HEADER: &str = "mcp-session-id";

/// What [`McpEndpoint::bind`] puts in place of a session id that is not the caller's:
/// rmcp's ids are UUIDs, so this one never names a session.
const NO_SESSION: &str = "none";

/// The server's `/mcp` endpoint: the Streamable HTTP service, and who opened which of
/// its sessions.
pub struct McpEndpoint {
    pub service: StreamableHttpService<ChorusMcp, LocalSessionManager>,
    sessions: Arc<LocalSessionManager>,
    openers: Mutex<Openers>,
}

impl McpEndpoint {
    /// The endpoint of `pool`'s agents; requests past `max_body_bytes` are refused.
    /// The caller authenticates every request first (the same way as the API's
    /// routes), then calls [`Self::bind`]; the tools act as the request's bearer
    /// through `pool`.
    pub fn new(pool: Arc<AgentPool>, max_body_bytes: usize) -> Self {
        let sessions = Arc::new(LocalSessionManager::default());
        Self {
            service: http_service(pool, max_body_bytes, sessions.clone()),
            sessions,
            openers: Mutex::new(Openers::default()),
        }
    }

    fn openers(&self) -> std::sync::MutexGuard<'_, Openers> {
        // A panic while holding it leaves maps of ids: nothing to repair.
        self.openers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds a request of `user` to its session before rmcp sees it: a session is its
    /// opener's. The session its `Mcp-Session-Id` names is then their most recently
    /// used if they opened it; if anyone else did (or nobody we know of), the id is
    /// replaced by one that names no session, so rmcp answers exactly as for an
    /// unknown id — `404` to `GET` and `POST`, `202` to `DELETE` with nothing closed,
    /// after the same header checks — and the session is not touched. Every request
    /// with a session id (its notification stream, calls, `DELETE`) passes here.
    pub fn bind(&self, user: i64, headers: &mut http::HeaderMap) {
        // Read as rmcp reads it: the first value, if it is text.
        let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return;
        };
        if !self.openers().used(user, id) {
            headers.insert(SESSION_HEADER, http::HeaderValue::from_static(NO_SESSION));
        }
    }

    /// After a response to `user` that opened session `id` (rmcp names it in the
    /// `initialize` answer's `Mcp-Session-Id`): records them as its opener, and closes
    /// their least recently used session past [`MAX_SESSIONS_PER_USER`].
    pub async fn answered(&self, user: i64, id: &str) {
        let oldest = {
            let live = self.sessions.sessions.read().await;
            let mut openers = self.openers();
            // Sessions that ended (idle, deleted) are forgotten; their ids get `404`
            // from rmcp whoever asks.
            openers.retain(|s| live.contains_key(s));
            if !live.contains_key(id) {
                return;
            }
            openers.opened(user, id)
        };
        if let Some(oldest) = oldest
            && let Err(err) = self.sessions.close_session(&oldest).await
        {
            tracing::warn!(cause = %err, "an MCP session over its user's bound not closed");
        }
    }
}

/// Who opened which session, indexed both ways. One lock for both: they change
/// together. A std mutex: map operations only, never held across an await.
#[derive(Default)]
struct Openers {
    /// Each user's sessions, least recently used first.
    by_user: HashMap<i64, VecDeque<SessionId>>,
    /// Each session's opener.
    by_session: HashMap<SessionId, i64>,
}

impl Openers {
    /// Whether `user` opened session `id`; if so, it is now their most recently used.
    fn used(&mut self, user: i64, id: &str) -> bool {
        if self.by_session.get(id) != Some(&user) {
            return false;
        }
        if let Some(ids) = self.by_user.get_mut(&user)
            && let Some(at) = ids.iter().position(|s| &**s == id)
            && let Some(session) = ids.remove(at)
        {
            ids.push_back(session);
        }
        true
    }

    /// Records `user` as the opener of `id` (unless it has one); returns their least
    /// recently used session if they now have more than [`MAX_SESSIONS_PER_USER`],
    /// forgotten here, for the caller to close.
    fn opened(&mut self, user: i64, id: &str) -> Option<SessionId> {
        if self.by_session.contains_key(id) {
            return None;
        }
        let id = SessionId::from(id);
        self.by_session.insert(id.clone(), user);
        let ids = self.by_user.entry(user).or_default();
        ids.push_back(id);
        if ids.len() <= MAX_SESSIONS_PER_USER {
            return None;
        }
        let oldest = ids.pop_front()?;
        self.by_session.remove(&oldest);
        Some(oldest)
    }

    /// Keeps the sessions `live` says are; users left with none take no room.
    fn retain(&mut self, live: impl Fn(&SessionId) -> bool) {
        self.by_user.retain(|_, ids| {
            ids.retain(&live);
            !ids.is_empty()
        });
        self.by_session.retain(|s, _| live(s));
    }

    /// The two indexes agree: each session is in its opener's list once, and no list
    /// is empty or over the bound.
    #[cfg(test)]
    fn check_invariants(&self) -> Result<(), String> {
        let listed: usize = self.by_user.values().map(VecDeque::len).sum();
        if listed != self.by_session.len() {
            return Err(format!(
                "{listed} listed, {} openers",
                self.by_session.len()
            ));
        }
        for (user, ids) in &self.by_user {
            if ids.is_empty() || ids.len() > MAX_SESSIONS_PER_USER {
                return Err(format!("user {user} has {} sessions", ids.len()));
            }
            if let Some(id) = ids.iter().find(|s| self.by_session.get(*s) != Some(user)) {
                return Err(format!("session {id} is not user {user}'s"));
            }
        }
        Ok(())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_openers_only() {
        let mut openers = Openers::default();
        assert_eq!(openers.opened(1, "a"), None);
        assert_eq!(openers.opened(2, "b"), None);
        // Nobody takes over a session by answering with its id again.
        assert_eq!(openers.opened(2, "a"), None);
        assert!(openers.used(1, "a"));
        assert!(!openers.used(2, "a"), "another user's session");
        assert!(!openers.used(1, "unknown"));
        openers.check_invariants().unwrap();

        openers.retain(|s| &**s != "a");
        assert!(!openers.used(1, "a"), "ended");
        assert!(!openers.by_user.contains_key(&1), "no sessions, no room");
        openers.check_invariants().unwrap();
    }

    #[test]
    fn past_the_bound_the_least_recently_used_is_closed() {
        let mut openers = Openers::default();
        let ids: Vec<String> = (0..=MAX_SESSIONS_PER_USER).map(|i| i.to_string()).collect();
        for id in &ids[..MAX_SESSIONS_PER_USER] {
            assert_eq!(openers.opened(7, id), None);
        }
        assert!(openers.used(7, &ids[0]));
        // Another user's request in session 1 does not make it recently used.
        assert!(!openers.used(8, &ids[1]));
        let closed = openers.opened(7, &ids[MAX_SESSIONS_PER_USER]);
        assert_eq!(closed.as_deref(), Some(ids[1].as_str()));
        assert!(!openers.used(7, &ids[1]));
        openers.check_invariants().unwrap();
    }
}
