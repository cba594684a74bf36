//! [`Realtime`]: a connection to `GET /ws` owned by a background task (the driver) that
//! outlives the WebSocket underneath it.
//!
//! The driver writes requests, matches `ack`/`error` frames to them by id, forwards
//! `event` frames in order and tracks the last offset per scope. When the socket ends
//! with a code that says to come back ([`CloseCode::should_reconnect`], or a dropped
//! connection) and the caller still holds the [`Realtime`], it reconnects with
//! exponential backoff and full jitter ([`Backoff`]), opens the socket with `?resume=1`
//! so the server holds the initial subscriptions, and sends `resume` with every scope's
//! position as its first frame. Until that answer (and any HTTP catch-up) is handled,
//! incoming frames wait in a backlog, so the application reads one ordered stream:
//!
//! - each event once: an event at or below its scope's position is dropped;
//! - `recovered: false`: the scope's events after its position are fetched page by page
//!   from `GET /api/v1/scopes/{scope}/events?after=…` and delivered exactly as if they
//!   had arrived live (with their offsets, advancing the position), before the events
//!   that follow;
//! - only when that endpoint answers 410 (the events are no longer retained) or 404 (a
//!   server without it), the old catch-up: for `channel:{id}`, the top-level messages
//!   after the last ones seen in the channel are fetched (`…/messages?after=…`) and
//!   delivered as `message.created` events without an offset (their live copies are
//!   dropped); then every such scope gets a [`RESUME_GAP`] event: events other than
//!   top-level messages may be missing there.
//!
//! Requests made while disconnected wait for the next connection; requests that were
//! sent but not answered when the connection was lost are sent again on the next one.
//!
//! With [`Options::refresh_token`], a connection opened with a JWT asks the application
//! for a new token before the old one's `exp` and sends it as `refresh`; the newest
//! token accepted is the one reconnects use.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chorus_proto::{
    AckFrame, ClientFrame, ClientOp, CloseCode, ErrorFrame, EventFrame, FrameId, HelloFrame,
    ScopeResume, ServerFrame,
};
use futures_util::{FutureExt, SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::{Error, Result};
use crate::http::{Client, base_url_with_slash, redact_url};
use crate::model::{ChannelId, HistoryQuery, MessageId};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The type of the event the client adds after a reconnect for every scope the server
/// could not resume (refused, or `recovered: false` with the events gone from the
/// catch-up endpoint too). Its `data` is `{"scope": …}`,
/// plus `"caught_up": n` for a channel (the messages its HTTP catch-up delivered before
/// this event) and `"error": code` when the scope could not be resumed or fetched. Its
/// `offset` is absent. Refresh what the application shows of that scope: edits,
/// deletions, thread replies and membership events in the gap are not replayed.
pub const RESUME_GAP: &str = "resume.gap";

/// Requests queued for the socket task; when full, callers wait (they are few and small).
const REQUEST_QUEUE: usize = 64;
/// Pending requests above which answers nobody waits for any more (timed out) are pruned.
const PRUNE_PENDING_AT: usize = 256;
/// How long a local close waits for the server's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Page size of the HTTP catch-up of messages: the server's largest.
const CATCH_UP_PAGE: u32 = 200;
/// Page size of the HTTP catch-up of a scope's events: the server's largest.
const REPLAY_PAGE: u32 = 1000;
/// Ids of the messages delivered by catch-ups that are remembered, to drop their live
/// copies (the newest ones matter: only they can still arrive live).
const CAUGHT_UP_IDS: usize = 16_384;
/// Message ids remembered per channel (see `Delivered`).
const DELIVERED_PER_CHANNEL: usize = 32;
/// Frames held while a resume completes, per slot of the event buffer, at most.
const BACKLOG_PER_BUFFER: usize = 16;
/// A connection that stayed open this long starts the backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Tuning of a [`Realtime`] connection.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events buffered for the caller. A caller that falls this far behind is treated like
    /// a slow consumer: the connection closes with 3008 and [`Realtime::positions`] holds
    /// only what was buffered, so a resume loses nothing (with `reconnect`, the driver
    /// waits until half the buffer is free, then reconnects and resumes). Blocking the
    /// socket instead could deadlock a caller that awaits an ack while not reading events.
    pub event_buffer: usize,
    /// How long `connect` (and each reconnect attempt) waits for `hello`, and a request
    /// for its answer.
    pub request_timeout: Duration,
    /// Reconnect and resume after a lost connection; `None`: the first disconnect is
    /// final.
    pub reconnect: Option<Backoff>,
    /// CAs trusted besides the built-in roots for `wss://` (and the HTTP catch-up).
    pub roots: Option<crate::tls::ExtraRoots>,
    /// Fresh credentials when the token is a JWT: asked at 80 % of its remaining
    /// lifetime (at least 5 s before its `exp`) and after a close with 3502. Without
    /// it, a connection opened with a JWT ends (3502) at the token's `exp`.
    pub refresh_token: Option<RefreshToken>,
    /// Sent besides the token with every upgrade (reconnects too) and with the HTTP
    /// catch-up; none by default. [`Client::realtime_with`] fills in the client's own
    /// ([`Client::with_headers`]) when this is empty.
    pub headers: HeaderMap,
}

/// What [`RefreshToken`] callbacks return.
pub type TokenFuture = Pin<
    Box<
        dyn Future<Output = std::result::Result<String, Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

