//! The event log (docs/design-event-log.md): resume that survives a restart, offsets
//! in commit order, and the complete catch-up over HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Reads events until one of `kind` with `data.text == text` arrives; returns them all.
async fn until_text(ws: &mut common::WsClient, text: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let frame = ws.recv_json().await;
        if frame["op"] != "event" {
            continue;
        }
        let done = frame["data"]["text"] == text;
        got.push(frame);
        if done {
            return got;
        }
    }
}

#[tokio::test]
async fn a_resume_after_a_restart_replays_exactly_what_was_missed() {
    let mut s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let scope = format!("channel:{ch}");
    let mut bob = s.connect(&w.bob.token).await;
    s.send(&w.alice, ch, "seen").await;
    let seen = bob.expect_event("message.created").await;
    let position = seen["offset"].as_u64().unwrap();
    drop(bob);

    // Missed while away: sends, an edit, a reaction, a reply.
    let mut expected = Vec::new();
    for i in 0..5 {
        let m = s.send(&w.alice, ch, &format!("away {i}")).await;
        expected.push(("message.created", m["id"].as_i64().unwrap()));
    }
    let first = expected[0].1;
    s.patch(
        &format!("/api/v1/messages/{first}"),
        &w.alice.token,
        json!({"text": "away 0, edited"}),
    )
    .await
    .expect_status(StatusCode::OK);
    s.post(
        &format!("/api/v1/channels/{ch}/messages"),
        &w.alice.token,
        json!({"text": "a reply", "thread_id": first}),
    )
    .await
    .expect_status(StatusCode::CREATED);

    s.restart().await;

    let mut bob = s.connect_resuming(&w.bob.token).await;
    let reply = bob
        .request(json!({"op": "resume", "positions": {scope.clone(): position}}))
        .await;
    assert_eq!(reply["scopes"][&scope]["recovered"], true, "{reply}");
    let marker = s.send(&w.alice, ch, "after the restart").await;
    let got = until_text(&mut bob, "after the restart").await;
    let on_channel: Vec<&Value> = got.iter().filter(|f| f["scope"] == scope).collect();
    let offsets: Vec<u64> = on_channel
        .iter()
        .map(|f| f["offset"].as_u64().unwrap())
        .collect();
    let consecutive: Vec<u64> = (position + 1..=position + offsets.len() as u64).collect();
    assert_eq!(
        offsets, consecutive,
        "every event once, in offset order: {got:#?}"
    );
    let created: Vec<i64> = on_channel
        .iter()
        .filter(|f| f["type"] == "message.created" && f["data"]["thread_id"].is_null())
        .map(|f| f["data"]["id"].as_i64().unwrap())
        .collect();
    let mut want: Vec<i64> = expected.iter().map(|e| e.1).collect();
    want.push(marker["id"].as_i64().unwrap());
    assert_eq!(created, want);
    let kinds: Vec<&str> = on_channel
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"message.updated"), "{kinds:?}");
}

#[tokio::test]
async fn offsets_keep_rising_across_restarts() {
    let mut s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let mut bob = s.connect(&w.bob.token).await;
    s.send(&w.alice, ch, "one").await;
    let before = bob.expect_event("message.created").await["offset"]
        .as_u64()
        .unwrap();
    drop(bob);
    s.restart().await;
    let mut bob = s.connect(&w.bob.token).await;
    let hello_offset = bob.hello["offsets"][format!("channel:{ch}")]
        .as_u64()
        .unwrap();
    assert_eq!(hello_offset, before, "the head survived the restart");
    s.send(&w.alice, ch, "two").await;
    let after = bob.expect_event("message.created").await["offset"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 1);
}

