//! `/api/v1/messages/{id}`: edit and delete.

use axum::extract::State;
use chorus_chat::model::{Message, MessageId};
use chorus_chat::service::EditMessage;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(edit_message, delete_message))
}

/// Edit a message's text (its author or a workspace admin).
#[utoipa::path(patch, path = "/api/v1/messages/{id}", tag = "messages", request_body = EditMessage,
    params(("id" = i64, Path)), responses((status = 200, body = Message), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn edit_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<EditMessage>,
) -> ApiResult<Json<Message>> {
    Ok(Json(
        state
            .chat
            .edit_message(&caller, MessageId(id), req.text)
            .await?,
    ))
}

/// Delete a message (its author or a workspace admin); it remains as a tombstone.
#[utoipa::path(delete, path = "/api/v1/messages/{id}", tag = "messages",
    params(("id" = i64, Path)), responses((status = 200, body = Message), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Message>> {
    Ok(Json(
        state.chat.delete_message(&caller, MessageId(id)).await?,
    ))
}
