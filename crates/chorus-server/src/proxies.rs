//! The proxies to the application (gateway mode; docs/gateway.md): HTTP callbacks to
//! the URLs of the TOML file's `[proxy]` table, signed like webhooks
//! ([`webhooks::signature`]), each bounded by its `timeout_ms` and never retried.
//!
//! - `connect`: a bearer token (or a `/ws` upgrade's `Cookie` header, from one of the
//!   `allowed_origins` only: [`Proxies::cookie`]) that Chorus does not recognise is
//!   introspected by the application, which answers who it is. The
//!   Chorus user of application id `sub` is the user named `app.<sub>` (folded and
//!   suffixed with a hash when that is not a valid name), created on first sight.
//!   Identities are cached by a SHA-256 of the credential, and count while the user's
//!   connect-proxy epoch is the one they were vouched for in. Sockets it authenticated
//!   carry that epoch's [`proxy_credential`]: the application's logout
//!   (`POST /api/v1/proxy/sessions/revoke`, [`Proxies::revoke`]) ends the epoch on
//!   every node and closes them.
//! - `subscribe` / `publish`: asked by the chat ([`AppProxy`]) for namespaces whose
//!   access is `proxy`, with the credential's roles. Subscribe answers are cached by
//!   user, scope and roles.
//!
//! An application that is down, slow or answers something unexpected gives the client
//! `unavailable` (HTTP 503, or the `error` frame's code), with why; never a hang.
//!
//! The URLs are the operator's, so the webhook target guard (public addresses only)
//! does not apply: the application usually runs next to Chorus, on loopback.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use async_trait::async_trait;
use axum::http::HeaderMap;
use axum::http::header::{COOKIE, ORIGIN};
use chorus_api::proxy::{
    ConnectAnswer, ConnectRequest, ProxyAnswer, PublishRequest, SubscribeRequest,
};
use chorus_chat::Chat;
use chorus_chat::error::ChatError;
use chorus_chat::model::{User, UserId, UserKind};
use chorus_chat::namespaces::credential_roles;
use chorus_chat::service::{AppProxy, proxy_credential};
use chorus_chat::store::ProxyEpoch;
use chorus_proto::ErrorCode;
use chorus_realtime::{Clock, SessionAuth};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::auth::Principal;
use crate::config::{Config, ProxyEndpoint};
use crate::error::ApiError;
use crate::jwt::{provision_user, subject_name};
use crate::webhooks::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Largest answer read from the application.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Answers kept per cache; a full cache first forgets expired answers, then all.
const MAX_CACHED: usize = 10_000;
/// Longest credential sent to the connect proxy.
const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// Credentials for the connect proxy.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bearer token (or `?token=`).
    Token(String),
    /// A `/ws` upgrade's `Cookie` header, and its `Origin`.
    Cookie {
        cookie: String,
        origin: Option<String>,
    },
}

impl Credential {
    /// The `Cookie` credential of a request, if it has a `Cookie` header, whatever its
    /// `Origin` ([`Proxies::cookie`] checks that).
    fn cookie(headers: &HeaderMap) -> Option<Self> {
        let cookie = headers.get(COOKIE)?.to_str().ok()?.trim();
        if cookie.is_empty() {
            return None;
        }
        let origin = headers
            .get(ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned);
        Some(Self::Cookie {
            cookie: cookie.to_owned(),
            origin,
        })
    }

    /// The cache key: a hash, so the cache holds no credential.
    fn key(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        match self {
            Self::Token(token) => {
                hash.update(b"token\0");
                hash.update(token.as_bytes());
            }
            Self::Cookie { cookie, origin } => {
                hash.update(b"cookie\0");
                hash.update(cookie.as_bytes());
                hash.update(b"\0");
                hash.update(origin.as_deref().unwrap_or("").as_bytes());
            }
        }
        hash.finalize().into()
    }

    fn len(&self) -> usize {
        match self {
            Self::Token(token) => token.len(),
            Self::Cookie { cookie, .. } => cookie.len(),
        }
    }
}

/// One configured proxy.
struct Endpoint {
    /// `connect`, `subscribe` or `publish`, for errors and logs.
    name: &'static str,
    url: reqwest::Url,
    timeout: Duration,
    cache: Duration,
}

