// JSON shapes of the HTTP API and of event payloads, mirrored from
// crates/chorus-chat/src/model.rs and the request structs of chorus-chat's service.
// Ids are plain numbers (i64 on the server, always below 2^53 in practice).
// Timestamps are RFC 3339 strings, as on the wire.

export type UserId = number;
export type WorkspaceId = number;
export type ChannelId = number;
export type MessageId = number;
export type TokenId = number;

export type UserKind = 'human' | 'agent';
export type Role = 'owner' | 'admin' | 'member' | 'guest';
export type ChannelKind = 'public' | 'private' | 'dm';
/** Who is woken by a message in a channel (SPEC §4). */
export type Policy = 'all' | 'mentions' | 'broadcast' | 'on_duty' | 'custom' | 'round_robin' | 'dm';

/** A user's full record: only the user themself and server admins are shown it
 * (`me()`, user creation, `user()` of oneself). */
export interface User {
  id: UserId;
  name: string;
  display_name: string;
  kind: UserKind;
  webhook_url?: string;
  status_text: string;
  /** Server administrator (may create users, publish to any scope). */
  is_admin: boolean;
  created_at: string;
  /** When a server admin deactivated the user; absent while active (newer servers). */
  deactivated_at?: string;
}

/** A user as others see them (workspace members, `workspace.member_joined`,
 * `user()` of someone else): no webhook, no admin flag. */
export interface UserProfile {
  id: UserId;
  name: string;
  display_name: string;
  kind: UserKind;
  status_text: string;
  created_at: string;
}

/** `GET /api/v1/users/{id}`: the full record for oneself (and for a server admin), the
 * profile for anyone else; `'is_admin' in view` tells them apart. */
export type UserView = User | UserProfile;

/** A new user and its token (shown once). */
export interface UserWithToken {
  user: User;
  token: string;
  /** For an agent created with a `webhook_url`: its webhook signing secret (shown once). */
  webhook_secret?: string;
}

/** One of a user's API tokens as listed: never the secret. */
export interface ApiToken {
  id: TokenId;
  name: string;
  created_at: string;
  /** When it stops working; absent: never. */
  expires_at?: string;
  /** When it was last used, to within about a minute. */
  last_used_at?: string;
}

/** A new API token: its listing and the secret (`token`, shown this once). */
export interface NewApiToken extends ApiToken {
  token: string;
}

export interface Workspace {
  id: WorkspaceId;
  name: string;
  created_by: UserId;
  created_at: string;
}

/** A workspace with the caller's role in it (the server flattens the two). */
export interface WorkspaceMembership extends Workspace {
  role: Role;
}

/** Computed by the server from live connections, never set by a client. */
export interface Presence {
  user_id: UserId;
  online: boolean;
  last_seen?: string;
  status_text: string;
}

export interface Member {
  user: UserProfile;
  role: Role;
  /** Newer servers only. */
  presence?: Presence;
}

export interface Channel {
  id: ChannelId;
  workspace_id: WorkspaceId;
  name: string;
  topic: string;
  kind: ChannelKind;
  policy: Policy;
  created_by: UserId;
  created_at: string;
}

/** A channel as the caller sees it in a listing (the server flattens the channel). */
export interface ChannelView extends Channel {
  /** Whether the caller is a member. */
  member: boolean;
  /** Top-level messages after the caller's read cursor (0 when not a member). */
  unread: number;
  /** Newer servers only: of those, the ones that mention the caller. */
  unread_mentions?: number;
  /** Newer servers only: the caller's read cursor. */
  last_read?: MessageId;
  /** DMs and single-channel reads: the participants (absent when empty). */
  member_ids?: UserId[];
  /** Newer servers, single-channel reads only: the members' presence. */
  presence?: Presence[];
}

export interface ReactionSummary {
  emoji: string;
  count: number;
  user_ids: UserId[];
}

export interface Message {
  id: MessageId;
  channel_id: ChannelId;
  author_id: UserId;
  text: string;
  /** The root message when this is a thread reply. */
  thread_id?: MessageId;
  mentions: UserId[];
  created_at: string;
  edited_at?: string;
  deleted: boolean;
  /** Newer servers only. */
  reply_count?: number;
  last_reply_at?: string;
  reactions?: ReactionSummary[];
  pinned?: boolean;
}

/** A pinned message of a channel (newer servers). */
export interface Pin {
  channel_id: ChannelId;
  message: Message;
  pinned_by: UserId;
  pinned_at: string;
}

/** A user's read position in a channel and what it leaves unread (newer servers). */
export interface ReadState {
  channel_id: ChannelId;
  /** The last message read. */
  message_id: MessageId;
  /** Top-level messages by others after the cursor. */
  unread: number;
  /** Of those, the ones that mention the user. */
  unread_mentions: number;
}

/** Where `publish` put an event; `null` offset for ephemeral events. */
export interface Published {
  scope: string;
  offset: number | null;
}

// ---- request bodies

export interface CreateUser {
  name: string;
  display_name?: string;
  kind?: UserKind;
  webhook_url?: string;
  /** An agent's webhook signing secret (at least 16 bytes); generated when absent. */
  webhook_secret?: string;
  /** Make the user a server administrator. */
  admin?: boolean;
}

export interface CreateToken {
  /** What the token is for (1 to 64 bytes). */
  name: string;
  /** Seconds until it stops working; never when absent. */
  expires_in?: number;
}

/** `GET /api/v1/users` (server admins): a page of users by id. */
export interface UsersQuery {
  /** Users with a greater id (the last id of the previous page). */
  after?: UserId;
  /** Page size: server default 50, at most 200. */
  limit?: number;
}

