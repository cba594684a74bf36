//! `/api/v1/messages/{id}`: edit, delete, reactions and pins; a streaming message's
//! appends and end.

use axum::extract::State;
use axum::http::StatusCode;
use chorus_api::requests::{
    AbortMessage, AppendText, Appended, CancelTurn, Cancelled, CompleteMessage, Receipts,
    SetReceipt,
};
use chorus_chat::model::{Message, MessageId, Pin};
use chorus_chat::service::EditMessage;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, OptionalJson, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(edit_message, delete_message))
        .routes(routes!(add_reaction, remove_reaction))
        .routes(routes!(pin_message, unpin_message))
        .routes(routes!(append_message))
        .routes(routes!(complete_message))
        .routes(routes!(abort_message))
        .routes(routes!(set_receipt))
        .routes(routes!(cancel_turn))
}

/// Report what the caller (an agent the message woke) does with the message:
/// `received`, `working`, `done` or `declined`. Announced as `receipt.updated`;
/// returns the message's receipts. Under `round_robin`, `working` keeps the turn.
#[utoipa::path(post, path = "/api/v1/messages/{id}/receipts", tag = "messages", request_body = SetReceipt,
    params(("id" = i64, Path)),
    responses((status = 200, body = Receipts), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn set_receipt(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<SetReceipt>,
) -> ApiResult<Json<Receipts>> {
    Ok(Json(
        state
            .chat
            .set_receipt(&caller, MessageId(id), req.state)
            .await?,
    ))
}

/// Cancel agents' turns: `{id}` is a message that woke agents (all their running turns
/// at it, or only `agent_id`'s) or an agent's streaming reply (aborted with reason
/// `cancelled`, with its author's turn). The agent gets `turn.cancelled` live or by
/// webhook. For the author of the message that woke the agent and the channel's
/// managers; 409 when nothing is running.
#[utoipa::path(post, path = "/api/v1/messages/{id}/cancel", tag = "messages", request_body(content = Option<CancelTurn>),
    params(("id" = i64, Path)),
    responses((status = 200, body = Cancelled), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_turn(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    OptionalJson(req): OptionalJson<CancelTurn>,
) -> ApiResult<Json<Cancelled>> {
    Ok(Json(
        state
            .chat
            .cancel_turns(&caller, MessageId(id), req.agent_id)
            .await?,
    ))
}

/// Add text to the end of the caller's streaming message. Accepted at once; readers get
/// it with the next roll-up (`message.deltas`). 409 when the message is not streaming,
/// 413 when the text would pass `max_message_bytes`.
#[utoipa::path(post, path = "/api/v1/messages/{id}/append", tag = "messages", request_body = AppendText,
    params(("id" = i64, Path)),
    responses((status = 200, body = Appended), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn append_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<AppendText>,
) -> ApiResult<Json<Appended>> {
    Ok(Json(
        state
            .chat
            .append_to_message(&caller, MessageId(id), &req.text)
            .await?,
    ))
}

/// End the caller's stream (state `complete`); with `text`, that becomes the whole text.
#[utoipa::path(post, path = "/api/v1/messages/{id}/complete", tag = "messages", request_body = CompleteMessage,
    params(("id" = i64, Path)),
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn complete_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<CompleteMessage>,
) -> ApiResult<Json<Message>> {
    Ok(Json(
        state
            .chat
            .complete_message(&caller, MessageId(id), req.text)
            .await?,
    ))
}

/// End a stream without completing it (its author or a workspace admin); the text
/// appended so far stays (state `aborted`).
#[utoipa::path(post, path = "/api/v1/messages/{id}/abort", tag = "messages", request_body = AbortMessage,
    params(("id" = i64, Path)),
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn abort_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<AbortMessage>,
) -> ApiResult<Json<Message>> {
    Ok(Json(
        state
            .chat
            .abort_message(&caller, MessageId(id), req.reason)
            .await?,
    ))
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

/// React with `emoji` (1 to 64 bytes, no whitespace or control characters; percent-encode
/// it in the path). Anyone who may read the message may react; reacting twice changes
/// nothing. Returns the message with its reactions.
#[utoipa::path(put, path = "/api/v1/messages/{id}/reactions/{emoji}", tag = "messages",
    params(("id" = i64, Path), ("emoji" = String, Path, max_length = 64, pattern = r"^[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202a-\u202f\u205f\u2066-\u2069\u3000\ufeff]+$")),
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn add_reaction(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, emoji)): Path<(i64, String)>,
) -> ApiResult<Json<Message>> {
    Ok(Json(
        state
            .chat
            .add_reaction(&caller, MessageId(id), &emoji)
            .await?,
    ))
}

/// Remove the caller's `emoji` reaction. Returns the message with its reactions.
#[utoipa::path(delete, path = "/api/v1/messages/{id}/reactions/{emoji}", tag = "messages",
    params(("id" = i64, Path), ("emoji" = String, Path, max_length = 64, pattern = r"^[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202a-\u202f\u205f\u2066-\u2069\u3000\ufeff]+$")),
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_reaction(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, emoji)): Path<(i64, String)>,
) -> ApiResult<Json<Message>> {
    Ok(Json(
        state
            .chat
            .remove_reaction(&caller, MessageId(id), &emoji)
            .await?,
    ))
}

/// Pin the message in its channel (channel members; at most 100 pins per channel).
/// Pinning again returns the existing pin.
#[utoipa::path(put, path = "/api/v1/messages/{id}/pin", tag = "messages",
    params(("id" = i64, Path)),
    responses((status = 200, body = Pin), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn pin_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Pin>> {
    Ok(Json(state.chat.pin_message(&caller, MessageId(id)).await?))
}

/// Unpin the message (channel members). Unpinning what is not pinned is not an error.
#[utoipa::path(delete, path = "/api/v1/messages/{id}/pin", tag = "messages",
    params(("id" = i64, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unpin_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    state.chat.unpin_message(&caller, MessageId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
