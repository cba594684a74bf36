//! Webhooks cannot reach inside: a `webhook_url` is checked for its form when it is set
//! (400), and every address its host is, or resolves to, when a delivery is made. An
//! internal target is recorded as `refused` and never connected to, which a real
//! listener on 127.0.0.1 (and ::1) that counts every connection it accepts shows.
//! The agent's own delivery log says how each delivery stands, never what a target
//! answered; a server admin's says everything.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ADMIN_TOKEN, TestServer, TestUser, WAIT};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A plain HTTP/1.1 listener on `127.0.0.1:{port}` (and `[::1]:{port}` when the host has
/// IPv6) that counts every connection it accepts and answers each request with the
/// status scripted for its path, in order, then 200; every answer carries a `Location`
/// of `/hook/redirected`, which a client that followed redirects would request.
#[derive(Clone)]
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    /// Request paths, in the order they came.
    paths: Arc<Mutex<Vec<String>>>,
    script: Arc<Mutex<HashMap<String, VecDeque<u16>>>>,
}

impl Listener {
    async fn start(script: &[(&str, &[u16])]) -> Self {
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let me = Self {
            port,
            accepted: Arc::default(),
            paths: Arc::default(),
            script: Arc::new(Mutex::new(
                script
                    .iter()
                    .map(|(path, codes)| ((*path).to_owned(), codes.iter().copied().collect()))
                    .collect(),
            )),
        };
        tokio::spawn(me.clone().serve(v4));
        // The same port on ::1, so `[::1]` and `localhost` targets have somewhere to go.
        if let Ok(v6) = TcpListener::bind(("::1", port)).await {
            tokio::spawn(me.clone().serve(v6));
        }
        me
    }

