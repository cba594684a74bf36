//! Event payloads: the `data` of each event type the server publishes (`docs/protocol.md`,
//! "Event types"), and [`Event`], the catalogue that pairs each type with its payload.
//! The server publishes these structs; clients decode them. The frame around them
//! (`op`, `scope`, `offset`, `wake`) is `chorus-proto`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{
    Channel, ChannelId, CommandId, Message, MessageId, Pin, Presence, ReadState, Receipt,
    ReceiptState, Role, Timestamp, TokenId, UserId, UserProfile, Workspace, WorkspaceId,
};

/// `message.deltas`: text appended to streaming messages during one roll-up window —
/// one entry for each message of the channel (or of one thread: `thread_id`) that grew
/// in the window, so a hundred replies streaming at once reach each reader as one frame
/// a window, not a hundred. Ephemeral (never replayed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageDeltas {
    pub channel_id: ChannelId,
    /// The thread the messages reply in; absent for top-level messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub thread_id: Option<MessageId>,
    pub deltas: Vec<MessageDelta>,
}

/// One message's part of a [`MessageDeltas`]: `seq` counts a message's deltas from 1
/// without gaps, so a reader that sees a gap (or joins mid-stream) fetches the message,
/// whose `seq` says which deltas its `text` already includes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageDelta {
    pub id: MessageId,
    pub seq: u64,
    /// The text to add to the end of the message.
    pub text: String,
}

/// `message.aborted`: a stream ended without completing; `message` holds the text
/// appended until then (state `aborted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageAborted {
    pub message: Message,
    /// The author's reason, `idle` (no append for the idle timeout), `cancelled`, or
    /// `author_left` (the author is no longer a member of the channel).
    pub reason: String,
}

/// `channel.loop_guard`: agents stopped being woken in a channel (`state: "held"`,
/// `reason`: `agent_messages`, too many agent messages without a person's in between,
/// or `per_minute`), or are woken again (`state: "released"`, `reason: "person_wrote"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoopGuard {
    pub channel_id: ChannelId,
    pub state: String,
    pub reason: String,
}

/// `receipt.updated`, on the channel's scope: an agent the message woke reported what
/// it does with it; `receipts` is the message's whole summary after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptUpdated {
    pub channel_id: ChannelId,
    pub message_id: MessageId,
    pub user_id: UserId,
    pub state: ReceiptState,
    pub receipts: Vec<Receipt>,
}

/// `turn.passed`, on the channel's scope: under `round_robin`, the agent a message woke
/// (`from`) did not report `working` within the channel's turn timeout, so the next
/// agent (`to`) is woken instead (the event's `wake` is `true` for it); `to` is `null`
/// when no agent is left to pass to: every agent has had its turn at the message, or
/// none of those left may still read the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TurnPassed {
    pub channel_id: ChannelId,
    pub message_id: MessageId,
    /// The thread's root, when the message is a reply (to read it: the thread's history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub thread_id: Option<MessageId>,
    pub from: UserId,
    pub to: Option<UserId>,
}

/// `turn.cancelled`, on the channel's scope (`wake: true` for the agent, which gets it
/// by webhook instead when it has one and is not connected): `by` cancelled the turn
/// of `agent_id` at `message_id`; the agent stops, and its streaming reply is aborted
/// (`message.aborted`, reason `cancelled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TurnCancelled {
    pub channel_id: ChannelId,
    pub message_id: MessageId,
    /// The thread's root, when the message is a reply (to read it: the thread's history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub thread_id: Option<MessageId>,
    pub agent_id: UserId,
    pub by: UserId,
}

/// `message.deleted`: the message remains as a tombstone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageDeleted {
    pub id: MessageId,
    pub channel_id: ChannelId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub thread_id: Option<MessageId>,
}

/// `mention.created`, on the user scope of each mentioned user who may read the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MentionCreated {
    pub message: Message,
    pub channel_id: ChannelId,
}

/// `channel.joined`, on the joining user's scope (which is then subscribed to the
/// channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelJoined {
    pub channel: Channel,
    pub user_id: UserId,
    /// DMs: the participants (absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_ids: Vec<UserId>,
}

/// `channel.left` (user scope), `member.joined` and `member.left` (channel scope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembershipChange {
    pub channel_id: ChannelId,
    pub user_id: UserId,
}

/// `member.left` on a workspace's scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceMemberLeft {
    pub workspace_id: WorkspaceId,
    pub user_id: UserId,
}

/// `member.left`: a channel's member on the channel's scope, a workspace's on the
/// workspace's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum MemberLeft {
    Channel(MembershipChange),
    Workspace(WorkspaceMemberLeft),
}

/// `workspace.joined`, on the new member's scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceJoined {
    pub workspace: Workspace,
    pub role: Role,
}

