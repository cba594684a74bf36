//! The HTTP API: authentication (opaque tokens, JWT), authorization, editing, history
//! paging and the OpenAPI document.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const JWT_SECRET: &str = "an-application-secret-at-least-32-bytes";

fn jwt(secret: &str, sub: &str, exp_from_now: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({ "sub": sub, "exp": now + exp_from_now, "iat": now });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn requests_without_valid_credentials_are_refused() {
    let s = TestServer::start().await;
    let bob = s.create_user("bob").await;

    let resp = s.call(Method::GET, "/api/v1/me", None, None).await;
    let resp = resp.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(resp.headers.contains_key("www-authenticate"));
    for bad in [
        "nonsense",
        "chr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "eyJhbGciOiJIUzI1NiJ9.e30.x",
    ] {
        s.call(Method::GET, "/api/v1/me", Some(bad), None)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Not a bearer scheme at all.
    let resp = s
        .http
        .get(s.url("/api/v1/me"))
        .basic_auth("bob", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Creating users needs the admin token, not just any token.
    s.post("/api/v1/users", &bob.token, json!({ "name": "mallory" }))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    let me = s
        .get("/api/v1/me", &bob.token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["id"], bob.id);
    assert_eq!(me.body["name"], "bob");

    // The WebSocket: refused before the upgrade without a valid token.
    assert_eq!(s.refused_upgrade(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.refused_upgrade(Some("nonsense")).await,
        StatusCode::UNAUTHORIZED
    );
    // Header or query string both work.
    let ws = s.connect(&bob.token).await;
    assert_eq!(ws.user_id(), bob.id);
    assert_eq!(ws.hello["scopes"][0], format!("user:{}", bob.id));
    let mut ws = s.connect_query(&bob.token).await;
    assert_eq!(ws.user_id(), bob.id);
    ws.ping().await;
}

#[tokio::test]
async fn application_jwts_authenticate_until_they_expire() {
    let s = TestServer::start_with(|c| c.jwt_secret = Some(JWT_SECRET.to_owned())).await;
    let bob = s.create_user("bob").await;

    let token = jwt(JWT_SECRET, "bob", 600);
    let me = s
        .get("/api/v1/me", &token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["id"], bob.id);
    // `sub` may also be the user id.
    let by_id = jwt(JWT_SECRET, &bob.id.to_string(), 600);
    let me = s
        .get("/api/v1/me", &by_id)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["name"], "bob");

    let mut ws = s.connect(&token).await;
    assert_eq!(ws.user_id(), bob.id);
    ws.ping().await;
    let mut ws = s.connect_query(&token).await;
    assert_eq!(ws.user_id(), bob.id);

    // Expired (well past any leeway), signed with another secret, or naming nobody.
    for bad in [
        jwt(JWT_SECRET, "bob", -3600),
        jwt("another-secret", "bob", 600),
        jwt(JWT_SECRET, "nobody", 600),
    ] {
        s.get("/api/v1/me", &bad)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            s.refused_upgrade(Some(&bad)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // Opaque tokens keep working beside JWTs.
    s.get("/api/v1/me", &bob.token)
        .await
        .expect_status(StatusCode::OK);
    ws.ping().await;
}

#[tokio::test]
async fn reading_and_changing_messages_is_authorized() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let dave = s.create_user("dave").await; // not in the workspace
    let erin = s.create_user("erin").await;
    s.add_member(&w.alice, w.ws, &erin, "admin").await;

    let secret = s
        .create_channel(&w.alice, w.ws, "secret", "private", &[&w.bob])
        .await;
    s.send(&w.alice, secret, "classified").await;

    // A workspace member outside the private channel: 403, for every verb.
    s.get(
        &format!("/api/v1/channels/{secret}/messages"),
        &w.carol.token,
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.post(
        &format!("/api/v1/channels/{secret}/messages"),
        &w.carol.token,
        json!({ "text": "let me in" }),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.get(&format!("/api/v1/channels/{secret}"), &w.carol.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // Someone outside the workspace does not even learn it exists.
    s.get(
        &format!("/api/v1/workspaces/{}/channels", w.ws),
        &dave.token,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    s.get(&format!("/api/v1/channels/{secret}/messages"), &dave.token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    // Nor does the listing show the private channel to carol.
    let listed = s
        .get(
            &format!("/api/v1/workspaces/{}/channels", w.ws),
            &w.carol.token,
        )
        .await
        .expect_status(StatusCode::OK);
    assert!(
        listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != secret),
        "{}",
        listed.text
    );

    // Edit and delete: the author or a workspace admin, nobody else.
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob, &w.carol])
        .await;
    let mut carol_ws = s.connect(&w.carol.token).await;
    let by_bob = s.send(&w.bob, ch, "bob's words").await;
    carol_ws.expect_event("message.created").await;
    let id = by_bob["id"].as_i64().unwrap();

    s.patch(
        &format!("/api/v1/messages/{id}"),
        &w.carol.token,
        json!({ "text": "carol's words" }),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.delete(&format!("/api/v1/messages/{id}"), &w.carol.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.patch(
        &format!("/api/v1/messages/{id}"),
        &dave.token,
        json!({ "text": "dave's words" }),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    let unchanged = carol_ws.barrier().await;
    assert!(
        unchanged.is_empty(),
        "refused changes were published: {unchanged:?}"
    );

    let edited = s
        .patch(
            &format!("/api/v1/messages/{id}"),
            &w.bob.token,
            json!({ "text": "bob's better words" }),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(edited.body["text"], "bob's better words");
    assert!(edited.body["edited_at"].is_string());
    let event = carol_ws.expect_event("message.updated").await;
    assert_eq!(event["scope"], format!("channel:{ch}"));
    assert_eq!(event["data"], edited.body);

    let by_admin = s
        .patch(
            &format!("/api/v1/messages/{id}"),
            &erin.token,
            json!({ "text": "moderated" }),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        carol_ws.expect_event("message.updated").await["data"],
        by_admin.body
    );

    s.delete(&format!("/api/v1/messages/{id}"), &w.alice.token)
        .await
        .expect_status(StatusCode::OK);
    let deleted = carol_ws.expect_event("message.deleted").await;
    assert_eq!(deleted["data"]["id"], id);
    assert_eq!(deleted["data"]["channel_id"], ch);
    let history = s.history(&w.carol, ch, "").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["deleted"], true);
    assert_eq!(history[0]["text"], "");
    // A deleted message cannot be edited back.
    s.patch(
        &format!("/api/v1/messages/{id}"),
        &w.bob.token,
        json!({ "text": "undead" }),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn history_pages_both_ways_in_ascending_order() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let by = if i % 2 == 0 { &w.alice } else { &w.bob };
        ids.push(
            s.send(by, ch, &format!("m{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let ids_of =
        |page: Vec<Value>| -> Vec<i64> { page.iter().map(|m| m["id"].as_i64().unwrap()).collect() };
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "ids grow: {ids:?}");

    assert_eq!(ids_of(s.history(&w.bob, ch, "").await), ids);
    assert_eq!(ids_of(s.history(&w.bob, ch, "limit=3").await), ids[7..]);
    assert_eq!(
        ids_of(
            s.history(&w.bob, ch, &format!("before={}&limit=3", ids[5]))
                .await
        ),
        ids[2..5]
    );
    assert_eq!(
        ids_of(s.history(&w.bob, ch, &format!("before={}", ids[2])).await),
        ids[..2]
    );
    assert_eq!(
        ids_of(
            s.history(&w.bob, ch, &format!("after={}&limit=4", ids[2]))
                .await
        ),
        ids[3..7]
    );
    assert_eq!(
        ids_of(s.history(&w.bob, ch, &format!("after={}", ids[6])).await),
        ids[7..]
    );
    assert!(
        s.history(&w.bob, ch, &format!("after={}", ids[9]))
            .await
            .is_empty()
    );
    assert_eq!(
        ids_of(
            s.history(&w.bob, ch, &format!("after={}&before={}", ids[1], ids[5]))
                .await
        ),
        ids[2..5]
    );
    // Paging back page by page visits every message once.
    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = match before {
            Some(b) => format!("limit=4&before={b}"),
            None => "limit=4".to_owned(),
        };
        let page = ids_of(s.history(&w.bob, ch, &query).await);
        if page.is_empty() {
            break;
        }
        before = Some(page[0]);
        seen.splice(0..0, page);
    }
    assert_eq!(seen, ids);
    // A channel-wide page shows top-level messages with their text.
    let page = s.history(&w.alice, ch, "limit=1").await;
    assert_eq!(page[0]["text"], "m9");
    assert_eq!(page[0]["author_id"], w.bob.id);
}

#[tokio::test]
async fn the_openapi_document_lists_the_routes() {
    let s = TestServer::start().await;
    let resp = s
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .expect_status(StatusCode::OK);
    assert!(
        resp.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let paths = resp.body["paths"].as_object().expect("paths object");
    for path in [
        "/api/v1/channels/{id}/messages",
        "/api/v1/workspaces/{id}/dms",
        "/api/v1/users",
        "/api/v1/messages/{id}",
        "/api/v1/channels/{id}/members/{user_id}",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys()
        );
    }
    assert!(paths["/api/v1/channels/{id}/messages"]["post"].is_object());
    assert!(paths["/api/v1/channels/{id}/messages"]["get"].is_object());

    // Health endpoints answer without a token.
    s.call(Method::GET, "/healthz", None, None)
        .await
        .expect_status(StatusCode::OK);
    s.call(Method::GET, "/readyz", None, None)
        .await
        .expect_status(StatusCode::OK);
}

/// The document says what answers without a token: the health routes and `--dev` login
/// need none, `/metrics` takes its own optional token, every other route a bearer; and
/// every route lists the answers every route can give (schemathesis checks the rest
/// against a real server: scripts/schemathesis).
#[tokio::test]
async fn the_openapi_document_says_which_routes_need_a_token_and_what_any_route_answers() {
    let s = TestServer::start().await;
    let doc = s
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .expect_status(StatusCode::OK)
        .body;
    let anonymous = |op: &Value| {
        op["security"].as_array().is_some_and(|reqs| {
            reqs.iter()
                .any(|r| r.as_object().is_some_and(|r| r.is_empty()))
        })
    };
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/dev/login"] {
        let item = &doc["paths"][path];
        let op = if item["get"].is_object() {
            &item["get"]
        } else {
            &item["post"]
        };
        assert!(anonymous(op), "{path} is declared as needing a token: {op}");
    }
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let statuses = op["responses"].as_object().unwrap();
            let has = |code: &str| statuses.contains_key(code);
            if !anonymous(op) {
                assert!(path.starts_with("/api/v1/"), "{method} {path}");
                for code in ["401", "403", "429"] {
                    assert!(has(code), "{method} {path} does not list {code}");
                }
                assert_eq!(
                    statuses["401"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path}"
                );
            }
            if op["requestBody"].is_object() {
                for code in ["400", "413"] {
                    assert!(
                        has(code),
                        "{method} {path} takes a body but does not list {code}"
                    );
                }
            }
            if path.contains('{') && !anonymous(op) {
                for code in ["400", "404"] {
                    assert!(
                        has(code),
                        "{method} {path} has a path id but does not list {code}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} operations");
}

/// A DM has no manager: any participant sets its topic, but its settings (the loop
/// guard among them) stay the workspace's owners' and admins', as the table says for
/// every channel. Before: a guest in a DM with an agent could turn its loop guard off.
/// And leaving a channel of a workspace one is not in answers as for a channel that does
/// not exist (`404`), not whether it is a DM.
#[tokio::test]
async fn a_dms_settings_are_the_managers_and_outsiders_learn_nothing_by_leaving() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let dave = s.create_user("dave").await;
    s.add_member(&w.alice, w.ws, &dave, "guest").await;
    let dm = s
        .post(
            &format!("/api/v1/workspaces/{}/dms", w.ws),
            &dave.token,
            json!({"user_ids": [w.bob.id]}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/channels/{dm}");
    s.patch(&path, &dave.token, json!({"topic": "plans"}))
        .await
        .expect_status(StatusCode::OK);
    for settings in [
        json!({"loop_guard_run": 0}),
        json!({"turn_timeout_ms": 100}),
        json!({"stream_rollup_ms": 10_000}),
    ] {
        s.patch(&path, &dave.token, settings.clone())
            .await
            .expect_error(StatusCode::FORBIDDEN, "forbidden");
        s.patch(&path, &w.bob.token, settings)
            .await
            .expect_error(StatusCode::FORBIDDEN, "forbidden");
    }
    let channel = s
        .get(&path, &w.bob.token)
        .await
        .expect_status(StatusCode::OK);
    assert!(
        channel.body.get("loop_guard_run").is_none(),
        "{}",
        channel.body
    );

    // Someone in no workspace of these: the DM and a private channel are not there.
    let zed = s.create_user("zed").await;
    let private = s
        .create_channel(&w.alice, w.ws, "plans", "private", &[])
        .await;
    for id in [dm, private, 999_999] {
        s.post(
            &format!("/api/v1/channels/{id}/leave"),
            &zed.token,
            json!({}),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    }
}
