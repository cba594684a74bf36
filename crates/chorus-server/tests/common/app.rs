//! A stand-in for the application behind Chorus's proxies (gateway mode): a real axum
//! server on `127.0.0.1:0` that checks each request's signature itself (HMAC-SHA256 of
//! `"{Chorus-Timestamp}.{body}"`, computed here, not with the server's code), records
//! it, and answers as the test decides.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The `[proxy] secret` the application shares with Chorus.
pub const SECRET: &str = "the-application-shares-this-secret";

/// What the application answers one request.
pub enum Reply {
    /// `200` with this JSON.
    Json(Value),
    /// This status, no body.
    Status(u16),
    /// Nothing for a minute (longer than any test waits).
    Hang,
    /// `200` with this JSON once the test opens the gate (sends `true`).
    Held(tokio::sync::watch::Receiver<bool>, Value),
}

/// A request the application received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `connect`, `subscribe` or `publish` (the URL's last segment).
    pub proxy: String,
    pub body: Value,
    /// Whether `Chorus-Signature` matched.
    pub signed: bool,
}

type Decide = dyn Fn(&str, &Value) -> Reply + Send + Sync;

#[derive(Clone)]
struct AppState {
    decide: Arc<Decide>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The running application.
pub struct App {
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl App {
    /// Serves `POST /{proxy}`, answering with `decide(proxy, body)` when the signature
    /// is good and `401` otherwise.
    pub async fn start(decide: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = AppState {
            decide: Arc::new(decide),
            seen: seen.clone(),
        };
        let router = axum::Router::new()
            .route("/{proxy}", axum::routing::post(answer))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { base, seen, task }
    }

    /// The URL of one proxy.
    pub fn url(&self, proxy: &str) -> String {
        format!("{}/{proxy}", self.base)
    }

    /// The requests received so far for `proxy`.
    pub fn seen(&self, proxy: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.proxy == proxy)
            .cloned()
            .collect()
    }

    /// A `[proxy.*]` table pointing at this application.
    pub fn endpoint(&self, proxy: &str) -> chorus_server::config::ProxyEndpoint {
        chorus_server::config::ProxyEndpoint {
            url: self.url(proxy),
            timeout_ms: 2_000,
            cache_ms: 60_000,
            allowed_origins: Vec::new(),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL where nothing listens (a port bound, then let go).
pub async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/connect")
}

async fn answer(
    State(state): State<AppState>,
    Path(proxy): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(header("chorus-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let signed = header("chorus-signature") == expected;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.seen.lock().unwrap().push(Seen {
        proxy: proxy.clone(),
        body: body.clone(),
        signed,
    });
    if !signed {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match (state.decide)(&proxy, &body) {
        Reply::Json(value) => axum::Json(value).into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Reply::Held(mut gate, value) => match gate.wait_for(|open| *open).await {
            Ok(_) => axum::Json(value).into_response(),
            Err(_) => StatusCode::GATEWAY_TIMEOUT.into_response(),
        },
    }
}
