//! [`AgentPool`]: the agents of the server's own `/mcp` endpoint, one per bearer token.
//! Streamable HTTP calls are independent requests (the 2026-07-28 protocol has no
//! sessions), so an agent — its realtime connection above all — outlives each call and
//! is dropped after [`IDLE`] without one. While it lives its user counts as connected,
//! so wakes go to the long poll, not to a webhook.
//!
//! The pool holds a token only as long as the agent made with it; a token that stops
//! working (revoked, expired) ends the agent's connection (3502) and the next call
//! makes a new one, which fails like any request with that token. Calls that wait for
//! the same agent to be made share one attempt: when it fails, they all get its error,
//! rather than each trying the token again.

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

/// The outcome of one attempt to make a token's agent.
type Made = Result<Arc<Agent>, ToolError>;

struct Entry {
    agent: Arc<OnceCell<Made>>,
    used: Instant,
}

impl Entry {
    /// The agent, once made.
    fn made(&self) -> Option<&Arc<Agent>> {
        self.agent.get().and_then(|made| made.as_ref().ok())
    }
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
                .and_then(Entry::made)
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
            .get_or_init(|| async {
                let client = Client::new(&self.base_url, token)?.with_headers(self.headers.clone());
                Ok(Arc::new(Agent::connect(client).await?))
            })
            .await;
        if made.is_err() {
            // Those who waited for this attempt have its answer; the next call tries anew.
            let mut agents = self.lock();
            if agents
                .get(token)
                .is_some_and(|e| Arc::ptr_eq(&e.agent, &cell))
            {
                agents.remove(token);
            }
        }
        made.clone()
    }

    /// Drops agents idle for [`IDLE`] and those whose connection ended; returns how many
    /// are left.
    pub fn sweep(&self) -> usize {
        let mut agents = self.lock();
        agents.retain(|_, e| {
            let gone = match e.agent.get() {
                Some(Ok(agent)) => agent.ended(),
                Some(Err(_)) => true,
                // One being made is in use.
                None => return true,
            };
            !gone && e.used.elapsed() < IDLE
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that answers every request `401`, a little later, and counts them.
    async fn refusing_server() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let body = r#"{"error":{"code":"unauthorized","message":"invalid token"}}"#;
                    let answer = format!(
                        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, asked)
    }

    #[tokio::test]
    async fn calls_waiting_for_one_agent_share_its_failed_attempt() {
        let (url, asked) = refusing_server().await;
        let pool = AgentPool::new(url, http::HeaderMap::new(), CancellationToken::new());
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let pool = pool.clone();
            calls.spawn(async move { pool.get("dead").await.map(drop) });
        }
        while let Some(answer) = calls.join_next().await {
            assert_eq!(answer.unwrap().unwrap_err().code, "unauthorized");
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one attempt for all ten");
        // Nothing is remembered: the next call tries again.
        assert!(pool.get("dead").await.is_err());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }
}
