//! Presence shared by every node through Redis (SPEC §3): a user connected to any node
//! is online on all of them, and a node that dies without saying goodbye has its
//! connections expire within [`NODE_TTL`] + [`SWEEP_EVERY`].
//!
//! In Redis:
//! - `chorus:p:<user>`: a hash with one field per node that has connections of the user
//!   (`n:<node>` → count) and `gen`, bumped by every open. The key exists while the user
//!   is online or within their grace period; the grace timers stay on the node where the
//!   last connection closed, exactly as with [`LocalPresence`](super::presence::LocalPresence).
//! - `chorus:node:<node>`: the node's heartbeat, a key with a TTL refreshed every
//!   [`HEARTBEAT_EVERY`]; `chorus:nodes`, the set of nodes; `chorus:nu:<node>`, the users
//!   a node has had connections of since their last offline.
//!
//! Every node sweeps: a node whose heartbeat expired has its fields removed (one Lua
//! script, so only one sweeper does it), and its users that are left without connections
//! anywhere go offline, announced by the sweeping node.
//!
//! **Outages and convergence.** A node's state in Redis has an epoch: it begins when the
//! node finds its own heartbeat gone (at start, after it was swept, after Redis lost or
//! kept its data through a restart) and writes its counts whole (`beat`). A sweep
//! removes only the fields of an epoch whose heartbeat lapsed (the script checks the
//! heartbeat first), so a sweep that runs after the node rejoined removes nothing; and
//! the sweeper's offline announcement, published later than its script ran, is dropped
//! when the user is online again by then (`Chat::presence_expired`). What remains — an
//! older state published after a fresher one by another node — is what
//! `Chat::verify_presence` repairs: every node checks its own announcements against
//! Redis once they are in the stream, and says the current state again if it differs.
//!
//! While Redis is unreachable nothing is announced offline: count changes and settles
//! queue on the node; a node that could not reach Redis sweeps nobody until one
//! [`NODE_TTL`] after it reached it again (the others' heartbeats lapsed in the same
//! outage); and reads answer from what the node knows — its own connections, and the
//! last answer Redis gave about each user.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chorus_api::TopicSubscriber;
use chorus_realtime::{Clock, Scope};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Chat;
use super::presence::{NodeStat, PresenceTracker, Ticket, TopicMove};
use crate::model::UserId;

/// A node whose heartbeat is older than this is dead.
pub const NODE_TTL: Duration = Duration::from_secs(6);
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How often this node checks its published announcements against Redis.
pub const VERIFY_EVERY: Duration = Duration::from_millis(500);

const OPEN_LUA: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HINCRBY', KEYS[1], 'n:' .. ARGV[1], 1)
redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('SADD', KEYS[2], ARGV[2])
return existed
";

/// Returns the generation when no node has connections of the user any more, else -1.
const CLOSE_LUA: &str = r"
local field = 'n:' .. ARGV[1]
local n = redis.call('HINCRBY', KEYS[1], field, -1)
if n <= 0 then redis.call('HDEL', KEYS[1], field) end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'n:' then return -1 end
end
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then return -1 end
return tonumber(gen)
";

/// `1` when the user is offline now: the grace's generation is still the latest and no
/// node has connections, or the hash is gone altogether (Redis lost its data; or
/// another node took the user offline, and saying it again is harmless).
const SETTLE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'n:' then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
";

/// `KEYS`: the dead node's heartbeat, its user set, the node set. Returns the users
/// that went offline.
const SWEEP_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local gone = {}
for _, u in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = 'chorus:p:' .. u
  redis.call('HDEL', key, 'n:' .. ARGV[1])
  local live = false
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 2) == 'n:' then live = true break end
  end
  if not live and redis.call('EXISTS', key) == 1 then
    redis.call('DEL', key)
    table.insert(gone, u)
  end
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return gone
";

/// `KEYS[1]` a node's heartbeat, `KEYS[2]` the set of topic keys it recorded
/// subscribers in; `ARGV[1]` the node. Unless the node is alive: removes its fields
/// from those topics and returns `{key, subscriber, …}` for each one removed (only the
/// sweeper that removed a field gets it: its leave is announced once).
const SWEEP_TOPICS_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local prefix = ARGV[1] .. '|'
local gone = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, #prefix) == prefix then
      if redis.call('HDEL', key, all[i]) == 1 then
        table.insert(gone, key)
        table.insert(gone, all[i + 1])
      end
    end
  end
