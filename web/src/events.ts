// How each realtime event changes the chat state: one reducer per event type, each a
// pure function of (state, event, env) that returns what changed. It reads no globals,
// mutates nothing and starts nothing: the store (store.ts) commits the update and runs
// its effects. Only types come from @chorus/client, so the unit tests run it in Node.
import type {
  ChannelId,
  ChannelView,
  ChorusEvent,
  CommandResultData,
  EventDataMap,
  Member,
  Message,
  MessageId,
  Pin,
  ReactionSummary,
  TypedEvent,
  UserId,
  WorkspaceId,
  WorkspaceMembership,
} from '@chorus/client';
import type { Outgoing, ThreadMentions } from './persist.js';

export type { Outgoing, ThreadMentions } from './persist.js';

export interface MessageList {
  items: Message[];
  /** No older messages to load. */
  complete: boolean;
  loading: boolean;
}

export interface Thread {
  channelId: ChannelId;
  rootId: MessageId;
  replies: Message[];
  loading: boolean;
}

/** channel → (thread root or 0) → user → expiry (ms since epoch). */
export type Typing = Map<ChannelId, Map<number, Map<UserId, number>>>;

/** What the reducers read. They never change it: a changed part comes back, copied, in
 * the `Update`. */
export interface LiveState {
  readonly me: UserId;
  readonly workspaceId: WorkspaceId | undefined;
  readonly workspaces: readonly WorkspaceMembership[];
  readonly channels: ReadonlyMap<ChannelId, ChannelView>;
  readonly members: ReadonlyMap<UserId, Member>;
  readonly online: ReadonlyMap<UserId, boolean>;
  readonly lists: ReadonlyMap<ChannelId, MessageList>;
  readonly thread: Thread | undefined;
  readonly typing: Typing;
  readonly pending: readonly Outgoing[];
  /** Replies mentioning me, not seen yet (their channel's badge counts them). */
  readonly threadMentions: ThreadMentions;
  /** Each channel's pins, once loaded (newest first). */
  readonly pins: ReadonlyMap<ChannelId, Pin[]>;
  /** Status texts by user. */
  readonly statuses: ReadonlyMap<UserId, string>;
  readonly current: ChannelId | undefined;
  /** From a reconnect's hello until its catch-up is reported. */
  readonly catchingUp: boolean;
  /** Messages counted while catching up. */
  readonly caughtUp: number;
  /** Channels whose agents the loop guard holds (not woken), with its reason. */
  readonly loopGuards: ReadonlyMap<ChannelId, string>;
  /** Per channel, the answer to my last slash command there (`command.result`). */
  readonly commandAnswers: ReadonlyMap<ChannelId, CommandResultData>;
}

/** What the reducers would otherwise read from the browser. */
export interface Env {
  /** Date.now(). */
  now: number;
  /** Whether the page is visible (the user can see the open channel). */
  visible: boolean;
}

/** Work for the store after it committed an update. */
export type Effect =
  /** Move my read cursor in the open channel soon. */
  | { do: 'markRead' }
  /** Re-render when the next typing signal expires. */
  | { do: 'expireTyping' }
  | { do: 'selectWorkspace'; workspaceId: WorkspaceId }
  /** The open workspace is gone (left or removed): open another, or none. */
  | { do: 'leftWorkspace'; workspaceId: WorkspaceId }
  /** A streaming message missed a delta: load it again (its text and `seq`). */
  | { do: 'fetchMessage'; channelId: ChannelId; threadId: MessageId | undefined; id: MessageId };

/** The parts of the state an event replaced (absent: unchanged), and what to do next. */
export interface Update {
  channels?: Map<ChannelId, ChannelView>;
  members?: Map<UserId, Member>;
  online?: Map<UserId, boolean>;
  workspaces?: WorkspaceMembership[];
  typing?: Typing;
  pending?: Outgoing[];
  threadMentions?: ThreadMentions;
  pins?: Map<ChannelId, Pin[]>;
  statuses?: Map<UserId, string>;
  caughtUp?: number;
  loopGuards?: Map<ChannelId, string>;
  commandAnswers?: Map<ChannelId, CommandResultData>;
  /** Messages, new or changed, to put wherever they are shown (the open lists and
   * thread, which loads in flight also write to: the store merges them in place). */
  put?: Message[];
  effects?: Effect[];
}

