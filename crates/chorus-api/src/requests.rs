//! Request bodies and query strings of the HTTP API: what a client serializes and the
//! server deserializes, one type for both. Defaults a client may leave out are the
//! server's (`#[serde(default)]`); a client leaves unset options out of what it sends.
//! Checking the values (lengths, names, permissions) is the domain's job.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{
    ChannelKind, KeyPermission, MessageId, Policy, Receipt, ReceiptState, Role, UserId, UserKind,
};

/// `POST /api/v1/users` (admin token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUser {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9_.-]{1,32}$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// At most 80 bytes, no control characters; the name when absent or blank.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 80,
            pattern = r"^(?:[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*|[^\u0000-\u001f\u007f-\u009f]*)$"
        )
    )]
    pub display_name: Option<String>,
    #[serde(default = "human")]
    pub kind: UserKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// For an agent with a `webhook_url`: the secret its webhook requests are signed
    /// with (16 to 256 bytes, no control characters). Generated when absent, and
    /// returned once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 16,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub webhook_secret: Option<String>,
    /// Make the new user a server administrator.
    #[serde(default)]
    pub admin: bool,
}

fn human() -> UserKind {
    UserKind::Human
}

impl CreateUser {
    /// A human, non-admin user with the given name (`[a-z0-9_.-]{1,32}`).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            display_name: None,
            kind: UserKind::Human,
            webhook_url: None,
            webhook_secret: None,
            admin: false,
        }
    }

    /// An AI agent (woken by messages as its channels' delivery policies say).
    pub fn agent(name: impl Into<String>) -> Self {
        Self {
            kind: UserKind::Agent,
            ..Self::new(name)
        }
    }
}

/// `GET /api/v1/users` (server admins): a page of users by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct UsersQuery {
    /// Only users with a greater id (the last id of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<i64>))]
    pub after: Option<UserId>,
    /// Page size: default 50, at most 200 (more is taken as 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = Int64, maximum = 4294967295_u64))]
    pub limit: Option<u32>,
}

/// `POST /api/v1/dev/login` (`chorus serve --dev` only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevLogin {
    /// A person's user name (`[a-z0-9_.-]{1,32}`), created on first use.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9_.-]{1,32}$"))]
    pub name: String,
}

/// `POST /api/v1/users/{id}/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateToken {
    /// What the token is for (1 to 64 bytes once trimmed, no control characters), e.g.
    /// `laptop` or `ci`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f](?:[^\u0000-\u001f\u007f-\u009f]{0,62}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
        )
    )]
    pub name: String,
    /// Seconds until it stops working (at most ten years); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 315360000))]
    pub expires_in: Option<u64>,
}

impl CreateToken {
    /// A token that does not expire.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            expires_in: None,
        }
    }
}

/// `POST /api/v1/users/{id}/sign-in-links` (server admins): a one-time sign-in link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSignInLink {
    /// Seconds until the link stops working: 60 to 604800 (seven days); 86400 (a day)
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 604800))]
    pub expires_in: Option<u64>,
}

/// `POST /api/v1/sign-in` (no credentials): exchanges a sign-in link's code for a new
/// API token of its user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignIn {
    /// The code of the link (`#signin=<code>`).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub code: String,
}

/// An agent's webhook settings (`PUT /api/v1/users/{id}/webhook`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetWebhook {
    /// `null` turns webhooks off.
    #[serde(default)]
    pub url: Option<String>,
    /// The signing secret (16 to 256 bytes, no control characters); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 16,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub secret: Option<String>,
}

/// `GET /api/v1/users/{id}/webhook-deliveries`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct DeliveriesQuery {
    /// Page size: default 50, at most 200 (more is taken as 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = Int64, maximum = 4294967295_u64))]
    pub limit: Option<u32>,
}

/// `POST /api/v1/workspaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateWorkspace {
    /// 1 to 80 bytes once trimmed, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f](?:[^\u0000-\u001f\u007f-\u009f]{0,78}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
        )
    )]
    pub name: String,
}

