// Typed topics against a real server started with docs/gateway.example.toml; the
// descriptors are test/generated/gateway.ts, which `chorus namespaces export-ts` writes
// from that file (checked here to be current). The types are checked by
// test/topics.types.ts at build time; this checks what they do on the wire.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';

import { ChorusError, ChorusHttp, ChorusRealtime, defineTopic, type TopicEvent } from '../src/index.js';
import { cursors, notifications, orders, topics } from './generated/gateway.js';
import { ADMIN_TOKEN, TestServer, chorusBinary, repoRoot } from './server.js';

const CONFIG = join(repoRoot(), 'docs', 'gateway.example.toml');
const GENERATED = join(repoRoot(), 'clients', 'ts', 'test', 'generated', 'gateway.ts');

/** The first event `subscribe` hands over, or a timeout. */
function nextOf<T>(): { handler: (ev: TopicEvent<T>) => void; event: Promise<TopicEvent<T>> } {
  let handler!: (ev: TopicEvent<T>) => void;
  const event = new Promise<TopicEvent<T>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no event in 10 s')), 10_000);
    handler = (ev) => {
      clearTimeout(timer);
      resolve(ev);
    };
  });
  return { handler, event };
}

describe('typed topics', () => {
  test('descriptors fill and match patterns as the server does', () => {
    assert.equal(orders.pattern, 'topic:orders.{order_id}');
    assert.equal(orders.scope({ order_id: 42 }), 'topic:orders.42');
    assert.deepEqual(orders.match('topic:orders.42'), { order_id: '42' });
    assert.equal(orders.match('topic:orders.42.x'), undefined);
    assert.equal(orders.match('topic:orders.'), undefined);
    assert.equal(topics.news.scope(), 'topic:news');
    assert.deepEqual(topics.news.match('topic:news'), {});
    assert.equal(topics.news.match('topic:newsy'), undefined);
    assert.deepEqual(topics.ops.match('topic:ws.3.ops'), { workspace_id: '3' });
    const rest = defineTopic('topic:logs.*');
    assert.equal(rest.scope({ '*': 'a.b' }), 'topic:logs.a.b');
    assert.deepEqual(rest.match('topic:logs.a.b'), { '*': 'a.b' });
    // A value that is not scope text (or would span a `.`) is refused before sending.
    assert.throws(() => orders.scope({ order_id: 'a.b' }), /order_id/);
    assert.throws(() => orders.scope({ order_id: '' }), /order_id/);
    assert.throws(() => orders.scope({ order_id: 'a b' }), /order_id/);
  });

  test('the generated module is what `chorus namespaces export-ts` writes for the example', () => {
    const run = spawnSync(chorusBinary(), ['namespaces', 'export-ts', '--config', CONFIG, '--import', '../../src/index.js'], {
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(
      run.stdout,
      readFileSync(GENERATED, 'utf8'),
      'test/generated/gateway.ts is stale: chorus namespaces export-ts --config docs/gateway.example.toml --import ../../src/index.js --out clients/ts/test/generated/gateway.ts',
    );
  });

  describe('against a real server in gateway mode', () => {
    let server: TestServer;
    let admin: ChorusHttp;
    let alice: ChorusRealtime;
    let bob: ChorusRealtime;
    let bobId: number;

    before(async () => {
      server = await TestServer.start(['--config', CONFIG]);
      admin = new ChorusHttp(server.baseUrl, { token: ADMIN_TOKEN });
      const realtime = async (name: string) => {
        const created = await admin.createUser({ name });
        const rt = new ChorusRealtime(server.baseUrl, { token: created.token, WebSocket, backoff: { baseMs: 100, capMs: 800 } });
        await rt.connect();
        return { rt, id: created.user.id };
      };
      alice = (await realtime('alice')).rt;
      const b = await realtime('bob');
      bob = b.rt;
      bobId = b.id;
    });

    after(async () => {
      alice?.close();
      bob?.close();
      await server?.dispose();
    });

    test("the server's namespaces are the ones the module was generated from", async () => {
      const declared = await admin.namespaces();
      assert.deepEqual(
        declared.map((n) => n.pattern),
        Object.values(topics).map((t) => t.pattern),
      );
      assert.deepEqual(declared.find((n) => n.name === 'orders')?.schema, orders.schema);
    });

    test('a typed publish reaches a typed subscriber', async () => {
      const next = nextOf<{ x: number; y: number }>();
      const sub = await cursors.subscribe(bob, { doc: 'readme' }, next.handler);
      assert.equal(sub.scope, 'topic:cursors.readme');
      const ack = await cursors.publish(alice, { doc: 'readme' }, 'cursor.moved', { x: 3, y: 4.5 });
      assert.equal(ack.offset, undefined, 'cursors keep no history: no offset');
      const event = await next.event;
      assert.equal(event.type, 'cursor.moved');
      assert.deepEqual(event.data, { x: 3, y: 4.5 });
      assert.equal(event.data.x + event.data.y, 7.5);
      await sub.close();
      assert.ok(!bob.subscribedScopes.includes('topic:cursors.readme'));
    });

    test("a user's own notifications: published with an offset, replayed by `since`", async () => {
      const first = await notifications.publish(bob, { user_id: bobId }, 'note', { text: 'one' });
      const second = await notifications.publish(bob, { user_id: bobId }, 'note', { text: 'two' });
      assert.equal(typeof first.offset, 'number');
      assert.ok(second.offset! > first.offset!);
      const next = nextOf<unknown>();
      // Subscribed after the first: the second is replayed, the first is not.
      const sub = await notifications.subscribe(bob, { user_id: bobId }, next.handler, { since: first.offset! });
      const event = await next.event;
      assert.equal(event.offset, second.offset);
      assert.deepEqual(event.data, { text: 'two' });
      await sub.close();
      // Someone else's notifications are not Alice's to read.
      await assert.rejects(notifications.subscribe(alice, { user_id: bobId }, () => {}), (err: unknown) => {
        assert.ok(err instanceof ChorusError);
        assert.equal(err.code, 'forbidden');
        return true;
      });
    });

    test('the server refuses what the types would: the schema path, server-only namespaces', async () => {
      await assert.rejects(
        // Past the types on purpose: the server validates too.
        cursors.publish(alice, { doc: 'readme' }, 'cursor.moved', { x: 'three', y: 1 } as never),
        (err: unknown) => {
          assert.ok(err instanceof ChorusError);
          assert.equal(err.code, 'bad_request');
          assert.match(err.message, /at \/x/);
          return true;
        },
      );
      await assert.rejects(orders.publish(alice, { order_id: 1 }, 'order.updated', { status: 'paid', amount: 1 }), (err: unknown) => {
        assert.ok(err instanceof ChorusError);
        assert.equal(err.code, 'forbidden');
        return true;
      });
    });
  });
});