impl Endpoint {
    fn new(name: &'static str, config: &ProxyEndpoint) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&config.url)
            // Not shown: it may carry a password.
            .with_context(|| format!("[proxy.{name}] url"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("[proxy.{name}] url must be http:// or https://");
        }
        Ok(Self {
            name,
            url,
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            cache: Duration::from_millis(config.cache_ms),
        })
    }
}

/// Answers kept until they expire, measured on the configured clock.
struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(until, _)| *until > now)
            .map(|(_, value)| value.clone())
    }

    fn put(&self, key: K, value: V, until: Instant, now: Instant) {
        if until <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED && !entries.contains_key(&key) {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
        }
        entries.insert(key, (until, value));
    }

    /// Forgets the answers `drop` picks.
    fn forget(&self, drop: impl Fn(&V) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, value)| !drop(value));
    }
}

/// A cached identity: the user is read again on each use (a deactivated user is
/// refused at once), and so is their connect-proxy epoch (a logged-out user's
/// identities stop counting on every node).
#[derive(Clone)]
struct Identity {
    user: i64,
    /// The user's connect-proxy epoch when the application vouched for the credentials.
    epoch: i64,
    expires_at: Option<SystemTime>,
    /// The roles the application gave the credentials.
    roles: chorus_realtime::Roles,
}

impl Identity {
    /// The connection's credentials: the epoch's credential id, so the logout that ends
    /// the epoch closes the sockets opened with them.
    fn session(&self) -> SessionAuth {
        SessionAuth {
            credential: Some(proxy_credential(self.epoch)),
            expires_at: self.expires_at,
            roles: self.roles.clone(),
        }
    }
}

/// Times the connect proxy is asked about one credential, at most, while its user is
/// being logged out.
const MAX_ASKS: usize = 3;

/// The configured proxies and their client.
pub struct Proxies {
    client: reqwest::Client,
    secret: Vec<u8>,
    clock: Clock,
    connect: Option<Endpoint>,
    /// The connect proxy's `allowed_origins`, as browsers write an `Origin`.
    cookie_origins: Vec<String>,
    subscribe: Option<Endpoint>,
    publish: Option<Endpoint>,
    identities: Cache<[u8; 32], Identity>,
    /// Answers by user, scope, roles and namespace: the whole question asked.
    subscriptions: Cache<(i64, String, Vec<String>, String), ProxyAnswer>,
}

