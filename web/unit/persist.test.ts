// What the UI keeps across reloads (src/persist.ts), over an in-memory storage.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { convKey, Persisted } from '../src/persist.js';
import { Memory } from './memory.js';

describe('persisted state', () => {
  it('drafts per conversation, per user', () => {
    const kv = new Memory();
    const alice = new Persisted(kv, 1);
    alice.saveDrafts(new Map([[convKey(5), 'for five'], [convKey(5, 9), 'in a thread'], [convKey(6), '']]));
    assert.deepEqual(new Persisted(kv, 1).drafts(), new Map([['c5', 'for five'], ['c5/t9', 'in a thread']]));
    assert.deepEqual(new Persisted(kv, 2).drafts(), new Map());
    alice.saveDrafts(new Map());
    assert.equal(kv.data.size, 0);
  });

  it('the outbox: what was being sent is sent again; refusals stay refused', () => {
    const kv = new Memory();
    const p = new Persisted(kv, 1);
    p.saveOutbox([
      { key: 'a', channelId: 5, text: 'in flight', state: 'sending' },
      { key: 'b', channelId: 5, threadId: 9, text: 'waiting', state: 'waiting', error: 'offline' },
      { key: 'c', channelId: 5, text: 'refused', state: 'failed', error: 'forbidden' },
    ]);
    assert.deepEqual(
      p.outbox().map((o) => [o.key, o.state]),
      [
        ['a', 'waiting'],
        ['b', 'waiting'],
        ['c', 'failed'],
      ],
    );
    assert.equal(p.outbox()[1]?.threadId, 9);
  });

  it('survives garbage in storage', () => {
    const kv = new Memory();
    kv.setItem('chorus.outbox.1', '{not json');
    kv.setItem('chorus.drafts.1', '[1,2]');
    kv.setItem('chorus.thread-mentions.1', '{"5":[[7,1],["x",2],3]}');
    const p = new Persisted(kv, 1);
    assert.deepEqual(p.outbox(), []);
    assert.deepEqual(p.drafts(), new Map());
    assert.deepEqual(p.threadMentions(), new Map([[5, new Map([[7, 1]])]]));
  });
});

describe('signing out', () => {
  it('clears what the user left here (drafts, outbox, thread mentions), only theirs', () => {
    const kv = new Memory();
    const alice = new Persisted(kv, 1);
    const bob = new Persisted(kv, 2);
    for (const p of [alice, bob]) {
      p.saveDrafts(new Map([[convKey(5), 'a draft']]));
      p.saveOutbox([{ key: 'a', channelId: 5, text: 'not sent', state: 'waiting' }]);
      p.saveThreadMentions(new Map([[5, new Map([[7, 1]])]]));
    }
    kv.setItem('chorus.token', 'chr_a');
    alice.clear();
    assert.deepEqual([...kv.data.keys()].sort(), ['chorus.drafts.2', 'chorus.outbox.2', 'chorus.thread-mentions.2', 'chorus.token']);
    assert.deepEqual(new Persisted(kv, 1).drafts(), new Map());
    assert.deepEqual(new Persisted(kv, 1).outbox(), []);
    assert.deepEqual(new Persisted(kv, 2).drafts(), new Map([['c5', 'a draft']]));
  });

  it('writes nothing after it is cleared or closed (a page stopping saves its drafts)', () => {
    for (const end of ['clear', 'close'] as const) {
      const kv = new Memory();
      const p = new Persisted(kv, 1);
      p[end]();
      p.saveDrafts(new Map([[convKey(5), 'typed as it stopped']]));
      p.saveOutbox([{ key: 'a', channelId: 5, text: 'came back', state: 'failed' }]);
      p.saveThreadMentions(new Map([[5, new Map([[7, 1]])]]));
      assert.equal(kv.data.size, 0, end);
    }
  });
});
