//! `GET /ws`: authenticate at upgrade (bearer header or `?token=`), then hand the socket
//! to the realtime engine.

use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::HeaderMap;
use axum::response::Response;
use chorus_proto::ErrorCode;
use serde::Deserialize;

use crate::auth::bearer;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;

/// Transport limit: a frame over this cannot be parsed and ends the connection (1009).
/// Frames under it but over the configured `max_frame_bytes` get an `error` frame.
pub const HARD_FRAME_LIMIT: usize = 1024 * 1024;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    /// `1`: hold the initial subscriptions until the first frame (a `resume`).
    resume: Option<u8>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    if state.engine.is_shutting_down() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "shutting down; connect elsewhere",
        ));
    }
    let token = bearer(&headers)
        .or(query.token.as_deref())
        .ok_or_else(|| ApiError::unauthorized("missing token: send a bearer header or ?token="))?;
    let user = state.auth.authenticate(token).await?;
    let ws = ws.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let engine = state.engine.clone();
    let hooks = state.hooks.clone();
    let hold = query.resume == Some(1);
    Ok(ws
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        // Clients send small frames (ops, pings, typing); a larger frame reserves its
        // own length. Every connection keeps this buffer, all of it touched, for its
        // whole life: 1 KiB instead of 4 is 3 KiB less per idle connection.
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| engine.serve_socket(socket, user.id.0, hooks, hold)))
}
