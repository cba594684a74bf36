//! The resources of the HTTP API (users, workspaces, channels, messages, …) with
//! newtype ids, exactly as they are serialized in responses and event payloads. Plain
//! data: the rules that govern them live in `chorus-chat`.

use std::fmt;
use std::str::FromStr;

use chorus_proto::ErrorCode;
use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($($(#[$meta:meta])* $name:ident),*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    )*};
}

id_type!(
    /// A user's id.
    UserId,
    /// A workspace's id.
    WorkspaceId,
    /// A channel's id (DMs are channels too).
    ChannelId,
    /// A message's id; ids grow with time within a channel.
    MessageId,
    /// An API token's id (what revoking names; never the secret).
    TokenId,
    /// A registered slash command's id.
    CommandId
);

/// Milliseconds since the Unix epoch; serialized as an RFC 3339 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// `secs` seconds later (saturating).
    pub fn plus_secs(self, secs: u64) -> Self {
        let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// The same instant as a [`SystemTime`](std::time::SystemTime).
    pub fn to_system_time(self) -> std::time::SystemTime {
        let ms = std::time::Duration::from_millis(u64::try_from(self.0).unwrap_or(0));
        std::time::UNIX_EPOCH + ms
    }

    /// A [`SystemTime`](std::time::SystemTime) to the millisecond (before 1970: 0).
    pub fn from_system_time(at: std::time::SystemTime) -> Self {
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self(ms)
    }

    fn to_datetime(self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self
            .to_datetime()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let dt = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map_err(serde::de::Error::custom)?;
        Ok(Self((dt.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)*
                    other => Err(format!(
                        "unknown {} {other:?}; one of: {}",
                        stringify!($name),
                        [$($text),*].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum!(
    /// Whether a user is a person or an AI agent.
    UserKind { Human = "human", Agent = "agent" }
);
text_enum!(
    /// A member's role in a workspace.
    Role { Owner = "owner", Admin = "admin", Member = "member", Guest = "guest" }
);
text_enum!(
    /// Public, private, or a DM.
    ChannelKind { Public = "public", Private = "private", Dm = "dm" }
);
text_enum!(
    /// Who is woken by a message in a channel (SPEC §4).
    Policy {
        All = "all",
        Mentions = "mentions",
        Broadcast = "broadcast",
        OnDuty = "on_duty",
        Custom = "custom",
        RoundRobin = "round_robin",
        Dm = "dm",
    }
);

text_enum!(
    /// Where a message's text stands: `complete` (every message not streamed, and a
    /// stream its author completed), `streaming` (its author is still appending), or
    /// `aborted` (the stream was ended without completing: by its author, a cancel, or
    /// the server after it stayed idle; its text is what was appended until then).
    MessageState { Complete = "complete", Streaming = "streaming", Aborted = "aborted" }
);

// `text_enum!` takes no attributes on variants (`#[default]`).
#[allow(clippy::derivable_impls)]
impl Default for MessageState {
    fn default() -> Self {
        Self::Complete
    }
}

text_enum!(
    /// What a message is: `text` (everything posted as a message), or `action`
    /// (posted by `/me waves`: its `text` is the action, `waves`, shown as
    /// "alice waves").
    MessageKind { Text = "text", Action = "action" }
);

// `text_enum!` takes no attributes on variants (`#[default]`).
#[allow(clippy::derivable_impls)]
impl Default for MessageKind {
    fn default() -> Self {
        Self::Text
    }
}

impl MessageKind {
    /// Whether this is the default kind (left out of the JSON).
    pub fn is_text(&self) -> bool {
        *self == Self::Text
    }
}

text_enum!(
    /// What a woken agent reports about a message (its receipt): `received` (seen),
    /// `working` (on it: under `round_robin` it keeps its turn), `done`, `declined`.
    ReceiptState {
        Received = "received",
        Working = "working",
        Done = "done",
        Declined = "declined",
    }
);

text_enum!(
    /// Where a webhook delivery stands: `pending` (queued or between retries),
    /// `delivered` (the receiver answered 2xx; never sent again), `failed` (gave up),
    /// `refused` (the target is not allowed, e.g. a private address: nothing was sent,
    /// never retried).
    WebhookStatus {
        Pending = "pending",
        Delivered = "delivered",
        Failed = "failed",
        Refused = "refused",
    }
);

impl Role {
    /// Owners and admins manage the workspace.
    pub const fn manages(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// A user's full record. Shown only to the user themself and to server admins; anyone
/// else sees the [`UserProfile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub display_name: String,
    pub kind: UserKind,
    /// An agent's webhook (may carry a secret in its query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub webhook_url: Option<String>,
    pub status_text: String,
    /// Server administrator (may create users, publish to any scope).
    pub is_admin: bool,
    pub created_at: Timestamp,
    /// When a server admin deactivated the user (absent while active): their tokens
    /// are refused, their sockets were closed, their messages stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub deactivated_at: Option<Timestamp>,
}

/// One of a user's API tokens, as listed: never the secret, never its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiToken {
    pub id: TokenId,
    pub name: String,
    pub created_at: Timestamp,
    /// When it stops working (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub expires_at: Option<Timestamp>,
    /// When it was last used, to within about a minute (absent: not yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub last_used_at: Option<Timestamp>,
}

/// A user as others see them: no webhook, no admin flag. Every response or event that
/// shows one user to another carries this, never a [`User`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserProfile {
    pub id: UserId,
    pub name: String,
    pub display_name: String,
    pub kind: UserKind,
    pub status_text: String,
    pub created_at: Timestamp,
}

impl From<User> for UserProfile {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            name: user.name,
            display_name: user.display_name,
            kind: user.kind,
            status_text: user.status_text,
            created_at: user.created_at,
        }
    }
}

/// `GET /api/v1/users/{id}`: the full record for the user themself and server admins,
/// the profile for anyone else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum UserView {
    Full(User),
    Profile(UserProfile),
}

impl UserView {
    /// The profile part, whichever the server sent.
    pub fn profile(&self) -> UserProfile {
        match self {
            Self::Full(user) => user.clone().into(),
            Self::Profile(profile) => profile.clone(),
        }
    }
}

/// A new user and its first API token: the only time the token (and, for an agent
/// created with a `webhook_url`, its webhook secret) is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserWithToken {
    pub user: User,
    /// Shown once; only its hash is stored.
    pub token: String,
    /// For an agent created with a `webhook_url`: the secret its webhook requests are
    /// signed with. Shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub webhook_secret: Option<String>,
}

/// A new token: its listing and the secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewApiToken {
    #[serde(flatten)]
    pub info: ApiToken,
    /// The secret (`chr_…`): shown once; only its hash is stored.
    pub token: String,
}

/// A new one-time sign-in link: its code, shown this once (only its hash is stored).
/// Whoever opens `<web UI origin>/` + `url_fragment` before `expires_at` is signed in as
/// the user, once (`POST /api/v1/sign-in`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewSignInLink {
    /// The link's id (to revoke it: `DELETE /api/v1/users/{id}/sign-in-links/{link_id}`).
    pub id: i64,
    /// The link's secret (`chs_…`).
    pub code: String,
    /// `#signin=<code>`: what the web UI reads on load.
    pub url_fragment: String,
    /// Whom the link signs in.
    pub user_id: UserId,
    pub expires_at: Timestamp,
}

/// A sign-in link not used yet, as listed (never its code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignInLink {
    pub id: i64,
    /// Whom the link signs in.
    pub user_id: UserId,
    /// The server admin who created it.
    pub created_by: UserId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A list of users: an on-duty list, a wake list, or a workspace's observers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserIds {
    pub user_ids: Vec<UserId>,
}

