// The stored token and whether it was minted for this browser (src/session.ts), over an
// in-memory storage: only a minted token is ever revoked on sign-out.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { KeyValue } from '../src/persist.js';
import { Memory } from './memory.js';
import { endedBy, forgetToken, MINTED_KEY, rememberToken, storedToken, TOKEN_KEY, unusedMinted } from '../src/session.js';

describe('the stored token', () => {
  it('nothing stored: no token', () => {
    assert.equal(storedToken(new Memory()), undefined);
  });

  it('a minted token is remembered as minted, a brought one as not', () => {
    const kv = new Memory();
    rememberToken(kv, 'chr_link', true);
    assert.deepEqual(storedToken(kv), { token: 'chr_link', minted: true });
    // Replaced by a token the user brought: no longer minted, the mark cleared with it.
    rememberToken(kv, 'chr_typed', false);
    assert.deepEqual(storedToken(kv), { token: 'chr_typed', minted: false });
    assert.equal(kv.getItem(MINTED_KEY), null);
  });

  it('the mark counts only for the token it was written with', () => {
    const kv = new Memory();
    rememberToken(kv, 'chr_link', true);
    // Another writer of the token key (an older page in another tab) knows nothing of
    // the mark: its token is not taken for a minted one.
    kv.setItem(TOKEN_KEY, 'chr_typed');
    assert.deepEqual(storedToken(kv), { token: 'chr_typed', minted: false });
  });

  it('forgetting clears both keys; with a token given, only while it is the stored one', () => {
    const kv = new Memory();
    rememberToken(kv, 'chr_a', true);
    forgetToken(kv, 'chr_b');
    assert.deepEqual(storedToken(kv), { token: 'chr_a', minted: true });
    forgetToken(kv, 'chr_a');
    assert.equal(kv.data.size, 0);
    rememberToken(kv, 'chr_c', true);
    forgetToken(kv);
    assert.equal(kv.data.size, 0);
  });

  it('storage that throws: no token, and nothing thrown', () => {
    const broken: KeyValue = {
      getItem: () => {
        throw new Error('disabled');
      },
      setItem: () => {
        throw new Error('disabled');
      },
      removeItem: () => {
        throw new Error('disabled');
      },
    };
    rememberToken(broken, 'chr_a', true);
    forgetToken(broken);
    forgetToken(broken, 'chr_a');
    assert.equal(storedToken(broken), undefined);
  });
});

describe('a candidate not used', () => {
  it('is revoked only when it was minted here, and is not the token kept', () => {
    assert.equal(unusedMinted({ token: 'chr_link', minted: true }, { token: 'chr_mine' }), 'chr_link');
    assert.equal(unusedMinted({ token: 'chr_link', minted: true }), 'chr_link');
    // A #token= link or a typed token: the user's own, never revoked.
    assert.equal(unusedMinted({ token: 'chr_theirs', minted: false }, { token: 'chr_mine', minted: true }), undefined);
    assert.equal(unusedMinted({ token: 'chr_theirs' }, { token: 'chr_mine' }), undefined);
    // The very token signed in here is kept, minted or not.
    assert.equal(unusedMinted({ token: 'chr_mine', minted: true }, { token: 'chr_mine', minted: true }), undefined);
  });
});

describe('a session the server ended', () => {
  it('ends when the socket closes with 3502, saying why from the event heard before it', () => {
    assert.match(endedBy(3502, { reason: 'deactivated' })!, /account was deactivated/);
    assert.match(endedBy(3502, { reason: 'token_revoked', token_id: 5 })!, /signed out: this session was ended/);
    assert.match(endedBy(3502, { reason: 'session_revoked' })!, /signed out: this session was ended/);
    // An expiry closes with no event before; a reason from a newer server says as much.
    assert.match(endedBy(3502, undefined)!, /session expired: sign in again/);
    assert.match(endedBy(3502, { reason: 'something_new' })!, /session expired: sign in again/);
  });

  it('does not end on the event alone, nor on any other close', () => {
    // Every socket of the user hears of a revoked token; only those it opened close. A
    // socket that closes for another reason (a restart, a network drop) reconnects.
    for (const code of [1000, 1001, 1006, 1011, 3001, 3002, 3008, 3501]) {
      assert.equal(endedBy(code, { reason: 'token_revoked', token_id: 5 }), undefined, String(code));
      assert.equal(endedBy(code, { reason: 'deactivated' }), undefined, String(code));
      assert.equal(endedBy(code, undefined), undefined, String(code));
    }
  });
});
