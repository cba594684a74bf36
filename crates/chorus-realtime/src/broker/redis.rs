//! Multi-node broker on Redis Streams (SPEC §3).
//!
//! **Layout in Redis.** Each scope has a stream `chorus:s:<scope>` and a counter
//! `chorus:h:<scope>`. A publish runs one Lua script: the counter is incremented
//! (initialized at wall-clock microseconds on first use, like the in-memory broker, so
//! that after a loss of Redis data every new offset is larger than any handed out
//! before) and the event is appended with the stream ID `<offset>-0`, capped with
//! `MAXLEN ~`. The stream is both the relay between nodes and the replay history, and an
//! offset is the same on every node: a client resumes on any node. Ephemeral events
//! (typing, presence) share one short stream, `chorus:ephemeral`, read by every node and
//! never replayed.
//!
//! **Reading.** One task per node, on its own connection, runs
//! `XREAD BLOCK … STREAMS <the scopes this node has subscribers for> <positions>`,
//! hands each event to the node's [`EventSink`] in offset order and advances the scope's
//! position. A subscription to a scope the node does not read yet *attaches* it (its
//! position becomes the scope's head) before the subscription's replay is fetched, and
//! unblocks the read (`CLIENT UNBLOCK`) so that it is read at once. Scopes the sink no
//! longer wants are dropped before the next read.
//!
//! **Redis unavailable.** A publish that fails is queued, and so is every publish after
//! it while the queue is not empty; a flusher re-sends them in order with backoff when
//! Redis returns. Meanwhile the node reports not ready but keeps its clients; the reader
//! reconnects with backoff and continues from its positions, so subscribers get every
//! event once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Script};
use tokio::sync::Notify;

use super::log::EventLog;
use super::{Broker, BrokerError, EventSink, History, Retention, Retentions};
use crate::event::{Effect, Marks};
use crate::{Clock, Event, Metrics, Publish, Scope};

/// How long one `XREAD` blocks when nothing arrives.
const BLOCK: Duration = Duration::from_millis(2_000);
/// Most entries read per stream per `XREAD`.
const READ_COUNT: usize = 512;
/// Streams keep at least this many entries, whatever the replay retention, so that a
/// node whose reader lags a little still finds the events it has not relayed yet.
const RELAY_FLOOR: usize = 1_000;
/// Length of the shared ephemeral stream.
const EPHEMERAL_MAXLEN: usize = 10_000;
const EPHEMERAL_KEY: &str = "chorus:ephemeral";
/// Events a node queues while Redis is unreachable before it refuses to publish.
const BACKLOG_LIMIT: usize = 100_000;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// `KEYS[1]` stream, `KEYS[2]` counter; `ARGV`: initial offset (µs), MAXLEN, TTL (ms),
/// then the fields kind, data, marks, effect, published-at (ms). Returns the offset.
const PUBLISH_LUA: &str = r"
local n = redis.call('INCR', KEYS[2])
if n == 1 then
  redis.call('SET', KEYS[2], ARGV[1])
  n = ARGV[1]
else
  n = string.format('%.0f', n)
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], n .. '-0',
  'k', ARGV[4], 'd', ARGV[5], 'm', ARGV[6], 'e', ARGV[7], 't', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return n
";

/// With an event log the offset is the log's (`ARGV[9]`): the event is appended only
/// when it is past the scope's head, so a publish retried after a lost reply, or arriving
/// after a later event of the scope, adds nothing (readers read such a gap back from the
/// log). Returns the offset, or -1 when it was not appended.
const PUBLISH_LOGGED_LUA: &str = r"
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[9]) <= head then return '-1' end
redis.call('SET', KEYS[2], ARGV[9], 'PX', ARGV[3])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[9] .. '-0',
  'k', ARGV[4], 'd', ARGV[5], 'm', ARGV[6], 'e', ARGV[7], 't', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return ARGV[9]
";

/// `KEYS[1]` counter; `ARGV[1]` initial offset (µs), `ARGV[2]` TTL (ms) of a counter it
/// creates (so asking for heads of scopes nobody publishes to leaves nothing behind).
/// Returns the scope's head.
const HEAD_LUA: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return redis.call('GET', KEYS[1])
";

pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    sink: Arc<dyn EventSink>,
    metrics: Arc<Metrics>,
    /// Each scope's window (the server's, or its namespace's).
    retention: Retentions,
    /// Publish times, initial offsets, the window's age and the relay lag.
    clock: Clock,
    client: redis::Client,
    conn: ConnectionManager,
    publish_script: Script,
    publish_logged_script: Script,
    head_script: Script,
    /// The shared database's event log: offsets, history and the events a reader finds
    /// missing between two stream entries.
    log: Option<Arc<dyn EventLog>>,
    positions: Mutex<Positions>,
    /// `CLIENT ID` of the reader's connection (0 while it has none).
    reader_id: AtomicI64,
    reader_up: AtomicBool,
    backlog: Mutex<VecDeque<Publish>>,
    backlog_wake: Arc<Notify>,
}

