//! Server configuration. The binary layers it: flags > environment > TOML file > defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chorus_chat::ChatConfig;
use chorus_realtime::{Clock, EngineConfig, Retention};
use serde::Deserialize;

use crate::webhooks::WebhookConfig;

/// Every setting of `chorus serve`. Field names are the TOML keys. `Debug` hides the
/// secrets (see [`redacted_debug`]).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to serve HTTP and WebSocket on (`CHORUS_LISTEN`).
    pub listen: SocketAddr,
    /// Connections the kernel may queue before they are accepted
    /// (`CHORUS_LISTEN_BACKLOG`; capped by `net.core.somaxconn`). A reconnect storm
    /// (a deploy, a node's failover) arrives at once: with tokio's default of 128,
    /// thousands of clients see SYN retries and a second's delay.
    pub listen_backlog: u32,
    /// Directory of the embedded database (`CHORUS_DATA_DIR`).
    pub data_dir: PathBuf,
    /// `sqlite://…` (overrides `data_dir`) or `postgres://…` (`CHORUS_DATABASE_URL`).
    pub database_url: Option<String>,
    /// Most connections the PostgreSQL pool opens (`CHORUS_DATABASE_POOL_SIZE`);
    /// SQLite ignores it.
    pub database_pool_size: u32,
    /// Enables the Redis Streams broker (`CHORUS_REDIS_URL`; `rediss://` for TLS).
    pub redis_url: Option<String>,
    /// PEM file of the CA(s) that signed a `rediss://` server's certificate
    /// (`CHORUS_REDIS_CA_FILE`); when set, only these are trusted for Redis, otherwise
    /// the built-in Mozilla roots.
    pub redis_ca_file: Option<PathBuf>,
    /// A token accepted as the `admin` user's, as given (`CHORUS_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// HS256 secret for application-minted JWTs (`CHORUS_JWT_SECRET`); at least 32
    /// bytes, else the start fails (one token is enough to try secrets offline).
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA or P-256) for RS256 / ES256 JWTs (`CHORUS_JWT_PUBLIC_KEY_FILE`).
    pub jwt_public_key_file: Option<PathBuf>,
    /// A JWKS for RS256 / ES256 JWTs: a file path or an `https://` URL (`http://` only to
    /// a loopback host; anything else fails the start), re-read every 10 min and on an
    /// unknown `kid` (`CHORUS_JWT_JWKS`). Fetched without the environment's proxy and
    /// without following redirects.
    pub jwt_jwks: Option<String>,
    /// The `iss` a JWT must carry; unset: not checked.
    pub jwt_issuer: Option<String>,
    /// An `aud` a JWT must carry; unset: not checked.
    pub jwt_audience: Option<String>,
    /// Refuse JWTs without `exp` (default). Off: such a token never expires.
    pub jwt_require_exp: bool,
    /// A valid JWT whose `sub` names no user creates that user. Off by default.
    pub jwt_provision_users: bool,
    /// A JWT may sign in a server admin (`is_admin`) (`CHORUS_JWT_ADMINS`). Off by
    /// default: a token whose `sub` names one (`admin`, `1`) is refused, so no subject
    /// an identity provider hands out can be the server's admin by coincidence.
    pub jwt_admins: bool,
    /// The JWT claim holding the roles a token gives its connection (an array of role
    /// names, for `role:<name>` namespaces); default `roles`. Absent in a token: none.
    pub jwt_roles_claim: String,
    /// Password-less login for local trials. Never on by default.
    pub dev: bool,
    pub heartbeat_ms: u64,
    /// Offer `permessage-deflate` (RFC 7692) to WebSocket clients that ask for it
    /// (`CHORUS_WS_COMPRESSION`, `--ws-compression`). Off by default: connections then
    /// run exactly as without it. On, a client that offers it gets every message over
    /// 128 bytes compressed on its own (no context takeover: events are compressed once
    /// for all such clients, no connection keeps a compressor), and may compress its own.
    pub ws_compression: bool,
    pub max_message_bytes: usize,
    pub max_frame_bytes: usize,
    /// Largest HTTP request body.
    pub max_body_bytes: usize,
    pub queue_capacity: usize,
    pub inbound_per_sec: u32,
    pub inbound_burst: u32,
    /// Most subscriptions one connection holds through `subscribe` / `resume`.
    pub max_subscriptions: usize,
    pub typing_per_minute: u32,
    /// Workspaces one user (a server admin aside) may create (`409` past it).
    pub max_workspaces_per_user: usize,
    /// A streaming message's roll-up window: what a channel's streams got within it
    /// reaches readers as one `message.deltas` (and the stored text is at most this far
    /// behind).
    pub stream_rollup_ms: u64,
    /// A streaming message nobody appended to for this long is aborted (`idle`).
    pub stream_idle_ms: u64,
    /// Loop guard: agent messages in a row in a channel (no person's in between) after
    /// which agents are no longer woken there until a person writes; 0: off.
    pub loop_guard_run: u32,
    /// Loop guard: agent messages per minute in a channel, likewise; 0: off.
    pub loop_guard_per_minute: u32,
    /// `round_robin`: how long a woken agent has to report `working` before its turn
    /// passes to the next agent (a channel's `turn_timeout_ms` overrides it).
    pub turn_timeout_ms: u64,
    pub retention_events: usize,
    pub retention_secs: u64,
    /// One node without Redis: how many of the event log's latest events fill the
    /// retention windows in memory at start (`CHORUS_WARM_EVENTS`), so clients resuming
    /// after a restart are answered from memory; a scope beyond it is read from the log
    /// on its first resume. 0: none (a faster start).
    pub warm_events: usize,
    /// How long shutdown waits for connections to drain.
    pub shutdown_grace_ms: u64,
    /// HTTP requests per second per user (sustained), whatever token they come with; 0
    /// turns the limit off.
    pub http_per_sec: u32,
    /// HTTP requests a user may send in a burst above the sustained rate.
    pub http_burst: u32,
    /// Failed authentications per second per client address (sustained); over it, the
    /// address's credentials are refused (429) without being tried, but for those that
    /// authenticated from it in the last 10 minutes. 0 turns it off.
    pub auth_failures_per_sec: u32,
    /// Failed authentications a client address may make in a burst.
    pub auth_failures_burst: u32,
    /// Proxies in front of the server that append the client's address to
    /// `X-Forwarded-For`. 0 (default): the header is ignored and the client is the TCP
    /// peer; n: the n-th address from the header's right end.
    pub trusted_proxy_hops: u32,
    /// How long a user stays online after their last connection closes (so a page
    /// reload does not flicker offline).
    pub presence_grace_ms: u64,
    /// Webhook attempts per event before it is recorded as failed.
    pub webhook_max_attempts: u32,
    /// Wait after a webhook's first failure; doubled after each further one.
    pub webhook_backoff_ms: u64,
    /// Longest wait between two webhook attempts.
    pub webhook_backoff_max_ms: u64,
    /// How long one webhook attempt may take.
    pub webhook_timeout_ms: u64,
    /// Webhook attempts in flight at once.
    pub webhook_concurrency: usize,
    /// Lets webhooks go to loopback and private addresses (a receiver on this machine
    /// or network). Off: only public addresses.
    pub webhook_allow_private: bool,
    /// PEM file of extra CA(s) `https://` webhooks may be signed by (a private or
    /// self-signed receiver), trusted besides the built-in Mozilla roots.
    pub webhook_ca_file: Option<PathBuf>,
    /// When set, `/metrics` answers only `Authorization: Bearer <metrics_token>`
    /// (`CHORUS_METRICS_TOKEN`); unset (default), it is open as before.
    pub metrics_token: Option<String>,
    /// Client `publish` ops per second per user (anonymous connections share one
    /// budget), besides the inbound frame rate of each connection.
    pub client_publish_per_sec: u32,
    /// Anonymous WebSocket connections (no token; only when a namespace is `public`)
    /// one client address may hold at once; 0: none at all.
    pub anonymous_per_address: u32,
    /// Declared `topic:` namespaces (gateway mode), `[[namespaces]]` tables in the TOML
    /// file (docs/protocol.md, "Namespaces"). None: topics are readable by every user
    /// and published by the server only, as without gateway mode.
    pub namespaces: Vec<chorus_api::Namespace>,
    /// The proxies to the application (gateway mode), the TOML file's `[proxy]` table:
    /// `connect` authenticates credentials Chorus does not recognise, `subscribe` and
    /// `publish` judge namespaces whose access is `proxy` (docs/gateway.md).
    pub proxy: ProxyConfig,
    /// Where every part of the server reads the time: the engine, the chat, the rate
    /// limits, JWT expiry, webhook backoff. Not a setting: the system's clock, or a test
    /// clock set by tests (`Clock::following_tokio`).
    #[serde(skip)]
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        let engine = EngineConfig::default();
        let chat = ChatConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7800)),
            data_dir: PathBuf::from("./chorus-data"),
            database_url: None,
            database_pool_size: 10,
            redis_url: None,
            redis_ca_file: None,
            admin_token: None,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_require_exp: true,
            jwt_provision_users: false,
            jwt_admins: false,
            jwt_roles_claim: "roles".to_owned(),
            dev: false,
            heartbeat_ms: engine.heartbeat.as_millis() as u64,
            ws_compression: false,
            max_message_bytes: chat.max_message_bytes,
            max_frame_bytes: engine.max_frame_bytes,
            max_body_bytes: 256 * 1024,
            queue_capacity: engine.queue_capacity,
            inbound_per_sec: engine.inbound_per_sec,
            inbound_burst: engine.inbound_burst,
            max_subscriptions: engine.max_subscriptions,
            typing_per_minute: chat.typing_per_minute,
            max_workspaces_per_user: chat.max_workspaces_per_user,
            stream_rollup_ms: chat.stream_rollup.as_millis() as u64,
            stream_idle_ms: chat.stream_idle.as_millis() as u64,
            loop_guard_run: chat.loop_guard_run,
            loop_guard_per_minute: chat.loop_guard_per_minute,
            turn_timeout_ms: chat.turn_timeout.as_millis() as u64,
            retention_events: engine.retention.max_events,
            retention_secs: engine.retention.max_age.as_secs(),
            warm_events: 100_000,
            listen_backlog: 4096,
            shutdown_grace_ms: 10_000,
            http_per_sec: 100,
            http_burst: 200,
            auth_failures_per_sec: 10,
            auth_failures_burst: 20,
            trusted_proxy_hops: 0,
            presence_grace_ms: chat.presence_grace.as_millis() as u64,
            webhook_max_attempts: 8,
            webhook_backoff_ms: 1_000,
            webhook_backoff_max_ms: 10 * 60 * 1_000,
            webhook_timeout_ms: 10_000,
            webhook_concurrency: 16,
            webhook_allow_private: false,
            webhook_ca_file: None,
            metrics_token: None,
            client_publish_per_sec: chat.client_publish_per_sec,
            anonymous_per_address: 20,
            namespaces: Vec::new(),
            proxy: ProxyConfig::default(),
            clock: Clock::system(),
        }
    }
}

