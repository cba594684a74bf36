//! Subscriptions follow membership: gate 2 of `subscribe`, and joins, adds, leaves and
//! removals moving the live subscriptions of every connection of the user concerned.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN_TOKEN, TestServer, WsClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Asserts that nothing of `channel` was queued for `client` (via a ping barrier, which
/// is queued behind every event already delivered to the connection).
async fn assert_nothing_from(client: &mut WsClient, channel: i64) {
    let scope = json!(format!("channel:{channel}"));
    let frames = client.barrier().await;
    let leaked: Vec<&Value> = frames.iter().filter(|f| f["scope"] == scope).collect();
    assert!(
        leaked.is_empty(),
        "events of {scope} still delivered: {leaked:?}"
    );
}

#[tokio::test]
async fn subscribe_is_authorized_per_scope() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let secret = s
        .create_channel(&w.alice, w.ws, "secret", "private", &[&w.bob])
        .await;
    let open = s
        .create_channel(&w.alice, w.ws, "open", "public", &[])
        .await;
    let mut carol = s.connect(&w.carol.token).await;

    // A private channel carol is not in.
    let reply = carol.subscribe(&format!("channel:{secret}")).await;
    assert_eq!(reply["op"], "error", "{reply}");
    assert_eq!(reply["code"], "forbidden");
    assert!(reply["id"].is_i64(), "the error is correlated: {reply}");

    // Another user's scope.
    let reply = carol.subscribe(&format!("user:{}", w.alice.id)).await;
    assert_eq!(reply["op"], "error", "{reply}");
    assert_eq!(reply["code"], "forbidden");

    // A public channel of her workspace: allowed without joining, and live.
    let reply = carol.subscribe(&format!("channel:{open}")).await;
    assert_eq!(reply["op"], "ack", "{reply}");
    assert_eq!(reply["scope"], format!("channel:{open}"));
    let message = s.send(&w.alice, open, "for all").await;
    let frame = carol.expect_event("message.created").await;
    assert_eq!(frame["data"], message);

    // Nothing of the private channel leaks after the refusal.
    s.send(&w.alice, secret, "for bob").await;
    assert_nothing_from(&mut carol, secret).await;

    // Her own user scope is fine; someone outside the workspace learns nothing.
    let reply = carol.subscribe(&format!("user:{}", w.carol.id)).await;
    assert_eq!(reply["op"], "ack", "{reply}");
    let dave = s.create_user("dave").await;
    let mut dave = s.connect(&dave.token).await;
    let reply = dave.subscribe(&format!("channel:{open}")).await;
    assert_eq!(reply["op"], "error", "{reply}");
    assert!(
        reply["code"] == "not_found" || reply["code"] == "forbidden",
        "{reply}"
    );
}

