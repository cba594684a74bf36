// The realtime event reducers (src/events.ts), one event type at a time, in Node: each
// is given a state and an event and must return the update, leaving its input as it was.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { ChannelView, ChorusEvent, EventDataMap, Member, Message, TypedEvent, WorkspaceMembership } from '@chorus/client';
import { reduce, type Env, type LiveState, type Outgoing, type Update } from '../src/events.js';

const ME = 1;
const BOB = 2;
const WS = 10;
const GENERAL = 100;
const RANDOM = 101;
const SECRET = 102;
const ENV: Env = { now: 1_000_000, visible: true };

function channel(id: number, extra: Partial<ChannelView> = {}): ChannelView {
  return {
    id,
    workspace_id: WS,
    name: `c${id}`,
    topic: '',
    kind: 'public',
    policy: 'all',
    created_by: ME,
    created_at: '2026-01-01T00:00:00Z',
    member: true,
    unread: 0,
    ...extra,
  };
}

function message(id: number, extra: Partial<Message> = {}): Message {
  return {
    id,
    channel_id: GENERAL,
    author_id: BOB,
    text: `m${id}`,
    mentions: [],
    created_at: '2026-01-01T00:00:00Z',
    deleted: false,
    pinned: false,
    reactions: [],
    reply_count: 0,
    ...extra,
  };
}

function member(id: number): Member {
  return {
    user: { id, name: `u${id}`, display_name: '', kind: 'human', status_text: '', created_at: '2026-01-01T00:00:00Z' },
    role: 'member',
  };
}

function workspace(id: number): WorkspaceMembership {
  return { id, name: `w${id}`, created_by: ME, created_at: '2026-01-01T00:00:00Z', role: 'member' };
}

/** Signed in, in workspace WS, #general open and showing messages 1 and 2. */
function state(extra: Partial<LiveState> = {}): LiveState {
  return {
    me: ME,
    workspaceId: WS,
    workspaces: [workspace(WS)],
    channels: new Map([
      [GENERAL, channel(GENERAL)],
      [RANDOM, channel(RANDOM, { unread: 3, unread_mentions: 1 })],
      [SECRET, channel(SECRET, { kind: 'private' })],
    ]),
    members: new Map([[ME, member(ME)]]),
    online: new Map([[ME, true]]),
    lists: new Map([[GENERAL, { items: [message(1), message(2)], complete: true, loading: false }]]),
    thread: undefined,
    typing: new Map(),
    pending: [],
    threadMentions: new Map(),
    pins: new Map(),
    statuses: new Map(),
    current: GENERAL,
    catchingUp: false,
    caughtUp: 0,
    loopGuards: new Map(),
    commandAnswers: new Map(),
    ...extra,
  };
}

function event<K extends keyof EventDataMap>(
  type: K,
  data: EventDataMap[K],
  extra: Partial<ChorusEvent> = {},
): TypedEvent<K> {
  return { op: 'event', scope: 'test', type, data, ...extra } as TypedEvent<K>;
}

/** `reduce`, checking that it left the state it was given unchanged. */
function apply(s: LiveState, ev: ChorusEvent, env: Env = ENV): Update | undefined {
  const before = structuredClone(s);
  const update = reduce(s, ev, env);
  assert.deepEqual(s, before, 'the reducer changed its input');
  return update;
}

function applied(s: LiveState, ev: ChorusEvent, env: Env = ENV): Update {
  const update = apply(s, ev, env);
  assert.ok(update, `${ev.type} is handled`);
  return update;
}