/// The application's source of fresh tokens: an async callback, cheap to clone.
#[derive(Clone)]
pub struct RefreshToken(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl RefreshToken {
    /// `RefreshToken::new(|| async { Ok(my_idp.new_token().await?) })`.
    pub fn new<F, Fut>(callback: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, Box<dyn std::error::Error + Send + Sync>>>
            + Send
            + 'static,
    {
        Self(Arc::new(move || Box::pin(callback())))
    }

    fn call(&self) -> TokenFuture {
        (self.0)()
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

/// The `exp` of a JWT; `None` for any other token. The payload is only read, not
/// verified: the server does that.
pub fn jwt_expiry(token: &str) -> Option<std::time::SystemTime> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp = serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_f64()?;
    let since = Duration::try_from_secs_f64(exp).ok()?;
    std::time::UNIX_EPOCH.checked_add(since)
}

/// When to ask for a new token: at 80 % of what is left of `expires_at`, and at least
/// 5 s before it (at once when less is left).
fn refresh_deadline(expires_at: std::time::SystemTime) -> Instant {
    let left = expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let wait = left
        .mul_f64(0.8)
        .min(left.saturating_sub(Duration::from_secs(5)));
    Instant::now() + wait
}

impl Default for Options {
    fn default() -> Self {
        Self {
            event_buffer: 4096,
            request_timeout: Duration::from_secs(10),
            reconnect: Some(Backoff::default()),
            roots: None,
            refresh_token: None,
            headers: HeaderMap::new(),
        }
    }
}

/// Exponential backoff with full jitter: before attempt `n` (from 0) the driver waits a
/// uniformly random time in `[0, min(max, base · 2ⁿ)]`. The count starts over once a
/// connection has stayed open for 10 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// Failed attempts in a row after a lost connection after which the connection ends
    /// for good (with the code that lost it); `None`: keep trying as long as the caller
    /// holds the [`Realtime`].
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The longest wait before attempt `attempt` (from 0): `min(max, base · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random wait before attempt `attempt` (from 0), in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(0..=ceiling))
    }
}

/// Where a [`Realtime`] connection stands; see [`Realtime::state`] and
/// [`Realtime::state_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected (and, after a reconnect, resumed): events flow.
    Open,
    /// The connection was lost (`cause`); attempt `attempt` (from 1) to reconnect and
    /// resume is under way: waiting out the backoff, connecting, or catching up.
    Reconnecting { attempt: u32, cause: Disconnect },
    /// Ended for good, as [`Realtime::disconnect`] says.
    Closed(Disconnect),
}

/// How a connection ended: the close code and reason the server sent, or a local one.
/// Codes follow the protocol: 1000 normal (also when this side closed), 1006 dropped
/// without a close frame, 3002 the server went silent (or did not answer `resume`), 3008
/// this side's event buffer overflowed, 1011 the HTTP catch-up after a resume failed,
/// 3502 a reconnect was refused for the token, 1002 a reconnect was refused otherwise,
/// and whatever the server sent (see [`CloseCode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: String,
}

impl Disconnect {
    fn local(code: CloseCode, reason: &str) -> Self {
        Self {
            code: code.code(),
            reason: reason.to_owned(),
        }
    }

    fn abnormal(reason: impl Into<String>) -> Self {
        Self {
            code: 1006,
            reason: reason.into(),
        }
    }

    /// The protocol's name for the code, when it is one of Chorus's.
    pub fn close_code(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.code)
    }

    /// Whether the protocol says to reconnect (with backoff) and resume.
    pub fn should_reconnect(&self) -> bool {
        CloseCode::should_reconnect(self.code)
    }
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

/// A connection to `GET /ws` that reconnects and resumes by itself (see the module
/// documentation and [`Options::reconnect`]).
///
/// Requests (`subscribe`, `resume`, …) take `&self` and may run concurrently; events are
/// read with [`next_event`](Self::next_event). When the connection ends for good,
/// `next_event` returns the buffered events and then `None`, and
/// [`disconnect`](Self::disconnect) says why.
pub struct Realtime {
    requests: mpsc::Sender<Request>,
    events: mpsc::Receiver<EventFrame>,
    shared: Arc<Mutex<Shared>>,
    state: watch::Receiver<ConnectionState>,
    /// Only tests can cut the connection (`test-util`); the driver always listens.
    #[cfg(feature = "test-util")]
    cut: Arc<Notify>,
    task: JoinHandle<()>,
    request_timeout: Duration,
}

/// State the task writes and the caller reads. A std mutex: each critical section is a
/// map update or a clone, never held across an await.
struct Shared {
    hello: HelloFrame,
    positions: BTreeMap<String, u64>,
    disconnect: Option<Disconnect>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Request {
    op: ClientOp,
    reply: oneshot::Sender<Result<AckFrame>>,
}

impl Realtime {
    /// Connects with default [`Options`]. `url` is either the server's base URL
    /// (`http://host:7800`, the WebSocket is then `ws://host:7800/ws`) or a full
    /// `ws://…/ws` URL. Returns after the server's `hello`; a refused upgrade (bad token,
    /// shutting down) is an [`Error::Api`]. Only later disconnects are retried.
    pub async fn connect(url: &str, token: &str) -> Result<Self> {
        Self::connect_with(url, token, Options::default()).await
    }

    /// Connects with the given [`Options`].
    pub async fn connect_with(url: &str, token: &str, options: Options) -> Result<Self> {
        let ws_url = ws_url(url)?;
        // The HTTP catch-up after an unrecovered resume goes to the same server.
        let http = Client::with_roots(http_base(url)?.as_str(), token, options.roots.clone())?
            .with_headers(options.headers.clone());
        let (ws, hello) = open_socket(
            ws_url.clone(),
            token.to_owned(),
            options.request_timeout,
            false,
            options.roots.as_ref(),
            &options.headers,
        )
        .await?;

        let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE);
        let event_buffer = options.event_buffer.max(1);
        let (events_tx, events) = mpsc::channel(event_buffer);
        let shared = Arc::new(Mutex::new(Shared {
            hello: hello.clone(),
            // A valid resume position for every scope, even one that delivers nothing.
            positions: hello.offsets.clone(),
            disconnect: None,
        }));
        let (state_tx, state) = watch::channel(ConnectionState::Open);
        let cut = Arc::new(Notify::new());
        let driver = Driver {
            ws_url,
            token: token.to_owned(),
            http,
            reconnect: options.reconnect,
            request_timeout: options.request_timeout,
            roots: options.roots,
            headers: options.headers,
            refresh_token: options.refresh_token,
            refresh_at: None,
            refreshing: None,
            requests: requests_rx,
            events: events_tx,
            event_buffer,
            shared: shared.clone(),
            state: state_tx,
            cut: cut.clone(),
            user_id: hello.user_id,
            next_id: 1,
            pending: BTreeMap::new(),
            queued: VecDeque::new(),
            rewinding: HashMap::new(),
            left: BTreeSet::new(),
            delivered: HashMap::new(),
            owed: BTreeMap::new(),
            gaps: VecDeque::new(),
            caught_up: RecentIds::default(),
            open_since: None,
        };
        Ok(Self {
            requests,
            events,
            shared,
            state,
            #[cfg(feature = "test-util")]
            cut,
            task: tokio::spawn(driver.run(ws, hello)),
            request_timeout: options.request_timeout,
        })
    }

    /// The `hello` of the current (or last) connection: user, session, heartbeat and the
    /// auto-subscribed scopes with their offsets.
    pub fn hello(&self) -> HelloFrame {
        lock(&self.shared).hello.clone()
    }

    /// Where the connection stands now.
    pub fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of [`state`](Self::state); after `Closed` its
    /// sender is gone (`changed()` fails).
    pub fn state_changes(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Subscribes to `scope`; with `since`, the server first replays the retained events
    /// after that offset (the ack's `recovered` says whether all were still there). That
    /// replay is an explicit rewind: it is delivered even where it repeats events already
    /// delivered. The subscription survives reconnects.
    pub async fn subscribe(&self, scope: &str, since: Option<u64>) -> Result<AckFrame> {
        let scope = scope.to_owned();
        self.request(ClientOp::Subscribe { scope, since }).await
    }

    /// Stops delivery of `scope` and forgets its position; a reconnect leaves it again
    /// if the server subscribes it on connect.
    pub async fn unsubscribe(&self, scope: &str) -> Result<()> {
        let scope = scope.to_owned();
        self.request(ClientOp::Unsubscribe { scope })
            .await
            .map(drop)
    }

    /// Re-subscribes each scope after its offset; the outcome per scope. Reconnects do
    /// this by themselves; this is for positions kept from another connection. Like a
    /// rewind, the events it replays are delivered even below the current positions.
    pub async fn resume(
        &self,
        positions: BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, ScopeResume>> {
        let ack = self.request(ClientOp::Resume { positions }).await?;
        Ok(ack.scopes.unwrap_or_default())
    }

    /// Tells the channel's other members that the caller is typing.
    pub async fn typing(&self, channel: ChannelId, thread: Option<MessageId>) -> Result<()> {
        let op = ClientOp::Typing {
            channel_id: channel.0,
            thread_id: thread.map(|t| t.0),
        };
        self.request(op).await.map(drop)
    }

    /// Publishes an event to a `topic:` scope whose namespace lets this connection
    /// publish (op `publish`); `data` must satisfy the namespace's schema, else
    /// `bad_request` naming the failing path. Returns the event's offset: `None` in a
    /// namespace that keeps no history.
    pub async fn publish(&self, scope: &str, kind: &str, data: Value) -> Result<Option<u64>> {
        let op = ClientOp::Publish {
            scope: scope.to_owned(),
            kind: kind.to_owned(),
            data,
        };
        Ok(self.request(op).await?.offset)
    }

    /// A protocol-level ping; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        self.request(ClientOp::Ping).await?;
        Ok(start.elapsed())
    }

    /// The next event, each once and in the order of its scope, across reconnects;
    /// `None` once the connection has ended for good and every buffered event was
    /// returned.
    pub async fn next_event(&mut self) -> Option<EventFrame> {
        self.events.recv().await
    }

    /// [`next_event`](Self::next_event) with its payload typed: a type the server
    /// publishes as `chorus-api`'s [`Event`](crate::Event), any other kept raw.
    pub async fn next_typed_event(&mut self) -> Option<crate::TypedEvent> {
        self.next_event().await.map(crate::TypedEvent::from)
    }

    /// The position per scope: the offset of the last event delivered, or the offset the
    /// server gave on subscription (`hello`, subscribe and resume acks). A reconnect
    /// resumes from these.
    pub fn positions(&self) -> BTreeMap<String, u64> {
        lock(&self.shared).positions.clone()
    }

    /// Why the connection ended for good, once it has (a lost connection that is being
    /// re-established is not an end; see [`state`](Self::state)).
    pub fn disconnect(&self) -> Option<Disconnect> {
        lock(&self.shared).disconnect.clone()
    }

    /// Closes the connection (code 1000), without reconnecting, and returns how it ended
    /// (the server may have closed it first).
    pub async fn close(self) -> Disconnect {
        let Self {
            requests,
            task,
            shared,
            ..
        } = self;
        drop(requests);
        let _ = task.await;
        let disconnect = lock(&shared).disconnect.clone();
        disconnect.unwrap_or_else(|| Disconnect::abnormal("connection task failed"))
    }

    /// Drops the current WebSocket without a close frame, as a network failure would;
    /// the driver then reconnects (if enabled). Fault injection for tests: only with the
    /// `test-util` feature, which is not part of the stable API.
    #[cfg(feature = "test-util")]
    pub fn drop_connection_for_test(&self) {
        self.cut.notify_one();
    }

    async fn request(&self, op: ClientOp) -> Result<AckFrame> {
        let deadline = Instant::now() + self.request_timeout;
        let (reply, answer) = oneshot::channel();
        match tokio::time::timeout_at(deadline, self.requests.send(Request { op, reply })).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(self.closed()),
            Err(_) => return Err(self.timed_out()),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.closed()),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn closed(&self) -> Error {
        Error::Closed(
            self.disconnect()
                .unwrap_or_else(|| Disconnect::abnormal("connection task failed")),
        )
    }

    fn timed_out(&self) -> Error {
        match self.state() {
            ConnectionState::Reconnecting { cause, .. } => Error::Reconnecting(cause),
            _ => Error::Timeout(self.request_timeout),
        }
    }
}

/// `ws://` and `wss://` URLs are used as given; `http(s)://base` becomes `ws(s)://base/ws`.
fn ws_url(input: &str) -> Result<Url> {
    let url = Url::parse(input).map_err(|e| Error::Url(format!("{}: {e}", redact_url(input))))?;
    let scheme = match url.scheme() {
        "ws" | "wss" => return Ok(url),
        "http" => "ws",
        "https" => "wss",
        other => {
            return Err(Error::Url(format!(
                "{}: unsupported scheme {other:?}",
                redact_url(input)
            )));
        }
    };
    let mut url = base_url_with_slash(input)?
        .join("ws")
        .map_err(|e| Error::Url(format!("{}: {e}", redact_url(input))))?;
    url.set_scheme(scheme)
        .map_err(|()| Error::Url(format!("{}: cannot use {scheme}", redact_url(input))))?;
    Ok(url)
}

/// The HTTP base URL of the server behind `input`: `http(s)://base` as given,
/// `ws(s)://base/ws?…` without its `ws` segment and query.
fn http_base(input: &str) -> Result<Url> {
    let mut url =
        Url::parse(input).map_err(|e| Error::Url(format!("{}: {e}", redact_url(input))))?;
    let scheme = match url.scheme() {
        "http" | "https" => return base_url_with_slash(input),
        "ws" => "http",
        "wss" => "https",
        other => {
            return Err(Error::Url(format!(
                "{}: unsupported scheme {other:?}",
                redact_url(input)
            )));
        }
    };
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/');
    let path = format!("{}/", path.strip_suffix("/ws").unwrap_or(path));
    url.set_path(&path);
    url.set_scheme(scheme)
        .map_err(|()| Error::Url(format!("{}: cannot use {scheme}", redact_url(input))))?;
    Ok(url)
}

/// Opens the WebSocket and reads `hello`, within `timeout`. With `resume`, the server
/// holds the initial subscriptions until the first frame (which must be `resume`).
/// `headers` go with the upgrade ([`Options::headers`]).
async fn open_socket(
    mut url: Url,
    token: String,
    timeout: Duration,
    resume: bool,
    roots: Option<&crate::tls::ExtraRoots>,
    headers: &HeaderMap,
) -> Result<(Socket, HelloFrame)> {
    if resume {
        url.query_pairs_mut().append_pair("resume", "1");
    }
    let mut request = url.as_str().into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().append(name, value.clone());
    }
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Error::Protocol("the token is not a valid header value".into()))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let open = async {
        // `wss://` trusts the built-in roots, plus `roots` when given.
        let connector = roots.map(crate::tls::ExtraRoots::websocket);
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
        let mut ws = match connecting.await {
            Ok((ws, _)) => ws,
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                return Err(Error::from_response(response.status(), body));
            }
            Err(err) => return Err(err.into()),
        };
        let hello = read_hello(&mut ws).await?;
        Ok((ws, hello))
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

async fn read_hello(ws: &mut Socket) -> Result<HelloFrame> {
    while let Some(message) = ws.next().await {
        match message? {
            Message::Text(text) => {
                return match serde_json::from_str::<ServerFrame>(text.as_str()) {
                    Ok(ServerFrame::Hello(hello)) => Ok(hello),
                    _ => Err(Error::Protocol(format!("expected hello, got {text}"))),
                };
            }
            Message::Close(frame) => return Err(Error::Closed(from_close_frame(frame))),
            _ => {}
        }
    }
    Err(Error::Closed(Disconnect::abnormal("closed before hello")))
}

fn from_close_frame(frame: Option<CloseFrame>) -> Disconnect {
    match frame {
        Some(frame) => Disconnect {
            code: frame.code.into(),
            reason: frame.reason.as_str().to_owned(),
        },
        None => Disconnect {
            code: 1005,
            reason: "no close code".into(),
        },
    }
}

/// Whether a failed reconnect attempt is worth another one.
fn retryable(err: &Error) -> bool {
    match err {
        Error::Api { status, .. } | Error::UnexpectedResponse { status, .. } => {
            status.is_server_error()
                || *status == StatusCode::TOO_MANY_REQUESTS
                || *status == StatusCode::REQUEST_TIMEOUT
        }
        Error::Closed(end) => !(3500..=3999).contains(&end.code),
        Error::Url(_) | Error::Ws { .. } => false,
        _ => true,
    }
}

/// The final end after a reconnect attempt the server refused for good.
fn refused(err: &Error) -> Disconnect {
    let code = match err {
        Error::Closed(end) => end.code,
        Error::Api {
            status: StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN,
            ..
        } => CloseCode::Unauthorized.code(),
        _ => 1002,
    };
    Disconnect {
        code,
        reason: format!("reconnect refused: {err}"),
    }
}

/// Who waits for an answer.
enum Origin {
    Caller(oneshot::Sender<Result<AckFrame>>),
    /// The driver's own frames (leaving again a scope the caller had left).
    Internal,
    /// The driver's `refresh` with this token: kept once the server accepts it.
    Refresh(String),
}

struct Pending {
    op: ClientOp,
    origin: Origin,
}

/// How one connection ended.
enum SessionEnd {
    /// For good: the caller closed or dropped the `Realtime`.
    Final(Disconnect),
    /// Lost; reconnect if the code says so.
    Lost(Disconnect),
}

/// Whether frames reach the application yet.
enum Gate {
    Open,
    /// The `resume` (id) was sent; every frame waits for its answer, which must come by
    /// `until`.
    AwaitingAck {
        id: i64,
        until: Instant,
        /// The positions the `resume` sent.
        sent: BTreeMap<String, u64>,
        backlog: VecDeque<ServerFrame>,
    },
    /// The HTTP catch-up runs; frames wait for it.
    CatchingUp(Held),
}

/// Frames received while the resume is completed, and the positions its answer gave.
struct Held {
    backlog: VecDeque<ServerFrame>,
    /// Scope offsets from the resume answer, for scopes that still have no position
    /// once the backlog is delivered.
    offsets: Vec<(String, u64)>,
}

impl Gate {
    fn deadline(&self) -> Option<Instant> {
        match self {
            Self::AwaitingAck { until, .. } => Some(*until),
            _ => None,
        }
    }
}

/// A channel's message catch-up: the channel, and the message id to fetch after (`None`:
/// no message seen there, nothing to fetch).
type MessageJob = (i64, Option<i64>);

/// A scope to catch up from the events endpoint after `recovered: false`.
struct Replay {
    scope: String,
    /// Its position: the events after it are fetched.
    after: u64,
    /// The position the scope continues from if the events are gone (`hello`'s).
    restart: Option<u64>,
    /// For a channel, the message catch-up to fall back on: `(channel, after id)`.
    fallback: Option<MessageJob>,
}

/// What the events endpoint brought for one scope.
struct Replayed {
    scope: String,
    restart: Option<u64>,
    events: Vec<EventFrame>,
    end: ReplayEnd,
}

enum ReplayEnd {
    /// Every event up to the scope's head.
    Complete,
    /// The first `event_buffer` of them; the rest is fetched on the next connection.
    More,
    /// 410 (no longer retained) or 404 (a server without the endpoint): fall back to
    /// the message catch-up and a gap notice.
    Gone,
    /// The server refused (e.g. `forbidden`); a gap notice with the code.
    Refused(String),
    /// A transport failure or a server error; tried again on the next connection.
    Failed(String),
}

/// Everything the HTTP catch-up after one resume brought.
struct CaughtUp {
    replayed: Vec<Replayed>,
    fetched: Vec<Fetched>,
}

/// What the HTTP catch-up of one channel brought.
struct Fetched {
    channel: i64,
    messages: Vec<Value>,
    end: FetchEnd,
}

enum FetchEnd {
    /// Every message after the last one seen.
    Complete,
    /// The first `event_buffer` of them; the rest is fetched on the next connection.
    More,
    /// The server refused (e.g. `forbidden`: no longer a member); given up.
    Refused(String),
    /// A transport failure or a server error; tried again on the next connection.
    Failed(String),
}

type CatchUp = Pin<Box<dyn Future<Output = CaughtUp> + Send>>;

/// The last message ids delivered in one channel, in delivery order.
#[derive(Default)]
struct Delivered {
    ids: VecDeque<i64>,
}

impl Delivered {
    fn push(&mut self, id: i64) {
        self.ids.push_back(id);
        if self.ids.len() > DELIVERED_PER_CHANNEL {
            self.ids.pop_front();
        }
    }

    fn contains(&self, id: i64) -> bool {
        self.ids.contains(&id)
    }

    /// Where a catch-up starts: after the oldest id remembered rather than the newest,
    /// because concurrent sends can publish a message after one with a higher id; the
    /// ones remembered are skipped.
    fn after(&self) -> Option<i64> {
        self.ids.iter().min().copied()
    }
}

/// A bounded set of message ids that forgets the oldest.
#[derive(Default)]
struct RecentIds {
    order: VecDeque<i64>,
    set: HashSet<i64>,
}

impl RecentIds {
    fn insert(&mut self, id: i64) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > CAUGHT_UP_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, id: i64) -> bool {
        self.set.contains(&id)
    }
}

