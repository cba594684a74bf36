//! The proxies to the application (docs/gateway.md) end to end, against a real local
//! application (`common::app`) that checks every request's signature: `connect`
//! introspects credentials Chorus does not recognise, `subscribe` and `publish` judge
//! namespaces whose access is `proxy`; an application that is down or slow gives a
//! clear, bounded refusal (`unavailable`), never a hang.

#![allow(clippy::unwrap_used)]

mod common;

use chorus_api::Namespace;
use chorus_server::config::ProxyConfig;
use common::app::{App, Reply, SECRET, closed_url};
use common::{ADMIN_TOKEN, TestServer, WsClient};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The application's connect proxy: `good-token` (or the `session=good` cookie) is user
/// 42, Ada; anything else is refused.
fn introspect(proxy: &str, body: &Value) -> Reply {
    assert_eq!(proxy, "connect");
    let good = body["token"] == "good-token" || body["cookie"] == "theme=dark; session=good";
    Reply::Json(if good {
        json!({"active": true, "sub": "42", "name": "Ada Lovelace"})
    } else {
        json!({"active": false, "reason": "unknown session"})
    })
}

/// The origin of the application's pages, the one `[proxy.connect]` allows cookies from.
const APP_ORIGIN: &str = "https://app.example";

fn proxies(connect: Option<String>, app: Option<&App>) -> ProxyConfig {
    ProxyConfig {
        secret: Some(SECRET.into()),
        connect: connect.map(|url| chorus_server::config::ProxyEndpoint {
            url,
            timeout_ms: 300,
            cache_ms: 60_000,
            allowed_origins: vec![APP_ORIGIN.into()],
        }),
        subscribe: app.map(|a| a.endpoint("subscribe")),
        publish: app.map(|a| a.endpoint("publish")),
    }
}

/// A connect proxy that takes `/ws` cookies from these origins only.
fn cookie_proxies(app: &App, origins: &[&str]) -> ProxyConfig {
    let mut config = proxies(Some(app.url("connect")), None);
    if let Some(connect) = &mut config.connect {
        connect.allowed_origins = origins.iter().map(|&o| o.into()).collect();
    }
    config
}

