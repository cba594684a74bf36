// Sign-in links in the address (src/links.ts): which fragments are links, what is
// handed over, and what a refused link says.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { handOver, handedIn, linkRefused, signInUrl } from '../src/links.js';

describe('sign-in links', () => {
  it('reads a one-time code and an older token link, and nothing else', () => {
    assert.deepEqual(handedIn('#signin=chs_abc-_1'), { kind: 'code', code: 'chs_abc-_1' });
    assert.deepEqual(handedIn('#token=chr_x%2By'), { kind: 'token', token: 'chr_x+y' });
    assert.deepEqual(handedIn('#signin=chs_a&utm=1'), { kind: 'code', code: 'chs_a' });
    // A broken escape is kept as written (the server refuses it), never thrown.
    assert.deepEqual(handedIn('#signin=%E0%A4%A'), { kind: 'code', code: '%E0%A4%A' });
    for (const other of ['', '#', '#signin=', '#general', '#x-signin=chs_a']) {
      assert.equal(handedIn(other), undefined, other);
    }
  });

  it('hands over the origin with the server’s fragment', () => {
    assert.equal(signInUrl('https://chat.example', '#signin=chs_a'), 'https://chat.example/#signin=chs_a');
    assert.equal(signInUrl('http://127.0.0.1:7800/', '#signin=chs_a'), 'http://127.0.0.1:7800/#signin=chs_a');
  });

  it('says why a link was refused', () => {
    const refused = (code: string) => linkRefused(Object.assign(new Error('x'), { code }));
    assert.match(refused('gone'), /not valid any more/);
    assert.match(refused('unauthorized'), /not valid: ask for a new one/);
    assert.match(refused('forbidden'), /deactivated/);
    assert.match(refused('rate_limited'), /Too many/);
    assert.match(refused('network'), /cannot be reached/);
    assert.match(linkRefused(new Error('odd')), /did not work: odd/);
  });

  it('adopts a credential only when nobody else is signed in here, else asks', () => {
    assert.equal(handOver(undefined, { id: 7 }), 'adopt');
    assert.equal(handOver({ id: 7 }, { id: 7 }), 'stay');
    assert.equal(handOver({ id: 3 }, { id: 7 }), 'ask');
  });

  it('a link with nobody signed in: says whose account it is and asks first', () => {
    assert.equal(handOver(undefined, { id: 7 }, 'link'), 'confirm');
    assert.equal(handOver(undefined, { id: 7 }, 'typed'), 'adopt');
    // Signed in: as for anything handed over.
    assert.equal(handOver({ id: 7 }, { id: 7 }, 'link'), 'stay');
    assert.equal(handOver({ id: 3 }, { id: 7 }, 'link'), 'ask');
  });
});
