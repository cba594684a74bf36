//! Delivery guarantees (SPEC §2.3): resume after a cut, the retention window and the
//! HTTP catch-up, slow consumers, and every limit.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::{ADMIN_TOKEN, Frame, TestServer, WsClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Sends `texts` to `channel` one after another as `token`; returns the message ids.
async fn send_all(
    http: reqwest::Client,
    url: String,
    token: String,
    texts: Vec<String>,
) -> Vec<i64> {
    let mut ids = Vec::with_capacity(texts.len());
    for text in texts {
        let resp = http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({ "text": text }))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body: Value = resp.json().await.expect("json");
        ids.push(body["id"].as_i64().expect("id"));
    }
    ids
}

/// What one client has seen of several channels: message ids per channel, in order,
/// and the last offset per scope.
#[derive(Default)]
struct Seen {
    ids: BTreeMap<i64, Vec<i64>>,
    positions: BTreeMap<String, u64>,
}

impl Seen {
    fn record(&mut self, frame: &Value) {
        if frame["op"] != "event" {
            return;
        }
        let scope = frame["scope"].as_str().unwrap_or_default().to_owned();
        if let Some(offset) = frame["offset"].as_u64() {
            let last = self.positions.entry(scope).or_default();
            assert!(
                offset > *last,
                "offsets must increase: {offset} after {last}"
            );
            *last = offset;
        }
        if frame["type"] == "message.created" {
            let m = &frame["data"];
            self.ids
                .entry(m["channel_id"].as_i64().unwrap())
                .or_default()
                .push(m["id"].as_i64().unwrap());
        }
    }

    fn total(&self) -> usize {
        self.ids.values().map(Vec::len).sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_in_the_middle_of_a_burst_is_resumed_exactly_once_in_order() {
    const TOTAL: usize = 5_000;
    const CHANNELS: usize = 4;
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 0;
        c.retention_events = TOTAL;
        c.queue_capacity = 8_192;
    })
    .await;
    let w = s.world().await;
    let mut channels = Vec::new();
    for i in 0..CHANNELS {
        channels.push(
            s.create_channel(&w.alice, w.ws, &format!("burst-{i}"), "public", &[&w.bob])
                .await,
        );
    }
    let mut bob = s.connect(&w.bob.token).await;
    let mut seen = Seen::default();
    // Positions from hello: a scope with no event before the cut still resumes right.
    for (scope, offset) in bob.hello["offsets"].as_object().expect("hello offsets") {
        seen.positions
            .insert(scope.clone(), offset.as_u64().unwrap());
    }

    let senders: Vec<_> = channels
        .iter()
        .map(|&ch| {
            let texts = (0..TOTAL / CHANNELS)
                .map(|i| format!("m{ch}-{i}"))
                .collect();
            tokio::spawn(send_all(
                s.http.clone(),
                s.url(&format!("/api/v1/channels/{ch}/messages")),
                w.alice.token.clone(),
                texts,
            ))
        })
        .collect();

    // Read part of the burst, then cut the connection without a goodbye.
    while seen.total() < TOTAL / 3 {
        let frame = bob.recv_json().await;
        seen.record(&frame);
    }
    drop(bob);

