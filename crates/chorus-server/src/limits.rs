//! The HTTP rate limits in front of every route: requests per authenticated user (and
//! per server key), and failed authentications per client address. Over either → 429
//! `rate_limited` with `Retry-After` (whole seconds, at least 1).
//!
//! The middleware authenticates a request that carries credentials once and leaves the
//! outcome in its extensions ([`Authenticated`]) for `Caller` and `/ws`. Requests without
//! credentials (health checks, the web UI's files, `--dev` login) are not limited: they
//! reach no token and no user's data. `POST /api/v1/sign-in` takes a secret in its body
//! instead: it is limited like credentials by [`guard_secret`].
//!
//! An address over its failure limit is refused before its credentials are looked at,
//! except credentials that authenticated from it in the last [`KNOWN_FOR`]
//! ([`KnownCredentials`]): one client guessing behind a NAT or proxy does not lock out
//! everyone who was already signed in behind it.
//!
//! Anonymous WebSocket connections (gateway mode's public namespaces) are counted per
//! client address ([`AnonymousConnections`]): they have no user to limit.
//!
//! The server's own `/mcp` agents are no client address: their requests carry the
//! per-process [`InternalSecret`], and nothing is counted against the address they come
//! from. Their tokens are authenticated and limited per user as any other.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chorus_chat::model::UserId;
use chorus_chat::rate::{KeyedLimiter, keyed};
use chorus_chat::store::ServerKeyId;
use chorus_proto::ErrorCode;
use chorus_realtime::Clock;
use governor::Quota;
use governor::clock::Clock as _;
use tokio::time::Instant;

use crate::auth::{Authenticated, credentials};
use crate::config::Config;
use crate::error::ApiError;
use crate::proxies::Credential;
use crate::state::AppState;

/// Addresses the failure limiter tracks before it prunes (see [`FailureLimiter::record`]).
const MAX_ADDRESSES: usize = 100_000;

/// How long a credential that authenticated from an address stays known there: it is
/// tried even while that address is over its failure limit.
const KNOWN_FOR: Duration = Duration::from_secs(10 * 60);

/// Credentials [`KnownCredentials`] keeps (see [`KnownCredentials::remember`]).
const MAX_KNOWN: usize = 65_536;

/// The header in which the server's own `/mcp` agents send the [`InternalSecret`].
pub const INTERNAL_HEADER: &str = "x-chorus-internal";

/// A random secret made when the server is built, sent by its own `/mcp` agents on every
/// request to it (HTTP and WebSocket upgrades) in [`INTERNAL_HEADER`]. Those requests all
/// come from the server's own address (loopback), whoever the agent acts for: counted
/// per address, one user's dead token retried by their agents would lock every other
/// user's agents out. Only this process knows it; it is never logged (a sensitive
/// header value). A request without it, or with a wrong one, is counted as ever.
pub struct InternalSecret {
    value: HeaderValue,
    /// SHA-256 of the value, compared by hash so timing reveals nothing.
    hash: String,
}

impl InternalSecret {
    /// 32 random bytes, hex.
    pub fn random() -> Self {
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let mut value = HeaderValue::from_str(&secret).expect("hex is a valid header value");
        value.set_sensitive(true);
        Self {
            hash: chorus_chat::token::hash(&secret),
            value,
        }
    }

    /// What the server's own agents send.
    pub fn headers(&self) -> HeaderMap {
        HeaderMap::from_iter([(
            axum::http::HeaderName::from_static(INTERNAL_HEADER),
            self.value.clone(),
        )])
    }

    /// Whether `headers` carry the secret.
    fn vouches_for(&self, headers: &HeaderMap) -> bool {
        headers
            .get(INTERNAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|given| chorus_chat::token::hash(given) == self.hash)
    }
}

/// In a request's extensions: it carries the [`InternalSecret`], so it has no client
/// address ([`ClientAddr`] is `None`).
#[derive(Clone, Copy)]
struct Internal;

