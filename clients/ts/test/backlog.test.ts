// The client's queues have caps, against a real server (see server.ts): an `events()`
// consumer that falls behind loses the oldest events and is told so with a gap; a
// scope's events held while it resumes or catches up are dropped past their cap and
// read again from the scope's event log, so none is lost.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';

import {
  ChorusHttp,
  ChorusRealtime,
  isEvent,
  RESUME_GAP,
  type Channel,
  type ChorusEvent,
  type GapData,
  type Message,
  type ScopeResume,
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

/** A `fetch` that records the scope-events pages asked for; `hold` (when set) is awaited
 * after a page's answer arrived and before the client gets it. */
function spyFetch() {
  const replays: string[] = [];
  const spy = { replays, hold: undefined as Promise<void> | undefined, answered: 0 };
  const wrapped: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const replay = url.pathname.startsWith('/api/v1/scopes/');
    if (replay) replays.push(`${url.pathname}${url.search}`);
    const res = await fetch(input, init);
    if (replay) {
      spy.answered += 1;
      if (spy.hold) await spy.hold;
    }
    return res;
  };
  return { spy, fetch: wrapped };
}

let users = 0;

/** A user who sends and one who listens, in a channel of their own. */
async function setUp(server: TestServer) {
  const admin = new ChorusHttp(server.baseUrl, { token: ADMIN_TOKEN });
  const n = ++users;
  const alice = admin.withToken((await admin.createUser({ name: `alice${n}` })).token);
  const bob = await admin.createUser({ name: `bob${n}` });
  const ws = await alice.createWorkspace('w');
  await alice.addWorkspaceMember(ws.id, { user_id: bob.user.id, role: 'member' });
  const channel: Channel = await alice.createChannel(ws.id, { name: 'c', member_ids: [bob.user.id] });
  return { alice, bobToken: bob.token, channel };
}

/** Everything a realtime client hands out, and its resume answers and gaps. */
function record(rt: ChorusRealtime, channel: Channel) {
  const events: ChorusEvent[] = [];
  const resumes: Record<string, ScopeResume>[] = [];
  const gaps: GapData[] = [];
  rt.on('event', (ev) => events.push(ev));
  rt.on('resume', (r) => resumes.push(r));
  rt.on('gap', (g) => gaps.push(g));
  const messages = () =>
    events.filter((e): e is ChorusEvent<Message> => isEvent(e, 'message.created') && e.scope === `channel:${channel.id}`);
  return { events, resumes, gaps, messages };
}

const clients: ChorusRealtime[] = [];
let server: TestServer;

before(async () => {
  server = await TestServer.start();
});

after(async () => {
  for (const rt of clients) rt.close();
  await server?.dispose();
});

test('events(): a consumer past maxQueuedEvents loses the oldest and gets a resume.gap first', async () => {
  const { alice, bobToken, channel } = await setUp(server);
  const rt = new ChorusRealtime(server.baseUrl, { token: bobToken, WebSocket, maxQueuedEvents: 3 });
  clients.push(rt);
  const rec = record(rt, channel);
  await rt.connect();
  const iter = rt.events();

  const sent: number[] = [];
  for (let i = 1; i <= 8; i++) sent.push((await alice.sendMessage(channel.id, `m${i}`)).message.id);
  await waitFor('every message', () => rec.messages().length === 8);
  await rt.ping(); // a barrier: every event of the sends has arrived

  // What the iterator kept: three events, after one gap per scope that lost some.
  const read: ChorusEvent[] = [];
  for (;;) {
    const { value } = await iter.next();
    assert.ok(value);
    read.push(value);
    if (isEvent(value, 'message.created') && value.data.id === sent.at(-1)) break;
  }
  const gaps = read.filter((e) => e.type === RESUME_GAP);
  const kept = read.filter((e) => e.type !== RESUME_GAP);
  assert.equal(read[0]?.type, RESUME_GAP, 'the gap comes first');
  assert.deepEqual(read.slice(0, gaps.length), gaps, 'then the events still queued');
  assert.ok(kept.length <= 3, `at most the cap kept: ${kept.length}`);
  const keptIds = kept.filter((e) => isEvent(e, 'message.created')).map((e) => (e.data as Message).id);
  assert.deepEqual(keptIds, sent.slice(sent.length - keptIds.length), 'the newest kept, in order');
  const gap = gaps.find((g) => g.scope === `channel:${channel.id}`);
  assert.ok(gap, 'the channel is reported');
  assert.equal(gap.offset, undefined);
  assert.equal((gap.data as GapData).scope, gap.scope);
  assert.equal((gap.data as GapData).dropped, sent.length - keptIds.length, "the channel's dropped events counted");
  await iter.return?.();
  rt.close();
});

