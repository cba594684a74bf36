//! Many distinct users connecting at once (a deploy, a node failover): their token,
//! membership and `last_seen` reads are answered together (`chorus_chat`'s coalesced
//! lookups). What a connection learns must stay as fresh as a read of its own: a
//! revoked token is refused on the next connect, even one whose owner was just looked
//! up (and cached); a membership change is in the next connect's scopes; every user of
//! the storm gets their own answers.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN_TOKEN, TestServer, TestUser, WAIT, WsClient};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Users connecting at once in these tests: enough that their lookups share queries.
const STORM: usize = 40;

/// `n` users, members of workspace `ws` (owned by `owner`) and of its channel `ch`.
async fn crowd(s: &TestServer, owner: &TestUser, ws: i64, n: usize) -> Vec<TestUser> {
    let names: Vec<String> = (0..n).map(|i| common::unique(&format!("u{i}"))).collect();
    let users = join_all(names.iter().map(|name| s.create_user(name))).await;
    for user in &users {
        s.add_member(owner, ws, user, "member").await;
    }
    users
}

fn scopes(client: &WsClient) -> Vec<String> {
    client.hello["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_user_of_a_storm_gets_their_own_scopes_and_presence() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let users = crowd(&s, &w.alice, w.ws, STORM).await;
    // Every other user is also in a private channel: the scopes differ per user.
    let odd: Vec<&TestUser> = users.iter().skip(1).step_by(2).collect();
    let private = s
        .create_channel(&w.alice, w.ws, "odd", "private", &odd)
        .await;

    let clients = join_all(users.iter().map(|u| s.connect(&u.token))).await;
    for (i, (user, client)) in users.iter().zip(&clients).enumerate() {
        assert_eq!(
            client.user_id(),
            user.id,
            "each connection is its own user's"
        );
        let scopes = scopes(client);
        assert!(scopes.contains(&format!("user:{}", user.id)), "{scopes:?}");
        assert!(
            scopes.contains(&format!("workspace:{}", w.ws)),
            "{scopes:?}"
        );
        assert_eq!(
            scopes.contains(&format!("channel:{private}")),
            i % 2 == 1,
            "user {i}: {scopes:?}"
        );
    }

    // Each user came online with a `last_seen` of their own (written together).
    for user in &users {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let me = s.get("/api/v1/presence", &user.token).await.body;
            if me["online"] == true && me["last_seen"].is_string() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never online: {me}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    s.check_invariants();
}

/// Each presence change a frame carries, as `(user_id, online, last_seen)`: a
/// `presence.batch` stands for one change per user of each of its groups.
fn presence_changes(frame: &Value) -> Vec<(i64, bool, Value)> {
    let changes = match frame["type"].as_str() {
        Some("presence.updated") => vec![frame["data"].clone()],
        Some("presence.batch") => common::presence_batch(&frame["data"]),
        _ => Vec::new(),
    };
    changes
        .into_iter()
        .map(|p| {
            let user = p["user_id"].as_i64().unwrap();
            (user, p["online"] == true, p["last_seen"].clone())
        })
        .collect()
}

/// A storm's presence, coalesced and grouped, still reaches every connection: one
/// connected before it hears every user of the storm come online with the `last_seen`
/// the server recorded, and each user of the storm, from a snapshot read after it
/// connected plus the events it heard, ends up seeing everyone online.
#[tokio::test]
async fn every_connection_hears_everyone_of_a_storm_come_online() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let users = crowd(&s, &w.alice, w.ws, STORM).await;
    let mut watcher = s.connect(&w.alice.token).await;
    watcher.presence = true;
    watcher.ping().await;

    // A connection's first ping is answered once its connect hook returned (the session
    // reads frames only then): its user's coming online is announced or waits in a
    // batch, which `settle_presence` then waits for.
    let mut clients = join_all(users.iter().map(|u| async {
        let mut client = s.connect(&u.token).await;
        client.presence = true;
        client.ping().await;
        let path = format!("/api/v1/workspaces/{}/presence", w.ws);
        let snapshot = s.get(&path, &u.token).await.body;
        (client, snapshot)
    }))
    .await;
    s.settle_presence(0).await;

    let stored = s
        .get(
            &format!("/api/v1/workspaces/{}/presence", w.ws),
            &w.alice.token,
        )
        .await
        .body;
    let last_seen = |user: i64| -> Value {
        let entry = stored
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["user_id"] == user)
            .unwrap();
        assert_eq!(entry["online"], true, "{entry}");
        entry["last_seen"].clone()
    };

    let heard: Vec<(i64, bool, Value)> = watcher
        .barrier()
        .await
        .iter()
        .flat_map(presence_changes)
        .collect();
    for user in &users {
        let about: Vec<_> = heard.iter().filter(|(u, ..)| *u == user.id).collect();
        assert_eq!(about.len(), 1, "user {}: {about:?}", user.id);
        assert!(about[0].1, "online");
        assert_eq!(about[0].2, last_seen(user.id), "the recorded last_seen");
    }

    for (user, (client, snapshot)) in users.iter().zip(&mut clients) {
        let mut online: std::collections::HashMap<i64, bool> = snapshot
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["user_id"].as_i64().unwrap(), p["online"] == true))
            .collect();
        for (u, is_online, _) in client.barrier().await.iter().flat_map(presence_changes) {
            online.insert(u, is_online);
        }
        for other in &users {
            assert_eq!(
                online.get(&other.id),
                Some(&true),
                "user {} does not see user {} online",
                user.id,
                other.id
            );
        }
    }
    s.check_invariants();
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_the_next_connect_even_when_just_looked_up() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let users = crowd(&s, &w.alice, w.ws, STORM).await;
    let bob = &w.bob;
    let laptop: Value = s
        .post(
            &format!("/api/v1/users/{}/tokens", bob.id),
            &bob.token,
            json!({"name": "laptop"}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body;
    let secret = laptop["token"].as_str().unwrap().to_owned();

    // Looked up with a storm of others: the token's owner is now cached.
    let mut tokens: Vec<String> = users.iter().map(|u| u.token.clone()).collect();
    tokens.push(secret.clone());
    let clients = join_all(tokens.iter().map(|t| s.connect(t))).await;
    assert_eq!(clients.last().unwrap().user_id(), bob.id);
    drop(clients);

    s.delete(
        &format!("/api/v1/users/{}/tokens/{}", bob.id, laptop["id"]),
        &bob.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    // Refused at once, and in the middle of another storm too.
    assert_eq!(
        s.refused_upgrade(Some(&secret)).await,
        StatusCode::UNAUTHORIZED
    );
    let others = join_all(users.iter().map(|u| s.connect(&u.token)));
    let (others, refused) = tokio::join!(others, s.refused_upgrade(Some(&secret)));
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
    assert_eq!(others.len(), STORM);
    // The user's other token still works.
    assert_eq!(s.connect(&bob.token).await.user_id(), bob.id);
}

#[tokio::test]
async fn a_membership_change_is_in_the_next_connects_scopes() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let users = crowd(&s, &w.alice, w.ws, STORM).await;
    let carol = &w.carol;
    let ch = s
        .create_channel(&w.alice, w.ws, "later", "private", &[])
        .await;
    let scope = format!("channel:{ch}");

    let connect_with_storm = || async {
        let storm = join_all(users.iter().map(|u| s.connect(&u.token)));
        let (_storm, carol) = tokio::join!(storm, s.connect(&carol.token));
        carol
    };
    assert!(!scopes(&connect_with_storm().await).contains(&scope));

    s.add_channel_member(&w.alice, ch, carol).await;
    assert!(
        scopes(&connect_with_storm().await).contains(&scope),
        "joined: the next connect subscribes the channel"
    );

    s.delete(
        &format!("/api/v1/channels/{ch}/members/{}", carol.id),
        &w.alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    assert!(
        !scopes(&connect_with_storm().await).contains(&scope),
        "left: the next connect does not"
    );

    // Removed from the workspace: neither it nor its channels.
    s.delete(
        &format!("/api/v1/workspaces/{}/members/{}", w.ws, carol.id),
        ADMIN_TOKEN,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    let scopes = scopes(&connect_with_storm().await);
    assert!(
        !scopes.contains(&format!("workspace:{}", w.ws)),
        "{scopes:?}"
    );
}
