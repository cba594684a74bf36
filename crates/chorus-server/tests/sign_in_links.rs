//! One-time sign-in links (issue 22), end to end: a server admin creates one for a user,
//! the first exchange of its code signs the user in with a new token, and every later
//! one is refused (`410 gone`), as are expired links (judged on the server's clock),
//! unknown codes (`401`, counted against the address like bad credentials) and links of
//! deactivated users. Nobody but a server admin creates links.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{ADMIN_TOKEN, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `POST /api/v1/users/{user}/sign-in-links` as `by`.
async fn create_link(s: &TestServer, by: &str, user: i64, body: Value) -> common::Resp {
    s.post(&format!("/api/v1/users/{user}/sign-in-links"), by, body)
        .await
}

/// A link for `user` made by the admin token: its code.
async fn link_code(s: &TestServer, user: i64, body: Value) -> String {
    let created = create_link(s, ADMIN_TOKEN, user, body)
        .await
        .expect_status(StatusCode::CREATED)
        .body;
    created["code"].as_str().unwrap().to_owned()
}

/// `POST /api/v1/sign-in {code}`, without credentials.
async fn sign_in(s: &TestServer, code: &str) -> common::Resp {
    s.call(
        Method::POST,
        "/api/v1/sign-in",
        None,
        Some(json!({ "code": code })),
    )
    .await
}

