//! Test harness: a real Chorus server on `127.0.0.1:0`, built in-process on a throwaway
//! data dir, plus an HTTP helper and a raw WebSocket client. No mocks.
//!
//! With `CHORUS_TEST_DATABASE=postgres` every server stores its data in a fresh
//! PostgreSQL database on `CHORUS_TEST_POSTGRES_URL` (dropped with the server) instead
//! of SQLite in the data dir, so the whole suite can run on either backend.
//!
//! Every wait is bounded by [`WAIT`] so a missing frame fails the test instead of hanging
//! it; no test asserts how long anything took.
//!
//! A server reads the time from `Config::clock`: `start_with(|c| c.clock =
//! Clock::following_tokio(unix_ms))` starts one whose wall time is `unix_ms` now (and
//! then moves with tokio's clock), e.g. to judge expiries at another time.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a different subset

pub mod app;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use chorus_chat::testing::ScratchDatabase;
use chorus_server::Config;
use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};

/// Upper bound on any single wait; only there to turn a hang into a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// The admin token every test server accepts.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// `CHORUS_TEST_DATABASE=postgres`: a fresh database for one server. Unset or `sqlite`:
/// none (the server uses SQLite in its data dir).
async fn test_database() -> Option<ScratchDatabase> {
    match std::env::var("CHORUS_TEST_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => None,
        Ok("postgres") => {
            let admin_url = std::env::var("CHORUS_TEST_POSTGRES_URL").expect(
                "CHORUS_TEST_DATABASE=postgres needs CHORUS_TEST_POSTGRES_URL \
                 (scripts/services start, then source its env file)",
            );
            Some(ScratchDatabase::create(&admin_url).await.unwrap())
        }
        Ok(other) => panic!("CHORUS_TEST_DATABASE must be sqlite or postgres, not {other:?}"),
    }
}

