//! `stream`: streaming messages under load (issue 19). N writers each open a streaming
//! message in one channel and append to it R times a second over their own socket (op
//! `append`); M subscribers read the channel. Measured: the `message.deltas` frames each
//! subscriber gets per second (the roll-up window coalesces appends, and one frame
//! carries the deltas of all the channel's streams), the latency from each append to
//! its arrival in a delta, the server's CPU, and whether any appended
//! text was lost or duplicated (every append's payload is accounted, per stream, at
//! every subscriber). Chorus only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::StreamExt;
use futures_util::{FutureExt, SinkExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::load::{self, Api, Latencies, Ws, tokio_util_like::Stop, tokio_util_like::stop_pair};
use crate::report::Row;
use crate::scenarios::{CONNECT_CONCURRENCY, ms, open_many};
use crate::target::{ADMIN_TOKEN, Target};

pub struct StreamOpts {
    pub streams: usize,
    /// Appends per second per stream.
    pub rate: f64,
    pub subs: usize,
    pub duration: Duration,
    /// The channel's roll-up window; `None`: the server's (40 ms by default).
    pub rollup_ms: Option<u64>,
}

/// Bytes a stream may hold (the server's default `max_message_bytes`): a longer run
/// would be refused part way.
const MAX_TEXT: f64 = 16.0 * 1024.0;
/// Bytes of one append's payload, at most (`#B#k:seq:micros#`).
const PAYLOAD: f64 = 24.0;

/// What one subscriber saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    frames: u64,
    appends: u64,
    /// Appends skipped over (a later one of the stream came first).
    lost: u64,
    duplicates: u64,
    /// The server closed the connection before the end (a slow consumer).
    closed: bool,
}

/// Shared progress of the subscribers, for the drain.
#[derive(Default)]
struct Progress {
    appends: AtomicU64,
    /// Micros since start of the latest delta.
    last: AtomicU64,
}

