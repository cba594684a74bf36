//! Presence: online with the first connection, offline after the last one closes (once
//! the grace period has passed), never flipped by a client; `presence.updated` on the
//! user's workspaces only; snapshots in the member and channel listings.
//!
//! The grace period is short here. Where a test must show that something does *not*
//! happen, it waits until the server has handled the closes it caused and has no
//! presence work left (grace timers, coalesced batches: [`TestServer::settle_presence`]),
//! then drains with a barrier; no test sleeps, and nothing asserts how long anything
//! took.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, TestUser, WsClient};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const GRACE_MS: u64 = 150;

/// The presence changes a frame carries, each as a `presence.updated` frame: a
/// `presence.batch` (changes coalesced during a burst) is unpacked.
fn presence_changes(frame: Value) -> Vec<Value> {
    match frame["type"].as_str() {
        Some("presence.updated") => vec![frame],
        Some("presence.batch") => common::presence_batch(&frame["data"])
            .into_iter()
            .map(|p| json!({"op": "event", "scope": frame["scope"], "type": "presence.updated", "data": p}))
            .collect(),
        _ => Vec::new(),
    }
}

/// A connection that keeps presence events (the shared client passes over them). Its
/// first ping is answered after the server announced it (the session reads frames only
/// once the connect hook returned), so its presence change is made or scheduled.
async fn connect(s: &TestServer, token: &str) -> WsClient {
    let mut client = s.connect(token).await;
    client.presence = true;
    client.ping().await;
    client
}

/// Every presence change about `user` sent to `client` so far, the ones a workspace
/// held back for its coalescing window included (docs/protocol.md): waits until the
/// server has no presence work left, then drains with a barrier.
async fn presence_events(s: &TestServer, client: &mut WsClient, user: &TestUser) -> Vec<Value> {
    s.settle_presence(0).await;
    client
        .barrier()
        .await
        .into_iter()
        .flat_map(presence_changes)
        .filter(|f| f["data"]["user_id"] == user.id)
        .collect()
}

/// The next presence change about `user`, however long the grace takes (bounded).
async fn next_presence(client: &mut WsClient, user: &TestUser) -> Value {
    loop {
        let frame = client.recv_json().await;
        if let Some(change) = presence_changes(frame)
            .into_iter()
            .find(|f| f["data"]["user_id"] == user.id)
        {
            return change;
        }
    }
}

/// `user`'s entry in the workspace's presence snapshot.
async fn snapshot(s: &TestServer, by: &TestUser, ws: i64, user: &TestUser) -> Value {
    let all = s
        .get(&format!("/api/v1/workspaces/{ws}/presence"), &by.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    all.as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == user.id)
        .unwrap_or_else(|| panic!("{} not in {all}", user.name))
        .clone()
}

async fn set_status(s: &TestServer, user: &TestUser, body: Value) -> Value {
    s.call(
        Method::PUT,
        "/api/v1/presence",
        Some(&user.token),
        Some(body),
    )
    .await
    .expect_status(StatusCode::OK)
    .body
}