export type Reducer<K extends keyof EventDataMap> = (state: LiveState, ev: TypedEvent<K>, env: Env) => Update;

/** One entry per documented event type: a new type in `EventDataMap` does not compile
 * until it is handled here or marked `ignored` (the UI shows nothing of it). */
export type Reducers = { readonly [K in keyof EventDataMap]: Reducer<K> | typeof ignored };

export const ignored = null;

export const reducers: Reducers = {
  'message.created': (s, ev, env) => {
    const msg = ev.data;
    const update: Update = { put: [msg] };
    if (s.catchingUp || ev.replayed) update.caughtUp = s.caughtUp + 1;
    if (msg.author_id === s.me) {
      const pending = settlePending(s.pending, msg);
      if (pending) update.pending = pending;
    }
    const known = findMessage(s, msg.id) !== undefined;
    const channel = s.channels.get(msg.channel_id);
    if (!known && channel && msg.thread_id === undefined && msg.author_id !== s.me) {
      if (s.current === msg.channel_id && env.visible) {
        update.effects = [{ do: 'markRead' }];
      } else {
        // Counted here, once: after a reconnect the missed messages arrive as events
        // (resumed, or fetched over HTTP), and the counts are not reloaded on top of them.
        const mentioned = msg.mentions.includes(s.me);
        update.channels = withEntry(s.channels, msg.channel_id, {
          ...channel,
          unread: channel.unread + 1,
          unread_mentions: (channel.unread_mentions ?? 0) + (mentioned ? 1 : 0),
        });
      }
    }
    // A message ends its author's typing there.
    const typing = withoutTypist(s.typing, msg.channel_id, msg.thread_id ?? 0, msg.author_id);
    if (typing) update.typing = typing;
    return update;
  },

  'message.updated': (_s, ev) => ({ put: [ev.data] }),

  // A streaming reply grows by deltas, each the next `seq`; one frame carries the
  // deltas of every reply that grew in the channel (or thread) during a roll-up window.
  // One already in the message (as loaded) is left out; one past the next (a delta was
  // missed) has the message loaded again, and the deltas after the loaded `seq` apply to
  // it. `message.completed` carries the whole text in any case.
  'message.deltas': (s, ev) => {
    const update: Update = {};
    for (const delta of ev.data.deltas) {
      const m = findMessage(s, delta.id);
      const held = m?.seq ?? 0;
      if (!m || m.state !== 'streaming' || delta.seq <= held) continue;
      if (delta.seq > held + 1) {
        (update.effects ??= []).push({ do: 'fetchMessage', channelId: m.channel_id, threadId: m.thread_id, id: m.id });
      } else {
        (update.put ??= []).push({ ...m, text: m.text + delta.text, seq: delta.seq });
      }
    }
    return update;
  },
  'message.completed': (_s, ev) => ({ put: [ev.data] }),
  'message.aborted': (_s, ev) => ({ put: [ev.data.message] }),

  // While held, the channel says that its agents are paused, until a person writes.
  'channel.loop_guard': (s, ev) => {
    const { channel_id, state, reason } = ev.data;
    const loopGuards = new Map(s.loopGuards);
    if (state === 'held') loopGuards.set(channel_id, reason);
    else if (!loopGuards.delete(channel_id)) return {};
    return { loopGuards };
  },

  // What the agents a message woke report doing with it ("helper is working…").
  'receipt.updated': (s, ev) => {
    const m = findMessage(s, ev.data.message_id);
    return m ? { put: [{ ...m, receipts: ev.data.receipts }] } : {};
  },
  // A passed turn shows as the next agent's receipt; a cancelled one as its reply's
  // `message.aborted` and its receipt.
  'turn.passed': ignored,
  'turn.cancelled': ignored,

  // The answer to a slash command I typed (in any of my tabs), shown above that
  // channel's box; only my connections get it. `command.invoked` is for agents.
  'command.result': (s, ev) => ({ commandAnswers: withEntry(s.commandAnswers, ev.data.channel_id, ev.data) }),
  'command.invoked': ignored,

  'message.deleted': (s, ev) => {
    const m = findMessage(s, ev.data.id);
    const update: Update = m ? { put: [{ ...m, deleted: true, text: '', reactions: [], pinned: false }] } : {};
    const pins = s.pins.get(ev.data.channel_id);
    if (pins?.some((p) => p.message.id === ev.data.id)) {
      update.pins = withEntry(s.pins, ev.data.channel_id, pins.filter((p) => p.message.id !== ev.data.id));
    }
    const mentions = withoutThreadMention(s.threadMentions, ev.data.channel_id, ev.data.id);
    if (mentions) update.threadMentions = mentions;
    return update;
  },

  'reaction.added': (s, ev) => reaction(s, ev.data, true),
  'reaction.removed': (s, ev) => reaction(s, ev.data, false),

  'channel.joined': (s, ev) => {
    const { channel, member_ids } = ev.data;
    if (channel.workspace_id !== s.workspaceId) return {};
    const known = s.channels.get(channel.id);
    const ids = member_ids ?? known?.member_ids;
    return {
      channels: withEntry(s.channels, channel.id, {
        ...channel,
        member: true,
        unread: known?.unread ?? 0,
        ...(ids && { member_ids: ids }),
      }),
    };
  },

  'channel.left': (s, ev) => {
    const known = s.channels.get(ev.data.channel_id);
    if (!known) return {};
    const update: Update = {};
    if (s.threadMentions.has(known.id)) {
      update.threadMentions = new Map(s.threadMentions);
      update.threadMentions.delete(known.id);
    }
    if (known.kind !== 'public') {
      const channels = new Map(s.channels);
      channels.delete(known.id);
      return { ...update, channels };
    }
    return { ...update, channels: withEntry(s.channels, known.id, { ...known, member: false, unread: 0, unread_mentions: 0 }) };
  },

  'channel.created': (s, ev) => channelChanged(s, ev.data),
  'channel.updated': (s, ev) => channelChanged(s, ev.data),

  'read.updated': (s, ev) => {
    const known = s.channels.get(ev.data.channel_id);
    if (!known) return {};
    return {
      channels: withEntry(s.channels, known.id, {
        ...known,
        unread: ev.data.unread,
        unread_mentions: ev.data.unread_mentions,
        last_read: ev.data.message_id,
      }),
    };
  },

  'presence.updated': (s, ev) => presence(s, [ev.data]),

  // Users in the same state share a group: one change per user of each group.
  'presence.batch': (s, ev) =>
    presence(
      s,
      ev.data.groups.flatMap(({ user_ids, ...state }) => user_ids.map((user_id) => ({ ...state, user_id }))),
    ),

  'workspace.member_joined': (s, ev) => {
    const { workspace_id, user, role } = ev.data;
    if (workspace_id !== s.workspaceId || s.members.has(user.id)) return {};
    return { members: withEntry(s.members, user.id, { user, role }) };
  },

  'workspace.joined': (s, ev) => {
    const { workspace, role } = ev.data;
    if (s.workspaces.some((w) => w.id === workspace.id)) return {};
    return {
      workspaces: [...s.workspaces, { ...workspace, role }],
      // The first workspace of a user who had none opens by itself.
      ...(s.workspaceId === undefined && { effects: [{ do: 'selectWorkspace', workspaceId: workspace.id }] }),
    };
  },

  typing: (s, ev, env) => {
    const { channel_id, thread_id, user_id, expires_in_ms } = ev.data;
    const byThread = new Map(s.typing.get(channel_id));
    const users = new Map(byThread.get(thread_id ?? 0));
    users.set(user_id, env.now + (expires_in_ms ?? 5_000));
    byThread.set(thread_id ?? 0, users);
    return { typing: withEntry(s.typing, channel_id, byThread), effects: [{ do: 'expireTyping' }] };
  },

  'member.role_changed': (s, ev) => {
    const { workspace_id, user_id, role } = ev.data;
    const update: Update = {};
    const member = s.members.get(user_id);
    if (workspace_id === s.workspaceId && member && member.role !== role) {
      update.members = withEntry(s.members, user_id, { ...member, role });
    }
    if (user_id === s.me && s.workspaces.some((w) => w.id === workspace_id && w.role !== role)) {
      update.workspaces = s.workspaces.map((w) => (w.id === workspace_id ? { ...w, role } : w));
    }
    return update;
  },

  // On a workspace scope: someone left (or was removed from) the workspace. On a
  // channel scope (`channel_id`): the channel's own membership, which the UI reads from
  // `channel.joined` / `channel.left` for the user and from the channel when shown.
  'member.left': (s, ev) => {
    const data = ev.data as { workspace_id?: WorkspaceId; user_id: UserId };
    if (data.workspace_id === undefined || data.workspace_id !== s.workspaceId || !s.members.has(data.user_id)) return {};
    const members = new Map(s.members);
    members.delete(data.user_id);
    return { members };
  },

  'workspace.left': (s, ev) => {
    const id = ev.data.workspace_id;
    if (!s.workspaces.some((w) => w.id === id)) return {};
    return {
      workspaces: s.workspaces.filter((w) => w.id !== id),
      ...(s.workspaceId === id && { effects: [{ do: 'leftWorkspace', workspaceId: id }] }),
    };
  },

  'message.pinned': (s, ev) => {
    const pin = ev.data;
    const update: Update = { put: [{ ...pin.message, pinned: true }] };
    const pins = s.pins.get(pin.channel_id);
    if (pins) update.pins = withEntry(s.pins, pin.channel_id, [pin, ...pins.filter((p) => p.message.id !== pin.message.id)]);
    return update;
  },

  'message.unpinned': (s, ev) => {
    const { channel_id, message_id } = ev.data;
    const m = findMessage(s, message_id);
    const update: Update = m ? { put: [{ ...m, pinned: false }] } : {};
    const pins = s.pins.get(channel_id);
    if (pins) update.pins = withEntry(s.pins, channel_id, pins.filter((p) => p.message.id !== message_id));
    return update;
  },

  // A reply that mentions me counts on its channel's badge until I open its thread
  // (mentions in top-level messages are counted by the server, from `message.created`).
  'mention.created': (s, ev, env) => {
    const { message: msg, channel_id } = ev.data;
    if (msg.thread_id === undefined || msg.author_id === s.me || !s.channels.has(channel_id)) return {};
    if (s.thread?.rootId === msg.thread_id && env.visible) return {};
    if (s.threadMentions.get(channel_id)?.has(msg.id)) return {};
    const inChannel = new Map(s.threadMentions.get(channel_id)).set(msg.id, msg.thread_id);
    return { threadMentions: withEntry(s.threadMentions, channel_id, inChannel) };
  },

  // Nothing in the UI shows these (yet); membership changes reach it as channel.* events.
  'member.joined': ignored,
  'subscription.revoked': ignored,
  'credentials.revoked': ignored,
  // Agent delivery settings: the web UI does not show them.
  'channel.on_duty_updated': ignored,
  'channel.wake_list_updated': ignored,
  'workspace.observers_updated': ignored,
  // Gateway topics' join/leave: the web UI subscribes to no topic.
  'subscriber.joined': ignored,
  'subscriber.left': ignored,
};

