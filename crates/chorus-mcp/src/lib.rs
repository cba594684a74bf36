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
//! to a Chorus server through the Rust client) and [`http_service`] (the server's own
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

use std::sync::Arc;

pub use agent::Agent;
pub use error::ToolError;
pub use pool::AgentPool;
/// The MCP SDK this crate is built on (its transport types appear in this API).
pub use rmcp;
pub use tools::ChorusMcp;

use rmcp::ServiceExt;
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

/// The Streamable HTTP service of the server's `/mcp` endpoint. The caller
/// authenticates every request first (the same way as the API's routes); the tools act
/// as the request's bearer through `pool`. Requests past `max_body_bytes` are refused.
pub fn http_service(
    pool: Arc<AgentPool>,
    max_body_bytes: usize,
) -> StreamableHttpService<ChorusMcp, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        // Every request carries its bearer token, which a DNS-rebinding page cannot
        // have; the server's public host names are the operator's, not ours to list.
        .disable_allowed_hosts()
        .with_cancellation_token(pool.stop().child_token())
        .with_max_request_body_bytes(max_body_bytes);
    StreamableHttpService::new(
        move || Ok(ChorusMcp::for_pool(pool.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