impl Proxies {
    /// The proxies the configuration asks for; `None` when it configures none. A
    /// namespace whose access is `proxy` without its proxy configured stops the start.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        check_namespaces(config, &config.namespaces)?;
        let proxy = &config.proxy;
        if !proxy.any() {
            return Ok(None);
        }
        let secret = match proxy.secret.as_deref() {
            Some(secret) if !secret.is_empty() => secret.as_bytes().to_vec(),
            _ => bail!("[proxy] needs a secret: every proxy request is signed with it"),
        };
        let endpoint = |name, config: &Option<ProxyEndpoint>| {
            config.as_ref().map(|c| Endpoint::new(name, c)).transpose()
        };
        for (name, other) in [("subscribe", &proxy.subscribe), ("publish", &proxy.publish)] {
            if other
                .as_ref()
                .is_some_and(|o| !o.allowed_origins.is_empty())
            {
                bail!("[proxy.{name}] allowed_origins: only [proxy.connect] takes it");
            }
        }
        let cookie_origins = match &proxy.connect {
            Some(connect) => connect
                .allowed_origins
                .iter()
                .map(|o| origin(o))
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        if proxy.connect.is_some() && cookie_origins.is_empty() {
            tracing::warn!(
                "[proxy.connect] has no allowed_origins: /ws cookies are not sent to the \
                 application (tokens are); list the origins of its pages to let them \
                 sign in with its session cookie"
            );
        }
        let client = webhooks::client_builder(config.webhook_ca_file.as_deref())?
            .user_agent(concat!("chorus-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the proxy HTTP client")?;
        Ok(Some(Self {
            client,
            secret,
            clock: config.clock,
            connect: endpoint("connect", &proxy.connect)?,
            cookie_origins,
            subscribe: endpoint("subscribe", &proxy.subscribe)?,
            publish: endpoint("publish", &proxy.publish)?,
            identities: Cache::new(),
            subscriptions: Cache::new(),
        }))
    }

    /// Whether credentials Chorus does not recognise go to the application.
    pub fn connects(&self) -> bool {
        self.connect.is_some()
    }

    /// The `Cookie` credential of a `/ws` upgrade for the connect proxy, when its
    /// `Origin` is one of `allowed_origins`. A browser sends the application's cookie
    /// on an upgrade any other site's page starts (cross-site WebSocket hijacking), so
    /// from another origin, or without one, the upgrade carries no cookie as far as
    /// Chorus is concerned, and the application is never asked about it.
    pub fn cookie(&self, headers: &HeaderMap) -> Option<Credential> {
        self.connect.as_ref()?;
        let credential = Credential::cookie(headers)?;
        let Credential::Cookie { origin, .. } = &credential else {
            return None;
        };
        // Browsers send the serialized origin exactly (RFC 6454); anything else is
        // not a page of the application.
        if origin
            .as_ref()
            .is_some_and(|o| self.cookie_origins.contains(o))
        {
            return Some(credential);
        }
        tracing::debug!(
            origin = origin.as_deref().unwrap_or("(none)"),
            "a /ws cookie from an origin not in [proxy.connect] allowed_origins: not used"
        );
        None
    }

    /// The user `credential` stands for, as the connect proxy says (or said, within
    /// its `cache_ms`, and the user was not logged out since). Refused credentials:
    /// `unauthorized`; no usable answer: `unavailable`. Without `ask`, only a cached
    /// answer counts (`unauthorized` otherwise): the application is not asked.
    pub async fn connect(
        &self,
        chat: &Chat,
        credential: Credential,
        ask: bool,
    ) -> Result<Principal, ApiError> {
        let Some(endpoint) = &self.connect else {
            return Err(ApiError::unauthorized("invalid token"));
        };
        if credential.len() > MAX_CREDENTIAL_BYTES {
            return Err(ApiError::unauthorized("credentials too long"));
        }
        let key = credential.key();
        if let Some(identity) = self.identities.get(&key, self.clock.instant()) {
            let user = user_of(chat, &identity).await?;
            // The epoch is read on every use: a logout through any node ends it.
            if epoch_of(chat, &identity).await?.epoch == identity.epoch {
                return Ok(Principal {
                    user,
                    session: identity.session(),
                });
            }
        }
        if !ask {
            return Err(ApiError::unauthorized(
                "too many refused credentials from this address; not asked",
            ));
        }
        // An answer the application gave before logging the user out must not let
        // them in: the logouts are counted before each question, and when the user's
        // last one came after that count, the application is asked again, until an
        // answer comes with no logout of theirs since it was asked.
        for _ in 0..MAX_ASKS {
            let logouts = chat.proxy_logouts().await?;
            let (identity, user) = self.ask(chat, endpoint, &credential).await?;
            let now = epoch_of(chat, &identity).await?;
            // A logout before Chorus had a user for them counts too (a first sign-in).
            let unseen = chat.unseen_proxy_logout(&user.name).await?;
            if now.logout.max(unseen) > logouts {
                continue;
            }
            let identity = Identity {
                epoch: now.epoch,
                ..identity
            };
            let session = identity.session();
            // Kept no longer than the credentials are valid.
            let mut cache = endpoint.cache;
            if let Some(exp) = identity.expires_at {
                let wall = self.clock.system_time();
                cache = cache.min(exp.duration_since(wall).unwrap_or_default());
            }
            let now = self.clock.instant();
            self.identities.put(key, identity, now + cache, now);
            return Ok(Principal { user, session });
        }
        Err(unavailable(
            "the application logged the user out each time it was asked; try again",
        ))
    }

    /// Asks the connect proxy who `credential` is: the identity it answers (its
    /// `epoch` not yet known: 0) and its user, created on first sight.
    async fn ask(
        &self,
        chat: &Chat,
        endpoint: &Endpoint,
        credential: &Credential,
    ) -> Result<(Identity, User), ApiError> {
        let request = match credential.clone() {
            Credential::Token(token) => ConnectRequest {
                token: Some(token),
                cookie: None,
                origin: None,
            },
            Credential::Cookie { cookie, origin } => ConnectRequest {
                token: None,
                cookie: Some(cookie),
                origin,
            },
        };
        let answer: ConnectAnswer = self
            .post(endpoint, &request)
            .await
            .map_err(|why| unavailable(&why))?;
        if !answer.active {
            let reason = answer.reason.filter(|r| !r.trim().is_empty());
            return Err(ApiError::unauthorized(match reason {
                Some(reason) => format!("refused by the application: {reason}"),
                None => "refused by the application".to_owned(),
            }));
        }
        let sub = answer
            .sub
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| unavailable("answered active without a sub (1 to 256 bytes)"))?;
        let expires_at = match answer.exp {
            Some(exp) => Some(
                Duration::try_from_secs_f64(exp)
                    .ok()
                    .and_then(|since| UNIX_EPOCH.checked_add(since))
                    .ok_or_else(|| unavailable("answered an exp out of range"))?,
            ),
            None => None,
        };
        if expires_at.is_some_and(|exp| exp <= self.clock.system_time()) {
            return Err(ApiError::unauthorized("the credentials have expired (exp)"));
        }
        // Bad roles are the application's bug, like any other bad answer.
        let roles = credential_roles(answer.roles.unwrap_or_default())
            .map_err(|e| unavailable(&format!("answered bad roles: {e}")))?;
        let roles: chorus_realtime::Roles = (!roles.is_empty()).then(|| roles.into());
        let name = subject_name(&format!("app.{sub}"));
        let user = match chat.user_by_subject(&name).await? {
            Some(user) => user,
            None => {
                provision_user(
                    chat,
                    name,
                    answer.name.as_deref(),
                    UserKind::Human,
                    "the connect proxy",
                )
                .await?
            }
        };
        let identity = Identity {
            user: user.id.0,
            epoch: 0,
            expires_at,
            roles,
        };
        Ok((identity, user))
    }