/// What the reader has delivered, per scope it reads.
struct Positions {
    scopes: HashMap<Scope, u64>,
    /// Attached while Redis was unreachable: the head is read when it returns.
    unresolved: HashSet<Scope>,
    ephemeral: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a publish did not reach Redis.
enum Failed {
    /// Redis cannot be reached right now: the event waits in the backlog.
    Unreachable(BrokerError),
    /// Redis refused it (or it could not be encoded): retrying cannot help.
    Refused(BrokerError),
}

fn unavailable(err: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(err.to_string())
}

fn stream_key(scope: &Scope) -> String {
    format!("chorus:s:{scope}")
}

fn head_key(scope: &Scope) -> String {
    format!("chorus:h:{scope}")
}

fn now_micros(clock: &Clock) -> u64 {
    clock
        .system_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The offset of a scope stream's entry ID (`<offset>-0`).
fn offset_of(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

impl RedisBroker {
    /// Connects to Redis and starts this node's reader and flusher. Fails when Redis
    /// cannot be reached at start (a node is not started without its broker).
    pub async fn connect(
        url: &str,
        sink: Arc<dyn EventSink>,
        metrics: Arc<Metrics>,
        retention: Retention,
        clock: Clock,
    ) -> Result<Arc<Self>, BrokerError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Self::connect_client(client, sink, metrics, retention.into(), clock, None).await
    }

    /// As [`RedisBroker::connect`], with a client built by the caller (`rediss://`
    /// with its own CA: `redis::Client::build_with_tls`).
    pub async fn connect_client(
        client: redis::Client,
        sink: Arc<dyn EventSink>,
        metrics: Arc<Metrics>,
        retention: Retentions,
        clock: Clock,
        log: Option<Arc<dyn EventLog>>,
    ) -> Result<Arc<Self>, BrokerError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(MAX_BACKOFF);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(unavailable)?;
        let inner = Arc::new(Inner {
            sink,
            metrics,
            retention,
            clock,
            client,
            conn,
            publish_script: Script::new(PUBLISH_LUA),
            publish_logged_script: Script::new(PUBLISH_LOGGED_LUA),
            head_script: Script::new(HEAD_LUA),
            log,
            positions: Mutex::new(Positions {
                scopes: HashMap::new(),
                unresolved: HashSet::new(),
                ephemeral: String::new(),
            }),
            reader_id: AtomicI64::new(0),
            reader_up: AtomicBool::new(false),
            backlog: Mutex::new(VecDeque::new()),
            backlog_wake: Arc::new(Notify::new()),
        });
        let last_ephemeral: Vec<StreamId> = {
            let mut conn = inner.conn.clone();
            let reply: redis::streams::StreamRangeReply = conn
                .xrevrange_count(EPHEMERAL_KEY, "+", "-", 1)
                .await
                .map_err(unavailable)?;
            reply.ids
        };
        lock(&inner.positions).ephemeral = last_ephemeral
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());

        tokio::spawn(read_loop(Arc::downgrade(&inner)));
        tokio::spawn(flush_loop(Arc::downgrade(&inner)));
        if inner.log.is_some() {
            tokio::spawn(relay_loop(Arc::downgrade(&inner)));
        }
        Ok(Arc::new(Self { inner }))
    }
}

impl Inner {
    /// How long a scope's stream and counter outlive its last publish.
    fn ttl_ms(retention: Retention) -> u64 {
        retention.max_age.as_millis().max(60_000) as u64
    }

    /// Sends one event to Redis. Returns its offset (`None` for ephemeral events).
    async fn send(&self, publish: &Publish) -> Result<Option<u64>, Failed> {
        let mut conn = self.conn.clone();
        let marks = match &publish.marks {
            Some(m) => serde_json::to_string(m.as_ref())
                .map_err(|err| Failed::Refused(unavailable(err)))?,
            None => String::new(),
        };
        let effect = match &publish.effect {
            Some(e) => serde_json::to_string(e.as_ref())
                .map_err(|err| Failed::Refused(unavailable(err)))?,
            None => String::new(),
        };
        let at = millis(self.clock.system_time());
        let result = if publish.ephemeral {
            let fields = [
                ("c", publish.scope.as_str()),
                ("k", publish.kind.as_str()),
                ("d", publish.data.as_str()),
                ("m", marks.as_str()),
                ("e", effect.as_str()),
                ("t", &at.to_string()),
            ];
            conn.xadd_maxlen::<_, _, _, _, Option<String>>(
                EPHEMERAL_KEY,
                redis::streams::StreamMaxlen::Approx(EPHEMERAL_MAXLEN),
                "*",
                &fields,
            )
            .await
            .map(|_| None)
        } else if let Some(offset) = publish.offset {
            let retention = self.retention.of(&publish.scope);
            let maxlen = retention.max_events.max(RELAY_FLOOR);
            self.publish_logged_script
                .key(stream_key(&publish.scope))
                .key(head_key(&publish.scope))
                .arg(0)
                .arg(maxlen)
                .arg(Self::ttl_ms(retention))
                .arg(&publish.kind)
                .arg(&publish.data)
                .arg(marks)
                .arg(effect)
                .arg(publish.logged_at.map_or(at, millis))
                .arg(offset)
                .invoke_async::<String>(&mut conn)
                .await
                .map(|_| Some(offset))
        } else {
            let retention = self.retention.of(&publish.scope);
            let maxlen = retention.max_events.max(RELAY_FLOOR);
            let ttl = Self::ttl_ms(retention);
            self.publish_script
                .key(stream_key(&publish.scope))
                .key(head_key(&publish.scope))
                .arg(now_micros(&self.clock))
                .arg(maxlen)
                .arg(ttl)
                .arg(&publish.kind)
                .arg(&publish.data)
                .arg(marks)
                .arg(effect)
                .arg(at)
                .invoke_async::<String>(&mut conn)
                .await
                .map(|n| n.parse().ok())
        };
        result.map_err(|err| {
            Metrics::inc(&self.metrics.relay_errors);
            // Unreachable, loading, failing over: worth waiting for. An answer that is
            // an error (a wrong type, a script error) would be the same next time.
            if matches!(err.retry_method(), redis::RetryMethod::NoRetry) {
                Failed::Refused(unavailable(err))
            } else {
                Failed::Unreachable(unavailable(err))
            }
        })
    }