/** The update for an event; `undefined` when the UI ignores its type, undocumented ones
 * from a newer server included (nothing to re-render). */
export function reduce(state: LiveState, ev: ChorusEvent, env: Env): Update | undefined {
  // `hasOwn`: an event type such as `constructor` must not find Object.prototype's.
  if (!Object.hasOwn(reducers, ev.type)) return undefined;
  const type = ev.type as keyof EventDataMap;
  return run(type, state, ev as TypedEvent<typeof type>, env);
}

function run<K extends keyof EventDataMap>(type: K, state: LiveState, ev: TypedEvent<K>, env: Env): Update | undefined {
  const reducer: Reducer<K> | null = reducers[type];
  return reducer ? reducer(state, ev, env) : undefined;
}

/** A loaded message: in a channel's list or the open thread. */
export function findMessage(s: Pick<LiveState, 'lists' | 'thread'>, id: MessageId): Message | undefined {
  for (const list of s.lists.values()) {
    const m = list.items.find((x) => x.id === id);
    if (m) return m;
  }
  return s.thread?.replies.find((x) => x.id === id);
}

function presence(s: LiveState, list: readonly { user_id: UserId; online: boolean; status_text?: string }[]): Update {
  const online = new Map(s.online);
  let statuses: Map<UserId, string> | undefined;
  for (const p of list) {
    online.set(p.user_id, p.online);
    const text = p.status_text ?? '';
    if ((s.statuses.get(p.user_id) ?? '') !== text) {
      statuses ??= new Map(s.statuses);
      if (text) statuses.set(p.user_id, text);
      else statuses.delete(p.user_id);
    }
  }
  return statuses ? { online, statuses } : { online };
}