/// `POST /api/v1/workspaces/{id}/members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddMember {
    pub user_id: UserId,
    #[serde(default = "member")]
    pub role: Role,
}

fn member() -> Role {
    Role::Member
}

/// `PATCH /api/v1/workspaces/{id}/members/{user_id}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetRole {
    pub role: Role,
}

/// `POST /api/v1/workspaces/{id}/channels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateChannel {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9_-]{1,80}$"))]
    pub name: String,
    /// `public` or `private` (DMs are opened with `POST /api/v1/workspaces/{id}/dms`).
    #[serde(default = "public")]
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::channel_kind))]
    pub kind: ChannelKind,
    /// The server's default (`all`) when absent; never `dm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::channel_policy))]
    pub policy: Option<Policy>,
    /// At most 250 bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 250, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")
    )]
    pub topic: Option<String>,
    /// Members besides the creator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_ids: Vec<UserId>,
    /// Streaming roll-up window in ms (10 to 10,000); absent or `null`: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 10, maximum = 10000))]
    pub stream_rollup_ms: Option<u64>,
    /// `round_robin` turn timeout in ms (100 to 3,600,000); absent or `null`: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 3600000))]
    pub turn_timeout_ms: Option<u64>,
    /// Loop guard: agent messages in a row (0 turns it off); absent or `null`: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, maximum = 4294967295_u64)
    )]
    pub loop_guard_run: Option<u32>,
    /// Loop guard: agent messages per minute (0 turns it off); absent or `null`: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, maximum = 4294967295_u64)
    )]
    pub loop_guard_per_minute: Option<u32>,
}

fn public() -> ChannelKind {
    ChannelKind::Public
}

impl CreateChannel {
    /// A public channel with the default policy and no other members.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: ChannelKind::Public,
            policy: None,
            topic: None,
            member_ids: Vec::new(),
            stream_rollup_ms: None,
            turn_timeout_ms: None,
            loop_guard_run: None,
            loop_guard_per_minute: None,
        }
    }
}

/// `PATCH /api/v1/channels/{id}`: only the fields that are set change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateChannel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9_-]{1,80}$"))]
    pub name: Option<String>,
    /// At most 250 bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 250, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")
    )]
    pub topic: Option<String>,
    /// Never `dm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::channel_policy))]
    pub policy: Option<Policy>,
    /// Streaming roll-up window in ms (10 to 10,000); `null`: back to the server's.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 10, maximum = 10000)
    )]
    pub stream_rollup_ms: Option<Option<u64>>,
    /// `round_robin` turn timeout in ms (100 to 3,600,000); `null`: back to the server's.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, minimum = 100, maximum = 3600000)
    )]
    pub turn_timeout_ms: Option<Option<u64>>,
    /// Loop guard: agent messages in a row (0: off); `null`: back to the server's.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, maximum = 4294967295_u64)
    )]
    pub loop_guard_run: Option<Option<u32>>,
    /// Loop guard: agent messages per minute (0: off); `null`: back to the server's.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<u64>, maximum = 4294967295_u64)
    )]
    pub loop_guard_per_minute: Option<Option<u32>>,
}

/// A PATCH field that may be absent (`None`: unchanged), `null` (`Some(None)`: back to
/// the default) or a value.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /api/v1/messages/{id}/receipts`: what a woken agent does with the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetReceipt {
    pub state: ReceiptState,
}

/// A message's receipts summary (the answer to `POST /api/v1/messages/{id}/receipts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipts {
    pub message_id: MessageId,
    pub receipts: Vec<Receipt>,
}

/// `POST /api/v1/messages/{id}/cancel` (the body is optional): with `agent_id`, only
/// that agent's turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelTurn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub agent_id: Option<UserId>,
}