describe('message.created', () => {
  it('puts the message where it is shown', () => {
    const msg = message(3);
    assert.deepEqual(applied(state(), event('message.created', msg)), { put: [msg], effects: [{ do: 'markRead' }] });
  });

  it('in the open, visible channel: marks it read instead of counting it', () => {
    const u = applied(state(), event('message.created', message(3)));
    assert.deepEqual(u.effects, [{ do: 'markRead' }]);
    assert.equal(u.channels, undefined);
  });

  it('in a channel not open, or a hidden page: counts it unread, and mentions', () => {
    const other = applied(state(), event('message.created', message(3, { channel_id: RANDOM, mentions: [ME] })));
    assert.equal(other.effects, undefined);
    assert.equal(other.channels?.get(RANDOM)?.unread, 4);
    assert.equal(other.channels?.get(RANDOM)?.unread_mentions, 2);

    const hidden = applied(state(), event('message.created', message(3)), { ...ENV, visible: false });
    assert.equal(hidden.channels?.get(GENERAL)?.unread, 1);
    assert.equal(hidden.channels?.get(GENERAL)?.unread_mentions, 0);
  });

  it('counts nothing for a message already shown, a thread reply, mine, or an unknown channel', () => {
    const hidden = { ...ENV, visible: false };
    for (const msg of [message(2), message(3, { thread_id: 1 }), message(3, { author_id: ME }), message(3, { channel_id: 999 })]) {
      const u = applied(state(), event('message.created', msg), hidden);
      assert.equal(u.channels, undefined, `message ${JSON.stringify(msg)}`);
      assert.equal(u.effects, undefined);
      assert.deepEqual(u.put, [msg]);
    }
  });

  it('my message settles its pending copy (the first unfailed one that matches)', () => {
    const failed: Outgoing = { key: 'a', channelId: GENERAL, text: 'hi', state: 'failed', error: 'forbidden' };
    const sending: Outgoing = { key: 'b', channelId: GENERAL, text: 'hi', state: 'waiting' };
    const elsewhere: Outgoing = { key: 'c', channelId: RANDOM, text: 'hi', state: 'sending' };
    const inThread: Outgoing = { key: 'd', channelId: GENERAL, threadId: 1, text: 'hi', state: 'sending' };
    const s = state({ pending: [failed, sending, elsewhere, inThread] });
    const u = applied(s, event('message.created', message(3, { author_id: ME, text: 'hi' })));
    assert.deepEqual(u.pending, [failed, elsewhere, inThread]);
    // Someone else's identical text settles nothing.
    assert.equal(applied(s, event('message.created', message(4, { text: 'hi' }))).pending, undefined);
  });

  it('counts each message once while catching up after a reconnect (not twice)', () => {
    const hidden = { ...ENV, visible: false };
    const u = applied(state({ catchingUp: true }), event('message.created', message(3, { channel_id: RANDOM })), hidden);
    assert.equal(u.channels?.get(RANDOM)?.unread, 4);
    // Delivered again (a replay overlapping what was already applied): not counted again.
    const s2 = state({ lists: new Map([[RANDOM, { items: [message(3, { channel_id: RANDOM })], complete: true, loading: false }]]) });
    assert.equal(applied(s2, event('message.created', message(3, { channel_id: RANDOM })), hidden).channels, undefined);
  });

  it('counts what arrives while catching up after a reconnect, and what was fetched over HTTP', () => {
    assert.equal(applied(state({ catchingUp: true, caughtUp: 2 }), event('message.created', message(3))).caughtUp, 3);
    assert.equal(applied(state(), event('message.created', message(3), { replayed: true })).caughtUp, 1);
    assert.equal(applied(state(), event('message.created', message(3))).caughtUp, undefined);
  });

  it("ends its author's typing there, and only there", () => {
    const typing = new Map([
      [GENERAL, new Map([[0, new Map([[BOB, 5], [3, 5]])], [1, new Map([[BOB, 5]])]])],
    ]);
    const u = applied(state({ typing }), event('message.created', message(3)));
    assert.deepEqual(u.typing, new Map([[GENERAL, new Map([[0, new Map([[3, 5]])], [1, new Map([[BOB, 5]])]])]]));
    // Not typing: the typing state is not replaced.
    assert.equal(applied(state({ typing }), event('message.created', message(4, { author_id: 3, thread_id: 1 }))).typing, undefined);
  });
});

describe('message.updated', () => {
  it('puts the new version where it is shown', () => {
    const edited = message(2, { text: 'edited', edited_at: '2026-01-02T00:00:00Z' });
    assert.deepEqual(applied(state(), event('message.updated', edited)), { put: [edited] });
  });
});

