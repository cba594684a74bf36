//! [`Realtime`]: one WebSocket connection owned by a background task. The task writes
//! requests, matches `ack`/`error` frames to them by id, forwards `event` frames in order
//! and tracks the last offset per scope. It owns all socket state, so reconnecting with
//! `resume` can later be added inside it without changing the caller's side.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chorus_proto::{
    AckFrame, ClientFrame, ClientOp, CloseCode, ErrorFrame, EventFrame, FrameId, HelloFrame,
    ScopeResume, ServerFrame,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::{Error, Result};
use crate::http::base_url_with_slash;
use crate::model::{ChannelId, MessageId};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Requests queued for the socket task; when full, callers wait (they are few and small).
const REQUEST_QUEUE: usize = 64;
/// Pending requests above which answers nobody waits for any more (timed out) are pruned.
const PRUNE_PENDING_AT: usize = 256;
/// How long a local close waits for the server's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Tuning of a [`Realtime`] connection.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events buffered for the caller. A caller that falls this far behind is treated like
    /// a slow consumer: the connection closes with 3008 and [`Realtime::positions`] holds
    /// only what was buffered, so a resume loses nothing. (Blocking the socket instead
    /// could deadlock a caller that awaits an ack while not reading events.)
    pub event_buffer: usize,
    /// How long `connect` waits for `hello` and a request for its answer.
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            event_buffer: 4096,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// How a connection ended: the close code and reason the server sent, or a local one.
/// Codes follow the protocol: 1000 normal (also when this side closed), 1006 dropped
/// without a close frame, 3002 the server went silent, 3008 this side's event buffer
/// overflowed, and whatever the server sent (see [`CloseCode`]).
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

/// A live connection to `GET /ws`.
///
/// Requests (`subscribe`, `resume`, …) take `&self` and may run concurrently; events are
/// read with [`next_event`](Self::next_event). When the connection ends, `next_event`
/// returns the buffered events and then `None`, and [`disconnect`](Self::disconnect)
/// says why.
pub struct Realtime {
    hello: HelloFrame,
    requests: mpsc::Sender<Request>,
    events: mpsc::Receiver<EventFrame>,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
    request_timeout: Duration,
}

/// State the task writes and the caller reads. A std mutex: each critical section is a
/// map update or a clone, never held across an await.
#[derive(Default)]
struct Shared {
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
    /// `ws://…` URL. Returns after the server's `hello`; a refused upgrade (bad token,
    /// shutting down) is an [`Error::Api`].
    pub async fn connect(url: &str, token: &str) -> Result<Self> {
        Self::connect_with(url, token, Options::default()).await
    }