    async fn serve(self, listener: TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            self.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(self.clone().answer(stream));
        }
    }

    /// Reads one request (head and `Content-Length` body) and answers it.
    async fn answer(self, mut stream: TcpStream) {
        let Some((head, _body)) = common::read_request(&mut stream).await else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let code = self
            .script
            .lock()
            .unwrap()
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .unwrap_or(200);
        self.paths.lock().unwrap().push(path);
        let response = format!(
            "HTTP/1.1 {code} Scripted\r\nlocation: /hook/redirected\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n"
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

/// Creates an agent (no webhook yet) with the admin token.
async fn agent(s: &TestServer, name: &str) -> TestUser {
    let resp = s
        .post(
            "/api/v1/users",
            ADMIN_TOKEN,
            json!({"name": name, "kind": "agent"}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    TestUser {
        id: resp.body["user"]["id"].as_i64().unwrap(),
        name: name.to_owned(),
        token: resp.body["token"].as_str().unwrap().to_owned(),
    }
}

/// `PUT /api/v1/users/{id}/webhook` by the agent itself.
async fn set_webhook(s: &TestServer, bot: &TestUser, url: &str) -> common::Resp {
    s.call(
        reqwest::Method::PUT,
        &format!("/api/v1/users/{}/webhook", bot.id),
        Some(&bot.token),
        Some(json!({ "url": url })),
    )
    .await
}

/// The agent's delivery log as `token` sees it.
async fn deliveries(s: &TestServer, bot: &TestUser, token: &str) -> Vec<Value> {
    s.get(
        &format!("/api/v1/users/{}/webhook-deliveries", bot.id),
        token,
    )
    .await
    .expect_status(StatusCode::OK)
    .body
    .as_array()
    .unwrap()
    .clone()
}

/// Polls the agent's own log (bounded by [`WAIT`]) until it holds one delivery that is
/// no longer pending; returns it.
async fn settled(s: &TestServer, bot: &TestUser) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = deliveries(s, bot, &bot.token).await;
        if log.len() == 1 && log[0]["status"] != "pending" {
            return log[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: still pending: {log:?}",
            bot.name
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The agent's view: status, attempts and times, but no status code or error text.
#[track_caller]
fn assert_nothing_of_the_target(delivery: &Value) {
    assert!(delivery.get("last_error").is_none(), "{delivery}");
    let log = delivery["attempt_log"].as_array().unwrap();
    assert!(!log.is_empty(), "{delivery}");
    for attempt in log {
        assert!(attempt.get("status_code").is_none(), "{delivery}");
        assert!(attempt.get("error").is_none(), "{delivery}");
        assert!(attempt["attempt"].is_i64() && attempt["duration_ms"].is_i64());
    }
}

fn private_off(c: &mut chorus_server::Config) {
    c.webhook_allow_private = false;
    c.webhook_backoff_ms = 50;
    c.webhook_backoff_max_ms = 200;
    c.webhook_max_attempts = 3;
}

#[tokio::test]
async fn webhook_urls_of_another_form_are_refused_when_set() {
    let s = TestServer::start_with(private_off).await;
    let bot = agent(&s, "form-bot").await;
    let refused: &[(&str, &str)] = &[
        ("ftp://x/", "http(s) URL"),
        ("file:///etc/passwd", "http(s) URL"),
        ("gopher://127.0.0.1:70/", "http(s) URL"),
        ("javascript://alert(1)", "http(s) URL"),
        ("example.com/hook", "http(s) URL"),
        ("http:example.com", "http(s) URL"),
        ("http://", "needs a host"),
        ("http:///etc/passwd", "needs a host"),
        ("http://:8080/", "not a valid URL"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http://example.com\\@127.0.0.1/", "backslashes"),
        ("http://0x7f000001/", "not a plain IPv4 address"),
        ("http://2130706433/", "not a plain IPv4 address"),
        ("http://127.1/", "not a plain IPv4 address"),
        ("http://0177.0.0.1/", "not a plain IPv4 address"),
        ("http://0x7f.0.0.1/", "not a plain IPv4 address"),
        ("http://%31%32%37.0.0.1/", "not a plain IPv4 address"),
        ("http://127.0.0.1./", "not a plain IPv4 address"),
        ("http://1.2.3.4.5/", "not a valid URL"),
        ("http://ex%61mple.com/", "plain DNS name"),
        ("http://exa mple.com/", "whitespace"),
    ];
    for (url, reason) in refused {
        // Both ways of setting one: at creation and later.
        for resp in [
            s.post(
                "/api/v1/users",
                ADMIN_TOKEN,
                json!({"name": "never", "kind": "agent", "webhook_url": url}),
            )
            .await,
            set_webhook(&s, &bot, url).await,
        ] {
            let resp = resp.expect_error(StatusCode::BAD_REQUEST, "bad_request");
            let message = resp.body["error"]["message"].as_str().unwrap();
            assert!(message.contains(reason), "{url}: {message:?}");
        }
    }
    // Accepted as written: where they point is the delivery's check.
    for url in [
        "http://example.com/hook",
        "https://example.com/hook",
        "http://127.0.0.1:9/h",
        "http://[::1]:9/h",
        "http://[::ffff:127.0.0.1]:9/h",
        "http://localhost:9/h",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        let set = set_webhook(&s, &bot, url)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(set.body["user"]["webhook_url"], url);
    }
}

#[tokio::test]
async fn internal_targets_are_refused_without_a_connection() {
    let listener = Listener::start(&[]).await;
    let port = listener.port;
    let s = TestServer::start_with(private_off).await;
    let w = s.world().await;
    let targets = [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://[::ffff:7f00:1]:{port}/hook"),
        format!("http://[::127.0.0.1]:{port}/hook"),
        format!("http://0.0.0.0:{port}/hook"),
        // A DNS name that resolves to loopback: refused by the client's resolver.
        format!("http://localhost:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://metadata.google.internal/computeMetadata/v1/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://172.16.0.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://[fd00:ec2::254]/".to_owned(),
        "http://224.0.0.1/".to_owned(),
        "http://255.255.255.255/".to_owned(),
    ];
    let mut bots = Vec::new();
    for (i, url) in targets.iter().enumerate() {
        let bot = agent(&s, &format!("inside-{i}")).await;
        set_webhook(&s, &bot, url)
            .await
            .expect_status(StatusCode::OK);
        s.add_member(&w.alice, w.ws, &bot, "member").await;
        bots.push(bot);
    }
    let members: Vec<&TestUser> = bots.iter().collect();
    let ch = s
        .create_channel(&w.alice, w.ws, "inside", "public", &members)
        .await;
    // Policy `all`: the message wakes every (unconnected) agent, so each gets a delivery.
    s.send(&w.alice, ch, "status?").await;

    for (bot, url) in bots.iter().zip(&targets) {
        let seen = settled(&s, bot).await;
        assert_eq!(seen["status"], "refused", "{url}: {seen}");
        assert_eq!(seen["attempts"], 1, "{url}: never retried: {seen}");
        assert!(seen.get("next_attempt_at").is_none(), "{seen}");
        assert!(seen["finished_at"].is_string(), "{seen}");
        assert_nothing_of_the_target(&seen);
        // The admin sees why.
        let full = deliveries(&s, bot, ADMIN_TOKEN).await;
        let reason = full[0]["last_error"].as_str().unwrap_or_default();
        assert!(reason.starts_with("refused: "), "{url}: {reason:?}");
        assert_eq!(full[0]["attempt_log"][0]["error"], reason, "{url}");
        assert!(full[0]["attempt_log"][0].get("status_code").is_none());
    }
    for (i, expected) in [
        (
            0,
            "refused: 127.0.0.1 is a loopback address; webhook_allow_private is off",
        ),
        (6, "refused: localhost resolves to "),
        (7, "refused: 169.254.169.254 is a cloud metadata endpoint"),
        (
            8,
            "refused: metadata.google.internal is a cloud metadata endpoint",
        ),
    ] {
        let full = deliveries(&s, &bots[i], ADMIN_TOKEN).await;
        let reason = full[0]["last_error"].as_str().unwrap();
        assert!(reason.starts_with(expected), "{}: {reason:?}", targets[i]);
    }
    // Every delivery is recorded as refused: had any request been made, the listener
    // would have accepted its connection by now.
    assert_eq!(listener.accepted(), 0, "paths: {:?}", listener.paths());
}

/// SPEC §7: outbound links speak TLS. A webhook to a public address over plain
/// `http://` would carry the event's text across the internet in the clear: refused,
/// whether the URL names the address or a name resolves to it; `webhook_allow_private`
/// opens plain HTTP to the server's own machine and network only.
#[tokio::test]
async fn a_public_target_gets_no_plain_http() {
    let s = TestServer::start().await; // webhook_allow_private on, as in local setups
    let w = s.world().await;
    let bot = agent(&s, "public-plain").await;
    // A documentation address is a special range, so a public unicast one: nothing
    // listens there from this machine, and nothing may be attempted.
    set_webhook(&s, &bot, "http://93.184.216.34:9/hook")
        .await
        .expect_status(StatusCode::OK);
    s.add_member(&w.alice, w.ws, &bot, "member").await;
    let ch = s
        .create_channel(&w.alice, w.ws, "plain", "public", &[&bot])
        .await;
    s.send(&w.alice, ch, "status?").await;
    let seen = settled(&s, &bot).await;
    assert_eq!(seen["status"], "refused", "{seen}");
    assert_eq!(seen["attempts"], 1, "never retried: {seen}");
    let full = deliveries(&s, &bot, ADMIN_TOKEN).await;
    assert_eq!(
        full[0]["last_error"],
        "refused: 93.184.216.34 is a public address: a webhook to it must be https://",
        "{full:?}"
    );
}

#[tokio::test]
async fn private_targets_are_delivered_when_allowed_and_only_admins_see_answers() {
    let listener =
        Listener::start(&[("/hook/flaky", &[503]), ("/hook/moved", &[307, 307, 307])]).await;
    let port = listener.port;
    let s = TestServer::start_with(|c| {
        private_off(c);
        c.webhook_allow_private = true;
    })
    .await;
    let w = s.world().await;
    let flaky = agent(&s, "flaky-bot").await;
    let named = agent(&s, "named-bot").await;
    let metadata = agent(&s, "metadata-bot").await;
    let link = agent(&s, "link-bot").await;
    let moved = agent(&s, "moved-bot").await;
    for (bot, url) in [
        (&moved, format!("http://127.0.0.1:{port}/hook/moved")),
        (&flaky, format!("http://127.0.0.1:{port}/hook/flaky")),
        (&named, format!("http://localhost:{port}/hook/named")),
        (&metadata, "http://metadata.google.internal/".to_owned()),
        (&link, "http://169.254.169.254/".to_owned()),
    ] {
        set_webhook(&s, bot, &url)
            .await
            .expect_status(StatusCode::OK);
        s.add_member(&w.alice, w.ws, bot, "member").await;
    }
    let ch = s
        .create_channel(
            &w.alice,
            w.ws,
            "local",
            "public",
            &[&flaky, &named, &metadata, &link, &moved],
        )
        .await;
    s.send(&w.alice, ch, "deploy?").await;

    // The private switch opens loopback, by address and by name…
    let seen = settled(&s, &flaky).await;
    assert_eq!(seen["status"], "delivered", "{seen}");
    assert_eq!(seen["attempts"], 2, "{seen}");
    assert_nothing_of_the_target(&seen);
    let full = deliveries(&s, &flaky, ADMIN_TOKEN).await;
    let codes: Vec<&Value> = full[0]["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(503), &json!(200)]);
    assert_eq!(full[0]["last_error"], "receiver answered HTTP 503");
    assert_eq!(
        full[0]["attempt_log"][0]["error"],
        "receiver answered HTTP 503"
    );
    let seen = settled(&s, &named).await;
    assert_eq!(seen["status"], "delivered", "{seen}");
    // A redirect is a failed attempt like any other status, never followed.
    let seen = settled(&s, &moved).await;
    assert_eq!(seen["status"], "failed", "{seen}");
    let full = deliveries(&s, &moved, ADMIN_TOKEN).await;
    assert_eq!(full[0]["last_error"], "receiver answered HTTP 307");
    let mut paths = listener.paths();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/hook/flaky",
            "/hook/flaky",
            "/hook/moved",
            "/hook/moved",
            "/hook/moved",
            "/hook/named"
        ]
    );

    // …but never metadata endpoints or link-local addresses.
    for bot in [&metadata, &link] {
        let seen = settled(&s, bot).await;
        assert_eq!(seen["status"], "refused", "{seen}");
        assert_nothing_of_the_target(&seen);
    }

    // Only the agent itself and server admins read the log at all.
    for token in [&w.bob.token, &w.alice.token, &named.token] {
        s.get(
            &format!("/api/v1/users/{}/webhook-deliveries", flaky.id),
            token,
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    }
}