describe('message.deltas', () => {
  const deltas = (deltas: { id: number; seq: number; text: string }[], thread_id?: number) =>
    event('message.deltas', { channel_id: GENERAL, ...(thread_id === undefined ? {} : { thread_id }), deltas });

  it('adds the next delta to a streaming message, once, in seq order', () => {
    const streaming = state({
      lists: new Map([[GENERAL, { items: [message(1), message(2, { text: 'Hel', state: 'streaming', seq: 1 })], complete: true, loading: false }]]),
    });
    const [grown] = applied(streaming, deltas([{ id: 2, seq: 2, text: 'lo' }])).put ?? [];
    assert.equal(grown?.text, 'Hello');
    assert.equal(grown?.seq, 2);
    // Already in the message (a repeat): left out.
    assert.deepEqual(applied(streaming, deltas([{ id: 2, seq: 1, text: 'Hel' }])), {});
  });

  it('applies every reply of one frame: those that grew, not those shown without it', () => {
    const streaming = state({
      lists: new Map([[GENERAL, {
        items: [
          message(2, { text: 'Hel', state: 'streaming', seq: 1 }),
          message(3, { text: 'Bon', state: 'streaming', seq: 4 }),
          message(4, { text: 'Done', state: 'complete', seq: 2 }),
        ],
        complete: true,
        loading: false,
      }]]),
    });
    const update = applied(streaming, deltas([
      { id: 2, seq: 2, text: 'lo' },
      { id: 3, seq: 5, text: 'jour' },
      { id: 4, seq: 3, text: '!' },
      { id: 99, seq: 1, text: '?' },
    ]));
    assert.deepEqual(update.put?.map((m) => [m.id, m.text, m.seq]), [[2, 'Hello', 2], [3, 'Bonjour', 5]]);
    assert.equal(update.effects, undefined);
    // One past a missed delta is loaded again; the others in the frame still apply.
    const mixed = applied(streaming, deltas([{ id: 2, seq: 3, text: '!' }, { id: 3, seq: 5, text: 'jour' }]));
    assert.deepEqual(mixed.put?.map((m) => [m.id, m.text]), [[3, 'Bonjour']]);
    assert.deepEqual(mixed.effects, [{ do: 'fetchMessage', channelId: GENERAL, threadId: undefined, id: 2 }]);
  });

  it('past a missed delta: loads the message again instead of applying it', () => {
    const reply = message(5, { thread_id: 1, text: 'Hel', state: 'streaming', seq: 1 });
    const s = state({ thread: { channelId: GENERAL, rootId: 1, replies: [reply], loading: false } });
    assert.deepEqual(applied(s, deltas([{ id: 5, seq: 3, text: '!' }], 1)), {
      effects: [{ do: 'fetchMessage', channelId: GENERAL, threadId: 1, id: 5 }],
    });
    // A message no longer streaming (completed meanwhile) or not shown: nothing.
    const done = state({ thread: { channelId: GENERAL, rootId: 1, replies: [{ ...reply, state: 'complete' }], loading: false } });
    assert.deepEqual(applied(done, deltas([{ id: 5, seq: 3, text: '!' }], 1)), {});
    assert.deepEqual(applied(state(), deltas([{ id: 99, seq: 3, text: '!' }])), {});
  });

  it('completed and aborted put the whole message', () => {
    const done = message(2, { text: 'Hello!', state: 'complete', seq: 3 });
    assert.deepEqual(applied(state(), event('message.completed', done)), { put: [done] });
    const aborted = message(2, { text: 'Hel', state: 'aborted', seq: 1 });
    assert.deepEqual(applied(state(), event('message.aborted', { message: aborted, reason: 'idle' })), { put: [aborted] });
  });
});

describe('command.result', () => {
  it("keeps each channel's latest answer to my slash commands", () => {
    const answer = { channel_id: GENERAL, command: 'topic', ok: true, text: 'topic set to "x"' };
    const first = applied(state(), event('command.result', answer));
    assert.deepEqual([...(first.commandAnswers ?? [])], [[GENERAL, answer]]);
    const refused = { channel_id: GENERAL, command: 'nope', ok: false, text: '/nope is not a command here', code: 'unknown_command' };
    const second = applied(state({ commandAnswers: first.commandAnswers! }), event('command.result', refused));
    assert.deepEqual([...(second.commandAnswers ?? [])], [[GENERAL, refused]]);
  });
});