end
redis.call('DEL', KEYS[2])
return gone
";

/// At a rejoin, `KEYS[1]`: this node's user set; `ARGV[1]`: the node, then the users it
/// has connections of now. Removes this node's fields from the hashes of the others
/// (closed while Redis was away); returns `{user, gen}` pairs of those now without
/// connections anywhere, whose grace starts now.
const FORGET_LUA: &str = r"
local keep = {}
for i = 2, #ARGV do keep[ARGV[i]] = true end
local field = 'n:' .. ARGV[1]
local closed = {}
for _, u in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not keep[u] then
    local key = 'chorus:p:' .. u
    redis.call('HDEL', key, field)
    local live = false
    for _, f in ipairs(redis.call('HKEYS', key)) do
      if string.sub(f, 1, 2) == 'n:' then live = true break end
    end
    local gen = redis.call('HGET', key, 'gen')
    if live or not gen then
      redis.call('SREM', KEYS[1], u)
    else
      table.insert(closed, tonumber(u))
      table.insert(closed, tonumber(gen))
    end
  end
end
return closed
";

/// A change of this node's connection counts (or a settle) that did not reach Redis;
/// replayed, in order, once Redis answers again (the counts are increments, so late is
/// still right).
#[derive(Debug, Clone, Copy)]
enum Unsent {
    Open(UserId),
    Close(UserId),
    Settle(UserId, Ticket),
}

impl Unsent {
    const fn user(self) -> UserId {
        match self {
            Self::Open(user) | Self::Close(user) | Self::Settle(user, _) => user,
        }
    }
}

/// What a replayed change means for the chat.
pub(crate) enum Replayed {
    /// The user's first connection anywhere: announce them online.
    CameOnline(UserId),
    /// The user's last connection anywhere closed: start the grace period.
    LastClosed(UserId, Ticket),
    /// A grace that ended while Redis was away settled: announce the user offline.
    WentOffline(UserId),
    /// A change of the user was dropped (this node rewrote its counts whole): clients
    /// may show them online; check it.
    InDoubt(UserId),
}

/// Presence counted in Redis, shared by every node.
pub struct RedisPresence {
    node: String,
    conn: ConnectionManager,
    /// This node's connections per user, to re-register after this node was taken for
    /// dead (Redis unreachable for longer than the TTL) and swept.
    local: Mutex<HashMap<UserId, usize>>,
    /// When this node last found its own heartbeat gone (at start, or after Redis was
    /// unreachable for longer than the TTL). Every node's heartbeat lapsed in such an
    /// outage, so this node sweeps nobody until the others had one TTL to beat again.
    rejoined: Mutex<Option<tokio::time::Instant>>,
    /// Subscribers of topics that a sweep removed with their dead node, whose
    /// `subscriber.left` is still to be announced.
    topic_leaves: Mutex<Vec<(Scope, TopicSubscriber)>>,
    /// This node's recorded subscribers (sessions) per topic key: the topic leaves
    /// `chorus:tpn:<node>` with its last one, so the set — and the sweep of a dead
    /// node, which reads every topic in it — holds only topics the node has subscribers
    /// in. By session, so a leave whose join was never recorded (the namespace's
    /// `presence` turned on by a reload in between) takes nobody else's place.
    topic_sessions: Mutex<HashMap<String, HashSet<String>>>,
    /// Where `rejoined` is read (the chat's clock).
    clock: Clock,
    /// Count changes waiting for Redis. While any waits, new ones queue behind it, so
    /// a user's open and close reach Redis in the order they happened.
    unsent: Mutex<VecDeque<Unsent>>,
    /// The last online bit Redis gave (or this node wrote) per user: what reads answer
    /// while Redis is away, with this node's own connections. One entry per user asked
    /// about, so bounded by the users of the deployment.
    known: Mutex<HashMap<UserId, bool>>,
    /// Set when the heartbeat or the sweep failed; cleared by the next heartbeat that
    /// reaches Redis, which then holds the sweep for one TTL (see `rejoined`).
    outage: AtomicBool,
    /// This node's heartbeat was found gone and its counts are not written whole yet.
    rewrite: AtomicBool,
    open: Script,
    close: Script,
    settle: Script,
    sweep: Script,
    sweep_topics: Script,
    forget: Script,
}

