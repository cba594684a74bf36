//! Single-node broker: delivery inline, a retention window in memory, and (in a server)
//! the event log in the database behind it.
//!
//! **With an event log** (what `chorus serve` runs): offsets are the log's. An event
//! written with its change arrives with its offset; one published without (`topic:`
//! publishes) is appended to the log first. Events are delivered in offset order per
//! scope, each once: an offset at or below the scope's head is a duplicate and dropped;
//! one past a gap waits for the events before it (published by the requests that
//! committed them a moment earlier) and, if they do not come within [`GAP_WAIT`], they
//! are read back from the log. The memory window is a cache of the log's tail: history
//! it does not cover (further back) is read from the log, so a restart keeps every
//! scope's window and `recovered: true` stays honest; a starting node fills the windows
//! from the log's latest events first ([`Broker::warm`]), so resuming after a restart
//! costs what it did before it.
//!
//! **Without a log** (engine tests): offsets of every scope start at the wall-clock
//! microseconds of the broker's start, then count up by one per event. After a restart
//! every offset handed out is larger than any from the previous process, so a client
//! resuming with an old offset is told `recovered: false`.
//!
//! Memory is bounded by what is published, never by what is subscribed: a scope gets an
//! entry at its first publish (with a log: every scope the log has a head for, read once
//! at the first use), and a sweep drops retained events once they leave the window. The
//! windows of all scopes together hold at most a budget of bytes
//! ([`WINDOW_BUDGET_BYTES`]): past it, the oldest retained events of any scope are
//! dropped first — with a log, a resume reaching back to them reads the log; without
//! one, it is told `recovered: false`. So topics a client can name by publishing to them
//! cannot fill the memory with their windows.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::log::{EventLog, logged_event};
use super::{Broker, BrokerError, EventSink, History, Retention, Retentions};
use crate::{Clock, Event, Publish, Scope};

/// How often retained events are checked against the window's age.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// How long a logged event past a gap waits for the events before it to be published
/// before they are read back from the log.
pub const GAP_WAIT: Duration = Duration::from_millis(200);
/// What the memory windows of all scopes hold at most, in (estimated) bytes.
pub const WINDOW_BUDGET_BYTES: usize = 256 << 20;

pub struct MemoryBroker {
    sink: Arc<dyn EventSink>,
    /// Each scope's window (the server's, or its namespace's).
    retention: Retentions,
    /// Publish times and the retention window's age.
    clock: Clock,
    /// The head of a scope without a log.
    base: u64,
    /// The event log (offsets, history beyond the memory window), when there is one.
    log: Option<Arc<dyn EventLog>>,
    /// Held only to find or insert a scope's log; never across delivery.
    logs: Mutex<HashMap<Scope, Arc<Mutex<ScopeLog>>>>,
    /// Itself, for the gap fillers it spawns.
    me: Weak<MemoryBroker>,
    /// With an event log: its base, once every scope's head was read from it.
    base_of_log: tokio::sync::OnceCell<u64>,
    /// What the windows of all scopes hold, in bytes ([`retained_size`]).
    retained: AtomicUsize,
    /// The most they may hold ([`WINDOW_BUDGET_BYTES`]).
    budget: AtomicUsize,
    /// Wakes the sweep at once when the windows are over the budget.
    over_budget: Arc<tokio::sync::Notify>,
}

/// What retaining `event` in a window costs, roughly: its payload, the frame made of it
/// (about as big), and the bookkeeping around both.
fn retained_size(event: &Event) -> usize {
    2 * (event.data.len() + event.kind.len()) + 256
}

struct ScopeLog {
    /// The offset of the last event delivered.
    head: u64,
    /// The retention window's events, consecutive, ending at `head`.
    events: VecDeque<Arc<Event>>,
    /// Logged events that arrived past a gap, waiting for the events before them.
    pending: BTreeMap<u64, Publish>,
    /// A gap filler is scheduled.
    filling: bool,
}

impl ScopeLog {
    fn trim(&mut self, retention: Retention, now: SystemTime, total: &AtomicUsize) {
        while self.events.len() > retention.max_events {
            self.drop_oldest(total);
        }
        while let Some(front) = self.events.front() {
            let age = now.duration_since(front.published_at).unwrap_or_default();
            if age <= retention.max_age {
                break;
            }
            self.drop_oldest(total);
        }
        if self.events.is_empty() {
            self.events.shrink_to_fit();
        }
    }

