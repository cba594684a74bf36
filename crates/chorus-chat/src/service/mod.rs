//! The chat rules. [`Chat`] is handed the store and the realtime engine explicitly;
//! each area of the API has its own file of `impl Chat` methods.

pub mod agents;
mod cache;
mod catchup;
mod channels;
pub mod commands;
pub mod delivery;
mod dev;
mod edge;
mod events;
pub use events::{StoreLog, proxy_credential};
mod gate;
mod gateway;
pub mod keys;
mod lookups;
mod loop_guard;
mod messages;
mod pins;
pub mod presence;
mod presence_batch;
pub mod presence_redis;
mod reactions;
mod reads;
mod realtime;
pub mod sign_in_links;
mod streams;
mod tokens;
mod topic_presence;
mod turns;
mod users;
mod workspaces;

use std::sync::Arc;
use std::time::Duration;

use chorus_realtime::Engine;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::UserId;
use crate::store::Store;
use gate::Gate;
use presence::{LocalPresence, PresenceTracker};

pub use agents::{SetWebhook, UserIds, WebhookSettings};
pub use channels::{CreateChannel, OpenDm, UpdateChannel};
pub use commands::{COMMAND_KEYS_KEPT, CreateCommand, Sent};
pub use dev::{DEV_CHANNEL, DEV_WORKSPACE};
pub use gateway::{AppProxy, check_publish_type};
pub use keys::{CreateServerKey, NewKey};
pub use messages::Posted;
pub use messages::{EditMessage, SendMessage};
pub use presence::{NodeStat, SetStatus};
pub use presence_redis::RedisPresence;
pub use reads::MarkRead;
pub use realtime::ChatHooks;
pub use sign_in_links::{CreateSignInLink, NewSignInLink};
pub use tokens::{CreateToken, MAX_TOKENS_PER_USER, NewApiToken};
pub use users::{CreateUser, MAX_USERS_PAGE, NewAccount};
pub use workspaces::{AddMember, SetRole};

/// Domain limits and timings.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Largest message text, in bytes.
    pub max_message_bytes: usize,
    /// `typing` signals per user per minute.
    pub typing_per_minute: u32,
    /// Workspaces one user (a server admin aside) may create: each is a scope their
    /// presence is announced on, so one account's must not grow without bound.
    pub max_workspaces_per_user: usize,
    /// How long clients show a `typing` signal without a new one (`expires_in_ms`).
    pub typing_expires: Duration,
    /// How long a user stays online after their last connection closed, so a page
    /// reload does not announce offline-then-online.
    pub presence_grace: Duration,
    /// Where the service reads the time (presence, limits, caches, token expiry).
    pub clock: chorus_realtime::Clock,
    /// A streaming message's roll-up window: what a channel's streams got within it
    /// reaches readers as one `message.deltas`, and the stored text is at most this far
    /// behind.
    pub stream_rollup: Duration,
    /// A stream nobody appended to for this long is aborted (reason `idle`).
    pub stream_idle: Duration,
    /// Loop guard: agent-authored messages in a row (no person's in between) after
    /// which agents are no longer woken in that channel until a person writes; 0: off.
    pub loop_guard_run: u32,
    /// Loop guard: agent-authored messages per minute in a channel, likewise; 0: off.
    pub loop_guard_per_minute: u32,
    /// Client `publish` ops per second per user (anonymous connections share one
    /// budget), besides each connection's inbound frame rate.
    pub client_publish_per_sec: u32,
    /// `round_robin`: how long a woken agent has to report `working` before its turn
    /// passes to the next agent (a channel's `turn_timeout_ms` overrides it).
    pub turn_timeout: Duration,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024,
            typing_per_minute: 60,
            max_workspaces_per_user: 100,
            typing_expires: Duration::from_secs(5),
            presence_grace: Duration::from_secs(3),
            clock: chorus_realtime::Clock::system(),
            stream_rollup: Duration::from_millis(40),
            stream_idle: Duration::from_secs(60),
            loop_guard_run: 20,
            loop_guard_per_minute: 60,
            client_publish_per_sec: 20,
            turn_timeout: Duration::from_secs(30),
        }
    }
}

