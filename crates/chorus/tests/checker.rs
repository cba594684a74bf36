//! The checker (issue #18 item 6): a seeded workload against real `chorus serve`
//! processes while faults fire — `kill -9` and restart of nodes, a Redis restart,
//! dropped sockets, a slow reader — with every client recording each event frame, resume
//! answer and catch-up it gets. Afterwards the history is checked (`common/history.rs`):
//! every acknowledged change reaches every entitled client exactly once, offsets per
//! scope strictly increase and are never reused, nothing of the private channel reaches
//! a user while outside it, no agent is woken twice by a message, and (one node) a
//! resume inside the retention window recovers across restarts.
//!
//! The team: the admin (manages the private channel's members, talks), humans h1–h3, an
//! agent a1 and a slow reader s1 (4 KiB receive window, reads with pauses). h2, h3 and
//! s1 join, leave and are added and removed; h1 and a1 stay in both channels, so every
//! change is owed to them. On `recovered: false` a client catches up over
//! `GET /api/v1/scopes/{scope}/events`; a 404 (no such endpoint yet) or 410 makes it
//! reload the channel, and what it did not get stays missing: the verdict is strict.
//!
//! `CHORUS_CHECK_SEED=<n>` replays a run's choices (the interleaving with the faults is
//! the machine's). `CHORUS_CHECK_LOG=<dir>` keeps each node's log there (see
//! `node_log`); `CHORUS_CHECK_KEEP_DATABASE=1` keeps the cluster's database to query
//! afterwards. `CHORUS_CHECK_TRACE=1` prints each client's connections as they
//! happen; `CHORUS_CHECK_DUMP=<path>` writes the whole history to `<path>.<test>`. `CHORUS_CHECK_MUTANT=drop-resume` makes each client forget one
//! channel event after its first resume, to show that the verdict notices.
//! The cluster run needs PostgreSQL (`CHORUS_TEST_POSTGRES_URL`) and `redis-server`;
//! it is `#[ignore]`d, so a plain `cargo nextest run` reports it skipped (never passed);
//! `scripts/test` (services started) runs it with `--run-ignored all`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

mod common;
#[path = "common/history.rs"]
mod history;

use common::redis::{Redis, redis_server};
use common::{call, free_addr};
use history::{
    CatchUp, CatchUpResult, Change, ClientLog, Direction, EDIT_PREFIX, History, MembershipChange,
    Micros, Outcome, Received, ResumeResult, Via,
};

const ADMIN: &str = "checker-admin";
/// The longest the final barrier (and the clients' reconnection before it) may take.
const SETTLE: Duration = Duration::from_secs(30);
/// One node: kill points per run.
const ONE_NODE_KILLS: usize = 22;
/// Three nodes: kill points per run (plus one Redis restart).
const CLUSTER_KILLS: usize = 12;
/// A short queue makes the slow reader's overflow (3008) reachable.
const NODE_TOML: &str = "queue_capacity = 256\n";

/// The two runs share a 2-core machine badly: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed() -> u64 {
    match std::env::var("CHORUS_CHECK_SEED") {
        Ok(s) => s.trim().parse().expect("CHORUS_CHECK_SEED is a u64"),
        Err(_) => rand::random::<u64>() % 1_000_000_000,
    }
}

fn replay(seed: u64, test: &str) -> String {
    format!("CHORUS_CHECK_SEED={seed} cargo test -p chorus --test checker {test}")
}

fn channel_scope(id: i64) -> String {
    format!("channel:{id}")
}

// ---- the servers -------------------------------------------------------------------