test('held over maxHeldEvents during a resume: dropped, read again from the event log, none lost', async () => {
  const { alice, bobToken, channel } = await setUp(server);
  const { gate, FaultyWebSocket, cut } = faultyWebSocket();
  const { spy, fetch } = spyFetch();
  const rt = new ChorusRealtime(server.baseUrl, {
    token: bobToken,
    WebSocket: FaultyWebSocket,
    http: new ChorusHttp(server.baseUrl, { token: bobToken, fetch }),
    backoff: { baseMs: 100, capMs: 400 },
    maxHeldEvents: 3,
  });
  clients.push(rt);
  const rec = record(rt, channel);
  await rt.connect();
  const sent = [(await alice.sendMessage(channel.id, 'm1')).message.id];
  await waitFor('m1', () => rec.messages().length === 1);

  gate.open = false;
  cut();
  await waitFor('the drop', () => rt.state === 'reconnecting');
  for (let i = 2; i <= 9; i++) sent.push((await alice.sendMessage(channel.id, `m${i}`)).message.id);
  gate.open = true;

  // The server replays the eight before its answer: more than the client holds.
  await waitFor('the resume answer', () => rec.resumes.length > 0);
  assert.equal(rec.resumes[0]![`channel:${channel.id}`]?.recovered, true);
  await waitFor('the missed messages', () => rec.messages().length >= 9);
  sent.push((await alice.sendMessage(channel.id, 'm10')).message.id);
  await waitFor('m10 live', () => rec.messages().length >= 10);
  await rt.ping(); // a barrier: a duplicate would have come before its answer

  const got = rec.messages();
  assert.deepEqual(got.map((e) => e.data.id), sent, 'each message once, in order');
  assert.ok(got.every((e) => !e.replayed && e.offset !== undefined), 'from the event log, with offsets');
  assert.ok(
    spy.replays.some((r) => r.startsWith(`/api/v1/scopes/channel%3A${channel.id}/events?after=`)),
    `read again over HTTP: ${spy.replays.join(' ')}`,
  );
  assert.deepEqual(rec.gaps, []);
  rt.close();
});

test('held over maxHeldEvents during an HTTP catch-up: the catch-up reads on, none lost', async () => {
  // A resume replays at most 3 events per scope here: five missed ones are caught up
  // over HTTP, and live ones pile up behind that catch-up meanwhile.
  const small = await TestServer.start(['--retention-events', '3']);
  try {
    const { alice, bobToken, channel } = await setUp(small);
    const { gate, FaultyWebSocket, cut } = faultyWebSocket();
    const { spy, fetch } = spyFetch();
    const rt = new ChorusRealtime(small.baseUrl, {
      token: bobToken,
      WebSocket: FaultyWebSocket,
      http: new ChorusHttp(small.baseUrl, { token: bobToken, fetch }),
      backoff: { baseMs: 100, capMs: 400 },
      maxHeldEvents: 3,
    });
    clients.push(rt);
    const rec = record(rt, channel);
    await rt.connect();
    const sent = [(await alice.sendMessage(channel.id, 'm1')).message.id];
    await waitFor('m1', () => rec.messages().length === 1);

    gate.open = false;
    cut();
    await waitFor('the drop', () => rt.state === 'reconnecting');
    for (let i = 2; i <= 6; i++) sent.push((await alice.sendMessage(channel.id, `m${i}`)).message.id);
    let letGo!: () => void;
    spy.hold = new Promise<void>((r) => (letGo = r));
    gate.open = true;

    await waitFor('the resume answer', () => rec.resumes.length > 0);
    assert.equal(rec.resumes[0]![`channel:${channel.id}`]?.recovered, false);
    // The catch-up's first page is read (m2..m6) but held back; five live ones arrive.
    await waitFor('the first page', () => spy.answered >= 1);
    for (let i = 7; i <= 11; i++) sent.push((await alice.sendMessage(channel.id, `m${i}`)).message.id);
    await rt.ping(); // a barrier: the live events have arrived (and are held)
    spy.hold = undefined;
    letGo();

    await waitFor('every message', () => rec.messages().length >= 11);
    await rt.ping(); // a barrier: a duplicate would have come before its answer
    const got = rec.messages();
    assert.deepEqual(got.map((e) => e.data.id), sent, 'each message once, in order');
    assert.ok(got.every((e) => !e.replayed && e.offset !== undefined), 'from the event log, with offsets');
    const pages = spy.replays.filter((r) => r.startsWith(`/api/v1/scopes/channel%3A${channel.id}/events?`));
    assert.equal(pages.length, 2, `the catch-up read on past its first end: ${pages.join(' ')}`);
    assert.deepEqual(rec.gaps, []);
    rt.close();
  } finally {
    await small.dispose();
  }
});
