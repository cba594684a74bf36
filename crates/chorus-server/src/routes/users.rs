//! `/api/v1/users`, `/api/v1/me`, users' API tokens, deactivation, one-time sign-in
//! links, and the `--dev` login. A user's full record (webhook, admin flag) is answered
//! only to the user themself and to server admins; a token's secret (and a sign-in
//! link's code) only once, to whoever created it.

use axum::extract::State;
use axum::http::StatusCode;
use chorus_api::{DeliveriesQuery, DevLogin, SignIn, UserWithToken, UsersQuery};
use chorus_chat::model::{ApiToken, SignInLink, TokenId, User, UserId, UserView, WebhookDelivery};
use chorus_chat::service::{
    CreateSignInLink, CreateToken, CreateUser, NewApiToken, NewSignInLink, SetWebhook,
    WebhookSettings,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Caller, CallerPrincipal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::limits::{ClientAddr, guard_secret};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(me))
        .routes(routes!(get_user))
        .routes(routes!(dev_login))
        .routes(routes!(set_webhook))
        .routes(routes!(webhook_deliveries))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(sign_out))
        .routes(routes!(deactivate_user))
        .routes(routes!(reactivate_user))
        .routes(routes!(create_sign_in_link, list_sign_in_links))
        .routes(routes!(delete_sign_in_link))
        .routes(routes!(sign_in))
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

/// Every user, by id, with their state (`deactivated_at` when deactivated): server
/// admins only. Page with `after` = the last id of the previous page.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UsersQuery),
    responses((status = 200, body = [User]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_users(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(q): Query<UsersQuery>,
) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(
        state
            .chat
            .list_users(&caller, q.after, q.limit.unwrap_or(0))
            .await?,
    ))
}

/// Create an API token for a user (the user themself or a server admin): named, and
/// expiring after `expires_in` seconds when given. The secret (`token`) is in this
/// answer only. 409 when the user is deactivated or already holds 100 tokens. A
/// credential that expires (a JWT, an expiring token) makes tokens that expire no later
/// (400 otherwise), and a connect-proxy identity makes none (403), unless it is a
/// server admin's.
#[utoipa::path(post, path = "/api/v1/users/{id}/tokens", tag = "tokens", request_body = CreateToken,
    params(("id" = i64, Path)), responses((status = 201, body = NewApiToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    CallerPrincipal(caller): CallerPrincipal,
    Path(id): Path<i64>,
    Json(req): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<NewApiToken>)> {
    let created = state
        .chat
        .create_token((&caller.user, &caller.session), UserId(id), req)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A user's API tokens, oldest first, expired ones included (the user themself or a
/// server admin): never a secret.
#[utoipa::path(get, path = "/api/v1/users/{id}/tokens", tag = "tokens", params(("id" = i64, Path)),
    responses((status = 200, body = [ApiToken]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_tokens(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(state.chat.list_tokens(&caller, UserId(id)).await?))
}

/// Revoke a token (the user themself or a server admin): it is refused from now on, and
/// every socket opened with it closes with 3502 on every node.
#[utoipa::path(delete, path = "/api/v1/users/{id}/tokens/{token_id}", tag = "tokens",
    params(("id" = i64, Path), ("token_id" = i64, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, token_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .chat
        .revoke_token(&caller, UserId(id), TokenId(token_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sign out: revoke the API token this request carries (what a client does when its
/// user signs out, e.g. the web UI for a token a sign-in link gave it). It is refused
/// from now on, and every socket opened with it closes with 3502 on every node; the
/// user's other tokens are not touched. 404 when the request's credential is not an API
/// token (the admin token, a JWT, credentials the connect proxy vouched for): there is
/// no token here to revoke.
#[utoipa::path(delete, path = "/api/v1/me/token", tag = "tokens",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn sign_out(
    State(state): State<AppState>,
    CallerPrincipal(caller): CallerPrincipal,
) -> ApiResult<StatusCode> {
    let Some(token) = caller.session.credential.filter(|&id| id > 0) else {
        return Err(ApiError::not_found(
            "this request's credential is not an API token: no token to revoke",
        ));
    };
    state
        .chat
        .revoke_token(&caller.user, caller.user.id, TokenId(token))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deactivate a user (server admins; not oneself, never the bootstrap admin): their
/// tokens stop working, their sockets close with 3502 on every node, and an agent is
/// no longer woken or sent webhooks. Their messages stay.
#[utoipa::path(post, path = "/api/v1/users/{id}/deactivate", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = User), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn deactivate_user(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<User>> {
    Ok(Json(state.chat.deactivate_user(&caller, UserId(id)).await?))
}

/// Reactivate a user (server admins): their tokens that were not revoked and have not
/// expired work again.
#[utoipa::path(post, path = "/api/v1/users/{id}/reactivate", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = User), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn reactivate_user(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<User>> {
    Ok(Json(state.chat.reactivate_user(&caller, UserId(id)).await?))
}

/// Create a one-time sign-in link for a user (server admins only): whoever opens
/// `<web UI>/#signin=<code>` before `expires_at` (a day by default, `expires_in` 60 s to
/// seven days) is signed in as the user, once. The code is in this answer only. 409 when
/// the user is deactivated.
#[utoipa::path(post, path = "/api/v1/users/{id}/sign-in-links", tag = "users", request_body = CreateSignInLink,
    params(("id" = i64, Path)), responses((status = 201, body = NewSignInLink), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_sign_in_link(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<CreateSignInLink>,
) -> ApiResult<(StatusCode, Json<NewSignInLink>)> {
    let link = state
        .chat
        .create_sign_in_link(&caller, UserId(id), req)
        .await?;
    Ok((StatusCode::CREATED, Json(link)))
}

/// A user's sign-in links that can still be used (not used, not expired, not revoked),
/// oldest first, without their codes (server admins only).
#[utoipa::path(get, path = "/api/v1/users/{id}/sign-in-links", tag = "users",
    params(("id" = i64, Path)), responses((status = 200, body = [SignInLink]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_sign_in_links(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<SignInLink>>> {
    Ok(Json(
        state.chat.list_sign_in_links(&caller, UserId(id)).await?,
    ))
}

/// Revoke a sign-in link before it is used (server admins only): opening it is then
/// refused as an unknown link. 404 for a link of that id that cannot be used anyway
/// (used, expired, revoked, or another user's).
#[utoipa::path(delete, path = "/api/v1/users/{id}/sign-in-links/{link_id}", tag = "users",
    params(("id" = i64, Path), ("link_id" = i64, Path)), responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_sign_in_link(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, link_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .chat
        .delete_sign_in_link(&caller, UserId(id), link_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Exchange a sign-in link's code for a new API token of its user (no credentials):
/// the link is used up. 401 for an unknown code, 410 `gone` for a link used before or
/// expired, 403 when the user is deactivated. Failures count against the client
/// address's failed-authentication limit (429 past it, the code untried).
#[utoipa::path(post, path = "/api/v1/sign-in", tag = "users", request_body = SignIn, security(()),
    responses((status = 200, body = UserWithToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 410, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn sign_in(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(req): Json<SignIn>,
) -> ApiResult<Json<UserWithToken>> {
    let (user, token) = guard_secret(&state, client, async {
        Ok(state.chat.sign_in_with_link(&req.code).await?)
    })
    .await?;
    Ok(Json(UserWithToken {
        user,
        token,
        webhook_secret: None,
    }))
}