#[tokio::test]
async fn the_connect_proxy_accepts_one_token_and_refuses_another() {
    let app = App::start(introspect).await;
    let s = TestServer::start_with(|c| c.proxy = proxies(Some(app.url("connect")), None)).await;

    let mut ada = s.connect("good-token").await;
    let id = ada.user_id();
    let me = s
        .get("/api/v1/me", "good-token")
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["id"], id, "the HTTP API takes the same token");
    assert_eq!(me.body["name"], "app.42", "keyed by the application's id");
    assert_eq!(me.body["display_name"], "Ada Lovelace");
    ada.ping().await;
    // An identity the application vouches for ends with its logout: it mints no API
    // token, which would outlive that.
    s.post(
        &format!("/api/v1/users/{id}/tokens"),
        "good-token",
        json!({"name": "forever", "expires_in": 60}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");

    // The answer is cached: a second connection does not ask again, and is Ada.
    let again = s.connect("good-token").await;
    assert_eq!(again.user_id(), id);
    let asked = app.seen("connect");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].signed, "the application checked the signature");
    assert_eq!(asked[0].body, json!({"token": "good-token"}));

    // The application's session cookie (on a `/ws` upgrade without a token) too; it
    // sees the Origin, to refuse other sites.
    let cookie = s
        .connect_with(&[
            ("cookie", "theme=dark; session=good"),
            ("origin", APP_ORIGIN),
        ])
        .await;
    assert_eq!(cookie.user_id(), id, "the same application user");
    let last = app.seen("connect").pop().unwrap();
    assert_eq!(last.body["origin"], APP_ORIGIN);

    let (status, body) = s
        .refused_upgrade_with(&[("authorization", "Bearer bad-token")])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown session"), "{message}");
    s.get("/api/v1/me", "bad-token")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, _) = s
        .refused_upgrade_with(&[("cookie", "session=stolen"), ("origin", APP_ORIGIN)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Chorus's own tokens never reach the application.
    let before = app.seen("connect").len();
    s.get("/api/v1/me", ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(app.seen("connect").len(), before);
}

#[tokio::test]
async fn an_unknown_cookie_is_anonymous_where_a_public_namespace_admits_that() {
    let app = App::start(introspect).await;
    let s = TestServer::start_with(|c| {
        c.proxy = proxies(Some(app.url("connect")), None);
        c.namespaces = vec![namespace("news", "topic:news", "public", "server")];
    })
    .await;
    let visitor = s
        .connect_with(&[("cookie", "analytics=1"), ("origin", APP_ORIGIN)])
        .await;
    assert_eq!(visitor.hello["user_id"], 0, "anonymous: {}", visitor.hello);
    assert_eq!(app.seen("connect").len(), 1, "the application was asked");
    let known = s
        .connect_with(&[
            ("cookie", "theme=dark; session=good"),
            ("origin", APP_ORIGIN),
        ])
        .await;
    assert_ne!(known.user_id(), 0);
    // A bad token is still refused: it was meant to sign someone in.
    let (status, _) = s
        .refused_upgrade_with(&[("authorization", "Bearer bad-token")])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Cross-site WebSocket hijacking: a browser sends the application's session cookie on
/// an upgrade that any other site's page starts. Chorus itself checks the upgrade's
/// `Origin` against `[proxy.connect] allowed_origins` before the cookie goes anywhere:
/// from another origin, or without one, the application is not asked and the
/// connection is not the cookie's user. Tokens are not ambient and are not affected.
#[tokio::test]
async fn a_cookie_from_another_origin_never_reaches_the_application() {
    let app = App::start(introspect).await;
    let s = TestServer::start_with(|c| {
        c.proxy = cookie_proxies(&app, &["https://app.example", "http://localhost:8080"]);
        c.namespaces = vec![namespace("news", "topic:news", "public", "server")];
    })
    .await;
    let good = ("cookie", "theme=dark; session=good");
    for origin in [
        Some("https://evil.example"),
        Some("http://app.example"),
        Some("https://app.example:8443"),
        Some("https://app.example.evil.example"),
        Some("null"),
        None,
    ] {
        let mut headers = vec![good];
        headers.extend(origin.map(|o| ("origin", o)));
        let visitor = s.connect_with(&headers).await;
        assert_eq!(visitor.hello["user_id"], 0, "{origin:?}: {}", visitor.hello);
    }
    assert_eq!(
        app.seen("connect").len(),
        0,
        "the application was never asked"
    );

    // From a listed origin (written as browsers write it), the cookie signs in as the
    // application says; an answer cached for it is not one for other origins.
    let ada = s
        .connect_with(&[good, ("origin", "https://app.example")])
        .await;
    assert_ne!(ada.user_id(), 0);
    let local = s
        .connect_with(&[good, ("origin", "http://localhost:8080")])
        .await;
    assert_eq!(local.user_id(), ada.user_id());
    assert_eq!(app.seen("connect").len(), 2);
    let visitor = s
        .connect_with(&[good, ("origin", "https://evil.example")])
        .await;
    assert_eq!(visitor.hello["user_id"], 0, "{}", visitor.hello);
    assert_eq!(app.seen("connect").len(), 2);

    // A token is not ambient: whatever the Origin, it is introspected.
    let token = s
        .connect_with(&[
            ("authorization", "Bearer good-token"),
            ("origin", "https://evil.example"),
        ])
        .await;
    assert_eq!(token.user_id(), ada.user_id());
}

/// Without a public namespace, a cookie from another origin is a missing credential
/// (`401`), and the application is not asked.
#[tokio::test]
async fn a_cookie_from_another_origin_is_refused_without_a_public_namespace() {
    let app = App::start(introspect).await;
    let s =
        TestServer::start_with(|c| c.proxy = cookie_proxies(&app, &["https://app.example"])).await;
    let good = ("cookie", "theme=dark; session=good");
    for headers in [vec![good, ("origin", "https://evil.example")], vec![good]] {
        let (status, body) = s.refused_upgrade_with(&headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_eq!(app.seen("connect").len(), 0);
    let ada = s
        .connect_with(&[good, ("origin", "https://app.example")])
        .await;
    assert_ne!(ada.user_id(), 0);
}

/// Without `allowed_origins` (the default), no cookie is sent to the application,
/// whatever its origin; tokens still are.
#[tokio::test]
async fn without_allowed_origins_no_cookie_reaches_the_application() {
    let app = App::start(introspect).await;
    let s = TestServer::start_with(|c| {
        c.proxy = cookie_proxies(&app, &[]);
        c.namespaces = vec![namespace("news", "topic:news", "public", "server")];
    })
    .await;
    let visitor = s
        .connect_with(&[
            ("cookie", "theme=dark; session=good"),
            ("origin", APP_ORIGIN),
        ])
        .await;
    assert_eq!(visitor.hello["user_id"], 0, "{}", visitor.hello);
    assert_eq!(app.seen("connect").len(), 0);
    let ada = s.connect("good-token").await;
    assert_ne!(ada.user_id(), 0);
}

#[tokio::test]
async fn allowed_origins_that_are_not_origins_stop_the_start() {
    for (origin, on_connect) in [
        ("https://app.example/chat", true),
        ("*", true),
        (APP_ORIGIN, false),
    ] {
        let mut proxy = proxies(Some("http://127.0.0.1:9/connect".into()), None);
        let endpoint = proxy.connect.clone().unwrap();
        let endpoint = chorus_server::config::ProxyEndpoint {
            allowed_origins: vec![origin.into()],
            ..endpoint
        };
        if on_connect {
            proxy.connect = Some(endpoint);
        } else {
            proxy.subscribe = Some(endpoint);
        }
        let config = chorus_server::Config {
            proxy,
            ..chorus_server::Config::default()
        };
        let err = chorus_server::proxies::Proxies::from_config(&config)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("allowed_origins"), "{err}");
    }
}

/// A refused cookie leaves an upgrade anonymous, and each was a question to the
/// application: an address gets its refused cookies judged at the failed-authentication
/// rate only; past it, a cookie the proxy has a cached answer for still signs in and the
/// others are anonymous without asking. Its tokens are not affected (viewers behind one
/// address with other sites' cookies block nobody).
#[tokio::test]
async fn refused_cookies_are_judged_at_the_failure_rate() {
    let app = App::start(introspect).await;
    let s = TestServer::start_with(|c| {
        c.proxy = proxies(Some(app.url("connect")), None);
        c.namespaces = vec![namespace("news", "topic:news", "public", "server")];
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 2;
    })
    .await;
    let good = ("cookie", "theme=dark; session=good");
    let origin = ("origin", APP_ORIGIN);
    let ada = s.connect_with(&[good, origin]).await;
    assert_ne!(ada.user_id(), 0);
    for n in 0..2 {
        let cookie = format!("session=guess-{n}");
        let visitor = s.connect_with(&[("cookie", &cookie), origin]).await;
        assert_eq!(visitor.hello["user_id"], 0, "anonymous: {}", visitor.hello);
    }
    let visitor = s
        .connect_with(&[("cookie", "session=guess-2"), origin])
        .await;
    assert_eq!(visitor.hello["user_id"], 0, "anonymous: {}", visitor.hello);
    assert_eq!(
        app.seen("connect").len(),
        3,
        "the third refused cookie was not asked about"
    );
    // The cookie with a cached answer still signs in, without asking.
    let again = s.connect_with(&[good, origin]).await;
    assert_eq!(again.user_id(), ada.user_id());
    assert_eq!(app.seen("connect").len(), 3);
    // The address's tokens are judged as ever.
    s.get("/api/v1/me", ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK);
    let mut ada = s.connect("good-token").await;
    ada.ping().await;
}

/// The application of [`introspect`] that refuses every credential once the test sets
/// the flag it returns (its user is logged out).
async fn logging_out_app() -> (App, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let logged_out = std::sync::Arc::new(AtomicBool::new(false));
    let app = App::start({
        let logged_out = logged_out.clone();
        move |proxy, body| {
            if logged_out.load(Ordering::SeqCst) {
                Reply::Json(json!({"active": false, "reason": "logged out"}))
            } else {
                introspect(proxy, body)
            }
        }
    })
    .await;
    (app, logged_out)
}

/// The application logs subject 42 out: it refuses their session from now on, and tells
/// Chorus so (`POST /api/v1/proxy/sessions/revoke`, with `key`).
async fn log_out_42(s: &TestServer, logged_out: &std::sync::atomic::AtomicBool, key: &str) {
    logged_out.store(true, std::sync::atomic::Ordering::SeqCst);
    s.post("/api/v1/proxy/sessions/revoke", key, json!({"sub": "42"}))
        .await
        .expect_status(StatusCode::NO_CONTENT);
}

/// The application's logout (`POST /api/v1/proxy/sessions/revoke {"sub"}`, a server
/// key with `sessions:revoke`): every socket the connect proxy authenticated for the
/// user (cookie or token) closes with 3502, their socket opened with a Chorus API token
/// stays, and the cookie is asked about again despite `cache_ms`; the application, which
/// logged the session out, refuses it then.
#[tokio::test]
async fn the_applications_logout_closes_the_users_proxied_sockets() {
    use std::sync::atomic::Ordering;

    let (app, logged_out) = logging_out_app().await;
    let s = TestServer::start_with(|c| c.proxy = proxies(Some(app.url("connect")), None)).await;
    let good = ("cookie", "theme=dark; session=good");
    let origin = ("origin", APP_ORIGIN);
    let mut by_cookie = s.connect_with(&[good, origin]).await;
    let id = by_cookie.user_id();
    let mut by_app_token = s.connect("good-token").await;
    assert_eq!(by_app_token.user_id(), id);
    // The same user's Chorus API token, which the application's logout does not touch.
    let api_token = s.mint_token(ADMIN_TOKEN, id, "cli").await;
    let mut by_api_token = s.connect(&api_token).await;
    assert_eq!(by_api_token.user_id(), id);
    // Cached: a second upgrade with the cookie is not asked about.
    let mut again = s.connect_with(&[good, origin]).await;
    assert_eq!(app.seen("connect").len(), 2, "the cookie and the token");

    let key = |permissions: Value| {
        let s = &s;
        async move {
            s.post(
                "/api/v1/server-keys",
                ADMIN_TOKEN,
                json!({"name": "app", "permissions": permissions}),
            )
            .await
            .expect_status(StatusCode::CREATED)
            .body["key"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let revoke = "/api/v1/proxy/sessions/revoke";
    let publisher = key(json!(["publish"])).await;
    s.post(revoke, &publisher, json!({"sub": "42"}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    s.post(revoke, &api_token, json!({"sub": "42"}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    by_cookie.ping().await;

    let logout = key(json!(["sessions:revoke"])).await;
    // A user Chorus never saw: nothing to close.
    s.post(revoke, &logout, json!({"sub": "7"}))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    by_cookie.ping().await;
    log_out_42(&s, &logged_out, &logout).await;
    assert_eq!(by_cookie.expect_close().await, Some(3502));
    assert_eq!(again.expect_close().await, Some(3502));
    assert_eq!(by_app_token.expect_close().await, Some(3502));
    by_api_token.ping().await;

    // The cached identity is gone: the cookie is asked about again, and refused.
    let (status, body) = s.refused_upgrade_with(&[good, origin]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let asked = app.seen("connect");
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert_eq!(asked[2].body["cookie"], good.1);
    by_api_token.ping().await;

    // The user signs in again. The logout's second close (which catches a socket
    // vouched for just before it) reaches the new socket and leaves it open: it names
    // the ended epoch's sockets only.
    logged_out.store(false, Ordering::SeqCst);
    let mut signed_in_again = s.connect_with(&[good, origin]).await;
    // Asked once: the logout came before the question.
    assert_eq!(app.seen("connect").len(), 4);
    let second = signed_in_again.expect_event("credentials.revoked").await;
    assert_eq!(second["data"]["reason"], "session_revoked", "{second}");
    signed_in_again.ping().await;
    by_api_token.ping().await;
}

/// The application answers "active" for a session, then logs it out before Chorus has
/// read that answer: the answer does not let the session in. Chorus sees that the user
/// was logged out while it asked and asks again; the application refuses then.
#[tokio::test]
async fn an_answer_overtaken_by_the_logout_does_not_let_the_session_in() {
    logout_overtakes_the_answer(true).await;
}

/// The same for the user's first sign-in ever: the logout finds no user to log out,
/// and still the answer it overtook does not count.
#[tokio::test]
async fn a_first_sign_in_overtaken_by_the_logout_is_asked_again() {
    logout_overtakes_the_answer(false).await;
}

/// The application holds its answer about a cookie (active) until the test has logged
/// the user out; `seen`: Chorus already has the user (their socket opened with an
/// application token).
async fn logout_overtakes_the_answer(seen: bool) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let logged_out = Arc::new(AtomicBool::new(false));
    let (open_gate, gate) = tokio::sync::watch::channel(false);
    let app = App::start({
        let logged_out = logged_out.clone();
        move |_, body| {
            if logged_out.load(Ordering::SeqCst) {
                Reply::Json(json!({"active": false, "reason": "logged out"}))
            } else if body["cookie"].is_string() {
                // Answered once the test has logged the user out.
                Reply::Held(gate.clone(), json!({"active": true, "sub": "42"}))
            } else {
                Reply::Json(json!({"active": true, "sub": "42"}))
            }
        }
    })
    .await;
    let s = TestServer::start_with(|c| {
        c.proxy = cookie_proxies(&app, &[APP_ORIGIN]);
        if let Some(connect) = &mut c.proxy.connect {
            connect.timeout_ms = 10_000;
        }
    })
    .await;
    let mut by_token = if seen {
        Some(s.connect("good-token").await)
    } else {
        None
    };
    let before = app.seen("connect").len();

    let cookie = [("cookie", "session=good"), ("origin", APP_ORIGIN)];
    let logout = async {
        // The cookie's question has reached the application, which holds its answer.
        tokio::time::timeout(common::WAIT, async {
            while app.seen("connect").len() <= before {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the cookie was never asked about");
        log_out_42(&s, &logged_out, ADMIN_TOKEN).await;
        open_gate.send(true).unwrap();
    };
    let ((status, body), ()) = tokio::join!(s.refused_upgrade_with(&cookie), logout);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("logged out"),
        "{body}"
    );
    let asked = app.seen("connect");
    assert_eq!(
        asked.len(),
        before + 2,
        "asked again after the logout: {asked:?}"
    );
    if let Some(by_token) = &mut by_token {
        assert_eq!(by_token.expect_close().await, Some(3502));
    }
}

/// A logout while the user is deactivated still holds once they are reactivated: their
/// cached identity is not let in again, the application is asked.
#[tokio::test]
async fn a_logout_while_deactivated_holds_after_reactivation() {
    let (app, logged_out) = logging_out_app().await;
    let s = TestServer::start_with(|c| c.proxy = proxies(Some(app.url("connect")), None)).await;
    let (good, origin) = (
        ("cookie", "theme=dark; session=good"),
        ("origin", APP_ORIGIN),
    );
    let mut by_cookie = s.connect_with(&[good, origin]).await;
    let id = by_cookie.user_id();
    s.post(
        &format!("/api/v1/users/{id}/deactivate"),
        ADMIN_TOKEN,
        json!({}),
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(by_cookie.expect_close().await, Some(3502));
    log_out_42(&s, &logged_out, ADMIN_TOKEN).await;
    s.post(
        &format!("/api/v1/users/{id}/reactivate"),
        ADMIN_TOKEN,
        json!({}),
    )
    .await
    .expect_status(StatusCode::OK);
    let (status, body) = s.refused_upgrade_with(&[good, origin]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(app.seen("connect").len(), 2, "asked again after the logout");
}

/// Without `[proxy.connect]` there is no proxied session to revoke: `404`.
#[tokio::test]
async fn revoking_proxied_sessions_needs_the_connect_proxy() {
    let s = TestServer::start().await;
    s.post(
        "/api/v1/proxy/sessions/revoke",
        ADMIN_TOKEN,
        json!({"sub": "42"}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
}

/// Asserts a clear refusal: 503 `unavailable`, saying why. The upgrade's own bounded
/// wait (`common::WAIT`, 10 s) is far shorter than the slow application's minute, so
/// an answer at all shows the timeout bounded it.
async fn assert_unavailable(s: &TestServer, token: &str, why: &str) {
    let (status, body) = s
        .refused_upgrade_with(&[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("connect proxy is unavailable") && message.contains(why),
        "{message}"
    );
    let over_http = s
        .get("/api/v1/me", token)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(over_http.text.contains(why), "{}", over_http.text);
}

#[tokio::test]
async fn an_application_down_or_slow_is_a_clear_bounded_refusal() {
    let url = closed_url().await;
    let s = TestServer::start_with(|c| c.proxy = proxies(Some(url), None)).await;
    assert_unavailable(&s, "any-token", "connection failed").await;

    let slow = App::start(|_, _| Reply::Hang).await;
    let s = TestServer::start_with(|c| c.proxy = proxies(Some(slow.url("connect")), None)).await;
    assert_unavailable(&s, "any-token", "no answer within 300 ms").await;

    let broken = App::start(|_, _| Reply::Status(500)).await;
    let s = TestServer::start_with(|c| c.proxy = proxies(Some(broken.url("connect")), None)).await;
    assert_unavailable(&s, "any-token", "answered HTTP 500").await;

    let confused = App::start(|_, _| Reply::Json(json!({"active": true}))).await;
    let s =
        TestServer::start_with(|c| c.proxy = proxies(Some(confused.url("connect")), None)).await;
    assert_unavailable(&s, "any-token", "without a sub").await;
}

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

/// The application's subscribe and publish rules: a room is readable by the user it is
/// named after and by `alice`; in `chat`, `spam` is refused, `shout` is rewritten in
/// capitals and `break` is rewritten into something the schema refuses.
fn rules(proxy: &str, body: &Value) -> Reply {
    Reply::Json(match proxy {
        "subscribe" => {
            let user = body["user"]["name"].as_str().unwrap_or("");
            let room = body["scope"]
                .as_str()
                .unwrap()
                .trim_start_matches("topic:room.");
            if user == "alice" || user == room {
                json!({"allow": true})
            } else {
                json!({"allow": false, "reason": "not your room"})
            }
        }
        "publish" => match body["data"]["text"].as_str().unwrap_or("") {
            "spam" => json!({"allow": false, "reason": "no spam"}),
            "shout" => json!({"allow": true, "data": {"text": "SHOUT"}}),
            "break" => json!({"allow": true, "data": {"text": 12}}),
            _ => json!({"allow": true}),
        },
        other => panic!("{other}"),
    })
}

async fn gateway(app: &App) -> TestServer {
    let mut chat = namespace("chat", "topic:chat.{room}", "authenticated", "proxy");
    chat.schema = Some(json!({
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string"}}
    }));
    TestServer::start_with(|c| {
        c.proxy = proxies(None, Some(app));
        c.namespaces = vec![
            namespace("rooms", "topic:room.{room}", "proxy", "server"),
            chat,
        ];
    })
    .await
}

async fn answer(client: &mut WsClient, scope: &str) -> Value {
    client.subscribe(scope).await
}

#[tokio::test]
async fn the_subscribe_proxy_allows_and_refuses_per_user() {
    let app = App::start(rules).await;
    let s = gateway(&app).await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob = s.connect(&w.bob.token).await;

    assert_eq!(answer(&mut alice, "topic:room.kitchen").await["op"], "ack");
    assert_eq!(answer(&mut bob, "topic:room.bob").await["op"], "ack");
    let refused = answer(&mut bob, "topic:room.kitchen").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not your room"),
        "{refused}"
    );
    let asked = app.seen("subscribe");
    assert!(asked.iter().all(|s| s.signed));
    assert_eq!(
        asked[0].body,
        json!({
            "user": {"id": w.alice.id, "name": "alice"},
            "roles": [],
            "scope": "topic:room.kitchen",
            "namespace": "rooms"
        })
    );

    // The HTTP catch-up follows the same rule (its answers cached: no new question).
    let sent = s
        .post(
            "/api/v1/publish",
            ADMIN_TOKEN,
            json!({"scope": "topic:room.kitchen", "type": "dish", "data": {"name": "soup"}}),
        )
        .await
        .expect_status(StatusCode::ACCEPTED);
    let after = sent.body["offset"].as_u64().unwrap() - 1;
    let path = format!("/api/v1/scopes/topic%3Aroom.kitchen/events?after={after}");
    let asked = app.seen("subscribe").len();
    let read = s
        .get(&path, &w.alice.token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(read.body["events"][0]["data"], json!({"name": "soup"}));
    s.get(&path, &w.bob.token)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(app.seen("subscribe").len(), asked, "cached answers");
    // And so does resume: the ack's `scopes` tells per scope.
    let mut carol = s.connect(&w.carol.token).await;
    let resumed = carol
        .request(
            json!({"op": "resume", "positions": {"topic:room.carol": 0, "topic:room.kitchen": 0}}),
        )
        .await;
    assert_eq!(resumed["op"], "ack", "{resumed}");
    let scopes = &resumed["scopes"];
    assert!(
        scopes["topic:room.carol"].is_object() && scopes["topic:room.kitchen"].is_object(),
        "{resumed}"
    );
    assert!(
        scopes["topic:room.kitchen"]
            .to_string()
            .contains("forbidden"),
        "{resumed}"
    );
    assert!(
        !scopes["topic:room.carol"].to_string().contains("forbidden"),
        "{resumed}"
    );
    assert!(
        app.seen("subscribe")
            .iter()
            .any(|s| s.body["user"]["name"] == "carol" && s.body["scope"] == "topic:room.kitchen"),
        "resume asked the application"
    );
}

#[tokio::test]
async fn the_subscribe_proxy_down_is_unavailable_not_a_hang() {
    let slow = App::start(|_, _| Reply::Hang).await;
    let s = TestServer::start_with(|c| {
        c.proxy = ProxyConfig {
            secret: Some(SECRET.into()),
            subscribe: Some(chorus_server::config::ProxyEndpoint {
                url: slow.url("subscribe"),
                timeout_ms: 300,
                cache_ms: 0,
                allowed_origins: Vec::new(),
            }),
            ..ProxyConfig::default()
        };
        c.namespaces = vec![namespace("rooms", "topic:room.{room}", "proxy", "server")];
    })
    .await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    let refused = answer(&mut alice, "topic:room.kitchen").await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("subscribe proxy is unavailable"),
        "{refused}"
    );
}

#[tokio::test]
async fn the_publish_proxy_allows_refuses_and_transforms() {
    let app = App::start(rules).await;
    let s = gateway(&app).await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    let mut bob = s.connect(&w.bob.token).await;
    assert_eq!(answer(&mut bob, "topic:chat.1").await["op"], "ack");
    let publish = |text: &str| json!({"op": "publish", "scope": "topic:chat.1", "type": "said", "data": {"text": text}});

    let ok = alice.request(publish("hello")).await;
    assert_eq!(ok["op"], "ack", "{ok}");
    let got = bob.expect_event("said").await;
    assert_eq!(got["data"], json!({"text": "hello"}));

    let spam = alice.request(publish("spam")).await;
    assert_eq!(spam["code"], "forbidden", "{spam}");
    assert!(spam["message"].as_str().unwrap().contains("no spam"));

    let broken = alice.request(publish("break")).await;
    assert_eq!(broken["code"], "bad_request", "{broken}");
    assert!(
        broken["message"].as_str().unwrap().contains("at /text"),
        "the transformed payload is checked against the schema: {broken}"
    );

    let shout = alice.request(publish("shout")).await;
    assert_eq!(shout["op"], "ack", "{shout}");
    // Neither refused publish reached bob: the next event is the transformed one.
    let got = bob.expect_event("said").await;
    assert_eq!(got["data"], json!({"text": "SHOUT"}));

    let asked = app.seen("publish");
    assert_eq!(asked.len(), 4);
    assert!(asked.iter().all(|s| s.signed));
    assert_eq!(
        asked[0].body,
        json!({
            "user": {"id": w.alice.id, "name": "alice"},
            "roles": [],
            "scope": "topic:chat.1",
            "namespace": "chat",
            "type": "said",
            "data": {"text": "hello"}
        })
    );
}

/// The subscribe and publish proxies are told the roles of the connection's credential
/// (here the connect proxy's `roles`), as `role:<name>` namespaces see them: the
/// application can decide by them, and a subscribe answer cached for one credential is
/// not reused for another of the same user with other roles.
#[tokio::test]
async fn subscribe_and_publish_proxy_requests_carry_the_credentials_roles() {
    let app = App::start(|proxy, body| {
        let support = body["roles"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("support")));
        Reply::Json(match proxy {
            "connect" => match body["token"].as_str().unwrap_or("") {
                "staff-session" => {
                    json!({"active": true, "sub": "42", "roles": ["support", "billing.read"]})
                }
                "plain-session" => json!({"active": true, "sub": "42"}),
                _ => json!({"active": false}),
            },
            "subscribe" | "publish" if support => json!({"allow": true}),
            _ => json!({"allow": false, "reason": "support staff only"}),
        })
    })
    .await;
    let s = TestServer::start_with(|c| {
        c.proxy = proxies(Some(app.url("connect")), Some(&app));
        c.namespaces = vec![namespace("tickets", "topic:ticket.{id}", "proxy", "proxy")];
    })
    .await;
    let publish =
        json!({"op": "publish", "scope": "topic:ticket.7", "type": "note", "data": {"n": 1}});

    let mut staff = s.connect("staff-session").await;
    assert_eq!(answer(&mut staff, "topic:ticket.7").await["op"], "ack");
    let ack = staff.request(publish.clone()).await;
    assert_eq!(ack["op"], "ack", "{ack}");
    staff.expect_event("note").await;
    let user = json!({"id": staff.user_id(), "name": "app.42"});
    assert_eq!(
        app.seen("subscribe")[0].body,
        json!({
            "user": user,
            "roles": ["support", "billing.read"],
            "scope": "topic:ticket.7",
            "namespace": "tickets"
        })
    );
    assert_eq!(
        app.seen("publish")[0].body,
        json!({
            "user": user,
            "roles": ["support", "billing.read"],
            "scope": "topic:ticket.7",
            "namespace": "tickets",
            "type": "note",
            "data": {"n": 1}
        })
    );

    // The same user through a credential without roles: asked again, refused.
    let mut plain = s.connect("plain-session").await;
    assert_eq!(plain.user_id(), staff.user_id());
    let refused = answer(&mut plain, "topic:ticket.7").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = plain.request(publish).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let asked = app.seen("subscribe");
    assert_eq!(
        asked.len(),
        2,
        "not answered from the staff's cache: {asked:?}"
    );
    assert_eq!(asked[1].body["roles"], json!([]));
    assert_eq!(app.seen("publish")[1].body["roles"], json!([]));
}

#[tokio::test]
async fn a_proxy_namespace_without_its_proxy_is_refused_at_start_and_reload() {
    let config = chorus_server::Config {
        namespaces: vec![namespace("rooms", "topic:room.{room}", "proxy", "server")],
        ..chorus_server::Config::default()
    };
    let err = chorus_server::proxies::Proxies::from_config(&config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("[proxy.subscribe]"), "{err}");

    let s = TestServer::start().await;
    let err = chorus_server::reload_namespaces(
        s.state(),
        vec![namespace(
            "chat",
            "topic:chat.{room}",
            "authenticated",
            "proxy",
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[proxy.publish]"), "{err}");
}

/// A reload authorizes every live `topic:` subscription again, so a `proxy`
/// namespace's are asked of the application again — through its cache: an answer
/// still cached is reused (the subscription continues, nothing is asked), an expired
/// or uncached one is asked, and a refusal then ends the subscription with
/// `subscription.revoked {reason: "namespaces_changed"}`; the socket stays.
#[tokio::test]
async fn a_reload_asks_the_subscribe_proxy_again_through_its_cache() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    for cache_ms in [60_000, 0] {
        let open = Arc::new(AtomicBool::new(true));
        let app = {
            let open = open.clone();
            App::start(move |proxy, _| {
                assert_eq!(proxy, "subscribe");
                Reply::Json(if open.load(Ordering::SeqCst) {
                    json!({"allow": true})
                } else {
                    json!({"allow": false, "reason": "closed"})
                })
            })
            .await
        };
        let rules = || {
            vec![
                namespace("rooms", "topic:room.{room}", "proxy", "server"),
                namespace("news", "topic:news", "authenticated", "server"),
            ]
        };
        let s = TestServer::start_with(|c| {
            c.proxy = ProxyConfig {
                secret: Some(SECRET.into()),
                subscribe: Some(chorus_server::config::ProxyEndpoint {
                    cache_ms,
                    ..app.endpoint("subscribe")
                }),
                ..Default::default()
            };
            c.namespaces = rules();
        })
        .await;
        let w = s.world().await;
        let mut alice = s.connect(&w.alice.token).await;
        assert_eq!(answer(&mut alice, "topic:room.1").await["op"], "ack");
        assert_eq!(answer(&mut alice, "topic:news").await["op"], "ack");
        assert_eq!(app.seen("subscribe").len(), 1);

        open.store(false, Ordering::SeqCst);
        chorus_server::reload_namespaces(s.state(), rules()).unwrap();
        // The re-check is queued before the ping is read, and done before it is
        // answered (the connection's task settles its work first).
        alice.ping().await;
        let publish = |scope: &str, kind: &str| {
            s.post(
                "/api/v1/publish",
                ADMIN_TOKEN,
                json!({"scope": scope, "type": kind, "data": {}}),
            )
        };
        if cache_ms > 0 {
            assert_eq!(app.seen("subscribe").len(), 1, "the cached answer served");
            publish("topic:room.1", "said")
                .await
                .expect_status(StatusCode::ACCEPTED);
            let got = alice.expect_event("said").await;
            assert_eq!(got["scope"], "topic:room.1");
        } else {
            assert_eq!(app.seen("subscribe").len(), 2, "asked again");
            let revoked = alice.expect_event("subscription.revoked").await;
            assert_eq!(revoked["scope"], "topic:room.1");
            assert_eq!(revoked["data"]["reason"], "namespaces_changed");
            publish("topic:room.1", "said")
                .await
                .expect_status(StatusCode::ACCEPTED);
            publish("topic:news", "marker")
                .await
                .expect_status(StatusCode::ACCEPTED);
            loop {
                let frame = alice.recv_json().await;
                assert_ne!(frame["type"], "said", "delivered after the revocation");
                if frame["type"] == "marker" {
                    break;
                }
            }
            alice.ping().await;
        }
        s.check_invariants();
    }
}

/// A cached answer is the answer to one question: this user, scope and roles, in this
/// namespace. A reload that puts a subscribed topic in another `proxy` namespace asks
/// the application about that one — a cached allow for the old namespace does not
/// keep the subscription.
#[tokio::test]
async fn a_reload_into_another_namespace_is_asked_afresh_despite_the_cache() {
    let app = App::start(|proxy, body| {
        assert_eq!(proxy, "subscribe");
        Reply::Json(if body["namespace"] == "rooms" {
            json!({"allow": true})
        } else {
            json!({"allow": false, "reason": "members only"})
        })
    })
    .await;
    let rooms = || namespace("rooms", "topic:room.{room}", "proxy", "server");
    let s = TestServer::start_with(|c| {
        c.proxy = ProxyConfig {
            secret: Some(SECRET.into()),
            subscribe: Some(chorus_server::config::ProxyEndpoint {
                cache_ms: 60_000,
                ..app.endpoint("subscribe")
            }),
            ..Default::default()
        };
        c.namespaces = vec![rooms()];
    })
    .await;
    let w = s.world().await;
    let mut alice = s.connect(&w.alice.token).await;
    assert_eq!(answer(&mut alice, "topic:room.vip").await["op"], "ack");

    // The first namespace whose pattern matches rules the topic: now `vip`.
    let vip = namespace("vip", "topic:room.vip", "proxy", "server");
    chorus_server::reload_namespaces(s.state(), vec![vip, rooms()]).unwrap();
    let revoked = alice.expect_event("subscription.revoked").await;
    assert_eq!(revoked["scope"], "topic:room.vip");
    assert_eq!(revoked["data"]["reason"], "namespaces_changed");
    let asked: Vec<Value> = app
        .seen("subscribe")
        .into_iter()
        .map(|s| s.body["namespace"].clone())
        .collect();
    assert_eq!(asked, [json!("rooms"), json!("vip")]);
    s.check_invariants();
}

/// A revocation's `credentials.revoked` is the last frame of the sockets it closes:
/// nothing published after it reaches them, even while the connection's task is still
/// busy with an operation (here a `subscribe` the application has not answered yet)
/// and so has not closed the socket.
#[tokio::test]
async fn nothing_follows_the_revocation_on_a_socket_busy_with_an_operation() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let app = App::start(move |_, _| Reply::Held(gate.clone(), json!({"allow": true}))).await;
    let s = gateway(&app).await;
    let w = s.world().await;
    let laptop = s.mint_token(&w.bob.token, w.bob.id, "laptop").await;
    let plans = s
        .create_channel(&w.alice, w.ws, "plans", "public", &[&w.bob, &w.carol])
        .await;
    let mut bob = s.connect(&laptop).await;
    let mut carol = s.connect(&w.carol.token).await;
    bob.send_json(json!({"op": "subscribe", "id": 1, "scope": "topic:room.bob"}))
        .await;
    // The connection's task now waits for the application's answer.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while app.seen("subscribe").is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the application was asked");

    s.delete("/api/v1/me/token", &laptop)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    s.send(&w.alice, plans, "after the revocation").await;
    // Carol got it: its fanout, to Bob's queue too, is done.
    let seen = carol.expect_event("message.created").await;
    assert_eq!(seen["data"]["text"], "after the revocation");
    open.send(true).unwrap();

    let mut after_revoked = Vec::new();
    let mut revoked = false;
    let code = loop {
        match bob.recv_frame().await {
            common::Frame::Json(frame) if frame["type"] == "credentials.revoked" => revoked = true,
            common::Frame::Json(frame) if revoked => after_revoked.push(frame),
            common::Frame::Json(_) | common::Frame::Other(_) => {}
            common::Frame::Close(code) => break code,
            common::Frame::Ended(why) => panic!("ended without a close: {why}"),
        }
    };
    assert!(revoked, "credentials.revoked came");
    assert_eq!(code, Some(3502));
    assert!(
        after_revoked.is_empty(),
        "frames after credentials.revoked: {after_revoked:?}"
    );
}