    /// The application logged its user `sub` out: their connect-proxy epoch ends, so
    /// every node asks the application about their credentials again, and every socket
    /// the connect proxy authenticated for them closes with 3502, on every node (an
    /// event on the user's scope; see `Chat::close_proxy_sessions`). Their sockets
    /// opened with an API token stay. For a user Chorus never saw there is nothing to
    /// close; the logout is kept a few minutes, so their first sign-in, if it is being
    /// asked about meanwhile, is asked about again. `Err(NotFound)` without
    /// `[proxy.connect]`.
    pub async fn revoke(&self, chat: &Chat, sub: &str) -> Result<(), ApiError> {
        if self.connect.is_none() {
            return Err(ApiError::not_found("no [proxy.connect] is configured"));
        }
        if sub.is_empty() || sub.len() > 256 {
            return Err(ApiError::bad_request("sub must be 1 to 256 bytes"));
        }
        let name = subject_name(&format!("app.{sub}"));
        // A deactivated user too: their cached identities must not count once they are
        // reactivated.
        let Some(user) = chat.any_user_by_subject(&name).await? else {
            // Never seen: nothing to close, but a first sign-in in flight must not count.
            chat.note_unseen_proxy_logout(&name).await?;
            return Ok(());
        };
        chat.close_proxy_sessions(user.id).await?;
        // Not needed for correctness (each use reads the epoch), but the memory is free.
        self.identities
            .forget(|identity| identity.user == user.id.0);
        Ok(())
    }

    /// POSTs `body`, signed, to `endpoint` and reads its JSON answer: `Err` says why
    /// there is no usable answer ([`no_answer`] words it for the client).
    async fn post<B: Serialize, A: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        body: &B,
    ) -> Result<A, String> {
        let name = endpoint.name;
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let timestamp = (self.clock.now_ms() / 1000).to_string();
        let signature = webhooks::signature(&self.secret, &timestamp, &body);
        let started = self.clock.instant();
        let timeout = endpoint.timeout;
        let ask = async {
            let mut response = self
                .client
                .post(endpoint.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, &timestamp)
                .header(SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await
                .map_err(|e| webhooks::describe(&e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("answered HTTP {}", status.as_u16()));
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| webhooks::describe(&e))? {
                if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!("answered more than {MAX_ANSWER_BYTES} bytes"));
                }
                bytes.extend_from_slice(&chunk);
            }
            serde_json::from_slice(&bytes).map_err(|e| format!("answered unexpected JSON: {e}"))
        };
        // The whole exchange, connecting and reading included, within the timeout.
        let answer = match tokio::time::timeout(timeout, ask).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        answer.inspect_err(|why| {
            let ms = (self.clock.instant() - started).as_millis();
            let url = webhooks::without_credentials(&endpoint.url);
            tracing::warn!(proxy = name, %url, %why, ms, "proxy request failed");
        })
    }
}

#[async_trait]
impl AppProxy for Proxies {
    async fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> chorus_chat::error::Result<ProxyAnswer> {
        let endpoint = self
            .subscribe
            .as_ref()
            .ok_or_else(|| ChatError::Unavailable("no [proxy.subscribe] is configured".into()))?;
        // The roles are part of the question: another credential of the same user may
        // carry others, and the application may answer differently. So is the
        // namespace: a reload can put the topic in another one, which must be asked
        // about (the re-check after it would otherwise reuse the old one's allow).
        let key = (
            request.user.as_ref().map_or(0, |u| u.id),
            request.scope.clone(),
            request.roles.clone(),
            request.namespace.clone(),
        );
        let now = self.clock.instant();
        if let Some(answer) = self.subscriptions.get(&key, now) {
            return Ok(answer);
        }
        let answer: ProxyAnswer = self
            .post(endpoint, &request)
            .await
            .map_err(|why| ChatError::Unavailable(no_answer("subscribe", &why)))?;
        let answer = ProxyAnswer {
            data: None,
            ..answer
        };
        self.subscriptions
            .put(key, answer.clone(), now + endpoint.cache, now);
        Ok(answer)
    }