fn user_key(user: UserId) -> String {
    format!("chorus:p:{}", user.0)
}

fn node_users_key(node: &str) -> String {
    format!("chorus:nu:{node}")
}

fn node_topics_key(node: &str) -> String {
    format!("chorus:tpn:{node}")
}

fn lock_unpoisoned<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn heartbeat_key(node: &str) -> String {
    format!("chorus:node:{node}")
}

const NODES_KEY: &str = "chorus:nodes";

impl RedisPresence {
    pub async fn connect(url: &str, node: String, clock: Clock) -> redis::RedisResult<Arc<Self>> {
        Self::connect_client(redis::Client::open(url)?, node, clock).await
    }

    /// As [`RedisPresence::connect`], with a client built by the caller (TLS settings).
    pub async fn connect_client(
        client: redis::Client,
        node: String,
        clock: Clock,
    ) -> redis::RedisResult<Arc<Self>> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let presence = Arc::new(Self {
            node,
            conn,
            local: Mutex::new(HashMap::new()),
            rejoined: Mutex::new(None),
            topic_leaves: Mutex::new(Vec::new()),
            topic_sessions: Mutex::new(HashMap::new()),
            clock,
            unsent: Mutex::new(VecDeque::new()),
            known: Mutex::new(HashMap::new()),
            outage: AtomicBool::new(false),
            rewrite: AtomicBool::new(false),
            open: Script::new(OPEN_LUA),
            close: Script::new(CLOSE_LUA),
            settle: Script::new(SETTLE_LUA),
            sweep: Script::new(SWEEP_LUA),
            sweep_topics: Script::new(SWEEP_TOPICS_LUA),
            forget: Script::new(FORGET_LUA),
        });
        presence.beat().await?;
        Ok(presence)
    }

    /// Adds one connection of `user` on this node; `true` if the user was offline
    /// everywhere until now.
    async fn send_open(&self, user: UserId) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let existed: i64 = self
            .open
            .key(user_key(user))
            .key(node_users_key(&self.node))
            .arg(&self.node)
            .arg(user.0)
            .invoke_async(&mut conn)
            .await?;
        self.know([(user, true)]);
        Ok(existed == 0)
    }

    /// Removes one connection of `user` on this node; a ticket if it was the user's
    /// last anywhere.
    async fn send_close(&self, user: UserId) -> redis::RedisResult<Option<Ticket>> {
        let mut conn = self.conn.clone();
        let generation: i64 = self
            .close
            .key(user_key(user))
            .arg(&self.node)
            .invoke_async(&mut conn)
            .await?;
        Ok((generation >= 0).then(|| Ticket::new(generation as u64)))
    }

    /// Takes `user` offline if no connection opened since `ticket`; `true` if it did.
    async fn send_settle(&self, user: UserId, ticket: Ticket) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let settled: i64 = self
            .settle
            .key(user_key(user))
            .key(node_users_key(&self.node))
            .arg(ticket.get())
            .arg(user.0)
            .invoke_async(&mut conn)
            .await?;
        if settled == 1 {
            self.know([(user, false)]);
        }
        Ok(settled == 1)
    }

    fn know(&self, bits: impl IntoIterator<Item = (UserId, bool)>) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(bits);
    }

    /// Online as far as this node knows without Redis: connected here, or online at
    /// Redis's last answer.
    fn guess(&self, users: &[UserId]) -> HashSet<UserId> {
        let local = self.local();
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        users
            .iter()
            .copied()
            .filter(|u| local.contains_key(u) || known.get(u) == Some(&true))
            .collect()
    }

    /// Redis did not answer the heartbeat or the sweep.
    fn unreachable(&self) {
        self.outage.store(true, Ordering::Release);
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, VecDeque<Unsent>> {
        self.unsent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, change: Unsent) {
        self.unsent().push_back(change);
    }

    /// Queues `change` if earlier ones still wait; `true` if it was queued.
    fn queue_if_behind(&self, change: Unsent) -> bool {
        let mut unsent = self.unsent();
        if unsent.is_empty() {
            return false;
        }
        unsent.push_back(change);
        true
    }

    /// Sends the queued count changes, oldest first, until Redis fails again; returns
    /// what they mean for the chat.
    pub(crate) async fn replay(&self) -> Vec<Replayed> {
        let mut out = Vec::new();
        loop {
            let Some(change) = self.unsent().front().copied() else {
                return out;
            };
            let sent = match change {
                Unsent::Open(user) => self
                    .send_open(user)
                    .await
                    .map(|came| came.then_some(Replayed::CameOnline(user))),
                Unsent::Close(user) => self
                    .send_close(user)
                    .await
                    .map(|ticket| ticket.map(|t| Replayed::LastClosed(user, t))),
                Unsent::Settle(user, ticket) => self
                    .send_settle(user, ticket)
                    .await
                    .map(|settled| settled.then_some(Replayed::WentOffline(user))),
            };
            match sent {
                Ok(replayed) => {
                    self.unsent().pop_front();
                    out.extend(replayed);
                }
                Err(_) => return out,
            }
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, usize>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refreshes this node's heartbeat; if it had expired (this node was swept, or
    /// Redis lost it), starts a new epoch: this node's connections are written whole.
    async fn beat(&self) -> redis::RedisResult<Vec<Replayed>> {
        let mut conn = self.conn.clone();
        let connections: usize = self.local().values().sum();
        let previous: Option<String> = redis::cmd("SET")
            .arg(heartbeat_key(&self.node))
            .arg(connections)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        let _: i64 = redis::cmd("SADD")
            .arg(NODES_KEY)
            .arg(&self.node)
            .query_async(&mut conn)
            .await?;
        let back = self.outage.swap(false, Ordering::AcqRel);
        if previous.is_none() || back {
            // Others may have lost their heartbeat in the same outage: they get one TTL
            // to beat again before this node sweeps anybody.
            *self.rejoined.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.clock.instant());
        }
        if previous.is_none() {
            // Until the rewrite below succeeds (Redis may fail again halfway).
            self.rewrite.store(true, Ordering::Release);
        }
        let mut replayed = Vec::new();
        if self.rewrite.load(Ordering::Acquire) {
            self.rewrite_whole(&mut conn, &mut replayed).await?;
            self.rewrite.store(false, Ordering::Release);
        }
        Ok(replayed)
    }

    /// A new epoch: writes this node's counts whole, from its own connections.
    async fn rewrite_whole(
        &self,
        conn: &mut ConnectionManager,
        replayed: &mut Vec<Replayed>,
    ) -> redis::RedisResult<()> {
        let local: Vec<(UserId, usize)> = self.local().iter().map(|(u, n)| (*u, *n)).collect();
        {
            // Queued changes are in the counts already. A user whose dropped change
            // left them without connections here may still be shown online: checked
            // like an announcement.
            let dropped: Vec<UserId> = self.unsent().drain(..).map(Unsent::user).collect();
            replayed.extend(
                dropped
                    .into_iter()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .filter(|u| !self.local().contains_key(u))
                    .map(Replayed::InDoubt),
            );
        }
        // Fields of the epoch before, of users whose connections here closed
        // while Redis was away (kept by AOF, not swept yet): gone, and the grace
        // of those left without connections starts now.
        let mut forget = self.forget.key(node_users_key(&self.node));
        forget.arg(&self.node);
        for (user, _) in &local {
            forget.arg(user.0);
        }
        let closed: Vec<i64> = forget.invoke_async(conn).await?;
        for pair in closed.chunks_exact(2) {
            replayed.push(Replayed::LastClosed(
                UserId(pair[0]),
                Ticket::new(pair[1] as u64),
            ));
        }
        for (user, count) in local {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .exists(user_key(user))
                .hset(user_key(user), format!("n:{}", self.node), count)
                .ignore()
                .hincr(user_key(user), "gen", 1)
                .ignore()
                .sadd(node_users_key(&self.node), user.0)
                .ignore();
            let (existed,): (bool,) = pipe.query_async(conn).await?;
            self.know([(user, true)]);
            if !existed {
                // Swept offline while this node was cut off: online again.
                replayed.push(Replayed::CameOnline(user));
            }
        }
        Ok(())
    }

    /// Removes the connections of nodes whose heartbeat expired; returns the users who
    /// are now offline everywhere.
    async fn sweep_dead(&self) -> redis::RedisResult<Vec<UserId>> {
        let rejoined = *self.rejoined.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.instant();
        let held = rejoined.is_some_and(|at| now.saturating_duration_since(at) < NODE_TTL);
        // After a failure, wait until a heartbeat reached Redis again (and then one TTL).
        if held || self.outage.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(NODES_KEY)
            .query_async(&mut conn)
            .await?;
        let mut gone = Vec::new();
        for node in nodes.iter().filter(|n| **n != self.node) {
            // The node's topic subscribers first: the sweep below forgets the node.
            let left: Vec<String> = self
                .sweep_topics
                .key(heartbeat_key(node))
                .key(node_topics_key(node))
                .arg(node)
                .invoke_async(&mut conn)
                .await?;
            let mut left = left.into_iter();
            let mut leaves = Vec::new();
            while let (Some(key), Some(value)) = (left.next(), left.next()) {
                let scope = key
                    .strip_prefix("chorus:tp:")
                    .and_then(|s| Scope::parse(s).ok());
                if let (Some(scope), Ok(subscriber)) = (scope, serde_json::from_str(&value)) {
                    leaves.push((scope, subscriber));
                }
            }
            lock_unpoisoned(&self.topic_leaves).extend(leaves);
            let users: Vec<i64> = self
                .sweep
                .key(heartbeat_key(node))
                .key(node_users_key(node))
                .key(NODES_KEY)
                .arg(node)
                .invoke_async(&mut conn)
                .await?;
            if !users.is_empty() {
                tracing::info!(node, users = users.len(), "swept a dead node's connections");
            }
            gone.extend(users.into_iter().map(UserId));
        }
        self.know(gone.iter().map(|u| (*u, false)));
        Ok(gone)
    }
}

/// The subscribers of a topic that keeps presence: field `<node>|<session_id>` → the
/// subscriber's JSON (and `chorus:tpn:<node>`: the topics a node has subscribers
/// in). A dead node's fields are left out of every read at once, and removed by the
/// sweep that forgets the node, which announces their leaves.
fn topic_key(scope: &Scope) -> String {
    format!("chorus:tp:{scope}")
}

#[async_trait]
impl PresenceTracker for RedisPresence {
    fn shared(&self) -> bool {
        true
    }

    async fn topics_changed(&self, changes: &[TopicMove<'_>]) {
        if changes.is_empty() {
            return;
        }
        // One round trip for all of them: while Redis is slow or away, the changes
        // queued on this node cost one timeout, not one each.
        let mut pipe = redis::pipe();
        pipe.atomic();
        {
            let mut sessions = lock_unpoisoned(&self.topic_sessions);
            for change in changes {
                let key = topic_key(change.scope);
                let field = format!("{}|{}", self.node, change.subscriber.session_id);
                if change.joined {
                    let Ok(value) = serde_json::to_string(change.subscriber) else {
                        continue;
                    };
                    pipe.cmd("HSET").arg(&key).arg(field).arg(value).ignore();
                    // The node's topics, for the sweep of a node that died (again at
                    // each join: a sweep that took this node for dead emptied the set).
                    pipe.cmd("SADD")
                        .arg(node_topics_key(&self.node))
                        .arg(&key)
                        .ignore();
                    sessions
                        .entry(key)
                        .or_default()
                        .insert(change.subscriber.session_id.clone());
                } else {
                    pipe.cmd("HDEL").arg(&key).arg(field).ignore();
                    let last = sessions.get_mut(&key).is_some_and(|of_topic| {
                        of_topic.remove(&change.subscriber.session_id) && of_topic.is_empty()
                    });
                    if last {
                        sessions.remove(&key);
                        pipe.cmd("SREM")
                            .arg(node_topics_key(&self.node))
                            .arg(&key)
                            .ignore();
                    }
                }
            }
        }
        let mut conn = self.conn.clone();
        let recorded: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        if let Err(err) = recorded {
            tracing::warn!(changes = changes.len(), cause = %err, "topic presence: joins and leaves not recorded");
        }
    }

    async fn topic_subscribers(&self, scope: &Scope) -> Option<Vec<TopicSubscriber>> {
        let key = topic_key(scope);
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = match redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
        {
            Ok(all) => all,
            Err(err) => {
                tracing::warn!(%scope, cause = %err, "topic presence: read from this node only");
                return None;
            }
        };
        // Which nodes are alive: this one, and those whose heartbeat has not lapsed.
        let mut alive: HashMap<&str, bool> = HashMap::new();
        alive.insert(self.node.as_str(), true);
        let mut out = Vec::with_capacity(all.len());
        for (field, value) in &all {
            let node = field.split('|').next().unwrap_or_default();
            let live = match alive.get(node) {
                Some(&live) => live,
                None => {
                    let live = redis::cmd("EXISTS")
                        .arg(heartbeat_key(node))
                        .query_async::<bool>(&mut conn)
                        .await
                        .unwrap_or(true);
                    alive.insert(node, live);
                    live
                }
            };
            // Left out, not removed: the sweep that forgets the node removes its
            // fields and announces their leaves.
            if !live {
                continue;
            }
            if let Ok(subscriber) = serde_json::from_str(value) {
                out.push(subscriber);
            }
        }
        Some(out)
    }

    async fn nodes(&self) -> Vec<NodeStat> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = match redis::cmd("SMEMBERS")
            .arg(NODES_KEY)
            .query_async(&mut conn)
            .await
        {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(cause = %err, "presence: Redis unreachable");
                return Vec::new();
            }
        };
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            let beat: redis::RedisResult<Option<u64>> = redis::cmd("GET")
                .arg(heartbeat_key(&id))
                .query_async(&mut conn)
                .await;
            // A node without a heartbeat is dead and about to be swept.
            if let Ok(Some(connections)) = beat {
                nodes.push(NodeStat {
                    this: id == self.node,
                    id,
                    connections,
                });
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    async fn open(&self, user: UserId) -> bool {
        *self.local().entry(user).or_default() += 1;
        if self.queue_if_behind(Unsent::Open(user)) {
            return false;
        }
        match self.send_open(user).await {
            Ok(came_online) => came_online,
            Err(err) => {
                tracing::warn!(%user, cause = %err, "presence: Redis unreachable; count queued");
                self.queue(Unsent::Open(user));
                false
            }
        }
    }

    async fn close(&self, user: UserId) -> Option<Ticket> {
        {
            let mut local = self.local();
            if let Some(n) = local.get_mut(&user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    local.remove(&user);
                }
            }
        }
        if self.queue_if_behind(Unsent::Close(user)) {
            return None;
        }
        match self.send_close(user).await {
            Ok(ticket) => ticket,
            Err(err) => {
                tracing::warn!(%user, cause = %err, "presence: Redis unreachable; count queued");
                self.queue(Unsent::Close(user));
                None
            }
        }
    }

    /// A settle that cannot reach Redis waits in line with the count changes and is
    /// replayed with them ([`Replayed::WentOffline`]): the user is not announced
    /// offline while Redis cannot say so.
    async fn settle(&self, user: UserId, ticket: Ticket) -> bool {
        if self.local().contains_key(&user) {
            return false; // a connection opened here since; its count may be on its way
        }
        if self.queue_if_behind(Unsent::Settle(user, ticket)) {
            return false;
        }
        match self.send_settle(user, ticket).await {
            Ok(settled) => settled,
            Err(err) => {
                tracing::warn!(%user, cause = %err, "presence: Redis unreachable; settle queued");
                self.queue(Unsent::Settle(user, ticket));
                false
            }
        }
    }

    async fn is_online(&self, user: UserId) -> bool {
        self.online_among(&[user]).await.contains(&user)
    }

    async fn check_online(&self, users: &[UserId]) -> Option<HashSet<UserId>> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for &user in users {
            pipe.exists(user_key(user));
        }
        let found: Vec<bool> = pipe.query_async(&mut conn).await.ok()?;
        self.know(users.iter().copied().zip(found.iter().copied()));
        Some(
            users
                .iter()
                .zip(found)
                .filter_map(|(u, online)| online.then_some(*u))
                .collect(),
        )
    }

    /// A user is connected while some node has a `n:<node>` field in their hash (the
    /// key alone also exists during the offline grace). When Redis is unreachable,
    /// those connected to this node: a woken agent connected elsewhere then gets a
    /// webhook, which it deduplicates, rather than nothing.
    async fn connected_among(&self, users: &[UserId]) -> HashSet<UserId> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for &user in users {
            pipe.hkeys(user_key(user));
        }
        let found: redis::RedisResult<Vec<Vec<String>>> = pipe.query_async(&mut conn).await;
        match found {
            Ok(found) => users
                .iter()
                .zip(found)
                .filter(|(_, fields)| fields.iter().any(|f| f.starts_with("n:")))
                .map(|(u, _)| *u)
                .collect(),
            Err(err) => {
                tracing::warn!(cause = %err, "presence: Redis unreachable");
                let local = self.local();
                users
                    .iter()
                    .copied()
                    .filter(|u| local.contains_key(u))
                    .collect()
            }
        }
    }

    /// While Redis is unreachable, what this node knows: its own connections, and the
    /// last answer Redis gave about each user (a short outage shows nobody offline).
    async fn online_among(&self, users: &[UserId]) -> HashSet<UserId> {
        match self.check_online(users).await {
            Some(online) => online,
            None => {
                tracing::warn!("presence: Redis unreachable; answering from this node's view");
                self.guess(users)
            }
        }
    }
}

