//! Webhooks for agents: a background worker that POSTs queued events to agents'
//! `webhook_url`s, signed with HMAC-SHA256, retried with exponential backoff up to a
//! limit, every attempt recorded. It never runs on the send path: the chat only queues
//! a row (durable, so a restart loses nothing) and rings [`Chat::webhook_signal`].
//!
//! A receiver verifies a request by computing `HMAC-SHA256(secret, "{Chorus-Timestamp}.{body}")`
//! over the raw body and comparing its hex form, in constant time, with the value after
//! `sha256=` in `Chorus-Signature`; it drops requests whose timestamp is too old, and
//! requests whose body `id` (signed; also in the unsigned `Chorus-Event-Id`) it already
//! processed (a retry after a lost answer).
//!
//! Requests go to public addresses only, over `https://` (see [`target`]): a target that
//! is, or resolves to, a loopback, private, link-local or otherwise internal address is
//! not connected to, nor is a public one over plain `http://`, and its delivery is
//! recorded as `refused`. `webhook_allow_private` opens the server's own machine and
//! network, over either scheme. Redirects are never followed.

pub mod target;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use chorus_chat::Chat;
use chorus_chat::model::{Timestamp, UserId, WebhookAttempt};
use chorus_chat::store::{AttemptOutcome, ClaimLimits, DueWebhook};
use chorus_realtime::Clock;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::task::{self, JoinSet};
use tokio_util::sync::CancellationToken;

use self::target::{CheckedResolver, Refused, TargetPolicy};

/// Header with `sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`.
pub const SIGNATURE_HEADER: &str = "chorus-signature";
/// Header with the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "chorus-timestamp";
/// Header with the event's id: the same for every retry, so receivers deduplicate.
pub const EVENT_ID_HEADER: &str = "chorus-event-id";

/// Retry schedule and limits of webhook delivery.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Attempts before a delivery is given up (recorded as `failed`).
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Attempts in flight at once. When all are busy, due deliveries wait in the
    /// store (nothing is held in memory), so a slow receiver cannot grow the queue.
    pub concurrency: usize,
    /// Loopback and private targets allowed (`webhook_allow_private`; local setups).
    pub allow_private: bool,
    /// PEM file of extra CAs trusted for `https://` targets (`webhook_ca_file`).
    pub ca_file: Option<PathBuf>,
}

impl WebhookConfig {
    /// The wait after the `attempt`-th failure: `backoff · 2^(attempt-1)`, capped.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// Webhook counters, read by `/metrics` and `/api/v1/realtime/stats`.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: AtomicU64,
    /// Deliveries given up after the last attempt.
    pub given_up: AtomicU64,
    /// Deliveries refused for their target (no request made).
    pub refused: AtomicU64,
}

/// `sha256=<hex>` of `HMAC-SHA256(secret, "{timestamp}.{body}")`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The worker's HTTP clients, one per scheme. Names are looked up by the checking
/// resolver only, so TLS changes nothing about where a request may go: the connection
/// is made to an address that passed the check, with the URL's host as SNI and `Host`.
/// The `http://` client's resolver also refuses public addresses (an event's text does
/// not cross the internet in the clear; [`TargetPolicy::cleartext`]). A redirect
/// (which could point anywhere) is an answer like any other: neither follows one.
/// `https://` is verified against the built-in Mozilla roots plus
/// [`WebhookConfig::ca_file`]; `build` makes them too, so a bad CA file stops the start.
#[derive(Clone)]
pub struct Clients {
    https: reqwest::Client,
    http: reqwest::Client,
    allow_private: bool,
}

