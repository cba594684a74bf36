//! Credentials with a lifecycle, end to end: API tokens created, listed and revoked;
//! a revoked or expired token refused over HTTP and on `/ws`, and the sockets it opened
//! closed with 3502 while the user's other sockets stay; deactivated users (tokens
//! refused, sockets closed, no wake and no webhook for an agent, history kept) and
//! their reactivation.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use common::{ADMIN_TOKEN, TestServer, TestUser, WAIT, WsClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// 3502: the connection's credentials stopped being valid.
const UNAUTHORIZED_CLOSE: u16 = 3502;

/// Creates a token for `user` as `by`; the whole answer.
async fn create_token(s: &TestServer, by: &str, user: i64, body: Value) -> Value {
    s.post(&format!("/api/v1/users/{user}/tokens"), by, body)
        .await
        .expect_status(StatusCode::CREATED)
        .body
}

async fn tokens_of(s: &TestServer, by: &str, user: i64) -> Vec<Value> {
    s.get(&format!("/api/v1/users/{user}/tokens"), by)
        .await
        .expect_status(StatusCode::OK)
        .body
        .as_array()
        .unwrap()
        .clone()
}

/// `user` with another token (its secret).
fn with_token(user: &TestUser, token: &Value) -> TestUser {
    TestUser {
        token: token["token"].as_str().unwrap().to_owned(),
        ..user.clone()
    }
}