impl Chat {
    /// Keeps this node's heartbeat fresh and announces the users of dead nodes offline.
    /// Runs until the chat shuts down (or is dropped).
    pub fn spawn_presence_sweeper(self: &Arc<Self>, presence: Arc<RedisPresence>) {
        let chat = Arc::downgrade(self);
        let chat_of_beat = chat.clone();
        // Two tasks: announcing a big dead node's users offline takes a while, and this
        // node's own heartbeat must not wait for it (or others would sweep this node).
        let beating = presence.clone();
        let stop = self.background.stop().clone();
        let stop_beating = stop.clone();
        self.background.spawn(async move {
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = sweep.tick() => {}
                    () = stop.cancelled() => return,
                }
                let Some(chat) = chat.upgrade() else { return };
                match presence.sweep_dead().await {
                    Ok(gone) => {
                        for user in gone {
                            chat.presence_expired(user, chat.now()).await;
                        }
                        let leaves = std::mem::take(&mut *lock_unpoisoned(&presence.topic_leaves));
                        for (scope, subscriber) in leaves {
                            chat.topic_subscriber_left(scope, subscriber).await;
                        }
                    }
                    Err(err) => {
                        presence.unreachable();
                        tracing::warn!(cause = %err, "presence sweep failed");
                    }
                }
            }
        });
        // Checks this node's announcements once they are in the stream.
        self.presence_batch.remember_published();
        let chat_of_check = Arc::downgrade(self);
        let stop_checking = self.background.stop().clone();
        self.background.spawn(async move {
            let mut check = tokio::time::interval(VERIFY_EVERY);
            loop {
                tokio::select! {
                    _ = check.tick() => {}
                    () = stop_checking.cancelled() => return,
                }
                let Some(chat) = chat_of_check.upgrade() else {
                    return;
                };
                chat.verify_presence().await;
            }
        });
        self.background.spawn(async move {
            let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                tokio::select! {
                    _ = beat.tick() => {}
                    () = stop_beating.cancelled() => return,
                }
                if chat_of_beat.strong_count() == 0 {
                    return;
                }
                let mut replayed = match beating.beat().await {
                    Ok(replayed) => replayed,
                    Err(err) => {
                        beating.unreachable();
                        tracing::warn!(cause = %err, "presence heartbeat failed");
                        continue;
                    }
                };
                // Counts that missed Redis while it was away, now that it answers.
                replayed.extend(beating.replay().await);
                let Some(chat) = chat_of_beat.upgrade() else {
                    return;
                };
                for replayed in replayed {
                    match replayed {
                        Replayed::CameOnline(user) => chat.presence_came_online(user).await,
                        Replayed::LastClosed(user, ticket) => chat.start_grace(user, ticket),
                        Replayed::WentOffline(user) => {
                            chat.presence_expired(user, chat.now()).await;
                        }
                        Replayed::InDoubt(user) => chat.presence_in_doubt(user),
                    }
                }
            }
        });
    }
}
