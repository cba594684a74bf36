//! The Chorus server: the HTTP API and WebSocket edge over the chat domain and the
//! realtime engine.
//!
//! Layout:
//! - [`config`]: every setting of `chorus serve`.
//! - [`routes`]: thin axum handlers, one file per API area, and [`app`].
//! - [`auth`]: bearer tokens (opaque, admin, JWT) → the calling user.
//! - [`jwt`]: JWTs from an identity provider (HS256, RS256 / ES256 with a PEM key or a
//!   JWKS) → a user and the token's expiry; [`hooks`]: the engine's hooks (`refresh`).
//! - [`error`] / [`extract`]: one error body for every failure, extractor rejections included.
//! - [`webhooks`]: the worker that POSTs queued events to agents' webhooks (signed,
//!   retried with backoff, every attempt recorded).
//! - [`proxies`]: the application's connect, subscribe and publish proxies (gateway
//!   mode; signed like webhooks, bounded, never retried).
//!
//! [`build`] wires storage, engine and domain from a [`Config`]; [`run`] serves an
//! already-bound listener until the shutdown future resolves (tests bind `127.0.0.1:0`).

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod hooks;
pub mod jwt;
pub mod limits;
pub mod proxies;
pub mod routes;
pub mod state;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chorus_chat::Chat;
use chorus_chat::namespaces::Namespaces;
use chorus_chat::service::{ChatHooks, RedisPresence, StoreLog};
use chorus_chat::store::{PgStore, SqliteStore, Store};
use chorus_realtime::Engine;
use tokio::net::TcpListener;

pub use chorus_realtime::Clock;
pub use config::Config;
pub use routes::{app, openapi};
pub use state::{AppState, Tasks};

/// A built server and, when the admin user was just created and no admin token is
/// configured, the admin's first token.
pub struct Built {
    pub state: AppState,
    pub bootstrap_token: Option<String>,
}