    /// Retains `event` at the window's end, counted in `total`.
    fn retain(&mut self, event: Arc<Event>, total: &AtomicUsize) {
        total.fetch_add(retained_size(&event), Ordering::Relaxed);
        self.events.push_back(event);
    }

    /// Drops the window's oldest event, uncounted from `total`.
    fn drop_oldest(&mut self, total: &AtomicUsize) {
        if let Some(event) = self.events.pop_front() {
            total.fetch_sub(retained_size(&event), Ordering::Relaxed);
        }
    }

    /// Empties the window.
    fn clear_window(&mut self, total: &AtomicUsize) {
        let freed: usize = self.events.iter().map(|e| retained_size(e)).sum();
        total.fetch_sub(freed, Ordering::Relaxed);
        self.events.clear();
    }

    fn new(head: u64) -> Self {
        Self {
            head,
            events: VecDeque::new(),
            pending: BTreeMap::new(),
            filling: false,
        }
    }

    /// Delivers `event` (the next offset), retains it, then every pending event that
    /// now follows.
    fn advance(&mut self, event: Arc<Event>, broker: &MemoryBroker) {
        self.push(event, broker);
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.head + 1 {
                break;
            }
            let (offset, publish) = entry.remove_entry();
            if offset == self.head + 1 {
                let at = broker.clock.system_time();
                self.push(Arc::new(logged_event(publish, at)), broker);
            }
        }
    }

    fn push(&mut self, event: Arc<Event>, broker: &MemoryBroker) {
        self.head = event.offset.unwrap_or(self.head);
        let retention = broker.retention.of(&event.scope);
        if retention.max_events > 0 {
            self.retain(event.clone(), &broker.retained);
            self.trim(retention, event.published_at, &broker.retained);
            broker.check_budget();
        } else {
            self.clear_window(&broker.retained);
        }
        broker.sink.deliver(&event);
    }

    /// Whether the memory window holds every event after `since`.
    fn covers(&self, since: u64) -> bool {
        since >= self.head
            || self
                .events
                .front()
                .and_then(|e| e.offset)
                .is_some_and(|first| first <= since + 1)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBroker {
    /// A broker delivering to `sink`, reading the time from `clock`. Starts its sweep
    /// on the current runtime.
    pub fn new(sink: Arc<dyn EventSink>, retention: Retention, clock: Clock) -> Arc<Self> {
        Self::with_log(sink, retention.into(), clock, None)
    }

    /// A broker whose offsets and history are `log`'s (see the module's doc).
    pub fn with_log(
        sink: Arc<dyn EventSink>,
        retention: Retentions,
        clock: Clock,
        log: Option<Arc<dyn EventLog>>,
    ) -> Arc<Self> {
        let base = clock
            .system_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let broker = Arc::new_cyclic(|me| Self {
            sink,
            retention,
            clock,
            base,
            log,
            logs: Mutex::new(HashMap::new()),
            me: me.clone(),
            base_of_log: tokio::sync::OnceCell::new(),
            retained: AtomicUsize::new(0),
            budget: AtomicUsize::new(WINDOW_BUDGET_BYTES),
            over_budget: Arc::new(tokio::sync::Notify::new()),
        });
        tokio::spawn(sweep_loop(
            Arc::downgrade(&broker),
            broker.over_budget.clone(),
        ));
        broker
    }

    fn log(&self, scope: &Scope) -> Option<Arc<Mutex<ScopeLog>>> {
        lock(&self.logs).get(scope).cloned()
    }

    /// Drops retained events that left the window, in every log; then, while the
    /// windows are over their budget, the oldest retained events of any scope.
    pub fn sweep(&self) {
        let logs: Vec<_> = lock(&self.logs)
            .iter()
            .map(|(scope, log)| (scope.clone(), log.clone()))
            .collect();
        let now = self.clock.system_time();
        for (scope, log) in &logs {
            lock(log).trim(self.retention.of(scope), now, &self.retained);
        }
        self.evict(logs.into_iter().map(|(_, log)| log));
    }

    /// Sets the windows' budget (bytes; [`WINDOW_BUDGET_BYTES`] by default).
    pub fn set_window_budget(&self, bytes: usize) {
        self.budget.store(bytes, Ordering::Relaxed);
        self.check_budget();
    }

    /// What the windows of all scopes hold now, in (estimated) bytes.
    pub fn retained_bytes(&self) -> usize {
        self.retained.load(Ordering::Relaxed)
    }

    /// Over the budget: the sweep is woken to bring the windows back under it.
    fn check_budget(&self) {
        if self.retained.load(Ordering::Relaxed) > self.budget.load(Ordering::Relaxed) {
            self.over_budget.notify_one();
        }
    }

    /// Drops the oldest retained events, whatever their scope, until the windows hold
    /// at most nine tenths of the budget (so a budget reached is not swept again at
    /// every publish).
    fn evict(&self, logs: impl Iterator<Item = Arc<Mutex<ScopeLog>>>) {
        let target = self.budget.load(Ordering::Relaxed) / 10 * 9;
        if self.retained.load(Ordering::Relaxed) <= target {
            return;
        }
        // The oldest front first: (its publish time, the scope's index).
        let logs: Vec<_> = logs.collect();
        let front = |l: &ScopeLog| l.events.front().map(|e| e.published_at);
        let mut oldest: BinaryHeap<Reverse<(SystemTime, usize)>> = logs
            .iter()
            .enumerate()
            .filter_map(|(i, log)| front(&lock(log)).map(|at| Reverse((at, i))))
            .collect();
        while self.retained.load(Ordering::Relaxed) > target {
            let Some(Reverse((_, i))) = oldest.pop() else {
                break;
            };
            let mut l = lock(&logs[i]);
            l.drop_oldest(&self.retained);
            if l.events.is_empty() {
                l.events.shrink_to_fit();
            }
            if let Some(at) = front(&l) {
                oldest.push(Reverse((at, i)));
            }
        }
    }

    /// With an event log: every scope's head, read from the log once (this process is
    /// the log's only writer on one node, so they stay known from then on). Returns the
    /// log's base, the head of every scope nothing was logged in.
    async fn heads(&self, log: &Arc<dyn EventLog>) -> Result<u64, BrokerError> {
        self.base_of_log
            .get_or_try_init(|| async {
                let heads = log.heads().await?;
                let mut logs = lock(&self.logs);
                for (scope, head) in heads.scopes {
                    logs.entry(scope)
                        .or_insert_with(|| Arc::new(Mutex::new(ScopeLog::new(head))));
                }
                Ok(heads.base)
            })
            .await
            .copied()
    }

    /// The scope's entry; a scope nothing was logged in gets one at the log's base.
    async fn entry(
        &self,
        scope: &Scope,
        log: &Arc<dyn EventLog>,
    ) -> Result<Arc<Mutex<ScopeLog>>, BrokerError> {
        let base = self.heads(log).await?;
        Ok(lock(&self.logs)
            .entry(scope.clone())
            .or_insert_with(|| Arc::new(Mutex::new(ScopeLog::new(base))))
            .clone())
    }

    /// The scope's head without making an entry (a scope only subscribed to gets none).
    async fn head(&self, scope: &Scope, log: &Arc<dyn EventLog>) -> Result<u64, BrokerError> {
        let base = self.heads(log).await?;
        Ok(self.log(scope).map_or(base, |l| lock(&l).head))
    }

    /// Delivers a logged event at its offset: at once when it is the next one, later
    /// when events before it are still on their way (see the module's doc).
    async fn publish_logged(
        &self,
        publish: Publish,
        log: &Arc<dyn EventLog>,
    ) -> Result<Option<u64>, BrokerError> {
        let Some(offset) = publish.offset else {
            return Err(BrokerError::Unavailable(
                "a logged event without offset".into(),
            ));
        };
        let entry = self.entry(&publish.scope, log).await?;
        let mut scope_log = lock(&entry);
        if offset <= scope_log.head {
            return Ok(Some(offset));
        }
        if offset == scope_log.head + 1 {
            let event = Arc::new(logged_event(publish, self.clock.system_time()));
            scope_log.advance(event, self);
            return Ok(Some(offset));
        }
        let scope = publish.scope.clone();
        scope_log.pending.insert(offset, publish);
        if !scope_log.filling {
            scope_log.filling = true;
            if let Some(me) = self.me.upgrade() {
                tokio::spawn(async move { me.fill_gap(scope).await });
            }
        }
        Ok(Some(offset))
    }

    /// Waits [`GAP_WAIT`], then reads what is still missing before the pending events of
    /// `scope` from the log and delivers it in order.
    async fn fill_gap(self: Arc<Self>, scope: Scope) {
        tokio::time::sleep(GAP_WAIT).await;
        let (Some(log), Some(entry)) = (self.log.clone(), self.log(&scope)) else {
            return;
        };
        loop {
            let (head, until) = {
                let mut l = lock(&entry);
                match l.pending.first_key_value() {
                    Some((&first, _)) if first > l.head + 1 => (l.head, first),
                    _ => {
                        l.filling = false;
                        return;
                    }
                }
            };
            let want = usize::try_from(until - head - 1)
                .unwrap_or(usize::MAX)
                .min(1_000);
            let read = match log.read(&scope, head, want).await {
                Ok(read) => read,
                Err(err) => {
                    tracing::warn!(%scope, cause = %err, "gap not read from the event log");
                    tokio::time::sleep(GAP_WAIT).await;
                    continue;
                }
            };
            let mut l = lock(&entry);
            let mut progressed = false;
            for event in read.events {
                let Some(offset) = event.offset else { continue };
                if offset == l.head + 1 {
                    l.advance(event, &self);
                    progressed = true;
                }
            }
            // Skipped only when nothing moved while the log was read: the missing events'
            // own publishes may have come meanwhile (the lock is not held across the
            // read), and then `head` and `until` read before it are stale — skipping to
            // them would move the head back and drop the events still on their way.
            if !progressed
                && l.head == head
                && let Some(&first) = l.pending.keys().next()
                && first > head + 1
            {
                // The log has nothing between: the missing offsets were trimmed away
                // (or never committed); continue after them.
                tracing::warn!(%scope, from = head + 1, to = first - 1, "offsets missing from the event log");
                l.head = first - 1;
                l.clear_window(&self.retained);
                if let Some((_, publish)) = l.pending.pop_first() {
                    let event = Arc::new(logged_event(publish, self.clock.system_time()));
                    l.advance(event, &self);
                }
            }
        }
    }

    /// With an event log: fills each scope's memory window with its latest logged
    /// events, at most `budget` in all (the log's most recent), so that a client
    /// resuming after a restart is answered from memory as before it, not by a read of
    /// the log. Meant for the start, before the node serves; a scope something was
    /// delivered in meanwhile keeps its window as it is. A scope's window gets the
    /// consecutive run of its events that ends at its head, within its retention.
    /// Returns how many events were kept.
    async fn fill_windows(&self, budget: usize) -> Result<usize, BrokerError> {
        let Some(log) = &self.log else {
            return Ok(0);
        };
        if budget == 0 {
            return Ok(0);
        }
        self.heads(log).await?;
        let mut by_scope: HashMap<Scope, Vec<Arc<Event>>> = HashMap::new();
        // No window holds more than the server's count (a namespace's wider window is
        // filled up to it; a resume further back reads the log).
        let per_scope = self.retention.server().max_events;
        for event in log.latest(budget, per_scope).await? {
            by_scope.entry(event.scope.clone()).or_default().push(event);
        }
        let now = self.clock.system_time();
        let mut kept = 0;
        for (scope, mut events) in by_scope {
            let Some(entry) = self.log(&scope) else {
                continue;
            };
            events.sort_by_key(|e| e.offset);
            let mut l = lock(&entry);
            if !l.events.is_empty() {
                continue;
            }
            let mut run = VecDeque::new();
            let mut next = l.head;
            for event in events.into_iter().rev() {
                match event.offset {
                    // Logged after the heads were read: its publish delivers it.
                    Some(offset) if offset > l.head => continue,
                    Some(offset) if offset == next => {
                        run.push_front(event);
                        // Offsets start above the log's base, never at 0: saturating
                        // only so that a damaged log cannot make this panic.
                        next = offset.saturating_sub(1);
                    }
                    _ => break,
                }
            }
            for event in run {
                l.retain(event, &self.retained);
            }
            l.trim(self.retention.of(&scope), now, &self.retained);
            kept += l.events.len();
        }
        self.check_budget();
        Ok(kept)
    }

    /// Scopes with a log (published to at least once), for tests and stats.
    pub fn log_count(&self) -> usize {
        lock(&self.logs).len()
    }
}

/// The answer of a memory window that covers `since`.
fn window(l: &ScopeLog, since: u64) -> History {
    if since >= l.head {
        return History {
            recovered: since == l.head,
            events: Vec::new(),
            head: l.head,
        };
    }
    History {
        recovered: true,
        events: l
            .events
            .iter()
            .filter(|e| e.offset.is_some_and(|o| o > since))
            .cloned()
            .collect(),
        head: l.head,
    }
}

async fn sweep_loop(broker: Weak<MemoryBroker>, over_budget: Arc<tokio::sync::Notify>) {
    loop {
        // Every SWEEP_EVERY, and at once when the windows are over their budget; not
        // holding the broker while it waits.
        tokio::select! {
            () = tokio::time::sleep(SWEEP_EVERY) => {}
            () = over_budget.notified() => {}
        }
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
        if let Some(log) = &self.log {
            let publish = match publish.offset {
                Some(_) => publish,
                None => log.append(vec![publish]).await?.pop().ok_or_else(|| {
                    BrokerError::Unavailable("the event log appended nothing".into())
                })?,
            };
            return self.publish_logged(publish, log).await;
        }
        let log = lock(&self.logs)
            .entry(publish.scope.clone())
            .or_insert_with(|| Arc::new(Mutex::new(ScopeLog::new(self.base))))
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
        let retention = self.retention.of(&event.scope);
        if retention.max_events > 0 {
            log.retain(event.clone(), &self.retained);
            log.trim(retention, event.published_at, &self.retained);
            self.check_budget();
        }
        self.sink.deliver(&event);
        Ok(Some(offset))
    }

    async fn history(&self, scope: &Scope, since: u64) -> Result<History, BrokerError> {
        let retention = self.retention.of(scope);
        if let Some(event_log) = &self.log {
            let base = self.heads(event_log).await?;
            match self.log(scope) {
                Some(entry) => {
                    let mut l = lock(&entry);
                    l.trim(retention, self.clock.system_time(), &self.retained);
                    if l.covers(since) {
                        return Ok(window(&l, since));
                    }
                }
                None => return Ok(window(&ScopeLog::new(base), since)),
            }
            return super::log::history(event_log.as_ref(), scope, since, retention, &self.clock)
                .await;
        }
        let Some(log) = self.log(scope) else {
            return Ok(History {
                recovered: since == self.base,
                events: Vec::new(),
                head: self.base,
            });
        };
        let mut log = lock(&log);
        log.trim(retention, self.clock.system_time(), &self.retained);
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

    async fn warm(&self, budget: usize) -> Result<usize, BrokerError> {
        self.fill_windows(budget).await
    }

    async fn attach(&self, scope: &Scope) -> Result<u64, BrokerError> {
        // Every publish on this node is delivered here: nothing to start reading.
        if let Some(log) = &self.log {
            return self.head(scope, log).await;
        }
        Ok(self.log(scope).map_or(self.base, |log| lock(&log).head))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::broker::log::{LogHeads, LogRead};
    use tokio::sync::{Notify, Semaphore};

    /// A log in memory whose first read waits until the test lets it finish.
    struct Log {
        events: Mutex<Vec<Arc<Event>>>,
        reading: Notify,
        gate: Semaphore,
    }

    #[async_trait]
    impl EventLog for Log {
        async fn append(&self, _: Vec<Publish>) -> Result<Vec<Publish>, BrokerError> {
            Err(BrokerError::Unavailable("not in this test".to_owned()))
        }
        async fn head(&self, _: &Scope) -> Result<u64, BrokerError> {
            Ok(lock(&self.events)
                .last()
                .and_then(|e| e.offset)
                .unwrap_or(0))
        }
        async fn heads(&self) -> Result<LogHeads, BrokerError> {
            Ok(LogHeads::default())
        }
        async fn recent(&self, _: SystemTime) -> Result<Vec<(Scope, u64)>, BrokerError> {
            Ok(Vec::new())
        }
        /// What was committed when the read began, returned once the test lets it end.
        async fn read(&self, _: &Scope, after: u64, limit: usize) -> Result<LogRead, BrokerError> {
            let read = {
                let events = lock(&self.events);
                LogRead {
                    events: events
                        .iter()
                        .filter(|e| e.offset.is_some_and(|o| o > after))
                        .take(limit)
                        .cloned()
                        .collect(),
                    head: events.last().and_then(|e| e.offset).unwrap_or(0),
                }
            };
            self.reading.notify_one();
            // One permit per read the test lets through; the permit is used up.
            self.gate.acquire().await.unwrap().forget();
            Ok(read)
        }
    }

    #[derive(Default)]
    struct Sink(Mutex<Vec<u64>>);

    impl EventSink for Sink {
        fn deliver(&self, event: &Arc<Event>) {
            lock(&self.0).extend(event.offset);
        }
        fn wants(&self, _: &Scope) -> bool {
            true
        }
    }

    fn at(offset: u64) -> Publish {
        let mut publish = Publish::new(Scope::parse("channel:1").unwrap(), "m", &offset);
        publish.offset = Some(offset);
        publish
    }

    /// The events before a gap are published while the gap filler reads the log: the
    /// filler must neither move the head back nor skip what is still on its way.
    #[tokio::test(start_paused = true)]
    async fn a_gap_filled_meanwhile_by_the_publishes_themselves_loses_nothing() {
        let log = Arc::new(Log {
            events: Mutex::new(Vec::new()),
            reading: Notify::new(),
            gate: Semaphore::new(0),
        });
        let sink = Arc::new(Sink::default());
        let broker = MemoryBroker::with_log(
            sink.clone(),
            Retentions::new(Retention::default()),
            Clock::system(),
            Some(log.clone()),
        );
        let logged = |o| Arc::new(logged_event(at(o), SystemTime::now()));
        // 1 to 3 committed; 3 is published first, past a gap: a filler reads the log.
        lock(&log.events).extend((1..=3).map(logged));
        broker.publish(at(3)).await.unwrap();
        log.reading.notified().await;
        // While it reads: 1 and 2 come (3 follows them); 4 and 5 commit, and 5 comes
        // past a new gap (4's publish is still on its way).
        broker.publish(at(1)).await.unwrap();
        broker.publish(at(2)).await.unwrap();
        lock(&log.events).extend((4..=5).map(logged));
        broker.publish(at(5)).await.unwrap();
        assert_eq!(*lock(&sink.0), [1, 2, 3]);
        // The filler's read ends with nothing past 3; its next one finds 4.
        log.gate.add_permits(2);
        for _ in 0..50 {
            if lock(&sink.0).len() >= 4 {
                break;
            }
            tokio::time::sleep(GAP_WAIT).await;
        }
        broker.publish(at(4)).await.unwrap();
        assert_eq!(*lock(&sink.0), [1, 2, 3, 4, 5]);
    }

    /// `scope`'s event at `offset`, logged now.
    fn logged(scope: &str, offset: u64) -> Arc<Event> {
        let mut publish = Publish::new(Scope::parse(scope).unwrap(), "m", &offset);
        publish.offset = Some(offset);
        Arc::new(logged_event(publish, SystemTime::now()))
    }

    /// The offsets of a recovered history.
    fn recovered_offsets(h: History) -> Vec<u64> {
        assert!(h.recovered);
        h.events.iter().filter_map(|e| e.offset).collect()
    }

    /// A log in memory, in log-time order, that counts its reads.
    struct Tail {
        events: Vec<Arc<Event>>,
        heads: Vec<(Scope, u64)>,
        reads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl EventLog for Tail {
        async fn append(&self, _: Vec<Publish>) -> Result<Vec<Publish>, BrokerError> {
            Err(BrokerError::Unavailable("not in this test".to_owned()))
        }
        async fn head(&self, scope: &Scope) -> Result<u64, BrokerError> {
            Ok(self
                .heads
                .iter()
                .find(|(s, _)| s == scope)
                .map_or(0, |(_, h)| *h))
        }
        async fn heads(&self) -> Result<LogHeads, BrokerError> {
            Ok(LogHeads {
                base: 0,
                scopes: self.heads.clone(),
            })
        }
        async fn recent(&self, _: SystemTime) -> Result<Vec<(Scope, u64)>, BrokerError> {
            Ok(Vec::new())
        }
        async fn read(
            &self,
            scope: &Scope,
            after: u64,
            limit: usize,
        ) -> Result<LogRead, BrokerError> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut events: Vec<_> = self
                .events
                .iter()
                .filter(|e| &e.scope == scope && e.offset.is_some_and(|o| o > after))
                .cloned()
                .collect();
            events.sort_by_key(|e| e.offset);
            // The head now: what the start read, or an event logged since.
            let head = events
                .last()
                .and_then(|e| e.offset)
                .unwrap_or(0)
                .max(self.head(scope).await?);
            events.truncate(limit);
            Ok(LogRead { events, head })
        }
        async fn latest(
            &self,
            limit: usize,
            per_scope: usize,
        ) -> Result<Vec<Arc<Event>>, BrokerError> {
            let head = |scope: &Scope| self.heads.iter().find(|(s, _)| s == scope).map(|h| h.1);
            Ok(self
                .events
                .iter()
                .rev()
                .filter(|e| {
                    let last = head(&e.scope).unwrap_or(0);
                    e.offset.is_some_and(|o| o + per_scope as u64 > last)
                })
                .take(limit)
                .cloned()
                .collect())
        }
    }

    /// A starting node fills each scope's window with the log's latest events (within
    /// the budget, a run that ends at the scope's head): resumes inside them are answered
    /// from memory; a position further back, or a scope whose latest events did not end
    /// at its head, is still read from the log, exactly.
    #[tokio::test]
    async fn windows_filled_at_start_answer_resumes_without_reading_the_log() {
        let scope = |s: &str| Scope::parse(s).unwrap();
        let event = logged;
        // Log-time order: channel:3's 10 (its log time earlier than its 8's and 9's, as
        // when two sends' times and commits cross), channel:1's 1..=5, channel:3's 8 and
        // 9, channel:2's 1..=3.
        let mut events = vec![event("channel:3", 10)];
        events.extend((1..=5).map(|o| event("channel:1", o)));
        events.extend([event("channel:3", 8), event("channel:3", 9)]);
        events.extend((1..=3).map(|o| event("channel:2", o)));
        let log = Arc::new(Tail {
            events,
            heads: vec![
                (scope("channel:1"), 5),
                (scope("channel:2"), 3),
                (scope("channel:3"), 10),
            ],
            reads: Default::default(),
        });
        let broker = MemoryBroker::with_log(
            Arc::new(Sink::default()),
            Retentions::new(Retention::default()),
            Clock::system(),
            Some(log.clone()),
        );
        // The latest 7: channel:2's three, channel:3's two, channel:1's 4 and 5.
        assert_eq!(broker.warm(7).await.unwrap(), 5);
        let reads = || log.reads.load(std::sync::atomic::Ordering::SeqCst);
        let got = broker.history(&scope("channel:2"), 0).await.unwrap();
        assert_eq!(recovered_offsets(got), [1, 2, 3]);
        let got = broker.history(&scope("channel:1"), 3).await.unwrap();
        assert_eq!(recovered_offsets(got), [4, 5]);
        assert_eq!(reads(), 0, "answered from memory");
        let got = broker.history(&scope("channel:1"), 1).await.unwrap();
        assert_eq!(recovered_offsets(got), [2, 3, 4, 5]);
        assert_eq!(reads(), 1, "further back: from the log");
        // channel:3's 8 and 9 do not end at its head: not kept, its resume reads the log.
        let got = broker.history(&scope("channel:3"), 7).await.unwrap();
        assert_eq!(recovered_offsets(got), [8, 9, 10]);
        assert_eq!(reads(), 2);
        // A budget of 0 fills nothing.
        assert_eq!(broker.warm(0).await.unwrap(), 0);
    }

    /// What a fill must leave alone or drop: events past the head read at start (their
    /// publish delivers them), a window something was delivered in meanwhile, events
    /// older than the retention's age.
    #[tokio::test]
    async fn a_fill_keeps_to_the_heads_the_windows_delivered_meanwhile_and_the_retention() {
        let scope = |s: &str| Scope::parse(s).unwrap();
        let event = logged;
        // channel:1 and channel:2 have 1..=4 each when the heads are read (channel:1's
        // 2 logged two hours ago); then both their 5s are committed.
        let mut events: Vec<_> = (1..=4).map(|o| event("channel:1", o)).collect();
        let mut old = Publish::new(scope("channel:1"), "m", &2);
        old.offset = Some(2);
        old.logged_at = Some(SystemTime::now() - Duration::from_secs(7200));
        events[1] = Arc::new(logged_event(old, SystemTime::now()));
        events.extend((1..=4).map(|o| event("channel:2", o)));
        events.extend([event("channel:1", 5), event("channel:2", 5)]);
        let log = Arc::new(Tail {
            events,
            heads: vec![(scope("channel:1"), 4), (scope("channel:2"), 4)],
            reads: Default::default(),
        });
        let broker = MemoryBroker::with_log(
            Arc::new(Sink::default()),
            Retentions::new(Retention {
                max_events: 3,
                max_age: Duration::from_secs(3600),
            }),
            Clock::system(),
            Some(log.clone()),
        );
        // channel:2's 5 is delivered before the fill.
        let mut five = Publish::new(scope("channel:2"), "m", &5);
        five.offset = Some(5);
        broker.publish(five).await.unwrap();
        // channel:1's last three up to its head, less the one older than the window
        // (an hour); channel:2 left as it was.
        assert_eq!(broker.warm(100).await.unwrap(), 2);
        let reads = || log.reads.load(std::sync::atomic::Ordering::SeqCst);
        let got = broker.history(&scope("channel:1"), 2).await.unwrap();
        assert_eq!(recovered_offsets(got), [3, 4]);
        let got = broker.history(&scope("channel:2"), 4).await.unwrap();
        assert_eq!(recovered_offsets(got), [5]);
        assert_eq!(reads(), 0, "answered from memory");
        let got = broker.history(&scope("channel:2"), 2).await.unwrap();
        assert_eq!(recovered_offsets(got), [3, 4, 5]);
        assert_eq!(reads(), 1, "not in channel:2's window: from the log");
    }

    /// Topics a client names by publishing to them cannot fill the memory: past the
    /// budget, the oldest retained events of any scope go first (the newest scopes'
    /// windows stay whole), and a resume reaching back to them is not recovered from
    /// memory.
    #[tokio::test]
    async fn the_windows_of_all_scopes_stay_within_their_budget() {
        let broker = MemoryBroker::new(
            Arc::new(Sink::default()),
            Retention::default(),
            Clock::system(),
        );
        broker.set_window_budget(20_000);
        let topic = |i: usize| Scope::parse(&format!("topic:t{i}")).unwrap();
        let text = "x".repeat(1_000);
        let mut heads = Vec::new();
        for i in 0..50 {
            let offset = broker
                .publish(Publish::new(topic(i), "said", &text))
                .await
                .unwrap()
                .unwrap();
            heads.push(offset);
        }
        assert!(
            broker.retained_bytes() > 20_000,
            "{}",
            broker.retained_bytes()
        );
        broker.sweep();
        assert!(
            broker.retained_bytes() <= 20_000,
            "{}",
            broker.retained_bytes()
        );
        let before = |i: usize| heads[i] - 1;
        let newest = broker.history(&topic(49), before(49)).await.unwrap();
        assert!(newest.recovered);
        assert_eq!(newest.events.len(), 1);
        let oldest = broker.history(&topic(0), before(0)).await.unwrap();
        assert!(!oldest.recovered, "evicted: {oldest:?}");
        // Past the budget, the sweep is woken at once (not at its next round).
        for i in 50..100 {
            broker
                .publish(Publish::new(topic(i), "said", &text))
                .await
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while broker.retained_bytes() > 20_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the sweep brought the windows under their budget");
        // What a scope's window gives back counts no more: emptied by its own window's
        // trim, the windows hold nothing.
        for i in 0..100 {
            lock(&broker.log(&topic(i)).unwrap()).trim(
                Retention {
                    max_events: 0,
                    max_age: Duration::ZERO,
                },
                SystemTime::now(),
                &broker.retained,
            );
        }
        assert_eq!(broker.retained_bytes(), 0);
    }

    /// An event trimmed out of the middle of a scope's log (log times and offsets can
    /// cross) is a hole: a resume across it is not recovered.
    #[tokio::test]
    async fn a_hole_in_the_log_is_not_recovered() {
        let scope = Scope::parse("channel:4").unwrap();
        let log = Arc::new(Tail {
            events: vec![logged("channel:4", 8), logged("channel:4", 10)],
            heads: vec![(scope.clone(), 10)],
            reads: Default::default(),
        });
        let broker = MemoryBroker::with_log(
            Arc::new(Sink::default()),
            Retentions::new(Retention::default()),
            Clock::system(),
            Some(log),
        );
        let got = broker.history(&scope, 7).await.unwrap();
        assert!(!got.recovered);
        assert!(got.events.is_empty());
        let got = broker.history(&scope, 9).await.unwrap();
        assert!(got.recovered, "after the hole");
    }
}
