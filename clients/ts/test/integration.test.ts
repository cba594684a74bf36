// Against a real Chorus server (see server.ts): no mocks. The tests share one server
// and run in order; the restart test comes last.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';

import {
  ChorusError,
  ChorusHttp,
  ChorusRealtime,
  isEvent,
  type Channel,
  type ChorusEvent,
  type ConnectionState,
  type Message,
  type ScopeResume,
  type User,
  type UserId,
  type UserView,
  type Workspace,
} from '../src/index.js';
import { ADMIN_TOKEN, TestServer } from './server.js';
import { faultyWebSocket } from './sockets.js';

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}


/** Records everything a realtime client reports. */
function record(rt: ChorusRealtime) {
  const events: ChorusEvent[] = [];
  const states: ConnectionState[] = [];
  const resumes: Record<string, ScopeResume>[] = [];
  const gaps: { scope: string; reason: string }[] = [];
  rt.on('event', (ev) => events.push(ev));
  rt.on('state', (s) => states.push(s));
  rt.on('resume', (r) => resumes.push(r));
  rt.on('gap', (g) => gaps.push(g));
  const messages = (channel: number) =>
    events.filter((e): e is ChorusEvent<Message> => isEvent(e, 'message.created') && e.scope === `channel:${channel}`);
  return { events, states, resumes, gaps, messages };
}

