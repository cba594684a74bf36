//! [`AgentPool`]: the agents of the server's own `/mcp` endpoint, one per bearer token.
//! Streamable HTTP calls are independent requests (the 2026-07-28 protocol has no
//! sessions), so an agent — its realtime connection above all — outlives each call and
//! is dropped after [`IDLE`] without one. While it lives its user counts as connected,
//! so wakes go to the long poll, not to a webhook.
//!
//! The pool holds a token only as long as the agent made with it; a token that stops
//! working (revoked, expired) ends the agent's connection (3502) and the next call
//! makes a new one, which fails like any request with that token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chorus_client::Client;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::error::ToolError;

/// An agent nobody called for this long is dropped (longer than the longest wait).
pub const IDLE: Duration = Duration::from_secs(120);
/// Most agents at once; past it a new token's call is refused (`unavailable`) until
/// idle ones are dropped. Each holds one WebSocket to this server.
pub const MAX_AGENTS: usize = 10_000;

struct Entry {
    agent: Arc<OnceCell<Arc<Agent>>>,
    used: Instant,
}

/// Agents by token, for one server.
pub struct AgentPool {
    /// The server's own base URL (loopback).
    base_url: String,
    /// Sent with every request of the agents: what tells the server they are its own.
    headers: http::HeaderMap,
    /// A std mutex: map operations only, never held across an await.
    agents: Mutex<HashMap<String, Entry>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for AgentPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPool")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AgentPool {
    /// A pool whose agents talk to `base_url`, sending `headers` with every request and
    /// WebSocket upgrade; `stop` ends waits in progress (the server is draining) and the
    /// sweeper.
    pub fn new(
        base_url: impl Into<String>,
        headers: http::HeaderMap,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            base_url: base_url.into(),
            headers,
            agents: Mutex::new(HashMap::new()),
            stop,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cancelled when the server stops.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The agent of `token`, made on first use.
    pub async fn get(&self, token: &str) -> Result<Arc<Agent>, ToolError> {
        let cell = {
            let mut agents = self.lock();
            let ended = agents
                .get(token)
                .and_then(|e| e.agent.get())
                .is_some_and(|a| a.ended());
            if ended {
                agents.remove(token);
            }
            if !agents.contains_key(token) && agents.len() >= MAX_AGENTS {
                return Err(ToolError::unavailable(
                    "too many agents are connected through /mcp; try again later",
                ));
            }
            let entry = agents.entry(token.to_owned()).or_insert_with(|| Entry {
                agent: Arc::new(OnceCell::new()),
                used: Instant::now(),
            });
            entry.used = Instant::now();
            entry.agent.clone()
        };
        let made = cell
            .get_or_try_init(|| async {
                let client = Client::new(&self.base_url, token)?.with_headers(self.headers.clone());
                Agent::connect(client).await.map(Arc::new)
            })
            .await;
        match made {
            Ok(agent) => Ok(agent.clone()),
            Err(err) => {
                let mut agents = self.lock();
                if agents
                    .get(token)
                    .is_some_and(|e| Arc::ptr_eq(&e.agent, &cell))
                {
                    agents.remove(token);
                }
                Err(err.into())
            }
        }
    }

    /// Drops agents idle for [`IDLE`] and those whose connection ended; returns how many
    /// are left.
    pub fn sweep(&self) -> usize {
        let mut agents = self.lock();
        agents.retain(|_, e| {
            let ended = e.agent.get().is_some_and(|a| a.ended());
            // One being made (no agent yet) is in use.
            !ended && (e.agent.get().is_none() || e.used.elapsed() < IDLE)
        });
        agents.len()
    }

    /// Sweeps every [`IDLE`]/4 until `stop`; then drops every agent (closing their
    /// connections).
    pub async fn run_sweeper(self: Arc<Self>) {
        let mut tick = tokio::time::interval(IDLE / 4);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.cancelled() => break,
            }
            self.sweep();
        }
        self.lock().clear();
    }
}
