//! One WebSocket connection, from `hello` to close, in a single task: it reads and
//! answers client ops, pings, and watches for a dead peer, a kill (slow consumer),
//! shutdown, or subscription work (a re-check after the user's access changed). What a
//! subscription op does is the orchestrator's ([`crate::subscriptions`]). Its queued
//! frames are written by the writer tasks ([`crate::writer`]); the connection's task
//! takes over only when its socket would block, and then watches the write for a stuck
//! peer. One task per connection keeps idle memory small.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chorus_proto::{
    AckFrame, ClientOp, CloseCode, ErrorCode, ErrorFrame, FrameId, HelloFrame, PROTOCOL_VERSION,
    PublishOp, ServerFrame, StreamOp, decode_client_frame,
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
    /// The address the client connected from.
    client: Option<IpAddr>,
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

// Not an `async fn` (the lint's advice): see the comment in the body.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run(
    engine: Arc<Engine>,
    socket: Socket,
    user: UserKey,
    hooks: Arc<dyn SessionHooks>,
    hold_for_resume: bool,
    auth: SessionAuth,
    client: Option<IpAddr>,
) -> impl Future<Output = ()> + Send + use<> {
    // A block, not an `async fn`: an `async fn` moves its arguments from the future's
    // captures into locals, and both stay in the future for the connection's whole
    // life (the socket, the credentials: ~350 bytes per idle connection).
    async move {
        let (conn, outbox, conns) = engine.registry.register_with(user, socket.deflates());
        engine.registry.set_credential(conn.id, auth.credential);
        conn.control.set_roles(auth.roles.clone());
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
                    client,
                };
                session.run(&mut stream, &outbox).await
            }
            Err(end) => end,
        };

        let mut close_sent = false;
        if let End::PeerClosed = end {
            // The close reply tungstenite queued goes out (behind what was queued before
            // it), if the peer still reads.
            let _ =
                tokio::time::timeout(CLOSE_LINGER, Box::pin(outbox.drain(&engine.metrics))).await;
        }
        if let End::Close(code) = end {
            // What is queued goes out before the close frame (the replies to a flood, the
            // events before a shutdown), unless the peer is the reason: it stopped reading.
            let unresponsive =
                matches!(code, CloseCode::SlowConsumer | CloseCode::HeartbeatTimeout);
            if !unresponsive {
                let _ = tokio::time::timeout(CLOSE_LINGER, Box::pin(outbox.drain(&engine.metrics)))
                    .await;
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
        // The application no longer admits the connection (e.g. an anonymous one after
        // the rules that let it in changed): closed as credentials that stopped being
        // valid, not as a failure worth a retry.
        Err(err) if err.code() == ErrorCode::Unauthorized => {
            tracing::debug!(user = conn.user, cause = %err, "connection refused at open");
            return Err(End::Close(CloseCode::Unauthorized));
        }
        Err(err) => {
            tracing::warn!(user = conn.user, cause = %err, "initial scopes failed");
            return Err(End::Close(CloseCode::ServerShutdown));
        }
    };
    let hello = HelloFrame {
        v: PROTOCOL_VERSION,
        session_id: conn.control.session_id().to_owned(),
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

/// The refusal of a frame over the connection's inbound rate.
fn rate_limited(id: Option<FrameId>) -> Utf8Bytes {
    error_frame(
        id,
        ErrorCode::RateLimited,
        "inbound frame rate over the limit; slow down",
    )
}

/// Whether `op` reads or acts on the connection's user's behalf, so that their
/// credential must still stand ([`SessionHooks::credential_stands`]): all but `ping`,
/// `unsubscribe` and `refresh` (which brings a credential of its own).
fn acts_for_the_user(op: &ClientOp) -> bool {
    !matches!(
        op,
        ClientOp::Ping | ClientOp::Unsubscribe { .. } | ClientOp::Refresh { .. }
    )
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
                            // Counted like a text frame: a flood of them is a flood.
                            match self.count_inbound() {
                                Err(end) => return end,
                                Ok(true) => self.reply(rate_limited(None)),
                                Ok(false) => {
                                    Metrics::inc(&self.engine.metrics.inbound_errors);
                                    self.reply(error_frame(None, ErrorCode::UnsupportedFrame, "binary frames are not supported; send JSON text"));
                                }
                            }
                        }
                        Message::Close(_) => {
                            // tungstenite holds its close reply until its next write:
                            // flushing queues it on the outbox, to go out before the
                            // socket closes.
                            let _ = stream.flush().await;
                            return End::PeerClosed;
                        }
                        // A ping is answered (by tungstenite) with a pong: counted too,
                        // so pings at line rate end in 3501 like any flood; pongs (a
                        // client's answers to the heartbeat, or unsolicited) likewise.
                        Message::Ping(_) | Message::Pong(_) => {
                            if let Err(end) = self.count_inbound() {
                                return end;
                            }
                        }
                        Message::Frame(_) => {}
                    }
                }
                _ = ticker.tick() => {
                    outbox.trim();
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

    /// Counts an inbound frame against the connection's rate: `Ok(true)` when it is
    /// over the rate, `Err` when that makes `flood_strikes` in a row (close 3501).
    fn count_inbound(&mut self) -> Result<bool, End> {
        let metrics = &self.engine.metrics;
        Metrics::inc(&metrics.inbound_frames);
        if self.limiter.check().is_ok() {
            self.strikes = 0;
            return Ok(false);
        }
        Metrics::inc(&metrics.rate_limited);
        self.strikes += 1;
        if self.strikes >= self.engine.config.flood_strikes {
            return Err(End::Close(CloseCode::Flood));
        }
        Ok(true)
    }

    /// Handles one text frame; `Some` ends the session.
    async fn on_text(&mut self, text: &str) -> Option<End> {
        let engine = self.engine.clone();
        let metrics = &engine.metrics;
        let limited = match self.count_inbound() {
            Ok(limited) => limited,
            Err(end) => return Some(end),
        };
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
            self.reply(rate_limited(id));
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
        // Before the held events are released too (by any first frame but a `resume`):
        // a revoked credential gets nothing more.
        if (acts_for_the_user(&frame.op) || self.held.is_some())
            && let Some(credential) = self.conn.control.credential()
        {
            match self
                .hooks
                .credential_stands(self.conn.user, credential)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    Metrics::inc(&metrics.inbound_errors);
                    self.reply(error_frame(
                        frame.id.clone(),
                        ErrorCode::Unauthorized,
                        "the connection's credentials were revoked",
                    ));
                    return Some(End::Close(CloseCode::Unauthorized));
                }
                Err(err) => {
                    Metrics::inc(&metrics.inbound_errors);
                    self.reply(error_frame(frame.id.clone(), err.code(), err.to_string()));
                    return None;
                }
            }
        }
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
            ClientOp::Append { message_id, text } => {
                self.stream_op(StreamOp::Append { message_id, text }).await
            }
            ClientOp::Complete { message_id, text } => {
                self.stream_op(StreamOp::Complete { message_id, text })
                    .await
            }
            ClientOp::Abort { message_id, reason } => {
                self.stream_op(StreamOp::Abort { message_id, reason }).await
            }
            ClientOp::Publish { scope, kind, data } => self
                .hooks
                .publish(
                    self.conn.user,
                    self.conn.control.roles().as_deref().unwrap_or_default(),
                    PublishOp { scope, kind, data },
                )
                .await
                .map(|offset| AckFrame { offset, ..ack() })
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

    /// A streaming-message op: the application's ([`SessionHooks::stream`]).
    async fn stream_op(&self, op: StreamOp) -> Result<AckFrame, (ErrorCode, String)> {
        self.hooks
            .stream(self.conn.user, op)
            .await
            .map(|()| ack())
            .map_err(|e| (e.code(), e.to_string()))
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
            .refresh(self.conn.user, token, self.client)
            .await
            .map_err(|e| match e {
                HookError::Forbidden(m) => (ErrorCode::Unauthorized, m),
                other => (other.code(), other.to_string()),
            })?;
        self.engine
            .registry
            .set_credential(self.conn.id, auth.credential);
        self.expires = deadline(&self.engine.config.clock, auth.expires_at);
        if self.conn.control.set_roles(auth.roles) {
            // The new credential lost a role: what it let the connection read is
            // authorized again (settled by this task's loop, like any re-check).
            self.engine
                .registry
                .recheck_conn(&self.conn, "roles_changed", &[]);
        }
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

/// A frame or message over the transport limit, compressed or not.
fn is_capacity_error(err: &tungstenite::Error) -> bool {
    match err {
        tungstenite::Error::Capacity(_) => true,
        // A compressed message that inflates past the limit (`permessage-deflate`).
        tungstenite::Error::Io(err) => crate::deflate::InflateError::is_too_big(err),
        _ => false,
    }
}

/// Whole sessions without TCP: each runs over an in-memory pipe ([`Socket::in_memory`])
/// whose other end is a tungstenite client, on tokio's paused clock.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::stream::SplitSink;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    use super::*;
    use crate::testing::TestHooks;
    use crate::{EngineConfig, Publish, Scope};

    const EPOCH_MS: i64 = 1_700_000_000_000;

    type Client = WebSocketStream<DuplexStream>;

    fn engine(config: EngineConfig) -> Arc<Engine> {
        Engine::in_memory(EngineConfig {
            clock: Clock::following_tokio(EPOCH_MS),
            ..config
        })
    }

    /// Opens a session for `user` over a pipe that holds `capacity` bytes (the socket's
    /// buffers); returns the client's end of the pipe and the session's task.
    fn open_pipe(
        engine: &Arc<Engine>,
        hooks: &Arc<TestHooks>,
        user: UserKey,
        auth: SessionAuth,
        capacity: usize,
    ) -> (DuplexStream, JoinHandle<()>) {
        let (server, client) = tokio::io::duplex(capacity);
        let socket = Socket::in_memory(server, WebSocketConfig::default());
        let hooks: Arc<dyn SessionHooks> = hooks.clone();
        let session = tokio::spawn(engine.serve_socket(socket, user, hooks, false, auth, None));
        (client, session)
    }

    /// As [`open_pipe`], with a WebSocket client on the pipe.
    async fn connect(
        engine: &Arc<Engine>,
        hooks: &Arc<TestHooks>,
        user: UserKey,
        auth: SessionAuth,
    ) -> (Client, JoinHandle<()>) {
        let (pipe, session) = open_pipe(engine, hooks, user, auth, 64 * 1024);
        let client = WebSocketStream::from_raw_socket(pipe, Role::Client, None).await;
        (client, session)
    }

    /// Every message in `bytes` (what a peer was sent), decoded as a client would,
    /// without answering any of them.
    fn decode_all(bytes: Vec<u8>) -> Vec<Message> {
        struct Received(std::io::Cursor<Vec<u8>>);
        impl std::io::Read for Received {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::io::Read::read(&mut self.0, buf)
            }
        }
        impl std::io::Write for Received {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                Ok(buf.len()) // the answers (pongs, the close reply) go nowhere
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let io = Received(std::io::Cursor::new(bytes));
        let mut ws = tungstenite::WebSocket::from_raw_socket(io, Role::Client, None);
        std::iter::from_fn(|| ws.read().ok()).collect()
    }

    /// A client that keeps reading (and so answers pings): what it receives, pings and
    /// pongs left out, and its sending half.
    fn reading(client: Client) -> (SplitSink<Client, Message>, mpsc::UnboundedReceiver<Message>) {
        let (sink, mut stream) = client.split();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if !matches!(msg, Message::Ping(_) | Message::Pong(_)) && tx.send(msg).is_err() {
                    break;
                }
            }
        });
        (sink, rx)
    }

    /// The next message; fails rather than waits forever (in paused time, an hour
    /// passes at once when nothing else is due).
    async fn next(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
        tokio::time::timeout(Duration::from_secs(3_600), rx.recv())
            .await
            .expect("a message within the hour")
            .expect("the connection is open")
    }

    async fn next_text(rx: &mut mpsc::UnboundedReceiver<Message>) -> String {
        match next(rx).await {
            Message::Text(text) => text.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    fn close_code(msg: &Message) -> Option<u16> {
        match msg {
            Message::Close(Some(frame)) => Some(frame.code.into()),
            _ => None,
        }
    }

    async fn send(sink: &mut SplitSink<Client, Message>, text: &str) {
        sink.send(Message::text(text)).await.expect("sent");
    }

    fn event(scope: &str, text: &str) -> Publish {
        let scope = Scope::parse(scope).expect("scope");
        Publish::new(
            scope,
            "message.created",
            &serde_json::json!({ "text": text }),
        )
    }

    /// Over the wire: `hello`, a `subscribe` acked with the head, a live event, the
    /// subscription limit, a `ping` — each frame byte for byte.
    #[tokio::test(start_paused = true)]
    async fn a_client_subscribes_over_the_wire_up_to_its_limit() {
        let engine = engine(EngineConfig {
            max_subscriptions: 2,
            ..EngineConfig::default()
        });
        let hooks = Arc::new(TestHooks::default());
        let (client, _session) = connect(&engine, &hooks, 7, SessionAuth::default()).await;
        let (mut sink, mut rx) = reading(client);
        let hello: Value = serde_json::from_str(&next_text(&mut rx).await).expect("json");
        assert_eq!(hello["op"], "hello");
        assert_eq!(hello["user_id"], 7);
        assert_eq!(hello["scopes"], serde_json::json!(["user:7"]));
        // The memory broker's offsets start at its clock's microseconds.
        let base = EPOCH_MS as u64 * 1_000;
        assert_eq!(hello["offsets"]["user:7"], base);

        send(&mut sink, r#"{"op":"subscribe","id":1,"scope":"topic:a"}"#).await;
        assert_eq!(
            next_text(&mut rx).await,
            format!(r#"{{"op":"ack","id":1,"scope":"topic:a","offset":{base}}}"#)
        );
        engine
            .publish(event("topic:a", "hi"))
            .await
            .expect("published");
        assert_eq!(
            next_text(&mut rx).await,
            format!(
                r#"{{"op":"event","scope":"topic:a","offset":{},"type":"message.created","data":{{"text":"hi"}}}}"#,
                base + 1
            )
        );
        send(&mut sink, r#"{"op":"subscribe","id":2,"scope":"topic:b"}"#).await;
        assert_eq!(
            next_text(&mut rx).await,
            r#"{"op":"error","id":2,"code":"limit_exceeded","message":"a connection holds at most 2 subscriptions"}"#
        );
        send(&mut sink, r#"{"op":"ping","id":3}"#).await;
        assert_eq!(next_text(&mut rx).await, r#"{"op":"ack","id":3}"#);
        engine
            .publish(event("topic:b", "no"))
            .await
            .expect("published");
        engine
            .publish(event("topic:a", "yes"))
            .await
            .expect("published");
        let last: Value = serde_json::from_str(&next_text(&mut rx).await).expect("json");
        assert_eq!(last["data"]["text"], "yes", "nothing of the refused scope");
        engine.registry.check_invariants().expect("invariants");
    }

    /// A peer that stops answering is dropped with 3002 at the first ping tick after
    /// 1.4 heartbeats of silence; a peer that answers stays.
    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_dropped_when_its_heartbeat_lapses() {
        let heartbeat = Duration::from_secs(10);
        let engine = engine(EngineConfig {
            heartbeat,
            ..EngineConfig::default()
        });
        let clock = engine.config.clock;
        let hooks = Arc::new(TestHooks::default());
        let start = clock.instant();
        let (mut silent, silent_session) =
            open_pipe(&engine, &hooks, 1, SessionAuth::default(), 64 * 1024);
        let (alive, _alive_session) = connect(&engine, &hooks, 2, SessionAuth::default()).await;
        let (_alive_sink, mut alive_rx) = reading(alive);
        assert!(
            next_text(&mut alive_rx)
                .await
                .starts_with(r#"{"op":"hello""#)
        );

        silent_session
            .await
            .expect("the silent peer's session ended");
        // Pinged at 10 s; at the 20 s tick it had been silent over 14 s. (Then up to a
        // second waiting for the close reply that never comes.)
        let ended = clock.instant() - start;
        assert!(
            ended >= 2 * heartbeat && ended <= 2 * heartbeat + CLOSE_LINGER,
            "{ended:?}"
        );
        assert_eq!(
            engine
                .metrics
                .heartbeat_timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let mut sent = Vec::new();
        silent.read_to_end(&mut sent).await.expect("read");
        let got = decode_all(sent);
        assert!(matches!(&got[0], Message::Text(t) if t.as_str().starts_with(r#"{"op":"hello""#)));
        assert!(matches!(&got[1], Message::Ping(_)), "{got:?}");
        assert_eq!(close_code(&got[2]), Some(3002), "{got:?}");
        assert_eq!(got.len(), 3, "{got:?}");

        // The answering peer outlived it: an event published now reaches it.
        engine
            .publish(event("user:2", "still here"))
            .await
            .expect("published");
        let text: Value = serde_json::from_str(&next_text(&mut alive_rx).await).expect("json");
        assert_eq!(text["data"]["text"], "still here");
        assert!(engine.registry.connections_of(1).is_empty());
        engine.registry.check_invariants().expect("invariants");
    }

    /// A connection closes with 3502 the instant its credentials expire; one whose
    /// client sent `refresh` lives on until the new expiry.
    #[tokio::test(start_paused = true)]
    async fn expired_credentials_close_the_socket_unless_refreshed() {
        let engine = engine(EngineConfig::default());
        let clock = engine.config.clock;
        let hooks = Arc::new(TestHooks::default());
        let start = clock.instant();
        let expiring = SessionAuth {
            credential: Some(1),
            expires_at: Some(clock.system_time() + Duration::from_secs(90)),
            roles: None,
        };
        let (plain, _) = connect(&engine, &hooks, 1, expiring.clone()).await;
        let (refreshed, _) = connect(&engine, &hooks, 2, expiring).await;
        let (_plain_sink, mut plain_rx) = reading(plain);
        let (mut refreshed_sink, mut refreshed_rx) = reading(refreshed);
        for rx in [&mut plain_rx, &mut refreshed_rx] {
            assert!(next_text(rx).await.starts_with(r#"{"op":"hello""#));
        }

        tokio::time::sleep(Duration::from_secs(30)).await;
        hooks.refresh_to(SessionAuth {
            credential: Some(2),
            expires_at: Some(clock.system_time() + Duration::from_secs(120)),
            roles: None,
        });
        send(
            &mut refreshed_sink,
            r#"{"op":"refresh","id":1,"token":"t"}"#,
        )
        .await;
        assert_eq!(next_text(&mut refreshed_rx).await, r#"{"op":"ack","id":1}"#);

        let closed = next(&mut plain_rx).await;
        assert_eq!(close_code(&closed), Some(3502), "{closed:?}");
        assert_eq!(clock.instant() - start, Duration::from_secs(90));

        tokio::time::sleep(Duration::from_secs(1)).await;
        engine
            .publish(event("user:2", "still open"))
            .await
            .expect("published");
        let text: Value = serde_json::from_str(&next_text(&mut refreshed_rx).await).expect("json");
        assert_eq!(text["data"]["text"], "still open");
        let closed = next(&mut refreshed_rx).await;
        assert_eq!(close_code(&closed), Some(3502), "{closed:?}");
        assert_eq!(clock.instant() - start, Duration::from_secs(150));
    }

    /// Each op that acts for the user first asks whether the connection's credential
    /// still stands (after a `refresh`, the new one); `ping`, `unsubscribe` and
    /// `refresh` do not ask. A credential that no longer stands is answered
    /// `unauthorized` and the socket closes with 3502.
    #[tokio::test(start_paused = true)]
    async fn an_op_on_a_revoked_credential_is_refused_and_closes_the_socket() {
        let engine = engine(EngineConfig::default());
        let hooks = Arc::new(TestHooks::default());
        let auth = |credential| SessionAuth {
            credential: Some(credential),
            ..SessionAuth::default()
        };
        let (socket, _session) = connect(&engine, &hooks, 1, auth(5)).await;
        let (mut sink, mut rx) = reading(socket);
        assert!(next_text(&mut rx).await.starts_with(r#"{"op":"hello""#));
        let asked = || hooks.asked.lock().map(|a| a.clone()).unwrap_or_default();

        send(&mut sink, r#"{"op":"ping","id":1}"#).await;
        assert_eq!(next_text(&mut rx).await, r#"{"op":"ack","id":1}"#);
        send(
            &mut sink,
            r#"{"op":"unsubscribe","id":2,"scope":"topic:a"}"#,
        )
        .await;
        assert!(next_text(&mut rx).await.contains(r#""id":2"#));
        assert_eq!(
            asked(),
            Vec::<i64>::new(),
            "ping and unsubscribe ask nothing"
        );
        send(&mut sink, r#"{"op":"subscribe","id":3,"scope":"topic:a"}"#).await;
        assert!(
            next_text(&mut rx)
                .await
                .starts_with(r#"{"op":"ack","id":3"#)
        );
        assert_eq!(asked(), [5]);

        hooks.refresh_to(auth(6));
        send(&mut sink, r#"{"op":"refresh","id":4,"token":"t"}"#).await;
        assert_eq!(next_text(&mut rx).await, r#"{"op":"ack","id":4}"#);
        assert_eq!(asked(), [5], "refresh asks nothing");
        hooks.revoke(5);
        send(&mut sink, r#"{"op":"typing","id":5,"channel_id":1}"#).await;
        assert_eq!(next_text(&mut rx).await, r#"{"op":"ack","id":5}"#);
        assert_eq!(asked(), [5, 6], "the refreshed credential is asked");

        hooks.revoke(6);
        send(&mut sink, r#"{"op":"subscribe","id":6,"scope":"topic:b"}"#).await;
        let refused: Value = serde_json::from_str(&next_text(&mut rx).await).expect("json");
        assert_eq!(refused["op"], "error", "{refused}");
        assert_eq!(refused["id"], 6, "{refused}");
        assert_eq!(refused["code"], "unauthorized", "{refused}");
        let closed = next(&mut rx).await;
        assert_eq!(close_code(&closed), Some(3502), "{closed:?}");
        assert!(
            engine
                .registry
                .subscribers(&Scope::parse("topic:b").expect("scope"))
                .is_empty(),
            "nothing was granted"
        );
    }

    /// A peer that stops reading fills its socket, then its queue, and is evicted
    /// (its task ends, counted once); a reading peer of the same scope gets every event.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_evicted_and_the_others_are_served() {
        let engine = engine(EngineConfig {
            queue_capacity: 8,
            ..EngineConfig::default()
        });
        let topic = Scope::parse("topic:x").expect("scope");
        let hooks = Arc::new(TestHooks::with_initial(vec![topic.clone()]));
        let (mut slow, slow_session) = open_pipe(&engine, &hooks, 1, SessionAuth::default(), 4_096);
        let (fast, _fast_session) = connect(&engine, &hooks, 2, SessionAuth::default()).await;
        let (_fast_sink, mut fast_rx) = reading(fast);
        assert!(
            next_text(&mut fast_rx)
                .await
                .starts_with(r#"{"op":"hello""#)
        );

        let filler = "x".repeat(1_000);
        for i in 0..40 {
            let text = format!("{i} {filler}");
            engine
                .publish(event("topic:x", &text))
                .await
                .expect("published");
            // In step with the reading peer, so only the slow one falls behind.
            let got: Value = serde_json::from_str(&next_text(&mut fast_rx).await).expect("json");
            assert_eq!(got["data"]["text"], text);
        }
        tokio::time::timeout(Duration::from_secs(3_600), slow_session)
            .await
            .expect("the slow peer's session ends")
            .expect("without panicking");
        let evictions = &engine.metrics.slow_consumer_evictions;
        assert_eq!(evictions.load(std::sync::atomic::Ordering::Relaxed), 1);

        // What reached the slow peer: `hello`, then the first events in order, then
        // nothing (no close frame fits in a full socket).
        let mut sent = Vec::new();
        tokio::time::timeout(Duration::from_secs(3_600), slow.read_to_end(&mut sent))
            .await
            .expect("the pipe is closed")
            .expect("read");
        let got = decode_all(sent);
        assert!(matches!(&got[0], Message::Text(t) if t.as_str().starts_with(r#"{"op":"hello""#)));
        let events: Vec<Value> = got[1..]
            .iter()
            .filter_map(|m| match m {
                Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
                _ => None,
            })
            .collect();
        assert!(!events.is_empty() && events.len() < 40, "{}", events.len());
        for (i, event) in events.iter().enumerate() {
            let text = event["data"]["text"].as_str().unwrap_or("");
            assert!(text.starts_with(&format!("{i} ")), "event {i}: {text:.10}");
        }
        assert!(engine.registry.connections_of(1).is_empty());
        engine.registry.check_invariants().expect("invariants");
    }
}