/// Both HTTP limits and their shared refusal counter.
pub struct HttpLimiter {
    /// Requests per user; `None` when `http_per_sec` is 0.
    users: Option<KeyedLimiter<UserId>>,
    /// Requests per server key, at the users' rate; `None` when `http_per_sec` is 0.
    keys: Option<KeyedLimiter<ServerKeyId>>,
    /// Failed authentications per client address; `None` when `auth_failures_per_sec`
    /// is 0.
    failures: Option<FailureLimiter>,
    /// Refused cookies that left a `/ws` upgrade anonymous, per client address, at the
    /// same rate: a budget of their own, so that viewers behind one address whose
    /// browsers send unrelated cookies do not block that address's tokens.
    cookies: Option<FailureLimiter>,
    /// Credentials that authenticated recently, per address: let through while it is
    /// over its failure limit. `None` with `failures`.
    known: Option<KnownCredentials>,
    /// The configured clock: every bucket is measured on it.
    clock: Clock,
    /// Requests refused (either limit), for `/metrics`.
    pub rejected: AtomicU64,
}

impl HttpLimiter {
    /// `None` when both limits are off.
    pub fn from_config(config: &Config) -> Option<Self> {
        let quota = NonZeroU32::new(config.http_per_sec).map(|per_sec| {
            let burst = NonZeroU32::new(config.http_burst.max(per_sec.get())).unwrap_or(per_sec);
            Quota::per_second(per_sec).allow_burst(burst)
        });
        let clock = config.clock;
        let users = quota.map(|quota| keyed(quota, clock));
        let keys = quota.map(|quota| keyed(quota, clock));
        let failures =
            FailureLimiter::new(config.auth_failures_per_sec, config.auth_failures_burst);
        let cookies = FailureLimiter::new(config.auth_failures_per_sec, config.auth_failures_burst);
        let known = failures.as_ref().map(|_| KnownCredentials::default());
        (users.is_some() || failures.is_some()).then(|| Self {
            users,
            keys,
            failures,
            cookies,
            known,
            clock,
            rejected: AtomicU64::new(0),
        })
    }

    /// How long `user` must wait, if it is over its request limit (this request counts).
    fn user_wait(&self, user: UserId) -> Option<Duration> {
        let users = self.users.as_ref()?;
        users
            .check_key(&user)
            .err()
            .map(|not_until| not_until.wait_time_from(users.clock().now()))
    }

    /// How long server key `key` must wait, if it is over its request limit.
    fn key_wait(&self, key: ServerKeyId) -> Option<Duration> {
        let keys = self.keys.as_ref()?;
        keys.check_key(&key)
            .err()
            .map(|not_until| not_until.wait_time_from(keys.clock().now()))
    }

    /// How long `client` must wait before its credentials are tried again, if it is over
    /// its failure limit.
    pub(crate) fn client_wait(&self, client: IpAddr) -> Option<Duration> {
        self.failures.as_ref()?.wait(client, self.clock.instant())
    }

    /// How long `client` must wait before `credential` is tried, if at all: over its
    /// failure limit, only a credential that authenticated from it recently is tried.
    /// Others are refused untried (no database read), as for a sign-in code.
    pub(crate) fn credential_wait(&self, client: IpAddr, credential: &str) -> Option<Duration> {
        let wait = self.client_wait(client)?;
        let known = self
            .known
            .as_ref()
            .is_some_and(|known| known.contains(client, credential, self.clock.instant()));
        (!known).then_some(wait)
    }

    /// Counts a failed authentication from `client`.
    pub(crate) fn failed(&self, client: IpAddr) {
        if let Some(failures) = &self.failures {
            failures.record(client, self.clock.instant());
        }
    }

    /// `credential` authenticated from `client`: known there for [`KNOWN_FOR`].
    pub(crate) fn succeeded(&self, client: IpAddr, credential: &str) {
        if let Some(known) = &self.known {
            known.remember(client, credential, self.clock.instant());
        }
    }

    /// `credential` failed to authenticate from `client` (revoked, expired, or never
    /// valid): counted, and no longer known there.
    pub(crate) fn failed_with(&self, client: IpAddr, credential: &str) {
        if let Some(known) = &self.known {
            known.forget(client, credential);
        }
        self.failed(client);
    }

    /// Whether `client` has refused cookies left to have judged.
    fn may_ask_about_cookies(&self, client: IpAddr) -> bool {
        let cookies = self.cookies.as_ref();
        cookies.is_none_or(|c| c.wait(client, self.clock.instant()).is_none())
    }

    fn cookie_refused(&self, client: IpAddr) {
        if let Some(cookies) = &self.cookies {
            cookies.record(client, self.clock.instant());
        }
    }