/// A running server and what it needs to restart on the same data.
pub struct TestServer {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    config: Config,
    data_dir: TempDir,
    /// The server's PostgreSQL database, when the suite runs on PostgreSQL.
    database: Option<ScratchDatabase>,
    /// The running server's state, for white-box checks (registry invariants).
    state: Option<chorus_server::AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// A server with the default test configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `tweak` may override (limits, heartbeat, JWT…).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let database = test_database().await;
        let mut config = Config {
            data_dir: data_dir.path().to_path_buf(),
            database_url: database.as_ref().map(|db| db.url().to_owned()),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            shutdown_grace_ms: 5_000,
            // Test receivers listen on 127.0.0.1 (tests/webhook_targets.rs turns it off).
            webhook_allow_private: true,
            ..Config::default()
        };
        tweak(&mut config);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(WAIT)
            .build()
            .unwrap();
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http,
            config,
            data_dir,
            database,
            state: None,
            shutdown: None,
            task: None,
        };
        server.launch().await;
        server
    }

    /// The PostgreSQL database behind the server, if the suite runs on PostgreSQL.
    pub fn database(&self) -> Option<&ScratchDatabase> {
        self.database.as_ref()
    }

    /// The URL of the server's database: its PostgreSQL database, or the SQLite file in
    /// its data dir.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(db) => db.url().to_owned(),
            None => format!("sqlite://{}", self.config.embedded_database().display()),
        }
    }

    async fn launch(&mut self) {
        let built = chorus_server::build(self.config.clone()).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        self.shutdown = Some(tx);
        self.state = Some(built.state.clone());
        self.task = Some(tokio::spawn(chorus_server::run(
            listener,
            built.state,
            shutdown,
        )));
    }

    /// Triggers a graceful shutdown and waits for the server to finish.
    pub async fn stop(&mut self) {
        self.state = None;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server did not stop in time")
                .expect("server task panicked")
                .expect("server returned an error");
        }
    }

    /// Stops the server and starts a new one on the same data dir (new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Stops the server and starts a new one on the same data with `tweak` applied to
    /// its configuration (e.g. a clock that reads later).
    pub async fn restart_with(&mut self, tweak: impl FnOnce(&mut Config)) {
        self.stop().await;
        tweak(&mut self.config);
        self.launch().await;
    }

    /// Asserts that the connection registry's two indexes agree.
    #[track_caller]
    pub fn check_invariants(&self) {
        let state = self.state.as_ref().expect("server not running");
        if let Err(broken) = state.engine.registry.check_invariants() {
            panic!("registry invariant broken: {broken}");
        }
    }

    /// The running server's state (white-box checks).
    pub fn state(&self) -> &chorus_server::AppState {
        self.state.as_ref().expect("server not running")
    }

    /// Waits (bounded by [`WAIT`]) until the server has handled at least `closes`
    /// connection ends in all and has no presence work left: every grace timer has run
    /// out and every coalesced presence batch is published. A barrier on a client then
    /// holds every presence event the server will send it for what happened so far.
    pub async fn settle_presence(&self, closes: u64) {
        let chat = &self.state.as_ref().expect("server not running").chat;
        let deadline = tokio::time::Instant::now() + WAIT;
        while chat.closes_handled() < closes || chat.background_tasks() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "presence did not settle: {} of {closes} closes handled, {} tasks running",
                chat.closes_handled(),
                chat.background_tasks()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    // ---- HTTP -------------------------------------------------------------------

    /// Any request; `token` becomes a bearer header, `body` a JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        Resp::read(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Every event of `scope` after offset `after`, as the HTTP catch-up gives them to
    /// `by` (all pages).
    pub async fn logged_after(&self, by: &TestUser, scope: &str, mut after: u64) -> Vec<Value> {
        let scope = scope.replace(':', "%3A");
        let mut events = Vec::new();
        loop {
            let page = self
                .get(
                    &format!("/api/v1/scopes/{scope}/events?after={after}&limit=1000"),
                    &by.token,
                )
                .await
                .expect_status(StatusCode::OK)
                .body;
            events.extend(page["events"].as_array().unwrap().iter().cloned());
            if page["more"] != true {
                return events;
            }
            after = page["next"].as_u64().unwrap();
        }
    }

    /// The event ids of the webhook deliveries queued for `agent`.
    pub async fn queued_webhooks(&self, agent: &TestUser) -> Vec<Value> {
        let path = format!("/api/v1/users/{}/webhook-deliveries?limit=200", agent.id);
        let listed = self
            .get(&path, &agent.token)
            .await
            .expect_status(StatusCode::OK);
        let deliveries = listed.body.as_array().unwrap().iter();
        deliveries.map(|d| d["event_id"].clone()).collect()
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    /// The id of the admin token's user (the bootstrap server admin).
    pub async fn admin_id(&self) -> i64 {
        self.get("/api/v1/me", ADMIN_TOKEN)
            .await
            .expect_status(reqwest::StatusCode::OK)
            .body["id"]
            .as_i64()
            .expect("the admin's id")
    }

    /// Creates a user with the admin token.
    pub async fn create_user(&self, name: &str) -> TestUser {
        let resp = self
            .post("/api/v1/users", ADMIN_TOKEN, json!({ "name": name }))
            .await
            .expect_status(StatusCode::CREATED);
        TestUser {
            id: resp.body["user"]["id"].as_i64().unwrap(),
            name: name.to_owned(),
            token: resp.body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// A new API token of user `user_id` named `name`, created with `by`'s credential
    /// (theirs, or the admin token): its secret.
    pub async fn mint_token(&self, by: &str, user_id: i64, name: &str) -> String {
        self.post(
            &format!("/api/v1/users/{user_id}/tokens"),
            by,
            json!({ "name": name }),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a workspace owned by `owner`; returns its id.
    pub async fn create_workspace(&self, owner: &TestUser, name: &str) -> i64 {
        self.post("/api/v1/workspaces", &owner.token, json!({ "name": name }))
            .await
            .expect_status(StatusCode::CREATED)
            .body["id"]
            .as_i64()
            .unwrap()
    }

    pub async fn add_member(&self, by: &TestUser, ws: i64, user: &TestUser, role: &str) {
        self.post(
            &format!("/api/v1/workspaces/{ws}/members"),
            &by.token,
            json!({ "user_id": user.id, "role": role }),
        )
        .await
        .expect_status(StatusCode::CREATED);
    }

    /// `by` gives `user` the workspace role `role` (`PATCH …/members/{id}`); the answer.
    pub async fn set_role(&self, by: &TestUser, ws: i64, user: &TestUser, role: &str) -> Resp {
        self.patch(
            &format!("/api/v1/workspaces/{ws}/members/{}", user.id),
            &by.token,
            json!({ "role": role }),
        )
        .await
    }

    /// Adds `user` to channel `ch` (`by` must be allowed to); expects 204.
    pub async fn add_channel_member(&self, by: &TestUser, ch: i64, user: &TestUser) {
        self.post(
            &format!("/api/v1/channels/{ch}/members"),
            &by.token,
            json!({ "user_id": user.id }),
        )
        .await
        .expect_status(StatusCode::NO_CONTENT);
    }

    /// Creates a channel of `kind` (`public` / `private`) with extra members; returns its id.
    pub async fn create_channel(
        &self,
        by: &TestUser,
        ws: i64,
        name: &str,
        kind: &str,
        members: &[&TestUser],
    ) -> i64 {
        let ids: Vec<i64> = members.iter().map(|u| u.id).collect();
        self.post(
            &format!("/api/v1/workspaces/{ws}/channels"),
            &by.token,
            json!({ "name": name, "kind": kind, "member_ids": ids }),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["id"]
            .as_i64()
            .unwrap()
    }

    /// Sends a message and returns it as the HTTP response shows it.
    pub async fn send(&self, by: &TestUser, channel: i64, text: &str) -> Value {
        self.post(
            &format!("/api/v1/channels/{channel}/messages"),
            &by.token,
            json!({ "text": text }),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body
    }

    /// A channel's history as `by` sees it, with a raw query string (`"limit=5&before=9"`).
    pub async fn history(&self, by: &TestUser, channel: i64, query: &str) -> Vec<Value> {
        let resp = self
            .get(
                &format!("/api/v1/channels/{channel}/messages?{query}"),
                &by.token,
            )
            .await
            .expect_status(StatusCode::OK);
        resp.body.as_array().unwrap().clone()
    }

    /// Three users (`alice` owns the workspace; `bob` and `carol` are members).
    pub async fn world(&self) -> World {
        let alice = self.create_user("alice").await;
        let bob = self.create_user("bob").await;
        let carol = self.create_user("carol").await;
        let ws = self.create_workspace(&alice, "acme").await;
        self.add_member(&alice, ws, &bob, "member").await;
        self.add_member(&alice, ws, &carol, "member").await;
        World {
            alice,
            bob,
            carol,
            ws,
        }
    }

    // ---- WebSocket --------------------------------------------------------------

    /// Connects with a bearer header and reads `hello`.
    pub async fn connect(&self, token: &str) -> WsClient {
        let mut req = self.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        WsClient::open(req).await
    }

    /// Connects without credentials (gateway mode's anonymous connection) and reads
    /// `hello`.
    pub async fn connect_anonymous(&self) -> WsClient {
        WsClient::open(self.ws_url().into_client_request().unwrap()).await
    }

    /// Connects with `?token=` and reads `hello`.
    pub async fn connect_query(&self, token: &str) -> WsClient {
        let url = format!("{}?token={token}", self.ws_url());
        WsClient::open(url.into_client_request().unwrap()).await
    }

    /// Connects with `?resume=1` (events held until the first frame) and reads `hello`.
    pub async fn connect_resuming(&self, token: &str) -> WsClient {
        let url = format!("{}?token={token}&resume=1", self.ws_url());
        WsClient::open(url.into_client_request().unwrap()).await
    }

    /// Connects with these request headers (e.g. `Cookie`) and reads `hello`.
    pub async fn connect_with(&self, headers: &[(&str, &str)]) -> WsClient {
        WsClient::open(self.upgrade_request(headers)).await
    }

    /// Attempts an upgrade with these headers that must be refused; returns the HTTP
    /// status and the error body.
    pub async fn refused_upgrade_with(&self, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let req = self.upgrade_request(headers);
        let result = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade attempt timed out");
        match result {
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                (StatusCode::from_u16(resp.status().as_u16()).unwrap(), body)
            }
            Err(other) => panic!("expected an HTTP refusal, got {other}"),
            Ok(_) => panic!("the upgrade was accepted"),
        }
    }

    fn upgrade_request(&self, headers: &[(&str, &str)]) -> tungstenite::handshake::client::Request {
        let mut req = self.ws_url().into_client_request().unwrap();
        for (name, value) in headers {
            req.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        req
    }

    /// Attempts an upgrade that must be refused; returns the HTTP status.
    pub async fn refused_upgrade(&self, token: Option<&str>) -> StatusCode {
        let mut req = self.ws_url().into_client_request().unwrap();
        if let Some(token) = token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let result = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade attempt timed out");
        match result {
            Err(tungstenite::Error::Http(resp)) => {
                StatusCode::from_u16(resp.status().as_u16()).unwrap()
            }
            Err(other) => panic!("expected an HTTP refusal, got {other}"),
            Ok(_) => panic!("the upgrade was accepted"),
        }
    }

    /// Opens a TCP connection and completes the WebSocket handshake by hand, so the
    /// test controls exactly what the client sends (here: nothing at all).
    pub async fn raw_ws(&self, token: &str) -> RawWs {
        self.raw_ws_then(token, None).await
    }

    /// Like [`raw_ws`](Self::raw_ws), with a first text frame sent in the same write as
    /// the upgrade request (so the server reads it together with the request).
    pub async fn raw_ws_then(&self, token: &str, first: Option<&str>) -> RawWs {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.addr
        );
        let mut bytes = request.into_bytes();
        if let Some(text) = first {
            bytes.extend_from_slice(&masked_text_frame(text));
        }
        tcp.write_all(&bytes).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
                .await
                .expect("handshake timed out")
                .unwrap();
            assert!(n == 1, "connection closed during the handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        RawWs { tcp }
    }
}

/// A user and its API token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub name: String,
    pub token: String,
}

pub struct World {
    pub alice: TestUser,
    pub bob: TestUser,
    pub carol: TestUser,
    pub ws: i64,
}

/// An HTTP response with its JSON body (`Value::Null` when the body is empty or not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            body,
        }
    }

    #[track_caller]
    pub fn expect_status(self, status: StatusCode) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts the SPEC error body `{"error":{"code":…,"message":…}}` with this status and code.
    #[track_caller]
    pub fn expect_error(self, status: StatusCode, code: &str) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.text);
        assert!(
            self.body["error"]["message"].is_string(),
            "error without a message: {}",
            self.text
        );
        self
    }
}

/// What a WebSocket read produced, pings and pongs aside.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Close(Option<u16>),
    /// The stream ended (or failed) without a close frame.
    Ended(String),
    Other(String),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A real WebSocket client speaking the Chorus protocol as raw JSON.
pub struct WsClient {
    ws: Ws,
    pub hello: Value,
    /// Frames read while waiting for something else (e.g. events before an ack).
    pending: VecDeque<Value>,
    next_id: i64,
    /// Whether presence events are kept. Off by default: presence is ephemeral and timed
    /// by connects (coalesced up to 200 ms, a first connection hears its own user come
    /// online), so only the tests about presence read it.
    pub presence: bool,
}

impl WsClient {
    async fn open(req: tungstenite::handshake::client::Request) -> Self {
        let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        assert_eq!(resp.status().as_u16(), 101);
        let mut client = Self {
            ws,
            hello: Value::Null,
            pending: VecDeque::new(),
            next_id: 1,
            presence: false,
        };
        let hello = client.recv_json().await;
        assert_eq!(hello["op"], "hello", "first frame: {hello}");
        assert_eq!(hello["v"], 1);
        client.hello = hello;
        client
    }

    pub fn user_id(&self) -> i64 {
        self.hello["user_id"].as_i64().unwrap()
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send failed");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send failed");
    }

    /// The underlying stream, for tests that drive the socket themselves.
    pub fn into_inner(self) -> Ws {
        self.ws
    }

    /// The next frame from the wire within `within` (pings and pongs skipped, and
    /// presence events unless [`presence`](Self::presence) is on); `None` on timeout.
    async fn read_wire(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = read_frame(&mut self.ws, left).await?;
            let is_presence = matches!(&frame, Frame::Json(v)
                if v["op"] == "event"
                    && v["type"].as_str().is_some_and(|t| t.starts_with("presence.")));
            if self.presence || !is_presence {
                return Some(frame);
            }
        }
    }

    /// The next frame from the wire (pings and pongs skipped), within [`WAIT`].
    pub async fn recv_frame(&mut self) -> Frame {
        if let Some(v) = self.pending.pop_front() {
            return Frame::Json(v);
        }
        self.read_wire(WAIT)
            .await
            .expect("no frame within the wait limit")
    }

    /// The next frame, which must be a JSON text frame.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv_frame().await {
            Frame::Json(v) => v,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next `event` frame of type `kind`; other events are skipped, anything else
    /// (error, ack, close) fails the test.
    pub async fn expect_event(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv_json().await;
            if frame["op"] != "event" {
                panic!("waiting for {kind} event, got {frame}");
            }
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Sends `op` with a fresh `id` and returns the `ack` or `error` answering it.
    /// Frames that arrive first are kept for later reads.
    pub async fn request(&mut self, mut op: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        op["id"] = json!(id);
        self.send_json(op).await;
        let mut before = Vec::new();
        let reply = loop {
            let frame = match self.read_wire(WAIT).await {
                Some(Frame::Json(v)) => v,
                other => panic!("waiting for the reply to {id}, got {other:?} after {before:?}"),
            };
            if (frame["op"] == "ack" || frame["op"] == "error") && frame["id"] == id {
                break frame;
            }
            before.push(frame);
        };
        self.pending.extend(before);
        reply
    }

    /// A ping with an id must be acked.
    pub async fn ping(&mut self) {
        let reply = self.request(json!({"op": "ping"})).await;
        assert_eq!(reply["op"], "ack", "ping not acked: {reply}");
    }

    /// Sends a ping with an id and returns every frame that came before its ack. Replies
    /// share the connection's queue with events, so anything already queued for this
    /// connection when the ping is handled is in the returned list.
    pub async fn barrier(&mut self) -> Vec<Value> {
        let reply = self.request(json!({"op": "ping"})).await;
        assert_eq!(reply["op"], "ack", "ping not acked: {reply}");
        self.pending.drain(..).collect()
    }

    /// Subscribes with an id; returns the reply (`ack` or `error`).
    pub async fn subscribe(&mut self, scope: &str) -> Value {
        self.request(json!({"op": "subscribe", "scope": scope}))
            .await
    }

    /// Reads until the server closes; returns the close code (`None` if the stream
    /// ended without a close frame). Text frames before the close are skipped.
    pub async fn expect_close(&mut self) -> Option<u16> {
        self.pending.clear();
        loop {
            match self
                .read_wire(WAIT)
                .await
                .expect("the server did not close the connection")
            {
                Frame::Close(code) => return code,
                Frame::Ended(_) => return None,
                Frame::Json(_) | Frame::Other(_) => {}
            }
        }
    }

    /// Asserts that no frame (pings aside) arrives within `within`. Prefer [`barrier`]
    /// where the server's ordering gives a deterministic answer.
    ///
    /// [`barrier`]: Self::barrier
    pub async fn expect_no_frame(&mut self, within: Duration) {
        assert!(
            self.pending.is_empty(),
            "frames pending: {:?}",
            self.pending
        );
        if let Some(frame) = self.read_wire(within).await {
            panic!("expected silence, got {frame:?}");
        }
    }

    /// Reads until `n` server pings have arrived, answering them (tungstenite queues the
    /// pong and sends it on the next read). Fails on anything but pings and events.
    pub async fn wait_for_pings(&mut self, n: usize) {
        let mut seen = 0;
        while seen < n {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no server ping within the wait limit");
            match msg {
                Some(Ok(Message::Ping(_))) => seen += 1,
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["op"], "event", "unexpected frame {v}");
                }
                Some(Ok(Message::Pong(_))) => {}
                other => panic!("connection ended while waiting for pings: {other:?}"),
            }
        }
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// One frame within `within`; `None` on timeout. Pings and pongs are skipped.
pub async fn read_frame<S>(ws: &mut S, within: Duration) -> Option<Frame>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        return Some(match msg {
            None => Frame::Ended("end of stream".to_owned()),
            Some(Err(e)) => Frame::Ended(e.to_string()),
            Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                Ok(v) => Frame::Json(v),
                Err(e) => Frame::Other(format!("non-JSON text {e}: {t}")),
            },
            Some(Ok(Message::Close(c))) => Frame::Close(c.map(|c| u16::from(c.code))),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => Frame::Other(format!("{other:?}")),
        });
    }
}

