//! Collaboration features, live on every tab: threads, edits and deletes, reactions,
//! pins, read cursors and unread counts, mentions, typing, and channel life. Each test
//! checks that an event reaches exactly the connections it should: those that must get
//! it are awaited, the rest are drained with a ping barrier (which is queued behind
//! every event already delivered to that connection).

#![allow(clippy::unwrap_used)]

mod common;

use common::{Resp, TestServer, TestUser, WsClient};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn put(s: &TestServer, path: &str, token: &str) -> Resp {
    s.call(Method::PUT, path, Some(token), None).await
}

/// Sends a reply in `root`'s thread.
async fn reply(s: &TestServer, by: &TestUser, channel: i64, root: i64, text: &str) -> Value {
    s.post(
        &format!("/api/v1/channels/{channel}/messages"),
        &by.token,
        json!({ "text": text, "thread_id": root }),
    )
    .await
    .expect_status(StatusCode::CREATED)
    .body
}

/// Every event queued for `client` so far whose scope is `scope`, as `(type, data)`.
async fn events_on(client: &mut WsClient, scope: &str) -> Vec<(String, Value)> {
    scoped(&client.barrier().await, scope)
}

/// The events of `frames` on `scope`, as `(type, data)`.
fn scoped(frames: &[Value], scope: &str) -> Vec<(String, Value)> {
    frames
        .iter()
        .filter(|f| f["op"] == "event" && f["scope"] == scope)
        .map(|f| (f["type"].as_str().unwrap().to_owned(), f["data"].clone()))
        .collect()
}

fn types(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

/// Asserts that nothing of these scopes was queued for `client`.
async fn assert_nothing_on(client: &mut WsClient, scopes: &[&str]) {
    let leaked: Vec<Value> = client
        .barrier()
        .await
        .into_iter()
        .filter(|f| scopes.iter().any(|s| f["scope"] == *s))
        .collect();
    assert!(
        leaked.is_empty(),
        "delivered to the wrong connection: {leaked:?}"
    );
}

/// The caller's view of one channel in its workspace's channel list.
async fn listed(s: &TestServer, by: &TestUser, ws: i64, channel: i64) -> Value {
    let list = s
        .get(&format!("/api/v1/workspaces/{ws}/channels"), &by.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == channel)
        .unwrap_or_else(|| panic!("channel {channel} not listed: {list}"))
        .clone()
}

#[tokio::test]
async fn a_thread_reply_updates_its_root_live_and_stays_out_of_the_channel_list() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "private", "private", &[&w.bob])
        .await;
    let chan = format!("channel:{ch}");
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;
    let mut carol = s.connect(&w.carol.token).await;

    let root = s.send(&w.alice, ch, "a question").await;
    let root_id = root["id"].as_i64().unwrap();
    let thread = format!("thread:{root_id}");
    assert_eq!(root["reply_count"], 0);
    assert!(root.get("last_reply_at").is_none(), "{root}");
    for client in [&mut alice, &mut bob1, &mut bob2] {
        assert_eq!(types(&events_on(client, &chan).await), ["message.created"]);
    }
    // bob's first tab opens the thread panel; carol (not a member) may not.
    assert_eq!(bob1.subscribe(&thread).await["op"], "ack");
    let refused = carol.subscribe(&thread).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    let answer = reply(&s, &w.bob, ch, root_id, "an answer").await;
    assert_eq!(answer["thread_id"], root_id);
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let events = events_on(client, &chan).await;
        assert_eq!(
            types(&events),
            ["message.created", "message.updated"],
            "{events:?}"
        );
        assert_eq!(events[0].1, answer);
        let updated = &events[1].1;
        assert_eq!(updated["id"], root_id);
        assert_eq!(updated["reply_count"], 1);
        assert_eq!(updated["last_reply_at"], answer["created_at"]);
        assert_eq!(updated["text"], "a question");
    }
    assert_nothing_on(&mut carol, &[&chan, &thread]).await;

    // The thread panel got the reply and the root's new summary on the thread scope;
    // the other tab did not subscribe to it.
    let second = reply(&s, &w.alice, ch, root_id, "thanks").await;
    let on_thread = events_on(&mut bob1, &thread).await;
    assert_eq!(types(&on_thread), ["message.created", "message.updated"]);
    assert_eq!(on_thread[0].1, second);
    assert_eq!(on_thread[1].1["reply_count"], 2);
    for client in [&mut alice, &mut bob2] {
        let frames = client.barrier().await;
        let events = scoped(&frames, &chan);
        assert_eq!(types(&events), ["message.created", "message.updated"]);
        assert_eq!(events[1].1["reply_count"], 2);
        assert!(scoped(&frames, &thread).is_empty(), "{frames:?}");
    }

    // Replies are listed with their thread, never in the channel's main list.
    let top = s.history(&w.bob, ch, "").await;
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!(top[0]["id"], root_id);
    assert_eq!(top[0]["reply_count"], 2);
    assert_eq!(top[0]["last_reply_at"], second["created_at"]);
    let replies = s.history(&w.bob, ch, &format!("thread_id={root_id}")).await;
    assert_eq!(replies, vec![answer.clone(), second]);

    // A reply to a reply is refused; so is a root from another channel.
    let other = s
        .create_channel(&w.alice, w.ws, "other", "public", &[])
        .await;
    for (channel, root) in [(ch, answer["id"].as_i64().unwrap()), (other, root_id)] {
        s.post(
            &format!("/api/v1/channels/{channel}/messages"),
            &w.alice.token,
            json!({ "text": "nested", "thread_id": root }),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }

    // Deleting a reply takes it out of the count, live.
    s.delete(&format!("/api/v1/messages/{}", answer["id"]), &w.bob.token)
        .await
        .expect_status(StatusCode::OK);
    for client in [&mut alice, &mut bob2] {
        let events = events_on(client, &chan).await;
        assert_eq!(types(&events), ["message.deleted", "message.updated"]);
        assert_eq!(events[0].1["id"], answer["id"]);
        assert_eq!(events[0].1["thread_id"], root_id);
        assert_eq!(events[1].1["reply_count"], 1);
    }
    assert_nothing_on(&mut carol, &[&chan, &thread]).await;
}