describe('against a real server', () => {
  let server: TestServer;
  let admin: ChorusHttp;
  let alice: ChorusHttp;
  let bob: ChorusHttp;
  let bobUser: User;
  let workspace: Workspace;
  let general: Channel;
  let secret: Channel;
  const clients: ChorusRealtime[] = [];

  const realtime = (http: ChorusHttp, extra: Partial<ConstructorParameters<typeof ChorusRealtime>[1]> = {}) => {
    const rt = new ChorusRealtime(server.baseUrl, {
      token: http.token!,
      WebSocket,
      backoff: { baseMs: 100, capMs: 800 },
      ...extra,
    });
    clients.push(rt);
    return rt;
  };

  before(async () => {
    server = await TestServer.start();
    admin = new ChorusHttp(server.baseUrl, { token: ADMIN_TOKEN });
    const a = await admin.createUser({ name: 'alice' });
    const b = await admin.createUser({ name: 'bob', display_name: 'Bob' });
    alice = admin.withToken(a.token);
    bob = admin.withToken(b.token);
    bobUser = b.user;
    workspace = await alice.createWorkspace('acme');
    await alice.addWorkspaceMember(workspace.id, { user_id: bobUser.id, role: 'member' });
    general = await alice.createChannel(workspace.id, { name: 'general', member_ids: [bobUser.id] });
    secret = await alice.createChannel(workspace.id, { name: 'secret', kind: 'private' });
  });

  after(async () => {
    for (const rt of clients) rt.close();
    await server?.dispose();
  });

  test('HTTP: typed routes, errors as ChorusError, dev login', async () => {
    assert.equal((await bob.me()).name, 'bob');
    const workspaces = await bob.listWorkspaces();
    assert.deepEqual(workspaces.map((w) => [w.name, w.role]), [['acme', 'member']]);
    const channels = await bob.listChannels(workspace.id);
    assert.ok(channels.some((c) => c.id === general.id && c.member));
    assert.ok(!channels.some((c) => c.id === secret.id), 'private channel hidden from non-members');
    const members = await alice.listWorkspaceMembers(workspace.id);
    assert.deepEqual(members.map((m) => m.user.name).sort(), ['alice', 'bob']);
    for (const m of members) assert.ok(!('is_admin' in m.user) && !('webhook_url' in m.user), 'members are profiles');
    const aliceId = members.find((m) => m.user.name === 'alice')!.user.id;
    const userView = async (id: UserId): Promise<UserView> =>
      (await fetch(`${server.baseUrl}/api/v1/users/${id}`, { headers: { authorization: `Bearer ${bob.token}` } })).json();
    assert.ok(!('is_admin' in (await userView(aliceId))), "someone else's record is their profile");
    assert.equal(((await userView(bobUser.id)) as User).is_admin, false, "one's own record is whole");

    await assert.rejects(bob.getChannel(secret.id), (err: unknown) => {
      assert.ok(err instanceof ChorusError);
      assert.equal(err.status, 403);
      assert.equal(err.code, 'forbidden');
      return true;
    });
    await assert.rejects(bob.createUser({ name: 'mallory' }), { code: 'forbidden', status: 403 });
    await assert.rejects(bob.getChannel(999_999), { code: 'not_found', status: 404 });
    const stranger = new ChorusHttp(server.baseUrl, { token: 'chr_nope' });
    await assert.rejects(stranger.me(), { code: 'unauthorized', status: 401 });

    const dev = await new ChorusHttp(server.baseUrl).devLogin('devuser');
    assert.equal(dev.user.name, 'devuser');
    assert.equal((await admin.withToken(dev.token).me()).id, dev.user.id);

    const sent = await alice.sendMessage(general.id, 'to edit');
    const edited = await alice.editMessage(sent.message.id, 'edited');
    assert.equal(edited.text, 'edited');
    assert.ok(edited.edited_at);
    const deleted = await alice.deleteMessage(sent.message.id);
    assert.equal(deleted.deleted, true);
    await assert.rejects(bob.editMessage(sent.message.id, 'x'), ChorusError);
    const dm = await alice.openDm(workspace.id, [bobUser.id]);
    assert.equal(dm.created, true);
    assert.equal((await bob.openDm(workspace.id, [dm.channel.member_ids!.find((id) => id !== bobUser.id)!])).created, false);
  });

  test('HTTP: reactions, pins, read cursor, presence (skipped on servers without them)', async (t) => {
    const { message } = await alice.sendMessage(general.id, 'react to me');
    let reacted;
    try {
      reacted = await bob.addReaction(message.id, '👍');
    } catch (err) {
      if (err instanceof ChorusError && err.code === 'not_found' && /route/.test(err.message)) {
        return t.skip('this server has no reactions route');
      }
      throw err;
    }
    assert.deepEqual(reacted.reactions, [{ emoji: '👍', count: 1, user_ids: [bobUser.id] }]);
    assert.deepEqual((await bob.removeReaction(message.id, '👍')).reactions, []);
    const pin = await alice.pinMessage(message.id);
    assert.equal(pin.message.id, message.id);
    assert.deepEqual((await bob.listPins(general.id)).map((p) => p.message.id), [message.id]);
    await alice.unpinMessage(message.id);
    assert.deepEqual(await bob.listPins(general.id), []);
    const read = await bob.markRead(general.id, message.id);
    assert.equal(read.message_id, message.id);
    assert.equal(read.unread, 0);
    assert.equal((await bob.setStatus('testing')).status_text, 'testing');
    assert.equal((await bob.myPresence()).status_text, 'testing');
    const everyone = await alice.workspacePresence(workspace.id);
    assert.ok(everyone.some((p) => p.user_id === bobUser.id && p.status_text === 'testing'));
  });

  test('hello, then a live message.created delivered once', async () => {
    const rt = realtime(bob);
    const rec = record(rt);
    const hello = await rt.connect();
    assert.equal(hello.v, 1);
    assert.equal(hello.user_id, bobUser.id);
    assert.ok(hello.scopes.includes(`user:${bobUser.id}`));
    assert.ok(hello.scopes.includes(`workspace:${workspace.id}`));
    assert.ok(hello.scopes.includes(`channel:${general.id}`));
    assert.equal(rt.state, 'open');
    assert.deepEqual(rec.states, ['connecting', 'open']);

    const { message } = await alice.sendMessage(general.id, 'hello bob');
    const got = await waitFor('the live message', () => rec.messages(general.id).find((e) => e.data.id === message.id));
    assert.equal(got.data.text, 'hello bob');
    assert.equal(got.replayed, undefined);
    assert.ok(typeof got.offset === 'number');
    await rt.ping(); // a barrier: a duplicate would have come before its answer
    assert.equal(rec.messages(general.id).filter((e) => e.data.id === message.id).length, 1);
    assert.equal(rt.positionsSnapshot[`channel:${general.id}`], got.offset);

    // The async iterator sees the same stream.
    const iter = rt.events();
    const next = iter.next();
    const second = await alice.sendMessage(general.id, 'via iterator');
    const { value } = await next;
    assert.ok(value && isEvent(value, 'message.created'));
    assert.equal(value.data.id, second.message.id);
    await iter.return?.();

    assert.ok((await rt.ping()) >= 0);
    rt.close();
    assert.equal(rt.state, 'closed');
  });

  test('slash commands: runCommand answers (and command.result), registered commands, literal sends', async () => {
    const rt = realtime(alice);
    const rec = record(rt);
    await rt.connect();
    const result = await alice.runCommand(general.id, '/topic from TS');
    assert.equal(result.ok, true);
    assert.equal(result.command, 'topic');
    const heard = await waitFor('command.result', () => rec.events.find((e) => isEvent(e, 'command.result')));
    assert.ok(isEvent(heard, 'command.result'));
    assert.deepEqual(heard.data, result);
    const action = await bob.runCommand(general.id, '/me waves');
    assert.equal(action.message?.kind, 'action');
    await assert.rejects(alice.runCommand(general.id, '/nope'), { code: 'unknown_command', status: 400 });
    const literal = await alice.sendMessage(general.id, '/topic is literal');
    assert.equal(literal.message.text, '/topic is literal');

    const hook = await alice.createCommand(workspace.id, { name: 'ci', description: 'run CI', webhook_url: 'https://ci.example.com/hook' });
    assert.ok(hook.webhook_secret);
    assert.deepEqual((await bob.listCommands(workspace.id)).map((c) => c.name), ['ci']);
    await assert.rejects(bob.deleteCommand(workspace.id, hook.id), { code: 'forbidden' });
    await alice.deleteCommand(workspace.id, hook.id);
    assert.deepEqual(await alice.listCommands(workspace.id), []);
    rt.close();
  });

  test('subscribe: forbidden rejects; topics deliver published events; typing reaches others', async () => {
    const rt = realtime(bob);
    const rec = record(rt);
    await rt.connect();
    await assert.rejects(rt.subscribe(`channel:${secret.id}`), (err: unknown) => {
      assert.ok(err instanceof ChorusError);
      assert.equal(err.code, 'forbidden');
      return true;
    });
    await assert.rejects(rt.subscribe('nonsense:1'), { code: 'not_found' });
    await assert.rejects(rt.unsubscribe(`user:${bobUser.id}`), { code: 'bad_request' });

    const ack = await rt.subscribe('topic:deploys');
    assert.equal(ack.scope, 'topic:deploys');
    const published = await admin.publish({ scope: 'topic:deploys', type: 'deploy.done', data: { v: 7 } });
    const ev = await waitFor('the published event', () => rec.events.find((e) => e.scope === 'topic:deploys'));
    assert.deepEqual(ev.data, { v: 7 });
    assert.equal(ev.offset, published.offset);
    await rt.unsubscribe('topic:deploys');
    assert.ok(!rt.subscribedScopes.includes('topic:deploys'));

    const watcher = realtime(alice);
    const seen = record(watcher);
    await watcher.connect();
    await rt.typing(general.id);
    const typing = await waitFor('typing', () => seen.events.find((e) => isEvent(e, 'typing')));
    assert.ok(isEvent(typing, 'typing'));
    assert.equal(typing.data.user_id, bobUser.id);
    assert.equal(typing.offset, undefined);
    rt.close();
    watcher.close();
  });

  test('a bad token closes the client with unauthorized', async () => {
    const rt = new ChorusRealtime(server.baseUrl, { token: 'chr_bad', WebSocket, backoff: { baseMs: 50, capMs: 100 } });
    await assert.rejects(rt.connect(), { code: 'unauthorized' });
    assert.equal(rt.state, 'closed');
  });

  test('tokens: created, listed without secrets, revoked; the socket it opened closes for good', async () => {
    const created = await bob.createToken(bobUser.id, { name: 'tab', expires_in: 3600 });
    assert.ok(created.token.startsWith('chr_') && created.expires_at);
    const tab = admin.withToken(created.token);
    assert.equal((await tab.me()).id, bobUser.id);
    const listed = await bob.listTokens(bobUser.id);
    assert.deepEqual(listed.map((t) => t.name), ['default', 'tab']);
    assert.ok(listed.every((t) => !('token' in t)), 'no secret in a listing');
    await assert.rejects(alice.listTokens(bobUser.id), { code: 'forbidden', status: 403 });

    const rt = realtime(tab);
    const { events, states } = record(rt);
    const errors: ChorusError[] = [];
    rt.on('error', (err) => errors.push(err));
    await rt.connect();
    await bob.revokeToken(bobUser.id, created.id);
    await waitFor('the close', () => states.includes('closed'));
    // The application is told to sign in again, as after a refused connect.
    assert.deepEqual(errors.map((e) => e.code), ['unauthorized']);
    const revoked = events.find((e) => isEvent(e, 'credentials.revoked'));
    assert.ok(revoked && isEvent(revoked, 'credentials.revoked'));
    assert.deepEqual(revoked.data, { reason: 'token_revoked', token_id: created.id });
    assert.ok(!states.includes('reconnecting'), `3502 is not retried: ${states.join(' ')}`);
    await assert.rejects(tab.me(), { code: 'unauthorized', status: 401 });
  });

  test('users: listed by a server admin, deactivated and reactivated', async () => {
    const dave = await admin.createUser({ name: 'dave' });
    const users = await admin.listUsers({ after: dave.user.id - 1, limit: 1 });
    assert.deepEqual(users.map((u) => u.name), ['dave']);
    await assert.rejects(bob.listUsers(), { code: 'forbidden', status: 403 });
    const off = await admin.deactivateUser(dave.user.id);
    assert.ok(off.deactivated_at);
    await assert.rejects(admin.withToken(dave.token).me(), { code: 'unauthorized', status: 401 });
    const on = await admin.reactivateUser(dave.user.id);
    assert.equal(on.deactivated_at, undefined);
    assert.equal((await admin.withToken(dave.token).me()).name, 'dave');
  });

  test('idempotent send: one key per logical send, reused on retry', async () => {
    const rt = realtime(bob);
    const rec = record(rt);
    await rt.connect();

    const first = await alice.sendMessage(general.id, 'once', { idempotencyKey: 'key-1' });
    const again = await alice.sendMessage(general.id, 'once', { idempotencyKey: 'key-1' });
    assert.equal(first.replayed, false);
    assert.equal(again.replayed, true);
    assert.equal(again.message.id, first.message.id);

    // A send whose first answer is lost: the server created the message, the client saw
    // a network error and retried with the same key.
    let calls = 0;
    const lossy: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (calls++ === 0) throw new TypeError('fetch failed (answer lost)');
      return res;
    };
    const flaky = new ChorusHttp(server.baseUrl, { token: alice.token!, fetch: lossy });
    const retried = await flaky.sendMessage(general.id, 'lost answer');
    assert.equal(calls, 2);
    assert.equal(retried.replayed, true);

    await waitFor('both messages', () => rec.messages(general.id).some((e) => e.data.id === retried.message.id));
    await rt.ping(); // a barrier: a second copy would have come before its answer
    const texts = rec.messages(general.id).map((e) => e.data.text);
    assert.deepEqual(texts, ['once', 'lost answer']);
    const history = await bob.listMessages(general.id, { after: first.message.id - 1 });
    assert.deepEqual(history.map((m) => m.text), ['once', 'lost answer']);
    rt.close();
  });

  test('a dropped socket reconnects and resumes: recovered, each event once, in order', async () => {
    const { gate, FaultyWebSocket, cut } = faultyWebSocket();
    const rt = realtime(bob, { WebSocket: FaultyWebSocket });
    const rec = record(rt);
    await rt.connect();
    const before = await alice.sendMessage(general.id, 'before drop');
    await waitFor('before drop', () => rec.messages(general.id).some((e) => e.data.id === before.message.id));

    gate.open = false;
    cut();
    await waitFor('the drop', () => rt.state === 'reconnecting');
    const missed: number[] = [];
    for (const text of ['gap 1', 'gap 2', 'gap 3']) missed.push((await alice.sendMessage(general.id, text)).message.id);
    await waitFor('an attempt refused, in backoff', () => gate.refused > 0);
    gate.open = true;

    await waitFor('resume', () => rec.resumes.length > 0);
    const after = await alice.sendMessage(general.id, 'after resume');
    await waitFor('after resume', () => rec.messages(general.id).some((e) => e.data.id === after.message.id));
    await rt.ping(); // a barrier: a duplicate would have come before its answer

    const ids = rec.messages(general.id).map((e) => e.data.id);
    assert.deepEqual(ids, [before.message.id, ...missed, after.message.id]);
    assert.ok(rec.messages(general.id).every((e) => !e.replayed), 'replayed by the server, not over HTTP');
    assert.equal(rec.resumes[0]![`channel:${general.id}`]?.recovered, true);
    assert.deepEqual(rec.gaps, []);
    assert.deepEqual(rec.states, ['connecting', 'open', 'reconnecting', 'open']);
    const offsets = rec.events.filter((e) => e.scope === `channel:${general.id}`).map((e) => e.offset!);
    assert.deepEqual(offsets, [...offsets].sort((x, y) => x - y));
    rt.close();
  });

  test('scopeEvents: a scope\'s events page by page, as the socket delivered them', async () => {
    const rt = realtime(bob);
    const rec = record(rt);
    const hello = await rt.connect();
    const scope = `channel:${general.id}`;
    const start = hello.offsets?.[scope] ?? 0;
    for (const text of ['e1', 'e2', 'e3']) await alice.sendMessage(general.id, text);
    await waitFor('the live messages', () => rec.messages(general.id).length >= 3);
    await rt.ping(); // a barrier: every event of the sends has arrived
    const live = rec.events.filter((e) => e.scope === scope && e.offset !== undefined);

    const read: ChorusEvent[] = [];
    let head = 0;
    for (let after = start; ; ) {
      const page = await bob.scopeEvents(scope, after, 2);
      assert.equal(page.scope, scope);
      assert.ok(page.events.length <= 2, `a page of ${page.events.length}`);
      read.push(...page.events.map(({ wake, ...e }) => ({ op: 'event' as const, ...e, ...(wake != null && { wake }) })));
      head = page.head;
      if (!page.more) break;
      assert.ok(page.next > after);
      after = page.next;
    }
    const shape = (e: ChorusEvent) => [e.offset, e.type, e.data, e.wake];
    assert.deepEqual(read.map(shape), live.map(shape));

    // Past the head (a position of another database): gone; reload instead.
    await assert.rejects(bob.scopeEvents(scope, head + 100), (err) => err instanceof ChorusError && err.status === 410 && err.code === 'gone');
    // Authorized like a subscription.
    await assert.rejects(alice.scopeEvents(`user:${bobUser.id}`, 0), (err) => err instanceof ChorusError && err.code === 'forbidden');
    rt.close();
  });

  test('past the resume window, still in the event log: recovered:false, the events caught up over HTTP as live', async () => {
    // A server of its own whose resume replays at most 3 events per scope; its event
    // log is trimmed to that only once a minute, so the missed events are still there.
    const small = await TestServer.start(['--retention-events', '3']);
    try {
      const admin = new ChorusHttp(small.baseUrl, { token: ADMIN_TOKEN });
      const carol = admin.withToken((await admin.createUser({ name: 'carol' })).token);
      const ws = await carol.createWorkspace('w');
      const channel = await carol.createChannel(ws.id, { name: 'c' });
      const { gate, FaultyWebSocket, cut } = faultyWebSocket();
      const rt = new ChorusRealtime(small.baseUrl, { token: carol.token!, WebSocket: FaultyWebSocket, backoff: { baseMs: 100, capMs: 800 } });
      clients.push(rt);
      const rec = record(rt);
      await rt.connect();
      const sent = [(await carol.sendMessage(channel.id, 'm1')).message.id];
      await waitFor('m1', () => rec.messages(channel.id).length === 1);

      gate.open = false;
      cut();
      await waitFor('the drop', () => rt.state === 'reconnecting');
      for (const text of ['m2', 'm3', 'm4', 'm5', 'm6']) sent.push((await carol.sendMessage(channel.id, text)).message.id);
      gate.open = true;

      await waitFor('the resume answer', () => rec.resumes.length > 0);
      assert.equal(rec.resumes[0]![`channel:${channel.id}`]?.recovered, false);
      await waitFor('the catch-up', () => rec.messages(channel.id).length >= 6);
      sent.push((await carol.sendMessage(channel.id, 'm7')).message.id);
      await waitFor('m7 live', () => rec.messages(channel.id).length >= 7);
      await rt.ping(); // a barrier: a duplicate would have come before its answer

      const got = rec.messages(channel.id);
      assert.deepEqual(got.map((e) => e.data.id), sent);
      assert.ok(got.every((e) => !e.replayed && e.offset !== undefined), 'from the event log, with offsets, as live');
      const offsets = got.map((e) => e.offset!);
      assert.deepEqual(offsets, [...offsets].sort((x, y) => x - y));
      assert.deepEqual(rec.gaps, []);
      rt.close();
    } finally {
      await small.dispose();
    }
  });

  test('after a server restart: reconnect, the event log kept the window: recovered, each message once in order', async () => {
    const { gate, FaultyWebSocket } = faultyWebSocket();
    const rt = realtime(bob, { WebSocket: FaultyWebSocket });
    const rec = record(rt);
    const disconnects: number[] = [];
    rt.on('disconnect', (d) => disconnects.push(d.code));
    await rt.connect();
    const sent: number[] = [];
    for (const text of ['m1', 'm2']) sent.push((await alice.sendMessage(general.id, text)).message.id);
    await waitFor('m1, m2', () => rec.messages(general.id).length === 2);

    // Keep the client in backoff while the server restarts and messages are sent.
    gate.open = false;
    assert.equal(await server.stop('SIGTERM'), 0);
    await waitFor('the shutdown close', () => rt.state === 'reconnecting');
    assert.equal(disconnects[0], 3001);
    await server.start();
    for (const text of ['m3', 'm4', 'm5']) sent.push((await alice.sendMessage(general.id, text)).message.id);
    gate.open = true;

    await waitFor('the resume answer', () => rec.resumes.length > 0);
    assert.equal(rec.resumes[0]![`channel:${general.id}`]?.recovered, true);
    await waitFor('the replay', () => rec.messages(general.id).length >= 5);
    sent.push((await alice.sendMessage(general.id, 'm6')).message.id);
    await waitFor('m6 live', () => rec.messages(general.id).length >= 6);
    await rt.ping(); // a barrier: a duplicate would have come before its answer

    const got = rec.messages(general.id);
    assert.deepEqual(got.map((e) => e.data.id), sent);
    assert.deepEqual(got.map((e) => e.data.text), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6']);
    assert.ok(got.every((e) => !e.replayed), 'replayed by the server, not over HTTP');
    assert.equal(rt.state, 'open');
    assert.deepEqual(rec.gaps, []);
    rt.close();
  });
});
