//! Whatever a client sends, the server answers with a precise error (or, for abuse, a
//! clear close code) and goes on serving: the same connection where that makes sense,
//! and always everyone else.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Frame, TestServer, World, WsClient, read_frame};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

struct Setup {
    s: TestServer,
    w: World,
    ch: i64,
}

async fn setup(tweak: impl FnOnce(&mut chorus_server::Config)) -> Setup {
    let s = TestServer::start_with(tweak).await;
    let w = s.world().await;
    let ch = s
        .create_channel(&w.alice, w.ws, "general", "public", &[&w.bob])
        .await;
    Setup { s, w, ch }
}

/// The next frame on `client` that is not an event (others' presence may arrive at any
/// time), which must be an error frame with this code.
async fn expect_error(client: &mut WsClient, code: &str) -> Value {
    let frame = loop {
        let frame = client.recv_json().await;
        if frame["op"] != "event" {
            break frame;
        }
    };
    assert_eq!(frame["op"], "error", "expected an error frame, got {frame}");
    assert_eq!(frame["code"], code, "{frame}");
    assert!(frame["message"].is_string(), "{frame}");
    frame
}

impl Setup {
    /// The connection still answers, and a message still reaches it and `other`.
    async fn still_serving(&self, client: &mut WsClient, other: &mut WsClient) {
        client.ping().await;
        let message = self.s.send(&self.w.alice, self.ch, "still here").await;
        for c in [client, other] {
            assert_eq!(c.expect_event("message.created").await["data"], message);
        }
    }

    /// Everyone else is unaffected: a fresh connection works and `other` receives.
    async fn others_unaffected(&self, other: &mut WsClient) {
        let mut fresh = self.s.connect(&self.w.bob.token).await;
        fresh.ping().await;
        other.ping().await;
        let message = self.s.send(&self.w.alice, self.ch, "carry on").await;
        for c in [&mut fresh, other] {
            assert_eq!(c.expect_event("message.created").await["data"], message);
        }
    }
}

#[tokio::test]
async fn malformed_frames_get_precise_errors_and_the_connection_survives() {
    let t = setup(|c| c.max_frame_bytes = 4096).await;
    let mut bob = t.s.connect(&t.w.bob.token).await;
    let mut alice = t.s.connect(&t.w.alice.token).await;

    bob.send_text("{not json").await;
    expect_error(&mut bob, "malformed_json").await;
    t.still_serving(&mut bob, &mut alice).await;

    bob.send_text("[1,2,3]").await;
    expect_error(&mut bob, "malformed_json").await;
    t.still_serving(&mut bob, &mut alice).await;

    bob.send_json(json!({"op": "launch", "id": "x-17"})).await;
    let err = expect_error(&mut bob, "unknown_op").await;
    assert_eq!(err["id"], "x-17", "the frame id is echoed");
    t.still_serving(&mut bob, &mut alice).await;

    bob.send_json(json!({"op": "subscribe", "id": 5})).await;
    let err = expect_error(&mut bob, "bad_request").await;
    assert_eq!(err["id"], 5);
    t.still_serving(&mut bob, &mut alice).await;

    bob.send_json(json!({"op": "subscribe", "scope": "not a scope", "id": 6}))
        .await;
    let err = expect_error(&mut bob, "bad_request").await;
    assert_eq!(err["id"], 6);
    t.still_serving(&mut bob, &mut alice).await;

    bob.send_binary(vec![0, 159, 146, 150]).await;
    expect_error(&mut bob, "unsupported_frame").await;
    t.still_serving(&mut bob, &mut alice).await;

    // Within the limit but several times the socket's 1 KiB read buffer: read whole.
    let reply = bob
        .request(json!({"op": "ping", "pad": "p".repeat(3000)}))
        .await;
    assert_eq!(reply["op"], "ack", "a 3 KB frame is answered: {reply}");

    let padding = "x".repeat(5000);
    bob.send_json(json!({"op": "ping", "id": 9, "pad": padding}))
        .await;
    expect_error(&mut bob, "payload_too_large").await;
    t.still_serving(&mut bob, &mut alice).await;

    t.others_unaffected(&mut alice).await;
}

#[tokio::test]
async fn a_frame_over_the_hard_limit_closes_with_1009() {
    let t = setup(|_| {}).await;
    let mut alice = t.s.connect(&t.w.alice.token).await;
    let bob = t.s.connect(&t.w.bob.token).await;

    // Write and read at once: the server may stop reading before the frame is sent.
    let (mut sink, mut stream) = bob.into_inner().split();
    let huge = format!(
        r#"{{"op":"ping","pad":"{}"}}"#,
        "x".repeat(1024 * 1024 + 16)
    );
    let writer = tokio::spawn(async move {
        let _ = sink.send(Message::text(huge)).await;
        sink
    });
    let code = loop {
        let frame = read_frame(&mut stream, common::WAIT)
            .await
            .expect("the server did not close the connection");
        match frame {
            Frame::Close(code) => break code,
            Frame::Ended(why) => panic!("stream ended without a close frame: {why}"),
            Frame::Json(_) | Frame::Other(_) => {}
        }
    };
    assert_eq!(code, Some(1009));
    drop(writer.await.unwrap());

    t.others_unaffected(&mut alice).await;
}