/** `undefined` when the message was no unseen thread mention. */
export function withoutThreadMention(mentions: ThreadMentions, channelId: ChannelId, id: MessageId): ThreadMentions | undefined {
  const inChannel = mentions.get(channelId);
  if (!inChannel?.has(id)) return undefined;
  const left = new Map(inChannel);
  left.delete(id);
  const out = new Map(mentions);
  if (left.size) out.set(channelId, left);
  else out.delete(channelId);
  return out;
}

function reaction(s: LiveState, data: EventDataMap['reaction.added'], added: boolean): Update {
  const m = findMessage(s, data.message_id);
  return m ? { put: [{ ...m, reactions: react(m.reactions ?? [], data.emoji, data.user_id, added) }] } : {};
}

function channelChanged(s: LiveState, c: EventDataMap['channel.created']): Update {
  if (c.workspace_id !== s.workspaceId) return {};
  const known = s.channels.get(c.id);
  return { channels: withEntry(s.channels, c.id, { member: false, unread: 0, ...known, ...c }) };
}

/** My message arrived live before its send returned: it replaces its pending copy.
 * `undefined` when no pending copy matches. */
function settlePending(pending: readonly Outgoing[], msg: Message): Outgoing[] | undefined {
  const i = pending.findIndex(
    (p) => p.state !== 'failed' && p.channelId === msg.channel_id && p.threadId === msg.thread_id && p.text === msg.text,
  );
  return i < 0 ? undefined : [...pending.slice(0, i), ...pending.slice(i + 1)];
}

