// JSON shapes of the HTTP API and of event payloads, named. Nothing here is written by
// hand: every type is one the server's OpenAPI document describes (generated from the
// `chorus-api` crate into ./generated/api.ts by `npm run gen:api`; scripts/test fails
// when that file is stale). Ids are plain numbers (i64 on the server, always below 2^53
// in practice); timestamps are RFC 3339 strings, as on the wire.

import type { components, operations } from './generated/api.js';

type Schemas = components['schemas'];
/** `T` with the fields `K` optional. */
type Optional<T, K extends keyof T> = Omit<T, K> & Partial<Pick<T, K>>;

export type UserId = Schemas['UserId'];
export type WorkspaceId = Schemas['WorkspaceId'];
export type ChannelId = Schemas['ChannelId'];
export type MessageId = Schemas['MessageId'];
export type TokenId = Schemas['TokenId'];
/** An RFC 3339 date-time string. */
export type Timestamp = Schemas['Timestamp'];

export type UserKind = Schemas['UserKind'];
export type Role = Schemas['Role'];
export type ChannelKind = Schemas['ChannelKind'];
/** Who is woken by a message in a channel (SPEC §4). */
export type Policy = Schemas['Policy'];
export type WebhookStatus = Schemas['WebhookStatus'];

/** A user's full record: only the user themself and server admins are shown it
 * (`me()`, user creation, `user()` of oneself). */
export type User = Schemas['User'];
/** A user as others see them (workspace members, `workspace.member_joined`,
 * `user()` of someone else): no webhook, no admin flag. */
export type UserProfile = Schemas['UserProfile'];
/** `GET /api/v1/users/{id}`: the full record for oneself (and for a server admin), the
 * profile for anyone else; `'is_admin' in view` tells them apart. */
export type UserView = Schemas['UserView'];
/** A new user and its token (shown once). */
export type UserWithToken = Schemas['UserWithToken'];
/** One of a user's API tokens as listed: never the secret. */
export type ApiToken = Schemas['ApiToken'];
/** A new API token: its listing and the secret (`token`, shown this once). */
export type NewApiToken = Schemas['NewApiToken'];
/** A new one-time sign-in link: its `code` (shown this once) and `url_fragment`
 * (`#signin=<code>`) to append to the web UI's address. */
export type NewSignInLink = Schemas['NewSignInLink'];
export type SignInLink = Schemas['SignInLink'];
export type UserIds = Schemas['UserIds'];
export type WebhookSettings = Schemas['WebhookSettings'];
export type WebhookDelivery = Schemas['WebhookDelivery'];
export type WebhookAttempt = Schemas['WebhookAttempt'];

export type Workspace = Schemas['Workspace'];
/** A workspace with the caller's role in it (the server flattens the two). */
export type WorkspaceMembership = Schemas['WorkspaceMembership'];
/** Computed by the server from live connections, never set by a client. */
export type Presence = Schemas['Presence'];
/** `presence` is always sent by this server; optional here, as it was before servers
 * sent it, so that members known only from `workspace.member_joined` fit too. */
export type Member = Optional<Schemas['Member'], 'presence'>;
export type Channel = Schemas['Channel'];
/** A channel as the caller sees it in a listing (the server flattens the channel).
 * `unread_mentions` is always sent; optional here, as it was before servers sent it, so
 * that a channel known only from an event (`channel.joined`) fits too. */
export type ChannelView = Optional<Schemas['ChannelView'], 'unread_mentions'>;
export type ReactionSummary = Schemas['ReactionSummary'];
/** A message; `receipts` (what the agents it woke report doing with it) is sent by
 * servers with turns and receipts, and is absent on older ones. */
