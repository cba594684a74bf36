//! The scenarios of SPEC §6. Each takes a started target and returns one result row.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::SinkExt;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::load::{self, Api, Latencies, Progress, Room, Seen, Ws, tokio_util_like::stop_pair};
use crate::report::Row;
use crate::target::{Kind, Target};

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>22} [{bar:40}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Connections opened at once by default: a bounded storm.
pub const CONNECT_CONCURRENCY: usize = 256;

/// `n` open connections, how long opening all of them took, and each one's time from
/// its first SYN to `hello` (µs).
pub(crate) struct Opened {
    pub(crate) conns: Vec<Ws>,
    took: Duration,
    each: Histogram<u64>,
}

/// Opens `n` connections, `concurrency` at a time (Chorus: authenticated and
/// subscribed, i.e. `hello` received).
pub(crate) async fn open_many(
    target: &Target,
    room: Option<&Room>,
    n: usize,
    concurrency: usize,
    label: &str,
) -> anyhow::Result<Opened> {
    let bar = bar(n as u64, label);
    let started = Instant::now();
    let results: Vec<anyhow::Result<(Ws, Duration)>> = stream::iter(0..n)
        .map(|i| {
            let token = room.map(|r| load::reader_token(r, i).to_owned());
            let bar = bar.clone();
            async move {
                let t = Instant::now();
                let ws = load::connect(target, token.as_deref(), i).await;
                bar.inc(1);
                ws.map(|ws| (ws, t.elapsed()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let took = started.elapsed();
    bar.finish_and_clear();
    let mut each = Histogram::new_with_bounds(1, 120_000_000, 3)?;
    let mut conns = Vec::with_capacity(n);
    for result in results {
        let (ws, t) = result?;
        let _ = each.record((t.as_micros() as u64).max(1));
        conns.push(ws);
    }
    Ok(Opened { conns, took, each })
}

async fn room_for(
    target: &Target,
    conns: usize,
    senders: usize,
    conns_per_user: usize,
) -> anyhow::Result<Option<(Api, Room)>> {
    if target.kind == Kind::Baseline {
        return Ok(None);
    }
    let api = Api::new(target);
    let room = load::setup_room(&api, conns, senders, conns_per_user).await?;
    Ok(Some((api, room)))
}

pub struct FanoutOpts {
    pub subs: usize,
    pub senders: usize,
    pub duration: Duration,
    /// Total messages per second; `None`: flat out, paced by a window of unacknowledged messages.
    pub rate: Option<f64>,
    pub window: u64,
    /// Subscriber connections per reader user.
    pub conns_per_user: usize,
    /// How long every subscriber must have heard nothing before the first send
    /// ([`settle`]); zero: no wait.
    pub settle: Duration,
}

/// The longest [`settle`] waits in all.
const SETTLE_AT_MOST: Duration = Duration::from_secs(20);

/// Reads every connection until each has heard nothing for `quiet` (or `SETTLE_AT_MOST`
/// has passed): what the server still had to say about the connecting (presence of the
/// users who just came) is delivered before a measurement starts. Returns how long it
/// took.
async fn settle(conns: &mut [Ws], quiet: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    if quiet.is_zero() {
        return Ok(Duration::ZERO);
    }
    let deadline = tokio::time::Instant::now() + SETTLE_AT_MOST;
    let drains = conns.iter_mut().map(|ws| async move {
        loop {
            let next = tokio::time::timeout(quiet, ws.next());
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Ok(Some(Ok(_)))) => {}
                Ok(Ok(Some(Err(err)))) => {
                    return Err(anyhow::anyhow!("a subscriber failed: {err}"));
                }
                Ok(Ok(None)) => anyhow::bail!("a subscriber was closed while settling"),
                Ok(Err(_)) | Err(_) => return Ok(()),
            }
        }
    });
    futures_util::future::try_join_all(drains).await?;
    Ok(started.elapsed())
}

pub async fn fanout(target: &Target, opts: &FanoutOpts) -> anyhow::Result<Row> {
    let setup = room_for(target, opts.subs, opts.senders, opts.conns_per_user).await?;
    let room = setup.as_ref().map(|(_, r)| r);
    let rss_before = target.rss_kib()?;
    let mut subs = open_many(target, room, opts.subs, CONNECT_CONCURRENCY, "subscribers")
        .await?
        .conns;
    let settled = settle(&mut subs, opts.settle).await?;
    let rss_open = target.rss_kib()?;
    let cpu_before = target.cpu_time()?;
    let bench_cpu_before = crate::target::own_cpu_time()?;
    let start = Instant::now();
    let lat = Arc::new(Latencies::new()?);
    let progress = Arc::new(Progress::new(opts.senders));
    let (stop_tx, stop) = stop_pair();
    let readers: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            tokio::spawn(load::subscriber(
                ws,
                i,
                opts.senders,
                start,
                lat.clone(),
                progress.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Senders: HTTP for Chorus (persisted), a WebSocket for the baseline.
    let deadline = start + opts.duration;
    let per_sender_interval = opts
        .rate
        .map(|r| Duration::from_secs_f64(opts.senders as f64 / r.max(0.001)));
    let sending = SenderRuntime::start()?;
    let mut sender_tasks = Vec::new();
    let senders = opts.senders;
    for k in 0..senders {
        let progress = progress.clone();
        let window = opts.window;
        let mut sink = match &setup {
            Some((_, room)) => Sender::Http(load::Poster::new(
                target,
                &room.sender_tokens[k],
                room.channel_id,
            )?),
            None => Sender::ws(load::connect(target, None, 10_000 + k).await?),
        };
        sender_tasks.push(sending.spawn(async move {
            let mut seq = 0u64;
            let mut sending_time = Duration::ZERO;
            // Staggered: sender k starts k/senders of an interval late, so the offered
            // load is evenly spaced rather than one burst of `senders` messages per
            // interval.
            let mut ticker = per_sender_interval.map(|i| {
                let offset = i.mul_f64(k as f64 / senders as f64);
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, i);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            while Instant::now() < deadline {
                match &mut ticker {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => {
                        // Closed loop: at most `window` messages ahead of the probe subscriber.
                        while progress.probe[k].load(Ordering::Acquire) + window <= seq {
                            let moved = progress.probe_moved.notified();
                            if progress.probe[k].load(Ordering::Acquire) + window > seq {
                                break;
                            }
                            if tokio::time::timeout(Duration::from_secs(5), moved)
                                .await
                                .is_err()
                            {
                                eprintln!(
                                    "sender {k} stopped after {seq} messages: its probe heard nothing for 5 s"
                                );
                                return (seq, sending_time);
                            }
                        }
                    }
                }
                let began = Instant::now();
                if let Err(err) = sink.send(load::payload(k, seq, start)).await {
                    // Fewer senders from here on: the figures say less than they seem to.
                    eprintln!("sender {k} stopped after {seq} messages: {err:#}");
                    break;
                }
                sending_time += began.elapsed();
                seq += 1;
            }
            (seq, sending_time)
        }));
    }
    let (mut sent, mut sending_time) = (0u64, Duration::ZERO);
    for task in sender_tasks {
        let (seq, time) = task.await.unwrap_or_default();
        sent += seq;
        sending_time += time;
    }
    let send_end = start.elapsed();
    drop(sending);

    // Drain: wait until everything arrived or nothing moves for 3 s.
    let expected = sent * opts.subs as u64;
    let mut last = 0;
    let mut still = Instant::now();
    while progress.delivered.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = progress.delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still = Instant::now();
        } else if still.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    // The server's CPU from the first send to the last delivery (or the drain's end).
    let cpu = target.cpu_time()?.saturating_sub(cpu_before);
    let bench_cpu = crate::target::own_cpu_time()?.saturating_sub(bench_cpu_before);
    let rss_after = target.rss_kib()?;
    let _ = stop_tx.send(true);
    let mut seen = Seen::default();
    for r in readers {
        seen += r.await.unwrap_or_default();
    }
    let elapsed =
        Duration::from_micros(progress.last_delivery.load(Ordering::Relaxed)).max(send_end);
    let h = lat.merged();
    let mut row = Row::new("fanout", target.name());
    row.set("nodes", target.nodes() as u64);
    row.set("subs", opts.subs)
        .set(
            "mode",
            opts.rate
                .map_or_else(|| format!("flat w={}", opts.window), |r| format!("{r}/s")),
        )
        .set("sent", sent)
        .set("delivered", seen.received)
        .set(
            "events_per_sec",
            (seen.received as f64 / elapsed.as_secs_f64()).round(),
        )
        .set("p50_ms", ms(&h, 0.50))
        .set("p90_ms", ms(&h, 0.90))
        .set("p99_ms", ms(&h, 0.99))
        .set("max_ms", h.max() as f64 / 1000.0)
        // A sender's wait for one send: Chorus's HTTP answer (stored and fanned out),
        // the baseline's socket write. A closed loop's sender waits for it too.
        .set(
            "send_ms",
            (sending_time.as_secs_f64() * 1e3 / sent.max(1) as f64 * 1000.0).round() / 1000.0,
        )
        .set(
            "cpu_us_per_event",
            (cpu.as_secs_f64() * 1e6 / seen.received.max(1) as f64 * 1000.0).round() / 1000.0,
        )
        // The load generator's: reading the frames (and, for Chorus, the HTTP sends).
        .set(
            "bench_cpu_us_per_event",
            (bench_cpu.as_secs_f64() * 1e6 / seen.received.max(1) as f64 * 1000.0).round() / 1000.0,
        )
        .set("frame_bytes", seen.bytes / seen.received.max(1))
        // What the subscribers read from their sockets per delivery: frame headers
        // included, compressed with `permessage-deflate` (also pings, acks: noise).
        .set("wire_bytes", seen.wire_bytes / seen.received.max(1))
        // Server memory per subscriber: connected (before any message), and after the
        // run (buffers the deliveries left behind).
        .set(
            "kib_per_conn_open",
            per_conn(rss_open.saturating_sub(rss_before), opts.subs),
        )
        .set(
            "kib_per_conn_after",
            per_conn(rss_after.saturating_sub(rss_before), opts.subs),
        )
        .set("lost", expected.saturating_sub(seen.unique))
        .set("dup", seen.duplicates)
        .set("ooo", seen.out_of_order)
        .set("settle_ms", settled.as_millis() as u64);
    Ok(row)
}

/// The senders' own runtime, one thread: a sender's wait for its HTTP answer (or the
/// pace of its ticker) is not queued behind the subscriber tasks that a burst of
/// deliveries wakes on the load generator's main runtime. Senders and readers are
/// different people on different machines; sharing one scheduler made each HTTP send
/// wait for the readers' backlog (7.4–7.6 ms a send against 2.2 in the server at 1k flat
/// out), which bounds a closed loop whose senders wait for an answer (Chorus's HTTP
/// API) and not one whose senders only write (the baseline's socket).
struct SenderRuntime(Option<tokio::runtime::Runtime>);

impl SenderRuntime {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-senders")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(runtime) => runtime.spawn(task),
            None => tokio::spawn(task),
        }
    }
}

impl Drop for SenderRuntime {
    /// A runtime may not be dropped (which waits for its thread) from async code.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// KiB per connection, two decimals.
fn per_conn(kib: u64, conns: usize) -> f64 {
    (kib as f64 / conns.max(1) as f64 * 100.0).round() / 100.0
}

/// Size of a Chorus `message.created` frame carrying a benchmark payload, as `fanout`
/// reports it (`frame_bytes`): 324 bytes since the message grew `receipts`, `kind`,
/// `state` and the streaming fields (270 before). The baseline's frames are made that
/// size ([`baseline_frame`]), so both servers move frames of the same size;
/// `tests/cli.rs::bench` fails when the two drift apart.
const BASELINE_FRAME_BYTES: usize = 324;

/// What the baseline is sent (and so sends) for a fanout `payload`: a frame shaped as
/// Chorus's `message.created` event — the same size ([`BASELINE_FRAME_BYTES`]) and the
/// payload as far in (~140 bytes) — so that the load generator's work per frame (its
/// search for the payload above all) is the same for both servers.
fn baseline_frame(payload: &str) -> String {
    let mut frame = format!(
        r#"{{"op":"event","scope":"channel:1","offset":1,"type":"message.created","wake":true,"data":{{"id":1,"channel_id":1,"author_id":2,"text":"{payload}""#
    );
    while frame.len() + 2 < BASELINE_FRAME_BYTES {
        frame.push(' ');
    }
    frame.push_str("}}");
    frame
}

/// Where a fanout message is sent: Chorus's HTTP API (persisted) or the baseline's socket.
enum Sender {
    Http(load::Poster),
    Ws {
        sink: futures_util::stream::SplitSink<Ws, Message>,
    },
}

impl Sender {
    fn ws(ws: Ws) -> Self {
        let (sink, mut stream) = ws.split();
        // The baseline echoes to the sender too: keep reading so it is never slow.
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        Self::Ws { sink }
    }

    async fn send(&mut self, text: String) -> anyhow::Result<()> {
        match self {
            Self::Http(poster) => poster.post(&text).await,
            Self::Ws { sink } => Ok(sink.send(Message::text(baseline_frame(&text))).await?),
        }
    }
}

/// Server memory per idle, authenticated, subscribed connection.
pub async fn idle(target: &Target, conns: usize, conns_per_user: usize) -> anyhow::Result<Row> {
    let setup = room_for(target, conns, 1, conns_per_user).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.rss_kib()?;
    let open = open_many(
        target,
        setup.as_ref().map(|(_, r)| r),
        conns,
        CONNECT_CONCURRENCY,
        "idle connections",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = target.rss_kib()?;
    let mut row = Row::new("idle", target.name());
    row.set("conns", conns)
        .set("rss_before_kib", before)
        .set("rss_after_kib", after)
        .set(
            "kib_per_conn",
            ((after.saturating_sub(before)) as f64 / conns as f64 * 100.0).round() / 100.0,
        );
    drop(open);
    Ok(row)
}

/// Time for `conns` clients to connect, authenticate and receive `hello`,
/// `concurrency` at a time; each connection's time, and the symptoms of a full listen
/// queue (SYNs dropped and retried: a connection then waits a second or more).
pub async fn connect(
    target: &Target,
    conns: usize,
    concurrency: usize,
    conns_per_user: usize,
    perf_out: Option<&std::path::Path>,
) -> anyhow::Result<Row> {
    let setup = room_for(target, conns, 1, conns_per_user).await?;
    let profile = match (perf_out, target.pid()) {
        (Some(out), Some(pid)) => Some(crate::target::Profile::start(pid, out).await?),
        _ => None,
    };
    let kernel_before = crate::target::tcp_ext().unwrap_or_default();
    let cpu_before = target.cpu_time()?;
    let opened = open_many(
        target,
        setup.as_ref().map(|(_, r)| r),
        conns,
        concurrency,
        "connecting",
    )
    .await?;
    let cpu = target.cpu_time()?.saturating_sub(cpu_before);
    let kernel = crate::target::tcp_ext().unwrap_or_default();
    if let Some(profile) = profile {
        profile.stop().await;
    }
    let grew = |key: &str| {
        kernel
            .get(key)
            .unwrap_or(&0)
            .saturating_sub(*kernel_before.get(key).unwrap_or(&0))
    };
    let (took, each) = (opened.took, &opened.each);
    let mut row = Row::new("connect", target.kind.name());
    row.set("conns", conns)
        .set(
            "users",
            setup.as_ref().map_or(0, |(_, r)| r.reader_tokens.len()),
        )
        .set("concurrency", concurrency)
        .set("seconds", (took.as_secs_f64() * 1000.0).round() / 1000.0)
        .set("conns_per_sec", (conns as f64 / took.as_secs_f64()).round())
        .set("p50_ms", ms(each, 0.50))
        .set("p99_ms", ms(each, 0.99))
        .set("max_ms", each.max() as f64 / 1000.0)
        .set(
            "over_1s",
            each.count_between(1_000_000, each.max().max(1_000_000)),
        )
        .set(
            "cpu_us_per_conn",
            (cpu.as_secs_f64() * 1e6 / conns.max(1) as f64).round(),
        )
        // Machine-wide counters: another program's connections count too.
        .set("listen_overflows", grew("ListenOverflows"))
        .set("listen_drops", grew("ListenDrops"))
        .set("syn_retrans", grew("TCPSynRetrans"));
    drop(opened);
    Ok(row)
}

/// Persisted HTTP message sends per second with `concurrency` senders.
pub async fn send(target: &Target, concurrency: usize, duration: Duration) -> anyhow::Result<Row> {
    let (_, room) = room_for(target, 1, concurrency, 1)
        .await?
        .context("the send scenario runs against Chorus only")?;
    let start = Instant::now();
    let deadline = start + duration;
    let lat = Arc::new(Latencies::new()?);
    let bar = bar(duration.as_secs(), "sending (s)");
    let posters = (0..concurrency)
        .map(|k| load::Poster::new(target, &room.sender_tokens[k], room.channel_id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tasks: Vec<_> = posters
        .into_iter()
        .enumerate()
        .map(|(k, mut poster)| {
            let lat = lat.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match poster.post(&load::payload(k, n, start)).await {
                        Ok(()) => n += 1,
                        Err(err) => {
                            if errors == 0 {
                                eprintln!("send error (first of its sender): {err:#}");
                            }
                            errors += 1;
                        }
                    }
                    lat.record(t.elapsed().as_micros() as u64);
                }
                (n, errors, poster.connects())
            })
        })
        .collect();
    let ticker = tokio::spawn({
        let bar = bar.clone();
        async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
            }
        }
    });
    let (mut sent, mut errors, mut connections) = (0, 0, 0);
    for t in tasks {
        let (n, e, c) = t.await.unwrap_or_default();
        sent += n;
        errors += e;
        connections += c;
    }
    let took = start.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let h = lat.merged();
    let mut row = Row::new("send", target.kind.name());
    row.set("concurrency", concurrency)
        .set("sent", sent)
        .set("errors", errors)
        // HTTP connections the senders opened: one each unless one failed.
        .set("connections", connections)
        .set("sends_per_sec", (sent as f64 / took.as_secs_f64()).round())
        .set("p50_ms", ms(&h, 0.50))
        .set("p99_ms", ms(&h, 0.99))
        .set("max_ms", h.max() as f64 / 1000.0);
    Ok(row)
}

/// A client that missed `missed` events reconnects and subscribes with `since`:
/// time until it has all of them.
pub async fn resume(target: &Target, missed: u64, rounds: usize) -> anyhow::Result<Row> {
    let (api, room) = room_for(target, 1, 1, 1)
        .await?
        .context("the resume scenario runs against Chorus only")?;
    let token = room.reader_tokens[0].clone();
    let scope = format!("channel:{}", room.channel_id);
    let start = Instant::now();
    let mut times = Vec::new();
    let mut recovered_all = true;
    let mut seq = 0u64;
    for round in 0..rounds {
        // Learn the current offset from one live event, then go away.
        let mut ws = load::connect(target, Some(&token), round).await?;
        api.send(
            &room.sender_tokens[0],
            room.channel_id,
            &load::payload(0, seq, start),
        )
        .await?;
        seq += 1;
        let offset = loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                anyhow::bail!("connection ended before the probe event");
            };
            let v: serde_json::Value = serde_json::from_str(t.as_str())?;
            if v["type"] == "message.created" {
                break v["offset"].as_u64().context("offset")?;
            }
        };
        drop(ws);
        for _ in 0..missed {
            api.send(
                &room.sender_tokens[0],
                room.channel_id,
                &load::payload(0, seq, start),
            )
            .await?;
            seq += 1;
        }
        let mut ws = load::connect(target, Some(&token), round).await?;
        let t = Instant::now();
        let frame = json!({"op":"subscribe","id":1,"scope":scope,"since":offset}).to_string();
        ws.send(Message::text(frame)).await?;
        let mut got = 0;
        while got < missed {
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                anyhow::bail!("connection ended during replay");
            };
            if text.contains("\"recovered\":false") {
                recovered_all = false;
            }
            if text.contains("#B#") {
                got += 1;
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let mut row = Row::new("resume", target.kind.name());
    row.set("missed", missed)
        .set("rounds", rounds)
        .set("median_ms", times[times.len() / 2])
        .set("max_ms", times.last().copied().unwrap_or_default())
        .set("recovered", recovered_all);
    Ok(row)
}

/// How long one round of `resume --after-restart` may take to recover, at most.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A client that saw a channel up to some offset goes away; `missed` messages are sent
/// and the server process restarts (SIGTERM, then started again on the same data). The
/// client reconnects with `?resume=1` and resumes with its positions: the time from
/// the restarted server listening until it has all of them, and whether the server
/// replayed them itself (`recovered: true`) or the client had to catch up over HTTP,
/// as the SDKs do: the scope's events (`GET /api/v1/scopes/{scope}/events`, paged),
/// or, on a server without them (404/410), the channel's messages.
pub async fn resume_after_restart(
    target: &mut Target,
    missed: u64,
    rounds: usize,
) -> anyhow::Result<Row> {
    let (api, room) = room_for(target, 1, 1, 1)
        .await?
        .context("the resume scenario runs against Chorus only")?;
    let token = room.reader_tokens[0].clone();
    let channel = room.channel_id;
    let scope = format!("channel:{channel}");
    let start = Instant::now();
    let (mut times, mut restarts) = (Vec::new(), Vec::new());
    let mut recovered_all = true;
    let mut via = Vec::new();
    let mut seq = 0u64;
    for round in 0..rounds {
        // Learn the positions (hello's, and the channel's from one live event), go away.
        let (mut ws, hello) = load::connect_hello(target, Some(&token), round, false).await?;
        let hello: serde_json::Value = serde_json::from_str(hello.as_deref().unwrap_or("{}"))?;
        let mut positions = hello["offsets"].clone();
        api.send(
            &room.sender_tokens[0],
            channel,
            &load::payload(0, seq, start),
        )
        .await?;
        seq += 1;
        let (offset, last_id) = loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                anyhow::bail!("connection ended before the probe event");
            };
            let v: serde_json::Value = serde_json::from_str(t.as_str())?;
            if v["type"] == "message.created" && v["scope"] == scope.as_str() {
                let offset = v["offset"].as_u64().context("offset")?;
                break (offset, v["data"]["id"].as_i64().context("message id")?);
            }
        };
        positions[&scope] = json!(offset);
        drop(ws);
        let sender = &room.sender_tokens[0];
        let sends: Vec<anyhow::Result<()>> = stream::iter(seq..seq + missed)
            .map(|n| {
                let text = load::payload(0, n, start);
                let api = &api;
                async move { api.send(sender, channel, &text).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        sends.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        seq += missed;

        let t = Instant::now();
        target.restart().await?;
        restarts.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let recover = async {
            let (mut ws, _) = load::connect_hello(target, Some(&token), round, true).await?;
            let frame = json!({"op": "resume", "id": 1, "positions": positions});
            ws.send(Message::text(frame.to_string())).await?;
            let mut got = 0;
            let recovered = loop {
                let Some(Ok(Message::Text(text))) = ws.next().await else {
                    anyhow::bail!("connection ended during the resume");
                };
                if text.contains("#B#") {
                    got += 1;
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(text.as_str())?;
                if v["op"] == "ack" && v["id"] == 1 {
                    break v["scopes"][&scope]["recovered"] == true;
                }
                if v["op"] == "error" && v["id"] == 1 {
                    anyhow::bail!("resume refused: {v}");
                }
            };
            if recovered {
                while got < missed {
                    let Some(Ok(Message::Text(text))) = ws.next().await else {
                        anyhow::bail!("connection ended during the replay");
                    };
                    if text.contains("#B#") {
                        got += 1;
                    }
                }
                return Ok((true, "resume"));
            }
            let (got, how) = catch_up_over_http(&api, &token, &scope, offset, last_id).await?;
            anyhow::ensure!(got >= missed, "caught up {got} of {missed} ({how})");
            Ok((false, how))
        };
        let (recovered, how) = tokio::time::timeout(RECOVERY_TIMEOUT, recover)
            .await
            .with_context(|| format!("not recovered within {RECOVERY_TIMEOUT:?}"))??;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        recovered_all &= recovered;
        if !via.contains(&how) {
            via.push(how);
        }
    }
    times.sort_by(f64::total_cmp);
    restarts.sort_by(f64::total_cmp);
    let mut row = Row::new("resume_after_restart", target.kind.name());
    row.set("missed", missed)
        .set("rounds", rounds)
        .set("median_ms", (times[times.len() / 2] * 10.0).round() / 10.0)
        .set(
            "max_ms",
            (times.last().copied().unwrap_or_default() * 10.0).round() / 10.0,
        )
        .set("restart_ms", (restarts[restarts.len() / 2]).round())
        .set("recovered", recovered_all)
        .set("via", via.join("+"));
    Ok(row)
}

/// The catch-up of a scope the server did not recover: its events after `offset`, page
/// by page; on a server without them (404) or past retention (410), the channel's
/// messages after `last_id`. Returns how many benchmark messages came, and the route.
async fn catch_up_over_http(
    api: &Api,
    token: &str,
    scope: &str,
    mut offset: u64,
    mut last_id: i64,
) -> anyhow::Result<(u64, &'static str)> {
    let count = |v: &serde_json::Value| v.to_string().matches("#B#").count() as u64;
    let encoded = scope.replace(':', "%3A");
    let mut got = 0;
    loop {
        let path = format!("/api/v1/scopes/{encoded}/events?after={offset}&limit=1000");
        let (status, page) = api.get(token, &path).await?;
        match status {
            reqwest::StatusCode::OK => {}
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE if got == 0 => break,
            status => anyhow::bail!("{path}: {status} {page}"),
        }
        got += count(&page["events"]);
        let next = page["next"].as_u64().context("next")?;
        if page["more"] != true || next <= offset {
            return Ok((got, "events"));
        }
        offset = next;
    }
    let channel = scope.trim_start_matches("channel:");
    loop {
        let path = format!("/api/v1/channels/{channel}/messages?after={last_id}&limit=200");
        let page = api.call(token, reqwest::Method::GET, &path, None).await?;
        let messages = page.as_array().context("a page of messages")?;
        got += count(&page);
        match messages.last().and_then(|m| m["id"].as_i64()) {
            Some(id) if messages.len() == 200 => last_id = id,
            _ => return Ok((got, "messages")),
        }
    }
}