/// An agent's webhook settings as set: the secret is shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookSettings {
    pub user: User,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub created_by: UserId,
    pub created_at: Timestamp,
}

/// A workspace with the caller's role in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceMembership {
    #[serde(flatten)]
    pub workspace: Workspace,
    pub role: Role,
}

/// A workspace member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub user: UserProfile,
    pub role: Role,
    pub presence: Presence,
}

/// A user's presence as the server computes it: `online` while the user has a live
/// connection (a short grace after the last one closes), never a client's say-so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Presence {
    pub user_id: UserId,
    pub online: bool,
    /// When the user's last connection closed; for an online user, when they came
    /// online. Absent for a user who never connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub last_seen: Option<Timestamp>,
    pub status_text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Channel {
    pub id: ChannelId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub topic: String,
    pub kind: ChannelKind,
    pub policy: Policy,
    pub created_by: UserId,
    pub created_at: Timestamp,
    /// The roll-up window of streaming messages here, in ms; absent: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub stream_rollup_ms: Option<u64>,
    /// `round_robin`: how long a woken agent has to report `working` before the turn
    /// passes to the next agent, in ms; absent: the server's (30 s by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub turn_timeout_ms: Option<u64>,
    /// Loop guard: agent messages in a row (no person's in between) after which agents
    /// are not woken here until a person writes; 0 turns it off; absent: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, value_type = Option<u64>, maximum = 4294967295_u64)
    )]
    pub loop_guard_run: Option<u32>,
    /// Loop guard: agent messages per minute, likewise; absent: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, value_type = Option<u64>, maximum = 4294967295_u64)
    )]
    pub loop_guard_per_minute: Option<u32>,
    /// The loop guard's last change here (what `channel.loop_guard` announced): while
    /// `state` is `held`, agents are not woken in this channel until a person writes.
    /// Absent: it never held here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub loop_guard: Option<ChannelLoopGuard>,
}

