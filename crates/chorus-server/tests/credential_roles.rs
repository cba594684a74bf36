//! Roles from the credential (gateway mode; docs/protocol.md, "Namespaces"): a JWT's
//! roles claim and the connect proxy's `roles` give the connection roles that
//! `role:<name>` namespaces admit. They belong to that credential, not to the user: a
//! token without them gets `forbidden`, a malformed list is refused at the connect, and
//! a `refresh` whose credential lost a role ends what only that role allowed.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use chorus_api::Namespace;
use chorus_server::config::{ProxyConfig, ProxyEndpoint};
use common::app::{App, Reply, SECRET as APP_SECRET};
use common::{ADMIN_TOKEN, TestServer, WsClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "credential-roles-jwt-secret-32-bytes";

fn namespace(name: &str, pattern: &str, read: &str, publish: &str) -> Namespace {
    Namespace {
        name: name.into(),
        pattern: pattern.into(),
        read: read.into(),
        publish: publish.into(),
        schema: None,
        retention_events: None,
        retention_secs: None,
        presence: false,
        join_leave: false,
    }
}

/// `support` for the application's support staff; `news` for any user (the marker).
fn namespaces() -> Vec<Namespace> {
    vec![
        namespace(
            "support",
            "topic:support.{ticket}",
            "role:support",
            "role:support",
        ),
        namespace("news", "topic:news", "authenticated", "server"),
    ]
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn exp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600
}

async fn answer(client: &mut WsClient, scope: &str) -> String {
    let reply = client.subscribe(scope).await;
    if reply["op"] == "ack" {
        "ack".into()
    } else {
        reply["code"].as_str().unwrap().to_owned()
    }
}

async fn client_publish(client: &mut WsClient, scope: &str) -> String {
    let reply = client
        .request(json!({"op": "publish", "scope": scope, "type": "said", "data": {}}))
        .await;
    if reply["op"] == "ack" {
        "ack".into()
    } else {
        reply["code"].as_str().unwrap().to_owned()
    }
}

async fn publish(s: &TestServer, scope: &str, kind: &str) {
    s.post(
        "/api/v1/publish",
        ADMIN_TOKEN,
        json!({"scope": scope, "type": kind, "data": {}}),
    )
    .await
    .expect_status(StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_jwts_roles_claim_opens_role_namespaces() {
    let s = TestServer::start_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.namespaces = namespaces();
    })
    .await;
    let w = s.world().await;
    let carol = w.carol.id.to_string();
    let staff = jwt(json!({"sub": carol, "exp": exp(), "roles": ["support"]}));
    let plain = jwt(json!({"sub": carol, "exp": exp()}));

    let mut with = s.connect(&staff).await;
    assert_eq!(answer(&mut with, "topic:support.7").await, "ack");
    assert_eq!(client_publish(&mut with, "topic:support.7").await, "ack");
    with.expect_event("said").await;
    // The HTTP catch-up with the same token: past the check (`410`: position 0 is
    // not kept, the client's publish is the scope's first event).
    let status = s
        .get("/api/v1/scopes/topic:support.7/events?after=0", &staff)
        .await
        .status;
    assert!(
        status == StatusCode::OK || status == StatusCode::GONE,
        "{status}"
    );

    // The same user with another token: the roles were the token's, not hers.
    let mut without = s.connect(&plain).await;
    assert_eq!(answer(&mut without, "topic:support.7").await, "forbidden");
    assert_eq!(
        client_publish(&mut without, "topic:support.7").await,
        "forbidden"
    );
    let refused = s
        .get("/api/v1/scopes/topic:support.7/events?after=0", &plain)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("role \"support\""), "{message}");
    let mut api_token = s.connect(&w.carol.token).await;
    assert_eq!(answer(&mut api_token, "topic:support.7").await, "forbidden");

    // A malformed claim refuses the token, saying why.
    for (roles, why) in [
        (json!("support"), "not an array of strings"),
        (json!(["has space"]), "\"has space\""),
        (json!([""]), "1 to 64 bytes"),
        (
            json!((0..33).map(|i| format!("r{i}")).collect::<Vec<_>>()),
            "at most 32",
        ),
    ] {
        let token = jwt(json!({"sub": carol, "exp": exp(), "roles": roles}));
        let refused = s
            .get("/api/v1/me", &token)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let message = refused.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("claim \"roles\"") && message.contains(why),
            "{roles}: {message}"
        );
        assert_eq!(
            s.refused_upgrade(Some(&token)).await,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn the_roles_claim_is_configurable() {
    let s = TestServer::start_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.jwt_roles_claim = "https://app.example/roles".into();
        c.namespaces = namespaces();
    })
    .await;
    let w = s.world().await;
    let sub = w.carol.id.to_string();
    let named = jwt(json!({"sub": sub, "exp": exp(), "https://app.example/roles": ["support"]}));
    let mut client = s.connect(&named).await;
    assert_eq!(answer(&mut client, "topic:support.1").await, "ack");
    // `roles` is just another claim now: not read, not checked.
    let other = jwt(json!({"sub": sub, "exp": exp(), "roles": "ignored"}));
    let mut client = s.connect(&other).await;
    assert_eq!(answer(&mut client, "topic:support.1").await, "forbidden");
}

