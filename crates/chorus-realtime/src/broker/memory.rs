//! Single-node broker: offsets and retention in process memory.
//!
//! Offsets of every scope start at the wall-clock microseconds of the broker's start,
//! then count up by one per event. After a restart every offset handed out is larger
//! than any from the previous process, so a client resuming with an old offset is told
//! `recovered: false` instead of being matched against unrelated events.
//!
//! Memory is bounded by what is published, never by what is subscribed: a scope gets a
//! log at its first publish (a scope nobody published to has the start offset as its
//! head), and a sweep drops retained events once they leave the window.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{Broker, BrokerError, EventSink, History, Retention};
use crate::{Clock, Event, Publish, Scope};

/// How often retained events are checked against the window's age.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub struct MemoryBroker {
    sink: Arc<dyn EventSink>,
    retention: Retention,
    /// Publish times and the retention window's age.
    clock: Clock,
    /// The head of a scope without a log.
    base: u64,
    /// Held only to find or insert a scope's log; never across delivery.
    logs: Mutex<HashMap<Scope, Arc<Mutex<ScopeLog>>>>,
}

struct ScopeLog {
    head: u64,
    events: VecDeque<Arc<Event>>,
}

impl ScopeLog {
    fn trim(&mut self, retention: Retention, now: SystemTime) {
        while self.events.len() > retention.max_events {
            self.events.pop_front();
        }
        while let Some(front) = self.events.front() {
            let age = now.duration_since(front.published_at).unwrap_or_default();
            if age <= retention.max_age {
                break;
            }
            self.events.pop_front();
        }
        if self.events.is_empty() {
            self.events.shrink_to_fit();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBroker {
    /// A broker delivering to `sink`, reading the time from `clock`. Starts its sweep
    /// on the current runtime.
    pub fn new(sink: Arc<dyn EventSink>, retention: Retention, clock: Clock) -> Arc<Self> {
        let base = clock
            .system_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let broker = Arc::new(Self {
            sink,
            retention,
            clock,
            base,
            logs: Mutex::new(HashMap::new()),
        });
        tokio::spawn(sweep_loop(Arc::downgrade(&broker)));
        broker
    }

    fn log(&self, scope: &Scope) -> Option<Arc<Mutex<ScopeLog>>> {
        lock(&self.logs).get(scope).cloned()
    }

    /// Drops retained events that left the window, in every log.
    pub fn sweep(&self) {
        let logs: Vec<_> = lock(&self.logs).values().cloned().collect();
        let now = self.clock.system_time();
        for log in logs {
            lock(&log).trim(self.retention, now);
        }
    }

    /// Scopes with a log (published to at least once), for tests and stats.
    pub fn log_count(&self) -> usize {
        lock(&self.logs).len()
    }
}

async fn sweep_loop(broker: Weak<MemoryBroker>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        broker.sweep();
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, publish: Publish) -> Result<Option<u64>, BrokerError> {
        if publish.ephemeral {
            let event = Event::published_at(publish, None, self.clock.system_time());
            self.sink.deliver(&Arc::new(event));
            return Ok(None);
        }
        let log = lock(&self.logs)
            .entry(publish.scope.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(ScopeLog {
                    head: self.base,
                    events: VecDeque::new(),
                }))
            })
            .clone();
        // The scope's lock is held through delivery so that offsets reach every
        // subscriber in order. Delivery only enqueues (never awaits), so this is short.
        let mut log = lock(&log);
        log.head += 1;
        let offset = log.head;
        let event = Arc::new(Event::published_at(
            publish,
            Some(offset),
            self.clock.system_time(),
        ));
        if self.retention.max_events > 0 {
            log.events.push_back(event.clone());
            log.trim(self.retention, event.published_at);
        }
        self.sink.deliver(&event);
        Ok(Some(offset))
    }

    async fn history(&self, scope: &Scope, since: u64) -> Result<History, BrokerError> {
        let Some(log) = self.log(scope) else {
            return Ok(History {
                recovered: since == self.base,
                events: Vec::new(),
                head: self.base,
            });
        };
        let mut log = lock(&log);
        log.trim(self.retention, self.clock.system_time());
        let head = log.head;
        if since >= head {
            return Ok(History {
                recovered: since == head,
                events: Vec::new(),
                head,
            });
        }
        let first = log
            .events
            .front()
            .and_then(|e| e.offset)
            .unwrap_or(u64::MAX);
        if first > since.saturating_add(1) {
            return Ok(History {
                recovered: false,
                events: Vec::new(),
                head,
            });
        }
        let events = log
            .events
            .iter()
            .filter(|e| e.offset.is_some_and(|o| o > since))
            .cloned()
            .collect();
        Ok(History {
            recovered: true,
            events,
            head,
        })
    }

    async fn attach(&self, scope: &Scope) -> Result<u64, BrokerError> {
        // Every publish on this node is delivered inline: nothing to start reading.
        Ok(self.log(scope).map_or(self.base, |log| lock(&log).head))
    }
}
