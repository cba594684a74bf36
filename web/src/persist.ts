// What the UI keeps in the browser across reloads, per signed-in user: drafts (one per
// conversation: a channel, or a thread of it), the messages not sent yet, and mentions
// in threads not seen yet. Pure apart from the `Storage` it is given: unit-tested in Node.
import type { ChannelId, MessageId } from '@chorus/client';

/** The part of `Storage` (localStorage) used here. */
export interface KeyValue {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** A conversation: a channel's main view, or one thread of it. */
export function convKey(channelId: ChannelId, threadId?: MessageId): string {
  return threadId === undefined ? `c${channelId}` : `c${channelId}/t${threadId}`;
}

/** A message on its way (or that could not be sent). */
export interface Outgoing {
  /** Also the send's `Idempotency-Key`: a resend after a reload posts it at most once. */
  key: string;
  channelId: ChannelId;
  threadId?: MessageId;
  text: string;
  /** `sending`: a request is out; `waiting`: it failed for a reason that passes (the
   * server was unreachable) and is sent again by itself once connected; `failed`: the
   * server refused it (`error` says why) and sending it again would not help. */
  state: 'sending' | 'waiting' | 'failed';
  error?: string;
}

/** What is kept per user (`chorus.<name>.<user id>`). */
const NAMES = ['drafts', 'outbox', 'thread-mentions'] as const;

export class Persisted {
  /** Nothing more is written (see `close`). */
  private closed = false;

  constructor(
    private readonly kv: KeyValue,
    private readonly userId: number,
  ) {}

  /** Writes nothing more: the session ended, and what a page still running would save
   * (its drafts when it stops, a send that comes back) is not written back. */
  close(): void {
    this.closed = true;
  }

  /** Signing out on purpose: what the user left in this browser goes (drafts, messages
   * not sent, thread mentions not seen), on a shared machine too, and nothing more is
   * written. */
  clear(): void {
    this.close();
    for (const name of NAMES) {
      try {
        this.kv.removeItem(`chorus.${name}.${this.userId}`);
      } catch {
        // storage disabled: nothing was kept
      }
    }
  }

  private read<T>(name: string, fallback: T): T {
    try {
      const raw = this.kv.getItem(`chorus.${name}.${this.userId}`);
      return raw === null ? fallback : (JSON.parse(raw) as T);
    } catch {
      return fallback;
    }
  }

  private write(name: (typeof NAMES)[number], value: unknown, empty: boolean): void {
    if (this.closed) return;
    const key = `chorus.${name}.${this.userId}`;
    try {
      if (empty) this.kv.removeItem(key);
      else this.kv.setItem(key, JSON.stringify(value));
    } catch {
      // storage full or disabled: kept for this page only
    }
  }

  drafts(): Map<string, string> {
    const raw = this.read<Record<string, unknown>>('drafts', {});
    const out = new Map<string, string>();
    for (const [k, v] of Object.entries(raw ?? {})) if (typeof v === 'string' && v) out.set(k, v);
    return out;
  }

  saveDrafts(drafts: ReadonlyMap<string, string>): void {
    this.write('drafts', Object.fromEntries([...drafts].filter(([, v]) => v)), drafts.size === 0);
  }

  /** The outbox as it was left; what was being sent then is sent again. */
  outbox(): Outgoing[] {
    const raw = this.read<unknown>('outbox', []);
    if (!Array.isArray(raw)) return [];
    return raw
      .filter(
        (o): o is Outgoing =>
          typeof o === 'object' &&
          o !== null &&
          typeof (o as Outgoing).key === 'string' &&
          typeof (o as Outgoing).channelId === 'number' &&
          typeof (o as Outgoing).text === 'string',
      )
      .map((o) => ({ ...o, state: o.state === 'failed' ? 'failed' : 'waiting' }));
  }

  saveOutbox(outbox: readonly Outgoing[]): void {
    this.write('outbox', outbox, outbox.length === 0);
  }

  /** Channel → reply → its thread's root: replies that mention the user, not seen yet. */
  threadMentions(): ThreadMentions {
    const raw = this.read<Record<string, unknown>>('thread-mentions', {});
    const out: ThreadMentions = new Map();
    for (const [k, v] of Object.entries(raw ?? {})) {
      if (!Array.isArray(v)) continue;
      const pairs = v.filter(
        (x): x is [number, number] => Array.isArray(x) && typeof x[0] === 'number' && typeof x[1] === 'number',
      );
      if (pairs.length) out.set(Number(k), new Map(pairs));
    }
    return out;
  }

  saveThreadMentions(mentions: ThreadMentions): void {
    const entries = [...mentions].filter(([, ids]) => ids.size > 0).map(([k, ids]) => [k, [...ids]]);
    this.write('thread-mentions', Object.fromEntries(entries), entries.length === 0);
  }
}

/** Channel → reply that mentions the user → its thread's root. */
export type ThreadMentions = Map<ChannelId, Map<MessageId, MessageId>>;
