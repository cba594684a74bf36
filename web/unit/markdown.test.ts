// The message markup (src/markdown.ts) and emoji search (src/emoji.ts), in Node: what
// each piece of text becomes, and that nothing unsafe becomes a link.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { searchEmoji, emojiByCode } from '../src/emoji.js';
import { inline, parse, plain, safeHref, type Block } from '../src/markdown.js';

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

// One message is shown to everyone in its channel, so no text (up to the server's 16 KiB)
// may throw or take long to parse. The time bound is a complexity guard with a wide
// margin: the best of three runs (not the first, which pays for compiling the parser)
// takes a few milliseconds; the quadratic parses took seconds.
const MAX_BYTES = 16 * 1024;
const BOUND_MS = 200;
/** `unit` repeated to at most 16 KiB. */
const fill = (unit: string) => unit.repeat(Math.floor(MAX_BYTES / unit.length));
function timed<T>(what: string, run: () => T): T {
  let best = Infinity;
  let out: T | undefined;
  for (let k = 0; k < 3; k++) {
    const start = performance.now();
    out = run();
    best = Math.min(best, performance.now() - start);
  }
  assert.ok(best < BOUND_MS, `${what}: ${best.toFixed(0)} ms`);
  return out!;
}
/** `depth` quotes, one inside the other, around `inner`. */
const nested = (depth: number, inner: Block[]): Block[] => (depth === 0 ? inner : [{ t: 'quote', c: nested(depth - 1, inner) }]);

describe('adversarial text', () => {
  it('quotes nest at most 20 deep: the rest is text, never a stack overflow', () => {
    const deep = '> '.repeat(4000) + 'x';
    assert.deepEqual(
      timed('4000 quotes', () => parse(deep)),
      nested(20, [{ t: 'p', c: [text('> '.repeat(3980) + 'x')] }]),
    );
    const max = fill('> ') + 'x';
    assert.deepEqual(
      timed('16 KiB of quotes', () => parse(max)),
      nested(20, [{ t: 'p', c: [text('> '.repeat(MAX_BYTES / 2 - 20) + 'x')] }]),
    );
    // Quote markers on 16 KiB of lines, and lines as deep as the limit.
    timed('quote lines', () => parse(fill('>\n')));
    assert.deepEqual(parse('> '.repeat(20) + 'x'), nested(20, [{ t: 'p', c: [text('x')] }]));
    assert.deepEqual(parse('> '.repeat(21) + 'x'), nested(20, [{ t: 'p', c: [text('> x')] }]));
    // Shallow nesting is as it was.
    assert.deepEqual(parse('> > > deep\n> > two\n> one\nzero'), [
      ...nested(1, [...nested(1, [...nested(1, [{ t: 'p', c: [text('deep')] }]), { t: 'p', c: [text('two')] }]), { t: 'p', c: [text('one')] }]),
      { t: 'p', c: [text('zero')] },
    ]);
  });

  it('a URL with 16 KiB of trailing punctuation', () => {
    const closing = 'https://a' + ')'.repeat(1991);
    assert.deepEqual(timed('closing parentheses', () => inline(closing)), [
      { t: 'link', href: 'https://a/', c: [text('https://a')] },
      text(')'.repeat(1991)),
    ]);
    const dots = '.'.repeat(1990);
    assert.deepEqual(timed('dots', () => inline('https://a' + dots)), [{ t: 'link', href: 'https://a/', c: [text('https://a')] }, text(dots)]);
    const mixed = ').'.repeat(995);
    assert.deepEqual(timed('mixed', () => inline('https://a' + mixed)), [
      { t: 'link', href: 'https://a/', c: [text('https://a')] },
      text(mixed),
    ]);
    // Balanced parentheses stay in the URL.
    const balanced = 'https://a/' + '('.repeat(995) + ')'.repeat(995);
    const [link] = timed('balanced', () => inline(balanced));
    assert.equal(link?.t === 'link' && link.c[0]?.t === 'text' ? link.c[0].v : undefined, balanced);
  });

  it('a bare URL is at most 2000 characters, as a [label](url)’s', () => {
    const url = 'https://a/' + 'b'.repeat(1990);
    assert.deepEqual(inline(`${url} x`), [{ t: 'link', href: url, c: [text(url)] }, text(' x')]);
    assert.deepEqual(inline(`${url}b x`), [text(`${url}b x`)]);
    for (const long of [
      'https://a' + ')'.repeat(16000),
      'https://a' + '.'.repeat(MAX_BYTES - 9),
      'https://a/' + '('.repeat(8000) + ')'.repeat(8000),
    ]) {
      assert.deepEqual(timed('a long URL', () => inline(long)), [text(long)]);
    }
  });

  it('URLs that do not parse, one after the other', () => {
    for (const unit of ['(http://[', '.http://\u0001']) {
      const input = fill(unit);
      assert.deepEqual(timed(JSON.stringify(unit), () => inline(input)), [text(input)], unit);
    }
  });

  it('a [ before every ], and links sharing their ]', () => {
    const brackets = fill('[');
    assert.deepEqual(timed('brackets', () => inline(brackets)), [text(brackets)]);
    // The first `[` at most 500 characters before the `]` opens the link.
    const shared = '['.repeat(600) + 'a](https://x.test/d)';
    assert.deepEqual(timed('shared', () => inline(shared)), [
      text('['.repeat(100)),
      { t: 'link', href: 'https://x.test/d', c: [text('['.repeat(499) + 'a')] },
    ]);
    const unclosed = fill('['.repeat(500) + 'a](' + 'b'.repeat(1999));
    assert.deepEqual(timed('no closing parenthesis', () => inline(unclosed)), [text(unclosed)]);
  });

  it('a mention followed by 16 KiB of dots', () => {
    assert.deepEqual(timed('dots then a letter', () => inline('@' + '.'.repeat(MAX_BYTES - 2) + 'a')), [
      { t: 'mention', name: '.'.repeat(MAX_BYTES - 2) + 'a' },
    ]);
    assert.deepEqual(timed('dots last', () => inline('@a' + '.-'.repeat(8000))), [{ t: 'mention', name: 'a' }, text('.-'.repeat(8000))]);
  });

  it('emphasis that never closes, and marks hidden behind an unclosed backtick', () => {
    const head = ' *a'.repeat(2700) + '`';
    const out = timed('openers, then a backtick', () => inline(head + 'a*'.repeat(4100)));
    // The openers before the backtick close on nothing (every mark after it is inside
    // the unclosed code); after it, `a*a*a…` pairs up into italics.
    const italic = { t: 'i', c: [text('a')] } as const;
    assert.deepEqual(out, [text(head + 'a'), ...Array.from({ length: 2050 }, (_, k) => (k ? [text('a'), italic] : [italic])).flat()]);
    for (const unit of [' *a', ' _a', ' **a', ' __a', ' ~~a']) {
      const input = fill(unit);
      assert.deepEqual(timed(JSON.stringify(unit), () => inline(input)), [text(input)], unit);
    }
  });
});