/// A flood of any inbound frame — JSON text, binary, WebSocket pings and pongs — is
/// counted against the connection's rate: refused (`rate_limited`; a ping's answer is
/// its pong, a pong has none) and then closed with 3501.
#[tokio::test]
async fn a_flood_is_rate_limited_then_closed_with_3501() {
    let t = setup(|c| {
        c.inbound_per_sec = 1;
        c.inbound_burst = 1;
    })
    .await;
    let mut alice = t.s.connect(&t.w.alice.token).await;
    type Flood = (&'static str, fn() -> Message);
    let floods: [Flood; 4] = [
        ("text", || Message::text(r#"{"op":"ping"}"#)),
        ("binary", || Message::binary(vec![0u8, 1, 2])),
        ("ping", || Message::Ping(vec![7u8].into())),
        ("pong", || Message::Pong(vec![7u8].into())),
    ];
    for (kind, frame) in floods {
        let bob = t.s.connect(&t.w.bob.token).await;
        let (mut sink, mut stream) = bob.into_inner().split();
        let writer = tokio::spawn(async move {
            for _ in 0..2000 {
                if sink.send(frame()).await.is_err() {
                    break; // closed by the server, as expected
                }
            }
            sink
        });
        let (mut rate_limited, mut unsupported) = (0, 0);
        let code = loop {
            let got = read_frame(&mut stream, common::WAIT).await;
            let got = got.unwrap_or_else(|| panic!("{kind}: the flood was never closed"));
            match got {
                Frame::Json(v) if v["op"] == "error" && v["code"] == "rate_limited" => {
                    rate_limited += 1;
                }
                Frame::Json(v) if v["op"] == "error" => {
                    assert_eq!((kind, &v["code"]), ("binary", &json!("unsupported_frame")));
                    unsupported += 1;
                }
                // Bob hears himself (and his other connections) come online.
                Frame::Json(v) if v["op"] == "event" => {
                    assert_eq!(v["type"], "presence.updated", "{kind}: {v}")
                }
                Frame::Json(v) => assert_eq!(v["op"], "pong", "{kind}: {v}"),
                Frame::Close(code) => break code,
                Frame::Ended(why) => panic!(
                    "{kind}: the stream ended without a close frame after {rate_limited} errors: {why}"
                ),
                // The pongs answering the pings.
                Frame::Other(o) => assert!(kind == "ping" && o.contains("Pong"), "{kind}: {o}"),
            }
        };
        assert_eq!(code, Some(3501), "{kind}");
        if !matches!(kind, "ping" | "pong") {
            assert!(
                rate_limited > 0,
                "{kind}: no rate_limited error before the close"
            );
        }
        // The burst of one: the first binary frame is within the rate.
        assert!(
            unsupported <= 1,
            "{kind}: {unsupported} binary frames answered as if within the rate"
        );
        drop(writer.await.unwrap());
    }
    t.others_unaffected(&mut alice).await;
}

#[tokio::test]
async fn http_bad_input_gets_the_error_body() {
    let t = setup(|c| {
        c.max_body_bytes = 16 * 1024;
        c.max_message_bytes = 1024;
    })
    .await;
    let (s, w, ch) = (&t.s, &t.w, t.ch);

    // Malformed JSON.
    let resp = s
        .http
        .post(s.url("/api/v1/workspaces"))
        .bearer_auth(&w.alice.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(body["error"]["message"].is_string());

    // Well-formed JSON of the wrong shape.
    s.post("/api/v1/workspaces", &w.alice.token, json!({"name": 7}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    s.post(
        &format!("/api/v1/channels/{ch}/messages"),
        &w.alice.token,
        json!({}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");

    // A body over max_body_bytes.
    let big = "y".repeat(40 * 1024);
    s.post(
        &format!("/api/v1/channels/{ch}/messages"),
        &w.alice.token,
        json!({ "text": big }),
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Text over max_message_bytes (inside the body limit).
    s.post(
        &format!("/api/v1/channels/{ch}/messages"),
        &w.alice.token,
        json!({ "text": "z".repeat(2000) }),
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Empty text.
    s.post(
        &format!("/api/v1/channels/{ch}/messages"),
        &w.alice.token,
        json!({ "text": "   " }),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(s.history(&w.alice, ch, "").await.is_empty());

    // Invalid names.
    for name in ["Alice", "has space", "", &"n".repeat(33)] {
        s.post(
            "/api/v1/users",
            common::ADMIN_TOKEN,
            json!({ "name": name }),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    for name in ["Loud", "a b", "", "dots.not.allowed"] {
        s.post(
            &format!("/api/v1/workspaces/{}/channels", w.ws),
            &w.alice.token,
            json!({ "name": name }),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    s.post(
        "/api/v1/workspaces",
        &w.alice.token,
        json!({ "name": "  " }),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");

    // Bad path and query parameters.
    s.get("/api/v1/channels/abc/messages", &w.alice.token)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    s.get(
        &format!("/api/v1/channels/{ch}/messages?limit=lots"),
        &w.alice.token,
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "bad_request");

    // Unknown API routes (other unknown paths get the web UI's page: tests/web_ui.rs).
    for path in ["/api", "/api/v1/nope", "/api/v2/channels/1"] {
        s.call(Method::GET, path, Some(&w.alice.token), None)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
    }

    // A duplicate user name is a conflict, not a crash.
    s.post(
        "/api/v1/users",
        common::ADMIN_TOKEN,
        json!({ "name": "bob" }),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "conflict");

    // The server still works.
    let m = s.send(&w.alice, ch, "fine").await;
    assert_eq!(s.history(&w.bob, ch, "").await, vec![m]);
}

/// JSON Schema 2020-12 (the OpenAPI document's dialect) calls `7.0` an integer, and
/// schemathesis sends ids that way: the server takes a whole-number float where an
/// integer is expected, and still refuses a fraction with the parser's own message.
#[tokio::test]
async fn whole_number_floats_are_taken_as_integers() {
    let t = setup(|_| {}).await;
    let (s, w) = (&t.s, &t.w);
    let ch = s
        .create_channel(&w.alice, w.ws, "floats", "public", &[])
        .await;
    // Was 400 "invalid type: floating point `3.0`, expected i64".
    s.post(
        &format!("/api/v1/channels/{ch}/members"),
        &w.alice.token,
        json!({ "user_id": w.bob.id as f64 }),
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    let message = s.send(&w.bob, ch, "hello").await;
    let id = message["id"].as_i64().unwrap();
    let read = s
        .post(
            &format!("/api/v1/channels/{ch}/read"),
            &w.alice.token,
            json!({ "message_id": id as f64 }),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(read.body["message_id"], id, "{}", read.body);

    let resp = s
        .post(
            &format!("/api/v1/channels/{ch}/members"),
            &w.alice.token,
            json!({ "user_id": w.carol.id as f64 + 0.5 }),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let message = resp.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("floating point"), "{message}");
}

/// A request body is a JSON object: serde alone would read a struct from an array of
/// its fields, and `PATCH /api/v1/channels/{id}` took `[null, null]` as "change nothing".
#[tokio::test]
async fn a_body_that_is_not_an_object_is_refused() {
    let t = setup(|_| {}).await;
    let (s, w, ch) = (&t.s, &t.w, t.ch);
    for body in [
        json!([null, null]),
        json!(["renamed"]),
        json!(7),
        json!(null),
    ] {
        s.patch(&format!("/api/v1/channels/{ch}"), &w.alice.token, body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    s.patch(&format!("/api/v1/channels/{ch}"), &w.alice.token, json!({}))
        .await
        .expect_status(StatusCode::OK);
}

/// A control character in a one-line text field is a bad request naming the field,
/// and nothing is stored: PostgreSQL refuses a NUL in text (22021), which was a 500
/// there, and SQLite kept it. A message's text (many lines) and an event's type refuse
/// only NUL.
#[tokio::test]
async fn control_characters_in_text_fields_are_refused() {
    let t = setup(|_| {}).await;
    let (s, w, ch) = (&t.s, &t.w, t.ch);
    let hook = "https://hooks.example.test/chorus";
    let secret = |bad: &str| format!("{bad}-sixteen-bytes-or-more");
    let (alice, admin) = (w.alice.token.as_str(), common::ADMIN_TOKEN);
    let commands = format!("/api/v1/workspaces/{}/commands", w.ws);
    let mut wrong = Vec::new();
    for (i, bad) in ["a\u{0}b", "a\u{1}b", "a\nb", "a\u{7f}b", "a\u{85}b"]
        .into_iter()
        .enumerate()
    {
        // Each case names what it would create afresh, so that one stored by mistake
        // does not turn the next into a conflict.
        let requests = [
            (
                Method::POST,
                "/api/v1/workspaces".to_owned(),
                alice,
                "name",
                json!({"name": bad}),
            ),
            (
                Method::POST,
                format!("/api/v1/workspaces/{}/channels", w.ws),
                alice,
                "topic",
                json!({"name": format!("control{i}"), "topic": bad}),
            ),
            (
                Method::PATCH,
                format!("/api/v1/channels/{ch}"),
                alice,
                "topic",
                json!({"topic": bad}),
            ),
            (
                Method::POST,
                commands.clone(),
                alice,
                "description",
                json!({"name": format!("deploy{i}"), "description": bad, "webhook_url": hook}),
            ),
            (
                Method::POST,
                commands.clone(),
                alice,
                "webhook_secret",
                json!({"name": format!("ship{i}"), "webhook_url": hook, "webhook_secret": secret(bad)}),
            ),
            (
                Method::POST,
                "/api/v1/users".to_owned(),
                admin,
                "display_name",
                json!({"name": format!("dana{i}"), "display_name": bad}),
            ),
            (
                Method::POST,
                "/api/v1/users".to_owned(),
                admin,
                "webhook_secret",
                json!({"name": format!("bot{i}"), "kind": "agent", "webhook_url": hook, "webhook_secret": secret(bad)}),
            ),
            (
                Method::POST,
                "/api/v1/server-keys".to_owned(),
                admin,
                "name",
                json!({"name": bad, "permissions": ["publish"]}),
            ),
            // The /topic command is held to the topic's rule (its text, a message's,
            // may hold several lines).
            (
                Method::POST,
                format!("/api/v1/channels/{ch}/messages"),
                alice,
                "topic",
                json!({"text": format!("/topic {bad}")}),
            ),
        ];
        for (method, path, token, field, body) in requests {
            let resp = s.call(method.clone(), &path, Some(token), Some(body)).await;
            let message = resp.body["error"]["message"].as_str().unwrap_or_default();
            // `/topic` with a NUL is refused as a message's text is, before the topic.
            let names_it =
                message.starts_with(field) || (field == "topic" && message.starts_with("text"));
            if resp.status != StatusCode::BAD_REQUEST
                || resp.body["error"]["code"] != "bad_request"
                || !names_it
            {
                wrong.push(format!(
                    "{method} {path} with {field} {bad:?}: {} {}",
                    resp.status, resp.text
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused as bad requests naming the field:\n{}",
        wrong.join("\n")
    );
    // An event's type: NUL only (server_keys.rs publishes one with a line break, which
    // the metrics escape). It was a 503 carrying the database's error on PostgreSQL.
    let resp = s
        .post(
            "/api/v1/publish",
            admin,
            json!({"scope": "topic:control", "type": "a\u{0}b", "data": {}}),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request");
    let message = resp.body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("type"), "{message}");

    // Nothing was stored.
    let channel = s.get(&format!("/api/v1/channels/{ch}"), alice).await;
    assert_eq!(channel.body["topic"], "", "{}", channel.text);
    let workspaces = s.get("/api/v1/workspaces", alice).await;
    assert_eq!(
        workspaces.body.as_array().unwrap().len(),
        1,
        "{}",
        workspaces.text
    );
    let keys = s.get("/api/v1/server-keys", admin).await;
    assert_eq!(keys.body, json!([]), "{}", keys.text);
    let listed = s.get(&commands, alice).await;
    assert_eq!(listed.body, json!([]), "{}", listed.text);

    // Any other character passes, and the server still serves.
    s.post(
        "/api/v1/users",
        admin,
        json!({"name": "dana", "display_name": "Dana Scully — ☂ 🛸"}),
    )
    .await
    .expect_status(StatusCode::CREATED);
    s.patch(
        &format!("/api/v1/channels/{ch}"),
        alice,
        json!({"topic": "ship week ✓"}),
    )
    .await
    .expect_status(StatusCode::OK);
    let m = s.send(&w.alice, ch, "fine").await;
    assert_eq!(s.history(&w.bob, ch, "").await, vec![m]);
}

/// `--dev` login looks its name up before anything else: a NUL (which PostgreSQL cannot
/// hold in text, a 500 there) or any name outside the rules is a bad request, checked
/// first, as an unknown name outside them always was.
#[tokio::test]
async fn a_dev_login_name_outside_the_rules_is_a_bad_request() {
    let s = TestServer::start_with(|c| c.dev = true).await;
    for name in ["dana\u{0}", "\u{0}", "dana\n", "Dana", ""] {
        let resp = s
            .call(
                Method::POST,
                "/api/v1/dev/login",
                None,
                Some(json!({ "name": name })),
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "bad_request");
        let message = resp.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("name"), "{name:?}: {message}");
    }
    s.call(
        Method::POST,
        "/api/v1/dev/login",
        None,
        Some(json!({ "name": "dana" })),
    )
    .await
    .expect_status(StatusCode::OK);
}