/// A `refresh` with a token that no longer carries a role ends, with
/// `subscription.revoked {reason: "roles_changed"}`, the subscriptions only that role
/// allowed; the socket and the other subscriptions stay.
#[tokio::test]
async fn a_refresh_that_drops_a_role_ends_what_it_allowed() {
    let s = TestServer::start_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.namespaces = namespaces();
    })
    .await;
    let w = s.world().await;
    let sub = w.carol.id.to_string();
    let staff = jwt(json!({"sub": sub, "exp": exp(), "roles": ["support"]}));
    let mut client = s.connect(&staff).await;
    assert_eq!(answer(&mut client, "topic:support.1").await, "ack");
    assert_eq!(answer(&mut client, "topic:news").await, "ack");

    let plain = jwt(json!({"sub": sub, "exp": exp(), "roles": ["billing"]}));
    let ack = client
        .request(json!({"op": "refresh", "token": plain}))
        .await;
    assert_eq!(ack["op"], "ack", "{ack}");
    let revoked = client.expect_event("subscription.revoked").await;
    assert_eq!(revoked["scope"], "topic:support.1");
    assert_eq!(revoked["data"]["reason"], "roles_changed");
    publish(&s, "topic:support.1", "ticket").await;
    publish(&s, "topic:news", "marker").await;
    loop {
        let frame = client.recv_json().await;
        assert_ne!(frame["type"], "ticket", "delivered after the revocation");
        if frame["type"] == "marker" {
            break;
        }
    }
    assert_eq!(answer(&mut client, "topic:support.1").await, "forbidden");
    s.check_invariants();
}

/// The connect proxy's `roles`: the application's staff session may read and publish
/// to `support`, another session of the same user may not; a malformed list is the
/// application's bug (`unavailable`), like any other bad answer.
#[tokio::test]
async fn the_connect_proxys_roles_open_role_namespaces() {
    let app = App::start(|proxy, body| {
        assert_eq!(proxy, "connect");
        Reply::Json(match body["token"].as_str().unwrap_or("") {
            "staff-session" => json!({"active": true, "sub": "42", "roles": ["support"]}),
            "plain-session" => json!({"active": true, "sub": "42"}),
            "bad-roles" => json!({"active": true, "sub": "42", "roles": ["no spaces"]}),
            "wrong-type" => json!({"active": true, "sub": "42", "roles": "support"}),
            _ => json!({"active": false}),
        })
    })
    .await;
    let s = TestServer::start_with(|c| {
        c.proxy = ProxyConfig {
            secret: Some(APP_SECRET.into()),
            connect: Some(ProxyEndpoint {
                url: app.url("connect"),
                timeout_ms: 2_000,
                cache_ms: 60_000,
                allowed_origins: Vec::new(),
            }),
            ..Default::default()
        };
        c.namespaces = namespaces();
    })
    .await;

    let mut staff = s.connect("staff-session").await;
    assert_eq!(answer(&mut staff, "topic:support.3").await, "ack");
    assert_eq!(client_publish(&mut staff, "topic:support.3").await, "ack");
    staff.expect_event("said").await;
    // From the cached identity too (the application is not asked again).
    let mut again = s.connect("staff-session").await;
    assert_eq!(answer(&mut again, "topic:support.3").await, "ack");
    assert_eq!(
        app.seen("connect")
            .iter()
            .filter(|r| r.body["token"] == "staff-session")
            .count(),
        1
    );

    let mut plain = s.connect("plain-session").await;
    assert_eq!(plain.user_id(), staff.user_id(), "the same user");
    assert_eq!(answer(&mut plain, "topic:support.3").await, "forbidden");
    assert_eq!(
        client_publish(&mut plain, "topic:support.3").await,
        "forbidden"
    );

    for token in ["bad-roles", "wrong-type"] {
        let (status, body) = s
            .refused_upgrade_with(&[("authorization", &format!("Bearer {token}"))])
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{token}: {body}");
        assert_eq!(body["error"]["code"], "unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("connect proxy"), "{message}");
    }
    let (_, body) = s
        .refused_upgrade_with(&[("authorization", "Bearer bad-roles")])
        .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"no spaces\""), "{message}");
}
