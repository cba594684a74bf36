//! Permissions hold for the whole life of a connection: a change that takes away read
//! access ends the subscriptions it no longer allows, at once, with
//! `subscription.revoked`, and nothing committed after the change reaches them.
//!
//! Absence is asserted after a barrier (a ping's ack: every frame queued before it is
//! read first), never after a sleep.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, TestUser, WsClient};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Frames about a scope (its events and its revocation).
fn about<'a>(frames: &'a [Value], scope: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["scope"] == scope).collect()
}

async fn reply(s: &TestServer, by: &TestUser, ch: i64, root: i64, text: &str) -> Value {
    s.post(
        &format!("/api/v1/channels/{ch}/messages"),
        &by.token,
        json!({ "text": text, "thread_id": root }),
    )
    .await
    .expect_status(StatusCode::CREATED)
    .body
}

/// Everything that reaches a thread panel: a reply, an edit, a reaction.
async fn thread_activity(s: &TestServer, by: &TestUser, ch: i64, root: i64, text: &str) {
    let answer = reply(s, by, ch, root, text).await;
    let id = answer["id"].as_i64().unwrap();
    s.patch(
        &format!("/api/v1/messages/{id}"),
        &by.token,
        json!({ "text": format!("{text} (edited)") }),
    )
    .await
    .expect_status(StatusCode::OK);
    s.call(
        Method::PUT,
        &format!("/api/v1/messages/{root}/reactions/eyes"),
        Some(&by.token),
        None,
    )
    .await;
}

/// bob follows a thread of a private channel; alice removes him from the channel. His
/// thread panel ends with `subscription.revoked` (reason `channel_left`), and the
/// thread's later replies, edits and reactions never reach him; resuming or
/// subscribing to it again is refused.
#[tokio::test]
async fn removal_from_a_private_channel_ends_its_thread_subscriptions() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "secret", "private", &[&w.bob])
        .await;
    let root = s.send(&w.alice, ch, "root").await["id"].as_i64().unwrap();
    let thread = format!("thread:{root}");
    let mut bob: WsClient = s.connect(&w.bob.token).await;
    let ack = bob.subscribe(&thread).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    thread_activity(&s, &w.alice, ch, root, "before").await;
    let before = bob.barrier().await;
    assert!(
        about(&before, &thread).len() >= 3,
        "the panel is live before the removal: {before:?}"
    );

    s.delete(
        &format!("/api/v1/channels/{ch}/members/{}", w.bob.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    let frames = bob.barrier().await;
    let revoked: Vec<_> = frames
        .iter()
        .filter(|f| f["type"] == "subscription.revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{frames:?}");
    assert_eq!(revoked[0]["scope"], thread.as_str());
    assert_eq!(revoked[0]["data"]["scope"], thread.as_str());
    assert_eq!(revoked[0]["data"]["reason"], "channel_left");
    assert!(frames.iter().any(|f| f["type"] == "channel.left"));

    thread_activity(&s, &w.alice, ch, root, "after").await;
    let after = bob.barrier().await;
    assert!(
        about(&after, &thread).is_empty() && about(&after, &format!("channel:{ch}")).is_empty(),
        "a removed member still receives the thread: {after:?}"
    );

    let again = bob.subscribe(&thread).await;
    assert_eq!(again["code"], "forbidden", "{again}");
    let resumed = bob
        .request(json!({"op": "resume", "positions": { thread.clone(): 0 }}))
        .await;
    assert_eq!(
        resumed["scopes"][&thread]["error"], "forbidden",
        "{resumed}"
    );
    s.check_invariants();
}

/// Leaving a *public* channel takes nothing away: its threads stay readable (any
/// non-guest member may read a public channel), so the panel stays open.
#[tokio::test]
async fn leaving_a_public_channel_keeps_its_thread_panels() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "open", "public", &[&w.bob])
        .await;
    let root = s.send(&w.alice, ch, "root").await["id"].as_i64().unwrap();
    let thread = format!("thread:{root}");
    let mut bob = s.connect(&w.bob.token).await;
    assert_eq!(bob.subscribe(&thread).await["op"], "ack");
    s.post(
        &format!("/api/v1/channels/{ch}/leave"),
        &w.bob.token,
        json!({}),
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    reply(&s, &w.alice, ch, root, "still yours").await;
    let frames = bob.barrier().await;
    assert!(
        frames.iter().all(|f| f["type"] != "subscription.revoked"),
        "{frames:?}"
    );
    assert!(
        about(&frames, &thread)
            .iter()
            .any(|f| f["type"] == "message.created"),
        "the public thread stays live: {frames:?}"
    );
    s.check_invariants();
}
