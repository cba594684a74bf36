//! The Chorus realtime engine: everything about live delivery, nothing about chat.
//!
//! Layout:
//! - [`scope`]: scope names (`kind:id`), the unit of subscription, ordering and replay.
//! - [`event`]: an event as published ([`Publish`]) and as delivered ([`Event`]), with
//!   per-recipient [`Mark`]s (wake / observe / skip) and subscription [`Effect`]s. The
//!   frame bytes of each event are built once and shared by every recipient.
//! - [`broker`]: the seam between publishing and delivery. [`broker::MemoryBroker`]
//!   assigns offsets, keeps the retention window and hands events to an
//!   [`EventSink`] (the registry); it never holds the registry or a session.
//! - [`subscriptions`]: the orchestrator of a subscription's life — authorize, admit,
//!   attach, replay, live, re-check when the user's access changes, revoke.
//! - [`registry`]: live connections, two-way indexes user ↔ connections and
//!   scope ↔ subscribers, each subscription's delivery state (live, catching up, held
//!   for a re-check) and fanout; plain data with `check_invariants()`.
//! - [`session`]: one task per WebSocket: hello, inbound ops, heartbeat, flood control.
//! - [`outbox`] and `writer`: a connection's queued frames and who writes them — a few
//!   writer tasks write for every connection, without waiting; a connection's own task
//!   only takes over when its socket would block.
//! - [`socket`]: an upgraded connection split at its TCP stream: tungstenite reads,
//!   the outbox writes frames it encodes itself (one `write` per batch);
//!   in unit tests, over an in-memory pipe instead.
//! - [`deflate`]: `permessage-deflate` (RFC 7692), when a connection negotiated it:
//!   events compressed once for every such connection, a client's compressed messages
//!   inflated under tungstenite, within the message limit.
//! - [`hooks`]: what the embedding application decides (who may read a scope, which
//!   scopes a user starts with, what `typing` means).
//! - [`clock`]: the time every part asks for; tests stop and advance it.
//! - [`metrics`]: counters read by `/metrics` and `/api/v1/realtime/stats`.

pub mod broker;
pub mod clock;
pub mod deflate;
pub mod engine;
pub mod event;
pub mod hooks;
pub mod metrics;
pub mod outbox;
pub mod registry;
pub mod scope;
pub mod session;
pub mod socket;
pub mod subscriptions;
#[cfg(test)]
mod testing;
mod writer;

pub use broker::{
    Broker, BrokerError, EventLog, EventSink, History, LogRead, MemoryBroker, Retention,
    RetentionRule, Retentions,
};
pub use clock::Clock;
pub use engine::{Engine, EngineConfig};
pub use event::{CloseSessions, Effect, Event, Mark, Marks, Membership, Publish};
pub use hooks::{HookError, Roles, SessionAuth, SessionHooks};
pub use metrics::Metrics;
pub use registry::{ConnId, Registry, StartAt, SubscriptionWatch};
pub use scope::{Scope, ScopeError};
pub use socket::Socket;

/// The engine's notion of a user: an opaque integer id owned by the application.
pub type UserKey = i64;

/// The user of a connection opened without credentials (where the application allows
/// it): it has no `user:` scope, and every subscription it makes is asked of the hooks.
pub const ANONYMOUS: UserKey = 0;
