//! Server keys (`chk_…`) against a real server: admins manage them; a key publishes
//! (within its prefixes) and reads the stats, and every other route refuses it. Also the
//! operations endpoints that must not leak: the stats need the admin token or a
//! `stats:read` key, `/metrics` can need a token, and event types cannot forge metric
//! lines. Runs on SQLite, and on PostgreSQL with `CHORUS_TEST_DATABASE=postgres`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN_TOKEN, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Creates a key as the admin; returns the whole answer (with `key`, the secret).
async fn create_key(s: &TestServer, body: Value) -> Value {
    s.post("/api/v1/server-keys", ADMIN_TOKEN, body)
        .await
        .expect_status(StatusCode::CREATED)
        .body
}

fn secret(key: &Value) -> String {
    key["key"].as_str().unwrap().to_owned()
}

async fn publish(s: &TestServer, token: &str, scope: &str) -> StatusCode {
    s.post(
        "/api/v1/publish",
        token,
        json!({"scope": scope, "type": "order.created", "data": {"n": 1}}),
    )
    .await
    .status
}

#[tokio::test]
async fn admins_create_list_and_delete_keys() {
    let s = TestServer::start().await;
    let w = s.world().await;

    let key = create_key(
        &s,
        json!({"name": "orders backend", "permissions": ["publish", "stats:read"],
               "publish_prefixes": ["topic:orders."]}),
    )
    .await;
    assert!(secret(&key).starts_with("chk_"), "{key}");
    assert_eq!(key["name"], "orders backend");
    assert_eq!(key["permissions"], json!(["publish", "stats:read"]));
    assert_eq!(key["publish_prefixes"], json!(["topic:orders."]));
    assert!(key["created_at"].is_string() && key["id"].is_i64(), "{key}");
    let other = create_key(
        &s,
        json!({"name": "dashboards", "permissions": ["stats:read"]}),
    )
    .await;
    assert_eq!(other["publish_prefixes"], Value::Null);

    // Listed without secrets, oldest first.
    let list = s
        .get("/api/v1/server-keys", ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK)
        .text;
    assert!(
        !list.contains(&secret(&key)) && !list.contains("\"key\""),
        "{list}"
    );
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    let names: Vec<_> = list.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders backend", "dashboards"]);
    assert_eq!(list[0]["id"], key["id"]);

    // Not for plain users, nor without credentials.
    let body = json!({"name": "mine", "permissions": ["publish"]});
    s.post("/api/v1/server-keys", &w.alice.token, body.clone())
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.get("/api/v1/server-keys", &w.alice.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let path = format!("/api/v1/server-keys/{}", key["id"]);
    s.delete(&path, &w.alice.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.call(Method::POST, "/api/v1/server-keys", None, Some(body))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // What a key may be.
    for wrong in [
        json!({"name": "x", "permissions": []}),
        json!({"name": "x", "permissions": ["users:write"]}),
        json!({"name": "", "permissions": ["publish"]}),
        json!({"name": "x", "permissions": ["stats:read"], "publish_prefixes": ["topic:"]}),
        json!({"name": "x", "permissions": ["publish"], "publish_prefixes": ["orders"]}),
        json!({"name": "x", "permissions": ["publish"], "publish_prefixes": []}),
    ] {
        let resp = s
            .post("/api/v1/server-keys", ADMIN_TOKEN, wrong.clone())
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{wrong}: {}",
            resp.text
        );
    }

    s.delete(&path, ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    s.delete(&path, ADMIN_TOKEN)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let list = s.get("/api/v1/server-keys", ADMIN_TOKEN).await.body;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn a_key_publishes_within_its_prefixes_only() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let mut bob = s.connect(&w.bob.token).await;
    bob.subscribe("topic:orders.eu").await;

    let orders = secret(
        &create_key(
            &s,
            json!({"name": "orders", "permissions": ["publish"],
                   "publish_prefixes": ["topic:orders.", "topic:billing"]}),
        )
        .await,
    );
    assert_eq!(
        publish(&s, &orders, "topic:orders.eu").await,
        StatusCode::ACCEPTED
    );
    let event = bob.expect_event("order.created").await;
    assert_eq!(event["scope"], "topic:orders.eu");
    assert_eq!(event["data"], json!({"n": 1}));
    assert_eq!(
        publish(&s, &orders, "topic:billing.x").await,
        StatusCode::ACCEPTED
    );
    for outside in ["topic:orders", "topic:shipping", "channel:1", "user:1"] {
        assert_eq!(
            publish(&s, &orders, outside).await,
            StatusCode::FORBIDDEN,
            "{outside}"
        );
    }

    // Without prefixes: any scope.
    let any = secret(&create_key(&s, json!({"name": "any", "permissions": ["publish"]})).await);
    for scope in ["topic:shipping", "topic:orders.eu", "user:1"] {
        assert_eq!(
            publish(&s, &any, scope).await,
            StatusCode::ACCEPTED,
            "{scope}"
        );
    }

    // Without `publish`: never.
    let stats_only =
        secret(&create_key(&s, json!({"name": "stats", "permissions": ["stats:read"]})).await);
    let resp = s
        .post(
            "/api/v1/publish",
            &stats_only,
            json!({"scope": "topic:x", "type": "t", "data": {}}),
        )
        .await;
    resp.expect_error(StatusCode::FORBIDDEN, "forbidden");

    // The admin token still publishes; plain users still cannot.
    assert_eq!(
        publish(&s, ADMIN_TOKEN, "topic:shipping").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        publish(&s, &w.alice.token, "topic:shipping").await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_stats_need_the_admin_token_or_a_stats_key() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let reader = secret(&create_key(&s, json!({"name": "r", "permissions": ["stats:read"]})).await);
    let publisher = secret(&create_key(&s, json!({"name": "p", "permissions": ["publish"]})).await);

    for token in [ADMIN_TOKEN, reader.as_str()] {
        let stats = s
            .get("/api/v1/realtime/stats", token)
            .await
            .expect_status(StatusCode::OK)
            .body;
        assert!(stats["metrics"]["connections_total"].is_u64(), "{stats}");
    }
    s.get("/api/v1/realtime/stats", &publisher)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.get("/api/v1/realtime/stats", &w.alice.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.call(Method::GET, "/api/v1/realtime/stats", None, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn every_other_route_refuses_a_key() {
    let s = TestServer::start().await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[])
        .await;
    let message = s.send(&w.alice, ch, "hello").await;
    let key_body = create_key(
        &s,
        json!({"name": "all", "permissions": ["publish", "stats:read"]}),
    )
    .await;
    let key = secret(&key_body);
    let (ws, alice, msg) = (w.ws, w.alice.id, message["id"].as_i64().unwrap());
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/v1/me".into(), None),
        (Method::GET, "/api/v1/workspaces".into(), None),
        (
            Method::POST,
            "/api/v1/workspaces".into(),
            Some(json!({"name": "w"})),
        ),
        (
            Method::GET,
            format!("/api/v1/workspaces/{ws}/members"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/workspaces/{ws}/channels"),
            None,
        ),
        (Method::GET, format!("/api/v1/channels/{ch}/messages"), None),
        (
            Method::POST,
            format!("/api/v1/channels/{ch}/messages"),
            Some(json!({"text": "hi"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/messages/{msg}"),
            Some(json!({"text": "edited"})),
        ),
        (Method::PUT, format!("/api/v1/messages/{msg}/pin"), None),
        (Method::GET, format!("/api/v1/users/{alice}"), None),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"name": "mallory"})),
        ),
        (
            Method::PUT,
            "/api/v1/presence".into(),
            Some(json!({"status_text": "x"})),
        ),
        (Method::GET, "/api/v1/server-keys".into(), None),
        (
            Method::POST,
            "/api/v1/server-keys".into(),
            Some(json!({"name": "more", "permissions": ["publish"]})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/server-keys/{}", key_body["id"]),
            None,
        ),
    ];
    for (method, path, body) in routes {
        let resp = s.call(method.clone(), &path, Some(&key), body).await;
        assert_eq!(
            (resp.status, resp.body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{method} {path}: {}",
            resp.text
        );
    }
    assert_eq!(s.refused_upgrade(Some(&key)).await, StatusCode::FORBIDDEN);
    // Nothing was done on its behalf.
    let history = s.history(&w.alice, ch, "").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        s.get("/api/v1/server-keys", ADMIN_TOKEN)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_deleted_or_unknown_key_is_unauthorized_and_counts_as_a_failure() {
    let s = TestServer::start_with(|c| {
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 3;
    })
    .await;
    let key = create_key(
        &s,
        json!({"name": "k", "permissions": ["publish", "stats:read"]}),
    )
    .await;
    let token = secret(&key);
    assert_eq!(publish(&s, &token, "topic:a").await, StatusCode::ACCEPTED);
    s.delete(&format!("/api/v1/server-keys/{}", key["id"]), ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    s.post(
        "/api/v1/publish",
        &token,
        json!({"scope": "topic:a", "type": "t", "data": {}}),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.get("/api/v1/realtime/stats", &token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A third failure from this address uses up its burst; the next is refused untried.
    s.get("/api/v1/realtime/stats", "chk_guessed")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let resp = s.get("/api/v1/realtime/stats", "chk_guessed").await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS, "{}", resp.text);
}

/// As a user's token: a key that authenticated from an address is still tried while
/// that address is over its failure limit; a key not yet used from there is not.
#[tokio::test]
async fn a_key_used_from_an_address_passes_its_failure_limit() {
    let s = TestServer::start_with(|c| {
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 3;
    })
    .await;
    let body = json!({"name": "k", "permissions": ["publish"]});
    let (used, fresh) = (
        secret(&create_key(&s, body.clone()).await),
        secret(&create_key(&s, body).await),
    );
    assert_eq!(publish(&s, &used, "topic:a").await, StatusCode::ACCEPTED);
    // Bounded, not an exact count: a loaded machine may refill a token meanwhile.
    let mut locked = false;
    for n in 0..8 {
        let status = publish(&s, &format!("chk_guessed-{n}"), "topic:a").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            locked = true;
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(locked, "the address is refused past its burst");
    assert_eq!(publish(&s, &used, "topic:a").await, StatusCode::ACCEPTED);
    assert_eq!(
        publish(&s, &fresh, "topic:a").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn event_types_cannot_forge_metric_lines() {
    let s = TestServer::start().await;
    let forged = "x\"} 1\nchorus_forged_total 99\n# \\";
    s.post(
        "/api/v1/publish",
        ADMIN_TOKEN,
        json!({"scope": "topic:t", "type": forged, "data": {}}),
    )
    .await
    .expect_status(StatusCode::ACCEPTED);
    let metrics = s
        .call(Method::GET, "/metrics", None, None)
        .await
        .expect_status(StatusCode::OK)
        .text;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("chorus_forged_total")),
        "{metrics}"
    );
    let line = r#"chorus_events_by_type_total{type="x\"} 1\nchorus_forged_total 99\n# \\"} 1"#;
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
    // Every sample line is `name{labels} value` or `name value`.
    for l in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(l.starts_with("chorus_"), "{l:?}");
    }
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let s = TestServer::start_with(|c| c.metrics_token = Some("scrape-me".into())).await;
    s.call(Method::GET, "/metrics", None, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.get("/metrics", "wrong")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    s.get("/metrics", ADMIN_TOKEN)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let text = s
        .get("/metrics", "scrape-me")
        .await
        .expect_status(StatusCode::OK)
        .text;
    assert!(text.contains("chorus_connections "), "{text}");
}