    async fn head_of(&self, scope: &Scope) -> Result<u64, BrokerError> {
        let mut conn = self.conn.clone();
        let head: String = self
            .head_script
            .key(head_key(scope))
            .arg(now_micros(&self.clock))
            .arg(Self::ttl_ms(self.retention.of(scope)))
            .invoke_async(&mut conn)
            .await
            .map_err(|err| {
                Metrics::inc(&self.metrics.relay_errors);
                unavailable(err)
            })?;
        head.parse()
            .map_err(|_| BrokerError::Unavailable(format!("head of {scope} is not a number")))
    }

    /// Rebuilds an event from a stream entry.
    fn decode(&self, scope: Scope, offset: Option<u64>, entry: &StreamId) -> Option<Event> {
        let field = |name: &str| -> Option<String> {
            entry
                .map
                .get(name)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
        };
        let kind = field("k")?;
        let data = field("d")?;
        let marks = field("m")
            .filter(|m| !m.is_empty())
            .and_then(|m| serde_json::from_str::<Marks>(&m).ok())
            .map(Arc::new);
        let effect = field("e")
            .filter(|e| !e.is_empty())
            .and_then(|e| serde_json::from_str::<Effect>(&e).ok())
            .map(Arc::new);
        let at = field("t").and_then(|t| t.parse::<u64>().ok()).map_or_else(
            || self.clock.system_time(),
            |ms| UNIX_EPOCH + Duration::from_millis(ms),
        );
        let publish = Publish {
            scope,
            kind,
            data,
            marks,
            effect,
            ephemeral: offset.is_none(),
            offset,
            logged_at: Some(at),
        };
        Some(Event::published_at(publish, offset, at))
    }

    /// Asks the reader to read again now, with the scopes attached since it blocked.
    async fn unblock_reader(&self) {
        let id = self.reader_id.load(Ordering::Acquire);
        if id == 0 {
            return;
        }
        let mut conn = self.conn.clone();
        let _: Result<i64, _> = redis::cmd("CLIENT")
            .arg("UNBLOCK")
            .arg(id)
            .query_async(&mut conn)
            .await;
    }
}

impl Inner {
    /// Reads `scope` from its head on unless it is read already; returns the head.
    /// While Redis is unreachable the scope waits in `unresolved` for the reader.
    async fn attach(&self, scope: &Scope) -> Result<u64, BrokerError> {
        let head = match &self.log {
            Some(log) => log.head(scope).await,
            None => self.head_of(scope).await,
        };
        let head = match head {
            Ok(head) => head,
            Err(err) => {
                tracing::warn!(%scope, cause = %err, "attach deferred until Redis returns");
                lock(&self.positions).unresolved.insert(scope.clone());
                return Err(err);
            }
        };
        let attached = {
            let mut positions = lock(&self.positions);
            positions.unresolved.remove(scope);
            match positions.scopes.entry(scope.clone()) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    tracing::trace!(%scope, head, "attached at the log's head");
                    slot.insert(head);
                    true
                }
            }
        };
        if attached {
            self.unblock_reader().await;
        }
        Ok(head)
    }
}

/// The reader: one blocking `XREAD` at a time over every scope this node needs.
async fn read_loop(inner: Weak<Inner>) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(broker) = inner.upgrade() else {
            return;
        };
        if conn.is_none() {
            match reader_connection(&broker).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::from_millis(50);
                }
                Err(err) => {
                    broker.reader_up.store(false, Ordering::Release);
                    tracing::warn!(cause = %err, "Redis reader cannot connect; retrying");
                    drop(broker);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        resolve_unresolved(&broker).await;
        let (keys, ids) = read_list(&broker);
        let Some(c) = conn.as_mut() else { continue };
        let options = StreamReadOptions::default()
            .block(BLOCK.as_millis() as usize)
            .count(READ_COUNT);
        let reply: Result<Option<StreamReadReply>, _> =
            c.xread_options(&keys, &ids, &options).await;
        match reply {
            Ok(reply) => {
                broker.reader_up.store(true, Ordering::Release);
                Metrics::inc(&broker.metrics.relay_reads);
                if let Some(reply) = reply {
                    let gaps = deliver(&broker, reply);
                    for gap in gaps {
                        fill_gap(&broker, gap).await;
                    }
                }
            }
            Err(err) => {
                Metrics::inc(&broker.metrics.relay_errors);
                broker.reader_up.store(false, Ordering::Release);
                broker.reader_id.store(0, Ordering::Release);
                tracing::warn!(cause = %err, "Redis read failed; reconnecting");
                conn = None;
                drop(broker);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn reader_connection(broker: &Inner) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(3)));
    let mut conn = broker
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn)
        .await?;
    broker.reader_id.store(id, Ordering::Release);
    Ok(conn)
}

