//! Subscriptions cost memory only while they exist: one client subscribing to many
//! distinct `topic:` scopes and dropping them again (the way an attacker would grow a
//! server that keeps a log per scope name) leaves the real binary's resident memory
//! where it was. Measured from `/proc/<pid>/status` of the `chorus serve` child.
//!
//! `CHORUS_SCOPE_MEMORY_TOPICS` sets the number of distinct topics (default 160,000,
//! the figure of the report that found the leak).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{call, free_addr};

const ADMIN: &str = "scope-memory-admin";
/// Subscriptions per round: the per-connection cap.
const ROUND: usize = 1_000;

async fn start(addr: SocketAddr, data: &std::path::Path) -> Child {
    let cap = ROUND.to_string();
    let env = [
        ("CHORUS_INBOUND_PER_SEC", "1000000"),
        ("CHORUS_INBOUND_BURST", "1000000"),
        ("CHORUS_MAX_SUBSCRIPTIONS", cap.as_str()),
    ];
    common::serve(addr, data, ADMIN, &env).await
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `frames` (each with an integer `id`), then reads until every one is answered;
/// panics on any answer that is not an ack.
async fn pipeline(ws: &mut Ws, frames: Vec<Value>) {
    let n = frames.len();
    for frame in frames {
        ws.feed(Message::text(frame.to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut answered = 0;
    while answered < n {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("an answer in time")
            .expect("open")
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        if v["id"].is_null() {
            continue; // an event, not an answer
        }
        assert_eq!(v["op"], "ack", "{v}");
        answered += 1;
    }
}

/// Subscribes to `ROUND - 1` new topics (the user scope is the last one the cap
/// allows) and drops them again.
async fn round(ws: &mut Ws, r: usize) {
    let names: Vec<String> = (1..ROUND).map(|i| format!("topic:r{r}.t{i}")).collect();
    let subscribe = names
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"op": "subscribe", "id": i, "scope": s}))
        .collect();
    pipeline(ws, subscribe).await;
    let unsubscribe = names
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"op": "unsubscribe", "id": i, "scope": s}))
        .collect();
    pipeline(ws, unsubscribe).await;
}

#[tokio::test]
async fn scopes_subscribed_and_dropped_give_their_memory_back() {
    let topics: usize = std::env::var("CHORUS_SCOPE_MEMORY_TOPICS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160_000);
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let server = start(addr, data.path()).await;
    let pid = server.id().unwrap();
    let user = call(addr, ADMIN, "/api/v1/users", json!({"name": "mallory"})).await;
    let token = user["token"].as_str().unwrap();
    let url = format!("ws://{addr}/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();

    // Warm up: the runtime, pools and caches reach their working size first.
    for r in 0..3 {
        round(&mut ws, r).await;
    }
    let before = rss_kib(pid);
    let rounds = topics / ROUND;
    let mut peak = before;
    for r in 3..3 + rounds {
        round(&mut ws, r).await;
        peak = peak.max(rss_kib(pid));
    }
    let after = rss_kib(pid);
    eprintln!(
        "scope memory: {topics} topics subscribed and dropped: RSS {before} KiB before, \
         {peak} KiB peak, {after} KiB after"
    );
    assert!(
        after <= before + 4 * 1024,
        "resident memory grew by {} KiB over {topics} distinct topics (before {before} KiB, \
         after {after} KiB)",
        after.saturating_sub(before)
    );
}
