//! Live delivery: messages fan out to every connection of every member, in offset
//! order; DMs appear live; idempotent sends publish once.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, unique};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Checks one `message.created` frame against the message the HTTP API returned and
/// returns its offset.
#[track_caller]
fn check_created(frame: &Value, channel: i64, message: &Value) -> u64 {
    assert_eq!(frame["op"], "event");
    assert_eq!(frame["type"], "message.created");
    assert_eq!(frame["scope"], format!("channel:{channel}"));
    assert_eq!(
        &frame["data"], message,
        "event payload differs from the HTTP response"
    );
    frame["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer offset in {frame}"))
}

#[tokio::test]
async fn http_message_reaches_every_connection_in_offset_order() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let mut bob = s.connect(&w.bob.token).await;
    let mut alice1 = s.connect(&w.alice.token).await;
    let mut alice2 = s.connect(&w.alice.token).await;
    assert!(
        bob.hello["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("channel:{ch}"))),
        "hello scopes: {}",
        bob.hello
    );

    let mut last = [0u64; 3];
    for i in 0..5 {
        let message = s.send(&w.alice, ch, &format!("hello {i}")).await;
        assert_eq!(message["author_id"], w.alice.id);
        for (n, client) in [&mut bob, &mut alice1, &mut alice2].into_iter().enumerate() {
            let frame = client.expect_event("message.created").await;
            let offset = check_created(&frame, ch, &message);
            assert!(
                offset > last[n],
                "offset {offset} after {} on connection {n}",
                last[n]
            );
            last[n] = offset;
        }
    }
    // Nothing else is queued: no duplicates.
    for client in [&mut bob, &mut alice1, &mut alice2] {
        let extra = client.barrier().await;
        assert!(
            extra.iter().all(|f| f["type"] != "message.created"),
            "duplicate deliveries: {extra:?}"
        );
    }
}

#[tokio::test]
async fn a_new_dm_appears_live_for_every_participant() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;

    let created = s
        .post(
            &format!("/api/v1/workspaces/{}/dms", w.ws),
            &w.alice.token,
            json!({ "user_ids": [w.bob.id] }),
        )
        .await
        .expect_status(StatusCode::CREATED);
    let dm = created.body["id"].as_i64().unwrap();
    assert_eq!(created.body["kind"], "dm");

    for (client, user) in [
        (&mut alice, &w.alice),
        (&mut bob1, &w.bob),
        (&mut bob2, &w.bob),
    ] {
        let joined = client.expect_event("channel.joined").await;
        assert_eq!(joined["scope"], format!("user:{}", user.id));
        assert_eq!(joined["data"]["channel"]["id"], dm);
        assert_eq!(joined["data"]["user_id"], user.id);
    }

    // Messages of the DM arrive without any explicit subscribe, both ways.
    let message = s.send(&w.alice, dm, "psst").await;
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let frame = client.expect_event("message.created").await;
        check_created(&frame, dm, &message);
    }
    let reply = s.send(&w.bob, dm, "yes?").await;
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let frame = client.expect_event("message.created").await;
        check_created(&frame, dm, &reply);
    }

    // Get-or-create: the same DM again, from either side, with 200.
    for (by, other) in [(&w.alice, &w.bob), (&w.bob, &w.alice)] {
        let again = s
            .post(
                &format!("/api/v1/workspaces/{}/dms", w.ws),
                &by.token,
                json!({ "user_ids": [other.id] }),
            )
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(again.body["id"], dm);
    }
    // Re-opening announced nothing new.
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let extra = client.barrier().await;
        assert!(
            extra.iter().all(|f| f["type"] != "channel.joined"),
            "re-opening the DM announced a join: {extra:?}"
        );
    }
    // Carol, not a participant, cannot read it.
    s.get(&format!("/api/v1/channels/{dm}/messages"), &w.carol.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn an_idempotent_retry_creates_and_publishes_one_message() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let mut bob = s.connect(&w.bob.token).await;
    let key = unique("retry");

    let mut responses = Vec::new();
    for _ in 0..2 {
        let resp = s
            .http
            .post(s.url(&format!("/api/v1/channels/{ch}/messages")))
            .bearer_auth(&w.alice.token)
            .header("Idempotency-Key", &key)
            .json(&json!({ "text": "exactly once" }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let replayed = resp
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap();
        responses.push((status, replayed, body));
    }
    assert_eq!(responses[0].0, StatusCode::CREATED);
    assert_eq!(responses[0].1, None, "the first send is not a replay");
    assert_eq!(responses[1].1.as_deref(), Some("true"));
    assert!(responses[1].0.is_success());
    assert_eq!(
        responses[0].2, responses[1].2,
        "a replay returns the same body"
    );

    let history = s.history(&w.alice, ch, "").await;
    let matching: Vec<_> = history
        .iter()
        .filter(|m| m["text"] == "exactly once")
        .collect();
    assert_eq!(matching.len(), 1, "history: {history:?}");
    assert_eq!(matching[0]["id"], responses[0].2["id"]);

    let frame = bob.expect_event("message.created").await;
    check_created(&frame, ch, &responses[0].2);
    let extra = bob.barrier().await;
    assert!(
        extra.iter().all(|f| f["type"] != "message.created"),
        "the retry was published again: {extra:?}"
    );

    // The same key from another author is that author's own first send.
    let other = s
        .http
        .post(s.url(&format!("/api/v1/channels/{ch}/messages")))
        .bearer_auth(&w.bob.token)
        .header("Idempotency-Key", &key)
        .json(&json!({ "text": "bob's own" }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    assert!(other.headers().get("idempotent-replayed").is_none());
}