/// Keys whose events must be published in commit order.
struct Gates {
    /// Thread roots (a top-level message is its own root): message events.
    threads: Gate,
    /// Users: presence.
    users: Gate,
    /// The one-time setup of the `--dev` workspace.
    dev_setup: tokio::sync::Mutex<()>,
    /// `round_robin` channels: a send's turn is taken and its events published in the
    /// same order as the messages were inserted.
    turns: Gate,
}

pub struct Chat {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    config: ChatConfig,
    presence: Arc<dyn PresenceTracker>,
    presence_batch: presence_batch::PresenceBatcher,
    gates: Gates,
    /// Rung when a webhook delivery is queued, so the worker need not poll.
    webhooks: Arc<Notify>,
    /// Token, channel and agent-member reads on the send path ([`cache`]).
    cache: cache::ReadCache,
    /// Token, membership and `last_seen` reads of many connections, answered together
    /// ([`lookups`]).
    lookups: Lookups,
    /// Token uses waiting to be written as `last_used_at` ([`tokens`]).
    token_usage: Arc<tokens::TokenUsage>,
    /// Every task the chat starts, so [`shutdown`](Self::shutdown) can end them.
    background: Background,
    /// Connection ends whose presence bookkeeping is done ([`Chat::closes_handled`]).
    closes_handled: std::sync::atomic::AtomicU64,
    /// Streaming messages this node holds appends for ([`streams`]).
    streams: Arc<streams::Streams>,
    /// Agent messages counted per channel ([`loop_guard`]).
    loop_guards: loop_guard::LoopGuards,
    /// The declared `topic:` namespaces ([`gateway`]), replaced whole on a reload. A
    /// std lock: it is held only to clone or swap the `Arc`, never across an await.
    namespaces: std::sync::RwLock<Arc<crate::namespaces::Namespaces>>,
    /// The application's `subscribe` and `publish` proxies, asked for namespaces whose
    /// access is `proxy` ([`gateway`]); `None` when none is configured.
    app_proxy: Option<Arc<dyn gateway::AppProxy>>,
    /// Where the registry hands subscription changes of watched topics
    /// ([`topic_presence`]); made with the first namespaces that watch any.
    topic_changes:
        std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<topic_presence::TopicChange>>,
}

/// The reads every new connection makes, coalesced across connections ([`lookups`]).
struct Lookups {
    /// By token hash: the token's owner.
    tokens: lookups::Coalesced<String, crate::store::TokenOwner>,
    /// By user: the workspaces and channels they are a member of (their initial
    /// scopes; the workspaces their presence is announced in).
    memberships: lookups::Coalesced<UserId, Memberships>,
    /// By user: `last_seen` set to now (the query's time), the presence as stored.
    came_online: lookups::Coalesced<UserId, crate::model::Presence>,
}

/// An id written the one way Chorus writes it (`7`, not `07` or `+7`), as it appears
/// in the scopes events are published to; any other spelling names nothing.
pub(crate) fn canonical_id(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().filter(|id| id.to_string() == text)
}

type Memberships = (Vec<crate::model::WorkspaceId>, Vec<crate::model::ChannelId>);

/// Keys per coalesced query.
const LOOKUP_BATCH: usize = 500;

