//! `/api/v1/channels/…`: one channel, its members, and its messages.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chorus_api::{AddChannelMember, HistoryQuery};
use chorus_chat::model::{Channel, ChannelId, ChannelView, Message, Pin, ReadState, UserId};
use chorus_chat::service::commands::CommandResult;
use chorus_chat::service::{MarkRead, Posted, SendMessage, Sent, UpdateChannel, UserIds};
use chorus_chat::store::{DeliveryList, MessageQuery};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_channel, update_channel))
        .routes(routes!(add_channel_member))
        .routes(routes!(remove_channel_member))
        .routes(routes!(join_channel))
        .routes(routes!(leave_channel))
        .routes(routes!(send_message, list_messages))
        .routes(routes!(list_pins))
        .routes(routes!(mark_read))
        .routes(routes!(get_on_duty, set_on_duty))
        .routes(routes!(get_wake_list, set_wake_list))
}

/// One channel, with its member ids, their presence, and the caller's read state.
#[utoipa::path(get, path = "/api/v1/channels/{id}", tag = "channels",
    params(("id" = i64, Path)), responses((status = 200, body = ChannelView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<ChannelView>> {
    Ok(Json(state.chat.get_channel(&caller, ChannelId(id)).await?))
}

/// Rename, set the topic, or change the delivery policy.
#[utoipa::path(patch, path = "/api/v1/channels/{id}", tag = "channels", request_body = UpdateChannel,
    params(("id" = i64, Path)), responses((status = 200, body = Channel), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<UpdateChannel>,
) -> ApiResult<Json<Channel>> {
    Ok(Json(
        state
            .chat
            .update_channel(&caller, ChannelId(id), req)
            .await?,
    ))
}

/// Add a workspace member to the channel.
#[utoipa::path(post, path = "/api/v1/channels/{id}/members", tag = "channels", request_body = AddChannelMember,
    params(("id" = i64, Path)), responses((status = 204), (status = 403, body = ErrorBody)))]