/// Whether a channel's loop guard holds its agents (see `Channel::loop_guard`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelLoopGuard {
    pub state: LoopGuardState,
    /// `held`: the limit reached (`agent_messages`, `per_minute`); `released`:
    /// `person_wrote`.
    pub reason: String,
    /// When it changed to `state`.
    pub since: Timestamp,
}

text_enum!(
    /// `held`: agents are not woken in the channel (they observe) until a person
    /// writes; `released`: they are again.
    LoopGuardState { Held = "held", Released = "released" }
);

/// A channel as the caller sees it in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelView {
    #[serde(flatten)]
    pub channel: Channel,
    /// Whether the caller is a member.
    pub member: bool,
    /// Top-level messages by others after the caller's read cursor (0 when not a member).
    pub unread: i64,
    /// Of those, the ones that mention the caller.
    pub unread_mentions: i64,
    /// The caller's read cursor: the last message read, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub last_read: Option<MessageId>,
    /// For DMs (and `GET /api/v1/channels/{id}`): the participants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_ids: Vec<UserId>,
    /// `GET /api/v1/channels/{id}` only: the members' presence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presence: Vec<Presence>,
}

/// A user's read position in a channel and what it leaves unread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadState {
    pub channel_id: ChannelId,
    /// The last message read.
    pub message_id: MessageId,
    /// Top-level messages by others after the cursor.
    pub unread: i64,
    /// Of those, the ones that mention the user.
    pub unread_mentions: i64,
}