/// `[proxy]`: where the application answers, and the key its requests are signed with.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Signs every proxy request as webhooks are signed (`Chorus-Signature`); required
    /// when any proxy is configured.
    pub secret: Option<String>,
    /// `[proxy.connect]`: bearer tokens (and `/ws` cookies from its `allowed_origins`)
    /// Chorus does not recognise are introspected here.
    pub connect: Option<ProxyEndpoint>,
    /// `[proxy.subscribe]`: asked for namespaces whose `read` is `proxy`.
    pub subscribe: Option<ProxyEndpoint>,
    /// `[proxy.publish]`: asked for namespaces whose `publish` is `proxy`.
    pub publish: Option<ProxyEndpoint>,
}

impl ProxyConfig {
    pub fn any(&self) -> bool {
        self.connect.is_some() || self.subscribe.is_some() || self.publish.is_some()
    }
}

/// One proxy's URL and limits.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyEndpoint {
    /// `http://` or `https://`; loopback and private addresses are allowed (the
    /// operator chose it: the webhook target guard does not apply).
    pub url: String,
    /// How long one request may take, connecting and reading the answer included;
    /// past it the client gets `unavailable`. Never retried.
    #[serde(default = "default_proxy_timeout_ms")]
    pub timeout_ms: u64,
    /// How long an answer is reused (connect: identities, by a hash of the credential;
    /// subscribe: allow and refuse, by user and scope; publish: never cached). 0: ask
    /// every time.
    #[serde(default = "default_proxy_cache_ms")]
    pub cache_ms: u64,
    /// `[proxy.connect]` only: the origins (`https://app.example.com`, as browsers send
    /// `Origin`) whose pages may open `/ws` with the application's session cookie. Chorus
    /// checks the upgrade's `Origin` itself, before the cookie goes anywhere: from any
    /// other origin, or without one, the upgrade carries no cookie (anonymous, or 401)
    /// and the application is not asked. Empty (default): cookies are never forwarded,
    /// only tokens (a warning at start says so). Tokens are not checked against it.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// `Debug` for a settings struct that holds secrets, which configs end up in (logs,
