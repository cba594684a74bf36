//! `/api/v1/users`, `/api/v1/me`, and the `--dev` login.

use axum::extract::State;
use axum::http::StatusCode;
use chorus_chat::model::User;
use chorus_chat::service::CreateUser;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct UserWithToken {
    pub user: User,
    /// Shown once; only its hash is stored.
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct DevLogin {
    pub name: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(me))
        .routes(routes!(dev_login))
}

/// Create a user and its first API token (admin token required).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserWithToken), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(req): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserWithToken>)> {
    let (user, token) = state.chat.create_user(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(UserWithToken { user, token })))
}

/// The caller.
#[utoipa::path(get, path = "/api/v1/me", tag = "users", responses((status = 200, body = User), (status = 401, body = ErrorBody)))]
async fn me(Caller(caller): Caller) -> Json<User> {
    Json(caller)
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
    Ok(Json(UserWithToken { user, token }))
}
