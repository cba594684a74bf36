//! One WebSocket connection, from `hello` to close, in a single task: it reads and
//! answers client ops, pings, and watches for a dead peer, a kill (slow consumer),
//! shutdown, or subscription work (a re-check after the user's access changed). What a
//! subscription op does is the orchestrator's ([`crate::subscriptions`]). Its queued frames are written by the writer tasks ([`crate::writer`]); the
//! connection's task takes over only when its socket would block, and then watches the
//! write for a stuck peer. One task per connection keeps idle memory small.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chorus_proto::{
    AckFrame, ClientOp, CloseCode, ErrorCode, ErrorFrame, FrameId, HelloFrame, PROTOCOL_VERSION,
    ServerFrame, decode_client_frame,
};
use futures_util::{SinkExt, StreamExt};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::hooks::{HookError, SessionAuth, SessionHooks};
use crate::outbox::Outbox;
use crate::registry::ConnHandle;
use crate::registry::StartAt;
use crate::socket::{Reader, Socket};
use crate::subscriptions::Held;
use crate::{Clock, Engine, Metrics, UserKey};

/// How long a connection opened with `?resume=1` holds its events for the `resume`
/// frame before it goes live from the offsets announced in `hello`.
const HOLD_FOR_RESUME: Duration = Duration::from_secs(10);

/// A connection's inbound rate limiter, on the engine's clock.
type Limiter = RateLimiter<NotKeyed, InMemoryState, Clock, NoOpMiddleware<std::time::Instant>>;

struct Session {
    engine: Arc<Engine>,
    hooks: Arc<dyn SessionHooks>,
    conn: ConnHandle,
    limiter: Limiter,
    strikes: u32,
    /// Scopes subscribed on connect whose events are held until the client's first
    /// frame (a `resume` says where each one continues), with their offset in `hello`.
    held: Option<Held>,
    /// When the connection's credentials stop being valid (closed with 3502 then).
    expires: Option<Instant>,
}

/// The monotonic instant of a wall-clock expiry, both read from `clock`.
fn deadline(clock: &Clock, expires_at: Option<std::time::SystemTime>) -> Option<Instant> {
    let left = expires_at?
        .duration_since(clock.system_time())
        .unwrap_or_default();
    Some(clock.instant() + left)
}

/// Why the loop ended: a code to send, the peer closed (its close reply is queued), or
/// the peer is already gone.
enum End {
    Close(CloseCode),
    PeerClosed,
    PeerGone,
}

pub(crate) async fn run(
    engine: Arc<Engine>,
    socket: Socket,
    user: UserKey,
    hooks: Arc<dyn SessionHooks>,
    hold_for_resume: bool,
    auth: SessionAuth,
) {
    let (conn, outbox, conns) = engine.registry.register(user);
    engine.registry.set_credential(conn.id, auth.credential);
    if engine.is_shutting_down() {
        // Registered after the shutdown sweep: close like the others.
        conn.control.fire(CloseCode::ServerShutdown);
    }
    let (mut stream, sink) = socket.split(&outbox).await;
    outbox.attach(sink).await;
    // Boxed: the opening phase runs once, and its state would otherwise be reserved in
    // every connection's task for the whole life of the connection.
    let opened = Box::pin(open(&engine, &hooks, &conn, &outbox, hold_for_resume)).await;
    if opened.is_ok() {
        // `hello` is out: the writers may write what was queued behind it.
        outbox.go_live();
    }
    // After `hello`: the client is served first and announced (presence) second, so a
    // connect storm is not paced by presence bookkeeping. Called whether or not the
    // opening succeeded, to pair with `disconnected` below.
    hooks.connected(user, conns == 1).await;
    let end = match opened {
        Ok(held) => {
            let limiter = RateLimiter::direct_with_clock(
                Quota::per_second(
                    NonZeroU32::new(engine.config.inbound_per_sec).unwrap_or(NonZeroU32::MIN),
                )
                .allow_burst(
                    NonZeroU32::new(engine.config.inbound_burst).unwrap_or(NonZeroU32::MIN),
                ),
                engine.config.clock,
            );
            let mut session = Session {
                engine: engine.clone(),
                hooks: hooks.clone(),
                conn: conn.clone(),
                limiter,
                strikes: 0,
                held,
                expires: deadline(&engine.config.clock, auth.expires_at),
            };
            session.run(&mut stream, &outbox).await
        }
        Err(end) => end,
    };

    let mut close_sent = false;
    if let End::PeerClosed = end {
        // The close reply tungstenite queued goes out (behind what was queued before
        // it), if the peer still reads.
        let _ = tokio::time::timeout(CLOSE_LINGER, Box::pin(outbox.drain(&engine.metrics))).await;
    }
    if let End::Close(code) = end {
        // What is queued goes out before the close frame (the replies to a flood, the
        // events before a shutdown), unless the peer is the reason: it stopped reading.
        let unresponsive = matches!(code, CloseCode::SlowConsumer | CloseCode::HeartbeatTimeout);
        if !unresponsive {
            let _ =
                tokio::time::timeout(CLOSE_LINGER, Box::pin(outbox.drain(&engine.metrics))).await;
        }
        let frame = CloseFrame {
            code: code.code().into(),
            reason: code.reason().into(),
        };
        close_sent = matches!(
            tokio::time::timeout(
                CLOSE_LINGER,
                Box::pin(outbox.close_with(Frame::close(Some(frame)))),
            )
            .await,
            Ok(Ok(()))
        );
    }
    let remaining = engine.registry.unregister(&conn);
    hooks.disconnected(user, remaining == 0).await;
    if close_sent {
        Box::pin(linger(&mut stream)).await;
    }
    outbox.detach().await;
}

