//! The first start of the real binary: without `CHORUS_ADMIN_TOKEN` it creates the
//! `admin` user with a token, prints it once and writes `admin.token` (0600); with the
//! variable set, that token is the admin's credential and no second one is made,
//! printed or written.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

mod common;
use common::free_addr;

const BANNER: &str = "Created the admin user";

/// Runs `chorus serve` on `data` (plus `args`) until it is ready, then stops it;
/// returns its stderr.
async fn start_and_stop(data: &Path, args: &[&str], check: impl AsyncFnOnce(&str)) -> String {
    start_and_stop_with(data, args, &[], check).await
}

/// [`start_and_stop`] with `env` set for the server.
async fn start_and_stop_with(
    data: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    check: impl AsyncFnOnce(&str),
) -> String {
    let addr = free_addr();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["serve", "--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CHORUS_ADMIN_TOKEN")
        .env("CHORUS_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(resp) = http.get(format!("http://{addr}/readyz")).send().await
            && resp.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if ready {
        check(&format!("http://{addr}")).await;
    }
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ready, "chorus did not become ready: {stderr}");
    stderr
}

async fn get(url: &str, token: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test]
async fn with_an_admin_token_the_first_start_makes_no_second_admin_credential() {
    let data = tempfile::tempdir().unwrap();
    let admin = "configured-admin-token";
    let stderr = start_and_stop(data.path(), &["--admin-token", admin], async |base| {
        let me = get(&format!("{base}/api/v1/me"), admin).await;
        assert_eq!(me["name"], "admin", "{me}");
        assert_eq!(me["is_admin"], true, "{me}");
        // The configured token is the only credential: the admin user has no API token.
        let id = &me["id"];
        let tokens = get(&format!("{base}/api/v1/users/{id}/tokens"), admin).await;
        assert_eq!(tokens, serde_json::json!([]), "{tokens}");
        // Still one admin user.
        let users = get(&format!("{base}/api/v1/users"), admin).await;
        assert_eq!(users.as_array().unwrap().len(), 1, "{users}");
    })
    .await;
    assert!(!stderr.contains(BANNER), "{stderr}");
    assert!(!data.path().join("admin.token").exists());
}

#[tokio::test]
async fn without_an_admin_token_the_first_start_prints_and_writes_one_once() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("admin.token");
    let stderr = start_and_stop(data.path(), &[], async |base| {
        let token = std::fs::read_to_string(&file).unwrap();
        let me = get(&format!("{base}/api/v1/me"), token.trim()).await;
        assert_eq!(me["name"], "admin", "{me}");
        assert_eq!(me["is_admin"], true, "{me}");
    })
    .await;
    let token = std::fs::read_to_string(&file).unwrap();
    let token = token.trim();
    assert!(token.starts_with("chr_"), "{token}");
    assert!(stderr.contains(BANNER), "{stderr}");
    assert!(stderr.contains(token), "{stderr}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The next start finds the admin: nothing printed, the file left as it was.
    let stderr = start_and_stop(data.path(), &[], async |_| {}).await;
    assert!(!stderr.contains(BANNER), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
}

/// The README's `CHORUS_DEV=1` (and `true`, `yes`, `on`) turns on `--dev`; `0` leaves it off.
#[tokio::test]
async fn boolean_settings_from_the_environment_take_1_and_0() {
    async fn dev_login(base: &str) -> reqwest::StatusCode {
        reqwest::Client::new()
            .post(format!("{base}/api/v1/dev/login"))
            .json(&serde_json::json!({ "name": "alice" }))
            .send()
            .await
            .unwrap()
            .status()
    }
    for (value, on) in [("1", true), ("true", true), ("on", true), ("0", false)] {
        let data = tempfile::tempdir().unwrap();
        let mut status = None;
        start_and_stop_with(data.path(), &[], &[("CHORUS_DEV", value)], async |base| {
            status = Some(dev_login(base).await);
        })
        .await;
        let status = status.unwrap();
        assert_eq!(status.is_success(), on, "CHORUS_DEV={value}: {status}");
    }
}

/// An `admin.token` already there (left readable by an earlier install) is made private
/// before the new token goes in.
#[tokio::test]
async fn an_admin_token_file_already_there_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("admin.token");
    std::fs::write(&file, "stale\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    start_and_stop(data.path(), &[], async |_| {}).await;
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .starts_with("chr_")
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