/// `workspace.member_joined`, on the workspace's scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceMemberJoined {
    pub workspace_id: WorkspaceId,
    pub user: UserProfile,
    pub role: Role,
}

/// `member.role_changed`, on the workspace's scope and the member's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleChanged {
    pub workspace_id: WorkspaceId,
    pub user_id: UserId,
    pub role: Role,
}

/// `workspace.left`, on the removed member's scope: `channel.left` follows for each of
/// the workspace's channels they were in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceLeft {
    pub workspace_id: WorkspaceId,
}

/// `subscription.revoked`, on the revoked scope (no offset): the user may no longer
/// read it, so the server ended the subscription. `reason`: `channel_left`,
/// `workspace_left`, `role_changed`. (Written by the realtime engine.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionRevoked {
    pub scope: String,
    pub reason: String,
}

/// `credentials.revoked`, on the user's scope, just before the server closes the
/// connections opened with those credentials (3502): `token_id` for a revoked token
/// (only the sockets it opened close), none for a deactivated user (all of them
/// close) or for an application's logout (`POST /api/v1/proxy/sessions/revoke`: the
/// sockets the connect proxy authenticated before it close; one authenticated since
/// receives the event and stays open). `reason`: `token_revoked`, `deactivated`,
/// `session_revoked`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialsRevoked {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub token_id: Option<TokenId>,
}

/// `reaction.added` and `reaction.removed`, on the channel's scope (and the thread's,
/// for a reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactionChanged {
    pub message_id: MessageId,
    pub channel_id: ChannelId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub thread_id: Option<MessageId>,
    pub emoji: String,
    pub user_id: UserId,
}

/// `message.unpinned`, on the channel's scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unpinned {
    pub channel_id: ChannelId,
    pub message_id: MessageId,
    pub user_id: UserId,
}

/// `typing`, on the channel's scope (ephemeral).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Typing {
    pub channel_id: ChannelId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub thread_id: Option<MessageId>,
    pub user_id: UserId,
    /// Clients drop the indicator after this long without a new signal; there is no
    /// "stopped typing" event.
    pub expires_in_ms: u64,
}

/// `presence.batch`, on a workspace's scope (ephemeral): several changes coalesced
/// during a burst (connect storms), grouped by state: each group is the same
/// `presence.updated` for each of its users. Users coming online together share their
/// `last_seen` (their coming online is recorded by one write), so a storm's entry per
/// user is its id, not a whole presence: a batch is sent to every connection of the
/// workspace, and a storm of N users sends about N²/2 entries in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceBatch {
    pub groups: Vec<PresenceGroup>,
}

/// Users of a [`PresenceBatch`] in the same state: a [`Presence`] with a list of users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceGroup {
    /// Ascending, each user in one group of the batch.
    pub user_ids: Vec<UserId>,
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub last_seen: Option<Timestamp>,
    pub status_text: String,
}

impl PresenceBatch {
    /// Groups `presences` (one per user) by state; groups in the order of their first
    /// user, users ascending within a group when `presences` is sorted by user.
    pub fn grouped(presences: impl IntoIterator<Item = Presence>) -> Self {
        let mut groups: Vec<PresenceGroup> = Vec::new();
        let mut index: BTreeMap<(bool, Option<Timestamp>, String), usize> = BTreeMap::new();
        for p in presences {
            let key = (p.online, p.last_seen, p.status_text);
            match index.get(&key) {
                Some(&i) => groups[i].user_ids.push(p.user_id),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push(PresenceGroup {
                        user_ids: vec![p.user_id],
                        online: key.0,
                        last_seen: key.1,
                        status_text: key.2,
                    });
                }
            }
        }
        Self { groups }
    }

    /// Each user's presence, as that many `presence.updated`.
    pub fn presences(&self) -> impl Iterator<Item = Presence> + '_ {
        self.groups.iter().flat_map(|g| {
            g.user_ids.iter().map(|&user_id| Presence {
                user_id,
                online: g.online,
                last_seen: g.last_seen,
                status_text: g.status_text.clone(),
            })
        })
    }
}

/// `channel.on_duty_updated` and `channel.wake_list_updated`, on the channel's scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelListChanged {
    pub channel_id: ChannelId,
    pub user_ids: Vec<UserId>,
}

/// `workspace.observers_updated`, on the workspace's scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObserversChanged {
    pub workspace_id: WorkspaceId,
    pub user_ids: Vec<UserId>,
}