/// A change of the user's own subscriptions announced on its `user:` scope.
enum Membership {
    Left(String),
    Joined(String),
}

/// The socket task.
struct Driver {
    ws_url: Url,
    token: String,
    http: Client,
    reconnect: Option<Backoff>,
    request_timeout: Duration,
    roots: Option<crate::tls::ExtraRoots>,
    headers: HeaderMap,
    refresh_token: Option<RefreshToken>,
    /// When the current connection asks for a new token (a JWT's, with a callback).
    refresh_at: Option<Instant>,
    /// The callback's answer being awaited, and the expiry of the token it replaces.
    refreshing: Option<(TokenFuture, Option<std::time::SystemTime>)>,
    requests: mpsc::Receiver<Request>,
    events: mpsc::Sender<EventFrame>,
    event_buffer: usize,
    shared: Arc<Mutex<Shared>>,
    state: watch::Sender<ConnectionState>,
    cut: Arc<Notify>,
    user_id: i64,
    next_id: i64,
    /// Sent on the current connection and not answered yet, by id (= send order).
    pending: BTreeMap<i64, Pending>,
    /// The caller's requests waiting for a connection, oldest first.
    queued: VecDeque<Request>,
    /// Scopes with a caller's rewind (`subscribe` with `since`, `resume`) in flight, and
    /// how many: their events are delivered as the server sends them, even below the
    /// position.
    rewinding: HashMap<String, usize>,
    /// Scopes the caller unsubscribed: their events are dropped, and a reconnect that
    /// subscribes them again leaves them again.
    left: BTreeSet<String>,
    /// The last message ids delivered per channel: an HTTP catch-up starts after them.
    delivered: HashMap<i64, Delivered>,
    /// Channels whose HTTP catch-up is still to be done, with the messages it delivered
    /// so far (kept across connections until it completes, so a connection lost during
    /// a catch-up loses nothing).
    owed: BTreeMap<i64, usize>,
    /// `resume.gap` events still to be delivered: `(scope, data)`.
    gaps: VecDeque<(String, Value)>,
    /// Messages delivered by catch-ups, whose live copies are dropped.
    caught_up: RecentIds,
    /// When the current connection opened (resumed), for the backoff reset.
    open_since: Option<Instant>,
}

