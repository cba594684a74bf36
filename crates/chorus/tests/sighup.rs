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