/// How long a closing connection waits to send its close frame, and then for the
/// peer's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Completes the closing handshake: reads and discards until the peer's close frame (or
/// the end of the stream), bounded by [`CLOSE_LINGER`]. Dropping a socket that still has
/// unread input makes the kernel reset the connection, which destroys the frames still
/// in flight, close frame included, so a flooding client would never learn its code.
async fn linger(stream: &mut Reader) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Subscribes the initial scopes and sends `hello`. With `hold`, the subscriptions
/// hold their events until the client's first frame; the held scopes are returned.
async fn open(
    engine: &Arc<Engine>,
    hooks: &Arc<dyn SessionHooks>,
    conn: &ConnHandle,
    outbox: &Outbox,
    hold: bool,
) -> Result<Option<Held>, End> {
    let opened = match engine.subscriptions.open(conn, hooks.as_ref(), hold).await {
        Ok(opened) => opened,
        Err(err) => {
            tracing::warn!(user = conn.user, cause = %err, "initial scopes failed");
            return Err(End::Close(CloseCode::ServerShutdown));
        }
    };
    let hello = HelloFrame {
        v: PROTOCOL_VERSION,
        session_id: format!("{:032x}", rand::random::<u128>()),
        user_id: conn.user,
        heartbeat_ms: engine.config.heartbeat.as_millis() as u64,
        scopes: opened
            .scopes
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        offsets: opened.offsets,
    };
    let text = ServerFrame::Hello(hello).to_json();
    outbox
        .send_now(Frame::message(text, OpCode::Data(Data::Text), true))
        .await
        .map_err(|_| End::PeerGone)?;
    Ok(opened.held)
}

/// The text of a reply frame.
fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(frame.to_json())
}

fn error_frame(id: Option<FrameId>, code: ErrorCode, message: impl Into<String>) -> Utf8Bytes {
    encode(&ServerFrame::Error(ErrorFrame {
        id,
        code,
        message: message.into(),
    }))
}

/// An ack with no fields set; its id is filled in when it is sent.
fn ack() -> AckFrame {
    AckFrame {
        id: FrameId::Int(0),
        scope: None,
        recovered: None,
        offset: None,
        scopes: None,
    }
}