/// `command.result`, ephemeral, on the author's own scope (only their connections):
/// the answer to a slash command they typed in `channel_id`. It is also the body of
/// the send's `200` answer when the command succeeded; a refused command answers the
/// send with its error (the same `code`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandResult {
    pub channel_id: ChannelId,
    /// The command's name, without the slash.
    pub command: String,
    pub ok: bool,
    /// What happened, for people (`topic set`, `sent to @deploy-bot`, the refusal).
    pub text: String,
    /// The error code when `ok` is false (`unknown_command`, `forbidden`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub code: Option<String>,
    /// The message the command posted (`/me`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub message: Option<Message>,
}

/// `command.invoked`: someone typed a registered command. On the target agent's own
/// scope (`wake: true`), or POSTed to the command's `webhook_url` (or to the agent's
/// webhook when it has no connection). Nothing is posted in the channel unless the
/// target answers there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandInvoked {
    /// This invocation's id (also the webhook's `Chorus-Event-Id`).
    pub id: String,
    pub command_id: CommandId,
    /// The command's name, without the slash.
    pub command: String,
    /// What followed the name, trimmed.
    pub args: String,
    pub workspace_id: WorkspaceId,
    pub channel_id: ChannelId,
    /// The thread it was typed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub thread_id: Option<MessageId>,
    /// Who typed it.
    pub user_id: UserId,
}

/// Every event type the server publishes with its payload: `type` and `data` as an
/// event frame carries them. Events published through `POST /api/v1/publish` have
/// types of their publisher's choosing and are not here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "message.created")]
    MessageCreated(Message),
    #[serde(rename = "message.updated")]
    MessageUpdated(Message),
    #[serde(rename = "message.deleted")]
    MessageDeleted(MessageDeleted),
    #[serde(rename = "message.deltas")]
    MessageDeltas(MessageDeltas),
    #[serde(rename = "message.completed")]
    MessageCompleted(Message),
    #[serde(rename = "message.aborted")]
    MessageAborted(MessageAborted),
    #[serde(rename = "receipt.updated")]
    ReceiptUpdated(ReceiptUpdated),
    #[serde(rename = "turn.passed")]
    TurnPassed(TurnPassed),
    #[serde(rename = "turn.cancelled")]
    TurnCancelled(TurnCancelled),
    #[serde(rename = "message.pinned")]
    MessagePinned(Pin),
    #[serde(rename = "message.unpinned")]
    MessageUnpinned(Unpinned),
    #[serde(rename = "reaction.added")]
    ReactionAdded(ReactionChanged),
    #[serde(rename = "reaction.removed")]
    ReactionRemoved(ReactionChanged),
    #[serde(rename = "mention.created")]
    MentionCreated(MentionCreated),
    #[serde(rename = "read.updated")]
    ReadUpdated(ReadState),
    #[serde(rename = "typing")]
    Typing(Typing),
    #[serde(rename = "channel.created")]
    ChannelCreated(Channel),
    #[serde(rename = "channel.updated")]
    ChannelUpdated(Channel),
    #[serde(rename = "channel.loop_guard")]
    ChannelLoopGuard(LoopGuard),
    #[serde(rename = "channel.joined")]
    ChannelJoined(ChannelJoined),
    #[serde(rename = "channel.left")]
    ChannelLeft(MembershipChange),
    #[serde(rename = "channel.on_duty_updated")]
    OnDutyUpdated(ChannelListChanged),
    #[serde(rename = "channel.wake_list_updated")]
    WakeListUpdated(ChannelListChanged),
    #[serde(rename = "member.joined")]
    MemberJoined(MembershipChange),
    #[serde(rename = "member.left")]
    MemberLeft(MemberLeft),
    #[serde(rename = "member.role_changed")]
    RoleChanged(RoleChanged),
    #[serde(rename = "workspace.joined")]
    WorkspaceJoined(WorkspaceJoined),
    #[serde(rename = "workspace.member_joined")]
    WorkspaceMemberJoined(WorkspaceMemberJoined),
    #[serde(rename = "workspace.left")]
    WorkspaceLeft(WorkspaceLeft),
    #[serde(rename = "workspace.observers_updated")]
    ObserversUpdated(ObserversChanged),
    #[serde(rename = "presence.updated")]
    PresenceUpdated(Presence),
    #[serde(rename = "presence.batch")]
    PresenceBatch(PresenceBatch),
    #[serde(rename = "subscription.revoked")]
    SubscriptionRevoked(SubscriptionRevoked),
    /// On a topic whose namespace has `join_leave = true`: a connection subscribed.
    #[serde(rename = "subscriber.joined")]
    SubscriberJoined(crate::requests::TopicSubscriber),
    /// On a topic whose namespace has `join_leave = true`: a connection stopped being
    /// subscribed (unsubscribed, revoked or disconnected).
    #[serde(rename = "subscriber.left")]
    SubscriberLeft(crate::requests::TopicSubscriber),
    #[serde(rename = "credentials.revoked")]
    CredentialsRevoked(CredentialsRevoked),
    #[serde(rename = "command.result")]
    CommandResult(CommandResult),
    #[serde(rename = "command.invoked")]
    CommandInvoked(CommandInvoked),
}

