// Typed topics: a descriptor per namespace of `topic:` scopes (docs/protocol.md,
// "Namespaces"), whose payload type follows from the namespace's JSON Schema.
//
//   const orders = defineTopic('orders.{order_id}', {
//     type: 'object', required: ['amount'], properties: { amount: { type: 'number' } },
//   } as const);
//   await orders.subscribe(realtime, { order_id: 42 }, (ev) => ev.data.amount);   // number
//   await orders.publish(realtime, { order_id: 42 }, 'order.paid', { amount: 3 });
//
// The type comes from json-schema-to-ts's `FromSchema` (types only: nothing of it runs).
// `chorus namespaces export-ts --config FILE` writes a module of descriptors for the
// namespaces a server declares. The server validates every publish against the schema,
// so the data of a received event has the type; the types check what this client sends.
import type { FromSchema, JSONSchema } from 'json-schema-to-ts';

import type { ChorusEvent, ChorusRealtime } from './realtime.js';
import type { AckFrame } from './protocol.js';

/** A pattern without its optional `topic:` prefix. */
type Bare<P extends string> = P extends `topic:${infer Rest}` ? Rest : P;

/** The parameter names of a pattern: each `{name}`, and `*` for a trailing wildcard. */
export type TopicParamNames<P extends string> = P extends `${string}{${infer Name}}${infer Rest}`
  ? Name | TopicParamNames<Rest>
  : P extends `${string}*`
    ? '*'
    : never;

/** The values that fill a pattern's parameters. */
export type TopicParams<P extends string> = { readonly [K in TopicParamNames<P>]: string | number };

/** `scope()`'s arguments: none for a pattern without parameters. */
export type TopicArgs<P extends string> = [TopicParamNames<P>] extends [never] ? [] : [params: TopicParams<P>];

/** The payload type a schema describes; `unknown` without one. */
export type SchemaData<S> = S extends JSONSchema ? FromSchema<S> : unknown;

/** An event of a typed topic. */
export type TopicEvent<T> = ChorusEvent<T>;

/** A subscription made through a topic descriptor. */
export interface TopicSubscription {
  readonly scope: string;
  readonly ack: AckFrame;
  /** Stops the handler and unsubscribes the scope. */
  close(): Promise<void>;
}

/** A namespace's topics: their scope pattern and payload type `T`. */
export interface Topic<P extends string, T> {
  /** The pattern, `topic:` included (`topic:orders.{order_id}`). */
  readonly pattern: `topic:${Bare<P>}`;
  /** The JSON Schema given to `defineTopic`, if any. */
  readonly schema: JSONSchema | undefined;
  /** The scope of one topic, the pattern filled: `orders.scope({ order_id: 42 })` is
   * `topic:orders.42`. Throws when a value is empty or not scope text
   * (`[A-Za-z0-9_:-]`; `.` only in `*`). */
  scope(...args: TopicArgs<P>): string;
  /** The parameters of `scope` when it is one of these topics (matched as the server
   * does: each `{name}` one or more characters other than `.`), else `undefined`. */
  match(scope: string): TopicParams<P> | undefined;
  /** Narrows an event to this topic: `if (orders.is(ev)) ev.data.amount`. */
  is(event: ChorusEvent): event is TopicEvent<T>;
  /** Subscribes to one topic and hands its events, typed, to `onEvent` (those `since`
   * replays too); `close()` ends both. */
  subscribe(
    realtime: ChorusRealtime,
    ...args: [...TopicArgs<P>, onEvent: (event: TopicEvent<T>) => void, options?: { since?: number }]
  ): Promise<TopicSubscription>;
  /** Publishes `data` as an event of type `type` from this client (op `publish`; the
   * namespace must allow it); resolves with the ack (its `offset`: none in a namespace
   * without history). */
  publish(realtime: ChorusRealtime, ...args: [...TopicArgs<P>, type: string, data: T]): Promise<AckFrame>;
}

const VALUE = /^[A-Za-z0-9_:-]+$/;
const REST = /^[A-Za-z0-9_.:-]+$/;
const PART = /\{([a-z_]+)\}|\*$/g;

/**
 * A typed topic descriptor. `pattern` is a namespace's pattern with or without the
 * `topic:` prefix (`orders.{order_id}`, `news`, `cursors.*`); `schema` its JSON Schema,
 * declared `as const` (or inline) so that its literal types are kept.
 */
export function defineTopic<const P extends string, const S extends JSONSchema>(pattern: P, schema: S): Topic<P, FromSchema<S>>;
/** A topic without a schema: its payload type is `T` (default `unknown`), unchecked. */
export function defineTopic<const P extends string, T = unknown>(pattern: P): Topic<P, T>;
export function defineTopic(pattern: string, schema?: JSONSchema): Topic<string, unknown> {
  const full = (pattern.startsWith('topic:') ? pattern : `topic:${pattern}`) as `topic:${string}`;
  const names = [...full.matchAll(PART)].map((m) => m[1] ?? '*');
  let source = '^';
  let last = 0;
  for (const m of full.matchAll(PART)) {
    source += escapeRegExp(full.slice(last, m.index)) + (m[1] === undefined ? '(.+)' : '([^.]+?)');
    last = m.index + m[0].length;
  }
  const matcher = new RegExp(`${source}${escapeRegExp(full.slice(last))}$`);

  const scope = (params: Record<string, string | number> = {}): string => {
    let i = 0;
    return full.replace(PART, () => {
      const name = names[i++] ?? '*';
      const value = params[name];
      const text = value === undefined ? '' : String(value);
      if (!(name === '*' ? REST : VALUE).test(text)) {
        throw new Error(`topic ${full}: parameter ${name} = ${JSON.stringify(value)} is not scope text`);
      }
      return text;
    });
  };
  const split = (args: unknown[]): [Record<string, string | number> | undefined, unknown[]] =>
    names.length > 0 ? [args[0] as Record<string, string | number>, args.slice(1)] : [undefined, args];

  return {
    pattern: full,
    schema,
    scope: (...args: unknown[]) => scope(args[0] as Record<string, string | number> | undefined),
    match(name: string) {
      const m = matcher.exec(name);
      if (!m) return undefined;
      return Object.fromEntries(names.map((n, i) => [n, m[i + 1] ?? ''])) as never;
    },
    is: (event: ChorusEvent): event is ChorusEvent<unknown> => matcher.test(event.scope),
    async subscribe(realtime: ChorusRealtime, ...args: unknown[]) {
      const [params, rest] = split(args);
      const onEvent = rest[0] as (event: ChorusEvent<unknown>) => void;
      const options = rest[1] as { since?: number } | undefined;
      const name = scope(params);
      // Listening first: events `since` replays arrive before the ack.
      const off = realtime.on('event', (event) => {
        if (event.scope === name) onEvent(event);
      });
      try {
        const ack = await realtime.subscribe(name, options?.since);
        return {
          scope: name,
          ack,
          async close() {
            off();
            await realtime.unsubscribe(name);
          },
        };
      } catch (err) {
        off();
        throw err;
      }
    },
    publish(realtime: ChorusRealtime, ...args: unknown[]) {
      const [params, rest] = split(args);
      return realtime.publish(scope(params), rest[0] as string, rest[1]);
    },
  } as Topic<string, unknown>;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
