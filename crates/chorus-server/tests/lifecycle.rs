//! Connection and server lifecycle: heartbeats and dead peers, restarts that keep every
//! committed message, and graceful shutdown telling clients to reconnect.

#![allow(clippy::unwrap_used)]

mod common;

use common::{RawFrame, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_silent_peer_is_dropped_with_3002() {
    let s = TestServer::start_with(|c| c.heartbeat_ms = 200).await;
    let bob = s.create_user("bob").await;

    // Completes the upgrade, then reads without ever answering a ping.
    let mut raw = s.raw_ws(&bob.token).await;
    let hello = match raw.next().await {
        Some(RawFrame::Text(t)) => serde_json::from_str::<Value>(&t).unwrap(),
        other => panic!("expected hello, got {other:?}"),
    };
    assert_eq!(hello["op"], "hello");
    assert_eq!(hello["heartbeat_ms"], 200);
    let mut pings = 0;
    let code = loop {
        match raw.next().await {
            Some(RawFrame::Ping) => pings += 1,
            Some(RawFrame::Close(code)) => break code,
            None => break None,
            Some(other) => panic!("unexpected frame {other:?}"),
        }
    };
    assert!(pings >= 1, "the server never pinged");
    assert_eq!(
        code,
        Some(3002),
        "closed without the heartbeat-timeout code"
    );

    // The server is fine afterwards.
    let mut ws = s.connect(&bob.token).await;
    ws.ping().await;
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    // Long enough that a briefly descheduled test thread does not look dead.
    let s = TestServer::start_with(|c| c.heartbeat_ms = 1000).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let mut bob = s.connect(&w.bob.token).await;
    assert_eq!(bob.hello["heartbeat_ms"], 1000);

    // Several heartbeats pass; tungstenite answers each ping as it reads it.
    bob.wait_for_pings(3).await;
    bob.ping().await;
    let message = s.send(&w.alice, ch, "still there?").await;
    assert_eq!(bob.expect_event("message.created").await["data"], message);
}

#[tokio::test]
async fn a_restart_loses_no_committed_message() {
    let mut s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(s.send(&w.alice, ch, &format!("durable {i}")).await);
    }
    let bob_ws = s.connect(&w.bob.token).await;

    s.restart().await;
    drop(bob_ws);

    // Tokens, workspace, channel and every message survived, ids unchanged.
    let history = s.history(&w.bob, ch, "limit=200").await;
    assert_eq!(history, sent);
    let workspaces = s
        .get("/api/v1/workspaces", &w.bob.token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(workspaces.body[0]["id"], w.ws);

    // New connections get hello, their scopes, and live messages.
    let mut bob = s.connect(&w.bob.token).await;
    assert!(
        bob.hello["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("channel:{ch}")))
    );
    let after = s.send(&w.alice, ch, "after restart").await;
    let frame = bob.expect_event("message.created").await;
    assert_eq!(frame["data"], after);
    assert!(frame["offset"].is_u64());
    assert!(after["id"].as_i64().unwrap() > sent.last().unwrap()["id"].as_i64().unwrap());
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_to_reconnect() {
    let mut s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let mut bob = s.connect(&w.bob.token).await;
    let mut alice = s.connect(&w.alice.token).await;
    let message = s.send(&w.alice, ch, "last words").await;

    s.stop().await;

    // Queued events are flushed before the close.
    assert_eq!(bob.expect_event("message.created").await["data"], message);
    assert_eq!(bob.expect_close().await, Some(3001));
    assert_eq!(alice.expect_close().await, Some(3001));
}

/// Shutdown owns every task the server started: `run` returns only once the webhook
/// worker, the rate limiter's housekeeping, the WebSocket upgrades and the chat's own
/// tasks have ended. A presence grace still running (a minute long here) settles at
/// once instead of holding up the shutdown (bounded by the harness's wait) or
/// outliving it.
#[tokio::test]
async fn shutdown_ends_every_task_the_server_started() {
    let mut s = TestServer::start_with(|c| c.presence_grace_ms = 60_000).await;
    let w = s.world().await;
    let _alice = s.connect(&w.alice.token).await;
    let bob = s.connect(&w.bob.token).await;
    bob.close().await;
    let state = s.state().clone();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while state.chat.closes_handled() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob's close not handled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(state.chat.background_tasks() >= 1, "bob's grace timer runs");
    assert!(
        state.tasks.running() >= 3,
        "the webhook worker, the limiter's housekeeping and alice's socket run"
    );

    s.stop().await;
    assert_eq!(state.chat.background_tasks(), 0, "the chat's tasks ended");
    assert!(state.tasks.running() == 0, "the server's tasks ended");
    assert!(state.engine.registry.all_connections().is_empty());
}