export type Message = Schemas['Message'] & { receipts?: Receipt[] };
/** `streaming` while its author appends to it, `complete`, or `aborted`. */
export type MessageState = Schemas['MessageState'];
/** A pinned message of a channel. */
export type Pin = Schemas['Pin'];
/** A user's read position in a channel and what it leaves unread. */
export type ReadState = Schemas['ReadState'];
/** Where `publish` put an event; `null` offset for ephemeral events. */
export type Published = Schemas['Published'];
export type Namespace = Schemas['Namespace'];
/** A page of a scope's events after an offset (`GET /api/v1/scopes/{scope}/events`). */
export type ScopeEvents = Schemas['ScopeEvents'];
/** An event of `ScopeEvents`: an `event` frame's fields (without `op`), with its offset. */
export type ScopeEvent = Schemas['ScopeEvent'];
/** Who is subscribed to a topic (`GET /api/v1/scopes/{scope}/presence`). */
export type TopicPresence = Schemas['TopicPresence'];
/** A connection subscribed to a topic; the `data` of `subscriber.joined` / `subscriber.left`. */
export type TopicSubscriber = Schemas['TopicSubscriber'];

// ---- request bodies and query strings

export type CreateUser = Schemas['CreateUser'];
export type CreateToken = Schemas['CreateToken'];
export type CreateSignInLink = Schemas['CreateSignInLink'];
/** `GET /api/v1/users` (server admins): a page of users by id. */
export type UsersQuery = NonNullable<operations['list_users']['parameters']['query']>;
export type AddMember = Schemas['AddMember'];
export type SetRole = Schemas['SetRole'];
export type CreateChannel = Schemas['CreateChannel'];
/** Only the fields that are set change. */
export type UpdateChannel = Schemas['UpdateChannel'];
export type SendMessage = Schemas['SendMessage'];
/** `POST /api/v1/messages/{id}/append`'s answer: the text's length in bytes with it. */
export type Appended = Schemas['Appended'];
export type EditMessage = Schemas['EditMessage'];
export type MarkRead = Schemas['MarkRead'];
export type SetStatus = Schemas['SetStatus'];
export type SetWebhook = Schemas['SetWebhook'];
export type HistoryQuery = NonNullable<operations['list_messages']['parameters']['query']>;
export type ServerKey = Schemas['ServerKey'];
export type ServerKeyId = Schemas['ServerKeyId'];
export type KeyPermission = Schemas['KeyPermission'];
export type CreateServerKey = Schemas['CreateServerKey'];
export type CreatedServerKey = Schemas['CreatedServerKey'];
export type Health = Schemas['Health'];
/** A slash command registered in a workspace (`webhook_secret` only in the answer to
 * its registration). */
export type Command = Schemas['Command'];
export type CommandId = Schemas['CommandId'];
export type CreateCommand = Schemas['CreateCommand'];
/** `text` for plain messages (the field is then absent), `action` for `/me`. */
export type MessageKind = Schemas['MessageKind'];
export type Publish = Schemas['Publish'];
/** `POST /api/v1/proxy/sessions/revoke`: the application logged `sub` out. */
export type RevokeProxySessions = Schemas['RevokeProxySessions'];

// ---- event payloads (docs/protocol.md, "Event types")

export type MessageDeletedData = Schemas['MessageDeleted'];
export type ChannelJoinedData = Schemas['ChannelJoined'];
export type ChannelLeftData = Schemas['MembershipChange'];
export type MemberChangeData = Schemas['MembershipChange'];
export type WorkspaceJoinedData = Schemas['WorkspaceJoined'];
export type WorkspaceMemberJoinedData = Schemas['WorkspaceMemberJoined'];
/** `member.role_changed` (workspace scope and the member's own user scope). */
export type RoleChangedData = Schemas['RoleChanged'];
/** `member.left` on a workspace scope (on a channel scope it is `MemberChangeData`). */
export type WorkspaceMemberLeftData = Schemas['WorkspaceMemberLeft'];
/** `subscription.revoked` (on the revoked scope, no offset). */
export type SubscriptionRevokedData = Schemas['SubscriptionRevoked'];
/** `credentials.revoked` (user scope), just before the server closes the connections
 * opened with those credentials (3502). A connection that is not one of them receives it
 * too and stays open (the user's other tokens; after an application's logout, a socket
 * of the user's new sign-in). */
