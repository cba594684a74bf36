//! JWT refresh in the Rust client, against a real server with a JWT secret: the
//! application's [`RefreshToken`] is asked for a new token before the old one's `exp`,
//! the connection sends it as `refresh` and outlives the first token, and reconnects use
//! the newest token. A close with 3502 gets a new token and reconnects.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_client::realtime::{RefreshToken, jwt_expiry};
use chorus_client::{Backoff, ConnectionState, Options, Realtime};
use common::{TestServer, WAIT, user};
use serde_json::json;

const SECRET: &str = "a-client-test-secret-of-32-bytes";

/// An HS256 JWT for `sub` expiring `secs` from now.
fn jwt(sub: &str, secs: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": sub, "exp": now + secs }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn fast() -> Options {
    Options {
        reconnect: Some(Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: None,
        }),
        ..Options::default()
    }
}

/// Waits until the connection's state satisfies `done`.
async fn wait_state(live: &Realtime, done: impl Fn(&ConnectionState) -> bool) -> ConnectionState {
    let mut changes = live.state_changes();
    tokio::time::timeout(WAIT, async {
        loop {
            let state = changes.borrow_and_update().clone();
            if done(&state) {
                return state;
            }
            changes.changed().await.expect("state sender gone");
        }
    })
    .await
    .expect("state not reached in time")
}

#[test]
fn jwt_expiry_reads_exp_only_from_jwts() {
    let exp = jwt_expiry(&jwt("alice", 60)).expect("a JWT has an expiry");
    let left = exp.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(55) && left <= Duration::from_secs(60),
        "{left:?}"
    );
    assert_eq!(jwt_expiry("chr_abc"), None);
    assert_eq!(jwt_expiry("a.!!!.c"), None);
    assert_eq!(jwt_expiry("a.eyJzdWIiOiJhIn0.c"), None); // {"sub":"a"}
}

#[tokio::test]
async fn a_refreshed_connection_outlives_its_first_token() {
    let server = TestServer::start_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    user(&server.admin(), "alice").await;
    // Under 5 s left: the client asks for a new token at once.
    let short = jwt("alice", 3);
    let witness = Realtime::connect_with(
        &server.url,
        &short,
        Options {
            reconnect: None,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let options = Options {
        refresh_token: Some(RefreshToken::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(jwt("alice", 600)) }
        })),
        ..fast()
    };
    let live = Realtime::connect_with(&server.url, &short, options)
        .await
        .unwrap();
    let session = live.hello().session_id;

    // Once the socket that kept the first token is closed, that token has expired...
    let closed = wait_state(&witness, |s| matches!(s, ConnectionState::Closed(_))).await;
    let ConnectionState::Closed(end) = closed else {
        unreachable!()
    };
    assert_eq!(end.code, 3502, "{end}");
    // ...and the refreshed connection still answers, on the same socket.
    live.ping().await.unwrap();
    assert_eq!(live.hello().session_id, session, "no reconnect happened");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A reconnect now uses the new token (the first one would be refused).
    live.drop_connection_for_test();
    wait_state(&live, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;
    wait_state(&live, |s| *s == ConnectionState::Open).await;
    live.ping().await.unwrap();
    assert_ne!(live.hello().session_id, session);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a 600 s token is not refreshed yet"
    );
}

#[tokio::test]
async fn a_3502_close_gets_a_new_token_and_reconnects() {
    let server = TestServer::start_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    user(&server.admin(), "alice").await;
    let short = jwt("alice", 2);
    let expires = jwt_expiry(&short).unwrap();
    // Until the first token has expired the callback's tokens name nobody (the server
    // refuses them), so the connection is closed with 3502 at its expiry.
    let options = Options {
        refresh_token: Some(RefreshToken::new(move || async move {
            let sub = if SystemTime::now() < expires {
                "nobody"
            } else {
                "alice"
            };
            Ok(jwt(sub, 600))
        })),
        ..fast()
    };
    let live = Realtime::connect_with(&server.url, &short, options)
        .await
        .unwrap();
    let reconnecting =
        wait_state(&live, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;
    let ConnectionState::Reconnecting { cause, .. } = reconnecting else {
        unreachable!()
    };
    assert_eq!(cause.code, 3502, "{cause}");
    wait_state(&live, |s| *s == ConnectionState::Open).await;
    live.ping().await.unwrap();
}