/// Reads a `credentials.revoked` event, then the close; returns the event's data.
async fn revoked_then_closed(client: &mut WsClient) -> Value {
    let event = client.expect_event("credentials.revoked").await;
    assert_eq!(event["scope"], format!("user:{}", client.user_id()));
    assert_eq!(client.expect_close().await, Some(UNAUTHORIZED_CLOSE));
    event["data"].clone()
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_by_their_user_or_an_admin() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let alice = &w.alice;

    // The token issued with the user is a row like any other, named "default".
    let first = tokens_of(&s, &alice.token, alice.id).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["name"], "default");

    let created = create_token(&s, &alice.token, alice.id, json!({"name": "laptop"})).await;
    let secret = created["token"].as_str().unwrap();
    assert!(secret.starts_with("chr_"), "{created}");
    assert_eq!(created["name"], "laptop");
    assert!(created["id"].is_i64() && created["created_at"].is_string());
    assert!(created.get("expires_at").is_none(), "{created}");
    let laptop = with_token(alice, &created);
    assert_eq!(
        s.get("/api/v1/me", &laptop.token).await.body["id"],
        alice.id
    );

    // Listed without any secret or hash; oldest first.
    let listed = tokens_of(&s, &alice.token, alice.id).await;
    let names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "laptop"]);
    for token in &listed {
        let keys: Vec<&String> = token.as_object().unwrap().keys().collect();
        assert!(
            keys.iter().all(
                |k| ["id", "name", "created_at", "expires_at", "last_used_at"]
                    .contains(&k.as_str())
            ),
            "{token}"
        );
        assert!(!token.to_string().contains("chr_"), "{token}");
    }
    // The coarse last use is written off the request path, shortly after the first use.
    let used = tokio::time::timeout(WAIT, async {
        loop {
            let listed = tokens_of(&s, &alice.token, alice.id).await;
            if listed[1]["last_used_at"].is_string() {
                return listed;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("last_used_at was never written");
    assert_eq!(used[1]["id"], created["id"]);

    // Someone else's tokens: forbidden for a non-admin, allowed for a server admin.
    let path = format!("/api/v1/users/{}/tokens", alice.id);
    s.get(&path, &w.bob.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.post(&path, &w.bob.token, json!({"name": "mine now"}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let id = created["id"].as_i64().unwrap();
    s.delete(&format!("{path}/{id}"), &w.bob.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(tokens_of(&s, ADMIN_TOKEN, alice.id).await.len(), 2);
    let by_admin = create_token(&s, ADMIN_TOKEN, w.bob.id, json!({"name": "ops"})).await;
    assert_eq!(
        s.get("/api/v1/me", by_admin["token"].as_str().unwrap())
            .await
            .body["id"],
        w.bob.id
    );
    s.get("/api/v1/users/9999/tokens", ADMIN_TOKEN)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    // Bob's token under alice's path is not alice's: not found.
    let bobs = by_admin["id"].as_i64().unwrap();
    s.delete(&format!("{path}/{bobs}"), &alice.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // What a token request must look like.
    for bad in [
        json!({"name": ""}),
        json!({"name": "x".repeat(65)}),
        json!({"name": "t", "expires_in": 0}),
        json!({}),
    ] {
        s.post(&path, &alice.token, bad)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }

    // Revoked: gone from the list, refused over HTTP and on /ws, not revoked twice.
    s.delete(&format!("{path}/{id}"), &alice.token)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    s.get("/api/v1/me", &laptop.token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        s.refused_upgrade(Some(&laptop.token)).await,
        StatusCode::UNAUTHORIZED
    );
    s.delete(&format!("{path}/{id}"), &alice.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let names: Vec<Value> = tokens_of(&s, &alice.token, alice.id)
        .await
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("default")]);
    // The other token is untouched.
    s.get("/api/v1/me", &alice.token)
        .await
        .expect_status(StatusCode::OK);
}

#[tokio::test]
async fn revoking_a_token_closes_the_sockets_it_opened_and_no_other() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let alice = &w.alice;
    let created = create_token(&s, &alice.token, alice.id, json!({"name": "tab"})).await;
    let tab = with_token(alice, &created);
    let id = created["id"].as_i64().unwrap();
    let ch = s
        .create_channel(alice, w.ws, "general", "public", &[])
        .await;

    let mut keep = s.connect(&alice.token).await;
    let mut doomed = s.connect(&tab.token).await;
    let mut doomed_too = s.connect_query(&tab.token).await;
    s.delete(
        &format!("/api/v1/users/{}/tokens/{id}", alice.id),
        &alice.token,
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);

    for client in [&mut doomed, &mut doomed_too] {
        let data = revoked_then_closed(client).await;
        assert_eq!(data, json!({"reason": "token_revoked", "token_id": id}));
    }
    // The socket opened with the other token hears of it and stays open.
    let event = keep.expect_event("credentials.revoked").await;
    assert_eq!(event["data"]["token_id"], id);
    keep.ping().await;
    let sent = s.send(alice, ch, "still here").await;
    assert_eq!(
        keep.expect_event("message.created").await["data"]["id"],
        sent["id"]
    );
    s.check_invariants();
}

#[tokio::test]
async fn an_expiring_token_closes_its_socket_when_it_expires_and_is_refused_after() {
    let s = TestServer::start().await;
    let alice = s.create_user("alice").await;
    let created = create_token(
        &s,
        &alice.token,
        alice.id,
        json!({"name": "short", "expires_in": 2}),
    )
    .await;
    assert!(created["expires_at"].is_string(), "{created}");
    let short = with_token(&alice, &created);
    s.get("/api/v1/me", &short.token)
        .await
        .expect_status(StatusCode::OK);
    // It mints no token that would outlive it.
    for body in [
        json!({"name": "forever"}),
        json!({"name": "longer", "expires_in": 60}),
    ] {
        s.post(
            &format!("/api/v1/users/{}/tokens", alice.id),
            &short.token,
            body,
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let mut client = s.connect(&short.token).await;
    let mut other = s.connect(&alice.token).await;

    // No event announces an expiry: the socket just closes, with 3502.
    assert_eq!(client.expect_close().await, Some(UNAUTHORIZED_CLOSE));
    s.get("/api/v1/me", &short.token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        s.refused_upgrade(Some(&short.token)).await,
        StatusCode::UNAUTHORIZED
    );
    other.ping().await;
    // Expired tokens stay listed (with their expiry) until revoked.
    let listed = tokens_of(&s, &alice.token, alice.id).await;
    assert_eq!(listed[1]["expires_at"], created["expires_at"]);
}

/// A webhook receiver on 127.0.0.1 that records which hook (`/hook/{name}`) was called.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let hits: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook/{name}",
            axum::routing::post(
                |State(hits): State<Arc<Mutex<Vec<String>>>>, Path(name): Path<String>| async move {
                    hits.lock().unwrap().push(name);
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

async fn agent(s: &TestServer, name: &str, hook: SocketAddr) -> TestUser {
    let resp = s
        .post(
            "/api/v1/users",
            ADMIN_TOKEN,
            json!({"name": name, "kind": "agent", "webhook_url": format!("http://{hook}/hook/{name}")}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    TestUser {
        id: resp.body["user"]["id"].as_i64().unwrap(),
        name: name.to_owned(),
        token: resp.body["token"].as_str().unwrap().to_owned(),
    }
}

async fn deliveries(s: &TestServer, user: &TestUser) -> Vec<Value> {
    s.get(
        &format!("/api/v1/users/{}/webhook-deliveries", user.id),
        ADMIN_TOKEN,
    )
    .await
    .expect_status(StatusCode::OK)
    .body
    .as_array()
    .unwrap()
    .clone()
}

#[tokio::test]
async fn a_deactivated_user_is_refused_closed_never_woken_and_keeps_their_history() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let (hook, hits) = receiver().await;
    // `off` is created first: agents are woken in id order, so by the time `on` has its
    // delivery row, `off` would have had its own.
    let off = agent(&s, "off-bot", hook).await;
    let on = agent(&s, "on-bot", hook).await;
    for bot in [&off, &on] {
        s.add_member(&w.alice, w.ws, bot, "member").await;
    }
    let ch = s
        .create_channel(&w.alice, w.ws, "ops", "public", &[&off, &on])
        .await;
    let said = s.send(&off, ch, "before").await;
    let second = create_token(&s, ADMIN_TOKEN, off.id, json!({"name": "second"})).await;
    let mut socket = s.connect(&off.token).await;
    let mut socket_too = s.connect(second["token"].as_str().unwrap()).await;

    // Only server admins deactivate, and not themselves.
    let path = |id: i64, what: &str| format!("/api/v1/users/{id}/{what}");
    s.post(&path(off.id, "deactivate"), &w.alice.token, json!({}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let me = s.get("/api/v1/me", ADMIN_TOKEN).await.body;
    s.post(
        &path(me["id"].as_i64().unwrap(), "deactivate"),
        ADMIN_TOKEN,
        json!({}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.post(&path(9999, "deactivate"), ADMIN_TOKEN, json!({}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    let user = s
        .post(&path(off.id, "deactivate"), ADMIN_TOKEN, json!({}))
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert!(user["deactivated_at"].is_string(), "{user}");

    // Every socket closes (after `credentials.revoked`, no token named); every token
    // is refused.
    for client in [&mut socket, &mut socket_too] {
        let data = revoked_then_closed(client).await;
        assert_eq!(data, json!({"reason": "deactivated"}));
    }
    for token in [off.token.as_str(), second["token"].as_str().unwrap()] {
        s.get("/api/v1/me", token)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            s.refused_upgrade(Some(token)).await,
            StatusCode::UNAUTHORIZED
        );
    }

    // A message that wakes every agent member: `on` gets its webhook row (the barrier),
    // `off` none, and the receiver hears only from `on`'s hook.
    let sent = s.send(&w.alice, ch, "anyone there?").await;
    let on_rows = deliveries(&s, &on).await;
    let event_id = format!("message.created:{}", sent["id"]);
    assert!(
        on_rows.iter().any(|d| d["event_id"] == event_id.as_str()),
        "{on_rows:?}"
    );
    assert!(deliveries(&s, &off).await.is_empty());
    tokio::time::timeout(WAIT, async {
        while !hits.lock().unwrap().contains(&"on-bot".to_owned()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("on-bot's webhook was not called");
    assert!(!hits.lock().unwrap().contains(&"off-bot".to_owned()));

    // Never rotated to: a round-robin channel wakes `on` every time.
    let rr = s
        .post(
            &format!("/api/v1/workspaces/{}/channels", w.ws),
            &w.alice.token,
            json!({"name": "rr", "kind": "public", "policy": "round_robin", "member_ids": [off.id, on.id]}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["id"]
        .as_i64()
        .unwrap();
    let mut on_socket = s.connect(&on.token).await;
    for text in ["one", "two", "three"] {
        let m = s.send(&w.alice, rr, text).await;
        let frame = on_socket.expect_event("message.created").await;
        assert_eq!(frame["data"]["id"], m["id"]);
        assert_eq!(frame["wake"], true, "{frame}");
    }

    // History stays; the admin's list shows the state.
    let history = s.history(&w.alice, ch, "").await;
    assert!(history.iter().any(|m| m["id"] == said["id"]));
    let users = s.get("/api/v1/users?limit=200", ADMIN_TOKEN).await.body;
    let listed = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == off.id)
        .unwrap();
    assert!(listed["deactivated_at"].is_string(), "{listed}");
    s.get("/api/v1/users", &w.alice.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    // Reactivated: the tokens that were not revoked work again.
    let user = s
        .post(&path(off.id, "reactivate"), ADMIN_TOKEN, json!({}))
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert!(user.get("deactivated_at").is_none(), "{user}");
    s.get("/api/v1/me", &off.token)
        .await
        .expect_status(StatusCode::OK);
    let mut back = s.connect(&off.token).await;
    back.ping().await;
    s.check_invariants();
}

#[tokio::test]
async fn users_are_listed_a_page_at_a_time() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for name in ["u1", "u2", "u3"] {
        ids.push(s.create_user(name).await.id);
    }
    let page = |query: String| {
        let s = &s;
        async move {
            s.get(&format!("/api/v1/users?{query}"), ADMIN_TOKEN)
                .await
                .expect_status(StatusCode::OK)
                .body
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    // The bootstrap admin first, then the users in the order they were created.
    let all = page(String::new()).await;
    assert_eq!(all.len(), 4);
    assert_eq!(all[1..], ids[..]);
    assert_eq!(page("limit=2".into()).await, all[..2]);
    assert_eq!(page(format!("limit=2&after={}", all[1])).await, all[2..]);
    assert!(page(format!("after={}", all[3])).await.is_empty());
}

#[tokio::test]
async fn the_openapi_document_describes_the_credential_routes() {
    let s = TestServer::start().await;
    let doc = common::documented_routes(
        &s,
        &[
            ("/api/v1/users", "get"),
            ("/api/v1/users", "post"),
            ("/api/v1/users/{id}/tokens", "post"),
            ("/api/v1/users/{id}/tokens", "get"),
            ("/api/v1/users/{id}/tokens/{token_id}", "delete"),
            ("/api/v1/me/token", "delete"),
            ("/api/v1/users/{id}/deactivate", "post"),
            ("/api/v1/users/{id}/reactivate", "post"),
        ],
    )
    .await;
    let schemas = &doc["components"]["schemas"];
    for schema in ["ApiToken", "NewApiToken", "CreateToken"] {
        assert!(schemas[schema].is_object(), "schema {schema} missing");
    }
}

/// Signing out (`DELETE /api/v1/me/token`) revokes the token the request carries: it is
/// refused from then on and its socket closes with 3502; the user's other token and its
/// socket are not touched. Other credentials have no token to revoke: `404`.
#[tokio::test]
async fn signing_out_revokes_the_token_it_carries() {
    let s = TestServer::start().await;
    let bob = s.create_user("bob").await;
    let other = s.mint_token(&bob.token, bob.id, "cli").await;
    let mut signed_out = s.connect(&bob.token).await;
    let mut kept = s.connect(&other).await;

    s.delete("/api/v1/me/token", &bob.token)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let event = signed_out.expect_event("credentials.revoked").await;
    assert_eq!(event["data"]["reason"], "token_revoked", "{event}");
    assert_eq!(signed_out.expect_close().await, Some(3502));
    s.get("/api/v1/me", &bob.token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.delete("/api/v1/me/token", &bob.token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.get("/api/v1/me", &other)
        .await
        .expect_status(StatusCode::OK);
    kept.ping().await;

    s.delete("/api/v1/me/token", ADMIN_TOKEN)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    s.get("/api/v1/me", ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK);
}
