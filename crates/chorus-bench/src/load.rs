//! The load generator's parts: connections spread over loopback source addresses,
//! Chorus setup over HTTP, and per-subscriber accounting of what arrived.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self as client_http1, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use memchr::memmem::Finder;
use serde_json::{Value, json};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use chorus_realtime::deflate::Inflate;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::target::{ADMIN_TOKEN, Kind, Target};

pub type Ws = WebSocketStream<Conn>;

/// A client's TCP stream, counting the bytes it reads (what the server put on the wire)
/// and, with `permessage-deflate`, inflating the server's compressed messages before
/// tungstenite (which knows nothing of the extension) parses them.
pub struct Conn {
    tcp: TcpStream,
    inflate: Option<Box<Inflate>>,
    /// With `inflate`: how much of the handshake response's `\r\n\r\n` was read, 4
    /// once past it. The response goes to tungstenite as it is, what follows it
    /// through the inflater (the server may send a compressed event right behind
    /// `hello`, in the same read as the response).
    head: u8,
    /// Bytes read from the socket so far.
    pub wire_bytes: u64,
}

impl Conn {
    fn new(tcp: TcpStream, deflate: bool) -> Self {
        Self {
            tcp,
            inflate: deflate.then(|| Box::new(Inflate::for_client(16 << 20))),
            head: 0,
            wire_bytes: 0,
        }
    }

    /// How many bytes of `bytes` still belong to the handshake response, `head` being
    /// how much of its end was seen.
    fn head_bytes_of(head: &mut u8, bytes: &[u8]) -> usize {
        const END: &[u8; 4] = b"\r\n\r\n";
        for (i, &b) in bytes.iter().enumerate() {
            if *head == 4 {
                return i;
            }
            *head = if b == END[*head as usize] {
                *head + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
        }
        bytes.len()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let Some(inflate) = this.inflate.as_deref_mut() else {
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
            this.wire_bytes += (buf.filled().len() - before) as u64;
            return Poll::Ready(Ok(()));
        };
        loop {
            if inflate.has_ready() {
                let n = inflate.take(buf.initialize_unfilled());
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut raw = ReadBuf::new(&mut chunk);
            if this.head < 4 {
                // The handshake response: read only what fits the caller's buffer, so
                // the part before its end can be handed over as it is.
                let want = buf.remaining().min(chunk.len());
                raw = ReadBuf::new(&mut chunk[..want]);
            }
            std::task::ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut raw))?;
            if raw.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            let bytes = raw.filled();
            this.wire_bytes += bytes.len() as u64;
            let head = if this.head < 4 {
                let n = Self::head_bytes_of(&mut this.head, bytes);
                buf.put_slice(&bytes[..n]);
                n
            } else {
                0
            };
            inflate.feed(&bytes[head..]).map_err(std::io::Error::from)?;
            if head > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Loopback source address for connection `i`: 127.0.0.2 … 127.0.0.251, so 10k
/// connections never run one source address out of ephemeral ports.
fn source_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8))
}

/// Opens a WebSocket to the target; for Chorus, waits for `hello`.
pub async fn connect(target: &Target, token: Option<&str>, i: usize) -> anyhow::Result<Ws> {
    connect_hello(target, token, i, false)
        .await
        .map(|(ws, _)| ws)
}