describe('channel.loop_guard', () => {
  it('holds a channel with its reason until released', () => {
    const held = applied(state(), event('channel.loop_guard', { channel_id: GENERAL, state: 'held', reason: 'agent_messages' }));
    assert.deepEqual([...(held.loopGuards ?? [])], [[GENERAL, 'agent_messages']]);
    const s = state({ loopGuards: held.loopGuards! });
    const released = applied(s, event('channel.loop_guard', { channel_id: GENERAL, state: 'released', reason: 'person_wrote' }));
    assert.deepEqual([...(released.loopGuards ?? [])], []);
    // Released where nothing was held: nothing changes.
    assert.deepEqual(applied(state(), event('channel.loop_guard', { channel_id: RANDOM, state: 'released', reason: 'person_wrote' })), {});
  });
});

describe('receipt.updated', () => {
  it("puts the message with the agents' receipts", () => {
    const receipts = [{ user_id: BOB, state: 'working' as const, updated_at: '2026-01-01T00:00:01Z' }];
    const data = { channel_id: GENERAL, message_id: 2, user_id: BOB, state: 'working' as const, receipts };
    const [put] = applied(state(), event('receipt.updated', data)).put ?? [];
    assert.deepEqual(put, { ...message(2), receipts });
    assert.deepEqual(applied(state(), event('receipt.updated', { ...data, message_id: 99 })), {});
  });
});

describe('message.deleted', () => {
  it('turns a shown message into a tombstone', () => {
    const s = state({
      thread: { channelId: GENERAL, rootId: 1, replies: [message(5, { thread_id: 1, reactions: [{ emoji: '👍', count: 1, user_ids: [ME] }] })], loading: false },
    });
    for (const id of [2, 5]) {
      const [put] = applied(s, event('message.deleted', { id, channel_id: GENERAL })).put ?? [];
      assert.equal(put?.id, id);
      assert.equal(put?.deleted, true);
      assert.equal(put?.text, '');
      assert.deepEqual(put?.reactions, []);
    }
  });

  it('changes nothing for a message not loaded', () => {
    assert.deepEqual(applied(state(), event('message.deleted', { id: 99, channel_id: GENERAL })), {});
  });
});

describe('reaction.added and reaction.removed', () => {
  const reaction = (emoji: string, user_id: number) => ({ message_id: 2, channel_id: GENERAL, emoji, user_id });
  const reactionsAfter = (s: LiveState, ev: ChorusEvent) => applied(s, ev).put?.[0]?.reactions;

  it('adds a user to an emoji, once', () => {
    assert.deepEqual(reactionsAfter(state(), event('reaction.added', reaction('👍', BOB))), [{ emoji: '👍', count: 1, user_ids: [BOB] }]);
    const s = state({
      lists: new Map([[GENERAL, { items: [message(2, { reactions: [{ emoji: '👍', count: 1, user_ids: [BOB] }] })], complete: true, loading: false }]]),
    });
    assert.deepEqual(reactionsAfter(s, event('reaction.added', reaction('👍', BOB))), [{ emoji: '👍', count: 1, user_ids: [BOB] }]);
    assert.deepEqual(reactionsAfter(s, event('reaction.added', reaction('👍', ME))), [{ emoji: '👍', count: 2, user_ids: [BOB, ME] }]);
  });

  it('removes a user, and an emoji nobody is left on', () => {
    const s = state({
      lists: new Map([
        [
          GENERAL,
          {
            items: [message(2, { reactions: [{ emoji: '👍', count: 2, user_ids: [BOB, ME] }, { emoji: '🎉', count: 1, user_ids: [BOB] }] })],
            complete: true,
            loading: false,
          },
        ],
      ]),
    });
    assert.deepEqual(reactionsAfter(s, event('reaction.removed', reaction('👍', BOB))), [
      { emoji: '👍', count: 1, user_ids: [ME] },
      { emoji: '🎉', count: 1, user_ids: [BOB] },
    ]);
    assert.deepEqual(reactionsAfter(s, event('reaction.removed', reaction('🎉', BOB))), [{ emoji: '👍', count: 2, user_ids: [BOB, ME] }]);
  });

  it('changes nothing for a message not loaded', () => {
    assert.deepEqual(applied(state(), event('reaction.added', { ...reaction('👍', BOB), message_id: 99 })), {});
    assert.deepEqual(applied(state(), event('reaction.removed', { ...reaction('👍', BOB), message_id: 99 })), {});
  });
});

