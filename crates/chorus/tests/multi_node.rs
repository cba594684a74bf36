//! Several `chorus serve` processes sharing one database and one Redis (SPEC §3):
//! fanout across nodes, a node killed mid-burst, Redis restarted mid-burst, and
//! agent-aware delivery (skip, wake, one webhook sender) across nodes.
//!
//! Each test starts its own `redis-server` on a free loopback port (with AOF, as a
//! deployment should run it) and its own nodes. The database is a fresh PostgreSQL
//! database when `CHORUS_TEST_POSTGRES_URL` is set (`scripts/test` starts one), else a
//! SQLite file shared by the nodes. Every test needs `redis-server`, so each is
//! `#[ignore]`d: a plain `cargo nextest run` reports them skipped, never passed;
//! `scripts/test` (services started) runs them with `--run-ignored all`, and without
//! `redis-server` they fail.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::redis::Redis;
use common::{call, free_addr};

const ADMIN: &str = "multi-node-admin";
const WAIT: Duration = Duration::from_secs(30);

fn redis_server() -> PathBuf {
    common::redis::redis_server().expect(IGNORED_WITHOUT_REDIS)
}

/// Why every test here is `#[ignore]`d by default: reported as skipped (never passed)
/// on a machine without `redis-server`; `scripts/test` runs them (`--run-ignored all`).
const IGNORED_WITHOUT_REDIS: &str =
    "needs redis-server (CHORUS_TEST_REDIS_SERVER or /usr/bin/redis-server): scripts/test runs it";

/// The database the nodes share.
async fn shared_database(dir: &Path) -> String {
    match std::env::var("CHORUS_TEST_POSTGRES_URL") {
        Ok(base) => {
            let name = format!("chorus_multi_{:x}", rand_suffix());
            let status = Command::new("psql")
                .arg(&base)
                .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
                .status()
                .await
                .unwrap();
            assert!(status.success(), "creating database {name}");
            let (prefix, _) = base.rsplit_once('/').unwrap();
            format!("{prefix}/{name}")
        }
        Err(_) => format!("sqlite://{}?mode=rwc", dir.join("shared.db").display()),
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id())
}

struct Node {
    addr: SocketAddr,
    child: Child,
    /// The node's log in `_data`, when `CHORUS_TEST_NODE_LOG` is not set: its last
    /// lines are shown if the test fails (see [`node_log`]).
    log: Option<PathBuf>,
    /// The node's own data directory (its admin token file), apart from the shared
    /// database.
    _data: tempfile::TempDir,
}

async fn start_node(database: &str, redis: &str) -> Node {
    start_node_with(database, redis, "").await
}

/// [`start_node`] with `config` added to the node's TOML configuration.
async fn start_node_with(database: &str, redis: &str, config: &str) -> Node {
    let addr = free_addr();
    let data = tempfile::tempdir().unwrap();
    let (stdout, log) = node_log(addr, data.path());
    // `info` adds a node's sweeps and Redis recoveries: a few lines a test.
    let level = std::env::var("CHORUS_TEST_NODE_LOG_LEVEL")
        .unwrap_or_else(|_| if log.is_some() { "info" } else { "warn" }.to_owned());
    // The webhook receivers of these tests listen on loopback.
    let toml = data.path().join("chorus.toml");
    std::fs::write(&toml, format!("webhook_allow_private = true\n{config}")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .env("CHORUS_DATA_DIR", data.path())
        .env("CHORUS_CONFIG", &toml)
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--admin-token",
            ADMIN,
        ])
        .env("CHORUS_DATABASE_URL", database)
        .env("CHORUS_REDIS_URL", redis)
        .env("CHORUS_HTTP_PER_SEC", "0")
        .env("CHORUS_LOG", level)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        wait_ready(addr, true).await,
        "node on {addr} did not become ready"
    );
    Node {
        addr,
        child,
        log,
        _data: data,
    }
}

