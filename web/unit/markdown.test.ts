// The message markup (src/markdown.ts) and emoji search (src/emoji.ts), in Node: what
// each piece of text becomes, and that nothing unsafe becomes a link.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { searchEmoji, emojiByCode } from '../src/emoji.js';
import { inline, parse, plain, safeHref } from '../src/markdown.js';

const text = (v: string) => ({ t: 'text', v }) as const;

describe('inline markup', () => {
  it('bold, italics, strikethrough and code', () => {
    assert.deepEqual(inline('a **b** c'), [text('a '), { t: 'b', c: [text('b')] }, text(' c')]);
    assert.deepEqual(inline('__b__'), [{ t: 'b', c: [text('b')] }]);
    assert.deepEqual(inline('*i* and _j_'), [{ t: 'i', c: [text('i')] }, text(' and '), { t: 'i', c: [text('j')] }]);
    assert.deepEqual(inline('~~gone~~'), [{ t: 's', c: [text('gone')] }]);
    assert.deepEqual(inline('run `rm -rf *now*`'), [text('run '), { t: 'code', v: 'rm -rf *now*' }]);
    assert.deepEqual(inline('**bold _and italic_**'), [{ t: 'b', c: [text('bold '), { t: 'i', c: [text('and italic')] }] }]);
  });

  it('leaves what is not markup as it is', () => {
    assert.deepEqual(inline('snake_case_name and 2 * 3 * 4'), [text('snake_case_name and 2 * 3 * 4')]);
    assert.deepEqual(inline('** not bold **'), [text('** not bold **')]);
    assert.deepEqual(inline('an `unclosed tick'), [text('an `unclosed tick')]);
    assert.deepEqual(inline('**unclosed'), [text('**unclosed')]);
  });

  it('links: bare URLs and [label](url), trailing punctuation outside', () => {
    assert.deepEqual(inline('see https://example.com/a?b=1.'), [
      text('see '),
      { t: 'link', href: 'https://example.com/a?b=1', c: [text('https://example.com/a?b=1')] },
      text('.'),
    ]);
    assert.deepEqual(inline('(https://en.wikipedia.org/wiki/Rust_(language))'), [
      text('('),
      { t: 'link', href: 'https://en.wikipedia.org/wiki/Rust_(language)', c: [text('https://en.wikipedia.org/wiki/Rust_(language)')] },
      text(')'),
    ]);
    assert.deepEqual(inline('[the **docs**](https://x.test/d)'), [
      { t: 'link', href: 'https://x.test/d', c: [text('the '), { t: 'b', c: [text('docs')] }] },
    ]);
  });

  it('never links an unsafe scheme', () => {
    for (const bad of ['javascript:alert(1)', 'JAVASCRIPT:alert(1)', 'java\nscript:alert(1)', 'data:text/html,<b>', 'vbscript:x', ' javascript:x']) {
      assert.equal(safeHref(bad), undefined, bad);
    }
    assert.deepEqual(inline('[click](javascript:alert(1))'), [text('[click](javascript:alert(1))')]);
    assert.deepEqual(inline('javascript:alert(1)'), [text('javascript:alert(1)')]);
    assert.equal(safeHref('mailto:a@b.c'), 'mailto:a@b.c');
  });

  it('mentions as the server parses them, and emoji shortcodes', () => {
    assert.deepEqual(inline('hi @bob.'), [text('hi '), { t: 'mention', name: 'bob' }, text('.')]);
    assert.deepEqual(inline('mail a@bob.com'), [text('mail a@bob.com')]);
    assert.deepEqual(inline('ship it :rocket: :nope:'), [text('ship it '), { t: 'emoji', v: '🚀', code: 'rocket' }, text(' :nope:')]);
  });

  it('keeps markup-looking user text as text nodes (no HTML)', () => {
    assert.deepEqual(inline('<img src=x onerror=alert(1)>'), [text('<img src=x onerror=alert(1)>')]);
  });
});

describe('blocks', () => {
  it('code blocks (with a language, unclosed, on one line), quotes, paragraphs', () => {
    assert.deepEqual(parse('before\n```rust\nfn main() {}\n  **not bold**\n```\nafter'), [
      { t: 'p', c: [text('before')] },
      { t: 'pre', lang: 'rust', v: 'fn main() {}\n  **not bold**' },
      { t: 'p', c: [text('after')] },
    ]);
    assert.deepEqual(parse('```\nopen'), [{ t: 'pre', lang: '', v: 'open' }]);
    assert.deepEqual(parse('```x = 1```'), [{ t: 'pre', lang: '', v: 'x = 1' }]);
    assert.deepEqual(parse('> quoted *text*\n> more\nreply'), [
      { t: 'quote', c: [{ t: 'p', c: [text('quoted '), { t: 'i', c: [text('text')] }, text('\nmore')] }] },
      { t: 'p', c: [text('reply')] },
    ]);
    assert.deepEqual(parse('one\ntwo\n\nthree'), [{ t: 'p', c: [text('one\ntwo\n\nthree')] }]);
  });

  it('plain text of a message', () => {
    assert.equal(plain('**hi** @bob :tada:\n```\ncode\n```'), 'hi @bob 🎉\ncode');
  });
});

describe('emoji', () => {
  it('by shortcode, and searched by code or word', () => {
    assert.equal(emojiByCode('tada'), '🎉');
    assert.equal(emojiByCode('+1'), '👍');
    assert.equal(emojiByCode('nope'), undefined);
    assert.equal(searchEmoji('tada')[0]?.e, '🎉');
    assert.equal(searchEmoji(':thu')[0]?.e, '👍');
    assert.ok(searchEmoji('celebrate').some((e) => e.e === '🎉'));
    assert.equal(searchEmoji('zzzzqq').length, 0);
  });
});