/// panics). Every field is named once, so that a new one does not compile until it is
/// sorted: `plain` as it is, `urls` (`Option<String>`) with their password and query
/// hidden, `secrets` (`Option<String>`) only as set or not.
macro_rules! redacted_debug {
    ($ty:ident { plain: [$($plain:ident),* $(,)?], urls: [$($url:ident),* $(,)?], secrets: [$($secret:ident),* $(,)?] $(,)? }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let Self { $($plain,)* $($url,)* $($secret,)* } = self;
                let mut out = f.debug_struct(stringify!($ty));
                $(out.field(stringify!($plain), $plain);)*
                $(out.field(stringify!($url), &$url.as_deref().map(url_shown));)*
                $(out.field(stringify!($secret), &$secret.as_ref().map(|_| REDACTED));)*
                out.finish()
            }
        }
    };
}

const REDACTED: &str = "<redacted>";

/// A URL setting as `Debug` shows it: without its credentials (as logs show URLs,
/// [`without_credentials`](crate::webhooks::without_credentials)) and with its query
/// (which may hold a password, `?password=`, or a key) replaced; what does not parse as
/// a URL, all of it.
fn url_shown(text: &str) -> String {
    let Ok(url) = url::Url::parse(text) else {
        return REDACTED.to_owned();
    };
    let mut url = crate::webhooks::without_credentials(&url);
    if url.query().is_some() {
        url.set_query(Some(REDACTED));
    }
    url.to_string()
}

