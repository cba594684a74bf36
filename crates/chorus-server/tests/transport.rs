//! The WebSocket transport itself: the server frames and writes its own frames (see
//! `chorus_realtime::socket`), so these check what the library used to do for it —
//! answering a client's ping and close, reading what arrived with the upgrade request,
//! and finishing a write the socket could only take in part.

mod common;

use common::{Frame, RawFrame, TestServer, WAIT, read_frame};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A client's WebSocket ping gets its pong (same payload), and a client that closes
/// gets the close reply before the connection ends.
#[tokio::test]
async fn a_client_ping_gets_its_pong_and_a_close_gets_a_close() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let mut ws = s.connect(&w.alice.token).await.into_inner();

    ws.send(Message::Ping(b"probe-1".to_vec().into()))
        .await
        .expect("ping sent");
    let pong = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(payload))) => return payload,
                Some(Ok(_)) => {}
                other => panic!("no pong: {other:?}"),
            }
        }
    })
    .await
    .expect("a pong within the wait limit");
    assert_eq!(&pong[..], b"probe-1");

    // The connection still works after the library-written pong.
    ws.send(Message::Text(
        json!({"op": "ping", "id": 7}).to_string().into(),
    ))
    .await
    .expect("sent");
    match read_frame(&mut ws, WAIT).await {
        Some(Frame::Json(v)) => assert_eq!(v, json!({"op": "ack", "id": 7})),
        other => panic!("expected the ack, got {other:?}"),
    }

    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .expect("close sent");
    match read_frame(&mut ws, WAIT).await {
        Some(Frame::Close(code)) => assert_eq!(code, Some(1000), "the reply echoes the code"),
        other => panic!("expected the close reply, got {other:?}"),
    }
}

/// A first frame that reaches the server in the same packet as the upgrade request (so
/// the HTTP server has already read it) is handled like any other.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_read() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let mut raw = s
        .raw_ws_then(&w.alice.token, Some(r#"{"op":"ping","id":42}"#))
        .await;
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match raw.next().await {
            Some(RawFrame::Text(text)) => {
                let v: serde_json::Value = serde_json::from_str(&text).expect("json");
                // Presence is announced around a first connection; not this test's concern.
                if v["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("presence."))
                {
                    continue;
                }
                texts.push(v);
            }
            Some(RawFrame::Ping) => {}
            other => panic!("unexpected frame: {other:?}"),
        }
    }
    assert_eq!(texts[0]["op"], "hello", "{texts:?}");
    assert_eq!(texts[1], json!({"op": "ack", "id": 42}));
}

/// A client that stops reading long enough for its socket to fill, but not long enough
/// to be evicted, gets every event in order once it reads again: the part of a write
/// the socket did not take is finished by the connection's own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_socket_took_in_part_is_finished_in_order() {
    const MESSAGES: usize = 400;
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 0;
        c.queue_capacity = 4 * MESSAGES;
    })
    .await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "bulk", "public", &[&w.bob])
        .await;
    let mut bob = s.connect(&w.bob.token).await;

    // 400 × 12 KiB is more than loopback's socket buffers hold: bob, not reading, makes
    // the writers hand his connection over with a write half done.
    let filler = "y".repeat(12 * 1024);
    let mut sent = Vec::new();
    for i in 0..MESSAGES {
        let message = s.send(&w.alice, ch, &format!("{i} {filler}")).await;
        sent.push(message["id"].as_i64().expect("id"));
    }
    let metrics = s.http.get(s.url("/metrics")).send().await.expect("metrics");
    let metrics = metrics.text().await.expect("metrics body");
    let handovers: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chorus_socket_handovers_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the handover counter is exported");
    assert!(
        handovers >= 1,
        "the socket never filled, so this test proves nothing"
    );

    let mut got = Vec::new();
    while got.len() < MESSAGES {
        let event = bob.expect_event("message.created").await;
        got.push(event["data"]["id"].as_i64().expect("id"));
    }
    assert_eq!(got, sent, "every message, once, in order");
    // The ack goes through the same queue and socket: nothing more came before it.
    let after = bob.barrier().await;
    assert!(after.is_empty(), "frames after the last message: {after:?}");
}

/// The listener's queue is sized for a reconnect storm: 600 clients connecting at once
/// to a server that has not accepted any of them yet all complete their handshake
/// before the first SYN retry (tokio's default backlog of 128 leaves most of them to
/// SYN retries, a second or more later).
#[tokio::test]
async fn the_listen_backlog_holds_a_connect_storm() {
    let addr = "127.0.0.1:0".parse().expect("an address");
    let listener = chorus_server::bind(addr, 1024).expect("listening");
    let addr = listener.local_addr().expect("its address");
    let storm: Vec<_> = (0..600)
        .map(|_| {
            tokio::spawn(async move {
                tokio::time::timeout(
                    std::time::Duration::from_millis(900),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
            })
        })
        .collect();
    let mut connected = Vec::new();
    for task in storm {
        let stream = task
            .await
            .expect("the task ran")
            .expect("connected before a SYN retry")
            .expect("connected");
        connected.push(stream);
    }
    assert_eq!(connected.len(), 600);
    drop(listener);
}
