// Dead-connection detection against a real server that goes silent: SIGSTOP freezes the
// process (its sockets stay open, nothing answers), SIGCONT thaws it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';

import { ChorusHttp, ChorusRealtime, isEvent, type ChorusEvent, type Message } from '../src/index.js';
import { ADMIN_TOKEN, TestServer } from './server.js';

let server: TestServer;

before(async () => {
  server = await TestServer.start(['--heartbeat-ms', '1000']);
});

after(async () => {
  server.signal('SIGCONT');
  await server.dispose();
});

test('a silent server is detected by the heartbeat; the client reconnects and resumes', async () => {
  const admin = new ChorusHttp(server.baseUrl, { token: ADMIN_TOKEN });
  const alice = admin.withToken((await admin.createUser({ name: 'alice' })).token);
  const ws = await alice.createWorkspace('w');
  const channel = await alice.createChannel(ws.id, { name: 'c' });

  const rt = new ChorusRealtime(server.baseUrl, {
    token: alice.token!,
    WebSocket,
    requestTimeoutMs: 1000,
    backoff: { baseMs: 100, capMs: 400 },
  });
  const events: ChorusEvent[] = [];
  const disconnects: string[] = [];
  rt.on('event', (ev) => events.push(ev));
  rt.on('disconnect', (d) => disconnects.push(d.reason));
  const state = () => rt.state; // a call, so TS does not narrow it across the awaits
  const hello = await rt.connect();
  assert.equal(hello.heartbeat_ms, 1000);

  const first = await alice.sendMessage(channel.id, 'before the freeze');
  const stoppedAt = Date.now();
  server.signal('SIGSTOP');
  while (state() === 'open') {
    assert.ok(Date.now() - stoppedAt < 5000, 'silence not detected within 5 s');
    await new Promise((r) => setTimeout(r, 50));
  }
  const detectedAfter = Date.now() - stoppedAt;
  assert.ok(detectedAfter >= 1500, `detected after ${detectedAfter} ms: not before 2 × heartbeat`);
  assert.equal(disconnects[0], 'server silent');
  server.signal('SIGCONT');

  while (state() !== 'open') await new Promise((r) => setTimeout(r, 50));
  const second = await alice.sendMessage(channel.id, 'after the thaw');
  const messages = () => events.filter((e): e is ChorusEvent<Message> => isEvent(e, 'message.created'));
  const deadline = Date.now() + 5000;
  while (!messages().some((e) => e.data.id === second.message.id)) {
    assert.ok(Date.now() < deadline, 'message after the thaw not delivered');
    await new Promise((r) => setTimeout(r, 50));
  }
  await rt.ping(); // a barrier: a duplicate would have come before its answer
  assert.deepEqual(messages().map((e) => e.data.id), [first.message.id, second.message.id]);
  rt.close();
});
