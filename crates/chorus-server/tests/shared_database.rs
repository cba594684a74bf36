//! Several nodes over one PostgreSQL database, started at the same moment: both
//! migrate and bootstrap without tripping over each other, and what one node writes the
//! other serves. (Live events across nodes are the Redis broker's business, not tested
//! here.) Needs `CHORUS_TEST_POSTGRES_URL`, so the test is `#[ignore]`d: reported
//! skipped (never passed) by a plain `cargo nextest run`; `scripts/test` runs it with
//! `--run-ignored all`.

#![allow(clippy::unwrap_used)]

mod common;

use chorus_chat::testing::ScratchDatabase;
use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn shared_database() -> ScratchDatabase {
    let admin_url = std::env::var("CHORUS_TEST_POSTGRES_URL").expect(
        "needs CHORUS_TEST_POSTGRES_URL: run `scripts/services start` and source its env file",
    );
    ScratchDatabase::create(&admin_url).await.unwrap()
}

/// An idempotent send through `node`: (status, replayed header, body).
async fn keyed_send(
    node: &TestServer,
    token: &str,
    channel: i64,
    key: &str,
    text: &str,
) -> (StatusCode, bool, Value) {
    let resp = node
        .http
        .post(node.url(&format!("/api/v1/channels/{channel}/messages")))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    (status, replayed, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHORUS_TEST_POSTGRES_URL: scripts/test runs it (--run-ignored all)"]
async fn nodes_on_one_database_serve_each_others_writes() {
    // Declared first, so it is dropped after both servers.
    let db = shared_database().await;
    let url = db.url().to_owned();
    let on_shared = |url: String| move |c: &mut chorus_server::Config| c.database_url = Some(url);
    let (mut a, mut b) = tokio::join!(
        TestServer::start_with(on_shared(url.clone())),
        TestServer::start_with(on_shared(url)),
    );

    // Users, tokens and memberships made on one node hold on the other.
    let w = a.world().await;
    let me = b
        .get("/api/v1/me", &w.bob.token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["id"].as_i64(), Some(w.bob.id));
    let ch = b
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;

    let first = a.send(&w.alice, ch, "from a").await;
    let second = b.send(&w.bob, ch, "from b").await;
    for node in [&a, &b] {
        let history = node.history(&w.carol, ch, "").await;
        let ids: Vec<&Value> = history.iter().map(|m| &m["id"]).collect();
        assert_eq!(ids, vec![&first["id"], &second["id"]]);
    }
    let listed = a
        .get(
            &format!("/api/v1/workspaces/{}/channels", w.ws),
            &w.bob.token,
        )
        .await
        .expect_status(StatusCode::OK);
    let general = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == ch)
        .unwrap();
    assert_eq!(
        general["unread"], 1,
        "alice's message, sent on the other node"
    );

    // A send retried on the other node is a replay of the first, not a second message.
    let sent = keyed_send(&a, &w.alice.token, ch, "retry-1", "once").await;
    let retried = keyed_send(&b, &w.alice.token, ch, "retry-1", "once").await;
    assert_eq!((sent.0, sent.1), (StatusCode::CREATED, false));
    assert!(retried.0.is_success());
    assert!(retried.1, "the retry is marked as a replay");
    assert_eq!(sent.2, retried.2);
    let history = a.history(&w.alice, ch, "").await;
    assert_eq!(history.iter().filter(|m| m["text"] == "once").count(), 1);

    // Concurrent DM opens on both nodes end in one DM.
    let dms = format!("/api/v1/workspaces/{}/dms", w.ws);
    let body = json!({ "user_ids": [w.carol.id] });
    let (from_a, from_b) = tokio::join!(
        a.post(&dms, &w.alice.token, body.clone()),
        b.post(&dms, &w.alice.token, body.clone()),
    );
    assert!(from_a.status.is_success() && from_b.status.is_success());
    assert_eq!(from_a.body["id"], from_b.body["id"]);

    a.stop().await;
    b.stop().await;
}