/// Opens storage (running migrations), creates the engine and the domain, and makes
/// sure the `admin` user exists.
pub async fn build(config: Config) -> anyhow::Result<Built> {
    let clock = config.clock;
    let store: Arc<dyn Store> = match config.database_url.as_deref() {
        Some(url) if url.starts_with("sqlite:") => {
            Arc::new(SqliteStore::open_url(url, clock).await?)
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Arc::new(
                PgStore::connect(url, config.database_pool_size, clock)
                    .await
                    .context("opening the PostgreSQL database")?,
            )
        }
        Some(_) => {
            bail!("CHORUS_DATABASE_URL must start with sqlite:, postgres:// or postgresql://")
        }
        None => {
            private_data_dir(&config.data_dir)?;
            Arc::new(
                SqliteStore::open(&config.embedded_database(), clock)
                    .await
                    .context("opening the embedded database")?,
            )
        }
    };
    // Checked before anything is served: a bad CA file stops the start, not the worker.
    webhooks::Clients::new(&config.webhooks())?;
    let redis = match config.redis_url.as_deref() {
        Some(url) => Some(redis_client(url, config.redis_ca_file.as_deref())?),
        None => None,
    };
    // The engine's offsets and history are the database's event log.
    let log = StoreLog::new(store.clone(), clock);
    let engine = match redis.clone() {
        Some(client) => Engine::with_redis_client(config.engine(), client, Some(log))
            .await
            .context("connecting to Redis (CHORUS_REDIS_URL)")?,
        None => Engine::single_node(config.engine(), Some(log)),
    };
    let proxies = proxies::Proxies::from_config(&config)?.map(Arc::new);
    // Before the admin is created: a short `jwt_secret` or a plain `http://` JWKS URL
    // stops the start with nothing done.
    let jwt = jwt::JwtVerifier::from_config(&config).await?;
    let mut chat = Chat::new(store, engine.clone(), config.chat());
    if let Some(proxies) = &proxies {
        chat = chat.with_app_proxy(proxies.clone());
    }
    let mut cluster_presence = None;
    if let Some(client) = redis {
        // A fresh id per process: a restarted node is a new node, its predecessor's
        // connections expire like those of any node that died.
        let node = format!("{:016x}", rand::random::<u64>());
        let presence = RedisPresence::connect_client(client, node, config.clock)
            .await
            .context("connecting presence to Redis (CHORUS_REDIS_URL)")?;
        chat = chat.with_presence_tracker(presence.clone());
        cluster_presence = Some(presence);
    }
    let chat = Arc::new(chat);
    chat.set_namespaces(
        Namespaces::new(config.namespaces.clone())
            .map_err(|e| anyhow::anyhow!("namespaces: {e}"))?,
    );
    // One node keeps its scopes' windows in memory: before anything is served or
    // published, each is filled with what it held before a restart, so resumes after
    // it are answered from memory. Only a speed-up: when the log cannot be read, the
    // node starts anyway and resumes read the log as they need it.
    if config.redis_url.is_none() && config.warm_events > 0 {
        let started = std::time::Instant::now();
        match engine.broker.warm(config.warm_events).await {
            Ok(events) => tracing::info!(
                events,
                ms = started.elapsed().as_millis() as u64,
                "retention windows filled from the event log"
            ),
            Err(err) => {
                tracing::warn!(cause = %err, "retention windows not filled from the event log")
            }
        }
    }
    chat.spawn_stream_sweeper();
    chat.spawn_turn_sweeper();
    if let Some(presence) = cluster_presence {
        chat.spawn_presence_sweeper(presence);
    }
    // With an admin token configured, that token is the admin's credential: the admin
    // user is created without one of its own (nothing to print or write).
    let (admin, bootstrap_token) = match config.admin_token {
        Some(_) => (chat.ensure_admin().await, None),
        None => match chat.bootstrap_admin().await {
            Ok((admin, token)) => (Ok(admin), token),
            Err(err) => (Err(err), None),
        },
    };
    let admin = admin.map_err(|e| anyhow::anyhow!("creating the admin user: {e}"))?;
    let auth = Arc::new(auth::Authenticator::new(
        chat.clone(),
        admin.id,
        config.admin_token.as_deref(),
        jwt,
        proxies,
    ));
    let http_limiter = limits::HttpLimiter::from_config(&config).map(Arc::new);
    // The chat answers the engine's questions; `refresh` needs the authenticator (and
    // counts its failures as HTTP does).
    let hooks = Arc::new(hooks::ServerHooks::new(
        ChatHooks::new(chat.clone()),
        auth.clone(),
        http_limiter.clone(),
    ));
    let tasks = Tasks::default();
    if let Some(limiter) = &http_limiter {
        let limiter = Arc::downgrade(limiter);
        let stop = tasks.stop.clone();
        tasks.tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                let Some(limiter) = limiter.upgrade() else {
                    break;
                };
                limiter.forget_idle();
            }
        });
    }
    {
        // The event log keeps the retention windows (the engine's, the namespaces'), no
        // more; commands' idempotency keys are kept for their day.
        let chat = Arc::downgrade(&chat);
        let retention = config.engine().retention;
        let stop = tasks.stop.clone();
        tasks.tracker.spawn(async move {
            let mut tick = tokio::time::interval(TRIM_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                let Some(chat) = chat.upgrade() else { break };
                match chat
                    .trim_event_log(retention.max_events, retention.max_age)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(events = n, "event log trimmed"),
                    Err(err) => tracing::warn!(cause = %err, "event log not trimmed"),
                }
                match chat.forget_command_keys().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(keys = n, "command idempotency keys forgotten"),
                    Err(err) => {
                        tracing::warn!(cause = %err, "command idempotency keys not forgotten")
                    }
                }
            }
        });
    }
    Ok(Built {
        state: AppState::new(state::Shared {
            config: Arc::new(config),
            chat,
            engine,
            hooks,
            auth,
            http_limiter,
            anonymous: Arc::default(),
            internal: limits::InternalSecret::random(),
            webhooks: Arc::new(webhooks::WebhookMetrics::default()),
            mcp: Arc::default(),
            tasks,
        }),
        bootstrap_token,
    })
}