    fn refuse(&self, wait: Duration, message: &str) -> Response {
        self.refusal(wait, message).into_response()
    }

    /// A 429 with `Retry-After` (whole seconds, at least 1), counted.
    fn refusal(&self, wait: Duration, message: &str) -> ApiError {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let mut error = ApiError::new(ErrorCode::RateLimited, message);
        error.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        error
    }

    /// Forgets idle keys so the maps do not grow with every user and address ever seen.
    pub fn forget_idle(&self) {
        if let Some(users) = &self.users {
            users.retain_recent();
            users.shrink_to_fit();
        }
        if let Some(keys) = &self.keys {
            keys.retain_recent();
            keys.shrink_to_fit();
        }
        for limiter in [&self.failures, &self.cookies].into_iter().flatten() {
            limiter.forget_idle(self.clock.instant());
        }
        if let Some(known) = &self.known {
            known.forget_expired(self.clock.instant());
        }
    }
}

/// Credentials that authenticated recently, each with the address (bucket) it came from
/// and the instant it is forgotten. Kept as a keyed hash of both (a random key per
/// process), never the credential itself; two that collide only mean one credential is
/// tried that would have been refused untried, and authentication still judges it. A
/// `std` mutex: held for one lookup or insert, never across an `.await`.
#[derive(Default)]
struct KnownCredentials {
    hasher: std::collections::hash_map::RandomState,
    until: Mutex<HashMap<u64, Instant>>,
}

impl KnownCredentials {
    fn key(&self, client: IpAddr, credential: &str) -> u64 {
        self.hasher.hash_one((bucket(client), credential))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn contains(&self, client: IpAddr, credential: &str, now: Instant) -> bool {
        let key = self.key(client, credential);
        self.lock().get(&key).is_some_and(|until| *until > now)
    }

    /// Known from now for [`KNOWN_FOR`]. When [`MAX_KNOWN`] are known and none has
    /// expired, a newcomer is not remembered: it is refused while its address is over
    /// its limit, as every credential was before this memory (the ones known expire
    /// within [`KNOWN_FOR`]).
    fn remember(&self, client: IpAddr, credential: &str, now: Instant) {
        let key = self.key(client, credential);
        let mut map = self.lock();
        if map.len() >= MAX_KNOWN && !map.contains_key(&key) {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_KNOWN {
                return;
            }
        }
        map.insert(key, now + KNOWN_FOR);
    }

    fn forget(&self, client: IpAddr, credential: &str) {
        let key = self.key(client, credential);
        self.lock().remove(&key);
    }

    fn forget_expired(&self, now: Instant) {
        let mut map = self.lock();
        map.retain(|_, until| *until > now);
        map.shrink_to_fit();
    }
}

/// A token bucket per client address (GCRA: each address keeps the instant its bucket
/// is full again), in one map behind a `std` mutex: it is held for one lookup or
/// insert, never across an `.await`.
struct FailureLimiter {
    /// What one failure costs.
    interval: Duration,
    /// How far ahead of now an address's bucket may run: `burst - 1` failures.
    tolerance: Duration,
    full_at: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailureLimiter {
    /// `None` when `per_sec` is 0 (no limit).
    fn new(per_sec: u32, burst: u32) -> Option<Self> {
        let per_sec = NonZeroU32::new(per_sec)?;
        let interval = Duration::from_secs(1) / per_sec.get();
        Some(Self {
            interval,
            tolerance: interval * (burst.max(1) - 1),
            full_at: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.full_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `client` must wait before one more failure would be allowed, if at all.
    fn wait(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let full_at = *self.lock().get(&bucket(client))?;
        full_at
            .saturating_duration_since(now)
            .checked_sub(self.tolerance)
            .filter(|wait| !wait.is_zero())
    }

    fn record(&self, client: IpAddr, now: Instant) {
        let key = bucket(client);
        let mut map = self.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&key) {
            map.retain(|_, full_at| *full_at > now);
            // Still mostly busy: start over rather than scan the map on every insert.
            // Whoever was counted may fail a burst again, as from a new address.
            if map.len() >= MAX_ADDRESSES / 2 {
                tracing::warn!(
                    addresses = map.len(),
                    "too many addresses failing authentication; forgetting them"
                );
                map.clear();
            }
        }
        let full_at = map.entry(key).or_insert(now);
        *full_at = (*full_at).max(now) + self.interval;
    }

    /// Drops the addresses whose bucket is full again: they are as good as new.
    fn forget_idle(&self, now: Instant) {
        let mut map = self.lock();
        map.retain(|_, full_at| *full_at > now);
        map.shrink_to_fit();
    }
}

/// The key of an address's failure bucket: an IPv6 client is keyed by its /64, as one
/// host usually holds a whole /64; an IPv4-mapped address by its IPv4 address.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// The client's address: the TCP peer, or, behind `hops` trusted proxies, the address
/// the outermost of them appended to `X-Forwarded-For` (the `hops`-th entry from the
/// right; what the client wrote itself is further left). Falls back to the peer when
/// the header has fewer entries. Split as bytes: what a client wrote (anything, not
/// only text) must not make the proxies' entries after it unreadable.
fn client_addr(peer: Option<IpAddr>, headers: &HeaderMap, hops: u32) -> Option<IpAddr> {
    if let Some(warning) = proxy_warning(headers, hops) {
        warn_about_the_proxy_once(warning);
    }
    if hops == 0 {
        return peer;
    }
    let entries: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .collect();
    let forwarded = entries
        .len()
        .checked_sub(hops as usize)
        .and_then(|i| entries.get(i))
        .and_then(|entry| std::str::from_utf8(entry).ok())
        .and_then(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpAddr>()
                .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
                .ok()
        });
    forwarded.or(peer)
}

/// The warning for a request that comes through a proxy (it carries `X-Forwarded-For`)
/// that `trusted_proxy_hops` does not name: every client behind it shares the proxy's
/// address in the per-address limits — one client's failed authentications lock out the
/// others who have not signed in from there yet.
fn proxy_warning(headers: &HeaderMap, hops: u32) -> Option<&'static str> {
    (hops == 0 && headers.contains_key("x-forwarded-for")).then_some(
        "requests carry X-Forwarded-For but trusted_proxy_hops is 0: the per-address \
         limits see the proxy's address for every client behind it (set \
         trusted_proxy_hops to the number of proxies in front of Chorus)",
    )
}

/// Logs the proxy warning the first time only: it comes with every request through the
/// proxy (one `Once`: for that warning alone).
fn warn_about_the_proxy_once(warning: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| tracing::warn!("{warning}"));
}

/// The client address of a request, as the limits see it (the TCP peer, or the
/// trusted proxies' `X-Forwarded-For` entry); `None` without a peer address.
pub struct ClientAddr(pub Option<IpAddr>);

impl axum::extract::FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts.extensions.get::<Internal>().is_some() {
            return Ok(Self(None));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self(
            client_addr(peer, &parts.headers, state.config.trusted_proxy_hops).map(bucket),
        ))
    }
}

