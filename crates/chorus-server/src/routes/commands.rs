//! `/api/v1/workspaces/{id}/commands`: registered slash commands. Running one is a
//! message send (`POST /api/v1/channels/{id}/messages` with `/name args`).

use axum::extract::State;
use axum::http::StatusCode;
use chorus_chat::model::{Command, CommandId, WorkspaceId};
use chorus_chat::service::CreateCommand;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_command, list_commands))
        .routes(routes!(delete_command))
}

/// Register a slash command: workspace owners and admins (for an agent of the
/// workspace, or a `webhook_url`), or an agent for itself. `/name args` typed in a
/// channel of the workspace is then delivered as `command.invoked`. A `webhook_url`
/// command's `webhook_secret` is in this answer only. 409 when the name is taken.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/commands", tag = "commands", request_body = CreateCommand,
    params(("id" = i64, Path)),
    responses((status = 201, body = Command), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_command(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<CreateCommand>,
) -> ApiResult<(StatusCode, Json<Command>)> {
    let command = state
        .chat
        .create_command(&caller, WorkspaceId(id), req)
        .await?;
    Ok((StatusCode::CREATED, Json(command)))
}

/// The workspace's registered commands that can be run, by name (any member): not
/// one whose agent, or (for a `webhook_url`) whose registrant, is deactivated or no
/// longer a member of the workspace. The built-ins (`/topic`, `/invite`, `/leave`,
/// `/me`, `/policy`) are not listed.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}/commands", tag = "commands",
    params(("id" = i64, Path)),
    responses((status = 200, body = [Command]), (status = 404, body = ErrorBody)))]
async fn list_commands(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Command>>> {
    Ok(Json(
        state.chat.list_commands(&caller, WorkspaceId(id)).await?,
    ))
}

/// Remove a command: workspace owners and admins, or whoever registered it.
#[utoipa::path(delete, path = "/api/v1/workspaces/{id}/commands/{command_id}", tag = "commands",
    params(("id" = i64, Path), ("command_id" = i64, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_command(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, command_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .chat
        .delete_command(&caller, WorkspaceId(id), CommandId(command_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
