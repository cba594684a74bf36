//! The real binary under SIGHUP (gateway mode): `chorus serve --config FILE` reads the
//! file's namespaces again, and a rule made stricter ends the live subscriptions it now
//! refuses (`subscription.revoked`, reason `namespaces_changed`) without closing the
//! socket; the other subscriptions keep delivering.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{call, free_addr};

const ADMIN: &str = "sighup-admin";
const WAIT: Duration = Duration::from_secs(20);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn namespaces(feed_read: &str) -> String {
    format!(
        r#"
[[namespaces]]
name = "feed"
pattern = "topic:feed"
read = "{feed_read}"

[[namespaces]]
name = "news"
pattern = "topic:news"
read = "authenticated"
"#
    )
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn request(ws: &mut Ws, id: &str, mut op: Value) -> Value {
    op["id"] = json!(id);
    ws.send(Message::text(op.to_string())).await.unwrap();
    loop {
        let v = next_json(ws).await;
        if v["id"] == id {
            return v;
        }
    }
}

#[tokio::test]
async fn sighup_ends_the_subscriptions_a_stricter_rule_refuses() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("gateway.toml");
    std::fs::write(&file, namespaces("authenticated")).unwrap();
    let addr = free_addr();
    let server = common::serve(
        addr,
        data.path(),
        ADMIN,
        &[("CHORUS_CONFIG", file.to_str().unwrap())],
    )
    .await;

    let carol = call(addr, ADMIN, "/api/v1/users", json!({"name": "carol"})).await;
    let token = carol["token"].as_str().unwrap().to_owned();
    let url = format!("ws://{addr}/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "hello");
    for scope in ["topic:feed", "topic:news"] {
        let ack = request(&mut ws, scope, json!({"op": "subscribe", "scope": scope})).await;
        assert_eq!(ack["op"], "ack", "{ack}");
    }

    // Only credentials carrying the role `support` may read the feed now; carol's API
    // token carries none.
    std::fs::write(&file, namespaces("role:support")).unwrap();
    let pid = server.id().unwrap().to_string();
    let sent = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let revoked = loop {
        let v = next_json(&mut ws).await;
        if v["type"] == "subscription.revoked" {
            break v;
        }
    };
    assert_eq!(revoked["scope"], "topic:feed", "{revoked}");
    assert_eq!(revoked["data"]["reason"], "namespaces_changed", "{revoked}");

    for (scope, kind) in [("topic:feed", "alert"), ("topic:news", "marker")] {
        call(
            addr,
            ADMIN,
            "/api/v1/publish",
            json!({"scope": scope, "type": kind, "data": {}}),
        )
        .await;
    }
    loop {
        let v = next_json(&mut ws).await;
        assert_ne!(v["type"], "alert", "delivered after the reload: {v}");
        if v["type"] == "marker" {
            assert_eq!(v["scope"], "topic:news");
            break;
        }
    }
    // The socket stayed open and answers; the feed is refused from now on.
    let pong = request(&mut ws, "ping", json!({"op": "ping"})).await;
    assert_eq!(pong["op"], "ack", "{pong}");
    let again = request(
        &mut ws,
        "again",
        json!({"op": "subscribe", "scope": "topic:feed"}),
    )
    .await;
    assert_eq!(again["code"], "forbidden", "{again}");
}

fn recent(retention_events: u64) -> String {
    format!(
        r#"
[[namespaces]]
name = "recent"
pattern = "topic:recent.{{id}}"
read = "authenticated"
retention_events = {retention_events}
"#
    )
}

/// `subscribe` with `since` on `ws`: `recovered` and how many events were replayed
/// (they come before the ack).
async fn replayed_since(ws: &mut Ws, id: &str, scope: &str, since: u64) -> (bool, usize) {
    let op = json!({"op": "subscribe", "scope": scope, "since": since, "id": id});
    ws.send(Message::text(op.to_string())).await.unwrap();
    let mut replayed = 0;
    loop {
        let v = next_json(ws).await;
        if v["id"] == id {
            assert_eq!(v["op"], "ack", "{v}");
            return (v["recovered"].as_bool().unwrap(), replayed);
        }
        replayed += usize::from(v["scope"] == scope && v["type"] == "tick");
    }
}

/// SIGHUP applies a namespace's changed retention to the next resume: kept three, a
/// resume four back is complete; narrowed to two, the same resume is
/// `recovered: false` and one three back is complete.
#[tokio::test]
async fn sighup_changes_a_namespace_retention() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("gateway.toml");
    std::fs::write(&file, recent(3)).unwrap();
    let addr = free_addr();
    let server = common::serve(
        addr,
        data.path(),
        ADMIN,
        &[("CHORUS_CONFIG", file.to_str().unwrap())],
    )
    .await;
    let carol = call(addr, ADMIN, "/api/v1/users", json!({"name": "carol"})).await;
    let token = carol["token"].as_str().unwrap().to_owned();
    let scope = "topic:recent.1";
    let mut offsets = Vec::new();
    for i in 0..3 {
        let sent = call(
            addr,
            ADMIN,
            "/api/v1/publish",
            json!({"scope": scope, "type": "tick", "data": {"i": i}}),
        )
        .await;
        offsets.push(sent["offset"].as_u64().unwrap());
    }
    let url = format!("ws://{addr}/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "hello");
    assert_eq!(
        replayed_since(&mut ws, "three", scope, offsets[0] - 1).await,
        (true, 3)
    );

    std::fs::write(&file, recent(2)).unwrap();
    let pid = server.id().unwrap().to_string();
    let sent = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    // The reload is done when the rule answers: ask until it does (bounded).
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let got = replayed_since(&mut ws, &format!("a{attempt}"), scope, offsets[0] - 1).await;
        if got == (false, 0) {
            break;
        }
        assert_eq!(got, (true, 3), "before the reload");
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reloaded in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        replayed_since(&mut ws, "two", scope, offsets[0]).await,
        (true, 2)
    );
}