/// One `chorus serve` process, restartable on the same address and data.
struct Node {
    addr: SocketAddr,
    data: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    async fn start(env: Vec<(String, String)>) -> Self {
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("chorus.toml"), NODE_TOML).unwrap();
        let mut node = Self {
            addr: free_addr(),
            data,
            env,
            child: None,
        };
        node.up().await;
        node
    }

    /// Starts the process and waits for `/readyz`; tries again if it exits first (the
    /// port may still be held for a moment after a kill).
    async fn up(&mut self) {
        let http = reqwest::Client::new();
        for _ in 0..50 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_chorus"))
                .args([
                    "serve",
                    "--listen",
                    &self.addr.to_string(),
                    "--admin-token",
                    ADMIN,
                ])
                .arg("--data-dir")
                .arg(self.data.path())
                .env("CHORUS_CONFIG", self.data.path().join("chorus.toml"))
                .env("CHORUS_HTTP_PER_SEC", "0")
                .env("CHORUS_LOG", "error")
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .envs(node_log_level().map(|level| ("CHORUS_LOG", level)))
                .stdout(node_log(self.addr).unwrap_or_else(Stdio::null))
                .stderr(node_log(self.addr).unwrap_or_else(Stdio::inherit))
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            for _ in 0..400 {
                if let Ok(resp) = http
                    .get(format!("http://{}/readyz", self.addr))
                    .send()
                    .await
                    && resp.status().is_success()
                {
                    self.child = Some(child);
                    return;
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chorus did not become ready on {}", self.addr);
    }

    /// `kill -9`: no goodbye, no flush.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }
}

/// `CHORUS_CHECK_LOG=<dir>`: each node's log goes to `<dir>/node-<port>.log` (appended
/// across restarts), at `CHORUS_CHECK_LOG_LEVEL` (default `warn`), to read next to the
/// report's times (fault times are printed as `fault <µs>: …`).
fn node_log_level() -> Option<String> {
    std::env::var_os("CHORUS_CHECK_LOG")?;
    Some(std::env::var("CHORUS_CHECK_LOG_LEVEL").unwrap_or_else(|_| "warn".to_owned()))
}

fn node_log(addr: SocketAddr) -> Option<Stdio> {
    let dir = std::env::var_os("CHORUS_CHECK_LOG")?;
    let path = PathBuf::from(dir).join(format!("node-{}.log", addr.port()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    Some(Stdio::from(file))
}

/// A fault, on the run's clock, so the report's times can be read against it.
fn fault(run: &Run, what: std::fmt::Arguments<'_>) {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "fault {:>9}µs (unix {}.{:06}): {what}",
        run.now(),
        wall.as_secs(),
        wall.subsec_micros()
    );
}

/// A fresh PostgreSQL database (dropped by `drop_database`).
async fn create_database(base: &str) -> (String, String) {
    let name = format!("chorus_check_{:x}", rand::random::<u32>());
    let status = Command::new("psql")
        .arg(base)
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "creating database {name}");
    let (prefix, _) = base.rsplit_once('/').unwrap();
    (format!("{prefix}/{name}"), name)
}

async fn drop_database(base: &str, name: &str) {
    let _ = Command::new("psql")
        .arg(base)
        .args([
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

// ---- the run's shared state ----------------------------------------------------------

#[derive(Clone, Debug)]
struct User {
    name: String,
    id: i64,
    token: String,
    slow: bool,
    /// Joins, leaves and is added and removed. The others stay in both channels the
    /// whole run, so every change there is owed to them exactly once.
    churns: bool,
}

struct Team {
    admin: User,
    /// Each has a recording client.
    users: Vec<User>,
    public: i64,
    private: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Top-level, may be edited, never answered (so its `message.updated` are edits).
    Plain,
    /// Top-level, answered in a thread, never edited.
    Root,
    Reply,
}

struct Msg {
    id: i64,
    channel: i64,
    author: i64,
    kind: Kind,
    /// When its deletion was asked for.
    deleting: Option<Micros>,
    /// Acknowledged reactions: (emoji, user).
    reactions: Vec<(String, i64)>,
}

/// What the workload believes (from acknowledged answers), to choose sensible operations.
#[derive(Default)]
struct Model {
    messages: Vec<Msg>,
    members: HashMap<i64, BTreeSet<i64>>,
}

enum Cmd {
    /// Close the socket abruptly: no close frame.
    Drop,
    /// Close it properly and reconnect.
    Reconnect,
    /// Send a `ping` with an id (its `ack` shows in the trace).
    Ping,
}

struct Run {
    start: Instant,
    seed: u64,
    drop_resume: bool,
    http: reqwest::Client,
    /// Every node's address and whether it is up.
    nodes: Mutex<Vec<(SocketAddr, bool)>>,
    model: Mutex<Model>,
    changes: Mutex<Vec<Change>>,
    memberships: Mutex<Vec<MembershipChange>>,
    /// Reaction changes (index in `changes`) and their message, to mark those raced by a
    /// deletion at the end.
    reactions: Mutex<Vec<(usize, i64)>>,
    tags: AtomicU64,
    stop: AtomicBool,
}

/// An answer: how it ended and its body.
struct Answer {
    outcome: Outcome,
    body: Value,
}

impl Run {
    fn new(seed: u64, nodes: &[SocketAddr]) -> Arc<Self> {
        let mutant = std::env::var("CHORUS_CHECK_MUTANT").unwrap_or_default();
        if !mutant.is_empty() {
            eprintln!("checker: mutant {mutant}");
        }
        Arc::new(Self {
            start: Instant::now(),
            seed,
            drop_resume: mutant == "drop-resume",
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            nodes: Mutex::new(nodes.iter().map(|a| (*a, true)).collect()),
            model: Mutex::default(),
            changes: Mutex::default(),
            memberships: Mutex::default(),
            reactions: Mutex::default(),
            tags: AtomicU64::new(1),
            stop: AtomicBool::new(false),
        })
    }

    fn now(&self) -> Micros {
        self.start.elapsed().as_micros() as Micros
    }

    fn tag(&self) -> u64 {
        self.tags.fetch_add(1, Ordering::Relaxed)
    }

    /// A node that is up (any node when none is).
    fn node(&self, rng: &mut StdRng) -> SocketAddr {
        let nodes = self.nodes.lock().unwrap();
        let up: Vec<SocketAddr> = nodes.iter().filter(|n| n.1).map(|n| n.0).collect();
        *up.choose(rng)
            .unwrap_or_else(|| &nodes.choose(rng).unwrap().0)
    }

    fn set_up(&self, addr: SocketAddr, up: bool) {
        for node in self.nodes.lock().unwrap().iter_mut() {
            if node.0 == addr {
                node.1 = up;
            }
        }
    }

    async fn request(
        &self,
        method: Method,
        addr: SocketAddr,
        token: &str,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        match req.send().await {
            Err(_) => Answer {
                outcome: Outcome::Unknown,
                body: Value::Null,
            },
            Ok(resp) => {
                let status = resp.status();
                let body = resp.json().await.unwrap_or(Value::Null);
                let outcome = if status.is_success() {
                    Outcome::Acked
                } else if status.is_client_error() {
                    Outcome::Refused
                } else {
                    Outcome::Unknown
                };
                Answer { outcome, body }
            }
        }
    }

    fn record(&self, change: Change) -> usize {
        let mut changes = self.changes.lock().unwrap();
        changes.push(change);
        changes.len() - 1
    }

    /// Sends `text` (retrying an unanswered request with the same idempotency key).
    async fn send(
        &self,
        rng: &mut StdRng,
        user: &User,
        channel: i64,
        kind: Kind,
        thread: Option<i64>,
    ) {
        let tag = self.tag();
        let prefix = match kind {
            Kind::Plain => "msg",
            Kind::Root => "root",
            Kind::Reply => "reply",
        };
        let mention = if rng.random_bool(0.2) { " @a1" } else { "" };
        let text = format!("{prefix}:{tag}{mention}");
        let mut body = json!({ "text": text });
        if let Some(root) = thread {
            body["thread_id"] = json!(root);
        }
        let key = format!("check-{}-{tag}", self.seed);
        let path = format!("/api/v1/channels/{channel}/messages");
        let start = self.now();
        let mut attempts = 0;
        let answer = loop {
            attempts += 1;
            let addr = self.node(rng);
            let answer = self
                .request(
                    Method::POST,
                    addr,
                    &user.token,
                    &path,
                    Some(&body),
                    Some(&key),
                )
                .await;
            if answer.outcome != Outcome::Unknown || attempts == 3 {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.record(Change {
            what: format!("{} sent {text:?} in {attempts} attempt(s)", user.name),
            scope: channel_scope(channel),
            key: format!("message.created text={text}"),
            start,
            end: self.now(),
            outcome: answer.outcome,
            may_vanish: false,
        });
        if answer.outcome == Outcome::Acked
            && let Some(id) = answer.body["id"].as_i64()
        {
            self.model.lock().unwrap().messages.push(Msg {
                id,
                channel,
                author: user.id,
                kind,
                deleting: None,
                reactions: Vec::new(),
            });
        }
    }

    /// Sends a top-level message or a reply in a channel `user` is in.
    async fn send_some(&self, rng: &mut StdRng, team: &Team, user: &User) {
        let (channel, root) = {
            let model = self.model.lock().unwrap();
            let mine: Vec<i64> = [team.public, team.private]
                .into_iter()
                .filter(|c| model.members.get(c).is_some_and(|m| m.contains(&user.id)))
                .collect();
            let Some(&channel) = mine.choose(rng) else {
                return;
            };
            let roots: Vec<i64> = model
                .messages
                .iter()
                .filter(|m| m.channel == channel && m.kind == Kind::Root && m.deleting.is_none())
                .map(|m| m.id)
                .collect();
            let root = if rng.random_bool(0.3) {
                roots.choose(rng).copied()
            } else {
                None
            };
            (channel, root)
        };
        match root {
            Some(root) => self.send(rng, user, channel, Kind::Reply, Some(root)).await,
            None => {
                let kind = if rng.random_bool(0.5) {
                    Kind::Plain
                } else {
                    Kind::Root
                };
                self.send(rng, user, channel, kind, None).await;
            }
        }
    }

    async fn edit(&self, rng: &mut StdRng, user: &User) {
        let Some((id, channel)) = ({
            let model = self.model.lock().unwrap();
            let mine: Vec<(i64, i64)> = model
                .messages
                .iter()
                .filter(|m| m.author == user.id && m.kind != Kind::Root && m.deleting.is_none())
                .map(|m| (m.id, m.channel))
                .collect();
            mine.choose(rng).copied()
        }) else {
            return;
        };
        let text = format!("{EDIT_PREFIX}{}", self.tag());
        let start = self.now();
        let addr = self.node(rng);
        let answer = self
            .request(
                Method::PATCH,
                addr,
                &user.token,
                &format!("/api/v1/messages/{id}"),
                Some(&json!({ "text": text })),
                None,
            )
            .await;
        self.record(Change {
            what: format!("{} edited message {id} to {text:?}", user.name),
            scope: channel_scope(channel),
            key: format!("message.updated id={id} text={text}"),
            start,
            end: self.now(),
            outcome: answer.outcome,
            may_vanish: false,
        });
    }

    async fn delete(&self, rng: &mut StdRng, user: &User) {
        let start = self.now();
        let Some((id, channel)) = ({
            let mut model = self.model.lock().unwrap();
            let mine: Vec<usize> = (0..model.messages.len())
                .filter(|&i| {
                    let m = &model.messages[i];
                    m.author == user.id && m.deleting.is_none()
                })
                .collect();
            mine.choose(rng).map(|&i| {
                let m = &mut model.messages[i];
                m.deleting = Some(start);
                (m.id, m.channel)
            })
        }) else {
            return;
        };
        let addr = self.node(rng);
        let answer = self
            .request(
                Method::DELETE,
                addr,
                &user.token,
                &format!("/api/v1/messages/{id}"),
                None,
                None,
            )
            .await;
        self.record(Change {
            what: format!("{} deleted message {id}", user.name),
            scope: channel_scope(channel),
            key: format!("message.deleted id={id}"),
            start,
            end: self.now(),
            outcome: answer.outcome,
            may_vanish: false,
        });
    }

    /// Adds a reaction of a fresh emoji, or removes one of `user`'s.
    async fn react(&self, rng: &mut StdRng, team: &Team, user: &User, add: bool) {
        let picked = {
            let mut model = self.model.lock().unwrap();
            let readable: BTreeSet<i64> = [team.public, team.private]
                .into_iter()
                .filter(|c| model.members.get(c).is_some_and(|m| m.contains(&user.id)))
                .collect();
            if add {
                let candidates: Vec<usize> = (0..model.messages.len())
                    .filter(|&i| {
                        let m = &model.messages[i];
                        readable.contains(&m.channel)
                            && m.deleting.is_none()
                            && m.reactions.len() < 40
                    })
                    .collect();
                candidates.choose(rng).map(|&i| {
                    let m = &model.messages[i];
                    (m.id, m.channel, format!("r{}", self.tag()))
                })
            } else {
                let candidates: Vec<(usize, usize)> = model
                    .messages
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.deleting.is_none())
                    .flat_map(|(i, m)| {
                        m.reactions
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| r.1 == user.id)
                            .map(move |(j, _)| (i, j))
                    })
                    .collect();
                candidates.choose(rng).map(|&(i, j)| {
                    let m = &mut model.messages[i];
                    let (emoji, _) = m.reactions.remove(j);
                    (m.id, m.channel, emoji)
                })
            }
        };
        let Some((id, channel, emoji)) = picked else {
            return;
        };
        let (method, kind) = if add {
            (Method::PUT, "reaction.added")
        } else {
            (Method::DELETE, "reaction.removed")
        };
        let start = self.now();
        let addr = self.node(rng);
        let answer = self
            .request(
                method,
                addr,
                &user.token,
                &format!("/api/v1/messages/{id}/reactions/{emoji}"),
                None,
                None,
            )
            .await;
        let index = self.record(Change {
            what: format!("{} {kind} {emoji} on message {id}", user.name),
            scope: channel_scope(channel),
            key: format!("{kind} message={id} emoji={emoji} user={}", user.id),
            start,
            end: self.now(),
            outcome: answer.outcome,
            may_vanish: false,
        });
        self.reactions.lock().unwrap().push((index, id));
        if add && answer.outcome == Outcome::Acked {
            let mut model = self.model.lock().unwrap();
            if let Some(m) = model.messages.iter_mut().find(|m| m.id == id) {
                m.reactions.push((emoji, user.id));
            }
        }
    }

    /// A membership change of `who` in `channel`, made by `by`.
    async fn membership(
        &self,
        rng: &mut StdRng,
        by: &User,
        who: &User,
        channel: i64,
        direction: Direction,
    ) {
        let (method, path, body) = match (direction, by.id == who.id) {
            (Direction::In, true) => (
                Method::POST,
                format!("/api/v1/channels/{channel}/join"),
                None,
            ),
            (Direction::Out, true) => (
                Method::POST,
                format!("/api/v1/channels/{channel}/leave"),
                None,
            ),
            (Direction::In, false) => (
                Method::POST,
                format!("/api/v1/channels/{channel}/members"),
                Some(json!({ "user_id": who.id })),
            ),
            (Direction::Out, false) => (
                Method::DELETE,
                format!("/api/v1/channels/{channel}/members/{}", who.id),
                None,
            ),
        };
        let start = self.now();
        let addr = self.node(rng);
        let answer = self
            .request(method, addr, &by.token, &path, body.as_ref(), None)
            .await;
        self.memberships.lock().unwrap().push(MembershipChange {
            user: who.id,
            scope: channel_scope(channel),
            direction,
            start,
            end: self.now(),
            outcome: answer.outcome,
        });
        if answer.outcome == Outcome::Acked {
            let mut model = self.model.lock().unwrap();
            let members = model.members.entry(channel).or_default();
            match direction {
                Direction::In => members.insert(who.id),
                Direction::Out => members.remove(&who.id),
            };
        }
    }

    fn is_member(&self, channel: i64, user: i64) -> bool {
        self.model
            .lock()
            .unwrap()
            .members
            .get(&channel)
            .is_some_and(|m| m.contains(&user))
    }
}

// ---- the workload ----------------------------------------------------------------------

/// Drives `actors` (users, or the admin) until the run stops.
async fn worker(
    run: Arc<Run>,
    team: Arc<Team>,
    actors: Vec<User>,
    clients: Arc<Vec<mpsc::Sender<Cmd>>>,
    mut rng: StdRng,
) {
    while !run.stop.load(Ordering::Relaxed) {
        let user = actors.choose(&mut rng).unwrap().clone();
        let roll = rng.random_range(0..100);
        if user.id == team.admin.id {
            // The admin manages the private channel's membership and talks.
            let churners: Vec<&User> = team.users.iter().filter(|u| u.churns).collect();
            if roll < 25 {
                let who = *churners.choose(&mut rng).unwrap();
                let direction = if run.is_member(team.private, who.id) {
                    Direction::Out
                } else {
                    Direction::In
                };
                run.membership(&mut rng, &user, who, team.private, direction)
                    .await;
            } else {
                run.send_some(&mut rng, &team, &user).await;
            }
        } else {
            match roll {
                0..40 => run.send_some(&mut rng, &team, &user).await,
                40..52 => run.edit(&mut rng, &user).await,
                52..58 => run.delete(&mut rng, &user).await,
                58..74 => run.react(&mut rng, &team, &user, true).await,
                74..84 => run.react(&mut rng, &team, &user, false).await,
                84..90 if user.churns => {
                    let direction = if run.is_member(team.public, user.id) {
                        Direction::Out
                    } else {
                        Direction::In
                    };
                    run.membership(&mut rng, &user, &user, team.public, direction)
                        .await;
                }
                90..92 if user.churns => {
                    if run.is_member(team.private, user.id) {
                        run.membership(&mut rng, &user, &user, team.private, Direction::Out)
                            .await;
                    }
                }
                84..92 => run.send_some(&mut rng, &team, &user).await,
                _ => {
                    let cmd = if rng.random_bool(0.5) {
                        Cmd::Drop
                    } else {
                        Cmd::Reconnect
                    };
                    let _ = clients.choose(&mut rng).unwrap().send(cmd).await;
                }
            }
        }
        let pause = rng.random_range(20..90);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

async fn setup(addr: SocketAddr, run: &Run) -> (Team, BTreeMap<String, BTreeSet<i64>>) {
    let me = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/me"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let admin = User {
        name: "admin".to_owned(),
        id: me["id"].as_i64().unwrap(),
        token: ADMIN.to_owned(),
        slow: false,
        churns: false,
    };
    let ws = call(addr, ADMIN, "/api/v1/workspaces", json!({"name": "check"})).await["id"]
        .as_i64()
        .unwrap();
    let mut users = Vec::new();
    for (name, kind) in [
        ("h1", "human"),
        ("h2", "human"),
        ("h3", "human"),
        ("a1", "agent"),
        ("s1", "human"),
    ] {
        let made = call(
            addr,
            ADMIN,
            "/api/v1/users",
            json!({"name": name, "kind": kind}),
        )
        .await;
        let id = made["user"]["id"].as_i64().unwrap();
        call(
            addr,
            ADMIN,
            &format!("/api/v1/workspaces/{ws}/members"),
            json!({"user_id": id}),
        )
        .await;
        users.push(User {
            name: name.to_owned(),
            id,
            token: made["token"].as_str().unwrap().to_owned(),
            slow: name == "s1",
            churns: ["h2", "h3", "s1"].contains(&name),
        });
    }
    let everyone: Vec<i64> = users.iter().map(|u| u.id).collect();
    // h3 starts outside the private channel.
    let insiders: Vec<i64> = users
        .iter()
        .filter(|u| u.name != "h3")
        .map(|u| u.id)
        .collect();
    let mut initial = BTreeMap::new();
    let channel = |name: &'static str, kind: &'static str, members: Vec<i64>| async move {
        let ch = call(
            addr,
            ADMIN,
            &format!("/api/v1/workspaces/{ws}/channels"),
            json!({"name": name, "kind": kind, "member_ids": members}),
        )
        .await["id"]
            .as_i64()
            .unwrap();
        let view = reqwest::Client::new()
            .get(format!("http://{addr}/api/v1/channels/{ch}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let members: BTreeSet<i64> = view["member_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        (ch, members)
    };
    let (public, public_members) = channel("general", "public", everyone).await;
    let (private, private_members) = channel("secret", "private", insiders).await;
    {
        let mut model = run.model.lock().unwrap();
        model.members.insert(public, public_members.clone());
        model.members.insert(private, private_members.clone());
    }
    initial.insert(channel_scope(public), public_members);
    initial.insert(channel_scope(private), private_members);
    (
        Team {
            admin,
            users,
            public,
            private,
        },
        initial,
    )
}

// ---- the recording clients ---------------------------------------------------------------

struct Client {
    cmds: mpsc::Sender<Cmd>,
    /// Answers to `Cmd::Ping`.
    pongs: Arc<AtomicU64>,
    log: Arc<Mutex<ClientLog>>,
    /// Connected, and its resume (with any catch-up) handled.
    live: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn connect(
    addr: SocketAddr,
    user: &User,
    resume: bool,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    if user.slow {
        // A small receive window: the server's queue for this reader fills for real.
        socket.set_recv_buffer_size(4096)?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await??;
    let url = format!(
        "ws://{addr}/ws?token={}{}",
        user.token,
        if resume { "&resume=1" } else { "" }
    );
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(url, stream),
    )
    .await??;
    Ok(ws)
}

/// What a client does with one event frame.
struct Recorder {
    run: Arc<Run>,
    user: User,
    log: Arc<Mutex<ClientLog>>,
    positions: BTreeMap<String, u64>,
    conn: u32,
    /// The `drop-resume` mutant: forget one channel event after the first resume.
    forget: bool,
}

impl Recorder {
    fn event(&mut self, v: &Value, via: Via) {
        let scope = v["scope"].as_str().unwrap_or_default().to_owned();
        let offset = v["offset"].as_u64();
        let kind = v["type"].as_str().unwrap_or_default().to_owned();
        let data = v["data"].clone();
        if let Some(offset) = offset {
            let at = self.positions.entry(scope.clone()).or_insert(offset);
            *at = (*at).max(offset);
        }
        if scope == format!("user:{}", self.user.id) {
            let channel = channel_scope(data["channel_id"].as_i64().unwrap_or_default());
            match kind.as_str() {
                // The connection is unsubscribed: its position means nothing any more.
                "channel.left" => {
                    self.positions.remove(&channel);
                }
                // When the join says where the channel stood, start there.
                "channel.joined" => {
                    if let Some(at) = data["offset"].as_u64() {
                        let channel =
                            channel_scope(data["channel"]["id"].as_i64().unwrap_or_default());
                        self.positions.entry(channel).or_insert(at);
                    }
                }
                _ => {}
            }
        }
        if self.forget
            && self.conn > 1
            && scope.starts_with("channel:")
            && history::key_of(&kind, &data).is_some()
        {
            self.forget = false;
            return;
        }
        self.log.lock().unwrap().events.push(Received {
            scope,
            offset,
            kind,
            data,
            wake: v["wake"].as_bool(),
            at: self.run.now(),
            conn: self.conn,
            via,
        });
    }

    /// `recovered: false`: fetches what the resume could not replay, up to where the
    /// socket continues (`upto`), over HTTP.
    async fn catch_up(&mut self, addr: SocketAddr, scope: &str, from: u64, upto: u64) {
        let encoded = scope.replace(':', "%3A");
        let mut after = from;
        let mut got = Vec::new();
        let result = loop {
            let path = format!("/api/v1/scopes/{encoded}/events?after={after}&limit=200");
            let resp = self
                .run
                .http
                .get(format!("http://{addr}{path}"))
                .bearer_auth(&self.user.token)
                .send()
                .await;
            let Ok(resp) = resp else {
                break CatchUpResult::Failed("no answer".to_owned());
            };
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            match status {
                200 => {
                    let events = body["events"].as_array().cloned().unwrap_or_default();
                    got.extend(
                        events
                            .into_iter()
                            .filter(|e| e["offset"].as_u64().is_some_and(|o| o <= upto)),
                    );
                    let next = body["next"].as_u64().unwrap_or(u64::MAX);
                    if body["more"] == true && next > after && next < upto {
                        after = next;
                        continue;
                    }
                    break CatchUpResult::Events(got.len());
                }
                // Not retained (or no such endpoint yet): reload the state instead. The
                // events stay missing, and the verdict says so.
                410 | 404 => {
                    if let Some(id) = scope.strip_prefix("channel:") {
                        let _ = self
                            .run
                            .http
                            .get(format!(
                                "http://{addr}/api/v1/channels/{id}/messages?limit=100"
                            ))
                            .bearer_auth(&self.user.token)
                            .send()
                            .await;
                    }
                    break if status == 410 {
                        CatchUpResult::Gone
                    } else {
                        CatchUpResult::NotFound
                    };
                }
                403 => break CatchUpResult::Forbidden,
                other => break CatchUpResult::Failed(format!("{other} {body}")),
            }
        };
        for e in &got {
            self.event(e, Via::CatchUp);
        }
        self.log.lock().unwrap().catch_ups.push(CatchUp {
            at: self.run.now(),
            conn: self.conn,
            scope: scope.to_owned(),
            after: from,
            result,
        });
    }
}

/// `CHORUS_CHECK_TRACE=1`: what each client's connections do, as it happens.
fn trace(rec: &Recorder, what: std::fmt::Arguments<'_>) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("CHORUS_CHECK_TRACE").is_some()) {
        eprintln!("trace {:>9}µs {}: {what}", rec.run.now(), rec.user.name);
    }
}

/// One user's client: connects to a live node, resumes with its positions after every
/// disconnect, records everything, and obeys fault commands.
fn client(
    run: Arc<Run>,
    user: User,
    tx: mpsc::Sender<Cmd>,
    mut cmds: mpsc::Receiver<Cmd>,
    mut rng: StdRng,
) -> Client {
    let log = Arc::new(Mutex::new(ClientLog {
        name: user.name.clone(),
        user: user.id,
        ..ClientLog::default()
    }));
    let live = Arc::new(AtomicBool::new(false));
    let pongs = Arc::new(AtomicU64::new(0));
    let (log2, live2, pongs2) = (log.clone(), live.clone(), pongs.clone());
    let task = tokio::spawn(async move {
        let mut rec = Recorder {
            forget: run.drop_resume,
            run,
            user,
            log: log2,
            positions: BTreeMap::new(),
            conn: 0,
        };
        loop {
            live2.store(false, Ordering::SeqCst);
            let addr = rec.run.node(&mut rng);
            let resume = !rec.positions.is_empty();
            let Ok(mut ws) = connect(addr, &rec.user, resume).await else {
                let pause = rng.random_range(30..120);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                continue;
            };
            rec.conn += 1;
            rec.log.lock().unwrap().connections = rec.conn;
            trace(
                &rec,
                format_args!("connection {} to {addr} (resume: {resume})", rec.conn),
            );
            let hello = match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    serde_json::from_str::<Value>(t.as_str()).unwrap_or_default()
                }
                _ => continue,
            };
            if hello["op"] != "hello" {
                continue;
            }
            let hello_offsets: BTreeMap<String, u64> = hello["offsets"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(s, v)| Some((s.clone(), v.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default();
            // Positions sent in `resume`, until its answer; events wait meanwhile, so
            // a catch-up lands before the live events that follow it.
            let mut resuming: Option<BTreeMap<String, u64>> = None;
            let mut held: Vec<Value> = Vec::new();
            if resume {
                let frame = json!({"op": "resume", "id": "resume", "positions": rec.positions});
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    continue;
                }
                resuming = Some(rec.positions.clone());
            } else {
                rec.positions = hello_offsets.clone();
                live2.store(true, Ordering::SeqCst);
            }
            loop {
                let frame = tokio::select! {
                    cmd = cmds.recv() => match cmd {
                        Some(Cmd::Drop) => break,
                        Some(Cmd::Reconnect) => {
                            let _ = ws.close(None).await;
                            break;
                        }
                        Some(Cmd::Ping) => {
                            let ping = json!({"op": "ping", "id": "ping"}).to_string();
                            let _ = ws.send(Message::text(ping)).await;
                            continue;
                        }
                        None => return,
                    },
                    frame = ws.next() => frame,
                };
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        trace(
                            &rec,
                            format_args!("connection {} ended: {frame:?}", rec.conn),
                        );
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match v["op"].as_str() {
                    Some("ack") if v["id"] == "ping" => {
                        pongs2.fetch_add(1, Ordering::SeqCst);
                    }
                    Some("event") if resuming.is_some() => held.push(v),
                    Some("event") => rec.event(&v, Via::Socket),
                    Some("ack" | "error") if v["id"] == "resume" => {
                        let sent = resuming.take().unwrap_or_default();
                        let scopes = v["scopes"].as_object().cloned().unwrap_or_default();
                        for (scope, r) in scopes {
                            let position = sent.get(&scope).copied().unwrap_or_default();
                            let recovered = r["recovered"] == true;
                            let error = r["error"].as_str().map(str::to_owned);
                            rec.log.lock().unwrap().resumes.push(ResumeResult {
                                at: rec.run.now(),
                                conn: rec.conn,
                                scope: scope.clone(),
                                position,
                                recovered,
                                error: error.clone(),
                            });
                            if error.is_some() {
                                rec.positions.remove(&scope);
                            } else if !recovered {
                                let upto = hello_offsets
                                    .get(&scope)
                                    .copied()
                                    .or(r["offset"].as_u64())
                                    .unwrap_or(u64::MAX);
                                rec.catch_up(addr, &scope, position, upto).await;
                                if upto != u64::MAX {
                                    let at = rec.positions.entry(scope).or_insert(upto);
                                    *at = (*at).max(upto);
                                }
                            }
                        }
                        for e in std::mem::take(&mut held) {
                            rec.event(&e, Via::Socket);
                        }
                        live2.store(true, Ordering::SeqCst);
                        trace(&rec, format_args!("resumed: {v}"));
                    }
                    _ => {}
                }
                if rec.user.slow {
                    let pause = rng.random_range(4..16);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
    });
    Client {
        cmds: tx,
        pongs,
        log,
        live,
        task,
    }
}

// ---- one run -----------------------------------------------------------------------------

/// The workload and its clients, from setup to the barrier.
struct Workload {
    run: Arc<Run>,
    team: Arc<Team>,
    initial: BTreeMap<String, BTreeSet<i64>>,
    clients: Vec<Client>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_workload(run: Arc<Run>, addr: SocketAddr) -> Workload {
    let (team, initial) = setup(addr, &run).await;
    let team = Arc::new(team);
    let mut rng = StdRng::seed_from_u64(run.seed);
    let mut clients = Vec::new();
    let mut senders = Vec::new();
    for user in &team.users {
        let (tx, rx) = mpsc::channel(8);
        senders.push(tx.clone());
        let seed = rng.random();
        clients.push(client(
            run.clone(),
            user.clone(),
            tx,
            rx,
            StdRng::seed_from_u64(seed),
        ));
    }
    let senders = Arc::new(senders);
    wait_live(&clients).await;
    let by_name = |n: &str| team.users.iter().find(|u| u.name == n).unwrap().clone();
    let groups = vec![
        vec![by_name("h1"), by_name("a1")],
        vec![by_name("h2"), by_name("s1")],
        vec![by_name("h3")],
        vec![team.admin.clone()],
    ];
    let mut workers = Vec::new();
    for actors in groups {
        let seed = rng.random();
        workers.push(tokio::spawn(worker(
            run.clone(),
            team.clone(),
            actors,
            senders.clone(),
            StdRng::seed_from_u64(seed),
        )));
    }
    Workload {
        run,
        team,
        initial,
        clients,
        workers,
    }
}

async fn wait_live(clients: &[Client]) {
    let all = tokio::time::timeout(SETTLE, async {
        while !clients.iter().all(|c| c.live.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if all.is_err() {
        eprintln!("checker: not every client was connected within {SETTLE:?}");
    }
}

impl Workload {
    fn history(&self, strict_resume: bool) -> History {
        let mut changes = self.run.changes.lock().unwrap().clone();
        // A reaction change racing its message's deletion may leave no event.
        let deleting: HashMap<i64, Micros> = self
            .run
            .model
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter_map(|m| Some((m.id, m.deleting?)))
            .collect();
        for (index, message) in self.run.reactions.lock().unwrap().iter() {
            if deleting
                .get(message)
                .is_some_and(|&d| d < changes[*index].end)
            {
                changes[*index].may_vanish = true;
            }
        }
        History {
            seed: self.run.seed,
            clients: self
                .clients
                .iter()
                .map(|c| c.log.lock().unwrap().clone())
                .collect(),
            changes,
            memberships: self.run.memberships.lock().unwrap().clone(),
            initial: self.initial.clone(),
            guarded: [channel_scope(self.team.private)].into(),
            strict_resume,
        }
    }

    /// Stops the workload, waits for every client to be back, sends a last message to
    /// each channel and waits until every client entitled to it has it: then whatever
    /// was going to arrive has (a scope's events arrive in offset order). Returns the
    /// history to check.
    async fn finish(self, strict_resume: bool) -> History {
        self.run.stop.store(true, Ordering::Relaxed);
        for w in &self.workers {
            while !w.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        wait_live(&self.clients).await;
        let mut rng = StdRng::seed_from_u64(self.run.seed ^ 0xba55);
        let mut barriers = Vec::new();
        for channel in [self.team.public, self.team.private] {
            let text = format!("barrier:{channel}");
            let start = self.run.now();
            let addr = self.run.node(&mut rng);
            let answer = self
                .run
                .request(
                    Method::POST,
                    addr,
                    ADMIN,
                    &format!("/api/v1/channels/{channel}/messages"),
                    Some(&json!({ "text": text })),
                    None,
                )
                .await;
            assert_eq!(
                answer.outcome,
                Outcome::Acked,
                "the barrier send: {}",
                answer.body
            );
            self.run.record(Change {
                what: format!("admin sent the barrier {text:?}"),
                scope: channel_scope(channel),
                key: format!("message.created text={text}"),
                start,
                end: self.run.now(),
                outcome: Outcome::Acked,
                may_vanish: false,
            });
            barriers.push((channel_scope(channel), text, start));
        }
        let so_far = self.history(strict_resume);
        let waited = Instant::now();
        let mut missed = Vec::new();
        for client in &self.clients {
            for (scope, text, start) in &barriers {
                let user = client.log.lock().unwrap().user;
                if !so_far.surely_in_from(user, scope, *start) {
                    continue;
                }
                let has = || {
                    client.log.lock().unwrap().events.iter().any(|e| {
                        e.kind == "message.created" && e.data["text"].as_str() == Some(text)
                    })
                };
                while !has() && waited.elapsed() < SETTLE {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if !has() {
                    missed.push((client, scope.clone(), text.clone()));
                }
            }
        }
        // Is a client that missed a barrier still connected? A `ping` tells.
        let mut pongs_before = Vec::new();
        for (client, _, _) in &missed {
            pongs_before.push(client.pongs.load(Ordering::SeqCst));
            let _ = client.cmds.send(Cmd::Ping).await;
        }
        if !missed.is_empty() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        for ((client, scope, text), before) in missed.into_iter().zip(pongs_before) {
            let answered = client.pongs.load(Ordering::SeqCst) > before;
            let mut log = client.log.lock().unwrap();
            let last = log.events.iter().rev().find(|e| e.scope == scope);
            let detail = format!(
                "{text} (connection {}, which {} a ping afterwards; last event of {scope}: {:?} at {}µs)",
                log.connections,
                if answered {
                    "answered"
                } else {
                    "did not answer"
                },
                last.map(|e| (e.offset, &e.kind)),
                last.map_or(0, |e| e.at),
            );
            log.barrier_missed.push(detail);
        }
        for c in &self.clients {
            c.task.abort();
        }
        self.history(strict_resume)
    }
}

fn verdict(history: &History, test: &str, started: Instant) {
    if let Ok(path) = std::env::var("CHORUS_CHECK_DUMP") {
        std::fs::write(format!("{path}.{test}"), format!("{history:#?}")).unwrap();
    }
    let violations = history::check(history);
    eprintln!("checker {test}: {}", history::summary(history));
    eprintln!("checker {test}: ran {:.1?}", started.elapsed());
    let report = history::report(history, &violations, &replay(history.seed, test));
    eprintln!("{report}");
    assert!(
        violations.is_empty(),
        "{test}: {} violations, seed {} (report above; replay: {})",
        violations.len(),
        history.seed,
        replay(history.seed, test)
    );
}

/// One node on SQLite, killed with `kill -9` at random points of the workload and
/// restarted on the same data and port; clients reconnect and resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_node_kill_restart() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let seed = seed();
    eprintln!(
        "checker one_node_kill_restart: seed {seed} (replay: {})",
        replay(seed, "one_node")
    );
    let mut node = Node::start(Vec::new()).await;
    let run = Run::new(seed, &[node.addr]);
    let workload = start_workload(run.clone(), node.addr).await;

    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    for _ in 0..ONE_NODE_KILLS {
        let pause = rng.random_range(200..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        run.set_up(node.addr, false);
        fault(&run, format_args!("kill -9 node {}", node.addr));
        node.kill().await;
        let pause = rng.random_range(0..200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        node.up().await;
        fault(&run, format_args!("node {} ready", node.addr));
        run.set_up(node.addr, true);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let history = workload.finish(true).await;
    drop(node);
    verdict(&history, "one_node_kill_restart", started);
}

/// Three nodes on PostgreSQL and Redis: random nodes killed with `kill -9` (and
/// restarted), Redis restarted once; clients reconnect to any live node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and PostgreSQL: scripts/test runs it (--run-ignored all)"]
async fn three_nodes_kill_and_redis_restart() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let (Some(redis_bin), Ok(pg)) = (redis_server(), std::env::var("CHORUS_TEST_POSTGRES_URL"))
    else {
        panic!(
            "the cluster checker needs redis-server and CHORUS_TEST_POSTGRES_URL \
             (scripts/services start; eval \"$(scripts/services env)\"): scripts/test runs it"
        );
    };
    let seed = seed();
    eprintln!(
        "checker three_nodes_kill_and_redis_restart: seed {seed} (replay: {})",
        replay(seed, "three_nodes")
    );
    let mut redis = Redis::start(redis_bin).await;
    let (database, db_name) = create_database(&pg).await;
    let env = vec![
        ("CHORUS_DATABASE_URL".to_owned(), database.clone()),
        ("CHORUS_REDIS_URL".to_owned(), redis.url()),
    ];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Node::start(env.clone()).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let run = Run::new(seed, &addrs);
    let workload = start_workload(run.clone(), addrs[0]).await;

    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    for k in 0..CLUSTER_KILLS {
        let pause = rng.random_range(300..1000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let i = rng.random_range(0..nodes.len());
        run.set_up(nodes[i].addr, false);
        fault(&run, format_args!("kill -9 node {}", nodes[i].addr));
        nodes[i].kill().await;
        let pause = rng.random_range(100..500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        nodes[i].up().await;
        fault(&run, format_args!("node {} ready", nodes[i].addr));
        run.set_up(nodes[i].addr, true);
        if k == CLUSTER_KILLS / 2 {
            fault(&run, format_args!("redis down"));
            redis.down().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.up().await;
            fault(&run, format_args!("redis up"));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let history = workload.finish(false).await;
    drop(nodes);
    if std::env::var_os("CHORUS_CHECK_KEEP_DATABASE").is_some() {
        eprintln!("checker three_nodes_kill_and_redis_restart: database kept: {database}");
    } else {
        drop_database(&pg, &db_name).await;
    }
    verdict(&history, "three_nodes_kill_and_redis_restart", started);
}

// ---- the verdict over hand-written histories ---------------------------------------------

fn event(scope: &str, offset: u64, kind: &str, data: Value) -> Received {
    Received {
        scope: scope.to_owned(),
        offset: Some(offset),
        kind: kind.to_owned(),
        data,
        wake: Some(false),
        at: 0,
        conn: 1,
        via: Via::Socket,
    }
}

/// Two members of `channel:1` who each got both messages, and an outsider (user 3) who
/// got nothing: a clean history.
fn clean_history() -> History {
    let changes = vec![
        Change {
            what: "u1 sent a".to_owned(),
            scope: "channel:1".to_owned(),
            key: "message.created text=msg:a".to_owned(),
            start: 10,
            end: 20,
            outcome: Outcome::Acked,
            may_vanish: false,
        },
        Change {
            what: "u2 sent b".to_owned(),
            scope: "channel:1".to_owned(),
            key: "message.created text=msg:b".to_owned(),
            start: 30,
            end: 40,
            outcome: Outcome::Acked,
            may_vanish: false,
        },
    ];
    let both = |user: i64, name: &str| ClientLog {
        name: name.to_owned(),
        user,
        events: vec![
            event(
                "channel:1",
                5,
                "message.created",
                json!({"id": 1, "text": "msg:a"}),
            ),
            event(
                "channel:1",
                7,
                "message.created",
                json!({"id": 2, "text": "msg:b"}),
            ),
        ],
        connections: 1,
        ..ClientLog::default()
    };
    History {
        seed: 7,
        clients: vec![
            both(1, "u1"),
            both(2, "u2"),
            ClientLog {
                name: "u3".to_owned(),
                user: 3,
                ..ClientLog::default()
            },
        ],
        changes,
        memberships: Vec::new(),
        initial: [("channel:1".to_owned(), [1, 2].into())].into(),
        guarded: ["channel:1".to_owned()].into(),
        strict_resume: true,
    }
}

fn kinds(h: &History) -> Vec<&'static str> {
    history::check(h).into_iter().map(|v| v.kind).collect()
}

#[test]
fn verdict_passes_a_clean_history() {
    assert_eq!(history::check(&clean_history()), Vec::new());
}

#[test]
fn verdict_finds_a_duplicate() {
    let mut h = clean_history();
    let again = event(
        "channel:1",
        9,
        "message.created",
        json!({"id": 1, "text": "msg:a"}),
    );
    h.clients[0].events.push(again);
    assert_eq!(kinds(&h), vec!["duplicate"]);
}

#[test]
fn verdict_finds_a_missing_event() {
    let mut h = clean_history();
    h.clients[1].events.remove(0);
    assert_eq!(kinds(&h), vec!["missing"]);
    // An unanswered change may be missing: at most once.
    h.changes[0].outcome = Outcome::Unknown;
    assert_eq!(kinds(&h), Vec::<&str>::new());
}

#[test]
fn verdict_finds_a_leak_a_reused_offset_and_an_unrecovered_resume() {
    let mut h = clean_history();
    // The outsider gets a message of the private channel.
    h.clients[2].events.push(event(
        "channel:1",
        7,
        "message.created",
        json!({"id": 2, "text": "msg:b"}),
    ));
    // Another client sees a different event at an offset already seen.
    h.clients[1].events.push(event(
        "channel:1",
        5,
        "member.joined",
        json!({"user_id": 3}),
    ));
    h.clients[0].resumes.push(ResumeResult {
        at: 50,
        conn: 2,
        scope: "channel:1".to_owned(),
        position: 7,
        recovered: false,
        error: None,
    });
    let mut found = kinds(&h);
    found.sort();
    assert_eq!(
        found,
        vec![
            "offset order",
            "offset reused",
            "resume not recovered",
            "unentitled"
        ]
    );
}

#[test]
fn verdict_follows_membership_conservatively() {
    let mut h = clean_history();
    // u2 was removed (acknowledged) before b was sent: b must not be required of u2,
    // and u2 getting it is a leak.
    h.memberships.push(MembershipChange {
        user: 2,
        scope: "channel:1".to_owned(),
        direction: Direction::Out,
        start: 21,
        end: 25,
        outcome: Outcome::Acked,
    });
    assert_eq!(kinds(&h), vec!["unentitled"]);
    // An add that may have landed during b's send: no longer surely outside.
    h.memberships.push(MembershipChange {
        user: 2,
        scope: "channel:1".to_owned(),
        direction: Direction::In,
        start: 35,
        end: 60,
        outcome: Outcome::Unknown,
    });
    assert_eq!(kinds(&h), Vec::<&str>::new());
}