/// What `POST /api/v1/messages/{id}/cancel` cancelled: the agents whose turns ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cancelled {
    pub cancelled: Vec<UserId>,
}

/// `POST /api/v1/workspaces/{id}/dms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenDm {
    /// The other participants (the caller is always one).
    pub user_ids: Vec<UserId>,
}

/// `POST /api/v1/channels/{id}/members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddChannelMember {
    pub user_id: UserId,
}

/// `POST /api/v1/channels/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendMessage {
    /// A text starting with `/name` (a name of `[a-z][a-z0-9_-]*` followed by a space
    /// or the end) is a slash command, run rather than posted (`docs/protocol.md`,
    /// "Slash commands"); `//` posts the rest with one leading slash. No NUL character
    /// (U+0000).
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[^\u0000]*$"))]
    pub text: String,
    /// Reply in the thread of this top-level message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<MessageId>,
    /// Open the message as a stream (state `streaming`): its author then appends to it
    /// (`POST /api/v1/messages/{id}/append`, or the WebSocket op `append`) and ends it
    /// with `complete` or `abort`. `text` may then be empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub streaming: bool,
}

impl SendMessage {
    /// A top-level message.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            thread_id: None,
            streaming: false,
        }
    }

    /// A top-level message opened as a stream, starting with `text` (may be empty).
    pub fn streaming(text: impl Into<String>) -> Self {
        Self {
            streaming: true,
            ..Self::new(text)
        }
    }
}

/// `POST /api/v1/workspaces/{id}/commands`: registers a slash command. Exactly one of
/// `target_user_id` (an agent, woken by `command.invoked`) and `webhook_url` (POSTed
/// the event, signed like agents' webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateCommand {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z][a-z0-9_-]{0,31}$"))]
    pub name: String,
    /// At most 200 bytes, no control characters; shown when a client offers the command.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")
    )]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// For a `webhook_url`: the signing secret (16 to 256 bytes, no control characters);
    /// generated when absent, and returned once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 16,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub webhook_secret: Option<String>,
}

/// `POST /api/v1/messages/{id}/append`: text to add to a streaming message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendText {
    /// No NUL character (U+0000).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, pattern = r"^[^\u0000]+$"))]
    pub text: String,
}

/// `POST /api/v1/messages/{id}/complete`: ends a stream. With `text`, that becomes
/// the message's whole text (replacing what was appended).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteMessage {
    /// Not blank; no NUL character (U+0000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[^\u0000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000][^\u0000]*$"
        )
    )]
    pub text: Option<String>,
}

/// `POST /api/v1/messages/{id}/abort`: ends a stream without completing it; the text
/// appended so far stays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AbortMessage {
    /// Why (at most 200 bytes); shown to readers with `message.aborted`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub reason: String,
}

/// What `POST /api/v1/messages/{id}/append` (and the WebSocket op `append`) accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Appended {
    pub message_id: MessageId,
    /// The message's text length in bytes with this append (what readers will have
    /// once the next roll-up is out).
    pub bytes: u64,
}

/// `GET /api/v1/channels/{id}/messages`; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct HistoryQuery {
    /// Messages with ids below this one (paging back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<i64>))]
    pub before: Option<MessageId>,
    /// Messages with ids above this one (catching up forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<i64>))]
    pub after: Option<MessageId>,
    /// Page size: default 50, at most 200 (more is taken as 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = Int64, maximum = 4294967295_u64))]
    pub limit: Option<u32>,
    /// The replies of this thread instead of the top-level messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<i64>))]
    pub thread_id: Option<MessageId>,
}

/// `PATCH /api/v1/messages/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EditMessage {
    /// Not blank; no NUL character (U+0000).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[^\u0000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000][^\u0000]*$"
        )
    )]
    pub text: String,
}

/// `PUT /api/v1/channels/{id}/read`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MarkRead {
    /// The last message read: any message of the channel (a thread reply too).
    pub message_id: MessageId,
}

