// The catch-up after `recovered: false`, against a scripted server: the test plays the
// WebSocket (hello, the resume's answer, live events) and answers the HTTP requests, so
// it can give answers a real server gives only in rare states (a scope still in the
// event log that the resume did not recover; an older server without the events route).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ChorusHttp, ChorusRealtime, type ChorusEvent, type WebSocketLike } from '../src/index.js';

/** WebSockets the test drives: what the client sends is kept, what the "server" sends
 * is handed to the client's handlers. */
function scriptedSockets() {
  const sockets: Scripted[] = [];
  class Scripted implements WebSocketLike {
    readyState = 1;
    onopen: ((ev: unknown) => void) | null = null;
    onmessage: ((ev: { data: string }) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    onerror: ((ev: unknown) => void) | null = null;
    readonly sent: Record<string, unknown>[] = [];
    constructor(readonly url: string) {
      sockets.push(this);
    }
    send(data: string): void {
      this.sent.push(JSON.parse(data) as Record<string, unknown>);
    }
    close(): void {
      this.readyState = 3;
    }
    /** A frame from the server. */
    frame(value: object): void {
      this.onmessage?.({ data: JSON.stringify(value) });
    }
    /** The connection is lost (1006). */
    drop(): void {
      this.readyState = 3;
      this.onclose?.({ code: 1006, reason: 'lost' });
    }
  }
  return { sockets, Scripted };
}

type Route = (url: URL) => { status: number; body: unknown } | undefined;

/** A `fetch` answering from `routes` (first match), recording every URL asked for. */
function scriptedFetch(routes: Route[]) {
  const asked: string[] = [];
  const fetch = async (input: string | URL | Request): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    asked.push(`${url.pathname}${url.search}`);
    for (const route of routes) {
      const answer = route(url);
      if (answer) return Response.json(answer.body, { status: answer.status });
    }
    return Response.json({ error: { code: 'not_found', message: 'no route' } }, { status: 404 });
  };
  return { fetch: fetch as typeof globalThis.fetch, asked };
}

async function waitFor<T>(what: string, fn: () => T | undefined | false): Promise<T> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const value = fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const hello = (offsets: Record<string, number>) => ({
  op: 'hello',
  v: 1,
  session_id: 's',
  user_id: 1,
  heartbeat_ms: 60_000,
  scopes: Object.keys(offsets),
  offsets,
});

const event = (scope: string, offset: number, data: object = {}) => ({
  op: 'event',
  scope,
  offset,
  type: 'message.created',
  data,
});

/** A client that saw `channel:1` up to offset 6 (message 101), lost its connection and
 * reconnected; the server's answer to the resume is `recovered` per scope, and a live
 * event (offset 21) waits behind the resume. */
async function reconnected(routes: Route[], recovered: Record<string, boolean>) {
  const { sockets, Scripted } = scriptedSockets();
  const http = scriptedFetch([
    // The baseline of the channel's last message id after the first hello.
    (url) => (url.pathname === '/api/v1/channels/1/messages' && url.searchParams.get('limit') === '1' ? { status: 200, body: [] } : undefined),
    ...routes,
  ]);
  const rt = new ChorusRealtime('http://chorus.test', {
    token: 't',
    WebSocket: Scripted,
    http: new ChorusHttp('http://chorus.test', { token: 't', fetch: http.fetch }),
    backoff: { baseMs: 1, capMs: 1 },
    random: () => 0,
  });
  const events: ChorusEvent[] = [];
  const gaps: string[] = [];
  rt.on('event', (ev) => events.push(ev));
  rt.on('gap', (gap) => gaps.push(gap.scope));
  const connected = rt.connect();
  sockets[0]!.frame(hello({ 'user:1': 2, 'channel:1': 5 }));
  await connected;
  sockets[0]!.frame(event('channel:1', 6, { id: 101 }));
  sockets[0]!.drop();

  const second = await waitFor('the reconnect', () => sockets[1]);
  assert.match(second.url, /[?&]resume=1/);
  second.frame(hello({ 'user:1': 2, 'channel:1': 20 }));
  const resume = await waitFor('the resume', () => second.sent.find((f) => f['op'] === 'resume'));
  assert.deepEqual(resume['positions'], { 'user:1': 2, 'channel:1': 6 });
  second.frame(event('channel:1', 21, { id: 120 }));
  const scopes = Object.fromEntries(Object.entries(recovered).map(([scope, r]) => [scope, { recovered: r, offset: 20 }]));
  second.frame({ op: 'ack', id: resume['id'], scopes });
  return { rt, events, gaps, asked: http.asked };
}

