//! `/api/v1/presence`: the caller's status text. Online/offline is never set here: the
//! server derives it from connections.

use axum::extract::State;
use chorus_chat::model::Presence;
use chorus_chat::service::SetStatus;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::Json;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(my_presence, set_status))
}

/// The caller's presence.
#[utoipa::path(get, path = "/api/v1/presence", tag = "presence",
    responses((status = 200, body = Presence), (status = 401, body = ErrorBody)))]
async fn my_presence(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<Presence>> {
    Ok(Json(state.chat.my_presence(&caller).await?))
}

/// Set the caller's status text (at most 140 characters; empty clears it). Every
/// workspace of the caller gets `presence.updated`; the online bit is unchanged.
#[utoipa::path(put, path = "/api/v1/presence", tag = "presence", request_body = SetStatus,
    responses((status = 200, body = Presence), (status = 400, body = ErrorBody)))]
async fn set_status(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(req): Json<SetStatus>,
) -> ApiResult<Json<Presence>> {
    Ok(Json(state.chat.set_status(&caller, req).await?))
}