describe('channel.joined', () => {
  it('adds the channel as mine, keeping a known unread count and member list', () => {
    const { member: _m, unread: _u, ...bare } = channel(RANDOM, { name: 'renamed' });
    const known = state({ channels: new Map([[RANDOM, channel(RANDOM, { member: false, unread: 3, member_ids: [BOB] })]]) });
    assert.deepEqual(applied(known, event('channel.joined', { channel: bare, user_id: ME })).channels?.get(RANDOM), {
      ...bare,
      member: true,
      unread: 3,
      member_ids: [BOB],
    });
    const dm = { ...bare, id: 200, kind: 'dm' as const };
    assert.deepEqual(applied(state(), event('channel.joined', { channel: dm, user_id: ME, member_ids: [ME, BOB] })).channels?.get(200), {
      ...dm,
      member: true,
      unread: 0,
      member_ids: [ME, BOB],
    });
  });

  it("ignores another workspace's channel", () => {
    const { member: _m, unread: _u, ...bare } = channel(200, { workspace_id: 11 });
    assert.deepEqual(applied(state(), event('channel.joined', { channel: bare, user_id: ME })), {});
  });
});

describe('channel.left', () => {
  it('keeps a public channel, no longer mine; drops a private one', () => {
    const pub = applied(state(), event('channel.left', { channel_id: RANDOM, user_id: ME })).channels;
    assert.deepEqual(pub?.get(RANDOM), channel(RANDOM, { member: false, unread: 0, unread_mentions: 0 }));
    const priv = applied(state(), event('channel.left', { channel_id: SECRET, user_id: ME })).channels;
    assert.equal(priv?.has(SECRET), false);
    assert.equal(priv?.size, 2);
  });

  it('changes nothing for an unknown channel', () => {
    assert.deepEqual(applied(state(), event('channel.left', { channel_id: 999, user_id: ME })), {});
  });
});

for (const type of ['channel.created', 'channel.updated'] as const) {
  describe(type, () => {
    it('adds a new channel, not mine yet', () => {
      const { member: _m, unread: _u, ...bare } = channel(200);
      assert.deepEqual(applied(state(), event(type, bare)).channels?.get(200), { ...bare, member: false, unread: 0 });
    });

    it('updates a known one, keeping membership and counts', () => {
      const { member: _m, unread: _u, ...bare } = channel(RANDOM, { topic: 'new topic' });
      assert.deepEqual(applied(state(), event(type, bare)).channels?.get(RANDOM), channel(RANDOM, { topic: 'new topic', unread: 3, unread_mentions: 1 }));
    });

    it("ignores another workspace's channel", () => {
      const { member: _m, unread: _u, ...bare } = channel(200, { workspace_id: 11 });
      assert.deepEqual(applied(state(), event(type, bare)), {});
    });
  });
}

describe('read.updated', () => {
  it("moves a channel's read cursor and counts (read on another tab or device)", () => {
    const u = applied(state(), event('read.updated', { channel_id: RANDOM, message_id: 7, unread: 1, unread_mentions: 0 }));
    assert.deepEqual(u.channels?.get(RANDOM), channel(RANDOM, { unread: 1, unread_mentions: 0, last_read: 7 }));
  });

  it('changes nothing for an unknown channel', () => {
    assert.deepEqual(applied(state(), event('read.updated', { channel_id: 999, message_id: 7, unread: 0, unread_mentions: 0 })), {});
  });
});

describe('presence.updated and presence.batch', () => {
  it('sets who is online', () => {
    const one = applied(state(), event('presence.updated', { user_id: BOB, online: true, status_text: '' }));
    assert.deepEqual(one, { online: new Map([[ME, true], [BOB, true]]) });
    const batch = applied(
      state({ online: new Map([[ME, true], [BOB, true]]) }),
      event('presence.batch', {
        groups: [
          { user_ids: [BOB], online: false, status_text: '' },
          { user_ids: [3, 4], online: true, status_text: 'here' },
        ],
      }),
    );
    assert.deepEqual(batch, {
      online: new Map([[ME, true], [BOB, false], [3, true], [4, true]]),
      statuses: new Map([[3, 'here'], [4, 'here']]),
    });
  });
});