impl Driver {
    async fn run(mut self, first: Socket, hello: HelloFrame) {
        let mut next = Some((first, hello));
        let mut resuming = false;
        let mut exponent = 0u32;
        let end = loop {
            let Some((ws, hello)) = next.take() else {
                break Disconnect::abnormal("no connection");
            };
            let cause = match self.session(ws, &hello, resuming).await {
                SessionEnd::Final(end) => break end,
                SessionEnd::Lost(cause) => cause,
            };
            tracing::debug!(code = cause.code, reason = %cause.reason, "realtime connection lost");
            self.requeue_pending();
            let expired = cause.code == CloseCode::Unauthorized.code();
            let backoff = match self.reconnect {
                Some(backoff) if cause.should_reconnect() => backoff,
                // The token expired: reconnect with a fresh one, if the application has one.
                Some(backoff) if expired && self.refresh_token.is_some() => {
                    match self.renew_token().await {
                        Some(Ok(())) => backoff,
                        Some(Err(err)) => {
                            tracing::warn!(cause = %err, "token refresh failed");
                            break cause;
                        }
                        None => break Disconnect::local(CloseCode::Normal, "bye"),
                    }
                }
                _ => break cause,
            };
            if self
                .open_since
                .take()
                .is_some_and(|since| since.elapsed() >= STABLE_AFTER)
            {
                exponent = 0;
            }
            match self.reconnect(backoff, &mut exponent, cause).await {
                Ok(connected) => {
                    next = Some(connected);
                    resuming = true;
                }
                Err(end) => break end,
            }
        };
        tracing::debug!(code = end.code, reason = %end.reason, "realtime connection ended");
        // Record why before failing the waiting requests, which then read it.
        lock(&self.shared).disconnect = Some(end.clone());
        self.state.send_replace(ConnectionState::Closed(end));
        self.pending.clear();
        self.queued.clear();
    }

    /// Waits out the backoff and connects again, as many times as it takes. `exponent`
    /// counts the attempts since the last stable connection (the backoff grows with
    /// it). `Err` is the final end: the caller is gone, the attempts are exhausted, or
    /// the server refused the reconnect for good.
    async fn reconnect(
        &mut self,
        backoff: Backoff,
        exponent: &mut u32,
        cause: Disconnect,
    ) -> Result<(Socket, HelloFrame), Disconnect> {
        let gone = || Disconnect::local(CloseCode::Normal, "bye");
        let mut attempt = 0u32;
        loop {
            if backoff.max_attempts.is_some_and(|max| attempt >= max) {
                return Err(cause);
            }
            attempt += 1;
            let delay = backoff.delay(*exponent);
            *exponent = exponent.saturating_add(1);
            tracing::debug!(attempt, ?delay, "reconnecting");
            self.state.send_replace(ConnectionState::Reconnecting {
                attempt,
                cause: cause.clone(),
            });
            self.idle(tokio::time::sleep(delay))
                .await
                .ok_or_else(gone)?;
            // The resume replays what the caller has not read yet: wait until it fits.
            let events = self.events.clone();
            let room = (self.event_buffer / 2).max(1);
            let reserved = self
                .idle(async move { events.reserve_many(room).await.map(drop) })
                .await;
            if !matches!(reserved, Some(Ok(()))) {
                return Err(gone());
            }
            let (roots, headers) = (self.roots.clone(), self.headers.clone());
            let open = open_socket(
                self.ws_url.clone(),
                self.token.clone(),
                self.request_timeout,
                true,
                roots.as_ref(),
                &headers,
            );
            match self.idle(open).await {
                None => return Err(gone()),
                Some(Ok(connected)) => return Ok(connected),
                Some(Err(err)) if retryable(&err) => {
                    tracing::debug!(attempt, cause = %err, "reconnect attempt failed");
                }
                Some(Err(err)) => return Err(refused(&err)),
            }
        }
    }

    /// Replaces the token with the callback's answer; `None` when the caller left.
    async fn renew_token(
        &mut self,
    ) -> Option<std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>> {
        let callback = self.refresh_token.clone()?;
        let token = self.idle(callback.call()).await?;
        Some(token.map(|token| self.adopt(token)))
    }

    /// From now on `token` opens connections and authenticates the HTTP catch-up.
    fn adopt(&mut self, token: String) {
        self.http = self.http.with_token(token.clone());
        self.token = token;
    }

    /// Arms the refresh of the current token (a JWT, with a callback).
    fn arm_refresh(&mut self) {
        self.refresh_at = match (&self.refresh_token, jwt_expiry(&self.token)) {
            (Some(_), Some(exp)) => Some(refresh_deadline(exp)),
            _ => None,
        };
    }

    /// A refresh failed: try again while the old token lasts (the server closes with
    /// 3502 at its `exp`; a close with a callback gets a new token then).
    fn retry_refresh(&mut self, old: Option<std::time::SystemTime>) {
        let left = old
            .and_then(|exp| exp.duration_since(std::time::SystemTime::now()).ok())
            .unwrap_or_default();
        self.refresh_at = (left > Duration::from_secs(1))
            .then(|| Instant::now() + (left / 2).min(Duration::from_secs(5)));
    }

    /// Runs `future` while the caller's requests queue up for the next connection;
    /// `None` when the caller closed or dropped the `Realtime`.
    async fn idle<T>(&mut self, future: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(future);
        loop {
            tokio::select! {
                out = &mut future => return Some(out),
                request = self.requests.recv() => {
                    let request = request?;
                    self.accept(&request.op);
                    self.queued.push_back(request);
                    self.prune_queued();
                }
            }
        }
    }

    /// One connection, from `hello` to its end. With `resuming`, it starts with the
    /// `resume` and holds back every frame until its answer (and catch-up) is handled.
    async fn session(&mut self, mut ws: Socket, hello: &HelloFrame, resuming: bool) -> SessionEnd {
        // The server pings every `heartbeat_ms`; two silent periods mean it is gone.
        let silence = Duration::from_millis(hello.heartbeat_ms.max(1_000)) * 2;
        let mut deadline = Instant::now() + silence;
        let mut gate = Gate::Open;
        self.refreshing = None;
        self.arm_refresh();
        if resuming {
            match self.begin_resume(&mut ws, hello).await {
                Ok(resume) => gate = resume,
                Err(cause) => return SessionEnd::Lost(cause),
            }
        } else {
            self.opened();
        }
        while let Some(request) = self.queued.pop_front() {
            if request.reply.is_closed() {
                self.forget(&request.op);
                continue;
            }
            if let Err(cause) = self.send_request(&mut ws, request).await {
                return SessionEnd::Lost(cause);
            }
        }

        let cut = self.cut.clone();
        // A cut asked for while there was no connection is not for this one.
        let _ = cut.notified().now_or_never();
        let mut catch_up: Option<CatchUp> = None;
        let mut server_close = None;
        loop {
            let resume_deadline = gate.deadline();
            tokio::select! {
                () = cut.notified() => {
                    // Dropping the socket without a close frame, as a network failure would.
                    return SessionEnd::Lost(Disconnect::abnormal("connection cut"));
                }
                request = self.requests.recv() => match request {
                    Some(request) => {
                        self.accept(&request.op);
                        if let Err(cause) = self.send_request(&mut ws, request).await {
                            return SessionEnd::Lost(cause);
                        }
                    }
                    // The caller closed or dropped the `Realtime`.
                    None => {
                        let end = Disconnect::local(CloseCode::Normal, "bye");
                        return SessionEnd::Final(close(&mut ws, end).await);
                    }
                },
                () = sleep_until(self.refresh_at), if self.refreshing.is_none() => {
                    self.refresh_at = None;
                    if let Some(callback) = &self.refresh_token {
                        self.refreshing = Some((callback.call(), jwt_expiry(&self.token)));
                    }
                }
                token = maybe(self.refreshing.as_mut().map(|(future, _)| future)) => {
                    let old = self.refreshing.take().and_then(|(_, old)| old);
                    match token {
                        Ok(token) => {
                            let op = ClientOp::Refresh { token: token.clone() };
                            if let Err(cause) = self.send_frame(&mut ws, op, Origin::Refresh(token)).await {
                                return SessionEnd::Lost(cause);
                            }
                        }
                        Err(err) => {
                            tracing::warn!(cause = %err, "token refresh failed");
                            self.retry_refresh(old);
                        }
                    }
                }
                caught_up = maybe(catch_up.as_mut()) => {
                    catch_up = None;
                    let Gate::CatchingUp(held) = std::mem::replace(&mut gate, Gate::Open) else {
                        continue;
                    };
                    if let Err(cause) = self.open_gate(caught_up, held) {
                        return SessionEnd::Lost(close(&mut ws, cause).await);
                    }
                }
                message = ws.next() => {
                    deadline = Instant::now() + silence;
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            // Unknown frames are skipped, not fatal, so newer servers stay usable.
                            let frame = match serde_json::from_str::<ServerFrame>(text.as_str()) {
                                Ok(frame) => frame,
                                Err(err) => {
                                    tracing::warn!(cause = %err, "unreadable server frame ignored");
                                    continue;
                                }
                            };
                            if let Err(cause) = self.on_server_frame(frame, &mut gate, &mut catch_up, hello) {
                                return SessionEnd::Lost(close(&mut ws, cause).await);
                            }
                        }
                        // tungstenite answers it; keep reading until the server drops TCP.
                        Some(Ok(Message::Close(frame))) => server_close = Some(from_close_frame(frame)),
                        // Pings are answered by tungstenite on the next read.
                        Some(Ok(_)) => {}
                        Some(Err(err)) => {
                            return SessionEnd::Lost(server_close.take().unwrap_or_else(|| Disconnect::abnormal(err.to_string())));
                        }
                        None => {
                            return SessionEnd::Lost(server_close.take().unwrap_or_else(|| Disconnect::abnormal("connection dropped")));
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let end = Disconnect::local(CloseCode::HeartbeatTimeout, "server silent");
                    return SessionEnd::Lost(close(&mut ws, end).await);
                }
                () = sleep_until(resume_deadline) => {
                    let end = Disconnect::local(CloseCode::HeartbeatTimeout, "no answer to resume");
                    return SessionEnd::Lost(close(&mut ws, end).await);
                }
            }
        }
    }