/// The families of the event types the server publishes (the part of a type before its
/// first `.`): every type of [`Event`], the Rust client's own `resume.gap`, and room for
/// more of each. Clients' SDKs act on these (a `subscription.revoked` ends a
/// subscription, a `channel.left` forgets a scope), so nobody else may publish one: not a
/// client's `publish`, not `POST /api/v1/publish`.
pub const SERVER_TYPE_FAMILIES: [&str; 16] = [
    "channel",
    "command",
    "credentials",
    "member",
    "mention",
    "message",
    "presence",
    "reaction",
    "read",
    "receipt",
    "resume",
    "subscriber",
    "subscription",
    "turn",
    "typing",
    "workspace",
];

impl Event {
    /// Whether an event of type `kind` can only come from the server: its family (the
    /// part before the first `.`, in any case) is one of [`SERVER_TYPE_FAMILIES`].
    pub fn is_servers(kind: &str) -> bool {
        let family = kind.split_once('.').map_or(kind, |(family, _)| family);
        SERVER_TYPE_FAMILIES
            .iter()
            .any(|f| f.eq_ignore_ascii_case(family))
    }

    /// Decodes an event frame's `type` and `data`; `None` for a type not in the
    /// catalogue (e.g. one published through `POST /api/v1/publish`) or a payload
    /// that does not match its type.
    pub fn decode(kind: &str, data: &serde_json::Value) -> Option<Self> {
        let tagged = serde_json::json!({ "type": kind, "data": data });
        serde_json::from_value(tagged).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type of the catalogue is the server's (read from this file's `rename`s, so
    /// a new event cannot be left out), and the types applications publish are not.
    #[test]
    fn every_catalogue_type_is_the_servers() {
        let source = include_str!("events.rs");
        let start = source.find("pub enum Event {").expect("the catalogue");
        let end = start + source[start..].find("\n}").expect("its end");
        let types: Vec<&str> = source[start..end]
            .split("rename = \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(types.len() > 30, "{types:?}");
        for kind in types {
            assert!(Event::is_servers(kind), "{kind}");
        }
        for kind in ["Message.created", "typing", "resume.gap", "subscription.x"] {
            assert!(Event::is_servers(kind), "{kind}");
        }
        for kind in ["said", "order.created", "messages", "typing-indicator", "t"] {
            assert!(!Event::is_servers(kind), "{kind}");
        }
    }

    /// A batch groups users by state and stands for exactly the presences it was made
    /// of: nobody lost, added or changed.
    #[test]
    fn a_presence_batch_groups_users_by_state_and_gives_them_back() {
        let p = |user: i64, online: bool, at: Option<i64>, text: &str| Presence {
            user_id: UserId(user),
            online,
            last_seen: at.map(Timestamp),
            status_text: text.to_owned(),
        };
        let presences = vec![
            p(1, true, Some(10), ""),
            p(2, true, Some(10), ""),
            p(3, false, Some(10), ""),
            p(4, true, Some(11), ""),
            p(5, true, Some(10), "away"),
            p(6, true, Some(10), ""),
            p(7, false, None, ""),
        ];
        let batch = PresenceBatch::grouped(presences.clone());
        let users: Vec<Vec<i64>> = batch
            .groups
            .iter()
            .map(|g| g.user_ids.iter().map(|u| u.0).collect())
            .collect();
        assert_eq!(users, [vec![1, 2, 6], vec![3], vec![4], vec![5], vec![7]]);
        let mut back: Vec<Presence> = batch.presences().collect();
        back.sort_by_key(|p| p.user_id);
        assert_eq!(back, presences);

        let json = serde_json::to_value(&batch).unwrap_or_default();
        assert_eq!(
            json["groups"][0],
            serde_json::json!({"user_ids": [1, 2, 6], "online": true,
                "last_seen": serde_json::to_value(Timestamp(10)).unwrap_or_default(),
                "status_text": ""})
        );
        assert!(
            json["groups"][4].get("last_seen").is_none(),
            "never connected"
        );
    }

    #[test]
    fn events_decode_by_type() {
        let data = serde_json::json!({"channel_id": 3, "user_id": 4});
        assert_eq!(
            Event::decode("member.left", &data),
            Some(Event::MemberLeft(MemberLeft::Channel(MembershipChange {
                channel_id: ChannelId(3),
                user_id: UserId(4),
            })))
        );
        let data = serde_json::json!({"workspace_id": 1, "user_id": 4});
        assert!(matches!(
            Event::decode("member.left", &data),
            Some(Event::MemberLeft(MemberLeft::Workspace(_)))
        ));
        assert_eq!(Event::decode("deploy.finished", &data), None);
    }
}