#[tokio::test]
async fn a_removed_member_stops_receiving_on_every_connection() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "secret", "private", &[&w.bob, &w.carol])
        .await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;
    let mut carol = s.connect(&w.carol.token).await;

    let before = s.send(&w.alice, ch, "before").await;
    for client in [&mut bob1, &mut bob2, &mut carol] {
        assert_eq!(client.expect_event("message.created").await["data"], before);
    }

    s.delete(
        &format!("/api/v1/channels/{ch}/members/{}", w.bob.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);

    for client in [&mut bob1, &mut bob2] {
        let left = client.expect_event("channel.left").await;
        assert_eq!(left["scope"], format!("user:{}", w.bob.id));
        assert_eq!(left["data"]["channel_id"], ch);
        assert_eq!(left["data"]["user_id"], w.bob.id);
    }
    let member_left = carol.expect_event("member.left").await;
    assert_eq!(member_left["data"]["user_id"], w.bob.id);

    let after = s.send(&w.alice, ch, "after").await;
    assert_eq!(carol.expect_event("message.created").await["data"], after);
    assert_nothing_from(&mut bob1, ch).await;
    assert_nothing_from(&mut bob2, ch).await;

    // Nor can bob get back in by subscribing, or read it over HTTP.
    let reply = bob1.subscribe(&format!("channel:{ch}")).await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    s.get(&format!("/api/v1/channels/{ch}/messages"), &w.bob.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // A connection opened now does not start with the channel either.
    let mut bob3 = s.connect(&w.bob.token).await;
    assert!(
        !bob3.hello["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("channel:{ch}")))
    );
    s.send(&w.alice, ch, "later").await;
    assert_nothing_from(&mut bob3, ch).await;
}

#[tokio::test]
async fn an_added_member_receives_on_every_connection_without_resubscribing() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "secret", "private", &[])
        .await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;

    s.send(&w.alice, ch, "before bob").await;
    assert_nothing_from(&mut bob1, ch).await;

    s.add_channel_member(&w.alice, ch, &w.bob).await;

    for client in [&mut bob1, &mut bob2] {
        let joined = client.expect_event("channel.joined").await;
        assert_eq!(joined["scope"], format!("user:{}", w.bob.id));
        assert_eq!(joined["data"]["channel"]["id"], ch);
        assert_eq!(joined["data"]["user_id"], w.bob.id);
    }
    let message = s.send(&w.alice, ch, "welcome").await;
    for client in [&mut bob1, &mut bob2] {
        let frame = client.expect_event("message.created").await;
        assert_eq!(frame["scope"], format!("channel:{ch}"));
        assert_eq!(frame["data"], message);
    }
    // Adding again changes nothing and announces nothing.
    s.add_channel_member(&w.alice, ch, &w.bob).await;
    let extra = bob1.barrier().await;
    assert!(
        extra.iter().all(|f| f["type"] != "channel.joined"),
        "{extra:?}"
    );
}

#[tokio::test]
async fn joining_and_leaving_a_public_channel_moves_live_subscriptions() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "lobby", "public", &[&w.carol])
        .await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;
    let mut carol = s.connect(&w.carol.token).await;

    s.post(
        &format!("/api/v1/channels/{ch}/join"),
        &w.bob.token,
        json!({}),
    )
    .await
    .expect_status(StatusCode::OK);
    for client in [&mut bob1, &mut bob2] {
        let joined = client.expect_event("channel.joined").await;
        assert_eq!(joined["data"]["channel"]["id"], ch);
    }
    let hi = s.send(&w.alice, ch, "hi bob").await;
    for client in [&mut bob1, &mut bob2, &mut carol] {
        assert_eq!(client.expect_event("message.created").await["data"], hi);
    }

    s.post(
        &format!("/api/v1/channels/{ch}/leave"),
        &w.bob.token,
        json!({}),
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    for client in [&mut bob1, &mut bob2] {
        let left = client.expect_event("channel.left").await;
        assert_eq!(left["data"]["channel_id"], ch);
    }
    let bye = s.send(&w.alice, ch, "bye bob").await;
    assert_eq!(carol.expect_event("message.created").await["data"], bye);
    assert_nothing_from(&mut bob1, ch).await;
    assert_nothing_from(&mut bob2, ch).await;

    // A private channel cannot be joined.
    let private = s
        .create_channel(&w.alice, w.ws, "hidden", "private", &[])
        .await;
    s.post(
        &format!("/api/v1/channels/{private}/join"),
        &w.bob.token,
        json!({}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
}

/// One account's workspaces are bounded (each is a scope its presence is announced
/// on): the 101st is refused with 409; a server admin is not held to it.
#[tokio::test]
async fn a_user_creates_a_bounded_number_of_workspaces() {
    let s = TestServer::start().await;
    let alice = s.create_user("alice").await;
    for i in 0..100 {
        s.post(
            "/api/v1/workspaces",
            &alice.token,
            json!({"name": format!("w{i}")}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    }
    s.post(
        "/api/v1/workspaces",
        &alice.token,
        json!({"name": "one more"}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "conflict");
    for i in 0..101 {
        s.post(
            "/api/v1/workspaces",
            ADMIN_TOKEN,
            json!({"name": format!("a{i}")}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    }
}