/// [`connect`], optionally with `?resume=1` (the server holds the initial subscriptions
/// until the first frame, a `resume`); also returns the `hello`'s text (Chorus).
pub async fn connect_hello(
    target: &Target,
    token: Option<&str>,
    i: usize,
    resume: bool,
) -> anyhow::Result<(Ws, Option<Utf8Bytes>)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source_ip(i), 0))?;
    let node = target.node_for(i);
    let stream = socket.connect(node).await?;
    stream.set_nodelay(true)?;
    let mut url = match token {
        Some(t) => format!("ws://{node}{}?token={t}", target.ws_path()),
        None => format!("ws://{node}{}", target.ws_path()),
    };
    if resume {
        url.push_str(if token.is_some() {
            "&resume=1"
        } else {
            "?resume=1"
        });
    }
    let mut request = url.into_client_request()?;
    if target.deflate {
        request.headers_mut().insert(
            "Sec-WebSocket-Extensions",
            HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
        );
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let (mut ws, response) =
        client_async_with_config(request, Conn::new(stream, target.deflate), Some(config)).await?;
    if target.deflate {
        let agreed = response
            .headers()
            .get("Sec-WebSocket-Extensions")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("permessage-deflate"));
        if !agreed {
            bail!("the server did not agree to permessage-deflate: {response:?}");
        }
    }
    let mut hello = None;
    if target.kind == Kind::Chorus {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"hello\"") => hello = Some(t),
            other => bail!("expected hello, got {other:?}"),
        }
    }
    Ok((ws, hello))
}

/// HTTP access to a Chorus target as the admin.
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(target: &Target) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .unwrap_or_default(),
            base: target.http(),
        }
    }

    pub async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {value}");
        }
        Ok(value)
    }

    /// A GET whose error statuses the caller handles: the status and the JSON body.
    pub async fn get(
        &self,
        token: &str,
        path: &str,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(token, reqwest::Method::POST, path, Some(body))
            .await
    }

    /// Sends one message as `token`.
    pub async fn send(&self, token: &str, channel: i64, text: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}{}", self.base, messages_path(channel)))
            .bearer_auth(token)
            .json(&NewMessage { text })
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("send: {}", resp.status());
        }
        Ok(())
    }
}

/// Where a channel's messages are posted.
fn messages_path(channel: i64) -> String {
    format!("/api/v1/channels/{channel}/messages")
}

/// A message as posted (`POST /api/v1/channels/{id}/messages`).
#[derive(serde::Serialize)]
struct NewMessage<'a> {
    text: &'a str,
}

/// One sender's messages to a Chorus channel over a kept-alive HTTP/1.1 connection of
/// its own, with hyper's connection-level client, the request's URI and headers made
/// once. The load generator shares the server's cores and a closed loop's rate includes
/// the client's time, so the client is kept as cheap as the baseline's socket sender
/// allows (reqwest's pool, URL parsing and header map cost twice the CPU a send;
/// docs/benchmarks.md, "Round 2, session 28").
pub struct Poster {
    addr: SocketAddr,
    uri: hyper::Uri,
    host: HeaderValue,
    auth: HeaderValue,
    conn: Option<SendRequest<Full<Bytes>>>,
    /// Connections opened: one for a sender's whole run unless one failed.
    connects: u64,
}

impl Poster {
    pub fn new(target: &Target, token: &str, channel: i64) -> anyhow::Result<Self> {
        Ok(Self {
            addr: target.addr,
            uri: messages_path(channel).parse()?,
            host: target.addr.to_string().parse()?,
            auth: format!("Bearer {token}").parse()?,
            conn: None,
            connects: 0,
        })
    }

    /// Connections opened so far.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Posts one message; connects on first use (on the caller's runtime, which then
    /// drives the connection), and again after a connection failed or was closed.
    pub async fn post(&mut self, text: &str) -> anyhow::Result<()> {
        let status = match self.round_trip(text).await {
            Ok(status) => status,
            Err(err) => {
                self.conn = None;
                return Err(err);
            }
        };
        if !status.is_success() {
            bail!("send: {status}");
        }
        Ok(())
    }