describe('workspace.member_joined', () => {
  it('adds a new member of the open workspace', () => {
    const { user, role } = member(BOB);
    assert.deepEqual(applied(state(), event('workspace.member_joined', { workspace_id: WS, user, role })).members?.get(BOB), { user, role });
  });

  it('ignores a known member and other workspaces', () => {
    const { user, role } = member(ME);
    assert.deepEqual(applied(state(), event('workspace.member_joined', { workspace_id: WS, user, role: 'admin' })), {});
    assert.deepEqual(applied(state(), event('workspace.member_joined', { workspace_id: 11, user: member(BOB).user, role })), {});
  });
});

describe('workspace.joined', () => {
  const { role: _r, ...other } = workspace(11);

  it('adds the workspace', () => {
    assert.deepEqual(applied(state(), event('workspace.joined', { workspace: other, role: 'admin' })), {
      workspaces: [workspace(WS), { ...other, role: 'admin' }],
    });
  });

  it('opens it when it is the first', () => {
    const u = applied(state({ workspaceId: undefined, workspaces: [] }), event('workspace.joined', { workspace: other, role: 'member' }));
    assert.deepEqual(u.effects, [{ do: 'selectWorkspace', workspaceId: 11 }]);
  });

  it('changes nothing for a known workspace', () => {
    const { role: _, ...known } = workspace(WS);
    assert.deepEqual(applied(state(), event('workspace.joined', { workspace: known, role: 'member' })), {});
  });
});

describe('typing', () => {
  it('shows a typist until the expiry the server gives (5 s without one), per thread', () => {
    const u = applied(state(), event('typing', { channel_id: GENERAL, user_id: BOB, expires_in_ms: 3_000 }));
    assert.deepEqual(u.typing, new Map([[GENERAL, new Map([[0, new Map([[BOB, ENV.now + 3_000]])]])]]));
    assert.deepEqual(u.effects, [{ do: 'expireTyping' }]);

    // A server that predates `expires_in_ms`: the 5 s default.
    const old = { channel_id: GENERAL, thread_id: 1, user_id: 3 } as EventDataMap['typing'];
    const again = applied(state({ typing: u.typing! }), event('typing', old));
    assert.deepEqual(
      again.typing,
      new Map([[GENERAL, new Map([[0, new Map([[BOB, ENV.now + 3_000]])], [1, new Map([[3, ENV.now + 5_000]])]])]]),
    );
  });
});

describe('mention.created', () => {
  const reply = (id: number, extra: Partial<Message> = {}) => message(id, { thread_id: 1, mentions: [ME], ...extra });

  it('counts a reply that mentions me on its channel, once', () => {
    const u = applied(state({ thread: undefined }), event('mention.created', { message: reply(7), channel_id: GENERAL }));
    assert.deepEqual(u.threadMentions, new Map([[GENERAL, new Map([[7, 1]])]]));
    const again = applied(state({ threadMentions: u.threadMentions! }), event('mention.created', { message: reply(7), channel_id: GENERAL }));
    assert.deepEqual(again, {});
  });

  it('not when its thread is open and visible, for a top-level message, or for my own', () => {
    const open = state({ thread: { channelId: GENERAL, rootId: 1, replies: [], loading: false } });
    assert.deepEqual(applied(open, event('mention.created', { message: reply(7), channel_id: GENERAL })), {});
    assert.notDeepEqual(applied(open, event('mention.created', { message: reply(7), channel_id: GENERAL }), { ...ENV, visible: false }), {});
    assert.deepEqual(applied(state(), event('mention.created', { message: message(7, { mentions: [ME] }), channel_id: GENERAL })), {});
    assert.deepEqual(applied(state(), event('mention.created', { message: reply(7, { author_id: ME }), channel_id: GENERAL })), {});
  });

  it('forgets one whose message was deleted', () => {
    const s = state({ threadMentions: new Map([[GENERAL, new Map([[7, 1], [8, 1]])]]) });
    const u = applied(s, event('message.deleted', { id: 7, channel_id: GENERAL, thread_id: 1 }));
    assert.deepEqual(u.threadMentions, new Map([[GENERAL, new Map([[8, 1]])]]));
  });
});