    /// Sends `resume` (the first frame of the connection) with every position, then
    /// leaves again the scopes the caller had left.
    async fn begin_resume(
        &mut self,
        ws: &mut Socket,
        hello: &HelloFrame,
    ) -> Result<Gate, Disconnect> {
        let sent = {
            let mut shared = lock(&self.shared);
            shared.hello = hello.clone();
            let sent = shared.positions.clone();
            // Scopes new to this connection continue from `hello`; known ones from
            // their position (positions never move back within a server's numbering).
            for (scope, offset) in &hello.offsets {
                if !self.left.contains(scope) {
                    shared.positions.entry(scope.clone()).or_insert(*offset);
                }
            }
            sent
        };
        let id = self.take_id();
        let frame = ClientFrame {
            id: Some(FrameId::Int(id)),
            op: ClientOp::Resume {
                positions: sent.clone(),
            },
        };
        ws.send(Message::text(frame.to_json()))
            .await
            .map_err(|e| Disconnect::abnormal(e.to_string()))?;
        let again: Vec<String> = hello
            .scopes
            .iter()
            .filter(|scope| self.left.contains(*scope))
            .cloned()
            .collect();
        for scope in again {
            let op = ClientOp::Unsubscribe { scope };
            self.send_frame(ws, op, Origin::Internal).await?;
        }
        Ok(Gate::AwaitingAck {
            id,
            until: Instant::now() + self.request_timeout,
            sent,
            backlog: VecDeque::new(),
        })
    }

    /// Routes one server frame: to the application when the gate is open, else to the
    /// backlog, except the answer to `resume`, which decides what is caught up.
    fn on_server_frame(
        &mut self,
        frame: ServerFrame,
        gate: &mut Gate,
        catch_up: &mut Option<CatchUp>,
        hello: &HelloFrame,
    ) -> Result<(), Disconnect> {
        let limit = self.event_buffer.saturating_mul(BACKLOG_PER_BUFFER);
        let backlog = match gate {
            Gate::Open => return self.on_frame(frame),
            Gate::CatchingUp(held) => &mut held.backlog,
            Gate::AwaitingAck { id, backlog, .. } if answer_id(&frame) != Some(*id) => backlog,
            Gate::AwaitingAck { .. } => return self.on_resume_frame(frame, gate, catch_up, hello),
        };
        if backlog.len() >= limit {
            // Nothing is lost: the next connection resumes from the same positions.
            return Err(Disconnect::local(
                CloseCode::SlowConsumer,
                "too many frames while resuming",
            ));
        }
        backlog.push_back(frame);
        Ok(())
    }

    /// Handles the answer to `resume`: starts the HTTP catch-up, or opens the gate.
    fn on_resume_frame(
        &mut self,
        frame: ServerFrame,
        gate: &mut Gate,
        catch_up: &mut Option<CatchUp>,
        hello: &HelloFrame,
    ) -> Result<(), Disconnect> {
        let Gate::AwaitingAck { sent, backlog, .. } = std::mem::replace(gate, Gate::Open) else {
            return Ok(());
        };
        let (held, replays, jobs) = self.on_resume_answer(frame, hello, &sent, backlog);
        if replays.is_empty() && jobs.is_empty() {
            let nothing = CaughtUp {
                replayed: Vec::new(),
                fetched: Vec::new(),
            };
            return self.open_gate(nothing, held);
        }
        let missed = fetch_caught_up(
            self.http.clone(),
            replays,
            jobs,
            self.event_buffer,
            self.request_timeout,
        );
        *catch_up = Some(Box::pin(missed));
        *gate = Gate::CatchingUp(held);
        Ok(())
    }

    /// Applies the outcome of the resume per scope. Returns the held frames, the scopes
    /// to catch up from the events endpoint and the channels whose message catch-up is
    /// owed (with the last message id seen in each).
    fn on_resume_answer(
        &mut self,
        frame: ServerFrame,
        hello: &HelloFrame,
        sent: &BTreeMap<String, u64>,
        backlog: VecDeque<ServerFrame>,
    ) -> (Held, Vec<Replay>, Vec<MessageJob>) {
        let outcomes = match frame {
            ServerFrame::Ack(ack) => ack.scopes.unwrap_or_default(),
            ServerFrame::Error(error) => {
                // The server continues every scope from `hello`: none was recovered.
                tracing::warn!(code = %error.code, message = %error.message, "resume refused");
                BTreeMap::new()
            }
            _ => BTreeMap::new(),
        };
        let mut offsets = Vec::new();
        let mut replays = Vec::new();
        {
            let positions = &mut lock(&self.shared).positions;
            for (scope, &after) in sent {
                let outcome = outcomes.get(scope);
                if let Some(ScopeResume {
                    error: Some(code), ..
                }) = outcome
                {
                    // Not subscribed any more (e.g. no longer a member).
                    positions.remove(scope);
                    if let Some(channel) = channel_of(scope) {
                        self.owed.remove(&channel);
                    }
                    let data = json!({ "scope": scope, "error": code });
                    self.gaps.push_back((scope.clone(), data));
                    continue;
                }
                if let Some(offset) = outcome.and_then(|o| o.offset) {
                    offsets.push((scope.clone(), offset));
                }
                if outcome.is_some_and(|o| o.recovered) {
                    continue;
                }
                let channel = channel_of(scope);
                let owed = channel.is_some_and(|channel| self.owed.contains_key(&channel));
                if !owed {
                    // The position stays until the events endpoint has answered.
                    replays.push(Replay {
                        scope: scope.clone(),
                        after,
                        restart: hello.offsets.get(scope).copied(),
                        fallback: channel.map(|channel| {
                            let after = self.delivered.get(&channel).and_then(Delivered::after);
                            (channel, after)
                        }),
                    });
                    continue;
                }
                // A message catch-up from an earlier connection is still under way: it
                // continues. What follows is numbered from this connection's position.
                match hello.offsets.get(scope) {
                    Some(&offset) => {
                        positions.insert(scope.clone(), offset);
                    }
                    None => {
                        positions.remove(scope);
                    }
                }
            }
        }
        let jobs = self
            .owed
            .keys()
            .map(|&channel| {
                (
                    channel,
                    self.delivered.get(&channel).and_then(Delivered::after),
                )
            })
            .collect();
        (Held { backlog, offsets }, replays, jobs)
    }

