//! Single-node broker: offsets and retention in process memory.
//!
//! Offsets of a scope start at the wall-clock microseconds of the scope's first use in
//! this process, then count up by one. After a restart every offset handed out is
//! larger than any from the previous process, so a client resuming with an old offset
//! is told `recovered: false` instead of being matched against unrelated events.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{Broker, BrokerError, History, Retention};
use crate::{Event, Publish, Registry, Scope};

pub struct MemoryBroker {
    registry: Arc<Registry>,
    retention: Retention,
    /// Held only to find or insert a scope's log; never across delivery.
    logs: Mutex<HashMap<Scope, Arc<Mutex<ScopeLog>>>>,
}

struct ScopeLog {
    head: u64,
    events: VecDeque<Arc<Event>>,
}

impl ScopeLog {
    fn new() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self {
            head: micros,
            events: VecDeque::new(),
        }
    }

    fn trim(&mut self, retention: Retention) {
        while self.events.len() > retention.max_events {
            self.events.pop_front();
        }
        let now = SystemTime::now();
        while let Some(front) = self.events.front() {
            let age = now.duration_since(front.published_at).unwrap_or_default();
            if age <= retention.max_age {
                break;
            }
            self.events.pop_front();
        }
    }
}

impl MemoryBroker {
    pub fn new(registry: Arc<Registry>, retention: Retention) -> Self {
        Self {
            registry,
            retention,
            logs: Mutex::new(HashMap::new()),
        }
    }

    fn log(&self, scope: &Scope) -> Arc<Mutex<ScopeLog>> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.entry(scope.clone())
            .or_insert_with(|| Arc::new(Mutex::new(ScopeLog::new())))
            .clone()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, publish: Publish) -> Result<Option<u64>, BrokerError> {
        if publish.ephemeral {
            self.registry.deliver(&Arc::new(Event::new(publish, None)));
            return Ok(None);
        }
        let log = self.log(&publish.scope);
        // The scope's lock is held through delivery so that offsets reach every
        // subscriber in order. Delivery only enqueues (never awaits), so this is short.
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        log.head += 1;
        let offset = log.head;
        let event = Arc::new(Event::new(publish, Some(offset)));
        if self.retention.max_events > 0 {
            log.events.push_back(event.clone());
            log.trim(self.retention);
        }
        self.registry.deliver(&event);
        Ok(Some(offset))
    }

    async fn history(&self, scope: &Scope, since: u64) -> Result<History, BrokerError> {
        let log = self.log(scope);
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        log.trim(self.retention);
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

    async fn head(&self, scope: &Scope) -> Result<u64, BrokerError> {
        let log = self.log(scope);
        let head = log.lock().unwrap_or_else(|e| e.into_inner()).head;
        Ok(head)
    }
}