    /// Connects with the given [`Options`].
    pub async fn connect_with(url: &str, token: &str, options: Options) -> Result<Self> {
        let mut request = ws_url(url)?.as_str().into_client_request()?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::Protocol("the token is not a valid header value".into()))?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        let mut ws = match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => ws,
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                return Err(Error::from_response(response.status(), body));
            }
            Err(err) => return Err(err.into()),
        };
        let hello = tokio::time::timeout(options.request_timeout, read_hello(&mut ws))
            .await
            .map_err(|_| Error::Timeout(options.request_timeout))??;

        let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE);
        let (events_tx, events) = mpsc::channel(options.event_buffer.max(1));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let driver = Driver {
            ws,
            requests: requests_rx,
            events: events_tx,
            shared: shared.clone(),
            pending: HashMap::new(),
            next_id: 1,
            // The server pings every `heartbeat_ms`; two silent periods mean it is gone.
            silence: Duration::from_millis(hello.heartbeat_ms.max(1_000)) * 2,
        };
        Ok(Self {
            hello,
            requests,
            events,
            shared,
            task: tokio::spawn(driver.run()),
            request_timeout: options.request_timeout,
        })
    }

    /// The server's `hello`: user, session, heartbeat and the auto-subscribed scopes.
    pub fn hello(&self) -> &HelloFrame {
        &self.hello
    }

    /// Subscribes to `scope`; with `since`, the server first replays the retained events
    /// after that offset (the ack's `recovered` says whether all were still there).
    pub async fn subscribe(&self, scope: &str, since: Option<u64>) -> Result<AckFrame> {
        let scope = scope.to_owned();
        self.request(ClientOp::Subscribe { scope, since }).await
    }

    /// Stops delivery of `scope` to this connection and forgets its position.
    pub async fn unsubscribe(&self, scope: &str) -> Result<()> {
        let scope = scope.to_owned();
        self.request(ClientOp::Unsubscribe { scope })
            .await
            .map(drop)
    }

    /// Re-subscribes each scope after its offset; the outcome per scope.
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

    /// A protocol-level ping; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        self.request(ClientOp::Ping).await?;
        Ok(start.elapsed())
    }

    /// The next event, in the order the server sent them; `None` once the connection
    /// has ended and every buffered event was returned.
    pub async fn next_event(&mut self) -> Option<EventFrame> {
        self.events.recv().await
    }

    /// The last offset seen per scope (from events, and from subscribe/resume acks):
    /// what a reconnect passes to [`resume`](Self::resume).
    pub fn positions(&self) -> BTreeMap<String, u64> {
        lock(&self.shared).positions.clone()
    }

    /// Why the connection ended, once it has.
    pub fn disconnect(&self) -> Option<Disconnect> {
        lock(&self.shared).disconnect.clone()
    }

    /// Closes the connection (code 1000) and returns how it ended (the server may have
    /// closed it first).
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

    async fn request(&self, op: ClientOp) -> Result<AckFrame> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request { op, reply }).await.is_err() {
            return Err(self.closed());
        }
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.closed()),
            Err(_) => Err(Error::Timeout(self.request_timeout)),
        }
    }

    fn closed(&self) -> Error {
        Error::Closed(
            self.disconnect()
                .unwrap_or_else(|| Disconnect::abnormal("connection task failed")),
        )
    }
}