/// Where a test clock starts: 2023-11-14T22:13:20Z.
const EPOCH: i64 = 1_700_000_000_000;

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_admins_link_signs_its_user_in_once() {
    let s = TestServer::start().await;
    let carol = s.create_user("carol").await;

    let created = create_link(&s, ADMIN_TOKEN, carol.id, json!({}))
        .await
        .expect_status(StatusCode::CREATED)
        .body;
    let code = created["code"].as_str().unwrap();
    assert!(code.starts_with("chs_"), "{created}");
    assert_eq!(created["url_fragment"], format!("#signin={code}"));
    assert_eq!(created["user_id"], carol.id);
    assert!(created["expires_at"].is_string(), "{created}");

    // The first exchange: a new token of carol's, shaped as token creation answers.
    let signed_in = sign_in(&s, code).await.expect_status(StatusCode::OK).body;
    assert_eq!(signed_in["user"]["id"], carol.id);
    assert_eq!(signed_in["user"]["name"], "carol");
    let token = signed_in["token"].as_str().unwrap();
    assert!(token.starts_with("chr_"), "{signed_in}");
    assert_ne!(token, carol.token);
    let me = s
        .get("/api/v1/me", token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["id"], carol.id);
    // Listed among carol's tokens, which she may revoke like any other.
    let tokens = s
        .get(&format!("/api/v1/users/{}/tokens", carol.id), &carol.token)
        .await
        .expect_status(StatusCode::OK)
        .body;
    let names: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "sign-in link"]);

    // Used up: every later exchange is refused, and issues nothing.
    for _ in 0..2 {
        let again = sign_in(&s, code)
            .await
            .expect_error(StatusCode::GONE, "gone");
        assert!(
            again.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("used"),
            "{}",
            again.text
        );
    }
    let tokens = s
        .get(&format!("/api/v1/users/{}/tokens", carol.id), &carol.token)
        .await
        .body;
    assert_eq!(tokens.as_array().unwrap().len(), 2, "{tokens}");

    // A code no link has.
    sign_in(&s, "chs_nothing-like-it")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    sign_in(&s, "")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_link_lives_as_long_as_asked_within_bounds() {
    let s = TestServer::start_with(|c| {
        c.clock = chorus_server::Clock::following_tokio(EPOCH);
    })
    .await;
    let carol = s.create_user("carol").await;
    for expires_in in [0, 59, 604_801] {
        create_link(
            &s,
            ADMIN_TOKEN,
            carol.id,
            json!({ "expires_in": expires_in }),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    // The clock started at EPOCH and moves with real time (a few seconds here): the
    // expiry is a day later by default, `expires_in` seconds later when asked.
    for (body, secs) in [
        (json!({}), 86_400),
        (json!({ "expires_in": 60 }), 60),
        (json!({ "expires_in": 604_800 }), 604_800),
    ] {
        let created = create_link(&s, ADMIN_TOKEN, carol.id, body)
            .await
            .expect_status(StatusCode::CREATED)
            .body;
        let at: chorus_api::Timestamp =
            serde_json::from_value(created["expires_at"].clone()).unwrap();
        let past = at.0 - EPOCH - secs * 1000;
        assert!((0..60_000).contains(&past), "{secs} s: {created}");
    }
}

/// The server judges expiry on its own clock: a link made for a minute is refused by
/// the same server (same data) once its clock reads two minutes later, while a link made
/// for an hour still works there.
#[tokio::test]
async fn an_expired_link_is_gone() {
    let start = now_ms();
    let mut s = TestServer::start_with(|c| {
        c.clock = chorus_server::Clock::following_tokio(start);
    })
    .await;
    let carol = s.create_user("carol").await;
    let short = link_code(&s, carol.id, json!({ "expires_in": 60 })).await;
    let long = link_code(&s, carol.id, json!({ "expires_in": 3600 })).await;

    s.restart_with(|c| {
        c.clock = chorus_server::Clock::following_tokio(start + 120_000);
    })
    .await;
    let refused = sign_in(&s, &short)
        .await
        .expect_error(StatusCode::GONE, "gone");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{}",
        refused.text
    );
    let signed_in = sign_in(&s, &long).await.expect_status(StatusCode::OK).body;
    assert_eq!(signed_in["user"]["id"], carol.id);
    // Still expired (not turned into "used") on a second try.
    sign_in(&s, &short)
        .await
        .expect_error(StatusCode::GONE, "gone");
}

#[tokio::test]
async fn only_server_admins_create_links() {
    let s = TestServer::start().await;
    let w = s.world().await;
    // Not for others, not for oneself: a link is a credential to hand to someone.
    create_link(&s, &w.alice.token, w.bob.id, json!({}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    create_link(&s, &w.alice.token, w.alice.id, json!({}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.call(
        Method::POST,
        &format!("/api/v1/users/{}/sign-in-links", w.bob.id),
        None,
        Some(json!({})),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    create_link(&s, ADMIN_TOKEN, 999_999, json!({}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // Any server admin, not only the bootstrap one.
    let made = s
        .post(
            "/api/v1/users",
            ADMIN_TOKEN,
            json!({"name": "operator", "admin": true}),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .body;
    let operator = made["token"].as_str().unwrap();
    let created = create_link(&s, operator, w.bob.id, json!({}))
        .await
        .expect_status(StatusCode::CREATED)
        .body;
    let signed_in = sign_in(&s, created["code"].as_str().unwrap())
        .await
        .expect_status(StatusCode::OK)
        .body;
    assert_eq!(signed_in["user"]["id"], w.bob.id);
}

#[tokio::test]
async fn a_deactivated_users_link_is_refused_and_kept() {
    let s = TestServer::start().await;
    let carol = s.create_user("carol").await;
    let code = link_code(&s, carol.id, json!({})).await;
    s.post(
        &format!("/api/v1/users/{}/deactivate", carol.id),
        ADMIN_TOKEN,
        json!({}),
    )
    .await
    .expect_status(StatusCode::OK);

    sign_in(&s, &code)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    create_link(&s, ADMIN_TOKEN, carol.id, json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");

    // The refusal did not use the link up: reactivated, carol signs in with it.
    s.post(
        &format!("/api/v1/users/{}/reactivate", carol.id),
        ADMIN_TOKEN,
        json!({}),
    )
    .await
    .expect_status(StatusCode::OK);
    let signed_in = sign_in(&s, &code).await.expect_status(StatusCode::OK).body;
    assert_eq!(signed_in["user"]["id"], carol.id);
}

/// Guessing codes is limited like guessing tokens: failures count against the client's
/// address, and past its burst even a good code from there is refused untried.
#[tokio::test]
async fn guessing_codes_is_limited_per_address() {
    let mut s = TestServer::start_with(|c| {
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 3;
    })
    .await;
    let carol = s.create_user("carol").await;
    let code = link_code(&s, carol.id, json!({})).await;
    for n in 0..3 {
        sign_in(&s, &format!("chs_guess-{n}"))
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let limited = sign_in(&s, &code)
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(limited.headers.contains_key("retry-after"), "{limited:?}");
    // Untried: the refused attempt did not use the link up. (The address stays
    // refused until its bucket refills; a restart forgets the buckets.)
    s.restart().await;
    let signed_in = sign_in(&s, &code).await.expect_status(StatusCode::OK).body;
    assert_eq!(signed_in["user"]["id"], carol.id);
}

/// Exchanges racing for one link: exactly one signs in; the others find it used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_exchanges_at_once_one_signs_in() {
    let s = TestServer::start().await;
    let carol = s.create_user("carol").await;
    let code = link_code(&s, carol.id, json!({})).await;
    let tries = futures_util::future::join_all((0..8).map(|_| sign_in(&s, &code))).await;
    let mut statuses: Vec<u16> = tries.iter().map(|r| r.status.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 410, 410, 410, 410, 410, 410, 410],
        "{tries:?}"
    );
    let tokens = s
        .get(&format!("/api/v1/users/{}/tokens", carol.id), &carol.token)
        .await
        .body;
    assert_eq!(tokens.as_array().unwrap().len(), 2, "{tokens}");
}

/// A link handed to the wrong person is revoked before it is used: a server admin lists
/// a user's links that can still be used (never their codes) and revokes one; opening
/// it is then refused as an unknown link. Nobody else lists or revokes.
#[tokio::test]
async fn a_link_not_yet_used_is_listed_and_revoked_by_an_admin() {
    let s = TestServer::start().await;
    let carol = s.create_user("carol").await;
    let links = format!("/api/v1/users/{}/sign-in-links", carol.id);
    let made = create_link(&s, ADMIN_TOKEN, carol.id, json!({}))
        .await
        .expect_status(StatusCode::CREATED)
        .body;
    let (id, code) = (made["id"].as_i64().unwrap(), made["code"].as_str().unwrap());
    let kept = link_code(&s, carol.id, json!({})).await;
    let used = create_link(&s, ADMIN_TOKEN, carol.id, json!({}))
        .await
        .expect_status(StatusCode::CREATED)
        .body;
    sign_in(&s, used["code"].as_str().unwrap())
        .await
        .expect_status(StatusCode::OK);

    let listed = s
        .get(&links, ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK)
        .body;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "the used one is not listed: {listed:?}");
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["user_id"], carol.id);
    assert!(listed.iter().all(|l| l.get("code").is_none()), "{listed:?}");
    for refused in [
        s.get(&links, &carol.token).await,
        s.delete(&format!("{links}/{id}"), &carol.token).await,
    ] {
        refused.expect_error(StatusCode::FORBIDDEN, "forbidden");
    }

    s.delete(&format!("{links}/{id}"), ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    s.delete(&format!("{links}/{id}"), ADMIN_TOKEN)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let other = s.create_user("dave").await;
    s.delete(
        &format!("/api/v1/users/{}/sign-in-links/{id}", other.id),
        ADMIN_TOKEN,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    sign_in(&s, code)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    sign_in(&s, &kept).await.expect_status(StatusCode::OK);
    let left = s
        .get(&links, ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(left.body, json!([]));
}
