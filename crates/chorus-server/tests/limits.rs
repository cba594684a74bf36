//! The HTTP limits: requests are counted per authenticated user whatever form the
//! token takes (bearer header, `?token=` in any encoding, admin token or JWT, HTTP or
//! WebSocket upgrade), and failed authentications per client address.
//!
//! Limits here are 1/s with a burst of 3, so each test uses its bursts within a few
//! milliseconds; nothing waits for a refill.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use chorus_client::ErrorCode;
use common::{ADMIN_TOKEN, Resp, TestServer, TestUser, WAIT};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const JWT_SECRET: &str = "an-application-secret-at-least-32-bytes";

fn jwt(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": sub, "exp": now + 600, "iat": now }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Every byte of `token` percent-encoded (`chr_…` → `%63%68%72%5F…`).
fn percent_encoded(token: &str) -> String {
    token.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// A user made through the public `--dev` login, which no limit counts, so the tests'
/// setup spends nobody's burst.
async fn dev_user(s: &TestServer, name: &str) -> TestUser {
    let resp = s
        .call(
            Method::POST,
            "/api/v1/dev/login",
            None,
            Some(json!({ "name": name })),
        )
        .await
        .expect_status(StatusCode::OK);
    TestUser {
        id: resp.body["user"]["id"].as_i64().unwrap(),
        name: name.to_owned(),
        token: resp.body["token"].as_str().unwrap().to_owned(),
    }
}

/// `GET path` (sent as given: any percent-encoding stays) with an optional raw
/// `Authorization` header value.
async fn get_raw(s: &TestServer, path: &str, authorization: Option<&str>) -> Resp {
    get_via(&s.http, s, path, authorization, None).await
}

async fn get_via(
    http: &reqwest::Client,
    s: &TestServer,
    path: &str,
    authorization: Option<&str>,
    forwarded_for: Option<&str>,
) -> Resp {
    let req = http.request(Method::GET, s.url(path));
    send(req, authorization, forwarded_for).await
}

/// `GET /api/v1/me` with `token`, and `x-chorus-internal: {internal}` when given.
async fn me_as(s: &TestServer, token: &str, internal: Option<&str>) -> Resp {
    let mut req = s.http.request(Method::GET, s.url("/api/v1/me"));
    if let Some(value) = internal {
        req = req.header("x-chorus-internal", value);
    }
    send(req, Some(&format!("Bearer {token}")), None).await
}

async fn send(
    mut req: reqwest::RequestBuilder,
    authorization: Option<&str>,
    forwarded_for: Option<&str>,
) -> Resp {
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    if let Some(value) = forwarded_for {
        req = req.header("x-forwarded-for", value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or_default(),
        text,
    }
}

/// A client whose connections come from another loopback address (127.0.0.2).
fn client_from_elsewhere() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap()
}

/// Sends a WebSocket upgrade for `target` (path and query, exactly as given) and returns
/// the answer's status code; a 101's connection is dropped at once.
async fn upgrade(s: &TestServer, target: &str, bearer: Option<&str>) -> u16 {
    upgrade_with(s, target, bearer, "").await
}

/// As [`upgrade`], with `headers` (each line ending with CRLF) added.
async fn upgrade_with(s: &TestServer, target: &str, bearer: Option<&str>, headers: &str) -> u16 {
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let authorization = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {authorization}{headers}\r\n",
        s.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("no answer to the upgrade")
            .unwrap();
        assert_eq!(n, 1, "connection closed before the answer's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[track_caller]
fn assert_limited(resp: &Resp) {
    assert_eq!(
        resp.status,
        StatusCode::TOO_MANY_REQUESTS,
        "expected 429: {}",
        resp.text
    );
    assert_eq!(resp.body["error"]["code"], "rate_limited", "{}", resp.text);
    let retry: u64 = resp.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After is whole seconds, at least 1");
}

#[tokio::test]
async fn every_form_of_a_users_token_shares_one_bucket() {
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 1;
        c.http_burst = 3;
        c.dev = true;
        c.jwt_secret = Some(JWT_SECRET.to_owned());
    })
    .await;
    let alice = dev_user(&s, "alice").await;
    let bob = dev_user(&s, "bob").await;
    let token = &alice.token;
    let encoded = percent_encoded(token);

    // The burst of 3, spent in three different forms.
    s.get("/api/v1/me", token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        upgrade(&s, &format!("/ws?token={encoded}"), None).await,
        101
    );
    let me = s
        .get("/api/v1/me", &jwt("alice"))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(me.body["id"], alice.id);

    // Now every form is over the limit.
    assert_limited(&s.get("/api/v1/me", token).await);
    assert_limited(&get_raw(&s, "/api/v1/me", Some(&format!("Bearer   {token}  "))).await);
    assert_limited(&s.get("/api/v1/me", &jwt(&alice.id.to_string())).await);
    assert_limited(&get_raw(&s, &format!("/api/v1/me?token={encoded}"), None).await);
    for target in [
        format!("/ws?token={token}"),
        format!("/ws?token={encoded}"),
        format!("/ws?resume=1&token=+{encoded}+"),
    ] {
        assert_eq!(upgrade(&s, &target, None).await, 429, "{target}");
    }
    assert_eq!(upgrade(&s, "/ws", Some(token)).await, 429);

    // Another user has a bucket of their own.
    s.get("/api/v1/me", &bob.token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        upgrade(&s, &format!("/ws?token={}", bob.token), None).await,
        101
    );
}

#[tokio::test]
async fn the_admin_token_and_a_jwt_naming_the_admin_share_a_bucket() {
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 1;
        c.http_burst = 3;
        c.jwt_secret = Some(JWT_SECRET.to_owned());
        c.jwt_admins = true; // a JWT signs in no admin without it
    })
    .await;
    let admin = s
        .get("/api/v1/me", ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK);
    let by_jwt = s
        .get("/api/v1/me", &jwt("admin"))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(by_jwt.body["id"], admin.body["id"]);
    s.get("/api/v1/me", ADMIN_TOKEN)
        .await
        .expect_status(StatusCode::OK);
    assert_limited(&s.get("/api/v1/me", &jwt("admin")).await);
    assert_limited(&s.get("/api/v1/me", ADMIN_TOKEN).await);
}