// `database_url` and `redis_url` may carry a password; `jwt_jwks` serves public keys.
redacted_debug!(Config {
    plain: [
        listen,
        listen_backlog,
        data_dir,
        database_pool_size,
        redis_ca_file,
        jwt_public_key_file,
        jwt_jwks,
        jwt_issuer,
        jwt_audience,
        jwt_require_exp,
        jwt_provision_users,
        jwt_admins,
        jwt_roles_claim,
        dev,
        heartbeat_ms,
        ws_compression,
        max_message_bytes,
        max_frame_bytes,
        max_body_bytes,
        queue_capacity,
        inbound_per_sec,
        inbound_burst,
        max_subscriptions,
        typing_per_minute,
        max_workspaces_per_user,
        stream_rollup_ms,
        stream_idle_ms,
        loop_guard_run,
        loop_guard_per_minute,
        turn_timeout_ms,
        retention_events,
        retention_secs,
        warm_events,
        shutdown_grace_ms,
        http_per_sec,
        http_burst,
        auth_failures_per_sec,
        auth_failures_burst,
        trusted_proxy_hops,
        presence_grace_ms,
        webhook_max_attempts,
        webhook_backoff_ms,
        webhook_backoff_max_ms,
        webhook_timeout_ms,
        webhook_concurrency,
        webhook_allow_private,
        webhook_ca_file,
        client_publish_per_sec,
        anonymous_per_address,
        namespaces,
        proxy,
        clock,
    ],
    urls: [database_url, redis_url],
    secrets: [admin_token, jwt_secret, metrics_token],
});

redacted_debug!(ProxyConfig {
    plain: [connect, subscribe, publish],
    urls: [],
    secrets: [secret],
});