/// Reads the heads of scopes attached while Redis was unreachable.
async fn resolve_unresolved(broker: &Arc<Inner>) {
    let pending: Vec<Scope> = lock(&broker.positions).unresolved.iter().cloned().collect();
    for scope in pending {
        let _ = broker.attach(&scope).await;
    }
}

/// The keys and positions of the next read; drops scopes without local subscribers.
fn read_list(broker: &Inner) -> (Vec<String>, Vec<String>) {
    let mut positions = lock(&broker.positions);
    positions.scopes.retain(|scope, position| {
        let wanted = broker.sink.wants(scope);
        if !wanted {
            tracing::trace!(%scope, position = *position, "no longer read");
        }
        wanted
    });
    let mut keys = Vec::with_capacity(positions.scopes.len() + 1);
    let mut ids = Vec::with_capacity(positions.scopes.len() + 1);
    keys.push(EPHEMERAL_KEY.to_owned());
    ids.push(positions.ephemeral.clone());
    for (scope, offset) in &positions.scopes {
        keys.push(stream_key(scope));
        ids.push(format!("{offset}-0"));
    }
    (keys, ids)
}

/// The prefix of the users' scopes' streams ([`stream_key`] of `user:…`).
const USER_STREAMS: &str = "chorus:s:user:";

/// Entries of a scope that follow events missing from its stream (published late, or
/// lost with Redis's data), to deliver after those are read from the event log.
struct Gap {
    scope: Scope,
    entries: Vec<(u64, StreamId)>,
}

/// Delivers a scope's entries that follow a gap, each after the events missing before
/// it have been read from the event log: one read may hold several gaps (after a Redis
/// outage the queued publishes of several nodes land behind newer events), and every one
/// is filled. Events the log no longer has are skipped (the clients see the offset jump
/// and catch up over HTTP); when the log cannot be read, nothing more is delivered and
/// the position stays, so the next read meets the gap again.
async fn fill_gap(broker: &Inner, gap: Gap) {
    let Some(log) = &broker.log else { return };
    for (offset, entry) in gap.entries {
        if !read_missing(broker, log.as_ref(), &gap.scope, offset).await {
            return;
        }
        let mut positions = lock(&broker.positions);
        let Some(position) = positions.scopes.get_mut(&gap.scope) else {
            return;
        };
        if offset <= *position {
            continue;
        }
        if *position + 1 < offset {
            Metrics::inc(&broker.metrics.relay_errors);
            tracing::warn!(scope = %gap.scope, from = *position, to = offset, "relay gap");
        }
        *position = offset;
        if let Some(event) = broker.decode(gap.scope.clone(), Some(offset), &entry) {
            broker.sink.deliver(&Arc::new(event));
        }
    }
}

