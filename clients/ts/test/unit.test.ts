// Pure functions, no server.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ChorusError, newIdempotencyKey, wsUrl } from '../src/index.js';
import { errorFromBody } from '../src/errors.js';

test('WebSocket URLs from base URLs', () => {
  assert.equal(wsUrl('http://127.0.0.1:7800'), 'ws://127.0.0.1:7800/ws');
  assert.equal(wsUrl('https://h/chorus/'), 'wss://h/chorus/ws');
  assert.equal(wsUrl('https://h/chorus'), 'wss://h/chorus/ws');
  assert.equal(wsUrl('ws://h:1/ws?x=1'), 'ws://h:1/ws?x=1');
  assert.throws(() => wsUrl('ftp://h'));
});

test('error bodies decode into ChorusError', () => {
  const err = errorFromBody(429, '{"error":{"code":"rate_limited","message":"slow down"}}', '2');
  assert.ok(err instanceof ChorusError);
  assert.deepEqual([err.status, err.code, err.message, err.retryAfter, err.retryable], [429, 'rate_limited', 'slow down', 2, true]);
  const proxy = errorFromBody(502, '<html>bad gateway</html>'.repeat(100));
  assert.equal(proxy.code, 'unexpected_response');
  assert.ok(proxy.message.length < 600);
  assert.equal(errorFromBody(403, '{"error":{"code":"forbidden","message":"no"}}').retryable, false);
});

test('idempotency keys are fresh and valid header values', () => {
  const a = newIdempotencyKey();
  assert.notEqual(a, newIdempotencyKey());
  assert.match(a, /^[\x21-\x7e]{1,255}$/);
});