impl std::fmt::Debug for ProxyEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            url,
            timeout_ms,
            cache_ms,
            allowed_origins,
        } = self;
        f.debug_struct("ProxyEndpoint")
            .field("url", &url_shown(url))
            .field("timeout_ms", timeout_ms)
            .field("cache_ms", cache_ms)
            .field("allowed_origins", allowed_origins)
            .finish()
    }
}

fn default_proxy_timeout_ms() -> u64 {
    2_000
}

fn default_proxy_cache_ms() -> u64 {
    30_000
}

impl Config {
    /// The embedded (SQLite) database's file, used when no `database_url` is given.
    pub fn embedded_database(&self) -> std::path::PathBuf {
        self.data_dir.join("chorus.db")
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            heartbeat: Duration::from_millis(self.heartbeat_ms.max(100)),
            queue_capacity: self.queue_capacity,
            max_frame_bytes: self.max_frame_bytes,
            inbound_per_sec: self.inbound_per_sec,
            inbound_burst: self.inbound_burst,
            max_subscriptions: self.max_subscriptions,
            retention: Retention {
                max_events: self.retention_events,
                max_age: Duration::from_secs(self.retention_secs),
            },
            clock: self.clock,
            ..EngineConfig::default()
        }
    }

    pub fn webhooks(&self) -> WebhookConfig {
        WebhookConfig {
            max_attempts: self.webhook_max_attempts.max(1),
            backoff: Duration::from_millis(self.webhook_backoff_ms),
            max_backoff: Duration::from_millis(
                self.webhook_backoff_max_ms.max(self.webhook_backoff_ms),
            ),
            timeout: Duration::from_millis(self.webhook_timeout_ms.max(1)),
            concurrency: self.webhook_concurrency.max(1),
            allow_private: self.webhook_allow_private,
            ca_file: self.webhook_ca_file.clone(),
        }
    }

    pub fn chat(&self) -> ChatConfig {
        ChatConfig {
            max_message_bytes: self.max_message_bytes,
            typing_per_minute: self.typing_per_minute,
            max_workspaces_per_user: self.max_workspaces_per_user,
            presence_grace: Duration::from_millis(self.presence_grace_ms),
            clock: self.clock,
            stream_rollup: Duration::from_millis(self.stream_rollup_ms.max(1)),
            stream_idle: Duration::from_millis(self.stream_idle_ms.max(100)),
            loop_guard_run: self.loop_guard_run,
            loop_guard_per_minute: self.loop_guard_per_minute,
            client_publish_per_sec: self.client_publish_per_sec,
            turn_timeout: Duration::from_millis(self.turn_timeout_ms.max(100)),
            ..ChatConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let endpoint = ProxyEndpoint {
            url: "https://chorus:proxy-password@app.example.test/connect?key=proxy-query"
                .to_owned(),
            timeout_ms: 2_000,
            cache_ms: 0,
            allowed_origins: Vec::new(),
        };
        let config = Config {
            database_url: Some(
                "postgres://chorus:db-password@db.example.test/chorus?password=db-query".into(),
            ),
            redis_url: Some("rediss://:redis-password@redis.example.test:6380".into()),
            admin_token: Some("admin-token-secret".into()),
            jwt_secret: Some("jwt-secret-at-least-32-bytes-long".into()),
            metrics_token: Some("metrics-token-secret".into()),
            proxy: ProxyConfig {
                secret: Some("proxy-signing-secret".into()),
                connect: Some(endpoint),
                ..ProxyConfig::default()
            },
            ..Config::default()
        };
        let shown = format!("{config:?} {config:#?}");
        for secret in [
            "db-password",
            "db-query",
            "redis-password",
            "admin-token-secret",
            "jwt-secret",
            "metrics-token-secret",
            "proxy-signing-secret",
            "proxy-password",
            "proxy-query",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // What is not secret still shows: where things are, and that secrets are set.
        for shown_part in [
            "db.example.test",
            "redis.example.test:6380",
            "app.example.test/connect",
            "admin_token: Some(\"<redacted>\")",
            "auth_failures_per_sec: 10",
        ] {
            assert!(shown.contains(shown_part), "{shown_part} not in {shown}");
        }
        assert_eq!(url_shown("not a url"), REDACTED);
    }
}