const offsets = (events: ChorusEvent[], scope: string) => events.filter((e) => e.scope === scope).map((e) => e.offset);

test('recovered:false: the scope is caught up page by page from its events, as if live', async () => {
  const all = Array.from({ length: 14 }, (_, i) => event('channel:1', i + 7, { id: 102 + i }))
    // Offset 15 is not for this user (skipped): it is not in the answer.
    .filter((e) => e.offset !== 15);
  const pages: Route = (url) => {
    if (url.pathname !== '/api/v1/scopes/channel%3A1/events') return undefined;
    const after = Number(url.searchParams.get('after'));
    // At most 6 per page, whatever the limit: a client pages on `next`, not on counts.
    const page = all.filter((e) => e.offset > after).slice(0, 6);
    const next = page.at(-1)?.offset ?? after;
    const events = page.map(({ op: _, ...rest }) => rest);
    return { status: 200, body: { scope: 'channel:1', events, head: 20, next, more: next < 20 } };
  };
  const { rt, events, gaps, asked } = await reconnected([pages], { 'user:1': true, 'channel:1': false });

  await waitFor('every event', () => rt.positionsSnapshot['channel:1'] === 21);
  const expected = [6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21];
  assert.deepEqual(offsets(events, 'channel:1'), expected);
  assert.ok(events.every((e) => !e.replayed), 'delivered as live events, with their offsets');
  assert.deepEqual(gaps, []);
  const replays = asked.filter((a) => a.startsWith('/api/v1/scopes/'));
  assert.deepEqual(replays, [
    '/api/v1/scopes/channel%3A1/events?after=6&limit=1000',
    '/api/v1/scopes/channel%3A1/events?after=12&limit=1000',
    '/api/v1/scopes/channel%3A1/events?after=19&limit=1000',
  ]);
  assert.ok(!asked.some((a) => a.includes('after=101')), 'no message catch-up');
  rt.close();
});

test('recovered:false with the events gone (410) or no events route (404): the old catch-up and gaps', async () => {
  const gone: Route = (url) =>
    url.pathname === '/api/v1/scopes/channel%3A1/events'
      ? { status: 410, body: { error: { code: 'gone', message: 'no longer kept' } } }
      : undefined;
  const messages: Route = (url) =>
    url.pathname === '/api/v1/channels/1/messages' && url.searchParams.get('after') === '101'
      ? { status: 200, body: [{ id: 102 }, { id: 103 }] }
      : undefined;
  // `user:1` has no route at all: an older server's 404.
  const { rt, events, gaps, asked } = await reconnected([gone, messages], { 'user:1': false, 'channel:1': false });

  await waitFor('the live event', () => rt.positionsSnapshot['channel:1'] === 21);
  const channel = events.filter((e) => e.scope === 'channel:1');
  assert.deepEqual(
    channel.map((e) => [e.offset, (e.data as { id: number }).id, e.replayed ?? false]),
    [
      [6, 101, false],
      [undefined, 102, true],
      [undefined, 103, true],
      // Numbered from the new connection's position (hello's 20).
      [21, 120, false],
    ],
  );
  assert.deepEqual(gaps, ['user:1']);
  assert.ok(asked.includes('/api/v1/scopes/user%3A1/events?after=2&limit=1000'));
  assert.ok(asked.includes('/api/v1/scopes/channel%3A1/events?after=6&limit=1000'));
  assert.ok(asked.includes('/api/v1/channels/1/messages?after=101&limit=200'));
  rt.close();
});