export type CredentialsRevokedData = Schemas['CredentialsRevoked'];
/** `workspace.left` (user scope): the user was removed from, or left, the workspace. */
export type WorkspaceLeftData = Schemas['WorkspaceLeft'];
export type ReactionData = Schemas['ReactionChanged'];
export type UnpinnedData = Schemas['Unpinned'];
export type TypingData = Schemas['Typing'];
export type MentionData = Schemas['MentionCreated'];
export type PresenceBatchData = Schemas['PresenceBatch'];
/** `channel.on_duty_updated` / `channel.wake_list_updated`. */
export type ChannelListChangedData = Schemas['ChannelListChanged'];
/** `workspace.observers_updated`. */
export type ObserversChangedData = Schemas['ObserversChanged'];

/** `message.deltas` (ephemeral): the text appended, in one roll-up window, to each
 * message streaming in a channel (or a thread: `thread_id`), one frame for all of them. */
export type MessageDeltasData = Schemas['MessageDeltas'];
/** One message's part of `message.deltas`; `seq` counts a message's deltas from 1
 * without gaps. */
export type MessageDeltaData = Schemas['MessageDelta'];
/** `message.aborted`: the stream ended without completing (`reason`: the author's or an
 * admin's, `idle`, or `cancelled`). */
export type MessageAbortedData = Schemas['MessageAborted'];
/** `command.result` (ephemeral, the author's own scope): a slash command's answer; also
 * what `runCommand` returns. */
export type CommandResultData = Schemas['CommandResult'];
/** `command.invoked`: a registered command was typed; wakes its target agent. */
export type CommandInvokedData = Schemas['CommandInvoked'];
/** `channel.loop_guard`: agents are no longer woken in the channel (`held`) or are again
 * (`released`). */
export type LoopGuardData = Schemas['LoopGuard'];

// ---- turns and receipts (docs/protocol.md). Written by hand from the protocol until
// the server's OpenAPI document describes them; `EventDataMap` below prefers the
// generated types once it does.

/** What a woken agent reports doing with a message. */
export type ReceiptState = 'received' | 'working' | 'done' | 'declined';
/** One agent's report on a message. */
export interface Receipt {
  user_id: UserId;
  state: ReceiptState;
  updated_at: Timestamp;
}
/** `POST /api/v1/messages/{id}/receipts`' answer: every receipt on the message. */
export interface MessageReceipts {
  message_id: MessageId;
  receipts: Receipt[];
}
/** `POST /api/v1/messages/{id}/cancel`'s answer: the agents whose turns ended. */
export interface Cancelled {
  cancelled: UserId[];
}
/** `receipt.updated`: an agent reported a new state; `receipts` is the whole summary. */
export interface ReceiptUpdatedData {
  channel_id: ChannelId;
  message_id: MessageId;
  user_id: UserId;
  state: ReceiptState;
  receipts: Receipt[];
}
/** `turn.passed` (round_robin): `from` did not report `working` in time; `to` is woken
 * instead (`null`: nobody). */
export interface TurnPassedData {
  channel_id: ChannelId;
  message_id: MessageId;
  from: UserId;
  to: UserId | null;
}
/** `turn.cancelled`: `by` ended `agent_id`'s turn on the message; the agent stops. */
export interface TurnCancelledData {
  channel_id: ChannelId;
  message_id: MessageId;
  agent_id: UserId;
  by: UserId;
}

/** Every event type the server publishes, with its payload (`type` and `data` of an
 * event frame). */
export type ServerEvent = Schemas['Event'];

type GeneratedEventData = { [E in ServerEvent as E['type']]: E['data'] };
/** The turn and receipt events, as the protocol documents them. */
interface TurnEventData {
  'receipt.updated': ReceiptUpdatedData;
  'turn.passed': TurnPassedData;
  'turn.cancelled': TurnCancelledData;
}

/** The `data` of each event type the server publishes (see the scopes in
 * docs/protocol.md, "Event types"). */
export type EventDataMap = GeneratedEventData & Omit<TurnEventData, keyof GeneratedEventData>;
