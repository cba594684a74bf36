//! `/api/v1/server-keys`: server admins create, list and delete the keys a backend
//! publishes and reads the stats with. A key is never a user: it reaches only
//! `POST /api/v1/publish` and `GET /api/v1/realtime/stats` (`auth::Operator`).

use axum::extract::State;
use axum::http::StatusCode;
use chorus_api::CreatedServerKey;
use chorus_chat::service::CreateServerKey;
use chorus_chat::store::{ServerKey, ServerKeyId};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(delete_key))
}

/// Create a server key (server admins): `publish` lets it call `POST /api/v1/publish`
/// (only for scopes starting with one of `publish_prefixes`, when given), `stats:read`
/// lets it read `GET /api/v1/realtime/stats`, `sessions:revoke` lets it call
/// `POST /api/v1/proxy/sessions/revoke`. Every other route refuses it (403).
#[utoipa::path(post, path = "/api/v1/server-keys", tag = "operations", request_body = CreateServerKey,
    responses((status = 201, body = CreatedServerKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(req): Json<CreateServerKey>,
) -> ApiResult<(StatusCode, Json<CreatedServerKey>)> {
    let new = state.chat.create_server_key(&caller, req).await?;
    let ServerKey {
        id,
        name,
        permissions,
        publish_prefixes,
        created_at,
    } = new.key;
    Ok((
        StatusCode::CREATED,
        Json(CreatedServerKey {
            id,
            name,
            permissions,
            publish_prefixes,
            created_at,
            key: new.secret,
        }),
    ))
}

/// Every server key, without secrets (server admins).
#[utoipa::path(get, path = "/api/v1/server-keys", tag = "operations",
    responses((status = 200, body = Vec<ServerKey>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<Vec<ServerKey>>> {
    Ok(Json(state.chat.server_keys(&caller).await?))
}

/// Delete a server key; it is refused (401) from its next request on (server admins).
#[utoipa::path(delete, path = "/api/v1/server-keys/{id}", tag = "operations", params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .chat
        .delete_server_key(&caller, ServerKeyId(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
