//! The JSON shapes of the HTTP API as a client sees them: responses, request bodies and
//! newtype ids. They mirror the server's serialization; this crate never imports it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! id_type {
    ($($(#[$meta:meta])* $name:ident),*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    TokenId
);

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Who is woken by a message in a channel (agent-aware delivery).
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

/// A user's full record, as the user themself and server admins see it
/// (`GET /api/v1/me`, user creation). Timestamps are RFC 3339 strings, as on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub display_name: String,
    pub kind: UserKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    pub status_text: String,
    /// Server administrator (may create users, publish to any scope).
    pub is_admin: bool,
    pub created_at: String,
    /// When a server admin deactivated the user; absent while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<String>,
}

/// A user as others see them (workspace members, `workspace.member_joined`): no
/// webhook, no admin flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    pub id: UserId,
    pub name: String,
    pub display_name: String,
    pub kind: UserKind,
    pub status_text: String,
    pub created_at: String,
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

/// `GET /api/v1/users/{id}`: the full record for the caller themself and for server
/// admins, the profile for anyone else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A new user and its first API token (shown once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserWithToken {
    pub user: User,
    pub token: String,
    /// For an agent created with a `webhook_url`: the secret its webhook requests are
    /// signed with (shown once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// One of a user's API tokens as listed: never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: TokenId,
    pub name: String,
    pub created_at: String,
    /// When it stops working; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it was last used, to within about a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// A new API token: its listing and the secret (shown this once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewApiToken {
    #[serde(flatten)]
    pub info: ApiToken,
    /// The secret (`chr_…`).
    pub token: String,
}

/// A list of users: a channel's on-duty or wake list, a workspace's observers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIds {
    pub user_ids: Vec<UserId>,
}

/// A workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub created_by: UserId,
    pub created_at: String,
}

/// A workspace with the caller's role in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceMembership {
    #[serde(flatten)]
    pub workspace: Workspace,
    pub role: Role,
}

/// A workspace member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserProfile,
    pub role: Role,
}

/// A channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub id: ChannelId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub topic: String,
    pub kind: ChannelKind,
    pub policy: Policy,
    pub created_by: UserId,
    pub created_at: String,
}

/// A channel as the caller sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelView {
    #[serde(flatten)]
    pub channel: Channel,
    /// Whether the caller is a member.
    pub member: bool,
    /// Top-level messages after the caller's read cursor.
    pub unread: i64,
    /// The members (for DMs and single-channel reads; empty in listings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_ids: Vec<UserId>,
}

/// A message; deleted messages remain as tombstones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub channel_id: ChannelId,
    pub author_id: UserId,
    pub text: String,
    /// The root message when this is a thread reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<MessageId>,
    pub mentions: Vec<UserId>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    pub deleted: bool,
}

/// Where `publish` put an event; no offset for ephemeral events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub scope: String,
    pub offset: Option<u64>,
}

/// `POST /api/v1/users` (admin token).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateUser {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub kind: UserKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// An agent's webhook signing secret; the server makes one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Make the user a server administrator.
    pub admin: bool,
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

/// `POST /api/v1/users/{id}/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateToken {
    /// What the token is for (1 to 64 bytes).
    pub name: String,
    /// Seconds until it stops working; never when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
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

/// `GET /api/v1/users` query (server admins): a page of users by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsersQuery {
    /// Users with a greater id (the last id of the previous page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<UserId>,
    /// Page size (server default 50, at most 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `POST /api/v1/workspaces/{id}/members`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddMember {
    pub user_id: UserId,
    pub role: Role,
}

/// `PATCH /api/v1/workspaces/{id}/members/{user_id}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SetRole {
    pub role: Role,
}

/// `POST /api/v1/workspaces/{id}/channels`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateChannel {
    pub name: String,
    pub kind: ChannelKind,
    /// The server's default (`all`) when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Initial members besides the creator.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_ids: Vec<UserId>,
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
        }
    }
}

/// `PATCH /api/v1/channels/{id}`: only the fields that are set change.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateChannel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// `POST /api/v1/channels/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendMessage {
    pub text: String,
    /// Reply in the thread of this top-level message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<MessageId>,
}

impl SendMessage {
    /// A top-level message.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            thread_id: None,
        }
    }
}

/// `GET /api/v1/channels/{id}/messages` query; all fields optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistoryQuery {
    /// Messages with ids below this one (paging back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<MessageId>,
    /// Messages with ids above this one (catching up forward).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<MessageId>,
    /// Page size (server default 50, at most 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The replies of this thread instead of the top-level messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<MessageId>,
}

/// `POST /api/v1/publish` (admin / server token).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Publish {
    /// Any scope, e.g. `topic:deploys`.
    pub scope: String,
    /// The event type, 1 to 64 bytes.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    /// Ephemeral events get no offset and are not retained for resume.
    pub ephemeral: bool,
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
            "policy":"all","created_by":2,"created_at":"2025-01-01T00:00:00Z","member":true,"unread":4}"#;
        let view: ChannelView = serde_json::from_str(json).expect("valid view");
        assert_eq!(view.channel.id, ChannelId(3));
        assert_eq!(view.unread, 4);
        assert!(view.member_ids.is_empty());
    }
}