/// Checks namespaces as the server would compile them at start (the error names the
/// namespace and the field); `chorus namespaces export-ts` refuses what a server would.
pub fn check_namespaces(namespaces: &[chorus_api::Namespace]) -> anyhow::Result<()> {
    Namespaces::new(namespaces.to_vec())
        .map(drop)
        .map_err(|e| anyhow::anyhow!("namespaces: {e}"))
}

/// Replaces the running namespaces with `namespaces` (a SIGHUP reload): connections
/// stay open; every later subscribe, re-check and publish follows the new rules, and
/// the live `topic:` subscriptions on this node are authorized again by them (those
/// refused end with `subscription.revoked`, reason `namespaces_changed`). Under rules
/// that leave no namespace readable by the public, this node's anonymous connections
/// close with 3502, as the upgrade would now refuse them. Answers how many are
/// declared; a bad declaration changes nothing, and neither does a file that declares
/// none while some are running: with no namespace, every topic is open to every
/// authenticated connection (and no schema or retention rule holds), which a file
/// emptied by mistake must not do unnoticed — a restart without them does it.
pub fn reload_namespaces(
    state: &AppState,
    namespaces: Vec<chorus_api::Namespace>,
) -> anyhow::Result<usize> {
    let count = namespaces.len();
    if namespaces.is_empty() && !state.chat.namespaces().is_empty() {
        anyhow::bail!(
            "the file declares no namespace: that would open every topic to every \
             authenticated connection; to run without namespaces, restart without them"
        );
    }
    proxies::check_namespaces(&state.config, &namespaces)?;
    let compiled = Namespaces::new(namespaces).map_err(|e| anyhow::anyhow!("namespaces: {e}"))?;
    state.chat.set_namespaces(compiled);
    let held = state.chat.recheck_topics();
    tracing::debug!(
        subscriptions = held,
        "topic subscriptions re-checked after the reload"
    );
    Ok(count)
}

/// How often the event log is trimmed to the retention window and commands'
/// idempotency keys past their day are forgotten (a pass over each table; reads apply
/// the retention window themselves, so its trim only gives the space back).
const TRIM_EVERY: Duration = Duration::from_secs(600);

/// The Redis client of the broker and presence. `rediss://` is TLS, verified against
/// the built-in Mozilla roots, or against `ca_file` alone when it is set.
fn redis_client(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<redis::Client> {
    let Some(path) = ca_file else {
        return redis::Client::open(url).context("parsing CHORUS_REDIS_URL");
    };
    let root_cert =
        std::fs::read(path).with_context(|| format!("reading redis_ca_file {}", path.display()))?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    redis::Client::build_with_tls(url, certificates).with_context(|| {
        format!(
            "using redis_ca_file {} for CHORUS_REDIS_URL",
            path.display()
        )
    })
}

/// The data dir holds every message and webhook secret: created 0700 (Unix), and an
/// existing one open to others is tightened, with a warning.
fn private_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("reading the data directory {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data directory was open to others; making it 0700"
            );
            // Not ours to change (another owner): say so, but serve.
            let private = std::fs::Permissions::from_mode(0o700);
            if let Err(err) = std::fs::set_permissions(dir, private) {
                tracing::warn!(
                    dir = %dir.display(),
                    cause = %err,
                    "could not make the data directory private"
                );
            }
        }
    }
    Ok(())
}