/// `PUT /api/v1/presence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetStatus {
    /// Free text shown beside the user's name, trimmed: at most 140 characters, no
    /// control characters; empty clears it.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*(?:[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f](?:[^\u0000-\u001f\u007f-\u009f]{0,138}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f])?)?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
        )
    )]
    pub status_text: String,
}

/// `POST /api/v1/proxy/sessions/revoke` (a server key with `sessions:revoke`, or the
/// admin token): the application logged `sub` out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokeProxySessions {
    /// The application's id of the user, as its connect proxy answers it.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub sub: String,
}

/// `POST /api/v1/publish` (a server key with `publish`, or the admin token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Publish {
    /// Any scope, e.g. `topic:deploys`.
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 160, pattern = r"^[a-z_]+:[A-Za-z0-9_.:-]+$")
    )]
    pub scope: String,
    /// The event type, 1 to 64 bytes, no NUL character (U+0000).
    #[serde(rename = "type")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = r"^[^\u0000]+$")
    )]
    pub kind: String,
    /// Any JSON value.
    pub data: Value,
    /// Ephemeral events get no offset and are not retained for resume.
    #[serde(default)]
    pub ephemeral: bool,
}

/// A declared namespace of `topic:` scopes (gateway mode): a `[[namespaces]]` table of
/// the server's TOML file, as `GET /api/v1/namespaces` lists it. See docs/protocol.md,
/// "Namespaces".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// A unique name, for logs and errors.
    pub name: String,
    /// The scopes it holds: `topic:` then literal text, `{var}` (one or more characters
    /// other than `.`) and, last only, `*` (one or more of any): `topic:orders.{order_id}`,
    /// `topic:notifications.user.{user_id}`, `topic:news`, `topic:*` (a catch-all).
    pub pattern: String,
    /// Who may subscribe: `public` (anonymous connections too), `authenticated`,
    /// `role:<name>` (a credential carrying that role: a JWT's roles claim, the connect
    /// proxy's `roles`; for `owner|admin|member|guest` also that workspace role or a
    /// higher one in the workspace `{workspace_id}` names), `user` (`{user_id}` is the
    /// caller's id), `proxy` (the application's subscribe proxy decides).
    #[serde(default = "authenticated")]
    pub read: String,
    /// Who may publish from a client (`publish` op): `server` (nobody: only
    /// `POST /api/v1/publish`; the default) or one of the kinds of `read`.
    #[serde(default = "server")]
    pub publish: String,
    /// A JSON Schema every published `data` must satisfy (server and client publishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub schema: Option<Value>,
    /// How many of each topic's last events are kept for `resume`, `since` and the HTTP
    /// catch-up (at most 1,000,000), instead of the server's `retention_events`. `0`: no
    /// history (events get no offset and are never replayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_events: Option<u64>,
    /// How long each topic's events are kept, in seconds (at most a year), instead of
    /// the server's `retention_secs`. `0`: no history, as `retention_events = 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_secs: Option<u64>,
    /// Whether who is subscribed to a topic can be read (`GET
    /// /api/v1/scopes/{scope}/presence`, by whoever may read the topic).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presence: bool,
    /// Whether a topic's subscribers receive `subscriber.joined` / `subscriber.left`
    /// when a connection subscribes to it or stops.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join_leave: bool,
}

fn authenticated() -> String {
    "authenticated".to_owned()
}

fn server() -> String {
    "server".to_owned()
}

/// `GET /api/v1/scopes/{scope}/events`: which events to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct ScopeEventsQuery {
    /// The offset after which to read: the last offset the client saw of the scope.
    pub after: u64,
    /// Most events per page, 1 to 1000; 200 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
}

