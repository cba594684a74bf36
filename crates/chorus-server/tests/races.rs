//! Membership changes racing connection setup and `subscribe`. These hold for every
//! interleaving, so they pass deterministically on a correct server; each run tries many
//! interleavings on a multi-threaded runtime, so a regression is caught with high odds.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, WsClient};
use serde_json::{Value, json};

const ROUNDS: usize = 60;

fn got_message(frames: &[Value], channel: i64) -> bool {
    let scope = json!(format!("channel:{channel}"));
    frames
        .iter()
        .any(|f| f["scope"] == scope && f["type"] == "message.created")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_opened_during_a_removal_never_keeps_the_channel() {
    // These rounds send frames as fast as the server answers: lift the inbound limit.
    let s = TestServer::start_with(|c| {
        c.inbound_per_sec = 100_000;
        c.inbound_burst = 100_000;
    })
    .await;
    let w = s.world().await;
    let mut open = Vec::new();
    for i in 0..ROUNDS {
        let ch = s
            .create_channel(&w.alice, w.ws, &format!("c{i}"), "private", &[&w.bob])
            .await;
        let path = format!("/api/v1/channels/{ch}/members/{}", w.bob.id);
        let (removed, mut bob) =
            tokio::join!(s.delete(&path, &w.alice.token), s.connect(&w.bob.token));
        assert_eq!(removed.status, 204, "{}", removed.text);
        s.send(&w.alice, ch, "after the removal").await;
        let frames = bob.barrier().await;
        assert!(
            !got_message(&frames, ch),
            "round {i}: a removed member still receives channel {ch}: {frames:?}"
        );
        open.push(bob);
    }
    s.check_invariants();
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_opened_during_an_add_always_gets_the_channel() {
    // These rounds send frames as fast as the server answers: lift the inbound limit.
    let s = TestServer::start_with(|c| {
        c.inbound_per_sec = 100_000;
        c.inbound_burst = 100_000;
    })
    .await;
    let w = s.world().await;
    let mut open = Vec::new();
    for i in 0..ROUNDS {
        let ch = s
            .create_channel(&w.alice, w.ws, &format!("c{i}"), "private", &[])
            .await;
        let path = format!("/api/v1/channels/{ch}/members");
        let body = json!({ "user_id": w.bob.id });
        let (added, mut bob) =
            tokio::join!(s.post(&path, &w.alice.token, body), s.connect(&w.bob.token));
        assert_eq!(added.status, 204, "{}", added.text);
        let message = s.send(&w.alice, ch, "welcome").await;
        let frames = bob.barrier().await;
        assert!(
            frames.iter().any(|f| f["data"] == message),
            "round {i}: a new member's connection misses channel {ch}: {frames:?}"
        );
        open.push(bob);
    }
    s.check_invariants();
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscribe_racing_a_removal_never_outlives_it() {
    // These rounds send frames as fast as the server answers: lift the inbound limit.
    let s = TestServer::start_with(|c| {
        c.inbound_per_sec = 100_000;
        c.inbound_burst = 100_000;
    })
    .await;
    let w = s.world().await;
    let mut bob: WsClient = s.connect(&w.bob.token).await;
    for i in 0..ROUNDS {
        let ch = s
            .create_channel(&w.alice, w.ws, &format!("c{i}"), "private", &[&w.bob])
            .await;
        let scope = format!("channel:{ch}");
        let reply = bob
            .request(json!({"op": "unsubscribe", "scope": scope}))
            .await;
        assert_eq!(reply["op"], "ack", "{reply}");
        let path = format!("/api/v1/channels/{ch}/members/{}", w.bob.id);
        let (removed, reply) = tokio::join!(s.delete(&path, &w.alice.token), bob.subscribe(&scope));
        assert_eq!(removed.status, 204, "{}", removed.text);
        assert!(
            reply["op"] == "ack" || reply["code"] == "forbidden",
            "{reply}"
        );
        s.send(&w.alice, ch, "after the removal").await;
        let frames = bob.barrier().await;
        assert!(
            !got_message(&frames, ch),
            "round {i}: a subscribe outlived the removal from {ch}: {frames:?}"
        );
    }
    s.check_invariants();
}
