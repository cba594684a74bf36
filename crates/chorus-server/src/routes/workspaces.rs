//! `/api/v1/workspaces/…`: workspaces, members, channel creation and listing, DMs.

use axum::extract::State;
use axum::http::StatusCode;
use chorus_api::CreateWorkspace;
use chorus_chat::model::{
    Channel, ChannelView, Member, Presence, UserId, Workspace, WorkspaceId, WorkspaceMembership,
};
use chorus_chat::service::{AddMember, CreateChannel, OpenDm, SetRole, UserIds};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workspace, list_workspaces))
        .routes(routes!(add_member, list_members))
        .routes(routes!(set_member_role, remove_member))
        .routes(routes!(workspace_presence))
        .routes(routes!(create_channel, list_channels))
        .routes(routes!(open_dm))
        .routes(routes!(get_observers, set_observers))
}

/// Create a workspace; the caller becomes its owner.
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = Workspace), (status = 400, body = ErrorBody)))]
async fn create_workspace(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(req): Json<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let ws = state.chat.create_workspace(&caller, &req.name).await?;
    Ok((StatusCode::CREATED, Json(ws)))
}

/// The workspaces the caller belongs to, with the caller's role.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces", responses((status = 200, body = [WorkspaceMembership])))]
async fn list_workspaces(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<Vec<WorkspaceMembership>>> {
    Ok(Json(state.chat.my_workspaces(&caller).await?))
}

/// Add a member (owners and admins; only owners add owners). A user who already is a
/// member is a `409 conflict`: change roles with `PATCH …/members/{user_id}`.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/members", tag = "workspaces", request_body = AddMember,
    params(("id" = i64, Path)), responses((status = 201, body = Member), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<AddMember>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    let member = state
        .chat
        .add_workspace_member(&caller, WorkspaceId(id), req)
        .await?;
    Ok((StatusCode::CREATED, Json(member)))
}

/// Change a member's role. Owners and admins manage admins, members and guests; only
/// owners change an owner's role or make someone owner; the last owner cannot be
/// demoted (`409`). Publishes `member.role_changed` on the workspace and the member's
/// own scope.
#[utoipa::path(patch, path = "/api/v1/workspaces/{id}/members/{user_id}", tag = "workspaces", request_body = SetRole,
    params(("id" = i64, Path), ("user_id" = i64, Path)),
    responses((status = 200, body = Member), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn set_member_role(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, user_id)): Path<(i64, i64)>,
    Json(req): Json<SetRole>,
) -> ApiResult<Json<Member>> {
    let member = state
        .chat
        .set_member_role(&caller, WorkspaceId(id), UserId(user_id), req)
        .await?;
    Ok(Json(member))
}

/// Remove a member, or leave (`user_id` = the caller), with their memberships of the
/// workspace's channels and DMs; their messages stay. Owners and admins remove others;
/// only owners remove an owner; the last owner can neither leave nor be removed
/// (`409`). Publishes `member.left` on the workspace and each of its channels they were
/// in, and `workspace.left` on their own scope.
#[utoipa::path(delete, path = "/api/v1/workspaces/{id}/members/{user_id}", tag = "workspaces",
    params(("id" = i64, Path), ("user_id" = i64, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, user_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .chat
        .remove_workspace_member(&caller, WorkspaceId(id), UserId(user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The workspace's members, each with their presence.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}/members", tag = "workspaces",
    params(("id" = i64, Path)), responses((status = 200, body = [Member]), (status = 404, body = ErrorBody)))]
async fn list_members(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Member>>> {
    Ok(Json(
        state
            .chat
            .workspace_members(&caller, WorkspaceId(id))
            .await?,
    ))
}

/// Presence of every member: who is online, since when they were last seen, their
/// status text. Changes arrive live as `presence.updated` on `workspace:{id}`.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}/presence", tag = "presence",
    params(("id" = i64, Path)), responses((status = 200, body = [Presence]), (status = 404, body = ErrorBody)))]
async fn workspace_presence(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Presence>>> {
    Ok(Json(
        state
            .chat
            .workspace_presence(&caller, WorkspaceId(id))
            .await?,
    ))
}

/// Create a public or private channel.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/channels", tag = "channels", request_body = CreateChannel,
    params(("id" = i64, Path)), responses((status = 201, body = Channel), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<CreateChannel>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    let channel = state
        .chat
        .create_channel(&caller, WorkspaceId(id), req)
        .await?;
    Ok((StatusCode::CREATED, Json(channel)))
}

/// Channels the caller can see (public ones and those it is a member of), with unread counts.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}/channels", tag = "channels",
    params(("id" = i64, Path)), responses((status = 200, body = [ChannelView])))]
async fn list_channels(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<ChannelView>>> {
    Ok(Json(
        state.chat.list_channels(&caller, WorkspaceId(id)).await?,
    ))
}

/// Get or create the DM of the caller and `user_ids`: 201 when created, 200 when it existed.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/dms", tag = "channels", request_body = OpenDm,
    params(("id" = i64, Path)), responses((status = 200, body = ChannelView), (status = 201, body = ChannelView)))]
async fn open_dm(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<OpenDm>,
) -> ApiResult<(StatusCode, Json<ChannelView>)> {
    let (view, created) = state.chat.open_dm(&caller, WorkspaceId(id), req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Who observes the workspace's `on_duty` channels (receives their messages unwoken).
#[utoipa::path(get, path = "/api/v1/workspaces/{id}/observers", tag = "agents",
    params(("id" = i64, Path)), responses((status = 200, body = UserIds), (status = 404, body = ErrorBody)))]
async fn get_observers(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<UserIds>> {
    Ok(Json(state.chat.observers(&caller, WorkspaceId(id)).await?))
}

/// Replace the observers (owners and admins; each must be a workspace member).
/// Publishes `workspace.observers_updated` on the workspace.
#[utoipa::path(put, path = "/api/v1/workspaces/{id}/observers", tag = "agents", request_body = UserIds,
    params(("id" = i64, Path)), responses((status = 200, body = UserIds), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn set_observers(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<UserIds>,
) -> ApiResult<Json<UserIds>> {
    Ok(Json(
        state
            .chat
            .set_observers(&caller, WorkspaceId(id), req)
            .await?,
    ))
}