#[tokio::test]
async fn edits_and_deletes_reach_every_tab_and_need_the_author_or_an_admin() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let dave = s.create_user("dave").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob, &w.carol])
        .await;
    let chan = format!("channel:{ch}");
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;
    let mut carol = s.connect(&w.carol.token).await;
    let mut dave_ws = s.connect(&dave.token).await;

    let message = s.send(&w.bob, ch, "first draft").await;
    let path = format!("/api/v1/messages/{}", message["id"]);
    for client in [&mut bob1, &mut bob2, &mut carol] {
        client.expect_event("message.created").await;
    }
    // Another member, and a stranger, may not.
    s.patch(&path, &w.carol.token, json!({ "text": "carol's" }))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.delete(&path, &w.carol.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.patch(&path, &dave.token, json!({ "text": "dave's" }))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // The author edits; the workspace owner (an admin) may too.
    let edited = s
        .patch(&path, &w.bob.token, json!({ "text": "second draft" }))
        .await
        .expect_status(StatusCode::OK)
        .body;
    let by_admin = s
        .patch(&path, &w.alice.token, json!({ "text": "moderated" }))
        .await
        .expect_status(StatusCode::OK)
        .body;
    for client in [&mut bob1, &mut bob2, &mut carol] {
        let events = events_on(client, &chan).await;
        assert_eq!(types(&events), ["message.updated", "message.updated"]);
        assert_eq!(events[0].1, edited);
        assert_eq!(events[1].1, by_admin);
    }
    assert_eq!(by_admin["text"], "moderated");
    assert!(by_admin["edited_at"].is_string());

    s.delete(&path, &w.alice.token)
        .await
        .expect_status(StatusCode::OK);
    for client in [&mut bob1, &mut bob2, &mut carol] {
        let events = events_on(client, &chan).await;
        assert_eq!(types(&events), ["message.deleted"]);
        assert_eq!(
            events[0].1,
            json!({ "id": message["id"], "channel_id": ch })
        );
    }
    // Gone is gone: no edit, no second delete, no second event.
    s.patch(&path, &w.bob.token, json!({ "text": "back" }))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    s.delete(&path, &w.bob.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_nothing_on(&mut bob1, &[&chan]).await;
    assert_nothing_on(&mut dave_ws, &[&chan]).await;
    let history = s.history(&w.bob, ch, "").await;
    assert_eq!(history[0]["deleted"], true);
    assert_eq!(history[0]["text"], "");
}

#[tokio::test]
async fn reactions_are_live_summarized_and_open_to_readers() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let guest = s.create_user("guest").await;
    s.add_member(&w.alice, w.ws, &guest, "guest").await;
    // carol is in the workspace but not the channel: she may read it, so may react.
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let chan = format!("channel:{ch}");
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;
    let mut guest_ws = s.connect(&guest.token).await;

    let message = s.send(&w.alice, ch, "ship it?").await;
    let id = message["id"].as_i64().unwrap();
    assert_eq!(message["reactions"], json!([]));
    for client in [&mut alice, &mut bob1, &mut bob2] {
        client.expect_event("message.created").await;
    }
    let reaction = |emoji: &str| format!("/api/v1/messages/{id}/reactions/{emoji}");

    let after = put(&s, &reaction("👍"), &w.bob.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(
        after["reactions"],
        json!([{ "emoji": "👍", "count": 1, "user_ids": [w.bob.id] }])
    );
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let events = events_on(client, &chan).await;
        assert_eq!(types(&events), ["reaction.added"]);
        assert_eq!(
            events[0].1,
            json!({ "message_id": id, "channel_id": ch, "emoji": "👍", "user_id": w.bob.id })
        );
    }
    // Reacting twice changes nothing and announces nothing.
    put(&s, &reaction("👍"), &w.bob.token)
        .await
        .expect_status(StatusCode::OK);
    assert_nothing_on(&mut alice, &[&chan]).await;

    put(&s, &reaction("👍"), &w.carol.token)
        .await
        .expect_status(StatusCode::OK);
    put(&s, &reaction(":tada:"), &w.alice.token)
        .await
        .expect_status(StatusCode::OK);
    let history = s.history(&w.bob, ch, "").await;
    assert_eq!(
        history[0]["reactions"],
        json!([
            { "emoji": "👍", "count": 2, "user_ids": [w.bob.id, w.carol.id] },
            { "emoji": ":tada:", "count": 1, "user_ids": [w.alice.id] },
        ])
    );

    // Not readable, not a valid emoji, not a message: refused, nothing published.
    put(&s, &reaction("👍"), &guest.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let too_long = "x".repeat(65);
    for bad in ["a%20b", "%09", "%E2%80%AE", too_long.as_str()] {
        put(&s, &reaction(bad), &w.bob.token)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    put(&s, "/api/v1/messages/999999/reactions/x", &w.bob.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // Removing: only one's own, announced once.
    let after = s
        .delete(&reaction("👍"), &w.bob.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(after["reactions"][0]["user_ids"], json!([w.carol.id]));
    s.delete(&reaction("👍"), &w.bob.token)
        .await
        .expect_status(StatusCode::OK);
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let events = events_on(client, &chan).await;
        assert_eq!(
            types(&events),
            ["reaction.added", "reaction.added", "reaction.removed"],
            "{events:?}"
        );
        assert_eq!(events[2].1["user_id"], w.bob.id);
    }
    assert_nothing_on(&mut guest_ws, &[&chan]).await;
}

#[tokio::test]
async fn pins_are_for_members_and_live_on_the_channel() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let chan = format!("channel:{ch}");
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;
    let mut carol = s.connect(&w.carol.token).await;

    let message = s.send(&w.alice, ch, "the plan").await;
    let id = message["id"].as_i64().unwrap();
    let pin = format!("/api/v1/messages/{id}/pin");
    // carol can read the public channel but is not a member.
    put(&s, &pin, &w.carol.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    let pinned = put(&s, &pin, &w.bob.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(pinned["channel_id"], ch);
    assert_eq!(pinned["pinned_by"], w.bob.id);
    assert_eq!(pinned["message"]["id"], id);
    assert_eq!(pinned["message"]["pinned"], true);
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let events = events_on(client, &chan).await;
        assert_eq!(types(&events), ["message.created", "message.pinned"]);
        assert_eq!(events[1].1, pinned);
    }
    assert_nothing_on(&mut carol, &[&chan]).await;
    // Pinning again returns the same pin and announces nothing.
    let again = put(&s, &pin, &w.alice.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(again, pinned);
    assert_nothing_on(&mut alice, &[&chan]).await;

    // Readers see the pins; the message says it is pinned.
    let pins = s
        .get(&format!("/api/v1/channels/{ch}/pins"), &w.carol.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(pins, json!([pinned]));
    assert_eq!(s.history(&w.carol, ch, "").await[0]["pinned"], true);

    s.delete(&pin, &w.alice.token)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    s.delete(&pin, &w.alice.token)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let events = events_on(client, &chan).await;
        assert_eq!(types(&events), ["message.unpinned"]);
        assert_eq!(
            events[0].1,
            json!({ "channel_id": ch, "message_id": id, "user_id": w.alice.id })
        );
    }
    let pins = s
        .get(&format!("/api/v1/channels/{ch}/pins"), &w.bob.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(pins, json!([]));

    // Deleting a pinned message unpins it.
    put(&s, &pin, &w.bob.token)
        .await
        .expect_status(StatusCode::OK);
    s.delete(&format!("/api/v1/messages/{id}"), &w.alice.token)
        .await
        .expect_status(StatusCode::OK);
    let events = events_on(&mut bob1, &chan).await;
    assert_eq!(
        types(&events),
        ["message.pinned", "message.deleted", "message.unpinned"]
    );
    put(&s, &pin, &w.bob.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn reading_in_one_tab_clears_the_unread_count_of_the_other() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let bob_scope = format!("user:{}", w.bob.id);
    let alice_scope = format!("user:{}", w.alice.id);
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;

    let first = s.send(&w.alice, ch, "one").await;
    s.send(&w.alice, ch, "two, @bob").await;
    let last = s.send(&w.alice, ch, "three").await;
    // Neither bob's own messages nor thread replies count.
    s.send(&w.bob, ch, "mine").await;
    reply(
        &s,
        &w.alice,
        ch,
        first["id"].as_i64().unwrap(),
        "@bob in a thread",
    )
    .await;

    let view = listed(&s, &w.bob, w.ws, ch).await;
    assert_eq!(view["unread"], 3, "{view}");
    assert_eq!(view["unread_mentions"], 1, "{view}");
    assert!(view.get("last_read").is_none(), "{view}");
    // (The mentions above reached bob's tabs as mention.created; not what this is about.)
    for tab in [&mut bob1, &mut bob2] {
        tab.barrier().await;
    }

    // Tab 1 reads up to "three".
    let state = s
        .post(
            &format!("/api/v1/channels/{ch}/read"),
            &w.bob.token,
            json!({ "message_id": last["id"] }),
        )
        .await
        .expect_status(StatusCode::OK)
        .body;
    let expected =
        json!({ "channel_id": ch, "message_id": last["id"], "unread": 0, "unread_mentions": 0 });
    assert_eq!(state, expected);
    // Both tabs hear it (tab 2 clears its badge); alice does not.
    for tab in [&mut bob1, &mut bob2] {
        let events = events_on(tab, &bob_scope).await;
        assert_eq!(types(&events), ["read.updated"]);
        assert_eq!(events[0].1, expected);
    }
    assert_nothing_on(&mut alice, &[&bob_scope, &alice_scope]).await;
    let view = listed(&s, &w.bob, w.ws, ch).await;
    assert_eq!(
        (view["unread"].clone(), view["unread_mentions"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(view["last_read"], last["id"]);

    // A stale tab cannot move the cursor back; nothing is announced.
    let state = s
        .post(
            &format!("/api/v1/channels/{ch}/read"),
            &w.bob.token,
            json!({ "message_id": first["id"] }),
        )
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(state, expected);
    assert_nothing_on(&mut bob2, &[&bob_scope]).await;

    // New messages count again; alice's own never do for her.
    s.send(&w.alice, ch, "four").await;
    assert_eq!(listed(&s, &w.bob, w.ws, ch).await["unread"], 1);
    assert_eq!(
        listed(&s, &w.alice, w.ws, ch).await["unread"],
        1,
        "bob's 'mine'"
    );

    // Someone joining starts with the history read.
    s.post(
        &format!("/api/v1/channels/{ch}/join"),
        &w.carol.token,
        json!({}),
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(listed(&s, &w.carol, w.ws, ch).await["unread"], 0);
    s.send(&w.alice, ch, "five").await;
    assert_eq!(listed(&s, &w.carol, w.ws, ch).await["unread"], 1);

    // Only members keep a cursor, and only on messages of that channel.
    let other = s
        .create_channel(&w.alice, w.ws, "other", "public", &[])
        .await;
    let elsewhere = s.send(&w.alice, other, "elsewhere").await;
    s.post(
        &format!("/api/v1/channels/{other}/read"),
        &w.bob.token,
        json!({ "message_id": elsewhere["id"] }),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let not_here = s
        .post(
            &format!("/api/v1/channels/{ch}/read"),
            &w.bob.token,
            json!({ "message_id": elsewhere["id"] }),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    // One answer for a message of another channel (one bob may not read among them)
    // and for an id naming no message: the answer tells no id's existence.
    let hidden = s
        .create_channel(&w.alice, w.ws, "hidden", "private", &[])
        .await;
    let secret = s.send(&w.alice, hidden, "secret").await;
    let unknown = secret["id"].as_i64().unwrap() + 1000;
    for id in [secret["id"].clone(), json!(unknown)] {
        let answer = s
            .post(
                &format!("/api/v1/channels/{ch}/read"),
                &w.bob.token,
                json!({ "message_id": id }),
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        assert_eq!(answer.body, not_here.body, "message_id {id}");
    }
}

#[tokio::test]
async fn mentions_notify_each_mentioned_reader_and_nobody_else() {
    let s = TestServer::start().await;
    let w = s.world().await;
    // carol is in the workspace but not in this private channel.
    let ch = s
        .create_channel(&w.alice, w.ws, "secret", "private", &[&w.bob])
        .await;
    let user = |u: &TestUser| format!("user:{}", u.id);
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;
    let mut carol = s.connect(&w.carol.token).await;

    let message = s
        .send(
            &w.alice,
            ch,
            "@bob @carol @alice and @nobody, see mail@example.com",
        )
        .await;
    let mut mentioned: Vec<i64> = message["mentions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    mentioned.sort_unstable();
    let mut expected = vec![w.alice.id, w.bob.id, w.carol.id];
    expected.sort_unstable();
    assert_eq!(mentioned, expected, "unknown names stay text");
    assert_eq!(
        message["text"],
        "@bob @carol @alice and @nobody, see mail@example.com"
    );

    for tab in [&mut bob1, &mut bob2] {
        let events = events_on(tab, &user(&w.bob)).await;
        assert_eq!(types(&events), ["mention.created"]);
        assert_eq!(events[0].1, json!({ "message": message, "channel_id": ch }));
    }
    // Not the author's own mention; not carol, who may not read the channel.
    assert_nothing_on(&mut alice, &[&user(&w.alice)]).await;
    assert_nothing_on(&mut carol, &[&user(&w.carol), &format!("channel:{ch}")]).await;

    // An edit tells only the newly mentioned.
    s.add_channel_member(&w.alice, ch, &w.carol).await;
    let plain = s.send(&w.alice, ch, "no one yet").await;
    let edited = s
        .patch(
            &format!("/api/v1/messages/{}", plain["id"]),
            &w.alice.token,
            json!({ "text": "now @carol and @bob" }),
        )
        .await
        .expect_status(StatusCode::OK)
        .body;
    s.patch(
        &format!("/api/v1/messages/{}", plain["id"]),
        &w.alice.token,
        json!({ "text": "still @carol and @bob" }),
    )
    .await
    .expect_status(StatusCode::OK);
    for (client, who) in [(&mut carol, &w.carol), (&mut bob1, &w.bob)] {
        let events: Vec<_> = events_on(client, &user(who))
            .await
            .into_iter()
            .filter(|(t, _)| t == "mention.created")
            .collect();
        assert_eq!(events.len(), 1, "{}: {events:?}", who.name);
        assert_eq!(events[0].1["message"], edited);
    }

    // A reply that mentions someone tells them too.
    let root = plain["id"].as_i64().unwrap();
    let answer = reply(&s, &w.bob, ch, root, "@alice look").await;
    let events = events_on(&mut alice, &user(&w.alice)).await;
    assert_eq!(types(&events), ["mention.created"]);
    assert_eq!(events[0].1["message"], answer);
}

/// A mention is told only to those who may read the channel at the message's place in
/// the order: sends and edits that mention bob race his removal from a private channel,
/// and his own scope (never revoked) holds no `mention.created` of that channel after
/// its `channel.left` — the check is made in the message's transaction, ordered with
/// the removal's, not before it. Rounds bound the attempts to catch the race; several
/// worker threads make it likely (with the check made before the transaction, every
/// run leaked, on SQLite and on PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mention_racing_a_removal_never_follows_the_channel_left() {
    const ROUNDS: usize = 3;
    const SENDS: usize = 30;
    const EDITS: usize = 10;
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let user = format!("user:{}", w.bob.id);
    let head = s.connect(&w.bob.token).await.hello["offsets"][&user]
        .as_u64()
        .unwrap();
    let mut channels = Vec::new();
    for round in 0..ROUNDS {
        let ch = s
            .create_channel(
                &w.alice,
                w.ws,
                &format!("secret-{round}"),
                "private",
                &[&w.bob],
            )
            .await;
        channels.push(ch);
        let mut drafts = Vec::new();
        for i in 0..EDITS {
            drafts.push(s.send(&w.alice, ch, &format!("draft {i}")).await["id"].clone());
        }
        // The removal starts once a few of the writes are done, with the rest in flight.
        let done = std::sync::atomic::AtomicUsize::new(0);
        let started = tokio::sync::Notify::new();
        let finished = |status: StatusCode| {
            if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                started.notify_one();
            }
            status
        };
        let path = format!("/api/v1/channels/{ch}/messages");
        let sends = (0..SENDS).map(|i| {
            let (s, path, alice, finished) = (&s, &path, &w.alice, &finished);
            async move {
                let body = json!({ "text": format!("secret plan {i} @bob") });
                finished(s.post(path, &alice.token, body).await.status)
            }
        });
        let edits = drafts.iter().enumerate().map(|(i, id)| {
            let (s, alice, finished) = (&s, &w.alice, &finished);
            async move {
                let body = json!({ "text": format!("draft {i}, for @bob") });
                let path = format!("/api/v1/messages/{id}");
                finished(s.patch(&path, &alice.token, body).await.status)
            }
        });
        let removal = async {
            started.notified().await;
            s.delete(
                &format!("/api/v1/channels/{ch}/members/{}", w.bob.id),
                &w.alice.token,
            )
            .await
            .expect_status(StatusCode::NO_CONTENT);
        };
        let (sent, edited, ()) = tokio::join!(
            futures_util::future::join_all(sends),
            futures_util::future::join_all(edits),
            removal
        );
        assert!(sent.iter().all(|s| *s == StatusCode::CREATED), "{sent:?}");
        assert!(edited.iter().all(|s| *s == StatusCode::OK), "{edited:?}");
    }

    let mut left = Vec::new();
    let mut told = 0;
    let mut leaked = Vec::new();
    for event in s.logged_after(&w.bob, &user, head).await {
        let channel = event["data"]["channel_id"].clone();
        match event["type"].as_str().unwrap() {
            "channel.left" => left.push(channel),
            "mention.created" if left.contains(&channel) => leaked.push(event),
            "mention.created" => told += 1,
            _ => {}
        }
    }
    let channels: Vec<Value> = channels.into_iter().map(Value::from).collect();
    assert_eq!(left, channels, "bob left each channel once");
    assert!(
        leaked.is_empty(),
        "{} mention(s) after the channel.left that removed bob ({told} before): {leaked:?}",
        leaked.len()
    );
}

#[tokio::test]
async fn typing_reaches_the_other_members_never_the_typist_and_is_not_replayed() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob, &w.carol])
        .await;
    let other = s
        .create_channel(&w.alice, w.ws, "other", "public", &[&w.bob])
        .await;
    let chan = format!("channel:{ch}");
    let mut alice1 = s.connect(&w.alice.token).await;
    let mut alice2 = s.connect(&w.alice.token).await;
    let mut bob = s.connect(&w.bob.token).await;
    let mut carol = s.connect(&w.carol.token).await;
    let root = s.send(&w.bob, ch, "root").await;
    let head = alice2.barrier().await;
    let offset = head
        .iter()
        .find(|f| f["type"] == "message.created")
        .unwrap()["offset"]
        .as_u64()
        .unwrap();

    let ack = alice1
        .request(json!({"op": "typing", "channel_id": ch, "thread_id": root["id"]}))
        .await;
    assert_eq!(ack["op"], "ack", "{ack}");
    for client in [&mut bob, &mut carol] {
        let events = client.barrier().await;
        let typing: Vec<&Value> = events.iter().filter(|f| f["type"] == "typing").collect();
        assert_eq!(typing.len(), 1, "{events:?}");
        assert_eq!(typing[0]["scope"], chan);
        assert!(
            typing[0].get("offset").is_none(),
            "ephemeral: {}",
            typing[0]
        );
        assert_eq!(
            typing[0]["data"],
            json!({ "channel_id": ch, "thread_id": root["id"], "user_id": w.alice.id, "expires_in_ms": 5000 })
        );
    }
    // Never echoed to any of the typist's tabs.
    for tab in [&mut alice1, &mut alice2] {
        let echoed: Vec<Value> = tab
            .barrier()
            .await
            .into_iter()
            .filter(|f| f["type"] == "typing")
            .collect();
        assert!(echoed.is_empty(), "typing echoed to the typist: {echoed:?}");
    }

    // Not stored: a resume from before it replays the message, not the typing.
    let mut late = s.connect(&w.carol.token).await;
    let resumed = late
        .request(json!({"op": "subscribe", "scope": chan, "since": offset - 1}))
        .await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    let replayed = late.barrier().await;
    assert!(replayed.iter().any(|f| f["type"] == "message.created"));
    assert!(
        replayed.iter().all(|f| f["type"] != "typing"),
        "{replayed:?}"
    );

    // Members only; a thread of another channel is refused.
    let dave = s.create_user("dave").await;
    s.add_member(&w.alice, w.ws, &dave, "member").await;
    let mut dave = s.connect(&dave.token).await;
    let refused = dave
        .request(json!({"op": "typing", "channel_id": ch}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = bob
        .request(json!({"op": "typing", "channel_id": other, "thread_id": root["id"]}))
        .await;
    assert_eq!(refused["code"], "bad_request", "{refused}");
}

#[tokio::test]
async fn channel_life_is_live_for_every_member_tab() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "private", &[&w.bob])
        .await;
    let chan = format!("channel:{ch}");
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob1 = s.connect(&w.bob.token).await;
    let mut bob2 = s.connect(&w.bob.token).await;
    let mut carol1 = s.connect(&w.carol.token).await;
    let mut carol2 = s.connect(&w.carol.token).await;

    let renamed = s
        .patch(
            &format!("/api/v1/channels/{ch}"),
            &w.alice.token,
            json!({ "name": "launch", "topic": "Friday" }),
        )
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(
        (renamed["name"].as_str(), renamed["topic"].as_str()),
        (Some("launch"), Some("Friday"))
    );
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let events = events_on(client, &chan).await;
        assert_eq!(types(&events), ["channel.updated"]);
        assert_eq!(events[0].1, renamed);
    }
    assert_nothing_on(&mut carol1, &[&chan]).await;

    // carol is added: the members hear member.joined, every carol tab channel.joined
    // and then the channel's events.
    s.add_channel_member(&w.alice, ch, &w.carol).await;
    for client in [&mut alice, &mut bob1, &mut bob2] {
        let events = events_on(client, &chan).await;
        assert_eq!(types(&events), ["member.joined"]);
        assert_eq!(
            events[0].1,
            json!({ "channel_id": ch, "user_id": w.carol.id })
        );
    }
    s.patch(
        &format!("/api/v1/channels/{ch}"),
        &w.alice.token,
        json!({ "topic": "Saturday" }),
    )
    .await
    .expect_status(StatusCode::OK);
    for tab in [&mut carol1, &mut carol2] {
        let joined = tab.expect_event("channel.joined").await;
        assert_eq!(joined["data"]["channel"]["name"], "launch");
        let updated = tab.expect_event("channel.updated").await;
        assert_eq!(updated["data"]["topic"], "Saturday");
    }

    // bob is removed: the others hear member.left, bob's tabs channel.left and no more.
    s.delete(
        &format!("/api/v1/channels/{ch}/members/{}", w.bob.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    for client in [&mut alice, &mut carol1, &mut carol2] {
        let left = client.expect_event("member.left").await;
        assert_eq!(
            left["data"],
            json!({ "channel_id": ch, "user_id": w.bob.id })
        );
    }
    for tab in [&mut bob1, &mut bob2] {
        tab.expect_event("channel.left").await;
    }
    s.patch(
        &format!("/api/v1/channels/{ch}"),
        &w.alice.token,
        json!({ "topic": "Sunday" }),
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(
        carol1.expect_event("channel.updated").await["data"]["topic"],
        "Sunday"
    );
    for tab in [&mut bob1, &mut bob2] {
        assert_nothing_on(tab, &[&chan]).await;
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_collaboration_routes() {
    let s = TestServer::start().await;
    let doc = common::documented_routes(
        &s,
        &[
            ("/api/v1/messages/{id}/reactions/{emoji}", "put"),
            ("/api/v1/messages/{id}/reactions/{emoji}", "delete"),
            ("/api/v1/messages/{id}/pin", "put"),
            ("/api/v1/messages/{id}/pin", "delete"),
            ("/api/v1/channels/{id}/pins", "get"),
            ("/api/v1/channels/{id}/read", "post"),
            ("/api/v1/presence", "put"),
            ("/api/v1/workspaces/{id}/presence", "get"),
        ],
    )
    .await;
    for schema in [
        "Pin",
        "Presence",
        "ReadState",
        "ReactionSummary",
        "MarkRead",
        "SetStatus",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
}

/// The send path keeps the caller's token, the channel with their membership and the
/// channel's agents briefly in memory. A change made on this node is seen by the very
/// next request: a removed member cannot post, a re-added one can, a new status text
/// shows at once.
#[tokio::test]
async fn changes_take_effect_on_the_next_request_despite_the_read_cache() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let post = |text: &str| json!({ "text": text });
    let path = format!("/api/v1/channels/{ch}/messages");
    // Warm: bob's token, (general, bob) and general's agents are now kept.
    s.send(&w.bob, ch, "one").await;
    s.send(&w.bob, ch, "two").await;

    s.delete(
        &format!("/api/v1/channels/{ch}/members/{}", w.bob.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    s.post(&path, &w.bob.token, post("after removal"))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    s.add_channel_member(&w.alice, ch, &w.bob).await;
    s.send(&w.bob, ch, "back").await;

    s.call(
        Method::PUT,
        "/api/v1/presence",
        Some(&w.bob.token),
        Some(json!({ "status_text": "at lunch" })),
    )
    .await
    .expect_status(StatusCode::OK);
    let me = s
        .get("/api/v1/me", &w.bob.token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["status_text"], "at lunch", "{}", me.body);
}
