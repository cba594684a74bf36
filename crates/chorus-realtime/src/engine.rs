//! The engine handle: registry, broker, the subscription orchestrator, limits and the
//! shutdown signal, passed explicitly to whoever publishes or serves sockets.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{
    Broker, BrokerError, EventLog, EventSink, MemoryBroker, RedisBroker, Retention, Retentions,
};
use crate::hooks::{SessionAuth, SessionHooks};
use crate::subscriptions::Subscriptions;
use crate::{Metrics, Publish, Registry, UserKey, session};

/// Limits and timings of the realtime engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Interval of server pings; a peer silent for 1.4× this is dropped.
    pub heartbeat: Duration,
    /// Frames a connection may have queued before it is evicted as a slow consumer.
    pub queue_capacity: usize,
    /// Largest accepted inbound text frame; larger ones get `payload_too_large`.
    pub max_frame_bytes: usize,
    /// Inbound frames per second per connection (sustained) and burst.
    pub inbound_per_sec: u32,
    pub inbound_burst: u32,
    /// Frames over the rate limit, in a row, before the connection is closed as a flood.
    pub flood_strikes: u32,
    pub retention: Retention,
    /// Most subscriptions one connection may hold through `subscribe` / `resume`
    /// (and most scopes one `resume` may name); beyond it: `limit_exceeded`.
    pub max_subscriptions: usize,
    /// Where the engine reads the time (heartbeats, publish times, retention, expiry).
    pub clock: crate::Clock,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(25_000),
            queue_capacity: 1_024,
            max_frame_bytes: 64 * 1024,
            inbound_per_sec: 50,
            inbound_burst: 100,
            flood_strikes: 200,
            retention: Retention::default(),
            max_subscriptions: 1_000,
            clock: crate::Clock::system(),
        }
    }
}

pub struct Engine {
    pub config: EngineConfig,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub broker: Arc<dyn Broker>,
    /// Each scope's retention window (`config.retention`, except where a rule installed
    /// by the application gives a scope its own), as the broker applies it.
    pub retentions: Retentions,
    /// Every subscription op goes through it (authorize → … → revoke).
    pub subscriptions: Subscriptions,
    shutdown: CancellationToken,
    sessions: TaskTracker,
}

impl Engine {
    /// A single-node engine with the in-memory broker.
    pub fn in_memory(config: EngineConfig) -> Arc<Self> {
        Self::single_node(config, None)
    }

    /// A single-node engine whose offsets and history are `log`'s (the database's event
    /// log), so resume survives restarts.
    pub fn single_node(config: EngineConfig, log: Option<Arc<dyn EventLog>>) -> Arc<Self> {
        let (metrics, registry) = Self::parts(&config);
        let sink: Arc<dyn EventSink> = registry.clone();
        let retentions = Retentions::new(config.retention);
        let broker = MemoryBroker::with_log(sink, retentions.clone(), config.clock, log);
        Self::assemble(config, metrics, registry, broker, retentions)
    }

    /// A multi-node engine on Redis Streams (see [`RedisBroker`]). Fails when Redis
    /// cannot be reached.
    pub async fn with_redis(config: EngineConfig, url: &str) -> Result<Arc<Self>, BrokerError> {
        let client =
            redis::Client::open(url).map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Self::with_redis_client(config, client, None).await
    }

    /// As [`Engine::with_redis`], over a client built by the caller (TLS settings), with
    /// the shared database's event log behind the streams when there is one.
    pub async fn with_redis_client(
        config: EngineConfig,
        client: redis::Client,
        log: Option<Arc<dyn EventLog>>,
    ) -> Result<Arc<Self>, BrokerError> {
        let (metrics, registry) = Self::parts(&config);
        let sink: Arc<dyn EventSink> = registry.clone();
        let retentions = Retentions::new(config.retention);
        let broker = RedisBroker::connect_client(
            client,
            sink,
            metrics.clone(),
            retentions.clone(),
            config.clock,
            log,
        )
        .await?;
        Ok(Self::assemble(
            config, metrics, registry, broker, retentions,
        ))
    }

    fn parts(config: &EngineConfig) -> (Arc<Metrics>, Arc<Registry>) {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(
            metrics.clone(),
            config.queue_capacity,
            config.clock,
        ));
        (metrics, registry)
    }

    fn assemble(
        config: EngineConfig,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        broker: Arc<dyn Broker>,
        retentions: Retentions,
    ) -> Arc<Self> {
        let subscriptions = Subscriptions::new(
            registry.clone(),
            broker.clone(),
            metrics.clone(),
            config.max_subscriptions,
        );
        Arc::new(Self {
            config,
            metrics,
            registry,
            broker,
            retentions,
            subscriptions,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
        })
    }

    /// Publishes an event after the change it describes is durable.
    pub async fn publish(&self, publish: Publish) -> Result<Option<u64>, BrokerError> {
        self.metrics.published(&publish.kind);
        self.broker.publish(publish).await
    }

    /// Runs one WebSocket session to its end. The task is tracked for shutdown. With
    /// `hold_for_resume` (`?resume=1`), the connection's initial subscriptions hold their
    /// events until its first frame, so a `resume` continues them with no gap and no
    /// reordering. `auth` says which credential opened it and when that expires (the
    /// connection then closes with 3502, unless the client sent `refresh`). `client`:
    /// the address the client connected from, for the hooks that judge what it sends
    /// later (a `refresh`'s credentials count against it).
    pub fn serve_socket(
        self: &Arc<Self>,
        socket: crate::Socket,
        user: UserKey,
        hooks: Arc<dyn SessionHooks>,
        hold_for_resume: bool,
        auth: SessionAuth,
        client: Option<IpAddr>,
    ) -> impl Future<Output = ()> + Send + use<> {
        self.sessions.track_future(session::run(
            self.clone(),
            socket,
            user,
            hooks,
            hold_for_resume,
            auth,
            client,
        ))
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Tells every session to flush its queue and close with 3001, then waits for
    /// them up to `deadline`. Returns whether all finished in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.shutdown.cancel();
        for conn in self.registry.all_connections() {
            conn.control.fire(chorus_proto::CloseCode::ServerShutdown);
        }
        self.sessions.close();
        tokio::time::timeout(deadline, self.sessions.wait())
            .await
            .is_ok()
    }
}
