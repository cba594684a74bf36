//! Engine counters. Plain atomics: incremented on hot paths, read by `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_current: AtomicU64,
    pub connections_total: AtomicU64,
    pub events_published: AtomicU64,
    /// Frames handed to connection queues.
    pub events_delivered: AtomicU64,
    /// Frames not delivered because a queue was full or closed.
    pub events_dropped: AtomicU64,
    /// Recipient decisions of `skip` (agent-aware delivery).
    pub events_skipped: AtomicU64,
    pub slow_consumer_evictions: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    pub resumes_recovered: AtomicU64,
    pub resumes_unrecovered: AtomicU64,
    pub replayed_events: AtomicU64,
    pub inbound_frames: AtomicU64,
    pub inbound_errors: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Re-checks of a connection's subscriptions after its user's access changed, and
    /// subscriptions they ended (`subscription.revoked`).
    pub rechecks: AtomicU64,
    pub subscriptions_revoked: AtomicU64,
    /// Multi-node relay (Redis Streams): stream reads, events read, Redis errors,
    /// the age of the newest event read (ms), and events waiting for Redis to return.
    pub relay_reads: AtomicU64,
    pub relay_read_events: AtomicU64,
    pub relay_errors: AtomicU64,
    pub relay_lag_ms: AtomicU64,
    pub relay_backlog: AtomicU64,
    /// Socket writes (one flush of one or more frames): frames written per write
    /// (`socket_frames / socket_writes`) says how well fanout batches its syscalls.
    pub socket_writes: AtomicU64,
    pub socket_frames: AtomicU64,
    /// Writes a writer task could not finish (the socket was full): the connection's
    /// own task took over.
    pub socket_handovers: AtomicU64,
    /// Published events per type. Locked once per publish, never per recipient.
    per_type: Mutex<HashMap<String, u64>>,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MetricsSnapshot {
    pub connections_current: u64,
    pub connections_total: u64,
    pub events_published: u64,
    pub events_delivered: u64,
    pub events_dropped: u64,
    pub events_skipped: u64,
    pub slow_consumer_evictions: u64,
    pub heartbeat_timeouts: u64,
    pub resumes_recovered: u64,
    pub resumes_unrecovered: u64,
    pub replayed_events: u64,
    pub inbound_frames: u64,
    pub inbound_errors: u64,
    pub rate_limited: u64,
    pub rechecks: u64,
    pub subscriptions_revoked: u64,
    pub relay_reads: u64,
    pub relay_read_events: u64,
    pub relay_errors: u64,
    pub relay_lag_ms: u64,
    pub relay_backlog: u64,
    pub socket_writes: u64,
    pub socket_frames: u64,
    pub socket_handovers: u64,
    pub events_by_type: HashMap<String, u64>,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn published(&self, kind: &str) {
        self.events_published.fetch_add(1, Relaxed);
        let mut per_type = self.per_type.lock().unwrap_or_else(|e| e.into_inner());
        match per_type.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                per_type.insert(kind.to_owned(), 1);
            }
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            connections_current: self.connections_current.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            events_published: self.events_published.load(Relaxed),
            events_delivered: self.events_delivered.load(Relaxed),
            events_dropped: self.events_dropped.load(Relaxed),
            events_skipped: self.events_skipped.load(Relaxed),
            slow_consumer_evictions: self.slow_consumer_evictions.load(Relaxed),
            heartbeat_timeouts: self.heartbeat_timeouts.load(Relaxed),
            resumes_recovered: self.resumes_recovered.load(Relaxed),
            resumes_unrecovered: self.resumes_unrecovered.load(Relaxed),
            replayed_events: self.replayed_events.load(Relaxed),
            inbound_frames: self.inbound_frames.load(Relaxed),
            inbound_errors: self.inbound_errors.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            rechecks: self.rechecks.load(Relaxed),
            subscriptions_revoked: self.subscriptions_revoked.load(Relaxed),
            relay_reads: self.relay_reads.load(Relaxed),
            relay_read_events: self.relay_read_events.load(Relaxed),
            relay_errors: self.relay_errors.load(Relaxed),
            relay_lag_ms: self.relay_lag_ms.load(Relaxed),
            relay_backlog: self.relay_backlog.load(Relaxed),
            socket_writes: self.socket_writes.load(Relaxed),
            socket_frames: self.socket_frames.load(Relaxed),
            socket_handovers: self.socket_handovers.load(Relaxed),
            events_by_type: self
                .per_type
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