/// A message; deleted messages remain as tombstones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub id: MessageId,
    pub channel_id: ChannelId,
    pub author_id: UserId,
    pub text: String,
    /// The root message when this is a thread reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub thread_id: Option<MessageId>,
    pub mentions: Vec<UserId>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub edited_at: Option<Timestamp>,
    pub deleted: bool,
    /// Replies in this message's thread (0 for replies themselves and for messages
    /// nobody replied to). Deleted replies are not counted.
    pub reply_count: i64,
    /// When the latest (not deleted) reply was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub last_reply_at: Option<Timestamp>,
    /// One entry per emoji, in the order the emoji were first used.
    pub reactions: Vec<ReactionSummary>,
    /// Whether the message is pinned in its channel.
    pub pinned: bool,
    /// `streaming` while its author appends to it; see [`MessageState`].
    #[serde(default)]
    pub state: MessageState,
    /// For a streamed message: the `seq` of the last roll-up its `text` includes (the
    /// last delta it was sent in). Absent (0) for messages never streamed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// What the agents it woke reported about it, one entry per agent that reported,
    /// oldest report first (empty when none).
    #[serde(default)]
    pub receipts: Vec<Receipt>,
    /// `action` for a `/me` message; absent for plain text.
    #[serde(default, skip_serializing_if = "MessageKind::is_text")]
    pub kind: MessageKind,
}

/// One agent's latest receipt for a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipt {
    pub user_id: UserId,
    pub state: ReceiptState,
    pub updated_at: Timestamp,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactionSummary {
    pub emoji: String,
    pub count: i64,
    /// Who reacted with this emoji, in the order they did.
    pub user_ids: Vec<UserId>,
}

/// A pinned message of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pin {
    pub channel_id: ChannelId,
    pub message: Message,
    pub pinned_by: UserId,
    pub pinned_at: Timestamp,
}

/// Where `POST /api/v1/publish` put an event; no offset for ephemeral events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Published {
    pub scope: String,
    /// `null` for an ephemeral event.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub offset: Option<u64>,
}

/// One node of a multi-node deployment, as its heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStat {
    pub id: String,
    /// WebSocket connections on that node at its last heartbeat.
    pub connections: u64,
    /// The node that answered.
    pub this: bool,
}

/// One event queued for an agent's `webhook_url`, with every attempt made so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    pub id: i64,
    /// The agent it is for.
    pub user_id: UserId,
    /// The event's id: the `id` of the signed body, by which receivers deduplicate
    /// (also sent, unsigned, as `Chorus-Event-Id`).
    pub event_id: String,
    pub url: String,
    pub status: WebhookStatus,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (pending deliveries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub next_attempt_at: Option<Timestamp>,
    /// The latest failure, if any (shown to server admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    /// When it was delivered or given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub finished_at: Option<Timestamp>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<WebhookAttempt>,
}

/// One POST of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookAttempt {
    /// 1 for the first attempt.
    pub attempt: i64,
    pub at: Timestamp,
    /// The receiver's HTTP status, when it answered (shown to server admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub status_code: Option<i64>,
    /// Why the attempt failed (non-2xx status, timeout, connection error, refused
    /// target); shown to server admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// Every HTTP error's body: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// One of `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `rate_limited`, `unavailable`, `internal`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: ErrorCode,
    pub message: String,
}