    /// A connection ready for a request: the kept one, or a new one if the server closed
    /// it while it was idle (nothing was sent on it, so nothing is sent twice).
    async fn ready(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if let Some(conn) = &mut self.conn
            && conn.ready().await.is_err()
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (mut send, connection) = client_http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            self.connects += 1;
            send.ready().await?;
            self.conn = Some(send);
        }
        self.conn.as_mut().context("no HTTP connection")
    }

    async fn round_trip(&mut self, text: &str) -> anyhow::Result<hyper::StatusCode> {
        let body = serde_json::to_vec(&NewMessage { text })?;
        let request = hyper::Request::post(self.uri.clone())
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.ready().await?.send_request(request).await?;
        let status = response.status();
        // Read to its end, so the connection takes the next request.
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// A workspace with one channel, its reader users (each a member of both) and
/// `senders` writers.
pub struct Room {
    pub channel_id: i64,
    pub reader_tokens: Vec<String>,
    pub sender_tokens: Vec<String>,
    /// Connections that share one reader user (and its token).
    pub conns_per_user: usize,
}

/// Setup requests in flight at once: enough to keep the server's writer busy, few
/// enough not to measure its queue.
const SETUP_CONCURRENCY: usize = 32;

/// Creates the users, the workspace and its channel for `connections` reader
/// connections, `conns_per_user` of them per user (1: every connection is its own user,
/// as in a reconnect storm; more shares users the way people's tabs do, so their
/// tokens, memberships and presence are mostly looked up once).
pub async fn setup_room(
    api: &Api,
    connections: usize,
    senders: usize,
    conns_per_user: usize,
) -> anyhow::Result<Room> {
    let conns_per_user = conns_per_user.max(1);
    let tag: u32 = std::process::id() ^ (Instant::now().elapsed().subsec_nanos());
    let readers = connections.div_ceil(conns_per_user).max(1);
    let names: Vec<String> = (0..readers)
        .map(|i| format!("r{tag}-{i}"))
        .chain((0..senders).map(|i| format!("s{tag}-{i}")))
        .collect();
    // In order (`buffered`): reader `i`'s token is `reader_tokens[i]`.
    let users: Vec<(i64, String)> = stream::iter(names)
        .map(|name| async move {
            let v = api
                .post(ADMIN_TOKEN, "/api/v1/users", json!({ "name": name }))
                .await?;
            let id = v["user"]["id"].as_i64().context("user id")?;
            let token = v["token"].as_str().context("token")?.to_owned();
            anyhow::Ok((id, token))
        })
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let ws = api
        .post(
            ADMIN_TOKEN,
            "/api/v1/workspaces",
            json!({ "name": "bench" }),
        )
        .await?;
    let ws = ws["id"].as_i64().context("workspace id")?;
    let members = format!("/api/v1/workspaces/{ws}/members");
    stream::iter(&users)
        .map(|(id, _)| api.post(ADMIN_TOKEN, &members, json!({ "user_id": id })))
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ids: Vec<i64> = users.iter().map(|(id, _)| *id).collect();
    let channel = api
        .post(
            ADMIN_TOKEN,
            &format!("/api/v1/workspaces/{ws}/channels"),
            json!({ "name": format!("bench-{tag}"), "member_ids": ids }),
        )
        .await?;
    let mut tokens: Vec<String> = users.into_iter().map(|(_, token)| token).collect();
    let sender_tokens = tokens.split_off(readers);
    Ok(Room {
        channel_id: channel["id"].as_i64().context("channel id")?,
        reader_tokens: tokens,
        sender_tokens,
        conns_per_user,
    })
}

/// The token connection `i` uses.
pub fn reader_token(room: &Room, i: usize) -> &str {
    &room.reader_tokens[(i / room.conns_per_user) % room.reader_tokens.len()]
}

/// Benchmark payload: `#B#<sender>:<seq>:<micros since start>#`.
pub fn payload(sender: usize, seq: u64, start: Instant) -> String {
    format!("#B#{sender}:{seq}:{}#", start.elapsed().as_micros())
}

/// Where a benchmark payload starts.
static MARKER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("#B#"));

