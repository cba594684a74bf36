// Message text → a small tree of blocks and inlines: code blocks, quotes, paragraphs;
// bold, italics, strikethrough, inline code, links, `@mentions` and `:shortcode:` emoji.
// It never produces HTML: the components render the tree as elements and text nodes
// (Preact escapes text), so user text can never become markup. Pure: unit-tested in Node.
import { emojiByCode } from './emoji.js';

export type Inline =
  | { t: 'text'; v: string }
  | { t: 'code'; v: string }
  | { t: 'b' | 'i' | 's'; c: Inline[] }
  | { t: 'link'; href: string; c: Inline[] }
  | { t: 'mention'; name: string }
  | { t: 'emoji'; v: string; code: string };

export type Block =
  | { t: 'p'; c: Inline[] }
  | { t: 'pre'; lang: string; v: string }
  | { t: 'quote'; c: Block[] };

/** The schemes a link may have; anything else (`javascript:`, `data:`…) stays text. */
const SAFE_SCHEMES = new Set(['http:', 'https:', 'mailto:']);

/** `href` when it is a safe absolute URL, else `undefined`. */
export function safeHref(href: string): string | undefined {
  const trimmed = href.trim();
  // No control characters or spaces inside: browsers strip some (`java\nscript:`).
  if (!trimmed || /[\u0000-\u0020\u007f-\u009f]/.test(trimmed)) return undefined;
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    return undefined;
  }
  return SAFE_SCHEMES.has(url.protocol) ? url.href : undefined;
}

/** How deep quotes nest: deeper `> ` markers are text (a message of nothing but `> `
 * must not nest thousands deep: one recursion, and one element, per level). */
const MAX_QUOTE_DEPTH = 20;

/** Parses a message's text. */
export function parse(text: string): Block[] {
  return blocks(text.replace(/\r\n?/g, '\n').split('\n'), 0);
}

