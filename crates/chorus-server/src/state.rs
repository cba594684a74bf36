//! What every handler can reach, passed explicitly through axum's `State`.

use std::sync::{Arc, OnceLock};

use chorus_chat::Chat;
use chorus_realtime::{Engine, SessionHooks};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::limits::{AnonymousConnections, HttpLimiter, InternalSecret};
use crate::webhooks::WebhookMetrics;

/// What every handler can reach: one pointer to [`Shared`], so that the clone axum
/// makes per request and per layer is one reference count, not one per part (eleven;
/// ~1 µs of a persisted send's CPU when each was its own `Arc`, docs/benchmarks.md
/// "Round 2, session 12").
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub config: Arc<Config>,
    pub chat: Arc<Chat>,
    pub engine: Arc<Engine>,
    pub hooks: Arc<dyn SessionHooks>,
    pub auth: Arc<Authenticator>,
    pub http_limiter: Option<Arc<HttpLimiter>>,
    /// Open anonymous WebSocket connections per client address.
    pub anonymous: Arc<AnonymousConnections>,
    /// What marks the requests of the server's own `/mcp` agents (`limits`).
    pub internal: InternalSecret,
    pub webhooks: Arc<WebhookMetrics>,
    /// The MCP endpoint (`/mcp`), set by `run` once the server's own address is known:
    /// its tools reach the API through a client pointed at that address.
    pub mcp: Arc<OnceLock<chorus_mcp::McpEndpoint>>,
    /// The server's own tasks (webhook worker, limiter housekeeping, WebSocket
    /// upgrades), which `run` waits for before it returns.
    pub tasks: Tasks,
}

/// Tasks the edge starts and shutdown ends: `stop` is cancelled once the engine has
/// drained, then `run` waits for every task in `tracker`.
#[derive(Clone, Default)]
pub struct Tasks {
    pub(crate) tracker: TaskTracker,
    pub(crate) stop: CancellationToken,
}

impl Tasks {
    /// How many are running (a shutdown test checks that none is left).
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}