/// Keys per coalesced query: [`LOOKUP_BATCH`], or `CHORUS_LOOKUP_BATCH` when set — a
/// knob for A/B measurements in one build (0: each connection its own queries, as
/// before coalescing; docs/benchmarks.md), not a setting.
fn lookup_batch() -> usize {
    std::env::var("CHORUS_LOOKUP_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LOOKUP_BATCH)
}

impl Lookups {
    fn new(store: &Arc<dyn Store>, clock: chorus_realtime::Clock) -> Self {
        let batch = lookup_batch();
        let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
        Self {
            tokens: lookups::Coalesced::new(
                batch,
                Arc::new(move |hashes: Vec<String>| {
                    let store = s1.clone();
                    Box::pin(async move { store.token_owners(&hashes).await })
                }),
            ),
            memberships: lookups::Coalesced::new(
                batch,
                Arc::new(move |users: Vec<UserId>| {
                    let store = s2.clone();
                    Box::pin(async move {
                        Ok(store
                            .memberships_of_users(&users)
                            .await?
                            .into_iter()
                            .collect())
                    })
                }),
            ),
            came_online: lookups::Coalesced::new(
                batch,
                Arc::new(move |users: Vec<UserId>| {
                    let store = s3.clone();
                    let now = crate::model::Timestamp(clock.now_ms());
                    Box::pin(async move {
                        let presences = store.set_last_seen_of(&users, now).await?;
                        Ok(presences.into_iter().map(|p| (p.user_id, p)).collect())
                    })
                }),
            ),
        }
    }
}

/// The chat's own tasks (presence grace timers and batches, the token-use writer, the
/// second close of revoked sessions, the multi-node presence sweeper). Each waits for
/// time with `stop` beside it: on shutdown it does at once what it was waiting to do
/// (or, for the endless ones, ends), and [`Chat::shutdown`] waits until all have ended.
#[derive(Clone, Default)]
pub(crate) struct Background {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Background {
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Cancelled when the chat shuts down.
    pub(crate) fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Sleeps `wait` unless shutdown comes first; `false` when it did.
    pub(crate) async fn sleep(&self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = self.stop.cancelled() => false,
        }
    }
}

impl Chat {
    /// A chat whose presence counts this node's connections ([`LocalPresence`]).
    pub fn new(store: Arc<dyn Store>, engine: Arc<Engine>, config: ChatConfig) -> Self {
        let background = Background::default();
        Self {
            lookups: Lookups::new(&store, config.clock),
            store,
            presence_batch: presence_batch::PresenceBatcher::new(
                engine.clone(),
                config.clock,
                background.clone(),
            ),
            cache: cache::ReadCache::new(config.clock),
            engine,
            config,
            presence: Arc::new(LocalPresence::default()),
            gates: Gates {
                threads: Gate::new(256),
                users: Gate::new(256),
                dev_setup: tokio::sync::Mutex::new(()),
                turns: Gate::new(64),
            },
            webhooks: Arc::new(Notify::new()),
            token_usage: tokens::TokenUsage::new(),
            background,
            closes_handled: std::sync::atomic::AtomicU64::new(0),
            streams: Arc::default(),
            loop_guards: loop_guard::LoopGuards::default(),
            namespaces: std::sync::RwLock::default(),
            app_proxy: None,
            topic_changes: std::sync::OnceLock::new(),
        }
    }

    /// Replaces the presence tracker (e.g. with one shared by several nodes).
    pub fn with_presence_tracker(mut self, tracker: Arc<dyn PresenceTracker>) -> Self {
        self.presence = tracker;
        self
    }

    /// Asks `proxy` who may read and publish in namespaces whose access is `proxy`.
    pub fn with_app_proxy(mut self, proxy: Arc<dyn gateway::AppProxy>) -> Self {
        self.app_proxy = Some(proxy);
        self
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// The time now, on the configured clock.
    pub fn now(&self) -> crate::model::Timestamp {
        crate::model::Timestamp(self.config.clock.now_ms())
    }

    /// Ends the chat's background tasks and waits for them: a grace period still
    /// running settles now (the user goes offline, `last_seen` is recorded), waiting
    /// presence changes are published, a pending second close goes out now, the token
    /// uses noted are written, the presence sweeper stops; then the store closes
    /// (SQLite: its WAL copied into the file). Call it after the engine's sessions have
    /// ended (their ends start grace periods), last.
    pub async fn shutdown(&self) {
        self.background.stop.cancel();
        self.background.tasks.close();
        self.background.tasks.wait().await;
        // Each stream's flusher writes what it holds.
        self.streams.shutdown().await;
        self.store.close().await;
    }

    /// How many of the chat's background tasks are running. With
    /// [`closes_handled`](Self::closes_handled), what lets a test know that every
    /// presence change it caused has been published (grace timers and coalesced
    /// batches are background tasks), rather than sleep and hope.
    #[cfg(feature = "test-util")]
    pub fn background_tasks(&self) -> usize {
        self.background.tasks.len()
    }

    /// How many connection ends the chat has handled (presence counted down, a grace
    /// timer started when it was the user's last).
    #[cfg(feature = "test-util")]
    pub fn closes_handled(&self) -> u64 {
        self.closes_handled
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Notified whenever a webhook delivery is queued (the worker waits on it).
    pub fn webhook_signal(&self) -> Arc<Notify> {
        self.webhooks.clone()
    }
}