/** `depth`: how many quotes `lines` are inside. */
function blocks(lines: string[], depth: number): Block[] {
  const out: Block[] = [];
  let para: string[] = [];
  const flush = () => {
    // Leading and trailing blank lines of a paragraph are dropped; inner ones kept.
    while (para.length && !para[0]!.trim()) para.shift();
    while (para.length && !para.at(-1)!.trim()) para.pop();
    if (para.length) out.push({ t: 'p', c: inline(para.join('\n')) });
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const fence = /^\s*```\s*([\w+.#-]*)\s*$/.exec(line) ?? /^\s*```(.*)$/.exec(line);
    if (fence) {
      // Until the closing fence, or the end of the text (an unclosed block).
      const body: string[] = [];
      let j = i + 1;
      // ```code``` on one line: a one-line block.
      const oneLine = /^\s*```(.+?)```\s*$/.exec(line);
      if (oneLine) {
        flush();
        out.push({ t: 'pre', lang: '', v: oneLine[1]! });
        continue;
      }
      for (; j < lines.length && !/^\s*```\s*$/.test(lines[j]!); j++) body.push(lines[j]!);
      flush();
      const lang = /^[\w+.#-]*$/.test(fence[1] ?? '') ? (fence[1] ?? '') : '';
      const first = lang || !(fence[1] ?? '').trim() ? [] : [fence[1]!];
      out.push({ t: 'pre', lang, v: [...first, ...body].join('\n') });
      i = j;
      continue;
    }
    if (depth < MAX_QUOTE_DEPTH && /^>( |$)/.test(line)) {
      const quoted: string[] = [];
      let j = i;
      for (; j < lines.length && /^>( |$)/.test(lines[j]!); j++) quoted.push(lines[j]!.replace(/^> ?/, ''));
      flush();
      out.push({ t: 'quote', c: blocks(quoted, depth + 1) });
      i = j - 1;
      continue;
    }
    para.push(line);
  }
  flush();
  return out;
}

/** Delimiters of emphasis, longest first. */
const MARKS: { open: string; t: 'b' | 'i' | 's' }[] = [
  { open: '**', t: 'b' },
  { open: '__', t: 'b' },
  { open: '~~', t: 's' },
  { open: '*', t: 'i' },
  { open: '_', t: 'i' },
];

const WORD = /[\p{L}\p{N}_]/u;

/** Inline markup of one paragraph. */
export function inline(text: string): Inline[] {
  const out: Inline[] = [];
  let buf = '';
  const push = (node: Inline) => {
    if (buf) out.push({ t: 'text', v: buf });
    buf = '';
    out.push(node);
  };
  /** Where emphasis closes (tabled when the first mark opens). */
  let closes: ReturnType<typeof closer> | undefined;
  /** The first `]` and line break after the last `[` looked at (`text.length`: none). */
  let bracket = -1;
  let newline = -1;
  /** The URL after the `]` at `at`, if any, and where it ends. */
  let target: { at: number; href: string | undefined; end: number } | undefined;
  /** Where the characters a URL may have end, from the last bare URL looked at on. */
  let run = -1;
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i);
    const prev = i > 0 ? text[i - 1]! : '';
    // `code`: nothing inside is markup.
    if (text[i] === '`') {
      const ticks = /^`+/.exec(rest)![0];
      const end = text.indexOf(ticks, i + ticks.length);
      if (end > i + ticks.length - 1 && end !== -1) {
        push({ t: 'code', v: text.slice(i + ticks.length, end) });
        i = end + ticks.length;
        continue;
      }
      buf += ticks;
      i += ticks.length;
      continue;
    }
    // [label](url): the label is what comes before the first `]` after the `[` (1 to 500
    // characters, no line break), the URL (1 to 2000) is in the `(…)` right after that `]`.
    // The `[`s before one `]` share its URL: it is read once, not once per `[`.
    if (text[i] === '[') {
      if (bracket <= i) bracket = indexOrEnd(text, ']', i + 1);
      if (newline <= i) newline = indexOrEnd(text, '\n', i + 1);
      const label = bracket - i - 1;
      if (label >= 1 && label <= 500 && newline > bracket) {
        if (target?.at !== bracket) {
          const m = sticky(/\]\(([^()\s]{1,2000})\)/y, text, bracket);
          target = { at: bracket, href: m ? safeHref(m[1]!) : undefined, end: bracket + (m?.[0].length ?? 0) };
        }
        if (target.href) {
          push({ t: 'link', href: target.href, c: inline(text.slice(i + 1, bracket)) });
          i = target.end;
          continue;
        }
      }
    }
    // A bare URL (trailing punctuation is not part of it): what may be in a URL from here
    // on, at most 2000 characters (as a `[label](url)`'s). The URLs that start in one run
    // of such characters share its end: it is found once, not once per URL.
    if ((text[i] === 'h' || text[i] === 'm') && !WORD.test(prev)) {
      if (run <= i) run = sticky(/[^\s<>"]*/y, text, i)![0].length + i;
      const scheme = /^(?:https?:\/\/|mailto:)/.exec(rest);
      if (scheme && run - i > scheme[0].length && run - i <= MAX_URL) {
        const m = text.slice(i, run);
        const url = m.slice(0, urlEnd(m));
        const href = safeHref(url);
        if (href) {
          push({ t: 'link', href, c: [{ t: 'text', v: url }] });
          i += url.length;
          continue;
        }
      }
    }
    // @name, as the server parses mentions (not after a name character).
    if (text[i] === '@' && !/[a-z0-9_.-]/.test(prev)) {
      const m = /^@([a-z0-9_.-]+)/.exec(rest);
      const name = m?.[1]?.slice(0, trimEnd(m[1]!, '.-'));
      if (name) {
        push({ t: 'mention', name });
        i += 1 + name.length;
        continue;
      }
    }
    // :shortcode:
    if (text[i] === ':') {
      const m = /^:([a-z0-9_+-]{1,40}):/.exec(rest);
      const emoji = m ? emojiByCode(m[1]!) : undefined;
      if (m && emoji) {
        push({ t: 'emoji', v: emoji, code: m[1]! });
        i += m[0].length;
        continue;
      }
    }
    // Emphasis: an opening mark followed by a non-space, closed by the same mark after a
    // non-space; `_` only at word edges (snake_case stays as it is).
    const mark = MARKS.find((k) => rest.startsWith(k.open));
    if (mark && rest.length > mark.open.length && !/\s/.test(rest[mark.open.length]!)) {
      const underscore = mark.open.startsWith('_');
      if (!(underscore && WORD.test(prev))) {
        closes ??= closer(text);
        const close = closes(i + mark.open.length, mark.open);
        if (close !== -1) {
          push({ t: mark.t, c: inline(text.slice(i + mark.open.length, close)) });
          i = close + mark.open.length;
          continue;
        }
      }
      buf += mark.open;
      i += mark.open.length;
      continue;
    }
    buf += text[i];
    i++;
  }
  if (buf) out.push({ t: 'text', v: buf });
  return out;
}

/** The longest bare URL that is a link. */
const MAX_URL = 2000;

/** Where `c` is in `text` from `from` on, or `text.length`. */
function indexOrEnd(text: string, c: string, from: number): number {
  const at = text.indexOf(c, from);
  return at === -1 ? text.length : at;
}

/** `re` (sticky) matched at `at`. */
function sticky(re: RegExp, text: string, at: number): RegExpExecArray | null {
  re.lastIndex = at;
  return re.exec(text);
}

/** Punctuation that ends a sentence rather than a bare URL. */
const URL_TRAILING = '.,;:!?\'")]';

/** Where a bare URL's match ends once trailing punctuation is left out, except a
 * closing parenthesis that closes one inside the URL (wiki links). One pass: the
 * parentheses are counted once, then kept up to date as characters are left out. */
function urlEnd(url: string): number {
  let open = 0;
  let close = 0;
  for (let k = 0; k < url.length; k++) {
    if (url[k] === '(') open++;
    else if (url[k] === ')') close++;
  }
  let end = url.length;
  while (end > 0 && URL_TRAILING.includes(url[end - 1]!)) {
    if (url[end - 1] === ')') {
      if (open >= close) break;
      close--;
    }
    end--;
  }
  return end;
}

/** Where `s` ends once any of `chars` at its end are left out. */
function trimEnd(s: string, chars: string): number {
  let end = s.length;
  while (end > 0 && chars.includes(s[end - 1]!)) end--;
  return end;
}

/** Where each emphasis mark closes in one text: `close(from, mark)` is where `mark`
 * closes an emphasis opened before `from`, or -1. The first mark after `from` that
 * closes: not right at `from` (empty), not after a space, a single `*` not on the first
 * half of `**` (nor its second half, skipped with it), `_` not before a word character,
 * and not inside inline code (an odd number of backticks between). Searched mark by mark
 * from every opener, a text of thousands of openers that never close takes seconds; so
 * each mark's answers are tabled once, in one pass from the end of the text, the first
 * time that mark opens, and each opener looks its answer up. */
function closer(text: string): (from: number, mark: string) => number {
  const n = text.length;
  // ticks[p]: the parity of the backticks in text[0, p).
  let ticks: Uint8Array | undefined;
  const tables = new Map<string, { first: Int32Array; found: [Int32Array, Int32Array] }>();
  const table = (mark: string) => {
    if (!ticks) {
      ticks = new Uint8Array(n + 1);
      for (let p = 0; p < n; p++) ticks[p + 1] = ticks[p]! ^ (text[p] === '`' ? 1 : 0);
    }
    const underscore = mark.startsWith('_');
    // first[p]: where `mark` first occurs at or after p (-1: nowhere).
    const first = new Int32Array(n + 2).fill(-1);
    for (let p = n - mark.length; p >= 0; p--) first[p] = text.startsWith(mark, p) ? p : first[p + 1]!;
    // found[b][j], for an occurrence j: where the search that comes to j closes for an
    // opener after which the backticks' parity is b (-1: nowhere).
    const found: [Int32Array, Int32Array] = [new Int32Array(n + 1).fill(-1), new Int32Array(n + 1).fill(-1)];
    for (let j = n - mark.length; j >= 0; j--) {
      if (first[j] !== j) continue;
      // Where the search goes on if it does not close at j (-1: nowhere), and whether
      // it may close at j, the backticks between allowing.
      let next: number;
      let closes = false;
      if (/\s/.test(text[j - 1] ?? '')) next = first[j + 1]!;
      // A single `*` must not close on the first half of `**`.
      else if (mark.length === 1 && text[j + 1] === mark && text[j - 1] !== mark) next = first[j + 2]!;
      else if (underscore && WORD.test(text[j + mark.length] ?? '')) next = first[j + 1]!;
      else {
        next = first[j + 1]!;
        closes = true;
      }
      // Inline code inside is opaque: a mark within backticks does not close.
      for (const b of [0, 1] as const) found[b][j] = closes && ticks[j] === b ? j : next === -1 ? -1 : found[b][next]!;
    }
    const t = { first, found };
    tables.set(mark, t);
    return t;
  };
  return (start, mark) => {
    const { first, found } = tables.get(mark) ?? table(mark);
    // A mark right at `start` would close an empty emphasis: the search goes on after it.
    const j = first[start] === start ? first[start + 1]! : first[start]!;
    return j === -1 ? -1 : found[ticks![start] as 0 | 1][j]!;
  };
}

/** The plain text of a message without its markup (for previews, the switcher, titles). */
export function plain(text: string): string {
  const walkInline = (nodes: Inline[]): string =>
    nodes
      .map((n) =>
        n.t === 'text' || n.t === 'code' ? n.v : n.t === 'mention' ? `@${n.name}` : n.t === 'emoji' ? n.v : walkInline(n.c),
      )
      .join('');
  const walk = (bs: Block[]): string =>
    bs.map((b) => (b.t === 'p' ? walkInline(b.c) : b.t === 'pre' ? b.v : walk(b.c))).join('\n');
  return walk(parse(text));
}