impl Clients {
    pub fn new(config: &WebhookConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let client = |cleartext| {
            let policy = TargetPolicy {
                allow_private: config.allow_private,
                cleartext,
            };
            client_builder(config.ca_file.as_deref())?
                .dns_resolver(Arc::new(CheckedResolver(policy)))
                .timeout(config.timeout)
                .user_agent(concat!("chorus-webhooks/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("building the webhook HTTP client")
        };
        Ok(Self {
            https: client(false)?,
            http: client(true)?,
            allow_private: config.allow_private,
        })
    }

    /// The client for `url`, and the policy its literal host is checked against.
    fn for_url(&self, url: &reqwest::Url) -> (&reqwest::Client, TargetPolicy) {
        let policy = TargetPolicy::for_url(self.allow_private, url);
        let client = if policy.cleartext {
            &self.http
        } else {
            &self.https
        };
        (client, policy)
    }
}

/// What every outgoing request of the server shares (webhooks, the proxies to the
/// application): no proxy from the environment, redirects never followed, `https://`
/// verified against the built-in Mozilla roots plus the PEM file `ca_file`
/// (`webhook_ca_file`).
pub fn client_builder(ca_file: Option<&Path>) -> anyhow::Result<reqwest::ClientBuilder> {
    use anyhow::Context;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading webhook_ca_file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing webhook_ca_file {}", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "webhook_ca_file {} holds no PEM certificate",
            path.display()
        );
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// Runs the worker until `stop` is cancelled. Attempts in flight at that moment are
/// dropped; their lease runs out and they are retried after the next start (receivers
/// deduplicate by event id). Due times and backoff are read on the chat's clock.
pub async fn run(
    chat: Arc<Chat>,
    config: WebhookConfig,
    metrics: Arc<WebhookMetrics>,
    stop: CancellationToken,
) {
    let clients = match Clients::new(&config) {
        Ok(clients) => clients,
        Err(err) => {
            tracing::error!(cause = %err, "webhook worker not started");
            return;
        }
    };
    let signal = chat.webhook_signal();
    let concurrency = config.concurrency.max(1);
    let share = user_share(concurrency);
    let mut in_flight = JoinSet::new();
    // Whose attempt each task is, and how many each user has in flight.
    let mut owners: HashMap<task::Id, UserId> = HashMap::new();
    let mut busy: HashMap<UserId, usize> = HashMap::new();
    // The lease outlasts an attempt, so a running attempt is never claimed twice.
    let lease = config.timeout + Duration::from_secs(5);
    loop {
        if stop.is_cancelled() {
            break;
        }
        let room = concurrency.saturating_sub(in_flight.len());
        let mut store_failed = false;
        let mut held_back = false;
        let now = chat.now();
        if room > 0 {
            // One delivery a user a claim, none for a user whose attempts fill its share
            // of the slots: a receiver that never answers holds each slot for the whole
            // timeout, and must not keep everyone else's deliveries waiting.
            let limits = ClaimLimits {
                total: room as u32,
                per_user: 1,
                busy: busy
                    .iter()
                    .filter(|&(_, &n)| n >= share)
                    .map(|(&user, _)| user)
                    .collect(),
            };
            let claimed = chat
                .claim_due_webhooks(now, later(now, lease), &limits)
                .await;
            match claimed {
                Ok(due) => {
                    held_back = due.is_empty() && !limits.busy.is_empty();
                    for delivery in due {
                        let user = delivery.user_id;
                        *busy.entry(user).or_default() += 1;
                        let task = in_flight.spawn(attempt(
                            clients.clone(),
                            chat.clone(),
                            config.clone(),
                            metrics.clone(),
                            delivery,
                        ));
                        owners.insert(task.id(), user);
                    }
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "webhook queue unavailable");
                    store_failed = true;
                }
            }
        }
        // Sleep until the next due delivery (at most a minute, in case the store was
        // unavailable), a new one is queued, an attempt ends, or shutdown. With every
        // slot busy, only an attempt's end makes room: due rows wait in the store. With
        // only the deliveries of users at their share due, so does any of theirs.
        let wait = if in_flight.len() >= concurrency {
            Duration::from_secs(60)
        } else if store_failed || held_back {
            Duration::from_secs(1)
        } else {
            match chat.next_webhook_due().await {
                Ok(Some(at)) => Duration::from_millis(at.0.saturating_sub(now.0).max(0) as u64),
                _ => Duration::from_secs(60),
            }
            .clamp(Duration::from_millis(5), Duration::from_secs(60))
        };
        tokio::select! {
            _ = signal.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(err) => err.id(),
                };
                if let Some(user) = owners.remove(&id)
                    && let Some(n) = busy.get_mut(&user)
                {
                    *n -= 1;
                    if *n == 0 {
                        busy.remove(&user);
                    }
                }
            }
            () = stop.cancelled() => break,
        }
    }
    in_flight.shutdown().await;
}

/// How many of the worker's `concurrency` slots one user's attempts may hold at once: a
/// quarter (at least one), so a receiver that never answers slows its own deliveries,
/// and three more such receivers are needed before anyone else's wait for a slot.
fn user_share(concurrency: usize) -> usize {
    (concurrency / 4).max(1)
}

fn later(t: Timestamp, by: Duration) -> Timestamp {
    Timestamp(t.0.saturating_add(by.as_millis() as i64))
}

/// What became of one attempt.
enum Sent {
    /// The receiver answered with this status.
    Answered(u16),
    /// No answer: a timeout, a connection error…
    Failed(String),
    /// Not sent: the target is not allowed.
    Refused(Refused),
}

