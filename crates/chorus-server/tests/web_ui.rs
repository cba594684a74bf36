//! The web UI served at `/` (embedded from `web/dist`) and the `--dev` login it signs in
//! with: API routes keep priority, unknown UI paths get the page, dev login only in dev
//! mode.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN_TOKEN, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_types_and_caching() {
    let s = TestServer::start().await;
    let page = s.call(Method::GET, "/", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers["cache-control"], "no-cache");
    assert!(page.headers.contains_key("content-security-policy"));
    assert!(page.text.contains("<title>Chorus</title>"), "{}", page.text);

    // Client-side routes reload into the same page.
    let ops = s.call(Method::GET, "/ops", None, None).await;
    assert_eq!(ops.status, StatusCode::OK);
    assert_eq!(ops.text, page.text);

    // Every bundle the page names is served, typed and cacheable for good.
    let mut bundles = 0;
    for name in page.text.split('"').filter(|p| p.starts_with("/assets/")) {
        let asset = s.call(Method::GET, name, None, None).await;
        assert_eq!(asset.status, StatusCode::OK, "{name}");
        let kind = asset.headers["content-type"].to_str().unwrap();
        assert!(
            kind.starts_with("text/javascript") || kind.starts_with("text/css"),
            "{name}: {kind}"
        );
        assert!(
            asset.headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        bundles += 1;
    }
    assert!(bundles >= 2, "the page names its script and stylesheet");

    // A missing bundle is a 404, never the page.
    let missing = s.call(Method::GET, "/assets/nope-123.js", None, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// The page is reachable as `/`, as `/index.html` and under the UI's own paths; each of
/// them, and every file, carries the same headers: no framing (clickjacking of the
/// signed-in chat), the Content-Security-Policy, no sniffing, no `Referer`.
#[tokio::test]
async fn every_answer_of_the_ui_carries_the_security_headers() {
    let s = TestServer::start().await;
    let page = s.call(Method::GET, "/", None, None).await;
    let script = page
        .text
        .split('"')
        .find(|p| p.starts_with("/assets/") && p.ends_with(".js"))
        .expect("the page names its script")
        .to_owned();
    for path in ["/", "/index.html", "/ops", "/c/42", script.as_str()] {
        let resp = s.call(Method::GET, path, None, None).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
        let header = |name: &str| {
            resp.headers
                .get(name)
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }
    // `/index.html` is the page itself, not another document.
    let direct = s.call(Method::GET, "/index.html", None, None).await;
    assert_eq!(direct.text, page.text);
}

#[tokio::test]
async fn api_routes_keep_priority_over_the_page() {
    let s = TestServer::start().await;
    let unknown = s.call(Method::GET, "/api/v1/nope", None, None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["code"], "not_found");
    let post = s.call(Method::POST, "/somewhere", None, None).await;
    assert_eq!(post.status, StatusCode::NOT_FOUND);
    assert_eq!(post.body["error"]["code"], "not_found");
    let health = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.body["status"], "ok");
    let metrics = s.call(Method::GET, "/metrics", None, None).await;
    assert!(metrics.text.contains("chorus_connections"));
    let me = s.call(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn dev_login_is_refused_unless_dev_mode_is_on() {
    let s = TestServer::start().await;
    let resp = s
        .call(
            Method::POST,
            "/api/v1/dev/login",
            None,
            Some(json!({ "name": "mallory" })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.body["error"]["code"], "not_found");
    // Documented as a route that needs no bearer token.
    let doc = s.call(Method::GET, "/openapi.json", None, None).await;
    let login = &doc.body["paths"]["/api/v1/dev/login"]["post"];
    assert_eq!(login["security"], json!([{}]), "{login}");
    // And it created nobody.
    let users = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN_TOKEN),
            Some(json!({ "name": "mallory" })),
        )
        .await;
    assert_eq!(users.status, StatusCode::CREATED);
}

/// DNS rebinding: a web page whose own name was made to resolve to 127.0.0.1 is
/// same-origin with a local `--dev` server, so its requests carry that name as `Host`.
/// A dev server answers only `localhost` and IP addresses.
#[tokio::test]
async fn a_dev_server_answers_only_requests_addressed_to_localhost_or_an_ip() {
    let s = TestServer::start_with(|c| c.dev = true).await;
    let client = reqwest::Client::new();
    let login = |host: &'static str| {
        let request = client
            .post(s.url("/api/v1/dev/login"))
            .header(reqwest::header::HOST, host)
            .json(&json!({ "name": "alice" }));
        async move { request.send().await.expect("the server answers") }
    };
    for host in [
        "attacker.example",
        "attacker.example:7800",
        "127.0.0.1.nip.io",
    ] {
        let refused = login(host).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{host}");
        let body: serde_json::Value = refused.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], "forbidden", "{host}: {body}");
    }
    // Nor the UI, nor anything else, under that name.
    let page = client
        .get(s.url("/"))
        .header(reqwest::header::HOST, "attacker.example")
        .send()
        .await
        .expect("the server answers");
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    // The refusals created nobody.
    let users = s.get("/api/v1/users", ADMIN_TOKEN).await;
    let names: Vec<&str> = users
        .body
        .as_array()
        .expect("a list of users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(!names.contains(&"alice"), "{names:?}");
    // Addressed to the machine itself, it signs in.
    for host in ["localhost:7800", "127.0.0.1", "[::1]:7800"] {
        let ok = login(host).await;
        assert_eq!(ok.status(), StatusCode::OK, "{host}");
    }
    // A server without --dev answers any name (a reverse proxy may pass its own).
    let plain = TestServer::start().await;
    let health = client
        .get(plain.url("/healthz"))
        .header(reqwest::header::HOST, "chat.example.com")
        .send()
        .await
        .expect("the server answers");
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn dev_login_creates_the_user_and_puts_everyone_in_one_workspace() {
    let s = TestServer::start_with(|c| c.dev = true).await;
    let login = |name: &'static str| {
        let s = &s;
        async move {
            s.call(
                Method::POST,
                "/api/v1/dev/login",
                None,
                Some(json!({ "name": name })),
            )
            .await
        }
    };
    // Two first logins at once still make one workspace.
    let (alice, bob) = tokio::join!(login("alice"), login("bob"));
    assert_eq!(alice.status, StatusCode::OK, "{}", alice.text);
    assert_eq!(bob.status, StatusCode::OK, "{}", bob.text);
    let alice_token = alice.body["token"].as_str().unwrap().to_owned();
    let bob_token = bob.body["token"].as_str().unwrap().to_owned();
    assert_eq!(alice.body["user"]["name"], "alice");

    let me = s.get("/api/v1/me", &alice_token).await;
    assert_eq!(me.body["id"], alice.body["user"]["id"]);

    let workspaces = s.get("/api/v1/workspaces", &alice_token).await;
    let workspaces = workspaces.body.as_array().unwrap().clone();
    assert_eq!(workspaces.len(), 1, "{workspaces:?}");
    assert_eq!(workspaces[0]["name"], "dev");
    let ws = workspaces[0]["id"].as_i64().unwrap();
    let bobs = s.get("/api/v1/workspaces", &bob_token).await;
    assert_eq!(bobs.body.as_array().unwrap().len(), 1);
    assert_eq!(bobs.body[0]["id"], ws);

    // Both are members of #general, and can see each other for a DM.
    let channels = s
        .get(&format!("/api/v1/workspaces/{ws}/channels"), &bob_token)
        .await;
    let general = channels
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "general")
        .cloned()
        .unwrap();
    assert_eq!(general["member"], true);
    let members = s
        .get(&format!("/api/v1/workspaces/{ws}/members"), &bob_token)
        .await;
    let names: Vec<_> = members
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"alice".to_owned()) && names.contains(&"bob".to_owned()));

    // Signing in again is the same user with a new token, and changes nothing else.
    let again = login("alice").await;
    assert_eq!(again.body["user"]["id"], alice.body["user"]["id"]);
    assert_ne!(again.body["token"], alice.body["token"]);
    let workspaces = s.get("/api/v1/workspaces", &alice_token).await;
    assert_eq!(workspaces.body.as_array().unwrap().len(), 1);

    // Never an administrator, and never a malformed name.
    let admin = login("admin").await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN);
    let bad = login("Not A Name").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Nor an agent: its name alone must not sign anyone in as it.
    let created = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN_TOKEN),
            Some(json!({ "name": "helper-bot", "kind": "agent" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let agent = login("helper-bot").await;
    assert_eq!(agent.status, StatusCode::FORBIDDEN, "{}", agent.text);
    assert_eq!(agent.body["error"]["code"], "forbidden");
    assert!(agent.text.contains("agent"), "{}", agent.text);
}