describe('message.pinned and message.unpinned', () => {
  const pin = { channel_id: GENERAL, message: message(1), pinned_by: BOB, pinned_at: '2026-01-01T00:00:00Z' };

  it('marks the message, and updates a loaded pin list (newest first)', () => {
    const older = { ...pin, message: message(2) };
    const u = applied(state({ pins: new Map([[GENERAL, [older]]]) }), event('message.pinned', pin));
    assert.equal(u.put?.[0]?.pinned, true);
    assert.deepEqual(u.pins?.get(GENERAL), [pin, older]);
    // A pin list not loaded stays so.
    assert.equal(applied(state(), event('message.pinned', pin)).pins, undefined);
  });

  it('unpins', () => {
    const s = state({ pins: new Map([[GENERAL, [pin]]]), lists: new Map([[GENERAL, { items: [message(1, { pinned: true })], complete: true, loading: false }]]) });
    const u = applied(s, event('message.unpinned', { channel_id: GENERAL, message_id: 1, user_id: BOB }));
    assert.equal(u.put?.[0]?.pinned, false);
    assert.deepEqual(u.pins?.get(GENERAL), []);
  });
});

describe('roles, members and workspaces leaving', () => {
  it('member.role_changed updates the member and my own role', () => {
    const s = state({ members: new Map([[ME, member(ME)], [BOB, member(BOB)]]) });
    const u = applied(s, event('member.role_changed', { workspace_id: WS, user_id: BOB, role: 'admin' }));
    assert.equal(u.members?.get(BOB)?.role, 'admin');
    const mine = applied(s, event('member.role_changed', { workspace_id: WS, user_id: ME, role: 'admin' }));
    assert.equal(mine.workspaces?.[0]?.role, 'admin');
  });

  it('member.left on the workspace removes the member; on a channel it changes nothing', () => {
    const s = state({ members: new Map([[ME, member(ME)], [BOB, member(BOB)]]) });
    assert.equal(applied(s, event('member.left', { workspace_id: WS, user_id: BOB } as never)).members?.has(BOB), false);
    assert.deepEqual(applied(s, event('member.left', { channel_id: GENERAL, user_id: BOB })), {});
  });

  it('workspace.left drops the workspace, and leaves it when it is open', () => {
    const s = state({ workspaces: [workspace(WS), workspace(11)] });
    assert.deepEqual(applied(s, event('workspace.left', { workspace_id: 11 })), { workspaces: [workspace(WS)] });
    assert.deepEqual(applied(s, event('workspace.left', { workspace_id: WS })), {
      workspaces: [workspace(11)],
      effects: [{ do: 'leftWorkspace', workspaceId: WS }],
    });
  });

  it('presence carries status texts', () => {
    const u = applied(state(), event('presence.updated', { user_id: BOB, online: true, status_text: 'on holiday' }));
    assert.deepEqual(u.statuses, new Map([[BOB, 'on holiday']]));
    const cleared = applied(state({ statuses: new Map([[BOB, 'on holiday']]) }), event('presence.updated', { user_id: BOB, online: true, status_text: '' }));
    assert.deepEqual(cleared.statuses, new Map());
  });
});

describe('event types the UI ignores', () => {
  it('changes nothing for the documented ones it does not show', () => {
    const s = state();
    assert.equal(apply(s, event('member.joined', { channel_id: GENERAL, user_id: BOB })), undefined);
    assert.equal(apply(s, event('subscription.revoked', { scope: 'channel:1', reason: 'channel_left' })), undefined);
    assert.equal(apply(s, event('credentials.revoked', { reason: 'deactivated' })), undefined);
  });

  it('changes nothing for types from a newer server, whatever their name', () => {
    for (const type of ['poll.created', 'constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      assert.equal(apply(state(), { op: 'event', scope: 'test', type, data: {} }), undefined, type);
    }
  });
});
