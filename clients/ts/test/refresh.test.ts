// JWT refresh against a real Chorus server started with a JWT secret: the client asks
// the application's `refreshToken` for a new token before the old one's `exp`, sends
// it as `refresh`, and reconnects with the newest one.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';

import { ChorusError, ChorusHttp, ChorusRealtime, type HelloFrame } from '../src/index.js';
import { jwtExpiry } from '../src/realtime.js';
import { ADMIN_TOKEN, TestServer } from './server.js';
import { faultyWebSocket } from './sockets.js';

const SECRET = 'a-test-jwt-secret-at-least-32-bytes';

/** An HS256 JWT for `sub` expiring `secs` from now. */
function jwt(sub: string, secs: number): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const head = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + secs })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Opens a plain socket with `token` and resolves with its close code. */
function closeCodeOf(url: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/ws?token=${encodeURIComponent(token)}`);
    ws.on('close', (code) => resolve(code));
    ws.on('error', reject);
  });
}

test('jwtExpiry reads exp from a JWT and nothing from other tokens', () => {
  const token = jwt('alice', 60);
  const exp = jwtExpiry(token)!;
  assert.ok(Math.abs(exp - (Date.now() + 60_000)) < 2_000, `exp ${exp}`);
  assert.equal(jwtExpiry('chr_abc'), undefined);
  assert.equal(jwtExpiry('a.!!!.c'), undefined);
  assert.equal(jwtExpiry(`x.${Buffer.from('{"sub":"a"}').toString('base64url')}.y`), undefined);
});

describe('JWT refresh against a real server', () => {
  let server: TestServer;
  const clients: ChorusRealtime[] = [];

  before(async () => {
    server = await TestServer.start(['--jwt-secret', SECRET]);
    await new ChorusHttp(server.baseUrl, { token: ADMIN_TOKEN }).createUser({ name: 'alice' });
  });

  after(async () => {
    for (const rt of clients) rt.close();
    await server?.dispose();
  });

  test('refreshToken keeps the connection past the first exp and serves reconnects', async () => {
    // Under 5 s left: the client refreshes at once.
    const short = jwt('alice', 3);
    // A socket that keeps the first token: closed when that token expires.
    const witness = closeCodeOf(server.baseUrl, short);
    const issued: string[] = [];
    const { FaultyWebSocket, cut } = faultyWebSocket();
    const rt = new ChorusRealtime(server.baseUrl, {
      token: short,
      WebSocket: FaultyWebSocket,
      backoff: { baseMs: 50, capMs: 200 },
      refreshToken: async () => {
        const token = jwt('alice', 600);
        issued.push(token);
        return token;
      },
    });
    clients.push(rt);
    const disconnects: number[] = [];
    const hellos: HelloFrame[] = [];
    const errors: ChorusError[] = [];
    rt.on('disconnect', (d) => disconnects.push(d.code));
    rt.on('hello', (h) => hellos.push(h));
    rt.on('error', (e) => errors.push(e));
    await rt.connect();
    await waitFor('the refresh', () => issued.length === 1);

    // Once the socket that kept the first token is closed, that token has expired...
    assert.equal(await witness, 3502);
    // ...and the refreshed connection still answers.
    await rt.ping();
    assert.deepEqual(disconnects, []);
    assert.deepEqual(errors, []);

    // A reconnect now uses the new token (the first one would be refused).
    cut();
    await waitFor('the reconnect', () => hellos.length === 2 && rt.state === 'open');
    await rt.ping();
    assert.equal(issued.length, 1, 'a 600 s token is not refreshed yet');
  });

  test('without a timely refresh, a 3502 close gets a new token and reconnects', async () => {
    const disconnects: number[] = [];
    const rt = new ChorusRealtime(server.baseUrl, {
      token: jwt('alice', 2),
      WebSocket,
      backoff: { baseMs: 50, capMs: 200 },
      // Refused by the server (it names nobody) until the socket has expired.
      refreshToken: async () => (disconnects.length === 0 ? jwt('nobody', 600) : jwt('alice', 600)),
    });
    clients.push(rt);
    const hellos: HelloFrame[] = [];
    const errors: string[] = [];
    rt.on('disconnect', (d) => disconnects.push(d.code));
    rt.on('hello', (h) => hellos.push(h));
    rt.on('error', (e) => errors.push(e.code));
    await rt.connect();
    await waitFor('the reconnect after 3502', () => hellos.length === 2 && rt.state === 'open');
    assert.equal(disconnects[0], 3502);
    assert.ok(errors.length > 0 && errors.every((c) => c === 'unauthorized'), `errors: ${errors}`);
    await rt.ping();
  });
});