/// Reads the events of `scope` between the reader's position and `until` from the event
/// log and delivers them, in order. False when the log could not be read.
async fn read_missing(broker: &Inner, log: &dyn EventLog, scope: &Scope, until: u64) -> bool {
    loop {
        let Some(position) = lock(&broker.positions).scopes.get(scope).copied() else {
            return true;
        };
        if position + 1 >= until {
            return true;
        }
        let missing = usize::try_from(until - position - 1).unwrap_or(usize::MAX);
        let read = match log.read(scope, position, missing.min(READ_COUNT)).await {
            Ok(read) => read.events,
            Err(err) => {
                Metrics::inc(&broker.metrics.relay_errors);
                tracing::warn!(%scope, cause = %err,
                    "relay gap not read from the event log; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return false;
            }
        };
        let mut positions = lock(&broker.positions);
        let Some(position) = positions.scopes.get_mut(scope) else {
            return true;
        };
        let mut progressed = false;
        for event in read {
            if event
                .offset
                .is_some_and(|o| o == *position + 1 && o < until)
            {
                *position += 1;
                progressed = true;
                broker.sink.deliver(&event);
            }
        }
        if !progressed {
            return true;
        }
    }
}

/// Hands what one read returned to the registry, in offset order per scope, each event
/// once: an entry at or below the scope's position was delivered before. With an event
/// log, a scope's entries past a gap are returned, to deliver after the gap is read.
fn deliver(broker: &Inner, reply: StreamReadReply) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let mut positions = lock(&broker.positions);
    let mut newest: Option<SystemTime> = None;
    let mut ephemeral = None;
    // Users' scopes first: they carry the changes that end other subscriptions or the
    // socket (`credentials.revoked` and its close, a demotion's re-check), which must
    // not be overtaken by an event of another scope read with them (the reply lists the
    // streams in the order they were asked for: a hash map's).
    let mut streams = reply.keys;
    streams.sort_by_key(|stream| !stream.key.starts_with(USER_STREAMS));
    for stream in streams {
        broker
            .metrics
            .relay_read_events
            .fetch_add(stream.ids.len() as u64, Ordering::Relaxed);
        if stream.key == EPHEMERAL_KEY {
            ephemeral = Some(stream);
            continue;
        }
        let Some(scope) = stream
            .key
            .strip_prefix("chorus:s:")
            .and_then(|s| Scope::parse(s).ok())
        else {
            continue;
        };
        let Some(position) = positions.scopes.get_mut(&scope) else {
            continue; // dropped since the read began
        };
        tracing::trace!(%scope, position = *position, first = stream.ids.first().map(|e| e.id.as_str()),
            last = stream.ids.last().map(|e| e.id.as_str()), n = stream.ids.len(), "relay read");
        for (i, entry) in stream.ids.iter().enumerate() {
            let Some(offset) = offset_of(&entry.id) else {
                continue;
            };
            if offset <= *position {
                continue;
            }
            if offset > *position + 1 && broker.log.is_some() {
                let entries = stream.ids[i..]
                    .iter()
                    .filter_map(|e| Some((offset_of(&e.id)?, e.clone())))
                    .collect();
                gaps.push(Gap {
                    scope: scope.clone(),
                    entries,
                });
                break;
            }
            if offset > *position + 1 {
                // Trimmed before this node read it (or Redis lost its data): the
                // clients see the offset jump and catch up over HTTP.
                Metrics::inc(&broker.metrics.relay_errors);
                tracing::warn!(%scope, from = *position, to = offset, "relay gap");
            }
            *position = offset;
            match broker.decode(scope.clone(), Some(offset), entry) {
                Some(event) => {
                    newest = Some(event.published_at);
                    broker.sink.deliver(&Arc::new(event));
                }
                None => {
                    Metrics::inc(&broker.metrics.relay_errors);
                    tracing::warn!(%scope, offset, "undecodable stream entry skipped");
                }
            }
        }
    }
    // Ephemeral events last: one the read returns with logged events may have been
    // added after them (a stream's delta after the leave that ends a reader's
    // subscription, the removal answered before the append), and must not overtake
    // them. One added before them reaches its readers a read's worth later than it could
    // have, which their order allows (deltas carry their own `seq`).
    for entry in ephemeral.iter().flat_map(|stream| &stream.ids) {
        positions.ephemeral.clone_from(&entry.id);
        let scope = entry
            .map
            .get("c")
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            .and_then(|c| Scope::parse(&c).ok());
        if let Some(event) = scope.and_then(|s| broker.decode(s, None, entry)) {
            broker.sink.deliver(&Arc::new(event));
        }
    }
    if let Some(at) = newest {
        let lag = broker
            .clock
            .system_time()
            .duration_since(at)
            .unwrap_or_default()
            .as_millis() as u64;
        broker.metrics.relay_lag_ms.store(lag, Ordering::Relaxed);
    }
    gaps
}

/// How often a node looks for logged events that never reached the streams.
const RELAY_EVERY: Duration = Duration::from_secs(1);
/// How long an event may be logged and not in its stream before a relay sends it: its
/// own publisher is given this long first.
const RELAY_GRACE: Duration = Duration::from_secs(2);
/// How far back the relay looks.
const RELAY_WINDOW: Duration = Duration::from_secs(60);

/// The relay: events a node logged and never put in Redis (it died between the commit
/// and the publish, or with events queued for an unreachable Redis) are sent by every
/// other node once they are [`RELAY_GRACE`] old — in offset order, and idempotently
/// (`PUBLISH_LOGGED_LUA` adds nothing at or below a stream's head), so several nodes
/// relaying the same event make one entry. Without it such an event would only reach
/// the other nodes' readers as a gap before the scope's next event.
async fn relay_loop(inner: Weak<Inner>) {
    // Per scope: the log head seen ahead of the stream, and since when.
    let mut behind: HashMap<Scope, (u64, SystemTime)> = HashMap::new();
    loop {
        tokio::time::sleep(RELAY_EVERY).await;
        let Some(broker) = inner.upgrade() else {
            return;
        };
        if let Err(err) = relay_once(&broker, &mut behind).await {
            tracing::debug!(cause = %err, "relay pass failed");
        }
    }
}

async fn relay_once(
    broker: &Inner,
    behind: &mut HashMap<Scope, (u64, SystemTime)>,
) -> Result<(), BrokerError> {
    let Some(log) = &broker.log else {
        return Ok(());
    };
    let now = broker.clock.system_time();
    let since = now.checked_sub(RELAY_WINDOW).unwrap_or(UNIX_EPOCH);
    let recent = log.recent(since).await?;
    if recent.is_empty() {
        behind.clear();
        return Ok(());
    }
    let keys: Vec<String> = recent.iter().map(|(s, _)| head_key(s)).collect();
    let mut conn = broker.conn.clone();
    let heads: Vec<Option<u64>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .map_err(unavailable)?;
    let mut still = HashMap::new();
    for ((scope, logged), streamed) in recent.into_iter().zip(heads) {
        let streamed = streamed.unwrap_or(0);
        if streamed >= logged {
            continue;
        }
        let first_seen = behind.get(&scope).map_or(now, |&(_, at)| at);
        if now.duration_since(first_seen).unwrap_or_default() < RELAY_GRACE {
            still.insert(scope, (logged, first_seen));
            continue;
        }
        let missing = usize::try_from(logged - streamed).unwrap_or(usize::MAX);
        let read = log.read(&scope, streamed, missing.min(READ_COUNT)).await?;
        let mut sent = 0;
        for event in read.events {
            let publish = Publish {
                scope: event.scope.clone(),
                kind: event.kind.to_string(),
                data: event.data.to_string(),
                marks: event.marks.clone(),
                effect: event.effect.clone(),
                ephemeral: false,
                offset: event.offset,
                logged_at: Some(event.published_at),
            };
            if broker.send(&publish).await.is_err() {
                break;
            }
            sent += 1;
        }
        if sent > 0 {
            Metrics::inc(&broker.metrics.relay_errors);
            tracing::warn!(%scope, from = streamed + 1, sent, "relayed events a node logged and never published");
        }
    }
    *behind = still;
    Ok(())
}