/// Calls `f` with the three numbers of every benchmark payload in a frame, in order (a
/// streamed message's delta carries the payloads of several appends).
pub fn each_payload(text: &str, mut f: impl FnMut(usize, u64, u64)) {
    let mut at = 0;
    while let Some(found) = MARKER.find(&text.as_bytes()[at..]) {
        let start = at + found;
        if let Some((sender, seq, sent_at)) = parse_payload(&text[start..]) {
            f(sender, seq, sent_at);
        }
        at = start + 3;
    }
}

/// Finds a benchmark payload in a frame and reads its three numbers. Every subscriber
/// runs this on every frame, so it is kept cheap: a precomputed SIMD substring search
/// (the payload sits ~150 bytes into a Chorus event frame) and no allocation.
fn parse_payload(text: &str) -> Option<(usize, u64, u64)> {
    let bytes = text.as_bytes();
    let mut rest = &bytes[MARKER.find(bytes)? + 3..];
    let mut field = |end: u8| -> Option<u64> {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        // At most 19 digits always fit in a u64.
        if digits == 0 || digits > 19 || rest.get(digits) != Some(&end) {
            return None;
        }
        let value = rest[..digits]
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        rest = &rest[digits + 1..];
        Some(value)
    };
    Some((
        usize::try_from(field(b':')?).ok()?,
        field(b':')?,
        field(b'#')?,
    ))
}

/// Latency histograms (µs), one per load-generator thread: every delivery is recorded,
/// so the record must stay cheap (an uncontended lock, a histogram in the thread's cache).
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

/// Histograms: more than the load generator's threads, so each thread has its own.
const LATENCY_SHARDS: usize = 16;

thread_local! {
    /// This thread's histogram.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % LATENCY_SHARDS
    };
}

impl Latencies {
    pub fn new() -> anyhow::Result<Self> {
        let shards = (0..LATENCY_SHARDS)
            .map(|_| Histogram::new_with_bounds(1, 120_000_000, 3).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self { shards })
    }