#[tokio::test]
async fn websocket_upgrades_count_against_the_users_bucket() {
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 1;
        c.http_burst = 3;
        c.dev = true;
    })
    .await;
    let alice = dev_user(&s, "alice").await;
    let mut by_query = s.connect_query(&alice.token).await;
    let mut by_header = s.connect(&alice.token).await;
    assert_eq!(
        upgrade(
            &s,
            &format!("/ws?token={}", percent_encoded(&alice.token)),
            None
        )
        .await,
        101
    );
    assert_limited(&s.get("/api/v1/me", &alice.token).await);
    assert_eq!(
        s.refused_upgrade(Some(&alice.token)).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Sockets already open are not HTTP requests: they stay.
    by_query.ping().await;
    by_header.ping().await;
}

#[tokio::test]
async fn failed_authentications_are_throttled_per_address() {
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 1;
        c.http_burst = 3;
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 3;
        c.dev = true;
    })
    .await;
    let alice = dev_user(&s, "alice").await;
    let bob = dev_user(&s, "bob").await;

    // The failure burst: answered 401, as ever.
    for n in 0..3 {
        s.get("/api/v1/me", &format!("guess-{n}"))
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Over it: refused before the token is tried, whether it is good or bad (a good one
    // not used from here before: see the next test).
    assert_limited(&s.get("/api/v1/me", "guess-3").await);
    assert_limited(&s.get("/api/v1/me", &alice.token).await);
    assert_limited(&get_raw(&s, &format!("/api/v1/me?token={}", alice.token), None).await);
    assert_eq!(
        upgrade(&s, &format!("/ws?token={}", alice.token), None).await,
        429
    );
    // X-Forwarded-For is not trusted by default.
    let spoofed = get_via(
        &s.http,
        &s,
        "/api/v1/me",
        Some(&format!("Bearer {}", alice.token)),
        Some("203.0.113.7"),
    )
    .await;
    assert_limited(&spoofed);
    // Requests without credentials try no token: still served.
    s.call(Method::GET, "/healthz", None, None)
        .await
        .expect_status(StatusCode::OK);
    s.call(Method::GET, "/api/v1/me", None, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Another address is not affected: its failures are its own, and alice's bucket was
    // not touched by the attempts refused above (her full burst is left).
    let elsewhere = client_from_elsewhere();
    let bearer = format!("Bearer {}", alice.token);
    for _ in 0..3 {
        get_via(&elsewhere, &s, "/api/v1/me", Some(&bearer), None)
            .await
            .expect_status(StatusCode::OK);
    }
    let over = get_via(&elsewhere, &s, "/api/v1/me", Some(&bearer), None).await;
    assert_limited(&over);
    assert!(
        over.text.contains("this user"),
        "alice's own limit: {}",
        over.text
    );
    get_via(&elsewhere, &s, "/api/v1/me", Some("Bearer guess-4"), None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    get_via(
        &elsewhere,
        &s,
        "/api/v1/me",
        Some(&format!("Bearer {}", bob.token)),
        None,
    )
    .await
    .expect_status(StatusCode::OK);
}

/// Behind one address (a NAT, a proxy) one client's bad tokens must not lock out the
/// others who were already signed in: a token that authenticated from the address is
/// still tried while it is over its failure limit (and still checked: a revoked one
/// fails, and is then refused untried like any other). The price: a valid token not
/// yet used from there is refused untried, as a guess would be.
#[tokio::test]
async fn tokens_already_used_from_an_address_pass_its_failure_limit() {
    let s = TestServer::start_with(|c| {
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 3;
        c.dev = true;
    })
    .await;
    let alice = dev_user(&s, "alice").await;
    let fresh = dev_user(&s, "alice").await;
    assert_ne!(alice.token, fresh.token, "two tokens of alice's");
    s.get("/api/v1/me", &alice.token)
        .await
        .expect_status(StatusCode::OK);

    // Another client at the same address guesses until it is refused. (A bounded loop,
    // not an exact count: a loaded machine may refill a token between requests.)
    let mut refused = None;
    for n in 0..8 {
        let answer = s.get("/api/v1/me", &format!("guess-{n}")).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(answer);
            break;
        }
        answer.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_limited(&refused.expect("the address is refused past its burst"));

    // Alice goes on, by header or `?token=` alike...
    s.get("/api/v1/me", &alice.token)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        upgrade(&s, &format!("/ws?token={}", alice.token), None).await,
        101
    );
    // ...while guesses, and her token never used from here, are refused untried.
    assert_limited(&s.get("/api/v1/me", "guess-9").await);
    assert_limited(&s.get("/api/v1/me", &fresh.token).await);

    // Known is not trusted: once she signs out, her token fails (401, and counted) and
    // is then forgotten, refused untried.
    let sign_out = s.http.request(Method::DELETE, s.url("/api/v1/me/token"));
    let signed_out = send(sign_out, Some(&format!("Bearer {}", alice.token)), None).await;
    assert_eq!(
        signed_out.status,
        StatusCode::NO_CONTENT,
        "{}",
        signed_out.text
    );
    s.get("/api/v1/me", &alice.token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_limited(&s.get("/api/v1/me", &alice.token).await);

    // From another address, her fresh token works: the lock is the address's.
    let elsewhere = client_from_elsewhere();
    get_via(
        &elsewhere,
        &s,
        "/api/v1/me",
        Some(&format!("Bearer {}", fresh.token)),
        None,
    )
    .await
    .expect_status(StatusCode::OK);
}

/// The server's own `/mcp` agents all call it from its own address, sending its
/// per-process secret (`x-chorus-internal`): their bad tokens are refused but not counted
/// against that address, which an address over its limit does not stop either; their
/// tokens still count against their user. A wrong value is no secret: counted as ever.
#[tokio::test]
async fn the_servers_own_agents_are_not_counted_per_address() {
    let s = TestServer::start_with(|c| {
        c.http_per_sec = 1;
        c.http_burst = 3;
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 3;
        c.dev = true;
    })
    .await;
    let alice = dev_user(&s, "alice").await;
    let secret = s.state().internal.headers();
    let secret = secret["x-chorus-internal"].to_str().unwrap().to_owned();
    let internal = Some(secret.as_str());

    // Twice the burst of bad tokens: each refused, none counted.
    for n in 0..6 {
        me_as(&s, &format!("guess-{n}"), internal)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let header = format!("x-chorus-internal: {secret}\r\n");
    for n in 0..6 {
        let target = format!("/ws?token=guess-ws-{n}");
        assert_eq!(upgrade_with(&s, &target, None, &header).await, 401);
    }
    // What `/mcp`'s agents use: chorus-client sends the headers it is given with every
    // request and upgrade.
    let agent = chorus_client::Client::new(&s.url(""), "guess-client")
        .unwrap()
        .with_headers(s.state().internal.headers());
    let unauthorized = |err| matches!(err, chorus_client::Error::Api { code, .. } if code == ErrorCode::Unauthorized);
    for _ in 0..3 {
        assert!(unauthorized(agent.me().await.unwrap_err()));
        assert!(unauthorized(agent.realtime().await.err().unwrap()));
    }
    me_as(&s, &alice.token, None)
        .await
        .expect_status(StatusCode::OK);

    // A wrong value: counted, and the address is then refused without one... (Bounded
    // loops, not exact counts: a loaded machine may refill a token between requests.)
    let wrong = "0".repeat(secret.len());
    let mut refused = None;
    for n in 0..8 {
        let answer = me_as(&s, &format!("wrong-{n}"), Some(&wrong)).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(answer);
            break;
        }
        answer.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_limited(&refused.expect("the address is refused past its burst"));
    let fresh = dev_user(&s, "alice").await;
    assert_limited(&me_as(&s, &fresh.token, None).await);
    // ...but not with the secret: the token is still tried, and its user counted.
    me_as(&s, "guess-6", internal)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let mut over = None;
    for _ in 0..8 {
        let answer = me_as(&s, &alice.token, internal).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            over = Some(answer);
            break;
        }
        answer.expect_status(StatusCode::OK);
    }
    let over = over.expect("alice's own limit still applies with the secret");
    assert_limited(&over);
    assert!(over.text.contains("this user"), "{}", over.text);
}

/// A socket's `refresh` is one more place credentials are tried: its refusals count
/// against the address like bad tokens over HTTP, and once the address is over its
/// limit a refresh is refused before its token is looked at, as a request would be.
#[tokio::test]
async fn failed_refreshes_count_against_the_address() {
    let s = TestServer::start_with(|c| {
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 3;
        c.dev = true;
    })
    .await;
    let alice = dev_user(&s, "alice").await;
    let fresh = dev_user(&s, "alice").await;
    let bob = dev_user(&s, "bob").await;
    let mut ws = s.connect(&alice.token).await;
    let refresh = |token: &str| json!({"op": "refresh", "token": token});
    for guess in ["guess-0", "guess-1", bob.token.as_str()] {
        let reply = ws.request(refresh(guess)).await;
        assert_eq!(reply["code"], "unauthorized", "{guess}: {reply}");
    }
    // Over the burst: a good token not used from here is refused too, on the socket and
    // over HTTP; the one the socket connected with is known here, and still tried.
    let reply = ws.request(refresh(&fresh.token)).await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    assert_limited(&s.get("/api/v1/me", &fresh.token).await);
    let reply = ws.request(refresh(&alice.token)).await;
    assert_eq!(reply["op"], "ack", "{reply}");
    s.get("/api/v1/me", &alice.token)
        .await
        .expect_status(StatusCode::OK);
    // The socket itself goes on.
    ws.ping().await;
}

#[tokio::test]
async fn behind_trusted_proxies_the_client_is_read_from_x_forwarded_for() {
    let s = TestServer::start_with(|c| {
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 3;
        c.trusted_proxy_hops = 1;
        c.dev = true;
    })
    .await;
    let alice = dev_user(&s, "alice").await;
    let attacker = Some("198.51.100.1");
    for n in 0..3 {
        get_via(
            &s.http,
            &s,
            "/api/v1/me",
            Some(&format!("Bearer guess-{n}")),
            attacker,
        )
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_limited(&get_via(&s.http, &s, "/api/v1/me", Some("Bearer guess-3"), attacker).await);
    // What the client writes itself is left of what the proxy appended: no escape.
    let spoofed = Some("192.0.2.99, 198.51.100.1");
    assert_limited(&get_via(&s.http, &s, "/api/v1/me", Some("Bearer guess-4"), spoofed).await);
    // Another client behind the same proxy (same TCP peer) is unaffected.
    get_via(
        &s.http,
        &s,
        "/api/v1/me",
        Some(&format!("Bearer {}", alice.token)),
        Some("198.51.100.2"),
    )
    .await
    .expect_status(StatusCode::OK);
}