    // `?resume=1`: nothing is delivered before the resume says where to continue.
    let mut bob = s.connect_resuming(&w.bob.token).await;
    let positions: BTreeMap<String, u64> = seen
        .positions
        .iter()
        .filter(|(scope, _)| scope.starts_with("channel:"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(positions.len(), CHANNELS, "a position for every channel");
    let reply = bob
        .request(json!({"op": "resume", "positions": positions}))
        .await;
    assert_eq!(reply["op"], "ack", "{reply}");
    for (scope, result) in reply["scopes"].as_object().unwrap() {
        assert_eq!(result["recovered"], true, "{scope}: {result}");
    }
    while seen.total() < TOTAL {
        let frame = bob.recv_json().await;
        seen.record(&frame);
    }

    let mut sent: HashMap<i64, Vec<i64>> = HashMap::new();
    for (ch, task) in channels.iter().zip(senders) {
        sent.insert(*ch, task.await.unwrap());
    }
    for ch in &channels {
        assert_eq!(
            seen.ids.get(ch),
            sent.get(ch),
            "channel {ch}: every message exactly once, in order"
        );
    }
    // Nothing more arrives: no duplicate was still on its way.
    let late = bob.barrier().await;
    assert!(
        late.iter().all(|f| f["type"] != "message.created"),
        "{late:?}"
    );
}

#[tokio::test]
async fn outside_the_retention_window_resume_says_so_and_http_fills_the_gap() {
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 0;
        c.retention_events = 10;
    })
    .await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "window", "public", &[&w.bob])
        .await;
    let mut bob = s.connect(&w.bob.token).await;
    let first = s.send(&w.alice, ch, "before").await;
    let event = bob.expect_event("message.created").await;
    let offset = event["offset"].as_u64().unwrap();
    let last_id = first["id"].as_i64().unwrap();
    drop(bob);

    let mut missed = Vec::new();
    for i in 0..30 {
        missed.push(s.send(&w.alice, ch, &format!("while away {i}")).await["id"].clone());
    }

    let mut bob = s.connect(&w.bob.token).await;
    let scope = format!("channel:{ch}");
    let reply = bob
        .request(json!({"op": "resume", "positions": {scope.clone(): offset}}))
        .await;
    assert_eq!(reply["scopes"][&scope]["recovered"], false, "{reply}");
    // The cold path: history after the last message seen.
    let history = s
        .history(&w.bob, ch, &format!("after={last_id}&limit=200"))
        .await;
    let got: Vec<Value> = history.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(
        got, missed,
        "HTTP catch-up returns every missed message in order"
    );
    // And the connection is live again.
    let next = s.send(&w.alice, ch, "back").await;
    let event = bob.expect_event("message.created").await;
    assert_eq!(event["data"], next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_evicted_and_others_miss_nothing() {
    const MESSAGES: usize = 600;
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 0;
        c.queue_capacity = 32;
    })
    .await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "firehose", "public", &[&w.bob, &w.carol])
        .await;
    // Bob completes the handshake and never reads a byte again.
    let _stalled = s.raw_ws(&w.bob.token).await;
    let mut carol = s.connect(&w.carol.token).await;

    // Large messages fill the kernel's socket buffers quickly.
    let filler = "x".repeat(12 * 1024);
    let texts: Vec<String> = (0..MESSAGES).map(|i| format!("{i} {filler}")).collect();
    let sender = tokio::spawn(send_all(
        s.http.clone(),
        s.url(&format!("/api/v1/channels/{ch}/messages")),
        w.alice.token.clone(),
        texts,
    ));
    let mut got = Vec::new();
    while got.len() < MESSAGES {
        let frame = carol.recv_json().await;
        if frame["type"] == "message.created" {
            got.push(frame["data"]["id"].as_i64().unwrap());
        }
    }
    let sent = sender.await.unwrap();
    assert_eq!(got, sent, "the reader got every message, in order");

    let stats = s.get("/api/v1/realtime/stats", ADMIN_TOKEN).await.body;
    assert_eq!(stats["metrics"]["slow_consumer_evictions"], 1, "{stats}");
    // The evicted connection is gone from the registry; carol's is intact.
    for _ in 0..100 {
        let stats = s.get("/api/v1/realtime/stats", ADMIN_TOKEN).await.body;
        if stats["metrics"]["connections_current"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = s.get("/api/v1/realtime/stats", ADMIN_TOKEN).await.body;
    assert_eq!(stats["metrics"]["connections_current"], 1, "{stats}");
    s.check_invariants();
}

#[tokio::test]
async fn typing_is_limited_per_user_across_connections() {
    let s = TestServer::start_with(|c| {
        c.typing_per_minute = 5;
    })
    .await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "typing", "public", &[&w.bob])
        .await;
    let mut tab1 = s.connect(&w.alice.token).await;
    let mut tab2 = s.connect(&w.alice.token).await;
    for _ in 0..5 {
        let reply = tab1
            .request(json!({"op": "typing", "channel_id": ch}))
            .await;
        assert_eq!(reply["op"], "ack", "{reply}");
    }
    // The limit is the user's, not the connection's.
    let reply = tab2
        .request(json!({"op": "typing", "channel_id": ch}))
        .await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    // The connection keeps working.
    tab2.ping().await;
    let mut bob = s.connect(&w.bob.token).await;
    bob.ping().await;
}

