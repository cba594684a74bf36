//! Helpers shared by the tests that run the real `chorus` binary.

#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;

use serde_json::Value;

/// A free loopback port (bound, then released for the server to take).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// POSTs `body` as `token`; panics with the status and body unless it succeeded.
pub async fn call(addr: SocketAddr, token: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}