    /// Completes a resume: delivers the caught-up events, the caught-up messages, the gap
    /// notices, then the held frames, in that order. `Err` ends the connection (to
    /// continue on the next).
    fn open_gate(&mut self, caught_up: CaughtUp, held: Held) -> Result<(), Disconnect> {
        let CaughtUp { replayed, fetched } = caught_up;
        let mut again = None;
        for Replayed {
            scope,
            restart,
            events,
            end,
        } in replayed
        {
            for event in events {
                self.on_event(event)?;
            }
            let error = match end {
                ReplayEnd::Complete => continue,
                ReplayEnd::More => {
                    again = Some(Disconnect::local(
                        CloseCode::SlowConsumer,
                        "events catch-up continues once the application reads",
                    ));
                    continue;
                }
                ReplayEnd::Failed(reason) => {
                    again = Some(Disconnect {
                        code: 1011,
                        reason: format!("events catch-up failed: {reason}"),
                    });
                    continue;
                }
                ReplayEnd::Gone => None,
                ReplayEnd::Refused(code) => Some(code),
            };
            // The events are lost: what follows is numbered from this connection's
            // position (after a restart without a durable log, a new numbering).
            {
                let positions = &mut lock(&self.shared).positions;
                match restart {
                    Some(offset) => positions.insert(scope.clone(), offset),
                    None => positions.remove(&scope),
                };
            }
            match (channel_of(&scope), error) {
                // Its messages were fetched with the events: they follow below.
                (Some(channel), None) => {
                    self.owed.entry(channel).or_default();
                }
                (_, None) => self
                    .gaps
                    .push_back((scope.clone(), json!({ "scope": scope }))),
                (_, Some(code)) => {
                    let data = json!({ "scope": scope, "error": code });
                    self.gaps.push_back((scope, data));
                }
            }
        }
        for Fetched {
            channel,
            messages,
            end,
        } in fetched
        {
            let scope = format!("channel:{channel}");
            for message in messages {
                let id = message.get("id").and_then(Value::as_i64);
                let delivered = self.delivered.get(&channel);
                if id.is_some_and(|id| delivered.is_some_and(|d| d.contains(id))) {
                    continue;
                }
                self.emit(EventFrame {
                    scope: scope.clone(),
                    offset: None,
                    kind: "message.created".to_owned(),
                    data: message,
                    wake: None,
                })?;
                *self.owed.entry(channel).or_default() += 1;
                if let Some(id) = id {
                    self.caught_up.insert(id);
                    self.saw_message(channel, id);
                }
            }
            match end {
                FetchEnd::Complete => {
                    let count = self.owed.remove(&channel).unwrap_or_default();
                    let data = json!({ "scope": scope, "caught_up": count });
                    self.gaps.push_back((scope, data));
                }
                FetchEnd::Refused(error) => {
                    let count = self.owed.remove(&channel).unwrap_or_default();
                    let data = json!({ "scope": scope, "caught_up": count, "error": error });
                    self.gaps.push_back((scope, data));
                }
                FetchEnd::More => {
                    again = Some(Disconnect::local(
                        CloseCode::SlowConsumer,
                        "history catch-up continues once the application reads",
                    ));
                }
                FetchEnd::Failed(reason) => {
                    again = Some(Disconnect {
                        code: 1011,
                        reason: format!("history catch-up failed: {reason}"),
                    });
                }
            }
        }
        while let Some((scope, data)) = self.gaps.front().cloned() {
            self.emit(EventFrame {
                scope,
                offset: None,
                kind: RESUME_GAP.to_owned(),
                data,
                wake: None,
            })?;
            self.gaps.pop_front();
        }
        if let Some(cause) = again {
            // The held frames are dropped unread; the next resume replays them.
            return Err(cause);
        }
        let Held {
            mut backlog,
            offsets,
        } = held;
        order_by_offset(&mut backlog);
        for frame in backlog {
            self.on_frame(frame)?;
        }
        {
            let positions = &mut lock(&self.shared).positions;
            for (scope, offset) in offsets {
                if !self.left.contains(&scope) {
                    positions.entry(scope).or_insert(offset);
                }
            }
        }
        self.opened();
        Ok(())
    }

    fn opened(&mut self) {
        self.open_since = Some(Instant::now());
        self.state.send_if_modified(|state| {
            let changed = *state != ConnectionState::Open;
            *state = ConnectionState::Open;
            changed
        });
    }

    /// Handles one server frame for the application; `Err` ends the connection.
    fn on_frame(&mut self, frame: ServerFrame) -> Result<(), Disconnect> {
        match frame {
            ServerFrame::Event(event) => return self.on_event(event),
            ServerFrame::Ack(ack) => self.on_ack(ack),
            ServerFrame::Error(error) => self.on_error(error),
            ServerFrame::Hello(_) => tracing::warn!("a second hello ignored"),
            ServerFrame::Pong { .. } => {}
        }
        Ok(())
    }

    fn on_event(&mut self, event: EventFrame) -> Result<(), Disconnect> {
        if self.left.contains(&event.scope) {
            return Ok(());
        }
        if let Some(offset) = event.offset
            && !self.rewinding.contains_key(&event.scope)
            && lock(&self.shared)
                .positions
                .get(&event.scope)
                .is_some_and(|&position| offset <= position)
        {
            tracing::debug!(scope = %event.scope, offset, "duplicate event dropped");
            return Ok(());
        }
        let message = created_message(&event);
        if let Some((_, id)) = message
            && self.caught_up.contains(id)
        {
            tracing::debug!(scope = %event.scope, id, "caught-up message dropped");
            return Ok(());
        }
        let membership = self.membership(&event);
        let position = event.offset.map(|offset| (event.scope.clone(), offset));
        self.emit(event)?;
        if let Some((scope, offset)) = position {
            advance(&mut lock(&self.shared).positions, scope, offset);
        }
        if let Some((channel, id)) = message {
            self.saw_message(channel, id);
        }
        match membership {
            // The server unsubscribed every connection: nothing to resume there.
            Some(Membership::Left(scope)) => {
                lock(&self.shared).positions.remove(&scope);
            }
            // The server subscribed every connection again.
            Some(Membership::Joined(scope)) => {
                self.left.remove(&scope);
            }
            None => {}
        }
        Ok(())
    }

    /// Hands an event to the application.
    fn emit(&self, event: EventFrame) -> Result<(), Disconnect> {
        match self.events.try_send(event) {
            // Closed: the caller dropped the `Realtime`; the request channel is closing too.
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Disconnect::local(
                CloseCode::SlowConsumer,
                "client event buffer full",
            )),
        }
    }

    fn saw_message(&mut self, channel: i64, id: i64) {
        self.delivered.entry(channel).or_default().push(id);
    }

    fn membership(&self, event: &EventFrame) -> Option<Membership> {
        // The server ended this subscription (the user may no longer read it): an
        // ephemeral event on the scope it ends. Only the server sends this type (it
        // refuses it in a `publish`); a logged one is not the server's.
        if event.kind == "subscription.revoked" {
            return event
                .offset
                .is_none()
                .then(|| Membership::Left(event.scope.clone()));
        }
        let user = event.scope.strip_prefix("user:")?.parse::<i64>().ok()?;
        if user != self.user_id {
            return None;
        }
        let data = &event.data;
        let id = |value: Option<&Value>| value.and_then(Value::as_i64);
        match event.kind.as_str() {
            "channel.left" => {
                if id(data.get("user_id")).is_some_and(|u| u != self.user_id) {
                    return None;
                }
                let channel = id(data.get("channel_id"))?;
                Some(Membership::Left(format!("channel:{channel}")))
            }
            "channel.joined" => {
                let channel = id(data.get("channel").and_then(|c| c.get("id")))?;
                Some(Membership::Joined(format!("channel:{channel}")))
            }
            "workspace.joined" => {
                let workspace = id(data.get("workspace").and_then(|w| w.get("id")))?;
                Some(Membership::Joined(format!("workspace:{workspace}")))
            }
            "workspace.left" => {
                let workspace = id(data.get("workspace_id"))?;
                Some(Membership::Left(format!("workspace:{workspace}")))
            }
            _ => None,
        }
    }

    fn on_ack(&mut self, ack: AckFrame) {
        let Some(pending) = self.take_pending(&ack.id) else {
            return;
        };
        {
            let positions = &mut lock(&self.shared).positions;
            match &pending.op {
                // The ack's offset is the head at subscription time: every later event
                // will be delivered, so it is a safe resume point for a new scope.
                ClientOp::Subscribe { .. } => {
                    if let (Some(scope), Some(offset)) = (&ack.scope, ack.offset) {
                        positions.entry(scope.clone()).or_insert(offset);
                    }
                }
                ClientOp::Unsubscribe { scope } => {
                    positions.remove(scope);
                    self.left.insert(scope.clone());
                }
                ClientOp::Resume { .. } => {
                    for (scope, outcome) in ack.scopes.iter().flatten() {
                        match (outcome.error, outcome.offset) {
                            (Some(_), _) => {
                                positions.remove(scope);
                            }
                            (None, Some(offset)) => {
                                positions.entry(scope.clone()).or_insert(offset);
                            }
                            (None, None) => {}
                        }
                    }
                }
                ClientOp::Typing { .. }
                | ClientOp::Ping
                | ClientOp::Refresh { .. }
                | ClientOp::Append { .. }
                | ClientOp::Complete { .. }
                | ClientOp::Abort { .. }
                | ClientOp::Publish { .. } => {}
            }
        }
        match pending.origin {
            Origin::Caller(reply) => {
                self.forget(&pending.op);
                let _ = reply.send(Ok(ack));
            }
            Origin::Refresh(token) => {
                let old = jwt_expiry(&self.token);
                self.adopt(token);
                // A token that does not outlive the old one would be refreshed at once, forever.
                if jwt_expiry(&self.token) > old {
                    self.arm_refresh();
                }
            }
            Origin::Internal => {}
        }
    }

    fn on_error(&mut self, error: ErrorFrame) {
        let pending = error.id.as_ref().and_then(|id| self.take_pending(id));
        match pending {
            Some(Pending {
                op,
                origin: Origin::Caller(reply),
            }) => {
                self.forget(&op);
                let _ = reply.send(Err(Error::Ws {
                    code: error.code,
                    message: error.message,
                }));
            }
            Some(Pending {
                origin: Origin::Internal,
                ..
            }) => {
                tracing::debug!(code = %error.code, message = %error.message, "internal request refused");
            }
            Some(Pending {
                origin: Origin::Refresh(_),
                ..
            }) => {
                tracing::warn!(code = %error.code, message = %error.message, "refresh refused");
                self.retry_refresh(jwt_expiry(&self.token));
            }
            // E.g. `rate_limited` for a frame the server could not attribute.
            None => tracing::warn!(code = %error.code, message = %error.message, "server error"),
        }
    }

    fn take_pending(&mut self, id: &FrameId) -> Option<Pending> {
        match id {
            FrameId::Int(id) => self.pending.remove(id),
            FrameId::Str(_) => None,
        }
    }

    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Books a request of the caller as it arrives.
    fn accept(&mut self, op: &ClientOp) {
        for scope in rewound(op) {
            *self.rewinding.entry(scope.clone()).or_default() += 1;
        }
        if let ClientOp::Subscribe { scope, .. } = op {
            self.left.remove(scope);
        }
    }

    /// Unbooks a request of the caller: answered, or given up.
    fn forget(&mut self, op: &ClientOp) {
        for scope in rewound(op) {
            if let Some(count) = self.rewinding.get_mut(scope) {
                *count -= 1;
                if *count == 0 {
                    self.rewinding.remove(scope);
                }
            }
        }
    }

    async fn send_request(&mut self, ws: &mut Socket, request: Request) -> Result<(), Disconnect> {
        if self.pending.len() >= PRUNE_PENDING_AT {
            let gave_up: Vec<i64> = self
                .pending
                .iter()
                .filter(|(_, p)| matches!(&p.origin, Origin::Caller(reply) if reply.is_closed()))
                .map(|(&id, _)| id)
                .collect();
            for id in gave_up {
                if let Some(pending) = self.pending.remove(&id) {
                    self.forget(&pending.op);
                }
            }
        }
        self.send_frame(ws, request.op, Origin::Caller(request.reply))
            .await
    }

    /// Sends a frame with a fresh id. It is pending first, so a failed send is sent
    /// again on the next connection.
    async fn send_frame(
        &mut self,
        ws: &mut Socket,
        op: ClientOp,
        origin: Origin,
    ) -> Result<(), Disconnect> {
        let id = self.take_id();
        let frame = ClientFrame {
            id: Some(FrameId::Int(id)),
            op,
        };
        let text = frame.to_json();
        self.pending.insert(
            id,
            Pending {
                op: frame.op,
                origin,
            },
        );
        ws.send(Message::text(text))
            .await
            .map_err(|e| Disconnect::abnormal(e.to_string()))
    }

    /// Drops the queued requests whose caller gave up (timed out).
    fn prune_queued(&mut self) {
        let mut gave_up = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queued.len());
        for request in self.queued.drain(..) {
            if request.reply.is_closed() {
                gave_up.push(request.op);
            } else {
                kept.push_back(request);
            }
        }
        self.queued = kept;
        for op in gave_up {
            self.forget(&op);
        }
    }

    /// After a lost connection: the caller's unanswered requests go back to the front of
    /// the queue, in their order, to be sent again on the next connection.
    fn requeue_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let mut again = Vec::new();
        for (_, Pending { op, origin }) in pending {
            match origin {
                Origin::Caller(reply) if !reply.is_closed() => again.push(Request { op, reply }),
                Origin::Caller(_) => self.forget(&op),
                Origin::Internal | Origin::Refresh(_) => {}
            }
        }
        for request in again.into_iter().rev() {
            self.queued.push_front(request);
        }
    }
}

