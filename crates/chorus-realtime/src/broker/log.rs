//! The event log seam: where durable events are kept, outside any process.
//!
//! Chorus writes each durable event into its database, in the transaction of the change
//! it describes (the chat's store implements [`EventLog`]); the log gives it its offset,
//! one more than the scope's previous one, so offsets follow commit order within a scope
//! and survive restarts. A broker with a log hands out no offsets of its own: it delivers
//! logged events in offset order (reading a gap back from the log when an event arrives
//! before one that committed earlier), answers `history` from the log when its memory no
//! longer covers a position, and appends to the log the durable events published without
//! an offset (`POST /api/v1/publish`, events not yet written with their change).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{BrokerError, History, Retention};
use crate::{Clock, Event, Publish, Scope};

/// What a log read found.
#[derive(Debug, Default)]
pub struct LogRead {
    /// Events after the asked position, ascending and consecutive.
    pub events: Vec<Arc<Event>>,
    /// The scope's latest offset at the time of the read (its first offset minus one when
    /// nothing was ever logged; see [`EventLog::head`]).
    pub head: u64,
}

/// Every scope's latest offset (see [`EventLog::heads`]).
#[derive(Debug, Default)]
pub struct LogHeads {
    pub base: u64,
    pub scopes: Vec<(Scope, u64)>,
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends durable events that have no offset yet, each at the next offset of its
    /// scope, in one transaction; returns them with their offsets and log times.
    async fn append(&self, events: Vec<Publish>) -> Result<Vec<Publish>, BrokerError>;

    /// The scope's latest offset. A scope nothing was logged in has a head that no
    /// offset handed out before can equal (the log's clock in microseconds), so a client
    /// holding an offset of a lost database is told `recovered: false`.
    async fn head(&self, scope: &Scope) -> Result<u64, BrokerError>;

    /// Every scope's head, and the base (the head of a scope nothing was logged in).
    async fn heads(&self) -> Result<LogHeads, BrokerError>;

    /// Scopes with events logged at or after `since`, each with its latest offset (what a
    /// relay compares with what reached the other nodes).
    async fn recent(&self, since: SystemTime) -> Result<Vec<(Scope, u64)>, BrokerError>;

    /// The retained events of `scope` after `after`, at most `limit`, ascending.
    /// Offsets within a scope are consecutive, so the caller sees whether the first
    /// event is `after + 1` (complete) or some have left the retention window.
    async fn read(&self, scope: &Scope, after: u64, limit: usize) -> Result<LogRead, BrokerError>;

    /// The log's `limit` latest events (by log time) among each scope's last
    /// `per_scope`: what a starting single node fills its memory windows with. A log
    /// that cannot tell returns none.
    async fn latest(&self, limit: usize, per_scope: usize) -> Result<Vec<Arc<Event>>, BrokerError> {
        let _ = (limit, per_scope);
        Ok(Vec::new())
    }
}

/// An event read back from a log, at its offset and log time.
pub fn logged_event(mut publish: Publish, fallback: SystemTime) -> Event {
    let offset = publish.offset;
    let at = publish.logged_at.take().unwrap_or(fallback);
    Event::published_at(publish, offset, at)
}

/// A scope's history after `since` from the log, within the retention (count and age):
/// `recovered` only when every event after `since` is there and inside the window.
pub async fn history(
    log: &dyn EventLog,
    scope: &Scope,
    since: u64,
    retention: Retention,
    clock: &Clock,
) -> Result<History, BrokerError> {
    let limit = retention.max_events;
    let read = log.read(scope, since, limit).await?;
    let oldest = clock
        .system_time()
        .checked_sub(retention.max_age)
        .unwrap_or(UNIX_EPOCH);
    let head = read.head;
    let complete = match read.events.first() {
        None => since == head,
        // A first event right after `since` means `since < head`.
        Some(first) => {
            first.offset == Some(since + 1)
                && head - since <= limit as u64
                && first.published_at >= oldest
                // Without a hole: log times and offsets can cross (a change's time is
                // taken before its offset), so trimming by age may take an event out
                // of the middle.
                && read
                    .events
                    .windows(2)
                    .all(|w| w[1].offset == w[0].offset.map(|o| o + 1))
        }
    };
    Ok(History {
        recovered: complete,
        events: if complete { read.events } else { Vec::new() },
        head,
    })
}