/// Re-sends, in order, what was published while Redis was unreachable.
async fn flush_loop(inner: Weak<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(broker) = inner.upgrade() else {
            return;
        };
        let next = lock(&broker.backlog).front().cloned();
        let Some(publish) = next else {
            backoff = Duration::from_millis(50);
            // Woken by a failed publish; the timeout only notices the broker is gone.
            let wake = broker.backlog_wake.clone();
            drop(broker);
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            continue;
        };
        // A scope attached while Redis was away gets its position from the reader once
        // Redis is back; an event published before that would be behind it, unread.
        if !lock(&broker.positions).unresolved.is_empty() {
            drop(broker);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        let sent = broker.send(&publish).await;
        if let Err(Failed::Refused(err)) = &sent {
            // It would block every event behind it forever: dropped, and said so.
            tracing::error!(scope = %publish.scope, kind = publish.kind, cause = %err,
                "Redis refused a queued event; dropped");
        }
        match sent {
            Ok(_) | Err(Failed::Refused(_)) => {
                let mut backlog = lock(&broker.backlog);
                backlog.pop_front();
                broker
                    .metrics
                    .relay_backlog
                    .store(backlog.len() as u64, Ordering::Relaxed);
                if backlog.is_empty() {
                    tracing::info!("Redis is back; queued events published");
                }
            }
            Err(_) => {
                drop(broker);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, publish: Publish) -> Result<Option<u64>, BrokerError> {
        let inner = &self.inner;
        let publish = match &inner.log {
            Some(log) if !publish.ephemeral && publish.offset.is_none() => log
                .append(vec![publish])
                .await?
                .pop()
                .ok_or_else(|| unavailable("the event log appended nothing"))?,
            _ => publish,
        };
        {
            // Behind events waiting for Redis, a new one waits in line: order is kept.
            // So it does while a scope attached during the outage has no position yet
            // (the flusher sends it once the reader has one; see `flush_loop`).
            let mut backlog = lock(&inner.backlog);
            if !backlog.is_empty() || !lock(&inner.positions).unresolved.is_empty() {
                let queued = queue(inner, &mut backlog, publish);
                inner.backlog_wake.notify_one();
                return queued;
            }
        }
        match inner.send(&publish).await {
            Ok(offset) => Ok(offset),
            Err(Failed::Refused(err)) => Err(err),
            Err(Failed::Unreachable(err)) => {
                tracing::warn!(cause = %err, "publish failed; queued until Redis returns");
                let mut backlog = lock(&inner.backlog);
                let queued = queue(inner, &mut backlog, publish);
                inner.backlog_wake.notify_one();
                queued
            }
        }
    }

    async fn history(&self, scope: &Scope, since: u64) -> Result<History, BrokerError> {
        let inner = &self.inner;
        let retention = inner.retention.of(scope);
        if let Some(log) = &inner.log {
            return super::log::history(log.as_ref(), scope, since, retention, &inner.clock).await;
        }
        let head = inner.head_of(scope).await?;
        let unrecovered = |events| History {
            recovered: false,
            events,
            head,
        };
        if since >= head {
            return Ok(History {
                recovered: since == head,
                events: Vec::new(),
                head,
            });
        }
        // Offsets are consecutive: the last `max_events` of them are the window.
        let oldest = head.saturating_sub(retention.max_events as u64) + 1;
        if since + 1 < oldest {
            return Ok(unrecovered(Vec::new()));
        }
        let mut conn = inner.conn.clone();
        let range: redis::streams::StreamRangeReply = conn
            .xrange_count(
                stream_key(scope),
                format!("{}-0", since + 1),
                "+",
                (head - since) as usize,
            )
            .await
            .map_err(|err| {
                Metrics::inc(&inner.metrics.relay_errors);
                unavailable(err)
            })?;
        let now = inner.clock.system_time();
        let mut events = Vec::with_capacity(range.ids.len());
        let mut expected = since + 1;
        for entry in &range.ids {
            let Some(offset) = offset_of(&entry.id) else {
                continue;
            };
            let Some(event) = inner.decode(scope.clone(), Some(offset), entry) else {
                return Ok(unrecovered(Vec::new()));
            };
            let age = now.duration_since(event.published_at).unwrap_or_default();
            if offset != expected || age > retention.max_age {
                return Ok(unrecovered(Vec::new()));
            }
            expected += 1;
            events.push(Arc::new(event));
        }
        if events.is_empty() {
            return Ok(unrecovered(events));
        }
        Ok(History {
            recovered: true,
            events,
            head,
        })
    }

    async fn attach(&self, scope: &Scope) -> Result<u64, BrokerError> {
        self.inner.attach(scope).await
    }

    fn is_ready(&self) -> bool {
        self.inner.reader_up.load(Ordering::Acquire) && lock(&self.inner.backlog).is_empty()
    }
}

fn queue(
    inner: &Inner,
    backlog: &mut VecDeque<Publish>,
    publish: Publish,
) -> Result<Option<u64>, BrokerError> {
    if backlog.len() >= BACKLOG_LIMIT {
        return Err(BrokerError::Unavailable(
            "Redis unreachable and the publish queue is full".into(),
        ));
    }
    let offset = publish.offset;
    backlog.push_back(publish);
    inner
        .metrics
        .relay_backlog
        .store(backlog.len() as u64, Ordering::Relaxed);
    Ok(offset)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A log in memory: the events a test put there.
    struct Log {
        base: u64,
        events: Mutex<Vec<Arc<Event>>>,
    }

    #[async_trait]
    impl EventLog for Log {
        async fn append(&self, _: Vec<Publish>) -> Result<Vec<Publish>, BrokerError> {
            Err(BrokerError::Unavailable("not in this test".to_owned()))
        }
        async fn head(&self, _: &Scope) -> Result<u64, BrokerError> {
            let events = lock(&self.events);
            Ok(events.last().and_then(|e| e.offset).unwrap_or(self.base))
        }
        async fn heads(&self) -> Result<super::super::log::LogHeads, BrokerError> {
            Ok(Default::default())
        }
        async fn recent(&self, _: SystemTime) -> Result<Vec<(Scope, u64)>, BrokerError> {
            Ok(Vec::new())
        }
        async fn read(
            &self,
            _: &Scope,
            after: u64,
            limit: usize,
        ) -> Result<super::super::log::LogRead, BrokerError> {
            let events = lock(&self.events);
            Ok(super::super::log::LogRead {
                events: events
                    .iter()
                    .filter(|e| e.offset.is_some_and(|o| o > after))
                    .take(limit)
                    .cloned()
                    .collect(),
                head: events.last().and_then(|e| e.offset).unwrap_or(self.base),
            })
        }
    }

    /// Records the offsets it is handed.
    #[derive(Default)]
    struct Recorder {
        offsets: Mutex<Vec<u64>>,
        changed: Notify,
    }

    impl EventSink for Recorder {
        fn deliver(&self, event: &Arc<Event>) {
            lock(&self.offsets).extend(event.offset);
            self.changed.notify_waiters();
        }
        fn wants(&self, _: &Scope) -> bool {
            true
        }
    }

    /// A broker on the test Redis at `url`, handing what it reads to `sink`.
    async fn test_broker(
        url: &str,
        sink: Arc<dyn EventSink>,
        clock: Clock,
        log: Option<Arc<dyn EventLog>>,
    ) -> Arc<RedisBroker> {
        RedisBroker::connect_client(
            redis::Client::open(url).unwrap(),
            sink,
            Arc::new(Metrics::default()),
            Retention::default().into(),
            clock,
            log,
        )
        .await
        .unwrap()
    }

    fn redis_url() -> String {
        std::env::var("CHORUS_TEST_REDIS_URL").expect(
            "needs CHORUS_TEST_REDIS_URL (scripts/services start; eval \"$(scripts/services env)\")",
        )
    }

    /// After a Redis outage, the publishes several nodes queued land behind newer events
    /// and are refused, so one read can meet several gaps in a scope; each is read from
    /// the log (a read that filled only the first one skipped the others' events on every
    /// node, found by the cluster checker).
    #[tokio::test]
    #[ignore = "needs Redis (CHORUS_TEST_REDIS_URL): scripts/test runs it (--run-ignored all)"]
    async fn a_read_with_several_gaps_fills_each_from_the_log() {
        let url = redis_url();
        let clock = Clock::system();
        let base = now_micros(&clock);
        let scope = Scope::parse(&format!("topic:gaps-{base}")).unwrap();
        let log = Arc::new(Log {
            base,
            events: Mutex::new(Vec::new()),
        });
        let sink = Arc::new(Recorder::default());
        let broker = test_broker(&url, sink.clone(), clock, Some(log.clone())).await;
        assert_eq!(broker.attach(&scope).await.unwrap(), base);

        // Seven events committed; only the 2nd, 5th and 7th reached the stream, at once.
        let at = millis(clock.system_time()).to_string();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for n in 1..=7 {
            let offset = base + n;
            let publish = Publish {
                scope: scope.clone(),
                kind: "test".to_owned(),
                data: format!("{{\"n\":{n}}}"),
                marks: None,
                effect: None,
                ephemeral: false,
                offset: Some(offset),
                logged_at: Some(clock.system_time()),
            };
            lock(&log.events).push(Arc::new(Event::published_at(
                publish.clone(),
                Some(offset),
                clock.system_time(),
            )));
            if [2, 5, 7].contains(&n) {
                let id = format!("{offset}-0");
                let fields = [
                    ("k", "test"),
                    ("d", publish.data.as_str()),
                    ("m", ""),
                    ("e", ""),
                    ("t", at.as_str()),
                ];
                pipe.xadd(stream_key(&scope), id, &fields).ignore();
            }
        }
        pipe.pexpire(stream_key(&scope), 60_000).ignore();
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = pipe.query_async(&mut conn).await.unwrap();

        let want: Vec<u64> = (1..=7).map(|n| base + n).collect();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let changed = sink.changed.notified();
                if lock(&sink.offsets).last() == Some(&(base + 7)) {
                    break;
                }
                changed.await;
            }
        })
        .await
        .expect("the last event is delivered");
        assert_eq!(*lock(&sink.offsets), want);
    }

    /// Records the kinds of the events of one scope it is handed.
    /// Records the kinds of the events of `scopes`, in the order delivered.
    struct Kinds {
        scopes: Vec<Scope>,
        kinds: Mutex<Vec<String>>,
        changed: Notify,
    }

    impl EventSink for Kinds {
        fn deliver(&self, event: &Arc<Event>) {
            if self.scopes.contains(&event.scope) {
                lock(&self.kinds).push(event.kind.to_string());
                self.changed.notify_waiters();
            }
        }
        fn wants(&self, _: &Scope) -> bool {
            true
        }
    }

    /// An ephemeral event added after a logged one (a stream's delta after the leave
    /// that ends a reader's subscription) is not delivered before it when one read
    /// returns both (the reply lists the ephemeral stream first: it is read first).
    #[tokio::test]
    #[ignore = "needs Redis (CHORUS_TEST_REDIS_URL): scripts/test runs it (--run-ignored all)"]
    async fn an_ephemeral_event_read_with_logged_ones_does_not_overtake_them() {
        use redis::streams::StreamKey;
        let url = redis_url();
        let clock = Clock::system();
        let base = now_micros(&clock);
        let scope = Scope::parse(&format!("topic:order-{base}")).unwrap();
        let sink = Arc::new(Kinds {
            scopes: vec![scope.clone()],
            kinds: Mutex::new(Vec::new()),
            changed: Notify::new(),
        });
        let broker = test_broker(&url, sink.clone(), clock, None).await;
        let head = broker.attach(&scope).await.unwrap();
        let entry = |id: String, kind: &str| stream_entry(&scope, id, kind);
        // What one XREAD returns when the leave (the next offset) and then a delta were added
        // since the last read: the streams in the order they were asked for.
        let reply = StreamReadReply {
            keys: vec![
                StreamKey {
                    key: EPHEMERAL_KEY.to_owned(),
                    ids: vec![entry("1-1".to_owned(), "message.deltas")],
                },
                StreamKey {
                    key: stream_key(&scope),
                    ids: vec![entry(format!("{}-0", head + 1), "member.left")],
                },
            ],
        };
        let gaps = deliver(&broker.inner, reply);
        assert!(gaps.is_empty());
        assert_eq!(*lock(&sink.kinds), ["member.left", "message.deltas"]);
    }

    /// A stream entry as the publish script writes it: `kind` with empty data, of `scope`.
    fn stream_entry(scope: &Scope, id: String, kind: &str) -> redis::streams::StreamId {
        let mut map: HashMap<String, redis::Value> = [("k", kind), ("d", "{}")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), redis::Value::BulkString(v.into())))
            .collect();
        map.insert(
            "c".to_owned(),
            redis::Value::BulkString(scope.as_str().into()),
        );
        redis::streams::StreamId {
            id,
            map,
            ..Default::default()
        }
    }

    /// A revocation on the user's scope and a channel's event read together: the
    /// revocation is delivered first (its close seals the socket), whatever order the
    /// reply lists the streams in.
    #[tokio::test]
    #[ignore = "needs Redis (CHORUS_TEST_REDIS_URL): scripts/test runs it (--run-ignored all)"]
    async fn a_users_event_is_delivered_before_other_scopes_read_with_it() {
        use redis::streams::StreamKey;
        let url = redis_url();
        let clock = Clock::system();
        let base = now_micros(&clock);
        let user = Scope::parse(&format!("user:{base}")).unwrap();
        let channel = Scope::parse(&format!("channel:{base}")).unwrap();
        let sink = Arc::new(Kinds {
            scopes: vec![user.clone(), channel.clone()],
            kinds: Mutex::new(Vec::new()),
            changed: Notify::new(),
        });
        let broker = test_broker(&url, sink.clone(), clock, None).await;
        let user_head = broker.attach(&user).await.unwrap();
        let channel_head = broker.attach(&channel).await.unwrap();
        let reply = StreamReadReply {
            keys: vec![
                StreamKey {
                    key: stream_key(&channel),
                    ids: vec![stream_entry(
                        &channel,
                        format!("{}-0", channel_head + 1),
                        "message.created",
                    )],
                },
                StreamKey {
                    key: stream_key(&user),
                    ids: vec![stream_entry(
                        &user,
                        format!("{}-0", user_head + 1),
                        "credentials.revoked",
                    )],
                },
            ],
        };
        let gaps = deliver(&broker.inner, reply);
        assert!(gaps.is_empty());
        assert_eq!(
            *lock(&sink.kinds),
            ["credentials.revoked", "message.created"]
        );
    }

    #[test]
    fn stream_ids_carry_offsets() {
        assert_eq!(offset_of("1795432911126590-0"), Some(1_795_432_911_126_590));
        assert_eq!(offset_of("17-0"), Some(17));
        assert_eq!(offset_of("garbage"), None);
    }
}