    async fn publish(&self, request: PublishRequest) -> chorus_chat::error::Result<ProxyAnswer> {
        let endpoint = self
            .publish
            .as_ref()
            .ok_or_else(|| ChatError::Unavailable("no [proxy.publish] is configured".into()))?;
        self.post(endpoint, &request)
            .await
            .map_err(|why| ChatError::Unavailable(no_answer("publish", &why)))
    }
}

/// The principal of a cached identity.
/// The user a cached identity names, read again on each use (a deactivated user is
/// refused at once).
async fn user_of(chat: &Chat, identity: &Identity) -> Result<User, ApiError> {
    chat.user_by_subject(&identity.user.to_string())
        .await?
        .ok_or_else(|| ApiError::unauthorized("the user is gone"))
}

/// The connect-proxy epoch of the user an identity names.
async fn epoch_of(chat: &Chat, identity: &Identity) -> Result<ProxyEpoch, ApiError> {
    chat.proxy_epoch(UserId(identity.user))
        .await?
        .ok_or_else(|| ApiError::unauthorized("the user is gone"))
}

/// An `allowed_origins` entry as browsers write an `Origin` (`https://app.example.com`,
/// lower case, without a default port or a trailing `/`); anything but such an origin
/// stops the start.
fn origin(text: &str) -> anyhow::Result<String> {
    let not_one = || {
        format!(
            "[proxy.connect] allowed_origins: {text:?} is not an origin \
             (scheme://host[:port], e.g. \"https://app.example.com\")"
        )
    };
    let url = reqwest::Url::parse(text).with_context(not_one)?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        bail!(not_one());
    }
    Ok(url.origin().ascii_serialization())
}

/// The connect proxy gave no usable answer.
fn unavailable(why: &str) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, no_answer("connect", why))
}

/// What the client is told when `proxy` gave no usable answer.
fn no_answer(proxy: &str, why: &str) -> String {
    format!("the application's {proxy} proxy is unavailable: {why}")
}

/// Refuses namespaces whose access is `proxy` when that proxy is not configured (at
/// the start and on a reload).
pub fn check_namespaces(
    config: &Config,
    namespaces: &[chorus_api::Namespace],
) -> anyhow::Result<()> {
    for namespace in namespaces {
        if namespace.read == "proxy" && config.proxy.subscribe.is_none() {
            bail!(
                "namespace {:?}: read = \"proxy\" needs a [proxy.subscribe] url",
                namespace.name
            );
        }
        if namespace.publish == "proxy" && config.proxy.publish.is_none() {
            bail!(
                "namespace {:?}: publish = \"proxy\" needs a [proxy.publish] url",
                namespace.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cached_answers_expire_on_the_clock() {
        let cache = Cache::new();
        let now = Instant::now();
        cache.put("k", 1, now + Duration::from_secs(10), now);
        cache.put("gone", 2, now, now);
        assert_eq!(cache.get(&"k", now), Some(1));
        assert_eq!(cache.get(&"gone", now), None);
        assert_eq!(cache.get(&"k", now + Duration::from_secs(10)), None);
    }

    #[test]
    fn allowed_origins_are_written_as_browsers_send_them() {
        for (given, origin) in [
            ("https://app.example.com", "https://app.example.com"),
            ("HTTPS://App.Example.COM:443/", "https://app.example.com"),
            ("http://localhost:8080", "http://localhost:8080"),
            ("http://[::1]:3000", "http://[::1]:3000"),
        ] {
            assert_eq!(super::origin(given).expect(given), origin);
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/chat",
            "https://app.example.com?x=1",
            "https://user@app.example.com",
            "null",
            "*",
            "file:///tmp",
            "ws://app.example.com",
        ] {
            assert!(super::origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_keyed_by_kind_and_content() {
        let token = Credential::Token("abc".into());
        let cookie = Credential::Cookie {
            cookie: "abc".into(),
            origin: None,
        };
        let elsewhere = Credential::Cookie {
            cookie: "abc".into(),
            origin: Some("https://evil.example".into()),
        };
        assert_ne!(token.key(), cookie.key());
        assert_ne!(cookie.key(), elsewhere.key());
        assert_eq!(token.key(), Credential::Token("abc".into()).key());
    }
}
