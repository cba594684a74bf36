//! Domain types, serialized as the HTTP API and event payloads show them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! id_type {
    ($($name:ident),*) => {$(
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

id_type!(UserId, WorkspaceId, ChannelId, MessageId, TokenId);

/// Milliseconds since the Unix epoch; serialized as an RFC 3339 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ToSchema)]
#[schema(value_type = String, format = DateTime)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        Self(ms as i64)
    }

    /// The time `clock` reads now (what the service uses instead of [`now`](Self::now)).
    pub fn at(clock: &chorus_realtime::Clock) -> Self {
        Self(clock.now_ms())
    }

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
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)*
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub display_name: String,
    pub kind: UserKind,
    /// An agent's webhook (may carry a secret in its query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    pub status_text: String,
    /// Server administrator (may create users, publish to any scope).
    pub is_admin: bool,
    pub created_at: Timestamp,
    /// When a server admin deactivated the user (absent while active): their tokens
    /// are refused, their sockets were closed, their messages stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<Timestamp>,
}

/// One of a user's API tokens, as listed: never the secret, never its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: TokenId,
    pub name: String,
    pub created_at: Timestamp,
    /// When it stops working (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// When it was last used, to within about a minute (absent: not yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
}

/// A user as others see them: no webhook, no admin flag. Every response or event that
/// shows one user to another carries this, never a [`User`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum UserView {
    Full(User),
    Profile(UserProfile),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub created_by: UserId,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceMembership {
    #[serde(flatten)]
    pub workspace: Workspace,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub user: UserProfile,
    pub role: Role,
    pub presence: Presence,
}

/// A user's presence as the server computes it: `online` while the user has a live
/// connection (a short grace after the last one closes), never a client's say-so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Presence {
    pub user_id: UserId,
    pub online: bool,
    /// When the user's last connection closed; for an online user, when they came
    /// online. Absent for a user who never connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    pub status_text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Channel {
    pub id: ChannelId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub topic: String,
    pub kind: ChannelKind,
    pub policy: Policy,
    pub created_by: UserId,
    pub created_at: Timestamp,
}

/// A channel as the caller sees it in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    pub last_read: Option<MessageId>,
    /// For DMs (and `GET /api/v1/channels/{id}`): the participants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_ids: Vec<UserId>,
    /// `GET /api/v1/channels/{id}` only: the members' presence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presence: Vec<Presence>,
}

/// A user's read position in a channel and what it leaves unread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReadState {
    pub channel_id: ChannelId,
    /// The last message read.
    pub message_id: MessageId,
    /// Top-level messages by others after the cursor.
    pub unread: i64,
    /// Of those, the ones that mention the user.
    pub unread_mentions: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub channel_id: ChannelId,
    pub author_id: UserId,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<MessageId>,
    pub mentions: Vec<UserId>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Timestamp>,
    pub deleted: bool,
    /// Replies in this message's thread (0 for replies themselves and for messages
    /// nobody replied to). Deleted replies are not counted.
    pub reply_count: i64,
    /// When the latest (not deleted) reply was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply_at: Option<Timestamp>,
    /// One entry per emoji, in the order the emoji were first used.
    pub reactions: Vec<ReactionSummary>,
    /// Whether the message is pinned in its channel.
    pub pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReactionSummary {
    pub emoji: String,
    pub count: i64,
    /// Who reacted with this emoji, in the order they did.
    pub user_ids: Vec<UserId>,
}

/// A pinned message of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pin {
    pub channel_id: ChannelId,
    pub message: Message,
    pub pinned_by: UserId,
    pub pinned_at: Timestamp,
}

/// Checks a user name: `[a-z0-9_.-]{1,32}`.
pub fn valid_user_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Checks a reaction's emoji: 1 to 64 bytes, no whitespace or control characters. The
/// text is otherwise free (a Unicode emoji, or a `:shortcode:`).
pub fn valid_emoji(emoji: &str) -> bool {
    (1..=64).contains(&emoji.len())
        && !emoji
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible_format(c))
}

/// Bidirectional overrides and similar: invisible characters that would let two
/// reactions look alike or reorder the text around them.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks a channel name: `[a-z0-9_-]{1,80}`.
pub fn valid_channel_name(name: &str) -> bool {
    (1..=80).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// One event queued for an agent's `webhook_url`, with every attempt made so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    pub id: i64,
    /// The agent it is for.
    pub user_id: UserId,
    /// The event's id, also sent as `Chorus-Event-Id`: receivers deduplicate by it.
    pub event_id: String,
    pub url: String,
    pub status: WebhookStatus,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (pending deliveries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// The latest failure, if any (shown to server admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    /// When it was delivered or given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<WebhookAttempt>,
}

/// One POST of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookAttempt {
    /// 1 for the first attempt.
    pub attempt: i64,
    pub at: Timestamp,
    /// The receiver's HTTP status, when it answered (shown to server admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    /// Why the attempt failed (non-2xx status, timeout, connection error, refused
    /// target); shown to server admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: i64,
}
