//! `/api/v1/users`, `/api/v1/me`, and the `--dev` login. A user's full record (webhook,
//! admin flag) is answered only to the user themself and to server admins.

use axum::extract::State;
use axum::http::StatusCode;
use chorus_chat::model::{User, UserId, UserView, WebhookDelivery};
use chorus_chat::service::{CreateUser, SetWebhook, WebhookSettings};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct UserWithToken {
    pub user: User,
    /// Shown once; only its hash is stored.
    pub token: String,
    /// For an agent created with a `webhook_url`: the secret its webhook requests are
    /// signed with. Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct DeliveriesQuery {
    /// Page size: default 50, at most 200.
    pub limit: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
pub struct DevLogin {
    pub name: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(me))
        .routes(routes!(get_user))
        .routes(routes!(dev_login))
        .routes(routes!(set_webhook))
        .routes(routes!(webhook_deliveries))
}

/// Create a user and its first API token (admin token required).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserWithToken), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(req): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserWithToken>)> {
    let account = state.chat.create_user(&caller, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserWithToken {
            user: account.user,
            token: account.token,
            webhook_secret: account.webhook_secret,
        }),
    ))
}

/// The caller.
#[utoipa::path(get, path = "/api/v1/me", tag = "users", responses((status = 200, body = User), (status = 401, body = ErrorBody)))]
async fn me(Caller(caller): Caller) -> Json<User> {
    Json(caller)
}

/// One user: the full record (`User`) for the caller themself and for server admins;
/// for anyone else sharing a workspace with the caller, the profile (`UserProfile`: no
/// `webhook_url`, no `is_admin`). 404 for users who share no workspace with the caller.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(state.chat.user_view(&caller, UserId(id)).await?))
}

/// Password-less login for local trials: only with `chorus serve --dev` (404 otherwise).
/// Creates the user on first use, adds them to the shared `dev` workspace and its
/// `general` channel (created on the first login), and returns a fresh token.
/// Administrators cannot sign in this way (403).
#[utoipa::path(post, path = "/api/v1/dev/login", tag = "users", request_body = DevLogin, security(()),
    responses((status = 200, body = UserWithToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn dev_login(
    State(state): State<AppState>,
    Json(req): Json<DevLogin>,
) -> ApiResult<Json<UserWithToken>> {
    if !state.config.dev {
        return Err(ApiError::not_found(
            "dev login is off; start chorus with --dev",
        ));
    }
    let (user, token) = state.chat.dev_login(&req.name).await?;
    Ok(Json(UserWithToken {
        user,
        token,
        webhook_secret: None,
    }))
}

/// Set an agent's webhook URL and signing secret (the agent itself or an admin). The
/// secret is generated when not given and shown in the answer, once; `url: null` turns
/// webhooks off. See `docs/protocol.md` for how a receiver verifies requests.
#[utoipa::path(put, path = "/api/v1/users/{id}/webhook", tag = "agents", request_body = SetWebhook,
    params(("id" = i64, Path)), responses((status = 200, body = WebhookSettings), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_webhook(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<SetWebhook>,
) -> ApiResult<Json<WebhookSettings>> {
    Ok(Json(
        state.chat.set_webhook(&caller, UserId(id), req).await?,
    ))
}

/// An agent's webhook deliveries, newest first, each with every attempt made: the agent
/// itself (status, attempts, times) or a server admin (also each status code and error).
#[utoipa::path(get, path = "/api/v1/users/{id}/webhook-deliveries", tag = "agents",
    params(("id" = i64, Path), DeliveriesQuery), responses((status = 200, body = [WebhookDelivery]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn webhook_deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<Vec<WebhookDelivery>>> {
    Ok(Json(
        state
            .chat
            .webhook_deliveries(&caller, UserId(id), q.limit.unwrap_or(0))
            .await?,
    ))
}
