//! Membership changes racing connection setup, `subscribe` and slash commands. These
//! hold for every interleaving, so they pass deterministically on a correct server; each
//! run tries many interleavings on a multi-threaded runtime, so a regression is caught
//! with high odds.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN_TOKEN, TestServer, TestUser, WsClient};
use reqwest::StatusCode;
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

/// Commands typed while their agent is removed from the workspace: each is delivered
/// only if it committed before the removal, since whether the agent is still a member is
/// asked in the invocation's transaction, ordered with the removal's. So nothing of them
/// follows the agent's `workspace.left` in its log (read back over HTTP), and nothing
/// typed after it is queued for its webhook. The removal starts once a first command is
/// answered, with the others in flight; the agent is added back for the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_racing_its_agents_removal_never_follows_the_workspace_left() {
    const ROUNDS: usize = 4;
    // Invokers typing one after the other: commands keep starting while the removal runs.
    const INVOKERS: usize = 6;
    const INVOKES: usize = 6;
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    // Nothing listens there: deliveries are queued and fail, and the queue is all we read.
    let made = s
        .post(
            "/api/v1/users",
            ADMIN_TOKEN,
            json!({"name": "ask-bot", "kind": "agent", "webhook_url": "http://127.0.0.1:9/h"}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let bot = TestUser {
        id: made.body["user"]["id"].as_i64().unwrap(),
        name: "ask-bot".into(),
        token: made.body["token"].as_str().unwrap().to_owned(),
    };
    let scope = format!("user:{}", bot.id);
    // Read, then closed: an agent with no connection is also woken by its webhook.
    let head = s.connect(&bot.token).await.hello["offsets"][&scope]
        .as_u64()
        .unwrap();
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    s.post(
        &format!("/api/v1/workspaces/{}/commands", w.ws),
        &w.alice.token,
        json!({"name": "ask", "target_user_id": bot.id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&w.bob])
        .await;
    let path = format!("/api/v1/channels/{ch}/messages");
    for round in 0..ROUNDS {
        let done = std::sync::atomic::AtomicUsize::new(0);
        let started = tokio::sync::Notify::new();
        let invokers = (0..INVOKERS).map(|n| {
            let (s, path, bob, done, started) = (&s, &path, &w.bob, &done, &started);
            async move {
                for i in 0..INVOKES {
                    let body = json!({ "text": format!("/ask secret {round}.{n}.{i}") });
                    let status = s.post(path, &bob.token, body).await.status;
                    assert!(
                        status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                        "{status}"
                    );
                    if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        started.notify_one();
                    }
                }
            }
        });
        let removal = async {
            started.notified().await;
            s.delete(
                &format!("/api/v1/workspaces/{}/members/{}", w.ws, bot.id),
                &w.alice.token,
            )
            .await
            .expect_status(StatusCode::NO_CONTENT);
        };
        tokio::join!(futures_util::future::join_all(invokers), removal);
        s.add_member(&w.alice, w.ws, &bot, "member").await;
    }

    // The agent's order, as it catches up on its own scope over HTTP.
    let mut member = false;
    let mut lefts = 0;
    let mut told = Vec::new();
    let mut leaked = Vec::new();
    for event in s.logged_after(&bot, &scope, head).await {
        match event["type"].as_str().unwrap() {
            "workspace.joined" => member = true,
            "workspace.left" => {
                member = false;
                lefts += 1;
            }
            "command.invoked" if member => told.push(event["data"]["id"].clone()),
            "command.invoked" => leaked.push(event["data"]["args"].clone()),
            _ => {}
        }
    }
    assert_eq!(lefts, ROUNDS, "each removal is in the agent's order");
    assert!(
        !told.is_empty(),
        "the commands before the removals reached it"
    );
    assert!(
        leaked.is_empty(),
        "{} command(s) logged after the agent's workspace.left ({} before): {leaked:?}",
        leaked.len(),
        told.len()
    );
    let queued = s.queued_webhooks(&bot).await;
    assert!(
        !queued.is_empty(),
        "the commands before the removals were queued"
    );
    let late: Vec<&Value> = queued.iter().filter(|id| !told.contains(id)).collect();
    assert!(
        late.is_empty(),
        "{} command(s) queued for the agent's webhook that its log does not hold before its \
         removal: {late:?}",
        late.len()
    );
}