/// Open anonymous connections per client address (an IPv6 client by its /64), capped
/// at `anonymous_per_address`. A std mutex: counted and released without awaiting.
#[derive(Default)]
pub struct AnonymousConnections {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One anonymous connection's place in the count, given back when dropped (the
/// session ended).
pub struct AnonymousSlot {
    owner: std::sync::Arc<AnonymousConnections>,
    addr: IpAddr,
}

impl AnonymousConnections {
    /// A slot for one more connection from `addr`, or `None` when it holds `max`.
    pub fn take(self: &std::sync::Arc<Self>, addr: IpAddr, max: u32) -> Option<AnonymousSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(addr).or_default();
        if *count >= max {
            if *count == 0 {
                open.remove(&addr);
            }
            return None;
        }
        *count += 1;
        Some(AnonymousSlot {
            owner: self.clone(),
            addr,
        })
    }

    /// Open anonymous connections from `addr`.
    pub fn open(&self, addr: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&addr).copied().unwrap_or(0)
    }
}

impl Drop for AnonymousSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.addr) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// Guards a route that takes a secret without credentials (`POST /api/v1/sign-in`) as
/// the middleware guards credentials: an address over its failure limit is answered
/// 429 before `attempt` runs (the secret untried), and a refused secret (`401`, or
/// `410` for a used-up one) counts as a failure of the address.
pub async fn guard_secret<T>(
    state: &AppState,
    client: Option<IpAddr>,
    attempt: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let limiter = state.http_limiter.as_deref();
    if let (Some(limiter), Some(client)) = (limiter, client)
        && let Some(wait) = limiter.client_wait(client)
    {
        return Err(limiter.refusal(
            wait,
            "too many failed authentications from this address; retry later",
        ));
    }
    let outcome = attempt.await;
    if let (Some(limiter), Some(client), Err(err)) = (limiter, client, &outcome)
        && matches!(err.code, ErrorCode::Unauthorized | ErrorCode::Gone)
    {
        limiter.failed(client);
    }
    outcome
}