export interface AddMember {
  user_id: UserId;
  /** Server default: `member`. */
  role?: Role;
}

export interface CreateChannel {
  name: string;
  /** Server default: `public`. */
  kind?: ChannelKind;
  /** Server default: `all`. */
  policy?: Policy;
  topic?: string;
  /** Initial members besides the creator. */
  member_ids?: UserId[];
}

/** Only the fields that are set change. */
export interface UpdateChannel {
  name?: string;
  topic?: string;
  policy?: Policy;
}

export interface SendMessage {
  text: string;
  /** Reply in the thread of this top-level message. */
  thread_id?: MessageId;
}

export interface HistoryQuery {
  /** Messages with ids below this one (paging back). */
  before?: MessageId;
  /** Messages with ids above this one (catching up forward). */
  after?: MessageId;
  /** Page size: server default 50, at most 200. */
  limit?: number;
  /** The replies of this thread instead of the top-level messages. */
  thread_id?: MessageId;
}

export interface Publish {
  /** Any scope, e.g. `topic:deploys`. */
  scope: string;
  /** The event type, 1 to 64 bytes. */
  type: string;
  data: unknown;
  /** Ephemeral events get no offset and are not retained for resume. */
  ephemeral?: boolean;
}

// ---- event payloads (docs/protocol.md, "Event types")

export interface MessageDeletedData {
  id: MessageId;
  channel_id: ChannelId;
  thread_id?: MessageId;
}

export interface ChannelJoinedData {
  channel: Channel;
  user_id: UserId;
  member_ids?: UserId[];
}

export interface ChannelLeftData {
  channel_id: ChannelId;
  user_id: UserId;
}

export interface MemberChangeData {
  channel_id: ChannelId;
  user_id: UserId;
}

export interface WorkspaceJoinedData {
  workspace: Workspace;
  role: Role;
}

export interface WorkspaceMemberJoinedData {
  workspace_id: WorkspaceId;
  user: UserProfile;
  role: Role;
}

/** `member.role_changed` (workspace scope and the member's own user scope). */
export interface RoleChangedData {
  workspace_id: WorkspaceId;
  user_id: UserId;
  role: Role;
}

/** `member.left` on a workspace scope (on a channel scope it is `MemberChangeData`). */
export interface WorkspaceMemberLeftData {
  workspace_id: WorkspaceId;
  user_id: UserId;
}

/** `subscription.revoked` (on the revoked scope, no offset): the user may no longer read
 * it, so the server ended the subscription. `reason`: `channel_left`, `workspace_left`,
 * `role_changed`. */
export interface SubscriptionRevokedData {
  scope: string;
  reason: string;
}

/** `credentials.revoked` (user scope), just before the server closes the connections
 * opened with those credentials (3502): `token_id` for a revoked token (only the sockets
 * it opened close), none for a deactivated user (all of them close). `reason`:
 * `token_revoked`, `deactivated`. */
export interface CredentialsRevokedData {
  reason: string;
  token_id?: TokenId;
}

/** `workspace.left` (user scope): the user was removed from, or left, the workspace. */
export interface WorkspaceLeftData {
  workspace_id: WorkspaceId;
}

export interface ReactionData {
  message_id: MessageId;
  channel_id: ChannelId;
  thread_id?: MessageId;
  emoji: string;
  user_id: UserId;
}

export interface UnpinnedData {
  channel_id: ChannelId;
  message_id: MessageId;
  user_id: UserId;
}

export interface TypingData {
  channel_id: ChannelId;
  thread_id?: MessageId;
  user_id: UserId;
  /** Newer servers: hide the indicator this long after the last signal (there is no "stop"). */
  expires_in_ms?: number;
}

export interface MentionData {
  message: Message;
  channel_id: ChannelId;
}

/** The `data` of each documented event type. */
export interface EventDataMap {
  'message.created': Message;
  'message.updated': Message;
  'message.deleted': MessageDeletedData;
  'channel.created': Channel;
  'channel.updated': Channel;
  'channel.joined': ChannelJoinedData;
  'channel.left': ChannelLeftData;
  'member.joined': MemberChangeData;
  /** Channel scope: `MemberChangeData`; workspace scope: `WorkspaceMemberLeftData`. */
  'member.left': MemberChangeData | WorkspaceMemberLeftData;
  'workspace.joined': WorkspaceJoinedData;
  'workspace.member_joined': WorkspaceMemberJoinedData;
  /** Workspace scope and the member's user scope. */
  'member.role_changed': RoleChangedData;
  /** User scope: removed from (or left) a workspace; `channel.left` follows for each of
   * its channels the user was in. */
  'workspace.left': WorkspaceLeftData;
  /** The revoked scope (no offset): the subscription ended; see `SubscriptionRevokedData`. */
  'subscription.revoked': SubscriptionRevokedData;
  /** User scope: a token revoked or the user deactivated; matching sockets close (3502). */
  'credentials.revoked': CredentialsRevokedData;
  typing: TypingData;
  // Newer servers:
  'reaction.added': ReactionData;
  'reaction.removed': ReactionData;
  'message.pinned': Pin;
  'message.unpinned': UnpinnedData;
  /** User scope of each mentioned user. */
  'mention.created': MentionData;
  /** User scope: the user's read cursor moved (on another tab or device). */
  'read.updated': ReadState;
  /** Workspace scope, ephemeral. */
  'presence.updated': Presence;
  /** Workspace scope, ephemeral: several changes coalesced during a burst (connect storms). */
  'presence.batch': { presences: Presence[] };
}