/// `ws://` and `wss://` URLs are used as given; `http(s)://base` becomes `ws(s)://base/ws`.
fn ws_url(input: &str) -> Result<Url> {
    let url = Url::parse(input).map_err(|e| Error::Url(format!("{input}: {e}")))?;
    let scheme = match url.scheme() {
        "ws" | "wss" => return Ok(url),
        "http" => "ws",
        "https" => "wss",
        other => return Err(Error::Url(format!("{input}: unsupported scheme {other:?}"))),
    };
    let mut url = base_url_with_slash(input)?
        .join("ws")
        .map_err(|e| Error::Url(format!("{input}: {e}")))?;
    url.set_scheme(scheme)
        .map_err(|()| Error::Url(format!("{input}: cannot use {scheme}")))?;
    Ok(url)
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

/// What an answer changes in the positions, besides resolving the request.
enum Track {
    Subscribe,
    Unsubscribe(String),
    Resume,
    Nothing,
}

struct Pending {
    track: Track,
    reply: oneshot::Sender<Result<AckFrame>>,
}

/// The socket task.
struct Driver {
    ws: Socket,
    requests: mpsc::Receiver<Request>,
    events: mpsc::Sender<EventFrame>,
    shared: Arc<Mutex<Shared>>,
    pending: HashMap<i64, Pending>,
    next_id: i64,
    silence: Duration,
}

impl Driver {
    async fn run(mut self) {
        let mut deadline = Instant::now() + self.silence;
        let mut server_close = None;
        let end = loop {
            tokio::select! {
                request = self.requests.recv() => match request {
                    Some(request) => {
                        if let Err(end) = self.send(request).await {
                            break end;
                        }
                    }
                    // The caller closed or dropped the `Realtime`.
                    None => break self.close(Disconnect::local(CloseCode::Normal, "bye")).await,
                },
                message = self.ws.next() => {
                    deadline = Instant::now() + self.silence;
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            if let Err(end) = self.on_text(text.as_str()) {
                                break self.close(end).await;
                            }
                        }
                        // tungstenite answers it; keep reading until the server drops TCP.
                        Some(Ok(Message::Close(frame))) => server_close = Some(from_close_frame(frame)),
                        // Pings are answered by tungstenite on the next read.
                        Some(Ok(_)) => {}
                        Some(Err(err)) => {
                            break server_close.take().unwrap_or_else(|| Disconnect::abnormal(err.to_string()));
                        }
                        None => {
                            break server_close.take().unwrap_or_else(|| Disconnect::abnormal("connection dropped"));
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let end = Disconnect::local(CloseCode::HeartbeatTimeout, "server silent");
                    break self.close(end).await;
                }
            }
        };
        tracing::debug!(code = end.code, reason = %end.reason, "realtime connection ended");
        // Record why before failing the waiting requests, which then read it.
        lock(&self.shared).disconnect = Some(end);
        self.pending.clear();
    }

    async fn send(&mut self, request: Request) -> Result<(), Disconnect> {
        let id = self.next_id;
        self.next_id += 1;
        let track = match &request.op {
            ClientOp::Subscribe { .. } => Track::Subscribe,
            ClientOp::Unsubscribe { scope } => Track::Unsubscribe(scope.clone()),
            ClientOp::Resume { .. } => Track::Resume,
            ClientOp::Typing { .. } | ClientOp::Ping => Track::Nothing,
        };
        let frame = ClientFrame {
            id: Some(FrameId::Int(id)),
            op: request.op,
        };
        if let Err(err) = self.ws.send(Message::text(frame.to_json())).await {
            return Err(Disconnect::abnormal(err.to_string()));
        }
        if self.pending.len() >= PRUNE_PENDING_AT {
            self.pending.retain(|_, p| !p.reply.is_closed());
        }
        let reply = request.reply;
        self.pending.insert(id, Pending { track, reply });
        Ok(())
    }

    /// Handles one server frame; `Err` ends the connection.
    fn on_text(&mut self, text: &str) -> Result<(), Disconnect> {
        // Unknown frames are skipped, not fatal, so newer servers stay usable.
        let frame = match serde_json::from_str::<ServerFrame>(text) {
            Ok(frame) => frame,
            Err(err) => {
                tracing::warn!(cause = %err, "unreadable server frame ignored");
                return Ok(());
            }
        };
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
        let position = event.offset.map(|offset| (event.scope.clone(), offset));
        match self.events.try_send(event) {
            Ok(()) => {
                if let Some((scope, offset)) = position {
                    advance(&mut lock(&self.shared).positions, scope, offset);
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Disconnect::local(
                CloseCode::SlowConsumer,
                "client event buffer full",
            )),
            // The caller dropped the `Realtime`; the request channel is closing too.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    fn on_ack(&mut self, ack: AckFrame) {
        let Some(pending) = self.take_pending(&ack.id) else {
            return;
        };
        {
            let positions = &mut lock(&self.shared).positions;
            match pending.track {
                // The ack's offset is the head at subscription time: every later event
                // will be delivered, so it is a safe resume point.
                Track::Subscribe => {
                    if let (Some(scope), Some(offset)) = (&ack.scope, ack.offset) {
                        advance(positions, scope.clone(), offset);
                    }
                }
                Track::Unsubscribe(scope) => {
                    positions.remove(&scope);
                }
                Track::Resume => {
                    for (scope, outcome) in ack.scopes.iter().flatten() {
                        match (outcome.error, outcome.offset) {
                            (Some(_), _) => {
                                positions.remove(scope);
                            }
                            (None, Some(offset)) => advance(positions, scope.clone(), offset),
                            (None, None) => {}
                        }
                    }
                }
                Track::Nothing => {}
            }
        }
        let _ = pending.reply.send(Ok(ack));
    }

    fn on_error(&mut self, error: ErrorFrame) {
        let pending = error.id.as_ref().and_then(|id| self.take_pending(id));
        match pending {
            Some(pending) => {
                let _ = pending.reply.send(Err(Error::Ws {
                    code: error.code,
                    message: error.message,
                }));
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

    /// Sends a close frame and waits briefly for the server's answer.
    async fn close(&mut self, end: Disconnect) -> Disconnect {
        let frame = CloseFrame {
            code: end.code.into(),
            reason: end.reason.clone().into(),
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if self.ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
        end
    }
}

/// Offsets only move forward: a replayed or raced ack never moves a position back.
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
    fn positions_only_move_forward() {
        let mut positions = BTreeMap::new();
        advance(&mut positions, "channel:1".into(), 10);
        advance(&mut positions, "channel:1".into(), 7);
        assert_eq!(positions.get("channel:1"), Some(&10));
    }
}