impl Session {
    async fn run(&mut self, stream: &mut Reader, outbox: &Arc<Outbox>) -> End {
        let heartbeat = self.engine.config.heartbeat;
        let dead_after = heartbeat.mul_f64(1.4);
        let clock = self.engine.config.clock;
        let mut last_heard = clock.instant();
        let mut ticker = tokio::time::interval_at(clock.instant() + heartbeat, heartbeat);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let control = self.conn.control.clone();
        let hold_until = clock.instant() + HOLD_FOR_RESUME;

        // Only per-connection signals in this loop: a shared one (a cancellation token)
        // would put every connection's waiter on one lock at every wake-up.
        loop {
            tokio::select! {
                biased;
                () = control.signalled() => {
                    if let Some(code) = control.code() {
                        return End::Close(code);
                    }
                    // Boxed like the other rare paths below.
                    Box::pin(self.engine.subscriptions.settle(&self.conn, self.hooks.as_ref())).await;
                }
                () = sleep_until_some(self.expires), if self.expires.is_some() => {
                    return End::Close(CloseCode::Unauthorized);
                }
                () = tokio::time::sleep_until(hold_until), if self.held.is_some() => {
                    // No `resume` came: continue from the offsets announced in `hello`.
                    self.release_held(&BTreeMap::new()).await;
                }
                () = outbox.handed_over() => {
                    // A writer found the socket full (or busy): this task writes until
                    // the queue is empty. A peer that stops reading blocks the write; the
                    // kill (its queue overflowed meanwhile) or the heartbeat ticker ends
                    // the wait: a write still pending at a second tick has been stuck for
                    // a whole period. (The ticker, not a timeout per write: no timer churn.)
                    // Boxed, like the ping below: rare paths whose state would otherwise
                    // be reserved in every idle connection's task.
                    let write = Box::pin(outbox.drain(&self.engine.metrics));
                    tokio::pin!(write);
                    let mut ticks = 0;
                    let mut work = false;
                    loop {
                        tokio::select! {
                            biased;
                            () = control.signalled() => {
                                if let Some(code) = control.code() {
                                    return End::Close(code);
                                }
                                // Subscription work: done once the write is.
                                work = true;
                            }
                            written = &mut write => match written {
                                Ok(()) => break,
                                Err(_) => return End::PeerGone,
                            },
                            _ = ticker.tick() => {
                                ticks += 1;
                                if ticks >= 2 {
                                    if control.fire(CloseCode::SlowConsumer) {
                                        Metrics::inc(&self.engine.metrics.slow_consumer_evictions);
                                    }
                                    return End::Close(CloseCode::SlowConsumer);
                                }
                            }
                        }
                    }
                    if work {
                        Box::pin(self.engine.subscriptions.settle(&self.conn, self.hooks.as_ref())).await;
                    }
                }
                msg = stream.next() => {
                    let msg = match msg {
                        None => return End::PeerGone,
                        Some(Err(err)) => {
                            tracing::debug!(conn = self.conn.id, cause = %err, "read failed");
                            return if is_capacity_error(&err) {
                                End::Close(CloseCode::MessageTooBig)
                            } else {
                                End::PeerGone
                            };
                        }
                        Some(Ok(msg)) => msg,
                    };
                    last_heard = clock.instant();
                    match msg {
                        Message::Text(text) => {
                            // Boxed: handling a frame awaits hooks and replays; kept
                            // inline, that state would enlarge every idle connection.
                            if let Some(end) = Box::pin(self.on_text(text.as_str())).await {
                                return end;
                            }
                        }
                        Message::Binary(_) => {
                            Metrics::inc(&self.engine.metrics.inbound_errors);
                            self.reply(error_frame(None, ErrorCode::UnsupportedFrame, "binary frames are not supported; send JSON text"));
                        }
                        Message::Close(_) => {
                            // tungstenite holds its close reply until its next write:
                            // flushing queues it on the outbox, to go out before the
                            // socket closes.
                            let _ = stream.flush().await;
                            return End::PeerClosed;
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                _ = ticker.tick() => {
                    if clock.instant() - last_heard > dead_after {
                        Metrics::inc(&self.engine.metrics.heartbeat_timeouts);
                        return End::Close(CloseCode::HeartbeatTimeout);
                    }
                    let ping = Box::pin(outbox.send_now(Frame::ping(Vec::new())));
                    match tokio::time::timeout(heartbeat, ping).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::PeerGone,
                        Err(_) => {
                            // Not even a ping got out in a whole period: stuck.
                            if control.fire(CloseCode::SlowConsumer) {
                                Metrics::inc(&self.engine.metrics.slow_consumer_evictions);
                            }
                            return End::Close(CloseCode::SlowConsumer);
                        }
                    }
                }
            }
        }
    }

    fn reply(&self, frame: Utf8Bytes) {
        self.conn.send(frame);
    }

    /// Handles one text frame; `Some` ends the session.
    async fn on_text(&mut self, text: &str) -> Option<End> {
        let engine = self.engine.clone();
        let metrics = &engine.metrics;
        Metrics::inc(&metrics.inbound_frames);
        let limited = self.limiter.check().is_err();
        if limited {
            Metrics::inc(&metrics.rate_limited);
            self.strikes += 1;
            if self.strikes >= self.engine.config.flood_strikes {
                return Some(End::Close(CloseCode::Flood));
            }
        } else {
            self.strikes = 0;
        }
        if text.len() > self.engine.config.max_frame_bytes {
            Metrics::inc(&metrics.inbound_errors);
            self.reply(error_frame(
                None,
                ErrorCode::PayloadTooLarge,
                format!(
                    "frame of {} bytes is over the limit of {}",
                    text.len(),
                    self.engine.config.max_frame_bytes
                ),
            ));
            return None;
        }
        // Decoded even when rate limited, so the refusal carries the frame's id and the
        // client's request fails at once instead of timing out.
        let decoded = decode_client_frame(text);
        if limited {
            let id = match &decoded {
                Ok(frame) => frame.id.clone(),
                Err(err) => err.id.clone(),
            };
            self.reply(error_frame(
                id,
                ErrorCode::RateLimited,
                "inbound frame rate over the limit; slow down",
            ));
            return None;
        }
        let frame = match decoded {
            Ok(frame) => frame,
            Err(err) => {
                Metrics::inc(&metrics.inbound_errors);
                self.reply(error_frame(err.id, err.code, err.message));
                return None;
            }
        };
        if self.held.is_some() && !matches!(frame.op, ClientOp::Resume { .. }) {
            // The first frame is not a `resume`: go live from the `hello` offsets.
            self.release_held(&BTreeMap::new()).await;
        }
        let id = frame.id;
        let result = match frame.op {
            ClientOp::Ping if id.is_none() => {
                self.reply(Utf8Bytes::from_static(r#"{"op":"pong"}"#));
                return None;
            }
            ClientOp::Ping => Ok(ack()),
            ClientOp::Subscribe { scope, since } => self
                .subscribe(&scope, since.map_or(StartAt::Now, StartAt::Rewind))
                .await
                .map(|(scope, recovered, offset)| AckFrame {
                    scope: Some(scope),
                    recovered,
                    offset,
                    ..ack()
                }),
            ClientOp::Unsubscribe { scope } => self.unsubscribe(&scope).map(|()| ack()),
            ClientOp::Resume { positions } => self.resume(positions).await.map(|scopes| AckFrame {
                scopes: Some(scopes),
                ..ack()
            }),
            ClientOp::Refresh { token } => self.refresh(&token).await.map(|()| ack()),
            ClientOp::Typing {
                channel_id,
                thread_id,
            } => self
                .hooks
                .typing(self.conn.user, channel_id, thread_id)
                .await
                .map(|()| ack())
                .map_err(|e| (e.code(), e.to_string())),
        };
        match (result, id) {
            (Ok(body), Some(id)) => self.reply(encode(&ServerFrame::Ack(AckFrame { id, ..body }))),
            (Ok(_), None) => {}
            (Err((code, message)), id) => {
                Metrics::inc(&metrics.inbound_errors);
                self.reply(error_frame(id, code, message));
            }
        }
        None
    }

    async fn subscribe(
        &self,
        name: &str,
        from: StartAt,
    ) -> Result<(String, Option<bool>, Option<u64>), (ErrorCode, String)> {
        let subscribed = self
            .engine
            .subscriptions
            .subscribe(&self.conn, self.hooks.as_ref(), name, from)
            .await?;
        Ok((
            subscribed.scope.as_str().to_owned(),
            subscribed.recovered,
            subscribed.offset,
        ))
    }

    /// New credentials for the connection: its expiry moves (or goes) with them.
    async fn refresh(&mut self, token: &str) -> Result<(), (ErrorCode, String)> {
        let auth = self
            .hooks
            .refresh(self.conn.user, token)
            .await
            .map_err(|e| match e {
                HookError::Forbidden(m) => (ErrorCode::Unauthorized, m),
                other => (other.code(), other.to_string()),
            })?;
        self.engine
            .registry
            .set_credential(self.conn.id, auth.credential);
        self.expires = deadline(&self.engine.config.clock, auth.expires_at);
        Ok(())
    }

    fn unsubscribe(&self, name: &str) -> Result<(), (ErrorCode, String)> {
        self.engine.subscriptions.unsubscribe(&self.conn, name)
    }

    async fn resume(
        &mut self,
        positions: BTreeMap<String, u64>,
    ) -> Result<BTreeMap<String, chorus_proto::ScopeResume>, (ErrorCode, String)> {
        let held = self.held.take();
        self.engine
            .subscriptions
            .resume(&self.conn, self.hooks.as_ref(), held, positions)
            .await
    }

    /// Releases the scopes held since connect: each continues after its position in
    /// `positions`, or else after its offset in `hello`.
    async fn release_held(&mut self, positions: &BTreeMap<String, u64>) {
        if let Some(held) = self.held.take() {
            self.engine
                .subscriptions
                .release_held(&self.conn, held, positions)
                .await;
        }
    }
}

/// Sleeps until `at`; never completes for `None` (the branch is disabled then anyway).
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A frame or message over the transport limit.
fn is_capacity_error(err: &tungstenite::Error) -> bool {
    matches!(err, tungstenite::Error::Capacity(_))
}
