//! Agents that take turns and cannot run away (issue 19): the loop guard.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN_TOKEN, TestServer, TestUser, WsClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn create_agent(s: &TestServer, name: &str) -> TestUser {
    let resp = s
        .post(
            "/api/v1/users",
            ADMIN_TOKEN,
            json!({"name": name, "kind": "agent"}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    TestUser {
        id: resp.body["user"]["id"].as_i64().unwrap(),
        name: name.to_owned(),
        token: resp.body["token"].as_str().unwrap().to_owned(),
    }
}

/// The `message.created` frame of message `id` (other events are skipped).
async fn created(client: &mut WsClient, id: i64) -> Value {
    loop {
        let frame = client.expect_event("message.created").await;
        if frame["data"]["id"] == id {
            return frame;
        }
    }
}

#[tokio::test]
async fn two_agents_answering_each_other_stop_at_the_limit_until_a_person_writes() {
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 0;
        c.loop_guard_run = 6;
        c.loop_guard_per_minute = 0;
    })
    .await;
    let w = s.world().await;
    let a1 = create_agent(&s, "a1").await;
    let a2 = create_agent(&s, "a2").await;
    s.add_member(&w.alice, w.ws, &a1, "member").await;
    s.add_member(&w.alice, w.ws, &a2, "member").await;
    let ch = s
        .post(
            &format!("/api/v1/workspaces/{}/channels", w.ws),
            &w.alice.token,
            json!({"name": "agents", "kind": "public", "policy": "mentions",
                   "member_ids": [a1.id, a2.id]}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["id"]
        .as_i64()
        .unwrap();
    let mut alice = s.connect(&w.alice.token).await;
    let mut agents = [
        (a1.clone(), s.connect(&a1.token).await),
        (a2.clone(), s.connect(&a2.token).await),
    ];

    // Each agent answers the other whenever it is woken, as a naive agent would.
    let mut id = s.send(&w.alice, ch, "@a1 start").await["id"]
        .as_i64()
        .unwrap();
    let mut turn = 0;
    let mut answers = 0;
    loop {
        let (_, client) = &mut agents[turn];
        let frame = created(client, id).await;
        if frame["wake"] != true {
            break;
        }
        let other = &agents[1 - turn].0.name;
        let (me, _) = &agents[turn];
        id = s
            .send(me, ch, &format!("@{other} your turn ({answers})"))
            .await["id"]
            .as_i64()
            .unwrap();
        answers += 1;
        turn = 1 - turn;
    }
    assert_eq!(answers, 6, "the sixth agent message in a row woke nobody");
    let held = alice.expect_event("channel.loop_guard").await;
    assert_eq!(
        held["data"],
        json!({"channel_id": ch, "state": "held", "reason": "agent_messages"})
    );
    // Still held: another agent message wakes nobody.
    let (me, _) = &agents[turn];
    let id = s.send(me, ch, "@a1 @a2 anyone?").await["id"]
        .as_i64()
        .unwrap();
    for (_, client) in agents.iter_mut() {
        let frame = created(client, id).await;
        assert_ne!(frame["wake"], true, "{frame}");
    }

    // A person writes: agents are woken again, and the release is announced.
    let id = s.send(&w.alice, ch, "@a1 carry on").await["id"]
        .as_i64()
        .unwrap();
    let frame = created(&mut agents[0].1, id).await;
    assert_eq!(frame["wake"], true, "{frame}");
    let released = agents[0].1.expect_event("channel.loop_guard").await;
    assert_eq!(
        released["data"],
        json!({"channel_id": ch, "state": "released", "reason": "person_wrote"})
    );
    let released = alice.expect_event("channel.loop_guard").await;
    assert_eq!(released["data"]["state"], "released");
}

/// The channel as `user` loads it, and as the workspace listing shows it.
async fn loaded(s: &TestServer, user: &TestUser, ws: i64, ch: i64) -> (Value, Value) {
    let one = s
        .get(&format!("/api/v1/channels/{ch}"), &user.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    let list = s
        .get(&format!("/api/v1/workspaces/{ws}/channels"), &user.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == ch)
        .cloned()
        .unwrap();
    (one, listed)
}

#[tokio::test]
async fn a_held_loop_guard_is_on_the_channel_for_whoever_loads_it_and_survives_a_restart() {
    let mut s = TestServer::start_with(|c| {
        c.http_per_sec = 0;
        c.loop_guard_run = 2;
        c.loop_guard_per_minute = 0;
    })
    .await;
    let w = s.world().await;
    let a1 = create_agent(&s, "a1").await;
    let a2 = create_agent(&s, "a2").await;
    s.add_member(&w.alice, w.ws, &a1, "member").await;
    s.add_member(&w.alice, w.ws, &a2, "member").await;
    let ch = s
        .post(
            &format!("/api/v1/workspaces/{}/channels", w.ws),
            &w.alice.token,
            json!({"name": "agents", "kind": "public", "policy": "mentions",
                   "member_ids": [a1.id, a2.id]}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["id"]
        .as_i64()
        .unwrap();
    let (one, listed) = loaded(&s, &w.alice, w.ws, ch).await;
    assert!(one.get("loop_guard").is_none(), "never held: {one}");
    assert!(listed.get("loop_guard").is_none(), "never held: {listed}");

    let mut alice = s.connect(&w.alice.token).await;
    s.send(&a1, ch, "@a2 one").await;
    s.send(&a2, ch, "@a1 two").await;
    let held = alice.expect_event("channel.loop_guard").await;
    assert_eq!(held["data"]["state"], "held");
    alice.close().await;

    // A client that loads the channel now (a reload) knows, from the channel alone.
    let (one, listed) = loaded(&s, &w.bob, w.ws, ch).await;
    assert_eq!(one["loop_guard"]["state"], "held", "{one}");
    assert_eq!(one["loop_guard"]["reason"], "agent_messages");
    let since = one["loop_guard"]["since"].clone();
    assert!(since.is_string(), "an RFC 3339 time: {one}");
    assert_eq!(listed["loop_guard"], one["loop_guard"]);

    // A new server process (the counts it kept in memory are gone) still holds: the
    // state is the channel's, not the node's.
    s.restart().await;
    let (one, _) = loaded(&s, &w.alice, w.ws, ch).await;
    assert_eq!(one["loop_guard"]["state"], "held", "{one}");
    let mut c1 = s.connect(&a1.token).await;
    let id = s.send(&a2, ch, "@a1 still there?").await["id"]
        .as_i64()
        .unwrap();
    let frame = created(&mut c1, id).await;
    assert_ne!(frame["wake"], true, "held after a restart: {frame}");

    // A person writes: released, on the channel too, and agents are woken again.
    let id = s.send(&w.alice, ch, "@a1 carry on").await["id"]
        .as_i64()
        .unwrap();
    let frame = created(&mut c1, id).await;
    assert_eq!(frame["wake"], true, "{frame}");
    let released = c1.expect_event("channel.loop_guard").await;
    assert_eq!(released["data"]["state"], "released");
    let (one, listed) = loaded(&s, &w.bob, w.ws, ch).await;
    assert_eq!(
        (&one["loop_guard"]["state"], &one["loop_guard"]["reason"]),
        (&json!("released"), &json!("person_wrote")),
        "{one}"
    );
    assert_ne!(one["loop_guard"]["since"], since, "{one}");
    assert_eq!(listed["loop_guard"], one["loop_guard"]);
}