/// One page of a scope's events after an offset (the complete catch-up of a client
/// whose `resume` answered `recovered: false`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScopeEvents {
    pub scope: String,
    /// The scope's events after `after` that the caller may see, ascending, shaped as
    /// the WebSocket's `event` frames (without `op`).
    pub events: Vec<ScopeEvent>,
    /// The scope's latest offset.
    pub head: u64,
    /// Where the next page starts: pass it as `after`.
    pub next: u64,
    /// Whether events after `next` remain.
    pub more: bool,
}

/// `GET /api/v1/scopes/{scope}/presence`: who is subscribed to a topic of a namespace
/// with `presence = true`, on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicPresence {
    pub scope: String,
    /// One entry per subscribed connection, by `user_id` then `session_id`.
    pub subscribers: Vec<TopicSubscriber>,
}

/// One connection subscribed to a topic (in [`TopicPresence`], and the `data` of
/// `subscriber.joined` / `subscriber.left`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicSubscriber {
    /// The user (`0` for an anonymous connection).
    pub user_id: i64,
    /// The connection's `session_id`, as its `hello` gave it.
    pub session_id: String,
    /// Present (`true`) for an anonymous connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
}

/// An event as the WebSocket delivers it to the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScopeEvent {
    pub scope: String,
    pub offset: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    /// Agent-aware delivery: `true` = act, `false` = record only; absent on events
    /// that are not agent-aware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub wake: Option<bool>,
}

impl From<ScopeEvent> for chorus_proto::EventFrame {
    /// The event as it would have arrived on the WebSocket.
    fn from(event: ScopeEvent) -> Self {
        Self {
            scope: event.scope,
            offset: Some(event.offset),
            kind: event.kind,
            data: event.data,
            wake: event.wake,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_leaves_unset_options_out_and_the_server_fills_in_defaults() {
        let json = serde_json::to_string(&CreateUser::new("ann")).expect("serializes");
        assert_eq!(json, r#"{"name":"ann","kind":"human","admin":false}"#);
        let bare: CreateUser = serde_json::from_str(r#"{"name":"ann"}"#).expect("parses");
        assert_eq!(bare, CreateUser::new("ann"));
        let json = serde_json::to_string(&CreateChannel::new("general")).expect("serializes");
        assert_eq!(json, r#"{"name":"general","kind":"public"}"#);
        let add: AddMember = serde_json::from_str(r#"{"user_id":3}"#).expect("parses");
        assert_eq!(add.role, Role::Member);
        let query = HistoryQuery {
            before: Some(MessageId(9)),
            ..HistoryQuery::default()
        };
        assert_eq!(
            serde_json::to_string(&query).ok().as_deref(),
            Some(r#"{"before":9}"#)
        );
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateServerKey {
    /// What the key is for (1–80 bytes once trimmed, no control characters), e.g. the
    /// backend using it.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f](?:[^\u0000-\u001f\u007f-\u009f]{0,78}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
        )
    )]
    pub name: String,
    /// At least one of `publish`, `stats:read`, `sessions:revoke`.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub permissions: Vec<KeyPermission>,
    /// With `publish`: the scopes the key may publish to start with one of these (each
    /// names a scope kind, e.g. `topic:orders.`). Absent: any scope.
    #[serde(default)]
    pub publish_prefixes: Option<Vec<String>>,
}

/// Schemas `utoipa` cannot derive: the values of a shared enum a request may take.
#[cfg(feature = "openapi")]
mod openapi {
    use serde_json::Value;
    use utoipa::openapi::schema::SchemaType;
    use utoipa::openapi::{ObjectBuilder, Type};

    /// A channel a request creates: never a DM.
    pub fn channel_kind() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["public", "private"]))
    }

    /// A policy a request sets, or `null` (unchanged, or the default): `dm` is the
    /// DMs' own.
    pub fn channel_policy() -> ObjectBuilder {
        let values = [
            "all",
            "mentions",
            "broadcast",
            "on_duty",
            "custom",
            "round_robin",
        ];
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .enum_values(Some(
                values.iter().map(|v| Value::from(*v)).chain([Value::Null]),
            ))
    }
}
