//! The broker seam: where a published event gets its offset, its place in the retention
//! window, and its way to every node's local subscribers.
//!
//! Events flow one way: a broker hands each scope's events to its [`EventSink`] (the
//! node's registry) one at a time, in offset order, and never holds the registry or
//! the sessions. The in-memory broker delivers inline in `publish`; a multi-node broker
//! (Redis Streams) delivers from the node's stream reader. The orchestrator
//! ([`crate::subscriptions`]) tells the broker which scopes this node needs
//! ([`Broker::attach`]).

mod log;
mod memory;
mod redis;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

pub use log::{EventLog, LogHeads, LogRead, logged_event};
pub use memory::{GAP_WAIT, MemoryBroker};
pub use redis::RedisBroker;

use crate::{Event, Publish, Scope};

/// Where a broker hands the events it publishes or reads on this node.
pub trait EventSink: Send + Sync + 'static {
    /// One event, in offset order within its scope. Must not block.
    fn deliver(&self, event: &Arc<Event>);

    /// Whether this node still wants `scope`'s events (a broker that reads scopes on
    /// demand stops reading those nobody wants).
    fn wants(&self, scope: &Scope) -> bool;
}

/// How much history each scope keeps for resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_events: usize,
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events: 1_000,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// A rule giving some scopes a retention window of their own (the gateway's namespaces:
/// `retention_events` / `retention_secs`).
pub trait RetentionRule: Send + Sync + 'static {
    /// `scope`'s own window; `None`: the server's applies.
    fn retention(&self, scope: &Scope) -> Option<Retention>;
}

/// Each scope's retention window: the server's, except where the installed
/// [`RetentionRule`] gives the scope its own. The one place the brokers (memory window,
/// streams, history from the event log) and the HTTP catch-up ask; cloning shares it, so
/// replacing the rule (a reload) changes it for all of them at once.
#[derive(Clone)]
pub struct Retentions {
    server: Retention,
    rule: Arc<RwLock<Option<Arc<dyn RetentionRule>>>>,
}

impl Retentions {
    /// The server's window for every scope, until a rule is installed.
    pub fn new(server: Retention) -> Self {
        Self {
            server,
            rule: Arc::default(),
        }
    }

    /// The server-wide window.
    pub fn server(&self) -> Retention {
        self.server
    }

    /// Installs (`None`: removes) the rule; later publishes, trims and history reads
    /// follow it.
    pub fn set_rule(&self, rule: Option<Arc<dyn RetentionRule>>) {
        match self.rule.write() {
            Ok(mut current) => *current = rule,
            Err(poisoned) => *poisoned.into_inner() = rule,
        }
    }

    /// `scope`'s window.
    pub fn of(&self, scope: &Scope) -> Retention {
        self.own(scope).unwrap_or(self.server)
    }

    /// `scope`'s own window, when the rule gives it one (`None`: the server's).
    pub fn own(&self, scope: &Scope) -> Option<Retention> {
        let rule = match self.rule.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        rule.and_then(|r| r.retention(scope))
    }
}

impl From<Retention> for Retentions {
    fn from(server: Retention) -> Self {
        Self::new(server)
    }
}

impl std::fmt::Debug for Retentions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retentions")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The answer to "what happened in this scope after offset `since`?".
#[derive(Debug, Clone)]
pub struct History {
    /// `true` when `events` are exactly every event after `since`; `false` when some
    /// have left the retention window (or `since` is not a position this broker knows).
    pub recovered: bool,
    pub events: Vec<Arc<Event>>,
    /// The scope's latest offset at the time of the answer.
    pub head: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Assigns the event its offset (unless ephemeral), retains it, and delivers it to
    /// the subscribers on every node. Returns the offset.
    async fn publish(&self, publish: Publish) -> Result<Option<u64>, BrokerError>;

    /// The retained events of `scope` after `since`.
    async fn history(&self, scope: &Scope, since: u64) -> Result<History, BrokerError>;

    /// Makes this node receive `scope`'s events and returns the scope's latest offset:
    /// every event after it will reach the sink. Called before a subscription's replay
    /// is fetched, so the replay and the live events overlap instead of leaving a gap.
    /// Creates nothing that outlives the scope's subscribers.
    async fn attach(&self, scope: &Scope) -> Result<u64, BrokerError>;

    /// Fills the retention windows this node keeps in memory with the latest `budget`
    /// events of its log, before the node serves (the single-node broker's windows; see
    /// [`MemoryBroker`]). Returns how many it kept; a broker whose windows live elsewhere
    /// (Redis) keeps none.
    async fn warm(&self, budget: usize) -> Result<usize, BrokerError> {
        let _ = budget;
        Ok(0)
    }

    /// Whether the broker can currently publish (feeds `/readyz`).
    fn is_ready(&self) -> bool {
        true
    }
}