/// Catches up every scope from the events endpoint, then, per channel, the messages:
/// those owed from an earlier connection and those of the channels whose events are gone.
async fn fetch_caught_up(
    http: Client,
    replays: Vec<Replay>,
    mut jobs: Vec<MessageJob>,
    cap: usize,
    timeout: Duration,
) -> CaughtUp {
    let mut replayed = Vec::with_capacity(replays.len());
    for replay in replays {
        let (events, end) = fetch_events(&http, &replay.scope, replay.after, cap, timeout).await;
        if let (ReplayEnd::Gone, Some(job)) = (&end, replay.fallback) {
            jobs.push(job);
        }
        replayed.push(Replayed {
            scope: replay.scope,
            restart: replay.restart,
            events,
            end,
        });
    }
    let fetched = fetch_missed(http, jobs, cap, timeout).await;
    CaughtUp { replayed, fetched }
}

/// Pages through a scope's events after `after`, at most `cap` of them, each page within
/// `timeout`.
async fn fetch_events(
    http: &Client,
    scope: &str,
    mut after: u64,
    cap: usize,
    timeout: Duration,
) -> (Vec<EventFrame>, ReplayEnd) {
    let mut events = Vec::new();
    let end = loop {
        let left = u32::try_from(cap.saturating_sub(events.len())).unwrap_or(u32::MAX);
        let fetch = http.scope_events(scope, after, Some(left.clamp(1, REPLAY_PAGE)));
        let page = match tokio::time::timeout(timeout, fetch).await {
            Ok(Ok(page)) => page,
            Ok(Err(err)) => break classify_replay(&err),
            Err(_) => break ReplayEnd::Failed(format!("no answer within {timeout:?}")),
        };
        events.extend(page.events.into_iter().map(EventFrame::from));
        // A page that does not move forward ends it, whatever `more` says.
        if !page.more || page.next <= after {
            break ReplayEnd::Complete;
        }
        after = page.next;
        if events.len() >= cap {
            break ReplayEnd::More;
        }
    };
    (events, end)
}

/// 410 and 404 send the scope to the fallback; other refusals are final for it; anything
/// else (an expired token included) is tried again on the next connection.
fn classify_replay(err: &Error) -> ReplayEnd {
    let status = match err {
        Error::Api { status, .. } | Error::UnexpectedResponse { status, .. } => *status,
        other => return ReplayEnd::Failed(other.to_string()),
    };
    match status {
        StatusCode::GONE | StatusCode::NOT_FOUND => ReplayEnd::Gone,
        StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
            ReplayEnd::Failed(err.to_string())
        }
        status if status.is_client_error() => {
            let code = err
                .code()
                .map_or_else(|| status.as_u16().to_string(), |c| c.to_string());
            ReplayEnd::Refused(code)
        }
        _ => ReplayEnd::Failed(err.to_string()),
    }
}

/// Fetches, per channel, the top-level messages after the last one seen, oldest first,
/// at most `cap` per channel, each page within `timeout`. A channel never seen with a
/// message fetches nothing.
async fn fetch_missed(
    http: Client,
    jobs: Vec<MessageJob>,
    cap: usize,
    timeout: Duration,
) -> Vec<Fetched> {
    let mut out = Vec::with_capacity(jobs.len());
    for (channel, after) in jobs {
        let mut messages = Vec::new();
        let end = match after {
            None => FetchEnd::Complete,
            Some(mut after) => loop {
                let query = HistoryQuery {
                    after: Some(MessageId(after)),
                    limit: Some(CATCH_UP_PAGE),
                    ..HistoryQuery::default()
                };
                let fetch = http.list_messages_json(ChannelId(channel), &query);
                let page = match tokio::time::timeout(timeout, fetch).await {
                    Ok(Ok(page)) => page,
                    Ok(Err(err)) => break classify(&err),
                    Err(_) => break FetchEnd::Failed(format!("no answer within {timeout:?}")),
                };
                let full = page.len() >= CATCH_UP_PAGE as usize;
                let last = page
                    .last()
                    .and_then(|m| m.get("id"))
                    .and_then(Value::as_i64);
                messages.extend(page);
                match last {
                    Some(last) if full && last > after => after = last,
                    _ => break FetchEnd::Complete,
                }
                if messages.len() >= cap {
                    break FetchEnd::More;
                }
            },
        };
        out.push(Fetched {
            channel,
            messages,
            end,
        });
    }
    out
}

/// A refusal is final for the channel; anything else is tried again.
fn classify(err: &Error) -> FetchEnd {
    match err {
        Error::Api { status, code, .. }
            if status.is_client_error()
                && *status != StatusCode::TOO_MANY_REQUESTS
                && *status != StatusCode::REQUEST_TIMEOUT =>
        {
            FetchEnd::Refused(code.to_string())
        }
        other => FetchEnd::Failed(other.to_string()),
    }
}

/// Orders each scope's events in the backlog by offset, within the slots they hold.
/// After a `?resume=1` connect they already are; a server that does not hold the
/// initial subscriptions sends the replay after newer live events, which the position
/// would otherwise drop as duplicates.
fn order_by_offset(backlog: &mut VecDeque<ServerFrame>) {
    let mut slots: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut unordered = false;
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (i, frame) in backlog.iter().enumerate() {
        if let ServerFrame::Event(EventFrame {
            scope,
            offset: Some(offset),
            ..
        }) = frame
        {
            slots.entry(scope).or_default().push(i);
            let previous = last.insert(scope, *offset);
            unordered |= previous.is_some_and(|p| p > *offset);
        }
    }
    if !unordered {
        return;
    }
    let slots: Vec<Vec<usize>> = slots.into_values().collect();
    for indices in slots {
        let mut events: Vec<ServerFrame> = indices
            .iter()
            .map(|&i| std::mem::replace(&mut backlog[i], ServerFrame::Pong { id: None }))
            .collect();
        events.sort_by_key(|frame| match frame {
            ServerFrame::Event(event) => event.offset,
            _ => None,
        });
        for (&i, frame) in indices.iter().zip(events) {
            backlog[i] = frame;
        }
    }
}

/// The scopes whose events a request replays on purpose.
fn rewound(op: &ClientOp) -> Vec<&String> {
    match op {
        ClientOp::Subscribe {
            scope,
            since: Some(_),
        } => vec![scope],
        ClientOp::Resume { positions } => positions.keys().collect(),
        _ => Vec::new(),
    }
}

