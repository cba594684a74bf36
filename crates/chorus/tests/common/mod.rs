//! Helpers shared by the tests that run the real `chorus` binary.

#![allow(clippy::unwrap_used, dead_code)]

pub mod redis;

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

/// Starts `chorus serve` on `addr` with its data in `data`, `admin` as the admin token,
/// no HTTP rate limit, and `env` on top; waits until `/readyz` says ready.
pub async fn serve(
    addr: SocketAddr,
    data: &std::path::Path,
    admin: &str,
    env: &[(&str, &str)],
) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--admin-token",
            admin,
        ])
        .arg("--data-dir")
        .arg(data)
        .env("CHORUS_HTTP_PER_SEC", "0")
        .env("CHORUS_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(resp) = http.get(format!("http://{addr}/readyz")).send().await
            && resp.status().is_success()
        {
            return child;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("chorus did not become ready on {addr}");
}