/// Authenticates a request's credentials (once), applies both limits, and leaves the
/// outcome in the request's extensions for the routes.
pub async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // The server's own agents: their token is checked and counted per user below, and
    // no address is charged for it.
    let internal = state.internal.vouches_for(req.headers());
    if internal {
        req.extensions_mut().insert(Internal);
    }
    // `/metrics` reads no user's credentials; its bearer is the metrics token, if any.
    let metrics = req.uri().path() == "/metrics";
    let token = credentials(req.headers(), req.uri()).filter(|_| !metrics);
    // A `/ws` upgrade without a token may carry the application's session cookie,
    // for its connect proxy to judge: only from an `Origin` it allows (cross-site
    // WebSocket hijacking; `Proxies::cookie`), else it carries none.
    let cookie = match &token {
        None if req.uri().path() == "/ws" => state.auth.connect_cookie(req.headers()),
        _ => None,
    };
    // What the limiter knows a credential by: the token, or the cookie header.
    let secret = match (&token, &cookie) {
        (Some(token), _) | (None, Some(Credential::Token(token))) => token.clone(),
        (None, Some(Credential::Cookie { cookie, .. })) => cookie.clone(),
        (None, None) => {
            req.extensions_mut().insert(Authenticated::new(None));
            return next.run(req).await;
        }
    };
    let limiter = state.http_limiter.as_deref();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let client =
        client_addr(peer, req.headers(), state.config.trusted_proxy_hops).filter(|_| !internal);
    // Over the failure limit, refused before the credential is even looked at (so
    // guessing learns nothing), unless it authenticated from this address recently.
    if let (Some(limiter), Some(client)) = (limiter, client)
        && let Some(wait) = limiter.credential_wait(client, &secret)
    {
        return limiter.refuse(
            wait,
            "too many failed authentications from this address; retry later",
        );
    }
    if let Some(token) = &token
        && state.auth.is_server_key(token)
    {
        let outcome = state.auth.authenticate_key(token).await;
        if let Some(limiter) = limiter {
            match &outcome {
                Ok(key) => {
                    if let Some(client) = client {
                        limiter.succeeded(client, &secret);
                    }
                    if let Some(wait) = limiter.key_wait(key.id) {
                        return limiter.refuse(wait, "too many requests for this key; retry later");
                    }
                }
                Err(err) if err.code == ErrorCode::Unauthorized => {
                    if let Some(client) = client {
                        limiter.failed_with(client, &secret);
                    }
                }
                Err(_) => {}
            }
        }
        req.extensions_mut().insert(Authenticated::key(outcome));
        return next.run(req).await;
    }
    let outcome = match (token, cookie) {
        (Some(token), _) => state.auth.authenticate(&token).await,
        (None, Some(cookie)) => {
            // Cookies the application does not know (expired, another app's, a site's
            // analytics: the browser sends them all) leave the upgrade anonymous where
            // a public namespace admits that. Each is a call to the application, so an
            // address gets refused cookies judged only at the failure rate; past it,
            // only cookies the proxy has a cached answer for count and the others are
            // anonymous without asking (its tokens are not affected). Without a public
            // namespace a refusal is a 401, counted as any failed authentication.
            let public = state.chat.namespaces().any_public();
            let budget = limiter.zip(client);
            let ask = !public || budget.is_none_or(|(l, c)| l.may_ask_about_cookies(c));
            match state.auth.authenticate_credential(cookie, ask).await {
                Err(err) if err.code == ErrorCode::Unauthorized && public => {
                    if let Some((limiter, client)) = budget.filter(|_| ask) {
                        limiter.cookie_refused(client);
                    }
                    req.extensions_mut().insert(Authenticated::new(None));
                    return next.run(req).await;
                }
                outcome => outcome,
            }
        }
        (None, None) => Err(ApiError::unauthorized("missing credentials")),
    };
    if let Some(limiter) = limiter {
        match &outcome {
            Ok(principal) => {
                if let Some(client) = client {
                    limiter.succeeded(client, &secret);
                }
                if let Some(wait) = limiter.user_wait(principal.user.id) {
                    return limiter.refuse(wait, "too many requests for this user; retry later");
                }
            }
            // Bad credentials; not a database that failed to answer.
            Err(err) if err.code == ErrorCode::Unauthorized => {
                if let Some(client) = client {
                    limiter.failed_with(client, &secret);
                }
            }
            Err(_) => {}
        }
    }
    req.extensions_mut()
        .insert(Authenticated::new(Some(outcome)));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("a test address")
    }

    /// The per-user bucket and the failure buckets are measured on the configured
    /// clock: spent, they refill only as it moves (paused tokio time here, no sleep).
    #[tokio::test(start_paused = true)]
    async fn the_buckets_refill_as_the_configured_clock_moves() {
        let config = Config {
            http_per_sec: 2,
            http_burst: 2,
            auth_failures_per_sec: 2,
            auth_failures_burst: 1,
            clock: Clock::following_tokio(0),
            ..Config::default()
        };
        let limiter = HttpLimiter::from_config(&config).expect("limits on");
        let (alice, client) = (UserId(1), ip("192.0.2.1"));
        assert_eq!(limiter.user_wait(alice), None);
        assert_eq!(limiter.user_wait(alice), None);
        let wait = limiter.user_wait(alice).expect("the burst is spent");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        limiter.failed(client);
        assert_eq!(
            limiter.client_wait(client),
            Some(Duration::from_millis(500))
        );

        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(limiter.user_wait(alice).is_some(), "not yet");
        assert_eq!(limiter.client_wait(client), Some(Duration::from_millis(1)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limiter.user_wait(alice), None, "one more after 500 ms");
        assert_eq!(limiter.client_wait(client), None);
    }

    #[test]
    fn an_address_gets_its_burst_of_failures_then_waits_for_the_rate() {
        let limiter = FailureLimiter::new(2, 3).expect("a limit");
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(limiter.wait(a, t0), None);
            limiter.record(a, t0);
        }
        // Three in a row used the burst; the next is allowed 0.5 s later (2/s).
        assert_eq!(limiter.wait(a, t0), Some(Duration::from_millis(500)));
        assert_eq!(limiter.wait(ip("192.0.2.2"), t0), None, "another address");
        let later = t0 + Duration::from_millis(500);
        assert_eq!(limiter.wait(a, later), None);
        limiter.record(a, later);
        assert_eq!(limiter.wait(a, later), Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_burst_of_one_allows_one_failure_per_interval() {
        let limiter = FailureLimiter::new(1, 0).expect("a limit");
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        limiter.record(a, t0);
        assert_eq!(limiter.wait(a, t0), Some(Duration::from_secs(1)));
        assert_eq!(limiter.wait(a, t0 + Duration::from_secs(1)), None);
        assert!(
            FailureLimiter::new(0, 10).is_none(),
            "0/s turns the limit off"
        );
    }

    #[test]
    fn idle_addresses_are_forgotten_busy_ones_kept() {
        let limiter = FailureLimiter::new(1, 5).expect("a limit");
        let t0 = Instant::now();
        limiter.record(ip("192.0.2.1"), t0);
        for _ in 0..5 {
            limiter.record(ip("192.0.2.2"), t0);
        }
        limiter.forget_idle(t0 + Duration::from_secs(2));
        let map = limiter.lock();
        assert!(
            !map.contains_key(&ip("192.0.2.1")),
            "its bucket is full again"
        );
        assert!(
            map.contains_key(&ip("192.0.2.2")),
            "still paying off its failures"
        );
    }

    #[test]
    fn a_full_map_is_pruned_before_it_grows() {
        let limiter = FailureLimiter::new(1, 1).expect("a limit");
        let t0 = Instant::now();
        for n in 0..MAX_ADDRESSES as u32 {
            limiter.record(IpAddr::from(n.to_be_bytes()), t0);
        }
        assert_eq!(limiter.lock().len(), MAX_ADDRESSES);
        // All idle by now: pruned, and the newcomer is counted.
        let later = t0 + Duration::from_secs(2);
        limiter.record(ip("198.51.100.1"), later);
        assert_eq!(limiter.lock().len(), 1);
        assert!(limiter.wait(ip("198.51.100.1"), later).is_some());
    }

    #[test]
    fn a_credential_is_known_from_its_address_until_it_expires_or_fails() {
        let known = KnownCredentials::default();
        let t0 = Instant::now();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        known.remember(a, "chr_alice", t0);
        assert!(known.contains(a, "chr_alice", t0));
        assert!(!known.contains(a, "chr_bob", t0), "another credential");
        assert!(!known.contains(b, "chr_alice", t0), "another address");
        assert!(
            known.contains(ip("::ffff:192.0.2.1"), "chr_alice", t0),
            "the same bucket"
        );
        assert!(known.contains(a, "chr_alice", t0 + KNOWN_FOR - Duration::from_millis(1)));
        assert!(!known.contains(a, "chr_alice", t0 + KNOWN_FOR), "expired");

        // Each success starts its time again; a failure forgets it at once.
        let later = t0 + KNOWN_FOR / 2;
        known.remember(a, "chr_alice", later);
        assert!(known.contains(a, "chr_alice", t0 + KNOWN_FOR));
        known.forget(a, "chr_alice");
        assert!(!known.contains(a, "chr_alice", later));
    }

    #[test]
    fn a_full_memory_takes_newcomers_only_as_others_expire() {
        let known = KnownCredentials::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for n in 0..MAX_KNOWN {
            known.remember(a, &format!("chr_{n}"), t0);
        }
        known.remember(a, "chr_late", t0);
        assert!(!known.contains(a, "chr_late", t0), "none has expired");
        assert!(known.contains(a, "chr_0", t0), "the known stay known");
        known.remember(a, "chr_0", t0 + Duration::from_secs(1));
        assert!(
            known.contains(a, "chr_0", t0 + KNOWN_FOR),
            "a known one is still renewed"
        );

        let later = t0 + KNOWN_FOR;
        known.remember(a, "chr_late", later);
        assert!(known.contains(a, "chr_late", later));
        assert_eq!(known.lock().len(), 2, "the expired were pruned");
    }

    #[test]
    fn anonymous_slots_are_capped_per_address_and_given_back() {
        let counts = std::sync::Arc::new(AnonymousConnections::default());
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let first = counts.take(a, 2).expect("one");
        let second = counts.take(a, 2).expect("two");
        assert!(counts.take(a, 2).is_none(), "a third from the same address");
        assert!(counts.take(b, 2).is_some(), "another address");
        drop(first);
        assert_eq!(counts.open(a), 1);
        assert!(counts.take(a, 2).is_some(), "a slot was given back");
        drop(second);
        assert!(counts.take(a, 0).is_none(), "0: none at all");
        assert_eq!(counts.open(b), 0, "dropped at once above");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(bucket(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            bucket(ip("2001:db8:1:2:aaaa::1")),
            bucket(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(bucket(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(bucket(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn forwarded_for_without_trusted_proxies_is_warned_about() {
        let mut forwarded = HeaderMap::new();
        forwarded.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let warning = proxy_warning(&forwarded, 0).expect("a proxy nobody configured");
        assert!(warning.contains("trusted_proxy_hops"), "{warning}");
        assert_eq!(proxy_warning(&forwarded, 1), None, "configured");
        assert_eq!(proxy_warning(&HeaderMap::new(), 0), None, "no proxy");
        assert_eq!(proxy_warning(&HeaderMap::new(), 2), None);
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let peer = Some(ip("10.0.0.1"));
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.4"),
        );
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("192.0.2.5:4711"),
        );
        assert_eq!(
            client_addr(peer, &headers, 0),
            peer,
            "not trusted by default"
        );
        assert_eq!(client_addr(peer, &headers, 1), Some(ip("192.0.2.5")));
        assert_eq!(client_addr(peer, &headers, 2), Some(ip("198.51.100.4")));
        assert_eq!(
            client_addr(peer, &headers, 4),
            peer,
            "fewer entries than hops"
        );
        assert_eq!(client_addr(peer, &HeaderMap::new(), 1), peer);

        // Bytes that are not text in what the client wrote: the proxy's entry still counts.
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.7").expect("obs-text is allowed");
        headers.append("x-forwarded-for", value);
        assert_eq!(client_addr(peer, &headers, 1), Some(ip("203.0.113.7")));
        assert_eq!(
            client_addr(peer, &headers, 2),
            peer,
            "the client's own entry"
        );
    }
}