#[tokio::test]
async fn online_with_the_first_tab_offline_after_the_last_and_only_in_my_workspaces() {
    let s = TestServer::start_with(|c| c.presence_grace_ms = GRACE_MS).await;
    let w = s.world().await;
    let dave = s.create_user("dave").await;
    s.create_workspace(&dave, "elsewhere").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let ws_scope = format!("workspace:{}", w.ws);
    let mut alice1 = connect(&s, &w.alice.token).await;
    let mut alice2 = connect(&s, &w.alice.token).await;
    let mut carol = connect(&s, &w.carol.token).await;
    let mut dave_ws = connect(&s, &dave.token).await;
    assert_eq!(snapshot(&s, &w.alice, w.ws, &w.bob).await["online"], false);

    // bob's first tab: every connection of his workspace's members hears it once.
    let bob1 = connect(&s, &w.bob.token).await;
    for client in [&mut alice1, &mut alice2, &mut carol] {
        let events = presence_events(&s, client, &w.bob).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["scope"], ws_scope);
        assert!(
            events[0].get("offset").is_none(),
            "ephemeral: {}",
            events[0]
        );
        let data = &events[0]["data"];
        assert_eq!(data["online"], true);
        assert_eq!(data["status_text"], "");
        assert!(data["last_seen"].is_string(), "{data}");
    }
    assert!(presence_events(&s, &mut dave_ws, &w.bob).await.is_empty());
    assert_eq!(snapshot(&s, &w.carol, w.ws, &w.bob).await["online"], true);

    // A second tab is no news; closing one of two changes nothing, even after the grace.
    let bob2 = connect(&s, &w.bob.token).await;
    assert!(presence_events(&s, &mut alice1, &w.bob).await.is_empty());
    bob1.close().await;
    // Handled, and any timer it (wrongly) started has fired.
    s.settle_presence(1).await;
    assert!(presence_events(&s, &mut alice1, &w.bob).await.is_empty());
    assert_eq!(snapshot(&s, &w.alice, w.ws, &w.bob).await["online"], true);

    // The last tab closes: offline once the grace has passed, with last_seen.
    bob2.close().await;
    for client in [&mut alice1, &mut alice2, &mut carol] {
        let frame = next_presence(client, &w.bob).await;
        assert_eq!(frame["scope"], ws_scope);
        assert_eq!(frame["data"]["online"], false, "{frame}");
        assert!(frame["data"]["last_seen"].is_string(), "{frame}");
    }
    assert!(presence_events(&s, &mut dave_ws, &w.bob).await.is_empty());
    let offline = snapshot(&s, &w.alice, w.ws, &w.bob).await;
    assert_eq!(offline["online"], false);
    assert!(offline["last_seen"].is_string(), "{offline}");

    // The listings carry the same snapshot.
    let members = s
        .get(
            &format!("/api/v1/workspaces/{}/members", w.ws),
            &w.carol.token,
        )
        .await
        .expect_status(StatusCode::OK)
        .body;
    for member in members.as_array().unwrap() {
        let online = member["user"]["id"] == w.alice.id || member["user"]["id"] == w.carol.id;
        assert_eq!(member["presence"]["online"], online, "{member}");
        assert_eq!(member["presence"]["user_id"], member["user"]["id"]);
    }
    let channel = s
        .get(&format!("/api/v1/channels/{ch}"), &w.bob.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    let online: Vec<(Value, Value)> = channel["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["user_id"].clone(), p["online"].clone()))
        .collect();
    assert_eq!(
        online,
        [
            (json!(w.alice.id), json!(true)),
            (json!(w.bob.id), json!(false))
        ]
    );
    // Outsiders get no snapshot.
    s.get(
        &format!("/api/v1/workspaces/{}/presence", w.ws),
        &dave.token,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_reload_within_the_grace_does_not_flicker() {
    // Long enough that a reload (close, then connect again) fits in it on a busy machine.
    const RELOAD_GRACE_MS: u64 = 1_000;
    let s = TestServer::start_with(|c| c.presence_grace_ms = RELOAD_GRACE_MS).await;
    let w = s.world().await;
    let mut alice = connect(&s, &w.alice.token).await;
    let bob = connect(&s, &w.bob.token).await;
    assert_eq!(presence_events(&s, &mut alice, &w.bob).await.len(), 1);

    bob.close().await;
    let bob = connect(&s, &w.bob.token).await;
    // The close is handled and its grace timer has run out (finding bob back).
    s.settle_presence(1).await;
    let flicker = presence_events(&s, &mut alice, &w.bob).await;
    assert!(flicker.is_empty(), "a reload was announced: {flicker:?}");
    assert_eq!(snapshot(&s, &w.alice, w.ws, &w.bob).await["online"], true);

    bob.close().await;
    let frame = next_presence(&mut alice, &w.bob).await;
    assert_eq!(frame["data"]["online"], false);
}

#[tokio::test]
async fn status_text_is_live_and_never_changes_the_online_bit() {
    let s = TestServer::start_with(|c| c.presence_grace_ms = GRACE_MS).await;
    let w = s.world().await;
    let mut alice = connect(&s, &w.alice.token).await;

    // bob is offline: setting a status (even claiming to be online) keeps him offline.
    let away = set_status(
        &s,
        &w.bob,
        json!({ "status_text": "  at lunch ", "online": true }),
    )
    .await;
    assert_eq!(
        away,
        json!({ "user_id": w.bob.id, "online": false, "status_text": "at lunch" })
    );
    let events = presence_events(&s, &mut alice, &w.bob).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"], away);
    // No timer left that could take him online.
    s.settle_presence(0).await;
    assert_eq!(snapshot(&s, &w.alice, w.ws, &w.bob).await["online"], false);

    // Connected, he is online whatever the status says; his own tabs hear it too.
    let mut bob1 = connect(&s, &w.bob.token).await;
    let mut bob2 = connect(&s, &w.bob.token).await;
    let online = next_presence(&mut alice, &w.bob).await;
    assert_eq!(online["data"]["online"], true);
    assert_eq!(online["data"]["status_text"], "at lunch");
    let back = set_status(
        &s,
        &w.bob,
        json!({ "status_text": "back", "online": false }),
    )
    .await;
    assert_eq!(back["online"], true);
    assert_eq!(back["status_text"], "back");
    let events = presence_events(&s, &mut alice, &w.bob).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"], back);
    // Bob's first tab also heard himself come online (announced after its `hello`);
    // his second tab did if it subscribed before that announcement went out.
    for client in [&mut bob1, &mut bob2] {
        let events = presence_events(&s, client, &w.bob).await;
        let (last, earlier) = events.split_last().expect("the status change");
        assert_eq!(last["data"], back);
        assert!(earlier.len() <= 1, "{events:?}");
        for e in earlier {
            assert_eq!(e["data"]["online"], true, "{events:?}");
            assert_eq!(e["data"]["status_text"], "at lunch", "{events:?}");
        }
    }
    s.settle_presence(0).await;
    assert_eq!(snapshot(&s, &w.alice, w.ws, &w.bob).await["online"], true);
    let me = s.get("/api/v1/me", &w.bob.token).await.body;
    assert_eq!(me["status_text"], "back");
    let mine = s.get("/api/v1/presence", &w.bob.token).await.body;
    assert_eq!(mine, back);

    // Refused statuses change nothing and announce nothing.
    for bad in ["x".repeat(141), "line\nbreak".to_owned()] {
        s.call(
            Method::PUT,
            "/api/v1/presence",
            Some(&w.bob.token),
            Some(json!({ "status_text": bad })),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    assert!(presence_events(&s, &mut alice, &w.bob).await.is_empty());
    // Empty clears it.
    let cleared = set_status(&s, &w.bob, json!({ "status_text": "" })).await;
    assert_eq!(cleared["status_text"], "");
    assert_eq!(cleared["online"], true);
}