    pub fn record(&self, micros: u64) {
        let shard = SHARD.with(|s| *s);
        if let Ok(mut h) = self.shards[shard].lock() {
            let _ = h.record(micros.max(1));
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut out =
            Histogram::new_with_bounds(1, 120_000_000, 3).expect("constant bounds are valid");
        for shard in &self.shards {
            if let Ok(h) = shard.lock() {
                let _ = out.add(&*h);
            }
        }
        out
    }
}

/// What one subscriber saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    pub received: u64,
    /// Bytes of the frames counted in `received` (so the baseline's frames can be
    /// checked to be the size of Chorus's).
    pub bytes: u64,
    /// Bytes read from the socket meanwhile (frame headers included; compressed when
    /// the connection negotiated `permessage-deflate`).
    pub wire_bytes: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl std::ops::AddAssign for Seen {
    fn add_assign(&mut self, o: Self) {
        self.received += o.received;
        self.bytes += o.bytes;
        self.wire_bytes += o.wire_bytes;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
    }
}

/// Shared progress of all subscribers.
pub struct Progress {
    pub delivered: AtomicU64,
    /// Micros since start of the latest delivery.
    pub last_delivery: AtomicU64,
    /// Per sender: highest seq + 1 seen by the probe subscriber (closed-loop pacing).
    pub probe: Vec<AtomicU64>,
    pub probe_moved: tokio::sync::Notify,
}

impl Progress {
    pub fn new(senders: usize) -> Self {
        Self {
            delivered: AtomicU64::new(0),
            last_delivery: AtomicU64::new(0),
            probe: (0..senders).map(|_| AtomicU64::new(0)).collect(),
            probe_moved: tokio::sync::Notify::new(),
        }
    }
}

/// Reads one subscriber's frames until `stop`, accounting every benchmark payload.
pub async fn subscriber(
    mut ws: Ws,
    index: usize,
    senders: usize,
    start: Instant,
    lat: Arc<Latencies>,
    progress: Arc<Progress>,
    stop: tokio_util_like::Stop,
) -> Seen {
    let mut seen = Seen::default();
    let wire_before = ws.get_ref().wire_bytes;
    let mut next = vec![0u64; senders];
    let mut bits: Vec<Vec<u64>> = vec![Vec::new(); senders];
    // Deliveries not yet added to the shared counters, and the latest of their times:
    // added once per batch of frames the socket had ready, not once per frame (two
    // atomic read-modify-writes on lines every subscriber task writes, per event).
    let mut unflushed = 0u64;
    let mut latest = 0u64;
    loop {
        let msg = match ws.next().now_or_never() {
            Some(msg) => msg,
            None => {
                if unflushed > 0 {
                    progress.delivered.fetch_add(unflushed, Ordering::Relaxed);
                    progress.last_delivery.fetch_max(latest, Ordering::Relaxed);
                    unflushed = 0;
                }
                tokio::select! {
                    msg = ws.next() => msg,
                    () = stop.wait() => break,
                }
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => break,
        };
        let Some((sender, seq, sent_at)) = parse_payload(text.as_str()) else {
            continue;
        };
        if sender >= senders {
            continue;
        }
        let now = start.elapsed().as_micros() as u64;
        lat.record(now.saturating_sub(sent_at));
        seen.received += 1;
        seen.bytes += text.len() as u64;
        let word = (seq / 64) as usize;
        let set = &mut bits[sender];
        if set.len() <= word {
            set.resize(word + 1, 0);
        }
        if set[word] & (1 << (seq % 64)) != 0 {
            seen.duplicates += 1;
        } else {
            set[word] |= 1 << (seq % 64);
            seen.unique += 1;
        }
        if seq != next[sender] {
            seen.out_of_order += 1;
        }
        next[sender] = next[sender].max(seq + 1);
        unflushed += 1;
        latest = now;
        if index == 0 {
            progress.probe[sender].store(next[sender], Ordering::Release);
            progress.probe_moved.notify_waiters();
        }
    }
    progress.delivered.fetch_add(unflushed, Ordering::Relaxed);
    progress.last_delivery.fetch_max(latest, Ordering::Relaxed);
    seen.wire_bytes = ws.get_ref().wire_bytes - wire_before;
    seen
}

/// A tiny stop signal (a watch channel) shared by all tasks of a run.
pub mod tokio_util_like {
    use tokio::sync::watch;

    #[derive(Clone)]
    pub struct Stop(watch::Receiver<bool>);

    pub fn stop_pair() -> (watch::Sender<bool>, Stop) {
        let (tx, rx) = watch::channel(false);
        (tx, Stop(rx))
    }

    impl Stop {
        pub async fn wait(&self) {
            let mut rx = self.0.clone();
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn payload_round_trips() {
        let start = std::time::Instant::now();
        let p = super::payload(3, 77, start);
        let json = format!(r#"{{"op":"event","data":{{"text":"{p}"}}}}"#);
        let (s, seq, _) = super::parse_payload(&json).expect("parses");
        assert_eq!((s, seq), (3, 77));
        assert_eq!(
            super::parse_payload(r##"{"text":"#B#12:0:98765#"}"##),
            Some((12, 0, 98765))
        );
    }

    #[test]
    fn every_payload_of_a_delta_is_read() {
        let mut got = Vec::new();
        super::each_payload(
            r##"{"text":"#B#1:4:10##B#1:5:12#junk#B#2:x:1##B#2:0:13#"}"##,
            |s, seq, at| got.push((s, seq, at)),
        );
        assert_eq!(got, [(1, 4, 10), (1, 5, 12), (2, 0, 13)]);
    }

    #[test]
    fn malformed_payloads_are_skipped() {
        for text in [
            "no marker",
            "#B#",
            "#B#3:77#",
            "#B#3:x:1#",
            "#B#:1:2#",
            "#B#3#77#1#",
            "#B#3:77:1",
            "#B#3:77:99999999999999999999#",
        ] {
            assert_eq!(super::parse_payload(text), None, "{text}");
        }
    }
}