/// One POST of one delivery, and its record.
async fn attempt(
    clients: Clients,
    chat: Arc<Chat>,
    config: WebhookConfig,
    metrics: Arc<WebhookMetrics>,
    delivery: DueWebhook,
) {
    let number = delivery.attempts + 1;
    let clock = chat.config().clock;
    let at = Timestamp(clock.now_ms());
    let started = clock.instant();
    let sent = post(&clients, &delivery, &clock).await;
    let duration_ms = (clock.instant() - started).as_millis() as i64;
    let (status_code, error) = match &sent {
        Sent::Answered(status) if (200..300).contains(status) => (Some(*status), None),
        Sent::Answered(status) => (
            Some(*status),
            Some(format!("receiver answered HTTP {status}")),
        ),
        Sent::Failed(err) => (None, Some(err.clone())),
        Sent::Refused(why) => (None, Some(format!("refused: {why}"))),
    };
    let outcome = if let Sent::Refused(why) = &sent {
        Metrics::inc(&metrics.refused);
        tracing::warn!(delivery = delivery.id, user = %delivery.user_id, reason = %why, "webhook target refused");
        AttemptOutcome::Refused
    } else if error.is_none() {
        Metrics::inc(&metrics.attempts);
        Metrics::inc(&metrics.delivered);
        AttemptOutcome::Delivered
    } else {
        Metrics::inc(&metrics.attempts);
        Metrics::inc(&metrics.failed_attempts);
        if number >= i64::from(config.max_attempts) {
            Metrics::inc(&metrics.given_up);
            tracing::warn!(delivery = delivery.id, user = %delivery.user_id, attempts = number, "webhook given up");
            AttemptOutcome::Failed
        } else {
            let wait = config.delay_after(u32::try_from(number).unwrap_or(u32::MAX));
            AttemptOutcome::Retry {
                at: later(Timestamp(clock.now_ms()), wait),
            }
        }
    };
    let record = WebhookAttempt {
        attempt: number,
        at,
        status_code: status_code.map(i64::from),
        error,
        duration_ms,
    };
    if let Err(err) = chat
        .record_webhook_attempt(delivery.id, &record, outcome)
        .await
    {
        // The lease runs out and the attempt is made again: receivers deduplicate.
        tracing::warn!(delivery = delivery.id, cause = %err, "webhook attempt not recorded");
    }
}

/// POSTs the delivery to its URL if the target is allowed: literal addresses are
/// checked here, names by the client's resolver as they are looked up.
async fn post(clients: &Clients, delivery: &DueWebhook, clock: &Clock) -> Sent {
    let url = match reqwest::Url::parse(&delivery.url) {
        Ok(url) => url,
        Err(err) => return Sent::Refused(Refused::new(format!("not a valid URL: {err}"))),
    };
    let (client, policy) = clients.for_url(&url);
    if let Err(why) = policy.check_url(&url) {
        return Sent::Refused(why);
    }
    let Some(secret) = delivery.secret.as_deref() else {
        return Sent::Failed("the agent has no webhook secret".to_owned());
    };
    let timestamp = (Timestamp(clock.now_ms()).0 / 1000).to_string();
    let signature = signature(secret.as_bytes(), &timestamp, delivery.body.as_bytes());
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, &delivery.event_id)
        .header(TIMESTAMP_HEADER, &timestamp)
        .header(SIGNATURE_HEADER, signature)
        .body(delivery.body.clone())
        .send()
        .await;
    match sent {
        Ok(response) => Sent::Answered(response.status().as_u16()),
        Err(err) => match target::refusal(&err) {
            Some(why) => Sent::Refused(why.clone()),
            None => Sent::Failed(describe(&err)),
        },
    }
}

/// `url` without its `user:password@`, for logs and errors: an operator's URLs (the
/// application's proxies, a JWKS) may carry credentials. (reqwest moves them into an
/// `Authorization` header before sending, so its errors' URLs have none.)
pub(crate) fn without_credentials(url: &reqwest::Url) -> reqwest::Url {
    let mut shown = url.clone();
    // Both fail only for URLs that cannot have credentials (`mailto:`…).
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown
}

/// A short, stable description of a failed request (no body, no secrets).
pub(crate) fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_builder() {
        "invalid request (is the URL's scheme supported?)"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {err}");
    // The causes say why (refused, reset, a certificate not trusted, …).
    let mut cause = std::error::Error::source(err);
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    let mut end = text.len().min(500);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

struct Metrics;

impl Metrics {
    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = WebhookConfig {
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            allow_private: false,
            ca_file: None,
        };
        let delays: Vec<u128> = (1..=6).map(|n| config.delay_after(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500, 500]);
        assert_eq!(config.delay_after(200).as_millis(), 500);
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        let shown = |url: &str| {
            let parsed = reqwest::Url::parse(url).expect("a valid URL");
            without_credentials(&parsed).to_string()
        };
        assert_eq!(
            shown("https://app:s3cret@auth.example.com:8443/connect?x=1#f"),
            "https://auth.example.com:8443/connect?x=1#f"
        );
        assert_eq!(shown("http://only-user@127.0.0.1/"), "http://127.0.0.1/");
        assert_eq!(shown("https://:s3cret@[::1]/jwks"), "https://[::1]/jwks");
        assert_eq!(
            shown("https://idp.example.com/keys"),
            "https://idp.example.com/keys"
        );
        assert_eq!(
            shown("postgres://u:s3cret@db/chorus"),
            "postgres://db/chorus"
        );
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // Python: hmac.new(b"Jefe", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        let sig = signature(b"Jefe", "1700000000", br#"{"a":1}"#);
        assert_eq!(
            sig,
            "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