#[tokio::test]
async fn concurrent_sends_get_offsets_in_commit_order() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "busy", "public", &[&w.bob])
        .await;
    let mut bob = s.connect(&w.bob.token).await;
    const SENDS: usize = 200;
    let url = s.url(&format!("/api/v1/channels/{ch}/messages"));
    let tasks: Vec<_> = (0..SENDS)
        .map(|i| {
            let (http, url, token) = (s.http.clone(), url.clone(), w.alice.token.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"text": format!("c{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::CREATED);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut ids = Vec::new();
    let mut offsets = Vec::new();
    while ids.len() < SENDS {
        let frame = bob.expect_event("message.created").await;
        ids.push(frame["data"]["id"].as_i64().unwrap());
        offsets.push(frame["offset"].as_u64().unwrap());
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "messages arrive in id (commit) order");
    let first = offsets[0];
    let consecutive: Vec<u64> = (first..first + SENDS as u64).collect();
    assert_eq!(
        offsets, consecutive,
        "offsets consecutive, in delivery order"
    );
}

#[tokio::test]
async fn http_catch_up_returns_every_event_after_an_offset_in_pages() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let scope = format!("channel:{ch}");
    let mut bob = s.connect(&w.bob.token).await;
    let start = bob.hello["offsets"][&scope].as_u64().unwrap();

    let m = s.send(&w.alice, ch, "hello").await;
    let id = m["id"].as_i64().unwrap();
    s.patch(
        &format!("/api/v1/messages/{id}"),
        &w.alice.token,
        json!({"text": "hello!"}),
    )
    .await
    .expect_status(StatusCode::OK);
    s.call(
        reqwest::Method::PUT,
        &format!("/api/v1/messages/{id}/reactions/%F0%9F%91%8D"),
        Some(&w.bob.token),
        None,
    )
    .await
    .expect_status(StatusCode::OK);
    s.post(
        &format!("/api/v1/channels/{ch}/messages"),
        &w.bob.token,
        json!({"text": "a reply", "thread_id": id}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    s.delete(&format!("/api/v1/messages/{id}"), &w.alice.token)
        .await
        .expect_status(StatusCode::OK);
    let marker = s.send(&w.alice, ch, "last").await;

    // What the socket delivered is the reference.
    let live: Vec<Value> = until_text(&mut bob, "last")
        .await
        .into_iter()
        .filter(|f| f["scope"] == scope)
        .map(|mut f| {
            f.as_object_mut().unwrap().remove("op");
            f
        })
        .collect();
    assert_eq!(live.last().unwrap()["data"], marker);

    let encoded = scope.replace(':', "%3A");
    let mut after = start;
    let mut paged = Vec::new();
    loop {
        let page = s
            .get(
                &format!("/api/v1/scopes/{encoded}/events?after={after}&limit=2"),
                &w.bob.token,
            )
            .await
            .expect_status(StatusCode::OK)
            .body;
        paged.extend(page["events"].as_array().unwrap().iter().cloned());
        after = page["next"].as_u64().unwrap();
        if page["more"] == false {
            assert_eq!(page["head"].as_u64(), Some(after));
            break;
        }
    }
    assert_eq!(paged, live, "HTTP catch-up = what the socket delivered");
    let kinds: BTreeMap<&str, usize> = paged.iter().fold(BTreeMap::new(), |mut m, f| {
        *m.entry(f["type"].as_str().unwrap()).or_default() += 1;
        m
    });
    for kind in [
        "message.created",
        "message.updated",
        "reaction.added",
        "message.deleted",
    ] {
        assert!(kinds.contains_key(kind), "{kind} missing from {kinds:?}");
    }

    // Past the head: a position of another database.
    s.get(
        &format!("/api/v1/scopes/{encoded}/events?after={}", after + 5),
        &w.bob.token,
    )
    .await
    .expect_error(StatusCode::GONE, "gone");
    // Trimmed away: gone, reload instead.
    s.state()
        .chat
        .trim_event_log(2, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    s.get(
        &format!("/api/v1/scopes/{encoded}/events?after={start}"),
        &w.bob.token,
    )
    .await
    .expect_error(StatusCode::GONE, "gone");
    // The last two are still there.
    let tail = s
        .get(
            &format!("/api/v1/scopes/{encoded}/events?after={}", after - 2),
            &w.bob.token,
        )
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(tail["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn http_catch_up_is_authorized_like_a_subscription() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let private = s
        .create_channel(&w.alice, w.ws, "secret", "private", &[&w.bob])
        .await;
    s.send(&w.alice, private, "for members").await;
    let path = format!("/api/v1/scopes/channel%3A{private}/events?after=0");
    s.get(&path, &w.carol.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let bob_scope = format!("/api/v1/scopes/user%3A{}/events?after=0", w.bob.id);
    s.get(&bob_scope, &w.carol.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.get("/api/v1/scopes/nonsense/events?after=0", &w.bob.token)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    s.get(
        &format!("/api/v1/scopes/channel%3A{private}/events?after=0&limit=0"),
        &w.bob.token,
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    // A member reads it (after=0: older than anything kept, so gone: reload).
    s.get(&path, &w.bob.token)
        .await
        .expect_error(StatusCode::GONE, "gone");
}

/// Two tabs moving one read cursor at once: the user's `read.updated` events are logged
/// with the moves, so in offset order (their versions) the cursor only rises and the
/// last one is where the cursor is.
#[tokio::test]
async fn read_events_follow_the_cursors_commit_order() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "reads", "public", &[&w.bob])
        .await;
    let scope = format!("user:{}", w.bob.id);
    let bob = s.connect(&w.bob.token).await;
    let start = bob.hello["offsets"][&scope].as_u64().unwrap_or(0);
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            s.send(&w.alice, ch, &format!("m{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let url = s.url(&format!("/api/v1/channels/{ch}/read"));
    let tasks: Vec<_> = ids
        .iter()
        .map(|&id| {
            let (http, url, token) = (s.http.clone(), url.clone(), w.bob.token.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"message_id": id}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let encoded = scope.replace(':', "%3A");
    let page = s
        .get(
            &format!("/api/v1/scopes/{encoded}/events?after={start}&limit=500"),
            &w.bob.token,
        )
        .await
        .expect_status(StatusCode::OK)
        .body;
    let cursors: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "read.updated")
        .map(|e| e["data"]["message_id"].as_i64().unwrap())
        .collect();
    assert!(!cursors.is_empty(), "read moves are logged");
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "in offset order the cursor only rises: {cursors:?}"
    );
    assert_eq!(cursors.last(), ids.last(), "the last event is the cursor");
}

/// Every event of `scope` after `after` that `token`'s user gets over HTTP
/// (`GET /api/v1/scopes/{scope}/events`), read in pages of `limit`.
async fn caught_up(s: &TestServer, token: &str, scope: &str, after: u64, limit: u32) -> Vec<Value> {
    let encoded = scope.replace(':', "%3A");
    let mut after = after;
    let mut got = Vec::new();
    loop {
        let page = s
            .get(
                &format!("/api/v1/scopes/{encoded}/events?after={after}&limit={limit}"),
                token,
            )
            .await
            .expect_status(StatusCode::OK)
            .body;
        got.extend(page["events"].as_array().unwrap().iter().cloned());
        after = page["next"].as_u64().unwrap();
        if page["more"] == false {
            return got;
        }
    }
}

/// Bob in a private channel of alice's: his position in it, then "before" sent, then
/// he leaves. (server, world, channel, his position from before both)
async fn bob_left_after_before() -> (TestServer, common::World, i64, u64) {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "private", "private", &[&w.bob])
        .await;
    let bob = s.connect(&w.bob.token).await;
    let start = bob.hello["offsets"][&format!("channel:{ch}")]
        .as_u64()
        .unwrap();
    bob.close().await;

    s.send(&w.alice, ch, "before").await;
    s.post(
        &format!("/api/v1/channels/{ch}/leave"),
        &w.bob.token,
        json!({}),
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    (s, w, ch, start)
}

/// What `token`'s user gets of `scope` from the position `start`: the events of type
/// `kind`, each named by its `data[field]` — by HTTP catch-up in pages of 100 and of 1,
/// `expected`; by a resume, `expected` and then `"live"`, the one `live` makes happen
/// once the resume is acked.
async fn replayed_as<T>(
    s: &TestServer,
    token: &str,
    scope: &str,
    start: u64,
    (kind, field): (&str, &str),
    expected: &[&str],
    live: impl std::future::Future<Output = T>,
) {
    let names = |frames: &[Value]| -> Vec<String> {
        frames
            .iter()
            .filter(|f| f["scope"] == scope && f["type"] == kind)
            .map(|f| f["data"][field].as_str().unwrap().to_owned())
            .collect()
    };
    for limit in [100, 1] {
        let got = caught_up(s, token, scope, start, limit).await;
        assert_eq!(names(&got), expected, "catch-up, pages of {limit}");
    }
    let mut ws = s.connect_resuming(token).await;
    let reply = ws
        .request(json!({"op": "resume", "positions": {scope: start}}))
        .await;
    assert_eq!(reply["op"], "ack", "{reply}");
    live.await;
    let mut frames = Vec::new();
    while names(&frames).last().map(String::as_str) != Some("live") {
        frames.push(ws.recv_json().await);
    }
    let mut expected = expected.to_vec();
    expected.push("live");
    assert_eq!(names(&frames), expected, "resume");
}

/// Bob, back in alice's channel `ch` after [`bob_left_after_before`]: "back" is sent,
/// and from `start` he is [`replayed_as`] "before" and "back" (then "live").
async fn bob_gets_before_and_back(s: &TestServer, w: &common::World, ch: i64, start: u64) {
    s.send(&w.alice, ch, "back").await;
    let live = s.send(&w.alice, ch, "live");
    replayed_as(
        s,
        &w.bob.token,
        &format!("channel:{ch}"),
        start,
        ("message.created", "text"),
        &["before", "back"],
        live,
    )
    .await;
}

/// A member of a private channel leaves, a message is sent, they are added back: a
/// resume or an HTTP catch-up from a position before the leave gives them what they
/// were there for, never the message of the time they were out.
#[tokio::test]
async fn nothing_of_the_time_out_of_a_channel_is_replayed_or_caught_up() {
    let (s, w, ch, start) = bob_left_after_before().await;
    s.send(&w.alice, ch, "while out").await;
    s.add_channel_member(&w.alice, ch, &w.bob).await;
    bob_gets_before_and_back(&s, &w, ch, start).await;
}

/// The same for a workspace: a member is removed, a public channel is created (an event
/// of the workspace's scope), they are added back. A resume or an HTTP catch-up of the
/// `workspace:` scope from a position before the removal gives them the channels
/// created while they were a member, never the one created while they were out.
#[tokio::test]
async fn nothing_of_the_time_out_of_a_workspace_is_replayed_or_caught_up() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let scope = format!("workspace:{}", w.ws);
    let bob = s.connect(&w.bob.token).await;
    let start = bob.hello["offsets"][&scope].as_u64().unwrap();
    bob.close().await;

    s.create_channel(&w.alice, w.ws, "before", "public", &[])
        .await;
    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, w.bob.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    s.create_channel(&w.alice, w.ws, "while-out", "public", &[])
        .await;
    s.add_member(&w.alice, w.ws, &w.bob, "member").await;
    s.create_channel(&w.alice, w.ws, "back", "public", &[])
        .await;

    let live = s.create_channel(&w.alice, w.ws, "live", "public", &[]);
    replayed_as(
        &s,
        &w.bob.token,
        &scope,
        start,
        ("channel.created", "name"),
        &["before", "back"],
        live,
    )
    .await;
}

/// The same with a time out longer than a catch-up looks past its page in one read
/// (1,000 events): short pages read from inside that time get none of it. Before: a
/// page whose look past it did not reach the re-join counted the caller in, and
/// `limit=10` pages gave them the channel's messages of the time they were out.
#[tokio::test]
async fn a_long_time_out_of_a_channel_is_not_caught_up_in_short_pages() {
    let (s, w, ch, start) = bob_left_after_before().await;
    let scope = format!("channel:{ch}");
    for i in 0..1_020 {
        s.send(&w.alice, ch, &format!("while out {i}")).await;
    }
    s.add_channel_member(&w.alice, ch, &w.bob).await;
    s.send(&w.alice, ch, "back").await;

    // Pages of 10: the first from inside the time out looks 1,000 past its end, short
    // of the re-join 1,020 messages on.
    let got = caught_up(&s, &w.bob.token, &scope, start, 10).await;
    let texts: Vec<&str> = got
        .iter()
        .filter(|f| f["type"] == "message.created")
        .map(|f| f["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["before", "back"]);
}

/// `token`'s user asks for `scope` from `start`, a position from before their access to
/// it began: the HTTP catch-up answers 410 (they reload) and a subscribe from there is
/// not recovered, giving nothing of the time before (`secret` is never read).
async fn not_replayed_from_before(
    s: &TestServer,
    token: &str,
    scope: &str,
    start: u64,
    secret: &str,
) {
    let encoded = scope.replace(':', "%3A");
    s.get(
        &format!("/api/v1/scopes/{encoded}/events?after={start}"),
        token,
    )
    .await
    .expect_status(StatusCode::GONE);
    let mut ws = s.connect(token).await;
    let ack = ws
        .request(json!({"op": "subscribe", "scope": scope, "since": start}))
        .await;
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(ack["recovered"], false, "{ack}");
    // Whatever a replay queued came before the subscribe's ack, and the ping's.
    let frames = ws.barrier().await;
    assert!(
        !frames.iter().any(|f| f.to_string().contains(secret)),
        "replayed from before the access: {frames:?}"
    );
}

/// Sends `text` as a reply in thread `root` of channel `ch`, then deletes it; its id.
async fn replied_and_deleted(
    s: &TestServer,
    by: &common::TestUser,
    ch: i64,
    root: i64,
    text: &str,
) {
    let reply = s
        .post(
            &format!("/api/v1/channels/{ch}/messages"),
            &by.token,
            json!({"text": text, "thread_id": root}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body;
    s.delete(&format!("/api/v1/messages/{}", reply["id"]), &by.token)
        .await
        .expect_status(StatusCode::OK);
}

/// A thread's log marks nobody's joins: a position in it from before its reader's
/// access to the channel began — they were out of the private channel meanwhile, or
/// never in it — gives nothing, by a subscribe or a resume or over HTTP; never the
/// replies of that time, a deleted one's text included. Before: both gave them.
#[tokio::test]
async fn a_thread_is_not_replayed_from_before_access_to_its_channel() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "private", "private", &[&w.bob])
        .await;
    let root = s.send(&w.alice, ch, "root").await["id"].as_i64().unwrap();
    let scope = format!("thread:{root}");
    let mut bob = s.connect(&w.bob.token).await;
    let start = bob.subscribe(&scope).await["offset"].as_u64().unwrap();
    bob.close().await;

    s.delete(
        &format!("/api/v1/channels/{ch}/members/{}", w.bob.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    replied_and_deleted(&s, &w.alice, ch, root, "while out").await;
    // The log's times are to the millisecond: the joins are logged after the reply.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    s.add_channel_member(&w.alice, ch, &w.bob).await;
    s.add_channel_member(&w.alice, ch, &w.carol).await;
    for who in [&w.bob, &w.carol] {
        not_replayed_from_before(&s, &who.token, &scope, start, "while out").await;
    }

    // A position of their own time in the channel is caught up as ever.
    let mut bob = s.connect(&w.bob.token).await;
    let since = bob.subscribe(&scope).await["offset"].as_u64().unwrap();
    bob.close().await;
    replied_and_deleted(&s, &w.alice, ch, root, "back").await;
    let got = caught_up(&s, &w.bob.token, &scope, since, 100).await;
    assert_eq!(got[0]["data"]["text"], "back", "{got:?}");
}

/// A public channel is read through its workspace, whose joins the channel's log does
/// not mark: a position in it from before the reader's access through the workspace
/// began — removed and added back, added for the first time, or a guest made a member
/// — gives nothing of that time. Before: the messages sent meanwhile, deleted ones'
/// text included.
#[tokio::test]
async fn a_public_channel_is_not_replayed_from_before_joining_its_workspace() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "open", "public", &[])
        .await;
    let scope = format!("channel:{ch}");
    let erin = s.create_user("erin").await;
    s.add_member(&w.alice, w.ws, &erin, "guest").await;
    let mut bob = s.connect(&w.bob.token).await;
    let start = bob.subscribe(&scope).await["offset"].as_u64().unwrap();
    bob.close().await;

    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, w.bob.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    let secret = s.send(&w.alice, ch, "while out").await;
    s.delete(
        &format!("/api/v1/messages/{}", secret["id"]),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    s.add_member(&w.alice, w.ws, &w.bob, "member").await;
    let dave = s.create_user("dave").await;
    s.add_member(&w.alice, w.ws, &dave, "member").await;
    // A guest (who reads no public channel without joining it) made a member.
    s.set_role(&w.alice, w.ws, &erin, "member")
        .await
        .expect_status(StatusCode::OK);
    for token in [&w.bob.token, &dave.token, &erin.token] {
        not_replayed_from_before(&s, token, &scope, start, "while out").await;
    }

    // Carol, in the workspace all along, catches up from the same position as ever.
    let got = caught_up(&s, &w.carol.token, &scope, start, 100).await;
    assert!(
        got.iter().any(|e| e["data"]["text"] == "while out"),
        "{got:?}"
    );
}

/// A guest reads a public channel, and its threads, only as a member of it: a thread
/// position of theirs from before they were last added to the channel gives nothing
/// of the time they were out (their workspace membership is older).
#[tokio::test]
async fn a_guests_thread_of_a_public_channel_is_not_replayed_from_their_time_out() {
    let s = TestServer::start_with(|c| c.http_per_sec = 0).await;
    let w = s.world().await;
    let erin = s.create_user("erin").await;
    s.add_member(&w.alice, w.ws, &erin, "guest").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "open", "public", &[&erin])
        .await;
    let root = s.send(&w.alice, ch, "root").await["id"].as_i64().unwrap();
    let scope = format!("thread:{root}");
    let mut ws = s.connect(&erin.token).await;
    let start = ws.subscribe(&scope).await["offset"].as_u64().unwrap();
    ws.close().await;

    s.delete(
        &format!("/api/v1/channels/{ch}/members/{}", erin.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    replied_and_deleted(&s, &w.alice, ch, root, "while out").await;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    s.add_channel_member(&w.alice, ch, &erin).await;
    not_replayed_from_before(&s, &erin.token, &scope, start, "while out").await;
    // Bob, a member reading the public channel through the workspace all along, gets it.
    let got = caught_up(&s, &w.bob.token, &scope, start, 100).await;
    assert_eq!(got[0]["data"]["text"], "while out", "{got:?}");
}

/// A private channel's log marks its members' joins and leaves, a workspace removal's
/// too: a member removed from the workspace and added back (to it and the channel)
/// resumes and catches up the channel from before, exactly — what came before the
/// removal and after the re-join, never the time out, and no reload.
#[tokio::test]
async fn a_channel_is_caught_up_exactly_across_a_workspace_removal() {
    let (s, w, ch, start) = bob_left_after_before().await;
    s.add_channel_member(&w.alice, ch, &w.bob).await;
    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, w.bob.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    s.send(&w.alice, ch, "while out").await;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    s.add_member(&w.alice, w.ws, &w.bob, "member").await;
    s.add_channel_member(&w.alice, ch, &w.bob).await;
    bob_gets_before_and_back(&s, &w, ch, start).await;
}