async fn add_channel_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<AddChannelMember>,
) -> ApiResult<StatusCode> {
    state
        .chat
        .add_channel_member(&caller, ChannelId(id), req.user_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a member (workspace admins, the channel's creator, or the member itself).
#[utoipa::path(delete, path = "/api/v1/channels/{id}/members/{user_id}", tag = "channels",
    params(("id" = i64, Path), ("user_id" = i64, Path)), responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_channel_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, user_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state
        .chat
        .remove_channel_member(&caller, ChannelId(id), UserId(user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Join a public channel.
#[utoipa::path(post, path = "/api/v1/channels/{id}/join", tag = "channels",
    params(("id" = i64, Path)), responses((status = 200, body = Channel), (status = 403, body = ErrorBody)))]
async fn join_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Channel>> {
    Ok(Json(state.chat.join_channel(&caller, ChannelId(id)).await?))
}

/// Leave a channel.
#[utoipa::path(post, path = "/api/v1/channels/{id}/leave", tag = "channels",
    params(("id" = i64, Path)), responses((status = 204), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn leave_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    state.chat.leave_channel(&caller, ChannelId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a message. With an `Idempotency-Key` header, a retry returns the first
/// result (and the header `Idempotent-Replayed: true`) and creates nothing. A text
/// starting with `/name` is a slash command: run, not posted; its answer is `200` with
/// a `CommandResult` (also sent to the author's connections as `command.result`), or
/// the command's refusal (`400 unknown_command` for a name that is no command). A
/// registered command retried with its `Idempotency-Key` is answered as the first time
/// (`Idempotent-Replayed: true`) and delivered once.
#[utoipa::path(post, path = "/api/v1/channels/{id}/messages", tag = "messages", request_body = SendMessage,
    params(("id" = i64, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Message), (status = 200, body = CommandResult, description = "A slash command ran"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn send_message(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(req): Json<SendMessage>,
) -> ApiResult<Response> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?
                .to_owned(),
        ),
    };
    let Posted {
        message,
        created,
        json,
    } = match state.chat.send(&caller, ChannelId(id), req, key).await? {
        Sent::Message(posted) => posted,
        Sent::Command { result, replayed } => {
            let mut response = (StatusCode::OK, Json(result)).into_response();
            if replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            return Ok(response);
        }
    };
    // The JSON its event carries when there is one (serialized once), else the message.
    let mut response = match json {
        Some(json) => (
            StatusCode::CREATED,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response(),
        None => (StatusCode::CREATED, Json(message)).into_response(),
    };
    if !created {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// History, oldest first within the page: the latest page by default, `before` to page
/// back, `after` to catch up forward (the cold path after `recovered: false`). Without
/// `thread_id`, only top-level messages (roots carry `reply_count` and `last_reply_at`);
/// with it, that thread's replies.
#[utoipa::path(get, path = "/api/v1/channels/{id}/messages", tag = "messages",
    params(("id" = i64, Path), HistoryQuery), responses((status = 200, body = [Message]), (status = 403, body = ErrorBody)))]
async fn list_messages(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Vec<Message>>> {
    let query = MessageQuery {
        before: q.before,
        after: q.after,
        limit: q.limit.unwrap_or(0),
        thread_id: q.thread_id,
    };
    Ok(Json(
        state
            .chat
            .list_messages(&caller, ChannelId(id), query)
            .await?,
    ))
}

/// The channel's pinned messages, most recently pinned first.
#[utoipa::path(get, path = "/api/v1/channels/{id}/pins", tag = "messages",
    params(("id" = i64, Path)), responses((status = 200, body = [Pin]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_pins(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Pin>>> {
    Ok(Json(state.chat.list_pins(&caller, ChannelId(id)).await?))
}

/// Move the caller's read cursor forward to `message_id` (members). It never moves
/// back. The user's connections get `read.updated` when it moved.
#[utoipa::path(post, path = "/api/v1/channels/{id}/read", tag = "channels", request_body = MarkRead,
    params(("id" = i64, Path)), responses((status = 200, body = ReadState), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn mark_read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<MarkRead>,
) -> ApiResult<Json<ReadState>> {
    Ok(Json(
        state.chat.mark_read(&caller, ChannelId(id), req).await?,
    ))
}

/// The channel's on-duty list: who every message of an `on_duty` channel wakes.
#[utoipa::path(get, path = "/api/v1/channels/{id}/on-duty", tag = "agents",
    params(("id" = i64, Path)), responses((status = 200, body = UserIds), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_on_duty(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<UserIds>> {
    let list = DeliveryList::OnDuty;
    Ok(Json(
        state
            .chat
            .delivery_list(&caller, ChannelId(id), list)
            .await?,
    ))
}

/// Replace the on-duty list (channel members or workspace admins; every user must be a
/// channel member). Publishes `channel.on_duty_updated` on the channel.
#[utoipa::path(put, path = "/api/v1/channels/{id}/on-duty", tag = "agents", request_body = UserIds,
    params(("id" = i64, Path)), responses((status = 200, body = UserIds), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn set_on_duty(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<UserIds>,
) -> ApiResult<Json<UserIds>> {
    let list = DeliveryList::OnDuty;
    Ok(Json(
        state
            .chat
            .set_delivery_list(&caller, ChannelId(id), list, req)
            .await?,
    ))
}

/// The channel's wake list: who every message of a `custom` channel wakes.
#[utoipa::path(get, path = "/api/v1/channels/{id}/wake-list", tag = "agents",
    params(("id" = i64, Path)), responses((status = 200, body = UserIds), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_wake_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<UserIds>> {
    let list = DeliveryList::Wake;
    Ok(Json(
        state
            .chat
            .delivery_list(&caller, ChannelId(id), list)
            .await?,
    ))
}

/// Replace the wake list (channel members or workspace admins; every user must be a
/// channel member). Publishes `channel.wake_list_updated` on the channel.
#[utoipa::path(put, path = "/api/v1/channels/{id}/wake-list", tag = "agents", request_body = UserIds,
    params(("id" = i64, Path)), responses((status = 200, body = UserIds), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn set_wake_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Json(req): Json<UserIds>,
) -> ApiResult<Json<UserIds>> {
    let list = DeliveryList::Wake;
    Ok(Json(
        state
            .chat
            .set_delivery_list(&caller, ChannelId(id), list, req)
            .await?,
    ))
}