pub async fn stream(target: &Target, opts: &StreamOpts) -> anyhow::Result<Row> {
    let per_stream = opts.rate * opts.duration.as_secs_f64();
    if per_stream * PAYLOAD > MAX_TEXT {
        bail!(
            "{per_stream:.0} appends per stream would pass the server's 16 KiB per message: \
             lower --rate or --seconds"
        );
    }
    let api = Api::new(target);
    let room = load::setup_room(&api, opts.subs, opts.streams, 1).await?;
    let channel = room.channel_id;
    if let Some(window) = opts.rollup_ms {
        api.call(
            ADMIN_TOKEN,
            reqwest::Method::PATCH,
            &format!("/api/v1/channels/{channel}"),
            Some(json!({ "stream_rollup_ms": window })),
        )
        .await?;
    }
    let subs = open_many(
        target,
        Some(&room),
        opts.subs,
        CONNECT_CONCURRENCY,
        "subscribers",
    )
    .await?
    .conns;
    // Each writer: its streaming message, and a socket for the appends.
    let mut writers = Vec::with_capacity(opts.streams);
    for (k, token) in room.sender_tokens.iter().enumerate() {
        let opened = api
            .post(
                token,
                &format!("/api/v1/channels/{channel}/messages"),
                json!({ "text": "", "streaming": true }),
            )
            .await?;
        let id = opened["id"].as_i64().context("message id")?;
        let ws = load::connect(target, Some(token), 20_000 + k).await?;
        writers.push((id, token.clone(), ws));
    }

    let cpu_before = target.cpu_time()?;
    let start = Instant::now();
    let lat = Arc::new(Latencies::new()?);
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop) = stop_pair();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|ws| {
            tokio::spawn(subscriber(
                ws,
                opts.streams,
                start,
                lat.clone(),
                progress.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let deadline = start + opts.duration;
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let mut tasks = Vec::new();
    let mut ids = Vec::new();
    for (k, (id, token, ws)) in writers.into_iter().enumerate() {
        ids.push((id, token));
        let stop = stop.clone();
        let streams = opts.streams;
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut incoming) = ws.split();
            // The writer is a member too: it reads (and drops) the channel's events, and
            // counts the appends refused.
            let refused = tokio::spawn(async move {
                let mut refused = 0u64;
                loop {
                    tokio::select! {
                        msg = incoming.next() => match msg {
                            Some(Ok(Message::Text(t))) if t.contains("\"op\":\"error\"") => {
                                if refused == 0 {
                                    eprintln!("an append was refused: {t}");
                                }
                                refused += 1;
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                        () = stop.wait() => break,
                    }
                }
                refused
            });
            // Staggered, so the appends are spread evenly over each interval.
            let offset = interval.mul_f64(k as f64 / streams as f64);
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seq = 0u64;
            while Instant::now() < deadline {
                ticker.tick().await;
                let op = json!({
                    "op": "append",
                    "id": seq + 1,
                    "message_id": id,
                    "text": load::payload(k, seq, start),
                });
                if sink.send(Message::text(op.to_string())).await.is_err() {
                    break;
                }
                seq += 1;
            }
            (seq, sink, refused)
        }));
    }
    let mut sent = 0u64;
    let mut sinks = Vec::new();
    let mut refusals = Vec::new();
    for task in tasks {
        let (n, sink, refused) = task.await?;
        sent += n;
        sinks.push(sink);
        refusals.push(refused);
    }
    let send_end = start.elapsed();

    // Drain: until every append reached every subscriber, or nothing moves for 3 s
    // (the last roll-up goes out one window after the last append).
    let expected = sent * opts.subs as u64;
    let mut last = 0;
    let mut still = Instant::now();
    while progress.appends.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = progress.appends.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still = Instant::now();
        } else if still.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let cpu = target.cpu_time()?.saturating_sub(cpu_before);
    let elapsed = Duration::from_micros(progress.last.load(Ordering::Relaxed)).max(send_end);
    let _ = stop_tx.send(true);
    let mut seen = Seen::default();
    let mut closed = 0u64;
    for r in readers {
        let s = r.await.unwrap_or_default();
        seen.frames += s.frames;
        seen.appends += s.appends;
        seen.lost += s.lost;
        seen.duplicates += s.duplicates;
        closed += u64::from(s.closed);
    }
    let mut refused = 0u64;
    for r in refusals {
        refused += r.await.unwrap_or(0);
    }
    drop(sinks);
    // Ended, outside the measurement (the messages stay, complete).
    for (id, token) in &ids {
        let _ = api
            .post(token, &format!("/api/v1/messages/{id}/complete"), json!({}))
            .await;
    }

    let h = lat.merged();
    let secs = elapsed.as_secs_f64().max(0.001);
    let subs = opts.subs.max(1) as f64;
    let mut row = Row::new("stream", target.kind.name());
    row.set("streams", opts.streams)
        .set("appends_per_sec", opts.rate)
        .set("subs", opts.subs)
        .set(
            "rollup_ms",
            opts.rollup_ms
                .map_or_else(|| "server".to_owned(), |w| w.to_string()),
        )
        .set("appends", sent)
        .set("refused", refused)
        .set("delta_frames", seen.frames)
        .set(
            "frames_per_sec_per_sub",
            (seen.frames as f64 / subs / secs * 10.0).round() / 10.0,
        )
        .set(
            "appends_per_frame",
            (seen.appends as f64 / seen.frames.max(1) as f64 * 100.0).round() / 100.0,
        )
        .set("p50_ms", ms(&h, 0.50))
        .set("p99_ms", ms(&h, 0.99))
        .set("max_ms", h.max() as f64 / 1000.0)
        .set(
            "server_cpu_pct",
            (cpu.as_secs_f64() / secs * 1000.0).round() / 10.0,
        )
        // Gaps, and tails that never came, at every subscriber.
        .set("lost", expected.saturating_sub(seen.appends))
        .set("dup", seen.duplicates)
        .set("subs_closed", closed);
    Ok(row)
}

/// Reads one subscriber's frames until `stop`, accounting every append's payload in the
/// deltas: per stream they must come in order, each once.
async fn subscriber(
    mut ws: Ws,
    streams: usize,
    start: Instant,
    lat: Arc<Latencies>,
    progress: Arc<Progress>,
    stop: Stop,
) -> Seen {
    let mut seen = Seen::default();
    let mut next = vec![0u64; streams];
    // Added to the shared counters once per batch of ready frames, not per frame.
    let mut unflushed = 0u64;
    let mut latest = 0u64;
    loop {
        let msg = match ws.next().now_or_never() {
            Some(msg) => msg,
            None => {
                progress.appends.fetch_add(unflushed, Ordering::Relaxed);
                progress.last.fetch_max(latest, Ordering::Relaxed);
                unflushed = 0;
                tokio::select! {
                    msg = ws.next() => msg,
                    () = stop.wait() => break,
                }
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => {
                seen.closed = true;
                break;
            }
        };
        let now = start.elapsed().as_micros() as u64;
        let mut any = false;
        load::each_payload(text.as_str(), |k, seq, sent_at| {
            let Some(expected) = next.get_mut(k) else {
                return;
            };
            any = true;
            lat.record(now.saturating_sub(sent_at));
            if seq < *expected {
                seen.duplicates += 1;
                return;
            }
            seen.lost += seq - *expected;
            *expected = seq + 1;
            seen.appends += 1;
            unflushed += 1;
        });
        if any {
            seen.frames += 1;
            latest = now;
        }
    }
    progress.appends.fetch_add(unflushed, Ordering::Relaxed);
    progress.last.fetch_max(latest, Ordering::Relaxed);
    seen
}
