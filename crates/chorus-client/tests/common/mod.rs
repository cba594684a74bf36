//! The real server, in-process, for the client's tests: start, stop, and start again on
//! the same address and data directory.

// Each test crate uses a part of this harness.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use chorus_client::{
    AddMember, Client, CreateChannel, CreateUser, EventFrame, Realtime, Role, UserId,
    UserWithToken, WorkspaceId,
};
use chorus_server::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin";
/// Longest wait for anything expected to happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server; it stops when `stop` is fired or dropped.
pub struct TestServer {
    pub url: String,
    pub addr: SocketAddr,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            admin_token: Some(ADMIN_TOKEN.into()),
            shutdown_grace_ms: 2_000,
            http_per_sec: 0,
            ..Config::default()
        };
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, task) = serve(config.clone(), listener).await;
        Self {
            url: format!("http://{addr}"),
            addr,
            config,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn admin(&self) -> Client {
        Client::new(&self.url, ADMIN_TOKEN).expect("client")
    }

    /// Tells the server to stop, without waiting.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and waits until it has: its WebSocket clients got 3001 (after
    /// their queued events) and its port is free.
    pub async fn stop(&mut self) {
        self.shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the server stops in time")
                .expect("the server task");
        }
    }

    /// Starts the server again on the same address and data directory (stopping it
    /// first if it runs). Its realtime state (offsets, retention) starts empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = bind_again(self.addr).await;
        let (stop, task) = serve(self.config.clone(), listener).await;
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// Runs a second server on the same data directory on another address until
    /// `work` is done: for writes the clients of this server cannot see live. The
    /// server must be stopped.
    pub async fn elsewhere<T>(&self, work: impl AsyncFnOnce(&str) -> T) -> T {
        assert!(self.task.is_none(), "stop the server first");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (stop, task) = serve(self.config.clone(), listener).await;
        let out = work(&url).await;
        let _ = stop.send(());
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the other server stops in time")
            .expect("the other server task");
        out
    }

    /// The realtime engine's counters (`GET /api/v1/realtime/stats`).
    pub async fn stats(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}/api/v1/realtime/stats", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }
}

async fn serve(config: Config, listener: TcpListener) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let built = chorus_server::build(config).await.expect("server builds");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        chorus_server::run(listener, built.state, async move {
            let _ = stopped.await;
        })
        .await
        .expect("the server runs");
    });
    (stop, task)
}

/// Binds `addr` again; the previous listener is closed, but the kernel may take a
/// moment to release the port.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) if tokio::time::Instant::now() < deadline => {
                eprintln!("binding {addr} again: {err}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("cannot bind {addr} again: {err}"),
        }
    }
}

pub async fn user(admin: &Client, name: &str) -> (UserWithToken, Client) {
    let created = admin
        .create_user(&CreateUser::new(name))
        .await
        .expect("create user");
    let client = admin.with_token(created.token.clone());
    (created, client)
}

/// Alice owns a workspace with Bob and Carol in it and a `general` channel with Bob.
pub struct World {
    pub server: TestServer,
    pub alice: Client,
    pub alice_token: String,
    pub bob: Client,
    pub bob_id: UserId,
    pub bob_token: String,
    pub carol: Client,
    pub carol_id: UserId,
    pub carol_token: String,
    pub workspace: WorkspaceId,
    pub general: chorus_client::Channel,
}

pub async fn world() -> World {
    world_on(TestServer::start().await).await
}

pub async fn world_on(server: TestServer) -> World {
    let admin = server.admin();
    let (alice_user, alice) = user(&admin, "alice").await;
    let (bob_user, bob) = user(&admin, "bob").await;
    let (carol_user, carol) = user(&admin, "carol").await;
    let workspace = alice.create_workspace("acme").await.expect("workspace").id;
    for id in [bob_user.user.id, carol_user.user.id] {
        let member = alice
            .add_workspace_member(
                workspace,
                &AddMember {
                    user_id: id,
                    role: Role::Member,
                },
            )
            .await
            .expect("add member");
        assert_eq!(member.role, Role::Member);
    }
    let general = alice
        .create_channel(
            workspace,
            &CreateChannel {
                member_ids: vec![bob_user.user.id],
                ..CreateChannel::new("general")
            },
        )
        .await
        .expect("channel");
    World {
        server,
        alice,
        alice_token: alice_user.token,
        bob,
        bob_id: bob_user.user.id,
        bob_token: bob_user.token,
        carol,
        carol_id: carol_user.user.id,
        carol_token: carol_user.token,
        workspace,
        general,
    }
}

/// Whether `event` is presence: ephemeral, and timed by connects (a connection hears
/// its own user come online, coalesced up to 200 ms later), so the tests here, which
/// are about the events they publish, pass over it.
pub fn is_presence(event: &EventFrame) -> bool {
    event.kind.starts_with("presence.")
}

/// The next event that is not presence, within [`WAIT`].
pub async fn next_event(live: &mut Realtime) -> EventFrame {
    loop {
        let event = tokio::time::timeout(WAIT, live.next_event())
            .await
            .expect("an event in time")
            .expect("connection open");
        if !is_presence(&event) {
            return event;
        }
    }
}

pub async fn next_of_type(live: &mut Realtime, kind: &str) -> EventFrame {
    loop {
        let event = next_event(live).await;
        if event.kind == kind {
            return event;
        }
    }
}
