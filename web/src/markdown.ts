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

/** Parses a message's text. */
export function parse(text: string): Block[] {
  return blocks(text.replace(/\r\n?/g, '\n').split('\n'));
}

function blocks(lines: string[]): Block[] {
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
    if (/^>( |$)/.test(line)) {
      const quoted: string[] = [];
      let j = i;
      for (; j < lines.length && /^>( |$)/.test(lines[j]!); j++) quoted.push(lines[j]!.replace(/^> ?/, ''));
      flush();
      out.push({ t: 'quote', c: blocks(quoted) });
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
    // [label](url)
    if (text[i] === '[') {
      const m = /^\[([^\]\n]{1,500})\]\(([^()\s]{1,2000})\)/.exec(rest);
      const href = m ? safeHref(m[2]!) : undefined;
      if (m && href) {
        push({ t: 'link', href, c: inline(m[1]!) });
        i += m[0].length;
        continue;
      }
    }
    // A bare URL (trailing punctuation is not part of it).
    if ((text[i] === 'h' || text[i] === 'm') && !WORD.test(prev)) {
      const m = /^(?:https?:\/\/|mailto:)[^\s<>"]+/.exec(rest);
      if (m) {
        let url = m[0];
        while (/[.,;:!?'")\]]$/.test(url)) {
          // Keep a closing parenthesis that closes one inside the URL (wiki links).
          if (url.endsWith(')') && (url.match(/\(/g)?.length ?? 0) >= (url.match(/\)/g)?.length ?? 0)) break;
          url = url.slice(0, -1);
        }
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
      const name = m?.[1]?.replace(/[.-]+$/, '');
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
        const close = findClose(text, i + mark.open.length, mark.open, underscore);
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

/** Where `mark` closes an emphasis opened before `from`, or -1. */
function findClose(text: string, from: number, mark: string, underscore: boolean): number {
  for (let j = text.indexOf(mark, from); j !== -1; j = text.indexOf(mark, j + 1)) {
    if (j === from) continue; // empty
    if (/\s/.test(text[j - 1]!)) continue;
    // A single `*` must not close on the first half of `**`.
    if (mark.length === 1 && text[j + 1] === mark && text[j - 1] !== mark) {
      j++;
      continue;
    }
    if (underscore && WORD.test(text[j + mark.length] ?? '')) continue;
    // Inline code inside is opaque: a mark within backticks does not close.
    const between = text.slice(from, j);
    if ((between.match(/`/g)?.length ?? 0) % 2 === 1) continue;
    return j;
  }
  return -1;
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
