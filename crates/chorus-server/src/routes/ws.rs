//! `GET /ws`: authenticate at upgrade (bearer header or `?token=`), then hand the socket
//! to the realtime engine.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use chorus_proto::ErrorCode;
use chorus_realtime::{ANONYMOUS, SessionAuth, Socket, deflate};
use futures_util::FutureExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::limits::ClientAddr;
use crate::state::{AppState, Tasks};

/// Transport limit: a frame over this cannot be parsed and ends the connection (1009).
/// Frames under it but over the configured `max_frame_bytes` get an `error` frame.
pub const HARD_FRAME_LIMIT: usize = 1024 * 1024;

#[derive(Deserialize)]
pub struct WsQuery {
    /// `1`: hold the initial subscriptions until the first frame (a `resume`).
    resume: Option<u8>,
}

/// A valid WebSocket upgrade request (RFC 6455 §4.2.1), not yet answered.
///
/// Not axum's `WebSocketUpgrade`: that one hands over a socket already wrapped in the
/// library's stream, and the engine needs the TCP stream itself (it writes its own
/// frames; see `chorus_realtime::socket`). So the handshake is answered here, and the
/// upgraded connection is unwrapped back to its `TcpStream`.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    /// `Sec-WebSocket-Extensions` offers, in order (empty: none).
    extensions: Vec<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = &'static str;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err("a WebSocket upgrade must be a GET");
        }
        let has_token = |name: header::HeaderName, token: &str| {
            parts.headers.get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        if !has_token(header::CONNECTION, "upgrade") {
            return Err("Connection header did not include 'upgrade'");
        }
        if !has_token(header::UPGRADE, "websocket") {
            return Err("`Upgrade` header did not include 'websocket'");
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return Err("`Sec-WebSocket-Version` header did not include '13'");
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or("`Sec-WebSocket-Key` header missing")?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or("the connection cannot be upgraded")?;
        let extensions = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .cloned()
            .collect();
        Ok(Self {
            key,
            on_upgrade,
            extensions,
        })
    }
}

impl Upgrade {
    /// Answers `101 Switching Protocols`; once the connection is switched, `serve`
    /// gets its socket.
    ///
    /// The switch and the session run in a task of `tasks`: shutdown waits for it, and
    /// ends a session still open once the grace period is over (`tasks.stop`).
    /// With `compression`, an acceptable `permessage-deflate` offer is accepted (see
    /// `chorus_realtime::deflate::negotiate`); otherwise extensions are ignored, and the
    /// answer names none.
    fn accept<F, Fut>(
        self,
        config: WebSocketConfig,
        compression: bool,
        tasks: &Tasks,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let deflate = if compression {
            deflate::negotiate(self.extensions.iter().filter_map(|v| v.to_str().ok()))
                .and_then(|answer| HeaderValue::from_str(&answer).ok())
        } else {
            None
        };
        let deflates = deflate.is_some();
        let on_upgrade = self.on_upgrade;
        let stop = tasks.stop.clone();
        // The session's future is built in place inside this one task's future, and the
        // stop signal is raced inside it: a wrapper future around the whole (such as
        // `run_until_cancelled_owned`) would store it again, several KiB more for every
        // idle connection (measured: 5.9 → 10.2 KiB per connection).
        tasks.tracker.spawn(async move {
            let upgraded = tokio::select! {
                upgraded = on_upgrade => upgraded,
                () = stop.cancelled() => return,
            };
            let upgraded = match upgraded {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    tracing::debug!(cause = %err, "WebSocket upgrade failed");
                    return;
                }
            };
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let socket = Socket::new(parts.io.into_inner(), parts.read_buf, config)
                        .with_deflate(deflates);
                    tokio::select! {
                        () = serve(socket) => {}
                        () = stop.cancelled() => {}
                    }
                }
                // Only when served by something other than `crate::run`'s loop.
                Err(_) => tracing::error!("WebSocket upgrade: the connection is not a TCP stream"),
            }
        });
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(deflate) = deflate {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, deflate);
        }
        response
    }
}

pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    // The bearer header or `?token=`, authenticated (and counted) by `limits::middleware`.
    identity: Result<Identity, ApiError>,
    ClientAddr(client): ClientAddr,
    ws: Result<Upgrade, &'static str>,
) -> ApiResult<Response> {
    if state.engine.is_shutting_down() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "shutting down; connect elsewhere",
        ));
    }
    let Identity(principal) = identity?;
    // No credentials: an anonymous connection, where a public namespace has something
    // for it to read, within its address's share.
    let (user, session, slot) = match principal {
        Some(principal) => (principal.user.id.0, principal.session, None),
        None => {
            let missing =
                || ApiError::unauthorized("missing token: send a bearer header or ?token=");
            if !state.chat.namespaces().any_public() {
                return Err(missing());
            }
            let client = client.ok_or_else(missing)?;
            let slot = state
                .anonymous
                .take(client, state.config.anonymous_per_address)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::RateLimited,
                        "too many anonymous connections from this address",
                    )
                })?;
            (ANONYMOUS, SessionAuth::default(), Some(slot))
        }
    };
    let ws = ws.map_err(ApiError::bad_request)?;
    let engine = state.engine.clone();
    let hooks = state.hooks.clone();
    let hold = query.resume == Some(1);
    let config = WebSocketConfig::default()
        .max_message_size(Some(HARD_FRAME_LIMIT))
        .max_frame_size(Some(HARD_FRAME_LIMIT))
        // Clients send small frames (ops, pings, typing); a larger frame reserves its
        // own length. Every connection keeps this buffer, all of it touched, for its
        // whole life: 1 KiB instead of 4 is 3 KiB less per idle connection.
        .read_buffer_size(1024);
    Ok(ws.accept(
        config,
        state.config.ws_compression,
        &state.tasks,
        move |socket| {
            // The anonymous slot is held for the session's whole life. A combinator, not
            // `async move { session.await; drop(slot) }`: such a block keeps the
            // session's future twice (as its capture and as the future it awaits),
            // 1.9 KiB more in every connection's task.
            engine
                .serve_socket(socket, user, hooks, hold, session, client)
                .map(move |()| drop(slot))
        },
    ))
}