/// Where a node's log goes, at `CHORUS_TEST_NODE_LOG_LEVEL`: with
/// `CHORUS_TEST_NODE_LOG=<dir>`, to `<dir>/node-<port>.log`, kept (default `warn`);
/// otherwise to a file in the node's data directory `data` (the `Some` path, default
/// `info`), removed with it, whose last [`LOG_TAIL`] lines a failing test prints.
fn node_log(addr: SocketAddr, data: &Path) -> (Stdio, Option<PathBuf>) {
    let Some(dir) = std::env::var_os("CHORUS_TEST_NODE_LOG") else {
        let path = data.join("node.log");
        return (std::fs::File::create(&path).unwrap().into(), Some(path));
    };
    let path = PathBuf::from(dir).join(format!("node-{}.log", addr.port()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    (file.map_or_else(|_| Stdio::null(), Stdio::from), None)
}

/// How many of a node's last log lines a failing test shows.
const LOG_TAIL: usize = 200;

impl Drop for Node {
    /// A test failing (panicking) shows the end of the node's log, headed by its address
    /// (which the tests' messages name nodes by); the runner shows it with the failure.
    fn drop(&mut self) {
        let Some(path) = self.log.as_ref().filter(|_| std::thread::panicking()) else {
            return;
        };
        let text = std::fs::read(path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
        eprintln!(
            "---- log of node {}: its last {} of {} lines ----",
            self.addr,
            tail.len(),
            lines.len()
        );
        for line in tail {
            eprintln!("{line}");
        }
        eprintln!("---- end of the log of node {} ----", self.addr);
    }
}

/// A Redis of its own, a shared database, and `n` nodes on them.
struct Cluster {
    redis: Redis,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

async fn cluster(n: usize) -> Cluster {
    cluster_with(n, "").await
}

/// [`cluster`] whose nodes have `config` in their TOML configuration.
async fn cluster_with(n: usize, config: &str) -> Cluster {
    let redis = Redis::start(redis_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = shared_database(dir.path()).await;
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(start_node_with(&db, &redis.url(), config).await);
    }
    Cluster {
        redis,
        nodes,
        _dir: dir,
    }
}

/// Waits until `/readyz` answers `ready` (true) or not (false); `false` on timeout.
async fn wait_ready(addr: SocketAddr, ready: bool) -> bool {
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(resp) = http.get(format!("http://{addr}/readyz")).send().await
            && resp.status().is_success() == ready
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A workspace with `users` members, all in `channels` channels.
struct Team {
    workspace: i64,
    users: Vec<i64>,
    tokens: Vec<String>,
    channels: Vec<i64>,
}

async fn setup(addr: SocketAddr, users: usize, channels: usize) -> Team {
    let ws = call(addr, ADMIN, "/api/v1/workspaces", json!({"name": "acme"})).await["id"]
        .as_i64()
        .unwrap();
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for i in 0..users {
        let user = call(
            addr,
            ADMIN,
            "/api/v1/users",
            json!({"name": format!("u{i}")}),
        )
        .await;
        let id = user["user"]["id"].as_i64().unwrap();
        call(
            addr,
            ADMIN,
            &format!("/api/v1/workspaces/{ws}/members"),
            json!({"user_id": id}),
        )
        .await;
        tokens.push(user["token"].as_str().unwrap().to_owned());
        ids.push(id);
    }
    let mut chans = Vec::new();
    for c in 0..channels {
        let ch = call(
            addr,
            ADMIN,
            &format!("/api/v1/workspaces/{ws}/channels"),
            json!({"name": format!("c{c}"), "kind": "private", "member_ids": ids}),
        )
        .await;
        chans.push(ch["id"].as_i64().unwrap());
    }
    Team {
        workspace: ws,
        users: ids,
        tokens,
        channels: chans,
    }
}

/// What one subscriber received: message ids per channel, in arrival order.
/// What a subscriber got: the ids of `message.created` per channel, and how many times
/// it went live (a `hello`, or the ack of a `resume`).
#[derive(Default)]
struct Log {
    messages: HashMap<i64, Vec<i64>>,
    live: usize,
}

type Received = Arc<Mutex<Log>>;

/// A raw protocol client that follows a list of nodes: when its connection ends it
/// reconnects to the next node with `?resume=1` and resumes from the last offset it
/// holds of each scope. It never deduplicates: a duplicate would show in `received`.
fn subscriber(nodes: Vec<SocketAddr>, token: String) -> (Received, tokio::task::JoinHandle<()>) {
    let received: Received = Arc::default();
    let out = received.clone();
    let task = tokio::spawn(async move {
        let mut positions: BTreeMap<String, u64> = BTreeMap::new();
        let mut node = 0;
        loop {
            let resume = !positions.is_empty();
            let url = format!(
                "ws://{}/ws?token={token}{}",
                nodes[node % nodes.len()],
                if resume { "&resume=1" } else { "" }
            );
            node += 1;
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if resume {
                let frame = json!({"op": "resume", "id": 1, "positions": positions});
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    continue;
                }
            }
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                match v["op"].as_str() {
                    Some("hello") if !resume => {
                        for (scope, offset) in v["offsets"].as_object().unwrap() {
                            positions.insert(scope.clone(), offset.as_u64().unwrap());
                        }
                        out.lock().unwrap().live += 1;
                    }
                    Some("ack") if resume => {
                        for (scope, r) in v["scopes"].as_object().unwrap() {
                            assert_eq!(r["recovered"], true, "resume of {scope}: {v}");
                        }
                        out.lock().unwrap().live += 1;
                    }
                    Some("event") => {
                        let scope = v["scope"].as_str().unwrap().to_owned();
                        if let Some(offset) = v["offset"].as_u64() {
                            positions.insert(scope, offset);
                        }
                        if v["type"] == "message.created" {
                            let channel = v["data"]["channel_id"].as_i64().unwrap();
                            let id = v["data"]["id"].as_i64().unwrap();
                            let mut log = out.lock().unwrap();
                            log.messages.entry(channel).or_default().push(id);
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    (received, task)
}

/// Sends one last message to each channel (through `via`, as `token`), waits until every
/// subscriber has it, then checks that each got exactly the sent ids, in order, per
/// channel. A connection gets a channel's events in offset order, replays included, so
/// a subscriber holding the last message holds every duplicate of an earlier one it
/// would ever get: the last message is the barrier.
async fn assert_all_received(
    subs: &[Received],
    sent: &HashMap<i64, Vec<i64>>,
    via: SocketAddr,
    token: &str,
) {
    let mut sent = sent.clone();
    for (channel, ids) in &mut sent {
        let path = format!("/api/v1/channels/{channel}/messages");
        let last = call(via, token, &path, json!({"text": "the last"})).await;
        ids.push(last["id"].as_i64().unwrap());
    }
    let done = tokio::time::timeout(WAIT, async {
        loop {
            let complete = subs.iter().all(|r| {
                let r = r.lock().unwrap();
                sent.iter().all(|(channel, ids)| {
                    let got = r
                        .messages
                        .get(channel)
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    ids.last().is_some_and(|last| got.contains(last))
                })
            });
            if complete {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for (i, r) in subs.iter().enumerate() {
        let r = r.lock().unwrap();
        for (channel, ids) in &sent {
            let got = r.messages.get(channel).cloned().unwrap_or_default();
            assert_eq!(
                &got,
                ids,
                "subscriber {i}, channel {channel}: every message once, in order ({})",
                if done.is_ok() {
                    "complete"
                } else {
                    "timed out"
                }
            );
        }
    }
}

/// Waits until each subscriber's connection said hello (its subscriptions are live).
async fn wait_connected(subs: &[Received]) {
    tokio::time::timeout(WAIT, async {
        while !subs.iter().all(|r| r.lock().unwrap().live > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every subscriber said hello");
}

#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn three_nodes_deliver_every_message_once_in_order() {
    let Cluster {
        redis: _redis,
        nodes,
        _dir,
    } = cluster(3).await;
    let Team {
        tokens, channels, ..
    } = setup(nodes[0].addr, 6, 2).await;

    let mut subs = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let (received, _task) = subscriber(vec![nodes[i % 3].addr], token.clone());
        subs.push(received);
    }
    wait_connected(&subs).await;

    // Any node lists every node and its connections (from the heartbeats).
    let listed = tokio::time::timeout(WAIT, async {
        loop {
            let stats: Value = reqwest::Client::new()
                .get(format!("http://{}/api/v1/realtime/stats", nodes[1].addr))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let listed = stats["nodes"].as_array().cloned().unwrap_or_default();
            let conns: u64 = listed
                .iter()
                .filter_map(|n| n["connections"].as_u64())
                .sum();
            if listed.len() == 3 && conns == tokens.len() as u64 {
                return listed;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("three nodes with two connections each");
    assert_eq!(listed.iter().filter(|n| n["this"] == true).count(), 1);

    // Sent through every node in turn, by one author, one after the other.
    let mut sent: HashMap<i64, Vec<i64>> = HashMap::new();
    for i in 0..150 {
        let channel = channels[i % 2];
        let m = call(
            nodes[i % 3].addr,
            &tokens[0],
            &format!("/api/v1/channels/{channel}/messages"),
            json!({"text": format!("m{i}")}),
        )
        .await;
        sent.entry(channel)
            .or_default()
            .push(m["id"].as_i64().unwrap());
    }
    assert_all_received(&subs, &sent, nodes[0].addr, &tokens[0]).await;
}

#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_node_killed_mid_burst_loses_nothing_for_its_clients() {
    let Cluster {
        redis: _redis,
        mut nodes,
        _dir,
    } = cluster(3).await;
    let Team {
        tokens, channels, ..
    } = setup(nodes[2].addr, 4, 2).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();

    // Two clients on node 0 (to be killed), two on node 1; each falls over to the next.
    let mut subs = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let first = i / 2;
        let order = vec![addrs[first], addrs[(first + 1) % 3]];
        let (received, _task) = subscriber(order, token.clone());
        subs.push(received);
    }
    wait_connected(&subs).await;

    let mut sent: HashMap<i64, Vec<i64>> = HashMap::new();
    for i in 0..300 {
        if i == 100 {
            nodes[0].child.start_kill().unwrap(); // SIGKILL: no goodbye
        }
        let channel = channels[i % 2];
        let m = call(
            addrs[2],
            &tokens[3],
            &format!("/api/v1/channels/{channel}/messages"),
            json!({"text": format!("m{i}")}),
        )
        .await;
        sent.entry(channel)
            .or_default()
            .push(m["id"].as_i64().unwrap());
    }
    assert_all_received(&subs, &sent, addrs[2], &tokens[3]).await;
}

#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_redis_restart_mid_burst_loses_and_duplicates_nothing() {
    let Cluster {
        mut redis,
        nodes,
        _dir,
    } = cluster(2).await;
    let Team {
        tokens, channels, ..
    } = setup(nodes[0].addr, 4, 2).await;
    let mut subs = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let (received, _task) = subscriber(vec![nodes[i % 2].addr], token.clone());
        subs.push(received);
    }
    wait_connected(&subs).await;

    let mut sent: HashMap<i64, Vec<i64>> = HashMap::new();
    for i in 0..300 {
        if i == 100 {
            redis.down().await;
        }
        if i == 200 {
            // Sends went on (they are committed to the database); the events wait.
            assert!(
                wait_ready(nodes[0].addr, false).await,
                "a node without Redis reports not ready"
            );
            redis.up().await;
        }
        let channel = channels[i % 2];
        let m = call(
            nodes[0].addr,
            &tokens[0],
            &format!("/api/v1/channels/{channel}/messages"),
            json!({"text": format!("m{i}")}),
        )
        .await;
        sent.entry(channel)
            .or_default()
            .push(m["id"].as_i64().unwrap());
    }
    assert_all_received(&subs, &sent, nodes[0].addr, &tokens[0]).await;
    for node in &nodes {
        assert!(
            wait_ready(node.addr, true).await,
            "ready again after Redis returned"
        );
    }
}

#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_user_only_on_a_killed_node_goes_offline_everywhere() {
    let Cluster {
        redis: _redis,
        mut nodes,
        _dir,
    } = cluster(3).await;
    let team = setup(nodes[2].addr, 2, 0).await;
    let (x, x_token) = (team.users[0], team.tokens[0].clone());
    let presence_of_x = async |node: SocketAddr| -> bool {
        let all: Value = reqwest::Client::new()
            .get(format!(
                "http://{node}/api/v1/workspaces/{}/presence",
                team.workspace
            ))
            .bearer_auth(&team.tokens[1])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|p| p["user_id"] == x)
            .map(|p| p["online"] == true)
            .unwrap()
    };

    // Y watches the workspace from node 1.
    let url = format!("ws://{}/ws?token={}", nodes[1].addr, team.tokens[1]);
    let (mut y, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let hello = y.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("hello"));
    // X is connected to node 0 only.
    let url = format!("ws://{}/ws?token={x_token}", nodes[0].addr);
    let (_x_socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();

    let next_presence = async |y: &mut Ws| next_presence_of(y, x).await;
    let online = tokio::time::timeout(WAIT, next_presence(&mut y))
        .await
        .unwrap();
    assert_eq!(
        online["online"], true,
        "X online, seen from node 1: {online}"
    );
    assert!(
        presence_of_x(nodes[2].addr).await,
        "X online, asked on node 2"
    );

    nodes[0].child.start_kill().unwrap(); // SIGKILL: node 0 says no goodbye
    let killed = std::time::Instant::now();
    // The documented bound: heartbeat TTL (6 s) + sweep interval (2 s).
    let offline = tokio::time::timeout(Duration::from_secs(12), next_presence(&mut y))
        .await
        .expect("X goes offline within the bound");
    assert_eq!(offline["online"], false, "{offline}");
    eprintln!("offline announced {:?} after the kill", killed.elapsed());
    assert!(
        !presence_of_x(nodes[2].addr).await,
        "X offline, asked on node 2"
    );
    assert!(
        !presence_of_x(nodes[1].addr).await,
        "X offline, asked on node 1"
    );
}

/// A `presence.batch`'s changes, one `presence.updated` payload per user.
fn presence_batch(data: &Value) -> Vec<Value> {
    let mut changes = Vec::new();
    for group in data["groups"].as_array().unwrap() {
        for user in group["user_ids"].as_array().unwrap() {
            let mut change = group.clone();
            change.as_object_mut().unwrap().remove("user_ids");
            change["user_id"] = user.clone();
            changes.push(change);
        }
    }
    changes
}

/// The next presence change about user `x` that `y` hears.
async fn next_presence_of(y: &mut Ws, x: i64) -> Value {
    loop {
        let frame = y.next().await.unwrap().unwrap();
        let Message::Text(text) = frame else { continue };
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        // One change, or several coalesced into a batch during a burst.
        let changes = match v["type"].as_str() {
            Some("presence.updated") => vec![v["data"].clone()],
            Some("presence.batch") => presence_batch(&v["data"]),
            _ => Vec::new(),
        };
        if let Some(change) = changes.into_iter().find(|p| p["user_id"] == x) {
            return change;
        }
    }
}

#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_close_while_redis_is_away_still_takes_the_user_offline() {
    let Cluster {
        mut redis,
        nodes,
        _dir,
    } = cluster(2).await;
    let team = setup(nodes[0].addr, 2, 0).await;
    let x = team.users[0];
    let mut y = open(nodes[1].addr, &team.tokens[1]).await;
    let x_socket = open(nodes[0].addr, &team.tokens[0]).await;
    let online = tokio::time::timeout(WAIT, next_presence_of(&mut y, x))
        .await
        .expect("X online");
    assert_eq!(online["online"], true, "{online}");

    // X's only connection closes while Redis is away: node 0 cannot count it down. Redis
    // comes back only once node 0 has let the connection go (its count-down follows at
    // once, against the Redis that is still away).
    redis.down().await;
    drop(x_socket);
    let stats_url = format!("http://{}/api/v1/realtime/stats", nodes[0].addr);
    tokio::time::timeout(WAIT, async {
        loop {
            let stats: Value = reqwest::Client::new()
                .get(&stats_url)
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if stats["metrics"]["connections_current"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("node 0 let X's connection go");
    redis.up().await;

    // Once Redis answers, node 0 replays the count; after the grace, X is offline.
    let offline = tokio::time::timeout(Duration::from_secs(20), next_presence_of(&mut y, x))
        .await
        .expect("X goes offline once Redis is back");
    assert_eq!(offline["online"], false, "{offline}");
}

// ---- Agent-aware delivery across nodes ----------------------------------------------

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(addr: SocketAddr, token: &str) -> Ws {
    let url = format!("ws://{addr}/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["op"], "hello");
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// The `wake` of the next `message.created`, which must be message `id`.
async fn wake_of(ws: &mut Ws, id: i64) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["op"] == "event" && v["type"] == "message.created" {
            assert_eq!(v["data"]["id"], id, "{v}");
            return v["wake"].clone();
        }
    }
}

/// Every `message.created` queued for the connection before a ping's ack.
async fn created_before_barrier(ws: &mut Ws) -> Vec<Value> {
    let ping = json!({"op": "ping", "id": "barrier"});
    ws.send(Message::text(ping.to_string())).await.unwrap();
    let mut created = Vec::new();
    loop {
        let v = next_json(ws).await;
        if v["op"] == "ack" && v["id"] == "barrier" {
            return created;
        }
        if v["type"] == "message.created" {
            created.push(v);
        }
    }
}

/// A webhook receiver that answers 200 to everything and counts the requests.
async fn webhook_receiver() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    http_receiver("").await
}

/// [`webhook_receiver`] whose answers carry `body`.
async fn http_receiver(body: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let out = out.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let (head_end, length) = loop {
                    let n = tcp.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = tcp.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let event = head
                    .lines()
                    .find_map(|l| l.strip_prefix("chorus-event-id:"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                out.lock().unwrap().push(event);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn agent_delivery_holds_across_nodes_and_a_webhook_has_one_sender() {
    let bin = redis_server();
    let redis = Redis::start(bin).await;
    let dir = tempfile::tempdir().unwrap();
    let db = shared_database(dir.path()).await;
    let a = start_node(&db, &redis.url()).await;
    let b = start_node(&db, &redis.url()).await;
    let (hook, hits) = webhook_receiver().await;

    // alice (author), bob (off duty), carol (observer), duty-bot (on duty, webhook).
    let ws = call(a.addr, ADMIN, "/api/v1/workspaces", json!({"name": "acme"})).await["id"]
        .as_i64()
        .unwrap();
    let mut users = HashMap::new();
    for (name, body) in [
        ("alice", json!({"name": "alice"})),
        ("bob", json!({"name": "bob"})),
        ("carol", json!({"name": "carol"})),
        (
            "duty-bot",
            json!({"name": "duty-bot", "kind": "agent", "webhook_url": format!("http://{hook}/h")}),
        ),
    ] {
        let user = call(a.addr, ADMIN, "/api/v1/users", body).await;
        let id = user["user"]["id"].as_i64().unwrap();
        call(
            a.addr,
            ADMIN,
            &format!("/api/v1/workspaces/{ws}/members"),
            json!({"user_id": id}),
        )
        .await;
        users.insert(name, (id, user["token"].as_str().unwrap().to_owned()));
    }
    let id = |name: &str| users[name].0;
    let token = |name: &str| users[name].1.clone();
    let ch = call(
        a.addr,
        &token("alice"),
        &format!("/api/v1/workspaces/{ws}/channels"),
        json!({"name": "triage", "policy": "on_duty",
               "member_ids": [id("bob"), id("carol"), id("duty-bot")]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let http = reqwest::Client::new();
    for (path, ids) in [
        (
            format!("/api/v1/channels/{ch}/on-duty"),
            json!([id("duty-bot")]),
        ),
        (
            format!("/api/v1/workspaces/{ws}/observers"),
            json!([id("carol")]),
        ),
    ] {
        let resp = http
            .put(format!("http://{}{path}", b.addr))
            .bearer_auth(ADMIN) // the workspace's owner
            .json(&json!({"user_ids": ids}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}");
    }

    // Everyone listens on node B; alice sends through node A.
    let mut bob = open(b.addr, &token("bob")).await;
    let mut carol = open(b.addr, &token("carol")).await;
    let mut duty = open(b.addr, &token("duty-bot")).await;
    let send = |text: &'static str| {
        let token = token("alice");
        async move {
            call(
                a.addr,
                &token,
                &format!("/api/v1/channels/{ch}/messages"),
                json!({"text": text}),
            )
            .await["id"]
                .as_i64()
                .unwrap()
        }
    };
    let m1 = send("the build is red").await;
    assert_eq!(wake_of(&mut duty, m1).await, true);
    assert_eq!(wake_of(&mut carol, m1).await, false);
    assert!(
        created_before_barrier(&mut bob).await.is_empty(),
        "skip holds on node B"
    );

    // Connected on node B: no webhook from node A. Disconnected: exactly one webhook,
    // though both nodes' workers watch the shared queue.
    duty.close(None).await.unwrap();
    drop(duty);
    let stats_url = format!("http://{}/api/v1/realtime/stats", b.addr);
    for _ in 0..200 {
        let stats: Value = http
            .get(&stats_url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["metrics"]["connections_current"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let m2 = send("still red").await;
    assert_eq!(wake_of(&mut carol, m2).await, false);
    tokio::time::timeout(WAIT, async {
        while hits.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a webhook for the disconnected agent");
    // The shared delivery log is the barrier: one row, delivered at its first attempt,
    // is every request either node's worker makes (they send only pending rows, and a
    // second sender would have recorded a second attempt).
    let log_url = format!(
        "http://{}/api/v1/users/{}/webhook-deliveries",
        a.addr,
        id("duty-bot")
    );
    let log = tokio::time::timeout(WAIT, async {
        loop {
            let log: Value = http
                .get(&log_url)
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if log
                .as_array()
                .is_some_and(|l| l.iter().all(|d| d["status"] != "pending"))
            {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the delivery settled");
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["status"], "delivered", "{log:?}");
    assert_eq!(log[0]["attempts"], 1, "{log:?}");
    assert_eq!(log[0]["event_id"], format!("message.created:{m2}"));
    assert_eq!(
        *hits.lock().unwrap(),
        [format!("message.created:{m2}")],
        "one webhook, for the message sent while the agent was away"
    );
}

// ---- Live authorization across nodes ------------------------------------------------

/// The next event of type `kind` (other frames skipped).
async fn next_event(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["op"] == "event" && v["type"] == kind {
            return v;
        }
    }
}

/// Every frame queued for the connection before a ping's ack.
async fn frames_before_barrier(ws: &mut Ws) -> Vec<Value> {
    let ping = json!({"op": "ping", "id": "barrier"});
    ws.send(Message::text(ping.to_string())).await.unwrap();
    let mut frames = Vec::new();
    loop {
        let v = next_json(ws).await;
        if v["op"] == "ack" && v["id"] == "barrier" {
            return frames;
        }
        frames.push(v);
    }
}

/// Sends a request frame with an id and returns its answer (`ack` or `error`); frames
/// that come before it are dropped (events of a scope may precede its `subscribe` ack).
/// Reads `ws` until its close frame; the frame's code (`None`: a close without one).
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

async fn request(ws: &mut Ws, mut op: Value) -> Value {
    op["id"] = json!("req");
    ws.send(Message::text(op.to_string())).await.unwrap();
    loop {
        let v = next_json(ws).await;
        if v["id"] == "req" {
            return v;
        }
    }
}

/// Sends `text` to channel `ch` through `addr` (a reply when `thread` is given); its id.
async fn post_message(
    addr: SocketAddr,
    token: &str,
    ch: i64,
    text: &str,
    thread: Option<i64>,
) -> i64 {
    call(
        addr,
        token,
        &format!("/api/v1/channels/{ch}/messages"),
        json!({"text": text, "thread_id": thread}),
    )
    .await["id"]
        .as_i64()
        .unwrap()
}

/// A workspace owned by the admin with the named members; their ids and tokens.
async fn team(addr: SocketAddr, names: &[&str]) -> (i64, HashMap<String, (i64, String)>) {
    let ws = call(addr, ADMIN, "/api/v1/workspaces", json!({"name": "acme"})).await["id"]
        .as_i64()
        .unwrap();
    let mut users = HashMap::new();
    for name in names {
        let user = call(addr, ADMIN, "/api/v1/users", json!({ "name": name })).await;
        let id = user["user"]["id"].as_i64().unwrap();
        call(
            addr,
            ADMIN,
            &format!("/api/v1/workspaces/{ws}/members"),
            json!({"user_id": id}),
        )
        .await;
        users.insert(
            (*name).to_owned(),
            (id, user["token"].as_str().unwrap().to_owned()),
        );
    }
    (ws, users)
}

/// bob follows a thread of a private channel on node B; alice removes him from the
/// channel through node A. Node B ends bob's thread panel with `subscription.revoked`,
/// and the thread's next reply — which node B delivers to alice — never reaches bob.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_removal_on_one_node_ends_thread_subscriptions_on_another() {
    let Cluster {
        redis: _redis,
        nodes,
        _dir,
    } = cluster(2).await;
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let (ws, users) = team(a, &["alice", "bob"]).await;
    let (alice, bob_id) = (users["alice"].1.clone(), users["bob"].0);
    let ch = call(
        a,
        &alice,
        &format!("/api/v1/workspaces/{ws}/channels"),
        json!({"name": "secret", "kind": "private", "member_ids": [bob_id]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let post = |text: &'static str, thread: Option<i64>| post_message(a, &alice, ch, text, thread);
    let root = post("root", None).await;
    let thread = format!("thread:{root}");
    let mut bob = open(b, &users["bob"].1).await;
    let mut watcher = open(b, &alice).await;
    for ws in [&mut bob, &mut watcher] {
        let ack = request(ws, json!({"op": "subscribe", "scope": thread})).await;
        assert_eq!(ack["op"], "ack", "{ack}");
    }
    post("before", Some(root)).await;
    let before = next_event(&mut bob, "message.created").await;
    assert_eq!(before["data"]["text"], "before", "{before}");

    remove(
        a,
        &alice,
        &format!("/api/v1/channels/{ch}/members/{bob_id}"),
    )
    .await;
    let revoked = next_event(&mut bob, "subscription.revoked").await;
    assert_eq!(revoked["scope"], thread.as_str(), "{revoked}");
    assert_eq!(revoked["data"]["reason"], "channel_left", "{revoked}");

    let after = post("after", Some(root)).await;
    // Node B has fanned the reply out once alice's connection there has it.
    loop {
        let v = next_event(&mut watcher, "message.created").await;
        if v["scope"] == thread.as_str() && v["data"]["id"] == after {
            break;
        }
    }
    let frames = frames_before_barrier(&mut bob).await;
    assert!(
        frames
            .iter()
            .all(|f| f["scope"] != thread.as_str() && f["scope"] != format!("channel:{ch}")),
        "a removed member still receives the thread on node B: {frames:?}"
    );
}

/// mark (a member) follows a public channel he has not joined and one of its threads on
/// node B; the admin demotes him to guest through node A. Node B ends both
/// subscriptions with `subscription.revoked` (reason `role_changed`), and the next
/// message and reply — which node B delivers to alice — never reach him.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_demotion_on_one_node_ends_subscriptions_a_guest_may_not_hold_on_another() {
    let Cluster {
        redis: _redis,
        nodes,
        _dir,
    } = cluster(2).await;
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let (ws, users) = team(a, &["alice", "mark"]).await;
    let (alice, mark_id) = (users["alice"].1.clone(), users["mark"].0);
    let ch = call(
        a,
        &alice,
        &format!("/api/v1/workspaces/{ws}/channels"),
        json!({"name": "lobby", "kind": "public"}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let post = |text: &'static str, thread: Option<i64>| post_message(a, &alice, ch, text, thread);
    let root = post("root", None).await;
    let (channel, thread) = (format!("channel:{ch}"), format!("thread:{root}"));
    let mut mark = open(b, &users["mark"].1).await;
    let mut watcher = open(b, &alice).await;
    for scope in [&channel, &thread] {
        let ack = request(&mut mark, json!({"op": "subscribe", "scope": scope})).await;
        assert_eq!(ack["op"], "ack", "{ack}");
    }
    let ack = request(&mut watcher, json!({"op": "subscribe", "scope": thread})).await;
    assert_eq!(ack["op"], "ack", "{ack}");

    let demoted = reqwest::Client::new()
        .patch(format!(
            "http://{a}/api/v1/workspaces/{ws}/members/{mark_id}"
        ))
        .bearer_auth(ADMIN)
        .json(&json!({"role": "guest"}))
        .send()
        .await
        .unwrap();
    assert!(demoted.status().is_success(), "{}", demoted.status());
    let mut revoked = Vec::new();
    while revoked.len() < 2 {
        let v = next_event(&mut mark, "subscription.revoked").await;
        assert_eq!(v["data"]["reason"], "role_changed", "{v}");
        revoked.push(v["scope"].as_str().unwrap().to_owned());
    }
    revoked.sort();
    let mut expected = vec![channel.clone(), thread.clone()];
    expected.sort();
    assert_eq!(revoked, expected);

    post("for members", None).await;
    let after = post("after", Some(root)).await;
    loop {
        let v = next_event(&mut watcher, "message.created").await;
        if v["scope"] == thread.as_str() && v["data"]["id"] == after {
            break;
        }
    }
    let frames = frames_before_barrier(&mut mark).await;
    assert!(
        frames
            .iter()
            .all(|f| f["scope"] != thread.as_str() && f["scope"] != channel.as_str()),
        "a guest still receives the public channel on node B: {frames:?}"
    );
}

/// A POST through `addr` as `token`; its status.
async fn post_status(addr: SocketAddr, token: &str, path: &str, body: Value) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The next `kind` event about message `id` (its `message_id`).
async fn event_about(ws: &mut Ws, kind: &str, id: i64) -> Value {
    loop {
        let v = next_event(ws, kind).await;
        if v["data"]["message_id"] == id {
            return v;
        }
    }
}

/// An agent woken by a message sent through node A works on node B: its receipt through
/// B reaches the author on A; a receipt from an agent the message did not wake is
/// refused on B as on A; the author's cancel through A reaches the agent's socket on B
/// as a wake, and a second cancel finds nothing left.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn receipts_and_cancels_cross_nodes_under_the_same_rules() {
    let Cluster {
        redis: _redis,
        nodes,
        _dir,
    } = cluster(2).await;
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let (ws, users) = team(a, &["alice"]).await;
    let alice = users["alice"].1.clone();
    let mut agents = Vec::new();
    for name in ["helper", "other"] {
        let agent = call(
            a,
            ADMIN,
            "/api/v1/users",
            json!({"name": name, "kind": "agent"}),
        )
        .await;
        let id = agent["user"]["id"].as_i64().unwrap();
        call(
            a,
            ADMIN,
            &format!("/api/v1/workspaces/{ws}/members"),
            json!({ "user_id": id }),
        )
        .await;
        agents.push((id, agent["token"].as_str().unwrap().to_owned()));
    }
    let [(helper, helper_token), (_, other_token)] = <[_; 2]>::try_from(agents).unwrap();
    let ch = call(
        a,
        &alice,
        &format!("/api/v1/workspaces/{ws}/channels"),
        json!({"name": "help", "kind": "public", "policy": "mentions",
               "member_ids": [helper]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let mut bot = open(b, &helper_token).await;
    let mut author = open(a, &alice).await;

    let m = post_message(a, &alice, ch, "@helper summarise the week", None).await;
    assert_eq!(
        wake_of(&mut bot, m).await,
        true,
        "the mention wakes helper on B"
    );
    let receipts = format!("/api/v1/messages/{m}/receipts");
    let working = json!({"state": "working"});
    assert_eq!(
        post_status(b, &helper_token, &receipts, working.clone()).await,
        200
    );
    let seen = event_about(&mut author, "receipt.updated", m).await;
    assert_eq!(seen["data"]["user_id"], helper, "{seen}");
    assert_eq!(seen["data"]["state"], "working", "{seen}");
    assert_eq!(
        post_status(b, &other_token, &receipts, working).await,
        403,
        "an agent the message did not wake reports nothing, on any node"
    );

    let cancel = format!("/api/v1/messages/{m}/cancel");
    let resp = call(a, &alice, &cancel, json!({})).await;
    assert_eq!(resp, json!({"cancelled": [helper]}));
    let cancelled = event_about(&mut bot, "turn.cancelled", m).await;
    assert_eq!(cancelled["wake"], true, "{cancelled}");
    assert_eq!(cancelled["data"]["by"], users["alice"].0, "{cancelled}");
    assert_eq!(post_status(b, &alice, &cancel, json!({})).await, 409);
}

/// mark reads a workspace's admins-only topic (`role:admin` namespace) on node B; his
/// demotion through node A ends that subscription on B, an alert published through A
/// after it never reaches him, and he can neither subscribe again nor publish there.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_demotion_on_one_node_ends_a_role_namespace_on_another() {
    let namespaces = r#"
[[namespaces]]
name = "ops"
pattern = "topic:ws.{workspace_id}.ops"
read = "role:admin"
publish = "role:admin"

[[namespaces]]
name = "news"
pattern = "topic:news"
read = "authenticated"
"#;
    let Cluster {
        redis: _redis,
        nodes,
        _dir,
    } = cluster_with(2, namespaces).await;
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let (ws, users) = team(a, &["mark"]).await;
    let (mark_id, mark_token) = users["mark"].clone();
    let member = format!("http://{a}/api/v1/workspaces/{ws}/members/{mark_id}");
    let set_role = |role: &'static str| {
        let member = member.clone();
        async move {
            let resp = reqwest::Client::new()
                .patch(member)
                .bearer_auth(ADMIN)
                .json(&json!({ "role": role }))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
        }
    };
    set_role("admin").await;
    let ops = format!("topic:ws.{ws}.ops");
    let mut mark = open(b, &mark_token).await;
    for scope in [&ops, "topic:news"] {
        let ack = request(&mut mark, json!({"op": "subscribe", "scope": scope})).await;
        assert_eq!(ack["op"], "ack", "{ack}");
    }

    set_role("member").await;
    let revoked = next_event(&mut mark, "subscription.revoked").await;
    assert_eq!(revoked["scope"], ops.as_str(), "{revoked}");
    assert_eq!(revoked["data"]["reason"], "role_changed", "{revoked}");
    // Published through A after the revocation: the alert must not come before the
    // marker that follows it.
    for (scope, kind) in [(ops.as_str(), "alert"), ("topic:news", "marker")] {
        call(
            a,
            ADMIN,
            "/api/v1/publish",
            json!({"scope": scope, "type": kind, "data": {}}),
        )
        .await;
    }
    loop {
        let v = next_json(&mut mark).await;
        assert_ne!(v["type"], "alert", "delivered after the demotion: {v}");
        if v["type"] == "marker" {
            break;
        }
    }
    let again = request(&mut mark, json!({"op": "subscribe", "scope": ops})).await;
    assert_eq!(again["code"], "forbidden", "{again}");
    let publish = json!({"op": "publish", "scope": ops, "type": "alert", "data": {}});
    let refused = request(&mut mark, publish).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
}

// ---- Redis over TLS -----------------------------------------------------------------

/// A CA and a server certificate it signed for 127.0.0.1, as PEM files in `dir`:
/// (`ca.pem`, `server.pem`, `server.key`).
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let files = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&files.0, ca_cert.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

/// Two nodes on a Redis that speaks only TLS (`rediss://`; its certificate is signed by
/// a CA made here and given to the nodes as `CHORUS_REDIS_CA_FILE`): a message sent
/// through node A reaches a client of node B. A node without the CA does not start.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn two_nodes_relay_through_a_tls_only_redis() {
    let bin = redis_server();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let port = free_addr().port();
    let _redis = Command::new(&bin)
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut listening = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(listening, "redis-server with TLS did not start on {port}");
    let url = format!("rediss://127.0.0.1:{port}");
    let db = shared_database(dir.path()).await;

    // Without the CA the certificate is not trusted: the node exits at start.
    let untrusting = tempfile::tempdir().unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["serve", "--listen", &free_addr().to_string()])
        .env("CHORUS_DATA_DIR", untrusting.path())
        .env("CHORUS_DATABASE_URL", &db)
        .env("CHORUS_REDIS_URL", &url)
        .env("CHORUS_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let refused = tokio::time::timeout(WAIT, refused).await.unwrap().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");

    let ca = ca.to_str().unwrap();
    let env = [
        ("CHORUS_DATABASE_URL", db.as_str()),
        ("CHORUS_REDIS_URL", url.as_str()),
        ("CHORUS_REDIS_CA_FILE", ca),
    ];
    let (a, b) = (free_addr(), free_addr());
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _node_a = common::serve(a, data_a.path(), ADMIN, &env).await;
    let _node_b = common::serve(b, data_b.path(), ADMIN, &env).await;
    let team = setup(a, 2, 1).await;
    let ch = team.channels[0];
    let mut on_b = open(b, &team.tokens[1]).await;
    let id = post_message(a, &team.tokens[0], ch, "across nodes, over TLS", None).await;
    let v = next_event(&mut on_b, "message.created").await;
    assert_eq!(v["scope"], format!("channel:{ch}"), "{v}");
    assert_eq!(v["data"]["id"], id, "{v}");
}

// ---- Credentials across nodes ------------------------------------------------------

/// alice holds two tokens, with a socket opened with each on node B; one token is
/// revoked through node A. Node B closes the socket that token opened with 3502 within
/// 2 s (after `credentials.revoked`), and the other socket stays open.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_token_revoked_on_one_node_closes_its_socket_on_another() {
    let cluster = cluster(2).await;
    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let (_ws, users) = team(a, &["alice"]).await;
    let (alice, token) = users["alice"].clone();
    let created = call(
        a,
        &token,
        &format!("/api/v1/users/{alice}/tokens"),
        json!({"name": "tab on B"}),
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    let mut doomed = open(b, created["token"].as_str().unwrap()).await;
    let mut kept = open(b, &token).await;

    let revoked = reqwest::Client::new()
        .delete(format!("http://{a}/api/v1/users/{alice}/tokens/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), reqwest::StatusCode::NO_CONTENT);
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        let event = next_event(&mut doomed, "credentials.revoked").await;
        assert_eq!(event["data"]["token_id"], id, "{event}");
        close_code(&mut doomed).await
    })
    .await
    .expect("node B did not close the revoked token's socket within 2 s");
    assert_eq!(closed, Some(3502));
    let ack = request(&mut kept, json!({"op": "ping"})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
}

/// A user deactivated through node A while Redis is away: node B hears of it only when
/// Redis is back, but meanwhile grants nothing the user's open socket asks of it (the
/// hooks read the user afresh); then the socket closes.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_user_deactivated_during_a_redis_outage_is_granted_nothing_on_another_node() {
    let Cluster {
        mut redis,
        nodes,
        _dir,
    } = cluster(2).await;
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let team = setup(a, 1, 1).await;
    let (user, channel) = (team.users[0], format!("channel:{}", team.channels[0]));
    let mut socket = open(b, &team.tokens[0]).await;
    let left = request(&mut socket, json!({"op": "unsubscribe", "scope": channel})).await;
    assert_eq!(left["op"], "ack", "{left}");
    // A streaming message node B holds, appended to over the socket.
    let stream = call(
        b,
        &team.tokens[0],
        &format!("/api/v1/channels/{}/messages", team.channels[0]),
        json!({"text": "", "streaming": true}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let append = json!({"op": "append", "message_id": stream, "text": "."});
    let appended = request(&mut socket, append.clone()).await;
    assert_eq!(appended["op"], "ack", "{appended}");

    redis.down().await;
    let off = reqwest::Client::new()
        .post(format!("http://{a}/api/v1/users/{user}/deactivate"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(off.status().is_success(), "{}", off.status());
    let refused = request(
        &mut socket,
        json!({"op": "subscribe", "scope": channel, "since": 0}),
    )
    .await;
    assert_eq!(refused["op"], "error", "{refused}");
    assert_eq!(refused["code"], "forbidden", "{refused}");
    // Nor a replay of their own scope, nor a typing signal.
    let own = format!("user:{user}");
    let refused = request(
        &mut socket,
        json!({"op": "subscribe", "scope": own, "since": 0}),
    )
    .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = request(
        &mut socket,
        json!({"op": "typing", "channel_id": team.channels[0]}),
    )
    .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    // Nor appends to their stream, once node B's read cache has let go of the author's
    // membership (its TTL, a second).
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let answer = request(&mut socket, append.clone()).await;
            if answer["op"] != "ack" {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("node B kept taking the deactivated author's appends");
    assert_eq!(refused["code"], "forbidden", "{refused}");

    redis.up().await;
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        close_code(&mut socket).await
    })
    .await
    .expect("node B did not close the deactivated user's socket once Redis was back");
    assert_eq!(closed, Some(3502));
}

/// A token revoked through node A while Redis is down: its close cannot reach node B
/// until Redis is back, but the socket it opened there is refused its next op and
/// closed with 3502 — node B asks, before each op, whether the socket's credential
/// still stands (kept at most the read cache's TTL, a second). The user's other token
/// is untouched.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_token_revoked_during_a_redis_outage_is_refused_on_another_node() {
    let Cluster {
        mut redis,
        nodes,
        _dir,
    } = cluster(2).await;
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let team = setup(a, 1, 1).await;
    let (user, channel) = (team.users[0], format!("channel:{}", team.channels[0]));
    let http = reqwest::Client::new();
    let tokens: Value = http
        .get(format!("http://{a}/api/v1/users/{user}/tokens"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revoked = tokens[0]["id"].as_i64().unwrap();
    let other = call(
        a,
        ADMIN,
        &format!("/api/v1/users/{user}/tokens"),
        json!({"name": "other"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut socket = open(b, &team.tokens[0]).await;
    let mut kept = open(b, &other).await;
    for ws in [&mut socket, &mut kept] {
        let left = request(ws, json!({"op": "unsubscribe", "scope": channel})).await;
        assert_eq!(left["op"], "ack", "{left}");
        let back = request(ws, json!({"op": "subscribe", "scope": channel})).await;
        assert_eq!(back["op"], "ack", "{back}");
    }

    redis.down().await;
    let off = http
        .delete(format!("http://{a}/api/v1/users/{user}/tokens/{revoked}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(off.status().is_success(), "{}", off.status());
    // The first op after node B's cached answer lapsed is refused, and the socket
    // closes (before: granted, a replay of the channel's history included).
    let (refused, closed) = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let answer = request(
                &mut socket,
                json!({"op": "subscribe", "scope": channel, "since": 0}),
            )
            .await;
            if answer["op"] == "ack" {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            return (answer, close_code(&mut socket).await);
        }
    })
    .await
    .expect("node B kept granting the revoked token's socket");
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    assert_eq!(closed, Some(3502));
    let granted = request(
        &mut kept,
        json!({"op": "subscribe", "scope": channel, "since": 0}),
    )
    .await;
    assert_eq!(granted["op"], "ack", "the other token stands: {granted}");
    redis.up().await;
}

/// Gateway mode: the application's logout (`POST /api/v1/proxy/sessions/revoke`) sent
/// to node A closes, on node B, the socket the connect proxy authenticated for that
/// application user (3502 after `credentials.revoked {reason: "session_revoked"}`);
/// the same user's socket opened with a Chorus API token stays.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn the_applications_logout_on_one_node_closes_proxied_sockets_on_another() {
    // The application: every credential is its user 42.
    let (app, asked) = http_receiver(r#"{"active": true, "sub": "42"}"#).await;
    let config =
        format!("[proxy]\nsecret = \"s3cret\"\n[proxy.connect]\nurl = \"http://{app}/connect\"\n");
    let cluster = cluster_with(2, &config).await;
    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let mut proxied = open(b, "app-session").await;
    let me = reqwest::Client::new()
        .get(format!("http://{b}/api/v1/me"))
        .bearer_auth("app-session")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let user = me["id"].as_i64().unwrap();
    let created = call(
        a,
        ADMIN,
        &format!("/api/v1/users/{user}/tokens"),
        json!({"name": "cli"}),
    )
    .await;
    let mut kept = open(b, created["token"].as_str().unwrap()).await;

    call(
        a,
        ADMIN,
        "/api/v1/proxy/sessions/revoke",
        json!({"sub": "42"}),
    )
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        let event = next_event(&mut proxied, "credentials.revoked").await;
        assert_eq!(event["data"]["reason"], "session_revoked", "{event}");
        close_code(&mut proxied).await
    })
    .await
    .expect("node B did not close the proxied socket within 2 s");
    assert_eq!(closed, Some(3502));
    let ack = request(&mut kept, json!({"op": "ping"})).await;
    assert_eq!(ack["op"], "ack", "{ack}");

    // Node B had the identity cached; the logout through A ended the user's epoch, so
    // B asks the application again (which, here, signs the user in again).
    let before = asked.lock().unwrap().len();
    let mut again = open(b, "app-session").await;
    let after = asked.lock().unwrap().len();
    assert!(
        after > before,
        "node B let the logged-out credential in from its cache"
    );
    // The logout's second close names the ended epoch: the new sign-in's socket stays.
    let second = next_event(&mut again, "credentials.revoked").await;
    assert_eq!(second["data"]["reason"], "session_revoked", "{second}");
    let ack = request(&mut again, json!({"op": "ping"})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
}

// ---- Presence after outages ---------------------------------------------------------

/// What one client believes about presence: the online bit per user, seeded from the
/// HTTP presence when it connected, then every change it heard (in arrival order).
#[derive(Default)]
struct Seen {
    online: HashMap<i64, bool>,
    heard: HashMap<i64, Vec<bool>>,
    /// Status texts heard, per user (barriers).
    status: HashMap<i64, Vec<String>>,
}

type View = Arc<Mutex<Seen>>;

/// A client of `token` on `addr` that keeps reading (so it answers pings) and records
/// the presence of workspace `ws` as it hears it.
async fn watch(addr: SocketAddr, token: &str, ws: i64) -> View {
    let mut socket = open(addr, token).await;
    let view: View = Arc::default();
    view.lock().unwrap().online = http_presence(addr, token, ws).await.unwrap();
    let out = view.clone();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            let changes = match v["type"].as_str() {
                Some("presence.updated") => vec![v["data"].clone()],
                Some("presence.batch") => presence_batch(&v["data"]),
                _ => Vec::new(),
            };
            let mut seen = out.lock().unwrap();
            for p in changes {
                let (user, online) = (p["user_id"].as_i64().unwrap(), p["online"] == true);
                seen.online.insert(user, online);
                seen.heard.entry(user).or_default().push(online);
                let text = p["status_text"].as_str().unwrap_or_default().to_owned();
                seen.status.entry(user).or_default().push(text);
            }
        }
    });
    view
}

/// `GET /api/v1/workspaces/{ws}/presence` on `addr`: the online bit per member (`None`
/// if the node did not answer with a list).
async fn http_presence(addr: SocketAddr, token: &str, ws: i64) -> Option<HashMap<i64, bool>> {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/workspaces/{ws}/presence"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    let all: Value = resp.json().await.ok()?;
    Some(
        all.as_array()?
            .iter()
            .map(|p| (p["user_id"].as_i64().unwrap(), p["online"] == true))
            .collect(),
    )
}

/// Waits until every client in `views` and every node in `nodes` (asked as `token`)
/// show each user of `expected` with the expected online bit.
async fn converge(
    views: &[&View],
    nodes: &[SocketAddr],
    token: &str,
    ws: i64,
    expected: &[(i64, bool)],
) {
    let agreed = tokio::time::timeout(WAIT, async {
        loop {
            let clients = views.iter().all(|v| {
                let seen = v.lock().unwrap();
                expected
                    .iter()
                    .all(|(u, online)| seen.online.get(u) == Some(online))
            });
            let mut servers = true;
            for &node in nodes {
                let answer = http_presence(node, token, ws).await;
                servers &= answer
                    .is_some_and(|p| expected.iter().all(|(u, online)| p.get(u) == Some(online)));
            }
            if clients && servers {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if agreed.is_err() {
        let clients: Vec<HashMap<i64, bool>> = views
            .iter()
            .map(|v| v.lock().unwrap().online.clone())
            .collect();
        let mut servers = Vec::new();
        for &node in nodes {
            servers.push(http_presence(node, token, ws).await);
        }
        panic!("presence did not converge to {expected:?}: clients {clients:?}, nodes {servers:?}");
    }
}

/// Waits until `addr` has no WebSocket connection left.
async fn wait_no_connections(addr: SocketAddr) {
    let stats_url = format!("http://{addr}/api/v1/realtime/stats");
    tokio::time::timeout(WAIT, async {
        loop {
            let stats: Value = reqwest::Client::new()
                .get(&stats_url)
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if stats["metrics"]["connections_current"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the node let its connections go");
}

/// While Redis is away, HTTP presence answers from what the node knows (its own
/// connections, and Redis's last answer about the others) rather than "everyone
/// offline"; once it is back (its data kept by AOF, every heartbeat lapsed), every
/// client and every node show the same presence.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn during_a_redis_outage_presence_answers_from_what_the_node_knows() {
    let Cluster {
        mut redis,
        nodes,
        _dir,
    } = cluster(2).await;
    let addrs = [nodes[0].addr, nodes[1].addr];
    let team = setup(addrs[0], 3, 0).await;
    let (ws, token) = (team.workspace, team.tokens[1].clone());
    let (x, y, z) = (team.users[0], team.users[1], team.users[2]);
    // x on node 0, y on node 1, z never connects.
    let x_view = watch(addrs[0], &team.tokens[0], ws).await;
    let y_view = watch(addrs[1], &team.tokens[1], ws).await;
    let expected = [(x, true), (y, true), (z, false)];
    converge(&[&x_view, &y_view], &addrs, &token, ws, &expected).await;

    redis.down().await;
    for node in addrs {
        let during = http_presence(node, &token, ws).await.expect("an answer");
        assert_eq!(
            (during[&x], during[&y], during[&z]),
            (true, true, false),
            "node {node} during the outage: {during:?}"
        );
    }
    // Longer than a heartbeat's TTL: every node's heartbeat lapses.
    tokio::time::sleep(Duration::from_secs(7)).await;
    redis.up().await;
    converge(&[&x_view, &y_view], &addrs, &token, ws, &expected).await;
}

/// x's last connection closes; while the grace runs, Redis restarts without its data.
/// The grace still ends with x offline, for every client and node (the user's hash is
/// gone: offline is the state, and it is announced).
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_grace_running_when_redis_loses_its_data_ends_offline() {
    let Cluster {
        mut redis,
        nodes,
        _dir,
    } = cluster(2).await;
    let addrs = [nodes[0].addr, nodes[1].addr];
    let team = setup(addrs[0], 2, 0).await;
    let (ws, token) = (team.workspace, team.tokens[1].clone());
    let (x, y) = (team.users[0], team.users[1]);
    let y_view = watch(addrs[1], &token, ws).await;
    let x_socket = open(addrs[0], &team.tokens[0]).await;
    converge(&[&y_view], &addrs, &token, ws, &[(x, true), (y, true)]).await;

    drop(x_socket);
    wait_no_connections(addrs[0]).await;
    redis.wipe().await;
    converge(&[&y_view], &addrs, &token, ws, &[(x, false), (y, true)]).await;
}

/// A late sweep: node A sweeps node B (frozen past its heartbeat's TTL) but announces
/// the swept user only after B came back and announced them online again. The late
/// offline must not be the last word. The lateness is made deterministic by holding A's
/// presence gate for the user: a status change of another user on the same stripe
/// (ids 256 apart) waits on a row lock the test holds in PostgreSQL.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_late_sweep_does_not_override_a_fresher_announcement() {
    let bin = redis_server();
    std::env::var("CHORUS_TEST_POSTGRES_URL")
        .expect("needs CHORUS_TEST_POSTGRES_URL (scripts/services start): scripts/test runs it");
    use sqlx::Connection;
    let redis = Redis::start(bin).await;
    let dir = tempfile::tempdir().unwrap();
    let db = shared_database(dir.path()).await;
    let (a, mut b) = (
        start_node(&db, &redis.url()).await,
        start_node(&db, &redis.url()).await,
    );
    let addrs = [a.addr, b.addr];
    let team = setup(a.addr, 2, 0).await;
    let (ws, token) = (team.workspace, team.tokens[1].clone());
    let (u, y) = (team.users[0], team.users[1]);
    // v shares u's stripe of the user gate (256 stripes, by id) and is a member.
    let mut n = 0;
    let (v, v_token) = loop {
        n += 1;
        let name = format!("v{n}");
        let user = call(a.addr, ADMIN, "/api/v1/users", json!({"name": name})).await;
        let id = user["user"]["id"].as_i64().unwrap();
        if id.rem_euclid(256) == u.rem_euclid(256) {
            call(
                a.addr,
                ADMIN,
                &format!("/api/v1/workspaces/{ws}/members"),
                json!({"user_id": id}),
            )
            .await;
            break (id, user["token"].as_str().unwrap().to_owned());
        }
    };
    let y_view = watch(a.addr, &token, ws).await;
    let _u_view = watch(b.addr, &team.tokens[0], ws).await; // u only on node B
    converge(&[&y_view], &addrs, &token, ws, &[(u, true), (y, true)]).await;

    // Hold v's row: a status change of v on node A then holds the stripe u shares.
    let mut holder = sqlx::PgConnection::connect(&db).await.unwrap();
    let mut row_lock = holder.begin().await.unwrap();
    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(v)
        .execute(&mut *row_lock)
        .await
        .unwrap();
    let set_status = |text: &'static str| {
        let (addr, v_token) = (a.addr, v_token.clone());
        async move {
            let resp = reqwest::Client::new()
                .put(format!("http://{addr}/api/v1/presence"))
                .bearer_auth(&v_token)
                .json(&json!({"status_text": text}))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
        }
    };
    let held = tokio::spawn(set_status("held"));
    let mut watcher = sqlx::PgConnection::connect(&db).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            let waiting: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    .fetch_one(&mut watcher)
                    .await
                    .unwrap();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("v's status change waits for the row");

    // B freezes past its TTL: A sweeps u (Redis says offline) but cannot announce it yet.
    signal(&b.child, "STOP").await;
    let swept = tokio::time::timeout(WAIT, async {
        loop {
            let p = http_presence(a.addr, &token, ws).await;
            if p.is_some_and(|p| !p[&u]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    signal(&b.child, "CONT").await;
    swept.expect("node A swept node B's user");
    // B finds its heartbeat gone, writes its counts again and announces u online.
    let heard_before = y_view.lock().unwrap().heard.get(&u).map_or(0, Vec::len);
    tokio::time::timeout(WAIT, async {
        loop {
            let again = y_view
                .lock()
                .unwrap()
                .heard
                .get(&u)
                .is_some_and(|h| h.len() > heard_before && h.last() == Some(&true));
            if again {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("node B announced u online again");

    // Now A's sweep gets to announce. A second status change of v queues behind it on
    // the same stripe: once y hears it, y heard whatever A said about u.
    row_lock.rollback().await.unwrap();
    held.await.unwrap();
    set_status("barrier").await;
    tokio::time::timeout(WAIT, async {
        loop {
            let heard = y_view
                .lock()
                .unwrap()
                .status
                .get(&v)
                .is_some_and(|t| t.iter().any(|t| t == "barrier"));
            if heard {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("y heard the barrier");
    converge(&[&y_view], &addrs, &token, ws, &[(u, true), (y, true)]).await;
    drop(b.child.start_kill());
}

async fn signal(child: &Child, name: &str) {
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

/// The next `subscriber.joined` / `subscriber.left` of `scope`: `(type, user_id)`,
/// within [`WAIT`] (other frames, heartbeats included, do not extend it).
async fn next_subscriber_change(ws: &mut Ws, scope: &str) -> (String, i64) {
    let next = async {
        loop {
            let v = next_json(ws).await;
            let kind = v["type"].as_str().unwrap_or_default();
            if v["scope"] == scope && kind.starts_with("subscriber.") {
                return (kind.to_owned(), v["data"]["user_id"].as_i64().unwrap());
            }
        }
    };
    tokio::time::timeout(WAIT, next)
        .await
        .unwrap_or_else(|_| panic!("no subscriber.* of {scope} within {WAIT:?}"))
}

/// The user ids a node lists in a topic's presence, once `done` holds for them (the
/// nodes record their subscribers in Redis a moment after each change).
async fn presence_until(
    addr: SocketAddr,
    token: &str,
    scope: &str,
    within: Duration,
    done: impl Fn(&[i64]) -> bool,
) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got: Value = reqwest::Client::new()
            .get(format!(
                "http://{addr}/api/v1/scopes/{}/presence",
                scope.replace(':', "%3A")
            ))
            .timeout(WAIT)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut users: Vec<i64> = got["subscribers"]
            .as_array()
            .unwrap_or_else(|| panic!("{got}"))
            .iter()
            .map(|s| s["user_id"].as_i64().unwrap())
            .collect();
        users.sort_unstable();
        if done(&users) || tokio::time::Instant::now() >= deadline {
            return users;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A namespace of topics that keep presence and send join/leave events.
const LOBBY: &str = r#"
[[namespaces]]
name = "lobby"
pattern = "topic:lobby.{id}"
read = "authenticated"
publish = "authenticated"
presence = true
join_leave = true
"#;

/// Gateway namespaces on three nodes: join/leave events reach a topic's subscribers on
/// every node; its presence, read on any node, lists the subscribers of all of them and
/// drops those of a node killed without a goodbye once its heartbeat lapses; a
/// namespace's retention window is the same wherever a client resumes.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn topic_presence_join_leave_and_retention_hold_across_nodes() {
    let namespaces = format!("{LOBBY}retention_events = 2\n");
    let Cluster {
        redis: _redis,
        mut nodes,
        _dir,
    } = cluster_with(3, &namespaces).await;
    let (a, b, c) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);
    let (_ws, users) = team(a, &["ann", "ben"]).await;
    let (ann_id, ann) = users["ann"].clone();
    let (ben_id, ben) = users["ben"].clone();
    let lobby = "topic:lobby.1";

    let mut on_a = open(a, &ann).await;
    // The subscription is live from its admission, before the ack is sent: ann's own
    // join may come before the ack or after it.
    let subscribe = json!({"op": "subscribe", "scope": lobby, "id": "own"});
    on_a.send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let (mut acked, mut own) = (false, None);
    tokio::time::timeout(WAIT, async {
        while !acked || own.is_none() {
            let v = next_json(&mut on_a).await;
            let kind = v["type"].as_str().unwrap_or_default();
            if v["id"] == "own" {
                assert_eq!(v["op"], "ack", "{v}");
                acked = true;
            } else if v["scope"] == lobby && kind.starts_with("subscriber.") {
                own = Some((kind.to_owned(), v["data"]["user_id"].as_i64().unwrap()));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("ack: {acked}, own join: {own:?}"));
    assert_eq!(own, Some(("subscriber.joined".into(), ann_id)));
    let url = format!("ws://{b}/ws?token={ben}");
    let (mut on_b, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let hello = next_json(&mut on_b).await;
    let ben_on_b = hello["session_id"].clone();
    let ack = request(&mut on_b, json!({"op": "subscribe", "scope": lobby})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(
        next_subscriber_change(&mut on_a, lobby).await,
        ("subscriber.joined".into(), ben_id),
        "ben's join on node B reaches ann on node A"
    );
    let both = {
        let mut both = vec![ann_id, ben_id];
        both.sort_unstable();
        both
    };
    let wait = Duration::from_secs(10);
    assert_eq!(
        presence_until(c, &ann, lobby, wait, |u| u == both.as_slice()).await,
        both,
        "node C lists the subscribers of A and B"
    );

    let ack = request(&mut on_b, json!({"op": "unsubscribe", "scope": lobby})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(
        next_subscriber_change(&mut on_a, lobby).await,
        ("subscriber.left".into(), ben_id)
    );
    assert_eq!(
        presence_until(a, &ben, lobby, wait, |u| u == [ann_id]).await,
        [ann_id]
    );

    // Retention: the namespace keeps two events, on every node.
    let mut offsets = Vec::new();
    for i in 0..3 {
        let sent = call(
            a,
            ADMIN,
            "/api/v1/publish",
            json!({"scope": lobby, "type": "tick", "data": {"i": i}}),
        )
        .await;
        offsets.push(sent["offset"].as_u64().unwrap());
    }
    for (since, recovered, replayed) in [(offsets[0], true, 2), (offsets[0] - 1, false, 0)] {
        let mut on_c = open(c, &ben).await;
        let subscribe = json!({"op": "subscribe", "scope": lobby, "since": since, "id": "s"});
        on_c.send(Message::text(subscribe.to_string()))
            .await
            .unwrap();
        // The replay comes before the ack.
        let mut ticks = 0;
        let ack = loop {
            let v = next_json(&mut on_c).await;
            if v["id"] == "s" {
                break v;
            }
            ticks += usize::from(v["type"] == "tick");
        };
        assert_eq!(ack["recovered"], recovered, "since {since}: {ack}");
        assert_eq!(ticks, replayed, "since {since}");
    }

    // Ben subscribes on B again; B dies without a goodbye: its subscribers leave the
    // presence once its heartbeat lapses (6 s; within the sweep's bound).
    let ack = request(&mut on_b, json!({"op": "subscribe", "scope": lobby})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert!(
        presence_until(a, &ann, lobby, wait, |u| u.contains(&ben_id))
            .await
            .contains(&ben_id)
    );
    // (ben's connections to node C above joined and left meanwhile: skip them)
    let of_ben_on_b = async |ws: &mut Ws| loop {
        let v = next_json(ws).await;
        if v["scope"] == lobby && v["data"]["session_id"] == ben_on_b {
            return v["type"].as_str().unwrap().to_owned();
        }
    };
    let joined = tokio::time::timeout(WAIT, of_ben_on_b(&mut on_a))
        .await
        .expect("ben's second join on node B");
    assert_eq!(joined, "subscriber.joined");
    nodes[1].child.start_kill().unwrap();
    let after_kill = presence_until(a, &ann, lobby, Duration::from_secs(15), |u| {
        !u.contains(&ben_id)
    })
    .await;
    assert!(!after_kill.contains(&ben_id), "{after_kill:?}");
    assert!(after_kill.contains(&ann_id), "{after_kill:?}");
    // The sweep that forgets node B announces its subscribers' leaves, once (the
    // documented bound: heartbeat TTL 6 s + sweep interval 2 s).
    let left = tokio::time::timeout(Duration::from_secs(12), of_ben_on_b(&mut on_a))
        .await
        .expect("ben's leave announced by the sweep");
    assert_eq!(left, "subscriber.left");
    call(
        a,
        ADMIN,
        "/api/v1/publish",
        json!({"scope": lobby, "type": "marker", "data": {}}),
    )
    .await;
    let until_marker = async {
        loop {
            let v = next_json(&mut on_a).await;
            assert_ne!(v["data"]["session_id"], ben_on_b, "announced twice: {v}");
            if v["type"] == "marker" {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, until_marker)
        .await
        .expect("the marker");
}

/// A node records the topics it has presence subscribers in (`chorus:tpn:<node>`, read
/// by the sweep of a dead node, one `HGETALL` per topic): a topic leaves the set with
/// the node's last subscriber, so the set does not grow with every topic ever joined.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn a_topic_leaves_its_nodes_record_with_the_nodes_last_subscriber() {
    let cluster = cluster_with(2, LOBBY).await;
    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let (_ws, users) = team(a, &["ann", "ben"]).await;
    let (ann_id, ann) = users["ann"].clone();
    let (ben_id, ben) = users["ben"].clone();
    let lobby = "topic:lobby.7";
    let mut on_b = open(b, &ben).await;
    let ack = request(&mut on_b, json!({"op": "subscribe", "scope": lobby})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    // Ann twice on node A, then once, then not at all; ben on node B throughout. Each
    // change of ann's reaches ben after node A recorded it (presence first, then the
    // event); ben's own join, before or after his ack, is skipped.
    let of_ann = async |ws: &mut Ws| loop {
        let (kind, user) = next_subscriber_change(ws, lobby).await;
        if user != ben_id {
            assert_eq!(user, ann_id);
            return kind;
        }
    };
    let mut first = open(a, &ann).await;
    let mut second = open(a, &ann).await;
    for ws in [&mut first, &mut second] {
        let ack = request(ws, json!({"op": "subscribe", "scope": lobby})).await;
        assert_eq!(ack["op"], "ack", "{ack}");
        assert_eq!(of_ann(&mut on_b).await, "subscriber.joined");
    }
    let redis = redis::Client::open(cluster.redis.url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let key = format!("chorus:tp:{lobby}");
    // How many nodes record the topic.
    let mut recorded = async || {
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg("chorus:nodes")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        let mut n = 0;
        for node in nodes {
            let member: bool = redis::cmd("SISMEMBER")
                .arg(format!("chorus:tpn:{node}"))
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            n += usize::from(member);
        }
        n
    };
    assert_eq!(recorded().await, 2, "both nodes have subscribers");
    let ack = request(&mut second, json!({"op": "unsubscribe", "scope": lobby})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(of_ann(&mut on_b).await, "subscriber.left");
    assert_eq!(recorded().await, 2, "node A still has one subscriber");
    let ack = request(&mut first, json!({"op": "unsubscribe", "scope": lobby})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(of_ann(&mut on_b).await, "subscriber.left");
    assert_eq!(recorded().await, 1, "only node B, whose subscriber stays");
}

// ---- The access rule across nodes -----------------------------------------------------

/// `GET /api/v1/scopes/{scope}/events?after={after}` through `addr` as `token`: its
/// status and body.
async fn events_after(addr: SocketAddr, token: &str, scope: &str, after: u64) -> (u16, Value) {
    let encoded = scope.replace(':', "%3A");
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/v1/scopes/{encoded}/events?after={after}"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `token`'s user subscribes to `scope` on node `addr`: the offset it acks, a position
/// to come back from.
async fn position(addr: SocketAddr, token: &str, scope: &str) -> u64 {
    let mut ws = open(addr, token).await;
    let ack = request(&mut ws, json!({"op": "subscribe", "scope": scope})).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    ack["offset"].as_u64().unwrap()
}

/// `DELETE path` through node `addr` as `token`: a removal, answered 204.
async fn remove(addr: SocketAddr, token: &str, path: &str) {
    let resp = reqwest::Client::new()
        .delete(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "DELETE {path}");
}

/// `token`'s user asks node `addr` for `scope` after `since` on a new connection, by a
/// `subscribe` with `since` or (`resume`) a `resume`: whether the ack says recovered,
/// and every frame before the ack (a replay precedes it) and before a ping's ack after.
async fn replayed_from(
    addr: SocketAddr,
    token: &str,
    scope: &str,
    since: u64,
    resume: bool,
) -> (bool, Vec<Value>) {
    let mut ws = open(addr, token).await;
    let op = if resume {
        json!({"op": "resume", "positions": {scope: since}, "id": "from"})
    } else {
        json!({"op": "subscribe", "scope": scope, "since": since, "id": "from"})
    };
    ws.send(Message::text(op.to_string())).await.unwrap();
    let mut frames = Vec::new();
    let ack = loop {
        let v = next_json(&mut ws).await;
        if v["id"] == "from" {
            break v;
        }
        frames.push(v);
    };
    assert_eq!(ack["op"], "ack", "{op}: {ack}");
    let recovered = if resume {
        &ack["scopes"][scope]["recovered"]
    } else {
        &ack["recovered"]
    };
    let recovered = recovered.as_bool().unwrap_or_else(|| panic!("{op}: {ack}"));
    frames.extend(frames_before_barrier(&mut ws).await);
    (recovered, frames)
}

/// `token`'s user asks each of `nodes` for `scope` from `since`, a position from before
/// their access began: the HTTP catch-up answers 410, and a `subscribe` with `since` or
/// a `resume` is not recovered and gives nothing whose text holds `secret`.
async fn not_replayed_on(nodes: &[SocketAddr], token: &str, scope: &str, since: u64, secret: &str) {
    for &node in nodes {
        let (status, body) = events_after(node, token, scope, since).await;
        assert_eq!(status, 410, "catch-up of {scope} on {node}: {body}");
        for resume in [false, true] {
            let (recovered, frames) = replayed_from(node, token, scope, since, resume).await;
            assert!(!recovered, "resume: {resume}, on {node}: {frames:?}");
            assert!(
                !frames.iter().any(|f| f.to_string().contains(secret)),
                "replayed from before the access on {node} (resume: {resume}): {frames:?}"
            );
        }
    }
}

/// `token`'s user, in access all along, asks each of `nodes` for `scope` from `since`:
/// the HTTP catch-up gives the event whose text is `secret`, and a `subscribe` with
/// `since` is recovered and replays it.
async fn replayed_on(nodes: &[SocketAddr], token: &str, scope: &str, since: u64, secret: &str) {
    for &node in nodes {
        let (status, body) = events_after(node, token, scope, since).await;
        assert_eq!(status, 200, "catch-up of {scope} on {node}: {body}");
        assert!(
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["data"]["text"] == secret),
            "catch-up of {scope} on {node}: {body}"
        );
        let (recovered, frames) = replayed_from(node, token, scope, since, false).await;
        assert!(recovered, "on {node}: {frames:?}");
        assert!(
            frames
                .iter()
                .any(|f| f["op"] == "event" && f["scope"] == scope && f["data"]["text"] == secret),
            "not replayed on {node}: {frames:?}"
        );
    }
}

/// Two nodes, A and B, and through A the [`team`] of `names` and alice's channel `name`
/// of `kind` with the named `members` besides her: (the cluster, A and B, the
/// workspace, the team, the channel).
async fn two_node_team(
    names: &[&str],
    (name, kind): (&str, &str),
    members: &[&str],
) -> (
    Cluster,
    [SocketAddr; 2],
    i64,
    HashMap<String, (i64, String)>,
    i64,
) {
    let cluster = cluster(2).await;
    let a = cluster.nodes[0].addr;
    let (ws, users) = team(a, names).await;
    let member_ids: Vec<i64> = members.iter().map(|m| users[*m].0).collect();
    let ch = call(
        a,
        &users["alice"].1,
        &format!("/api/v1/workspaces/{ws}/channels"),
        json!({"name": name, "kind": kind, "member_ids": member_ids}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let nodes = [a, cluster.nodes[1].addr];
    (cluster, nodes, ws, users, ch)
}

/// A thread's log marks nobody's joins: bob, removed from a private channel through
/// node A and added back through node B after a reply was sent, gets nothing of that
/// time from a thread position of before, on either node — 410 over HTTP, not
/// recovered over the WebSocket — while carol, in the channel all along, gets the reply.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn the_access_rule_holds_across_nodes() {
    let (_cluster, [a, b], _, users, ch) = two_node_team(
        &["alice", "bob", "carol"],
        ("secret", "private"),
        &["bob", "carol"],
    )
    .await;
    let alice = users["alice"].1.clone();
    let (bob_id, bob) = users["bob"].clone();
    let carol = users["carol"].1.clone();
    let root = post_message(a, &alice, ch, "root", None).await;
    let thread = format!("thread:{root}");
    let start = position(a, &bob, &thread).await;

    remove(
        a,
        &alice,
        &format!("/api/v1/channels/{ch}/members/{bob_id}"),
    )
    .await;
    let secret = "the plan bob must not read";
    post_message(b, &alice, ch, secret, Some(root)).await;
    // The log's times are to the millisecond: the re-join is logged after the reply.
    tokio::time::sleep(Duration::from_millis(2)).await;
    call(
        b,
        &alice,
        &format!("/api/v1/channels/{ch}/members"),
        json!({"user_id": bob_id}),
    )
    .await;

    not_replayed_on(&[a, b], &bob, &thread, start, secret).await;
    replayed_on(&[b, a], &carol, &thread, start, secret).await;
}

/// A public channel is read through its workspace, whose joins the channel's log does
/// not mark: dave, removed from the workspace through node A and added back through
/// node B after a message was sent, gets nothing of that time from a position of
/// before, on either node; bob, reading through the workspace all along, gets it.
#[tokio::test]
#[ignore = "needs redis-server: scripts/test runs it (--run-ignored all)"]
async fn the_access_rule_holds_for_a_public_channel_across_nodes() {
    let (_cluster, [a, b], ws, users, ch) =
        two_node_team(&["alice", "bob", "dave"], ("lobby", "public"), &[]).await;
    let alice = users["alice"].1.clone();
    let bob = users["bob"].1.clone();
    let (dave_id, dave) = users["dave"].clone();
    post_message(a, &alice, ch, "before", None).await;
    let channel = format!("channel:{ch}");
    let start = position(a, &dave, &channel).await;

    remove(
        a,
        ADMIN,
        &format!("/api/v1/workspaces/{ws}/members/{dave_id}"),
    )
    .await;
    let secret = "said while dave was out";
    post_message(b, &alice, ch, secret, None).await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    call(
        b,
        ADMIN,
        &format!("/api/v1/workspaces/{ws}/members"),
        json!({"user_id": dave_id}),
    )
    .await;

    not_replayed_on(&[b, a], &dave, &channel, start, secret).await;
    replayed_on(&[a, b], &bob, &channel, start, secret).await;
}