/// A slash command registered in a workspace: `/name args` typed in one of its
/// channels is delivered as a `command.invoked` event to `target_user_id` (an agent:
/// on its socket, or by its webhook when it has no connection) or POSTed to
/// `webhook_url`, signed with the command's own secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Command {
    pub id: CommandId,
    pub workspace_id: WorkspaceId,
    /// `[a-z][a-z0-9_-]{0,31}`, typed after the slash.
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub target_user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub webhook_url: Option<String>,
    /// The signing secret of a `webhook_url` command: only in the answer to its
    /// registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub webhook_secret: Option<String>,
    pub created_by: UserId,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_and_ids_parse_as_on_the_wire() {
        assert_eq!("on_duty".parse::<Policy>(), Ok(Policy::OnDuty));
        assert!("boss".parse::<Role>().is_err());
        assert_eq!("42".parse::<ChannelId>(), Ok(ChannelId(42)));
        assert_eq!(
            serde_json::to_string(&Policy::RoundRobin).ok().as_deref(),
            Some("\"round_robin\"")
        );
    }

    #[test]
    fn timestamps_are_rfc3339_to_the_millisecond() {
        let ts = Timestamp(1_735_689_600_123);
        let json = serde_json::to_string(&ts).expect("serializes");
        assert_eq!(json, "\"2025-01-01T00:00:00.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).ok(), Some(ts));
    }

    #[test]
    fn user_views_tell_full_records_from_profiles() {
        let profile = r#"{"id":7,"name":"bot","display_name":"Bot","kind":"agent",
            "status_text":"","created_at":"2025-01-01T00:00:00Z"}"#;
        let view: UserView = serde_json::from_str(profile).expect("valid profile");
        assert!(matches!(view, UserView::Profile(ref p) if p.name == "bot"));
        let full = r#"{"id":7,"name":"bot","display_name":"Bot","kind":"agent",
            "webhook_url":"http://h/x","status_text":"","is_admin":false,
            "created_at":"2025-01-01T00:00:00Z"}"#;
        let view: UserView = serde_json::from_str(full).expect("valid user");
        assert!(matches!(view, UserView::Full(ref u) if u.webhook_url.is_some()));
        assert_eq!(view.profile().id, UserId(7));
    }

    #[test]
    fn a_new_token_flattens_its_listing_beside_the_secret() {
        let json = r#"{"id":4,"name":"ci","created_at":"2025-01-01T00:00:00Z",
            "expires_at":"2025-01-02T00:00:00Z","token":"chr_x"}"#;
        let created: NewApiToken = serde_json::from_str(json).expect("valid token");
        assert_eq!(created.info.id, TokenId(4));
        assert_eq!(created.info.last_used_at, None);
        assert_eq!(created.token, "chr_x");
    }

    #[test]
    fn channel_views_flatten() {
        let json = r#"{"id":3,"workspace_id":1,"name":"general","topic":"","kind":"public",
            "policy":"all","created_by":2,"created_at":"2025-01-01T00:00:00Z","member":true,
            "unread":4,"unread_mentions":0}"#;
        let view: ChannelView = serde_json::from_str(json).expect("valid view");
        assert_eq!(view.channel.id, ChannelId(3));
        assert_eq!(view.unread, 4);
        assert!(view.member_ids.is_empty());
    }
}

// ---- Server keys ---------------------------------------------------------------------

/// A server key's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
#[serde(transparent)]
pub struct ServerKeyId(pub i64);

impl std::fmt::Display for ServerKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a server key may do. Nothing else: every user route refuses a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KeyPermission {
    /// `POST /api/v1/publish` (within the key's prefixes, when it has any).
    #[serde(rename = "publish")]
    Publish,
    /// `GET /api/v1/realtime/stats`.
    #[serde(rename = "stats:read")]
    StatsRead,
    /// `POST /api/v1/proxy/sessions/revoke`: close an application user's sockets that
    /// the connect proxy authenticated (at logout).
    #[serde(rename = "sessions:revoke")]
    SessionsRevoke,
}

/// A server key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerKey {
    pub id: ServerKeyId,
    pub name: String,
    pub permissions: Vec<KeyPermission>,
    /// Scopes it may publish to start with one of these; `None`: any scope.
    pub publish_prefixes: Option<Vec<String>>,
    pub created_at: Timestamp,
}

/// A new server key with its secret: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedServerKey {
    pub id: ServerKeyId,
    pub name: String,
    pub permissions: Vec<KeyPermission>,
    pub publish_prefixes: Option<Vec<String>>,
    pub created_at: Timestamp,
    /// `chk_…`; shown once, only its hash is stored.
    pub key: String,
}

/// `GET /healthz` and `GET /readyz`: `ok`, `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
}

impl KeyPermission {
    /// The name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::StatsRead => "stats:read",
            Self::SessionsRevoke => "sessions:revoke",
        }
    }
}

impl ServerKey {
    pub fn may(&self, permission: KeyPermission) -> bool {
        self.permissions.contains(&permission)
    }
}