/** `undefined` when the user was not typing there. */
function withoutTypist(typing: Typing, channelId: ChannelId, thread: number, userId: UserId): Typing | undefined {
  const users = typing.get(channelId)?.get(thread);
  if (!users?.has(userId)) return undefined;
  const left = new Map(users);
  left.delete(userId);
  return withEntry(typing, channelId, withEntry(typing.get(channelId)!, thread, left));
}

/** A copy of `map` with `key` set. */
function withEntry<K, V>(map: ReadonlyMap<K, V>, key: K, value: V): Map<K, V> {
  return new Map(map).set(key, value);
}

/** A reaction event applied to a summary; applying the same event twice changes nothing. */
export function react(list: ReactionSummary[], emoji: string, user: UserId, added: boolean): ReactionSummary[] {
  const out = list.map((r) => ({ ...r, user_ids: [...r.user_ids] }));
  let entry = out.find((r) => r.emoji === emoji);
  if (added) {
    if (!entry) out.push((entry = { emoji, count: 0, user_ids: [] }));
    if (!entry.user_ids.includes(user)) {
      entry.user_ids.push(user);
      entry.count = entry.user_ids.length;
    }
  } else if (entry) {
    entry.user_ids = entry.user_ids.filter((id) => id !== user);
    entry.count = entry.user_ids.length;
  }
  return out.filter((r) => r.count > 0);
}