/// The id an `ack` or `error` answers.
fn answer_id(frame: &ServerFrame) -> Option<i64> {
    let id = match frame {
        ServerFrame::Ack(ack) => Some(&ack.id),
        ServerFrame::Error(error) => error.id.as_ref(),
        _ => None,
    };
    match id {
        Some(FrameId::Int(id)) => Some(*id),
        _ => None,
    }
}

fn channel_of(scope: &str) -> Option<i64> {
    scope.strip_prefix("channel:")?.parse().ok()
}

/// `(channel, message id)` of a `message.created` event on a channel scope.
fn created_message(event: &EventFrame) -> Option<(i64, i64)> {
    if event.kind != "message.created" {
        return None;
    }
    let channel = channel_of(&event.scope)?;
    let id = event.data.get("id")?.as_i64()?;
    Some((channel, id))
}

async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends a close frame and waits briefly for the server's answer.
async fn close(ws: &mut Socket, end: Disconnect) -> Disconnect {
    let frame = CloseFrame {
        code: end.code.into(),
        reason: end.reason.clone().into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    end
}

/// Offsets only move forward: a replayed or raced event never moves a position back.
fn advance(positions: &mut BTreeMap<String, u64>, scope: String, offset: u64) {
    let entry = positions.entry(scope).or_insert(offset);
    *entry = (*entry).max(offset);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls() {
        let url = |s: &str| ws_url(s).map(|u| u.to_string()).ok();
        assert_eq!(
            url("http://127.0.0.1:7800").as_deref(),
            Some("ws://127.0.0.1:7800/ws")
        );
        assert_eq!(
            url("https://h/chorus/").as_deref(),
            Some("wss://h/chorus/ws")
        );
        assert_eq!(url("ws://h:1/ws?x=1").as_deref(), Some("ws://h:1/ws?x=1"));
        assert_eq!(url("ftp://h"), None);
    }

    #[test]
    fn http_bases() {
        let base = |s: &str| http_base(s).map(|u| u.to_string()).ok();
        assert_eq!(base("http://h:1").as_deref(), Some("http://h:1/"));
        assert_eq!(base("ws://h:1/ws?token=x").as_deref(), Some("http://h:1/"));
        assert_eq!(
            base("wss://h/chorus/ws/").as_deref(),
            Some("https://h/chorus/")
        );
        assert_eq!(base("ftp://h"), None);
    }

    #[test]
    fn positions_only_move_forward() {
        let mut positions = BTreeMap::new();
        advance(&mut positions, "channel:1".into(), 10);
        advance(&mut positions, "channel:1".into(), 7);
        assert_eq!(positions.get("channel:1"), Some(&10));
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let backoff = Backoff::default();
        assert_eq!(backoff.ceiling(0), Duration::from_millis(250));
        assert_eq!(backoff.ceiling(3), Duration::from_secs(2));
        assert_eq!(backoff.ceiling(40), Duration::from_secs(30));
        for attempt in [0, 5, 100] {
            assert!(backoff.delay(attempt) <= backoff.ceiling(attempt));
        }
    }

    #[test]
    fn the_backlog_is_ordered_per_scope() {
        let event = |scope: &str, offset: u64| {
            ServerFrame::Event(EventFrame {
                scope: scope.into(),
                offset: Some(offset),
                kind: "x".into(),
                data: Value::Null,
                wake: None,
            })
        };
        let mut backlog = VecDeque::from([
            event("a:1", 9),
            event("b:1", 5),
            ServerFrame::Pong { id: None },
            event("a:1", 7),
            event("a:1", 8),
            event("b:1", 6),
        ]);
        order_by_offset(&mut backlog);
        let order: Vec<_> = backlog
            .iter()
            .map(|f| match f {
                ServerFrame::Event(e) => (e.scope.as_str(), e.offset),
                _ => ("pong", None),
            })
            .collect();
        assert_eq!(
            order,
            [
                ("a:1", Some(7)),
                ("b:1", Some(5)),
                ("pong", None),
                ("a:1", Some(8)),
                ("a:1", Some(9)),
                ("b:1", Some(6)),
            ]
        );
    }

    #[test]
    fn a_catch_up_starts_before_the_last_ids_delivered() {
        let mut delivered = Delivered::default();
        assert_eq!(delivered.after(), None);
        // Concurrent sends: 12 was published before 11.
        for id in [10, 12, 11] {
            delivered.push(id);
        }
        assert_eq!(delivered.after(), Some(10));
        for id in 100..(100 + DELIVERED_PER_CHANNEL as i64) {
            delivered.push(id);
        }
        assert_eq!(delivered.after(), Some(100));
        assert!(!delivered.contains(12));
    }

    /// A stand-in for the events endpoint: every scope has the events `1..=head`, served
    /// at most 7 per page, or every request is answered `refuse`. Records each request's
    /// `(scope, after, limit)`.
    async fn events_server(
        head: u64,
        refuse: Option<(StatusCode, &'static str)>,
    ) -> (Client, Arc<Mutex<Vec<(String, u64, u64)>>>) {
        use axum::extract::{Path, Query};
        use axum::response::IntoResponse;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler = move |Path(scope): Path<String>,
                            Query(query): Query<HashMap<String, u64>>| {
            let log = log.clone();
            async move {
                let after = query.get("after").copied().unwrap_or_default();
                let limit = query.get("limit").copied().unwrap_or(200);
                log.lock().expect("log").push((scope.clone(), after, limit));
                if let Some((status, body)) = refuse {
                    return (status, body.to_owned()).into_response();
                }
                let last = head.min(after + limit.min(7));
                let events: Vec<Value> = (after + 1..=last)
                    .map(|offset| json!({"scope": scope, "offset": offset, "type": "x", "data": {"n": offset}}))
                    .collect();
                let page = json!({"scope": scope, "events": events, "head": head, "next": last.max(after), "more": last < head});
                axum::Json(page).into_response()
            }
        };
        let app =
            axum::Router::new().route("/api/v1/scopes/{scope}/events", axum::routing::get(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Client::new(&url, "t").expect("client"), seen)
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_scope_is_caught_up_page_by_page_to_its_head() {
        let (http, seen) = events_server(25, None).await;
        let (events, end) = fetch_events(&http, "channel:1", 10, 100, WAIT).await;
        assert!(matches!(end, ReplayEnd::Complete));
        let offsets: Vec<_> = events.iter().filter_map(|e| e.offset).collect();
        assert_eq!(offsets, (11..=25).collect::<Vec<_>>());
        assert!(
            events
                .iter()
                .all(|e| e.scope == "channel:1" && e.kind == "x")
        );
        let afters: Vec<_> = seen.lock().expect("log").iter().map(|r| r.1).collect();
        assert_eq!(afters, [10, 17, 24]);
    }

    #[tokio::test]
    async fn a_catch_up_stops_at_the_event_buffer_and_continues_later() {
        let (http, seen) = events_server(25, None).await;
        let (events, end) = fetch_events(&http, "topic:a b", 0, 10, WAIT).await;
        assert!(matches!(end, ReplayEnd::More));
        assert_eq!(events.len(), 10);
        let requests = seen.lock().expect("log").clone();
        // The scope arrives whole (one path segment); no page asks for more than fits.
        assert_eq!(
            requests,
            [
                ("topic:a b".to_owned(), 0, 10),
                ("topic:a b".to_owned(), 7, 3)
            ]
        );
    }

    #[tokio::test]
    async fn gone_or_missing_events_fall_back_and_refusals_are_kept_apart() {
        let gone = r#"{"error":{"code":"gone","message":"past the retention window"}}"#;
        let forbidden = r#"{"error":{"code":"forbidden","message":"no"}}"#;
        let not_found = r#"{"error":{"code":"not_found","message":"no such channel"}}"#;
        let cases = [
            (StatusCode::GONE, gone),
            (StatusCode::NOT_FOUND, not_found),
            (StatusCode::FORBIDDEN, forbidden),
            (StatusCode::UNAUTHORIZED, ""),
            (StatusCode::INTERNAL_SERVER_ERROR, ""),
        ];
        let mut ends = Vec::new();
        for (status, body) in cases {
            let (http, _) = events_server(25, Some((status, body))).await;
            let (events, end) = fetch_events(&http, "user:1", 3, 100, WAIT).await;
            assert!(events.is_empty());
            ends.push(match end {
                ReplayEnd::Gone => "gone".to_owned(),
                ReplayEnd::Refused(code) => format!("refused {code}"),
                ReplayEnd::Failed(_) => "failed".to_owned(),
                ReplayEnd::Complete | ReplayEnd::More => "done".to_owned(),
            });
        }
        assert_eq!(
            ends,
            ["gone", "gone", "refused forbidden", "failed", "failed"]
        );
        // A server without the route at all falls back too.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
        let http = Client::new(&url, "t").expect("client");
        let (_, end) = fetch_events(&http, "user:1", 3, 100, WAIT).await;
        assert!(matches!(end, ReplayEnd::Gone));
    }

    #[test]
    fn caught_up_ids_are_bounded() {
        let mut ids = RecentIds::default();
        for id in 0..(CAUGHT_UP_IDS as i64 + 10) {
            ids.insert(id);
        }
        assert!(!ids.contains(0));
        assert!(ids.contains(CAUGHT_UP_IDS as i64 + 9));
        assert_eq!(ids.set.len(), CAUGHT_UP_IDS);
    }
}
