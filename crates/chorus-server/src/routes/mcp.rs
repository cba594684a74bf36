//! `/mcp`: the MCP Streamable HTTP transport (`chorus-mcp`), authenticated like every
//! API route — the limits middleware checks the bearer token, [`Caller`] requires a user
//! (a server key is `403`, no token or a revoked one `401`) — and then handed to the
//! tool server, which acts as that bearer through a client pointed at this server. A
//! session (`Mcp-Session-Id`) is its opener's: another user's id is answered as an
//! unknown one ([`chorus_mcp::McpEndpoint::bind`]).

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use chorus_proto::ErrorCode;
use tower_service::Service as _;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET`, `POST` and `DELETE /mcp`.
pub async fn handle(
    State(state): State<AppState>,
    caller: Caller,
    mut request: Request,
) -> Response {
    // Set by `run` once the listener's address is known; a router built without it
    // (never by `chorus serve`) has no MCP endpoint.
    let Some(endpoint) = state.mcp.get() else {
        return ApiError::new(ErrorCode::Unavailable, "the MCP endpoint is not running")
            .into_response();
    };
    let user = caller.0.id.0;
    // Before rmcp reads the session id: only the session's opener reaches it.
    endpoint.bind(user, request.headers_mut());
    let response = match endpoint.service.clone().call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // A session it opened counts as the caller's: at most `MAX_SESSIONS_PER_USER` stay
    // open for one user, the least recently used closed first.
    if let Some(id) = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        endpoint.answered(user, id).await;
    }
    response.map(axum::body::Body::new)
}
