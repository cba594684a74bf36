//! The real binary under SIGTERM: clients are told to reconnect (3001), the process
//! exits 0, and after a restart nothing committed is missing.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{call, free_addr};

const ADMIN: &str = "sigterm-admin";
const WAIT: Duration = Duration::from_secs(20);

async fn start(addr: SocketAddr, data: &std::path::Path) -> Child {
    common::serve(addr, data, ADMIN, &[]).await
}

#[tokio::test]
async fn sigterm_drains_exits_zero_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut server = start(addr, data.path()).await;

    let bob = call(addr, ADMIN, "/api/v1/users", json!({"name": "bob"})).await;
    let bob_token = bob["token"].as_str().unwrap().to_owned();
    let ws_id = call(addr, ADMIN, "/api/v1/workspaces", json!({"name": "acme"})).await["id"]
        .as_i64()
        .unwrap();
    call(
        addr,
        ADMIN,
        &format!("/api/v1/workspaces/{ws_id}/members"),
        json!({"user_id": bob["user"]["id"]}),
    )
    .await;
    let ch = call(
        addr,
        ADMIN,
        &format!("/api/v1/workspaces/{ws_id}/channels"),
        json!({"name": "ops", "member_ids": [bob["user"]["id"]]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();

    let url = format!("ws://{addr}/ws?token={bob_token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    // The connection is subscribed once `hello` arrives; sends before that are not live.
    let hello = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["op"], "hello", "{hello}");
    let mut sent = Vec::new();
    for i in 0..20 {
        let m = call(
            addr,
            ADMIN,
            &format!("/api/v1/channels/{ch}/messages"),
            json!({"text": format!("before {i}")}),
        )
        .await;
        sent.push(m["id"].as_i64().unwrap());
    }

    let pid = server.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());

    // Every committed event is flushed before the close, and the close says "reconnect".
    let mut live = Vec::new();
    let code = tokio::time::timeout(WAIT, async {
        while let Some(frame) = ws.next().await {
            match frame.unwrap() {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "message.created" {
                        live.push(v["data"]["id"].as_i64().unwrap());
                    }
                }
                Message::Close(Some(close)) => return u16::from(close.code),
                _ => {}
            }
        }
        panic!("the stream ended without a close frame");
    })
    .await
    .unwrap();
    assert_eq!(code, 3001);
    assert_eq!(live, sent, "queued events were drained before the close");

    let status = tokio::time::timeout(WAIT, server.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");

    // After a restart, every committed message is there.
    let _server = start(addr, data.path()).await;
    let history: Value = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/v1/channels/{ch}/messages?limit=200"
        ))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, sent);
}
