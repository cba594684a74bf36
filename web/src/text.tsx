// A message's text on screen: the tree markdown.ts parses, as elements and text nodes
// only (no innerHTML anywhere), so what people type is always shown as text.
import type { ComponentChildren } from 'preact';
import { useErrorBoundary, useMemo, useState } from 'preact/hooks';
import { parse, type Block, type Inline } from './markdown';

export interface TextContext {
  /** My user name (mentions of me stand out). */
  me: string;
  /** Whether `@name` names a member (anything else stays plain text). */
  isMember: (name: string) => boolean;
}

/** A message's text. Should it ever fail to render, it is shown as it was written (as
 * text) instead: one message must never break the view it is in, for everyone who reads
 * it. Tried again when the text changes (an edit, a streaming message growing). */
export function Text({ text, ctx }: { text: string; ctx: TextContext }) {
  const [failed, setFailed] = useState<string | undefined>(undefined);
  useErrorBoundary((err: unknown) => {
    console.error('a message could not be rendered', err);
    setFailed(text);
  });
  if (failed === text) return <p class="md-p">{text}</p>;
  return <Rendered text={text} ctx={ctx} />;
}

/** The text's markup as elements. Parsed once per text: the whole view re-renders on
 * every change of the store (a typing signal, a presence change). */
function Rendered({ text, ctx }: { text: string; ctx: TextContext }) {
  const blocks = useMemo(() => parse(text), [text]);
  return <>{blocks.map((b, i) => block(b, i, ctx))}</>;
}

function block(b: Block, key: number, ctx: TextContext): ComponentChildren {
  switch (b.t) {
    case 'p':
      return (
        <p key={key} class="md-p">
          {b.c.map((n, i) => inline(n, i, ctx))}
        </p>
      );
    case 'pre':
      return (
        <pre key={key} class="md-pre" tabIndex={0} aria-label={b.lang ? `Code (${b.lang})` : 'Code'}>
          <code>{b.v}</code>
        </pre>
      );
    case 'quote':
      return (
        <blockquote key={key} class="md-quote">
          {b.c.map((x, i) => block(x, i, ctx))}
        </blockquote>
      );
  }
}

function inline(n: Inline, key: number, ctx: TextContext): ComponentChildren {
  switch (n.t) {
    case 'text':
      return n.v;
    case 'code':
      return (
        <code key={key} class="md-code">
          {n.v}
        </code>
      );
    case 'b':
      return <strong key={key}>{n.c.map((x, i) => inline(x, i, ctx))}</strong>;
    case 'i':
      return <em key={key}>{n.c.map((x, i) => inline(x, i, ctx))}</em>;
    case 's':
      return <del key={key}>{n.c.map((x, i) => inline(x, i, ctx))}</del>;
    case 'link':
      return (
        <a key={key} href={n.href} target="_blank" rel="noopener noreferrer nofollow ugc">
          {n.c.map((x, i) => inline(x, i, ctx))}
        </a>
      );
    case 'mention':
      if (!ctx.isMember(n.name)) return `@${n.name}`;
      return (
        <span key={key} class={`mention${n.name === ctx.me ? ' me' : ''}`}>
          @{n.name}
        </span>
      );
    case 'emoji':
      return (
        <span key={key} class="emoji" title={`:${n.code}:`}>
          {n.v}
        </span>
      );
  }
}