/// A hand-driven WebSocket connection: it reads what the server sends and never
/// answers anything (no pongs), like a peer that has gone silent.
pub struct RawWs {
    tcp: TcpStream,
}

/// A server frame as read off the wire.
#[derive(Debug)]
pub enum RawFrame {
    Text(String),
    Ping,
    Close(Option<u16>),
    Other(u8),
}

impl RawWs {
    /// The next server frame, or `None` when the TCP stream ends.
    pub async fn next(&mut self) -> Option<RawFrame> {
        tokio::time::timeout(WAIT, self.read_one())
            .await
            .expect("no frame from the server within the wait limit")
    }

    async fn read_one(&mut self) -> Option<RawFrame> {
        let mut head = [0u8; 2];
        self.tcp.read_exact(&mut head).await.ok()?;
        let opcode = head[0] & 0x0f;
        assert_eq!(head[1] & 0x80, 0, "server frames are never masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.tcp.read_exact(&mut b).await.ok()?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.tcp.read_exact(&mut b).await.ok()?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some(match opcode {
            0x1 => RawFrame::Text(String::from_utf8(payload).unwrap()),
            0x9 => RawFrame::Ping,
            0x8 => RawFrame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            other => RawFrame::Other(other),
        })
    }
}

/// A client's text frame (masked, as RFC 6455 requires of clients).
fn masked_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    assert!(payload.len() < 126, "short frames only");
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A `presence.batch`'s `data` as the changes it stands for: one `presence.updated`
/// payload per user (a batch groups users in the same state).
pub fn presence_batch(data: &Value) -> Vec<Value> {
    let batch: chorus_api::events::PresenceBatch = serde_json::from_value(data.clone()).unwrap();
    batch
        .presences()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect()
}

/// Unique-enough names for idempotency keys and such.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) from a test receiver's
/// connection; `None` if it ends first.
pub async fn read_request<S>(stream: &mut S) -> Option<(String, Vec<u8>)>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some((head, buf.split_off(head_end)))
}

/// The server's `/openapi.json`, with a check that each `(path, method)` is in it.
pub async fn documented_routes(s: &TestServer, routes: &[(&str, &str)]) -> Value {
    let doc = s
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .expect_status(StatusCode::OK)
        .body;
    for (path, method) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    doc
}