/// Serves until `shutdown` resolves, then stops accepting, tells every WebSocket
/// client to reconnect (close 3001) after flushing its queue, and waits for them up to
/// the configured grace period. Returns once every task the server started has ended:
/// the HTTP connections, the sessions (or the grace period is over), the webhook
/// worker and the edge's other tasks ([`Tasks`]), then the chat's ([`Chat::shutdown`]).
///
/// [`Chat::shutdown`]: chorus_chat::Chat::shutdown
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let engine = state.engine.clone();
    let chat = state.chat.clone();
    let tasks = state.tasks.clone();
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let draining = tokio_util::sync::CancellationToken::new();
    let drain = tokio::spawn({
        let draining = draining.clone();
        async move {
            shutdown.await;
            draining.cancel();
            // WebSocket sessions outlive axum's graceful shutdown; the engine tracks them.
            engine.shutdown(grace).await
        }
    });
    // Webhook delivery runs beside the server and stops when it starts draining.
    tasks.tracker.spawn(webhooks::run(
        state.chat.clone(),
        state.config.webhooks(),
        state.webhooks.clone(),
        draining.clone(),
    ));
    start_mcp(&listener, &state, &draining);
    serve_http(listener, app(state), draining.cancelled_owned()).await;
    let drained = drain.await.unwrap_or(false);
    if !drained {
        tracing::warn!("some connections did not close within the grace period");
    }
    // Sessions still open past the grace period end here with their upgrade tasks.
    tasks.stop.cancel();
    tasks.tracker.close();
    tasks.tracker.wait().await;
    // Last: the sessions' ends start presence grace periods, which settle now.
    chat.shutdown().await;
    Ok(())
}

/// A listener on `addr` whose kernel queue holds `backlog` connections not yet accepted
/// (tokio's `TcpListener::bind` asks for 128). Address reuse as `bind` sets it, so a
/// restarted server listens again at once.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Sets up `/mcp`: its agents reach this server at the listener's address (loopback
/// when it listens on every interface), marked as the server's own (`limits`), and
/// their waits end when the server drains.
fn start_mcp(
    listener: &TcpListener,
    state: &AppState,
    draining: &tokio_util::sync::CancellationToken,
) {
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            tracing::error!(cause = %err, "no local address: /mcp is off");
            return;
        }
    };
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let base = format!("http://{}", std::net::SocketAddr::new(ip, addr.port()));
    let pool = chorus_mcp::AgentPool::new(base, state.internal.headers(), draining.clone());
    state.tasks.tracker.spawn(pool.clone().run_sweeper());
    let endpoint = chorus_mcp::McpEndpoint::new(pool, state.config.max_body_bytes);
    if state.mcp.set(endpoint).is_err() {
        tracing::warn!("/mcp was already running");
    }
}

/// Accepts connections and serves HTTP/1.1 on each until `stop` resolves, then waits
/// for the requests in flight (not for upgraded WebSockets: the engine owns those).
///
/// Not `axum::serve`: it hands upgraded connections over wrapped in a private type, and
/// the WebSocket edge needs the `TcpStream` back (see `routes::ws`). This is the same
/// loop over hyper's own connection builder and graceful-shutdown watcher.
async fn serve_http(listener: TcpListener, app: axum::Router, stop: impl Future<Output = ()>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let connections = tokio_util::task::TaskTracker::new();
    let stopping = tokio_util::sync::CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new());
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Event frames are small and latency-sensitive: no Nagle delay.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(cause = %err, "TCP_NODELAY failed");
        }
        let service = TowerToHyperService::new(app.clone());
        // Every request carries its peer's address (`limits` counts failed
        // authentications per address), as `axum::serve` does with `ConnectInfo`.
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            hyper::service::Service::call(&service, req)
        });
        let conn = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = stopping.cancelled() => {
                    // Finish the request in flight, then close; an idle connection
                    // closes now.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(cause = %err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
}

/// An accept error: a connection that failed before it was accepted is nobody's
/// concern; anything else (out of file descriptors) is logged and waited out, as
/// `axum::serve` does.
async fn accept_failed(err: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(cause = %err, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
