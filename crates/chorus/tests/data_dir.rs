//! The real binary and its data dir: private (the directory 0700, the database files
//! 0600: they hold every message and the webhook secrets), and a database that is
//! damaged or cannot be written stops the start with an error naming the file, or
//! turns `/readyz` to 503 while the server runs.
//!
//! The tests run as root in CI, where `chmod` stops no write, so "cannot be written"
//! is made in ways that hold for root too: `chorus.db` being a directory, and another
//! process holding the database's write lock (a backup tool, a stuck migration).

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

mod common;
use common::{call, free_addr, serve};

const ADMIN: &str = "data-dir-admin";
/// A failed start gives up after SQLite's 5 s busy timeout at most; well within this.
const WAIT: Duration = Duration::from_secs(30);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs `chorus serve` on `data` expecting it to fail; returns its stderr.
async fn failed_start(data: &Path) -> String {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["serve", "--listen", &free_addr().to_string()])
        .args(["--admin-token", ADMIN])
        .arg("--data-dir")
        .arg(data)
        .env("CHORUS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("chorus should have exited")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "chorus started: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

#[tokio::test]
async fn the_data_dir_and_the_database_files_are_private() {
    let root = tempfile::tempdir().unwrap();
    // Created by chorus.
    let fresh = root.path().join("fresh");
    let addr = free_addr();
    let mut server = serve(addr, &fresh, ADMIN, &[]).await;
    call(
        addr,
        ADMIN,
        "/api/v1/users",
        serde_json::json!({"name": "bob"}),
    )
    .await;
    assert_eq!(mode(&fresh), 0o700);
    let db = fresh.join("chorus.db");
    for file in ["chorus.db", "chorus.db-wal", "chorus.db-shm"] {
        assert_eq!(mode(&fresh.join(file)), 0o600, "{file}");
    }
    server.kill().await.unwrap();
    assert!(db.exists());

    // Left open to others by an older version: tightened at start.
    let old = root.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in ["chorus.db", "chorus.db-wal", "chorus.db-shm"] {
        std::fs::copy(fresh.join(file), old.join(file)).unwrap();
        std::fs::set_permissions(old.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let addr = free_addr();
    let mut server = serve(addr, &old, ADMIN, &[]).await;
    assert_eq!(mode(&old), 0o700);
    for file in ["chorus.db", "chorus.db-wal", "chorus.db-shm"] {
        assert_eq!(mode(&old.join(file)), 0o600, "{file}");
    }
    server.kill().await.unwrap();
}

#[tokio::test]
async fn a_damaged_database_stops_the_start_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("chorus.db");
    std::fs::write(
        &db,
        "this is not a database, just some garbage\n".repeat(200),
    )
    .unwrap();
    let stderr = failed_start(data.path()).await;
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(stderr.contains("not a database"), "{stderr}");
}

#[tokio::test]
async fn a_database_with_damaged_pages_fails_its_integrity_check() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("chorus.db");
    // A sound SQLite file of several pages (no WAL left behind)...
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("PRAGMA journal_mode = DELETE")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE filler (id INTEGER PRIMARY KEY, text TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
         INSERT INTO filler SELECT i, printf('%.200c', 'x') FROM n",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    // ...whose pages after the first (the header and schema) are overwritten.
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8 * 4096, "{} bytes", bytes.len());
    bytes[4096..].fill(0xAB);
    std::fs::write(&db, bytes).unwrap();
    let stderr = failed_start(data.path()).await;
    assert!(
        stderr.contains(&format!("the SQLite database {} is damaged", db.display())),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_for_writing_stops_the_start() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("chorus.db");
    std::fs::create_dir(&db).unwrap();
    let stderr = failed_start(data.path()).await;
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(stderr.contains("directory"), "{stderr}");
}

/// Another process holds the write lock (as root, no file mode keeps chorus out).
async fn hold_write_lock(db: &Path) -> SqliteConnection {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn a_locked_database_stops_the_start_and_fails_readiness() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("chorus.db");
    let addr = free_addr();
    let mut server = serve(addr, data.path(), ADMIN, &[]).await;
    let http = reqwest::Client::new();
    let readyz = format!("http://{addr}/readyz");

    // While running: not ready as long as the database cannot be written.
    let mut lock = hold_write_lock(&db).await;
    let resp = http.get(&readyz).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let resp = http.get(&readyz).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    server.kill().await.unwrap();
    server.wait().await.unwrap();

    // At start: refused, naming the file.
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let stderr = failed_start(data.path()).await;
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(stderr.contains("cannot be written"), "{stderr}");
    assert!(stderr.contains("locked"), "{stderr}");
    lock.close().await.unwrap();
}