#[tokio::test]
async fn the_http_rate_limit_is_per_token_with_retry_after() {
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 2;
        c.http_burst = 5;
    })
    .await;
    let alice = s.create_user("alice").await;
    let bob = s.create_user("bob").await;
    let mut limited = None;
    for _ in 0..20 {
        let resp = s.get("/api/v1/me", &alice.token).await;
        if resp.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status, StatusCode::OK);
    }
    let resp = limited.expect("the limit is reached within 20 requests");
    assert_eq!(resp.body["error"]["code"], "rate_limited", "{}", resp.text);
    let retry: u64 = resp.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After is whole seconds, at least 1");
    // Another token is unaffected, and so is a WebSocket that is already open.
    assert_eq!(s.get("/api/v1/me", &bob.token).await.status, StatusCode::OK);
    let stats = s.get("/metrics", &bob.token).await;
    assert!(
        stats.text.contains("chorus_http_rate_limited_total 1"),
        "{}",
        stats.text
    );
}

#[tokio::test]
async fn hello_offsets_are_resume_positions() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "quiet", "public", &[&w.bob])
        .await;
    s.send(&w.alice, ch, "old news").await;
    let bob = s.connect(&w.bob.token).await;
    let scope = format!("channel:{ch}");
    let offset = bob.hello["offsets"][&scope]
        .as_u64()
        .expect("offset in hello");
    let scopes: HashSet<&str> = bob.hello["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(scopes.contains(scope.as_str()));
    drop(bob);
    // Sent while bob is away, and bob never saw an event of this channel.
    let missed = s.send(&w.alice, ch, "while away").await;
    let mut bob = s.connect(&w.bob.token).await;
    let reply = bob
        .request(json!({"op": "subscribe", "scope": scope, "since": offset}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let mut frames = vec![];
    loop {
        match bob.recv_frame().await {
            Frame::Json(v) if v["type"] == "message.created" => {
                frames.push(v);
                break;
            }
            Frame::Json(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(frames[0]["data"], missed);
    let _: WsClient = bob;
}

/// A resume continues a channel the client does not know about (it left it, and was
/// back in it while away) from the join, as if it had stayed connected: the user scope's
/// replay says where the join stands, and everything after it is owed. Found by the
/// kill/restart checker (seed 439044308): the channel continued from the `hello` offset,
/// past a message sent between the join and the reconnect.
#[tokio::test]
async fn a_channel_joined_while_away_is_resumed_from_the_join() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "comings", "public", &[&w.bob])
        .await;
    let user_scope = format!("user:{}", w.bob.id);
    let scope = format!("channel:{ch}");

    let mut bob = s.connect(&w.bob.token).await;
    s.post(
        &format!("/api/v1/channels/{ch}/leave"),
        &w.bob.token,
        json!({}),
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    let left = bob.expect_event("channel.left").await;
    let position = left["offset"].as_u64().unwrap();
    drop(bob);

    // Away: back in the channel, and a message there.
    s.post(
        &format!("/api/v1/channels/{ch}/join"),
        &w.bob.token,
        json!({}),
    )
    .await
    .expect_status(StatusCode::OK);
    let missed = s.send(&w.alice, ch, "while away").await;

    let mut bob = s.connect_resuming(&w.bob.token).await;
    assert!(
        bob.hello["offsets"][&scope].as_u64().is_some(),
        "the channel is subscribed on connect: {}",
        bob.hello
    );
    let reply = bob
        .request(json!({"op": "resume", "positions": {&user_scope: position}}))
        .await;
    assert_eq!(reply["op"], "ack", "{reply}");
    assert_eq!(reply["scopes"][&user_scope]["recovered"], true, "{reply}");
    let frames = bob.barrier().await;
    let types: Vec<String> = frames
        .iter()
        .map(|f| format!("{} {}", f["scope"], f["type"]))
        .collect();
    let created: Vec<&Value> = frames
        .iter()
        .filter(|f| f["scope"] == scope.as_str() && f["type"] == "message.created")
        .map(|f| &f["data"])
        .collect();
    assert_eq!(created, vec![&missed], "owed since the join: {types:?}");
}
