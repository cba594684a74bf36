import { ChorusError } from './errors.js';
import { ChorusHttp, sleep } from './http.js';
import type { ChannelId, EventDataMap, Message, MessageId, ScopeEvents } from './model.js';
import {
  CloseCode,
  parseServerFrame,
  shouldReconnect,
  type AckFrame,
  type ClientOp,
  type ErrorFrame,
  type EventFrame,
  type HelloFrame,
  type ScopeResume,
} from './protocol.js';

/** What the web UI shows: `reconnecting` covers the backoff wait and the attempts. */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The part of the WebSocket API this client uses: the browser's `WebSocket`, Node 22's
 * global one and the `ws` package all fit. Handlers take `any` so that each
 * implementation's own event types are accepted. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** An event as the application sees it. `replayed` marks a `message.created` that the
 * client fetched from a channel's history to close a gap the server could not replay
 * (it has no offset). Events caught up from the scope's event log look live. */
export type ChorusEvent<T = unknown> = EventFrame<T> & { replayed?: boolean };

/** A documented event type with its typed `data`. */
export type TypedEvent<K extends keyof EventDataMap> = ChorusEvent<EventDataMap[K]> & { type: K };

/** The type of the event an `events()` iterator yields for a scope whose events may be
 * missing: a `gap` the connection reports, or events the iterator dropped because its
 * consumer fell more than `maxQueuedEvents` behind. Its `data` is a `GapData`; it has no
 * offset. Reload what the application shows of that scope. (The Rust client's name for
 * the same event; `resume` is a family only Chorus sends, so no published event has it.) */
export const RESUME_GAP = 'resume.gap';

/** The `data` of a `RESUME_GAP` event, and what a `gap` listener gets. `dropped`: how
 * many events the iterator dropped, when that is the cause. */
export interface GapData {
  scope: string;
  reason: string;
  dropped?: number;
}

/** Narrows an event to a documented type: `if (isEvent(ev, 'message.created')) ev.data.text`. */
export function isEvent<K extends keyof EventDataMap>(ev: ChorusEvent, type: K): ev is TypedEvent<K> {
  return ev.type === type;
}

export interface RealtimeListeners {
  /** Every event, once, in offset order per scope. */
  event: ChorusEvent;
  state: ConnectionState;
  /** Each connection's `hello` (the first and every reconnect). */
  hello: HelloFrame;
  /** The server's answer to a reconnect's `resume`, per scope. */
  resume: Record<string, ScopeResume>;
  /** Events of `scope` may be missing and could not be fetched: reload it. */
  gap: GapData;
  disconnect: { code: number; reason: string };
  /** `error` frames that answer no request, and the fatal error that closed the client. */
  error: ChorusError;
}

export interface RealtimeOptions {
  token: string;
  /** Default: the global `WebSocket` (browsers, Node ≥ 22). In Node 20 pass `ws`'s. */
  WebSocket?: WebSocketConstructor;
  /** Used for the HTTP catch-up and the token check; default: one for the same server. */
  http?: ChorusHttp;
  /** How long `hello` and each request's answer may take (default 10 s). */
  requestTimeoutMs?: number;
  /** Reconnect backoff: full jitter in [0, min(capMs, baseMs·2^attempt)); the attempt
   * count resets once a connection stayed open for stableMs. */
  backoff?: { baseMs?: number; capMs?: number; stableMs?: number };
  /** Close gaps over HTTP after `recovered:false` (default true): the scope's events
   * from `GET /api/v1/scopes/{scope}/events`, or, when those are gone too, a channel's
   * messages. */
  catchUp?: boolean;
  /** Events an `events()` iterator keeps for a consumer that does not read them
   * (default 10,000). Past it the oldest are dropped, and the iterator yields a
   * `RESUME_GAP` event for each scope that lost some, ahead of the events it still holds:
   * reload those scopes. `events({ maxQueued })` sets it per iterator. */
  maxQueuedEvents?: number;
  /** Events held per scope while a reconnect's resume or an HTTP catch-up of the scope
   * completes (default 10,000). Past it the scope's held events are dropped and read
   * again from its event log once the catch-up ends; a `gap` is reported when that
   * cannot be (events without an offset among them, or no log to read). */
  maxHeldEvents?: number;
  /** Jitter source, for tests. */
  random?: () => number;
  /** Fresh credentials when `token` is a JWT about to expire: called at 80 % of its
   * remaining lifetime (and at least 5 s before its `exp`), and after a close with 3502;
   * the new token is sent as `refresh` and used for every later reconnect and HTTP
   * catch-up. Without it a connection opened with a JWT ends at the token's `exp`. */
  refreshToken?: () => Promise<string>;
}

interface Pending {
  resolve: (ack: AckFrame) => void;
  reject: (err: ChorusError) => void;
  timer: ReturnType<typeof setTimeout>;
}

const CATCH_UP_PAGE = 200;
/** Page size of the events catch-up: the server's largest. */
const REPLAY_PAGE = 1000;
/** Message ids fetched by catch-up, kept per channel to drop their live duplicates. */
const MAX_CAUGHT_UP_IDS = 2_000;
/** Close code this client sends when it drops a socket itself (private-use range). */
const LOCAL_DROP = 4000;
/** Why a hold ended in a gap: some events held over `maxHeldEvents` were dropped. */
const OVER_HELD = 'more events held than maxHeldEvents: some were dropped';

/**
 * One logical realtime connection to `GET /ws` that survives reconnects: it resumes
 * every scope from the last offset it delivered, closes gaps over HTTP (the scope's
 * events; past retention, a channel's messages), and hands each event to the
 * application once, in order per scope.
 */
export class ChorusRealtime {
  readonly url: string;
  /** The newest token: the one given, or the last one `refreshToken` returned. */
  private token: string;
  private readonly refreshToken: (() => Promise<string>) | undefined;
  private readonly Ws: WebSocketConstructor;
  private http: ChorusHttp;
  private readonly timeoutMs: number;
  private readonly baseMs: number;
  private readonly capMs: number;
  private readonly stableMs: number;
  private readonly catchUpOn: boolean;
  private readonly random: () => number;
  private readonly maxQueued: number;
  private readonly maxHeld: number;

  private _state: ConnectionState = 'closed';
  private _hello: HelloFrame | undefined;
  private started = false;
  private userClosed = false;
  /** Bumped per socket: handlers and async work of an older socket see a stale value. */
  private gen = 0;
  private ws: WebSocketLike | undefined;
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private attempt = 0;
  private openedAt = 0;
  private lastHeard = 0;
  private timers: ReturnType<typeof setTimeout>[] = [];
  private heartbeat: ReturnType<typeof setInterval> | undefined;

  /** Scopes this connection is subscribed to (hello's, explicit ones, joined channels). */
  private scopes = new Set<string>();
  /** Scopes the application subscribed to itself: re-subscribed after a reconnect. */
  private explicit = new Set<string>();
  /** Per scope, the offset of the last event handed to the application. */
  private positions = new Map<string, number>();
  /** Scopes whose events wait for a resume answer or an HTTP catch-up. */
  private buffers = new Map<string, ChorusEvent[]>();
  /** Held scopes whose buffer went over `maxHeld` and was emptied (`spill`); `true` when
   * an event without offset was among those dropped (it cannot be read again). */
  private spilled = new Map<string, boolean>();
  private lastMessageIds = new Map<ChannelId, MessageId>();
  private caughtUp = new Map<ChannelId, Set<MessageId>>();
  private baselines = Promise.resolve();

  /** Typed at `on`/`emit`; stored loosely because TS cannot index a mapped type by a generic key. */
  private listeners = new Map<keyof RealtimeListeners, Set<(v: never) => void>>();
  private connectWaiters: { resolve: (h: HelloFrame) => void; reject: (e: ChorusError) => void }[] = [];

  /** `url`: the server's base URL (`http://host:7800`, the socket is then `/ws`) or a
   * full `ws(s)://…/ws` URL. */
  constructor(url: string, options: RealtimeOptions) {
    this.url = url;
    this.token = options.token;
    const Ws = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ws) throw new Error('no global WebSocket: pass the `WebSocket` option (e.g. from the ws package)');
    this.Ws = Ws;
    this.http = options.http ?? new ChorusHttp(httpBase(url), { token: options.token });
    this.refreshToken = options.refreshToken;
    this.timeoutMs = options.requestTimeoutMs ?? 10_000;
    this.baseMs = options.backoff?.baseMs ?? 500;
    this.capMs = options.backoff?.capMs ?? 30_000;
    this.stableMs = options.backoff?.stableMs ?? 10_000;
    this.catchUpOn = options.catchUp ?? true;
    this.random = options.random ?? Math.random;
    this.maxQueued = Math.max(1, options.maxQueuedEvents ?? 10_000);
    this.maxHeld = Math.max(1, options.maxHeldEvents ?? 10_000);
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** The latest connection's `hello`. */
  get hello(): HelloFrame | undefined {
    return this._hello;
  }

  /** The scopes currently subscribed, as far as this client knows. */
  get subscribedScopes(): string[] {
    return [...this.scopes];
  }

  /** The last delivered offset per scope: what a reconnect resumes from. */
  get positionsSnapshot(): Record<string, number> {
    return Object.fromEntries(this.positions);
  }

  /** Opens the connection; resolves with the first `hello`. Network failures are retried
   * with backoff (watch `state`); rejects only when the client closes first (a refused
   * token, a 35xx close code, or `close()`). */
  connect(): Promise<HelloFrame> {
    if (this._hello && this._state === 'open') return Promise.resolve(this._hello);
    const waiting = new Promise<HelloFrame>((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (!this.started) {
      this.started = true;
      this.userClosed = false;
      this.setState('connecting');
      this.open();
    }
    return waiting;
  }

  /** Closes for good (code 1000); pending requests fail with `closed`. */
  close(): void {
    this.userClosed = true;
    this.teardown(1000, 'bye');
    this.finish(new ChorusError(0, 'closed', 'closed by the application'));
  }

  on<K extends keyof RealtimeListeners>(type: K, fn: (value: RealtimeListeners[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => void set.delete(fn);
  }

  /** The events from now on as an async iterator, with each `gap` in its place as a
   * `RESUME_GAP` event; it ends when the client closes. A consumer more than `maxQueued`
   * (default: the `maxQueuedEvents` option) behind loses the oldest: a `RESUME_GAP` event
   * per scope that lost some comes before the events still queued. */
  events(options: { maxQueued?: number } = {}): AsyncIterableIterator<ChorusEvent> {
    const cap = Math.max(1, options.maxQueued ?? this.maxQueued);
    const queue: ChorusEvent[] = [];
    /** Per scope, events dropped from the queue's head and not yet reported. */
    const dropped = new Map<string, number>();
    let wake: (() => void) | undefined;
    let done = false;
    const push = (ev: ChorusEvent) => {
      if (queue.length >= cap) {
        // The oldest goes: the consumer is then shown the newest state, after a gap that
        // tells it to reload. A gap event dropped is still reported through its scope.
        const oldest = queue.shift()!;
        dropped.set(oldest.scope, (dropped.get(oldest.scope) ?? 0) + 1);
      }
      queue.push(ev);
      wake?.();
    };
    const offEvent = this.on('event', push);
    const offGap = this.on('gap', (gap) => push(gapEvent(gap)));
    const offState = this.on('state', (s) => {
      if (s === 'closed') stop();
    });
    const stop = () => {
      done = true;
      offEvent();
      offGap();
      offState();
      wake?.();
    };
    const iterator: AsyncIterableIterator<ChorusEvent> = {
      next: async () => {
        while (queue.length === 0 && dropped.size === 0 && !done) await new Promise<void>((r) => (wake = r));
        // What was dropped is older than everything still queued: its gaps go first.
        for (const [scope, count] of dropped) {
          dropped.delete(scope);
          const reason = `fell behind: ${count} events dropped (over ${cap} queued)`;
          return { value: gapEvent({ scope, reason, dropped: count }), done: false };
        }
        const value = queue.shift();
        return value ? { value, done: false } : { value: undefined, done: true };
      },
      return: async () => {
        stop();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** Subscribes to a scope (authorized by the server: `forbidden` rejects). With `since`,
   * the retained events after it are replayed first (minus those already delivered). */
  async subscribe(scope: string, since?: number): Promise<AckFrame> {
    const ack = await this.request({ op: 'subscribe', scope, ...(since !== undefined && { since }) });
    this.scopes.add(scope);
    this.explicit.add(scope);
    // Every event up to the ack's offset was queued before the ack: a safe resume point.
    if (ack.offset !== undefined) this.advance(scope, ack.offset);
    return ack;
  }

  async unsubscribe(scope: string): Promise<void> {
    await this.request({ op: 'unsubscribe', scope });
    this.forget(scope);
  }

  /** Tells the channel's other members that the user is typing. */
  async typing(channelId: ChannelId, threadId?: MessageId): Promise<void> {
    await this.request({ op: 'typing', channel_id: channelId, ...(threadId !== undefined && { thread_id: threadId }) });
  }

  /** Adds `text` to the end of one's own streaming message (op `append`); resolves
   * when the server accepted it. `ChorusHttp.openStream(…, { realtime })` batches these. */
  async append(messageId: MessageId, text: string): Promise<void> {
    await this.request({ op: 'append', message_id: messageId, text });
  }

  /** Ends one's own stream (op `complete`); with `text`, that becomes the whole text. */
  async complete(messageId: MessageId, text?: string): Promise<void> {
    await this.request({ op: 'complete', message_id: messageId, ...(text !== undefined && { text }) });
  }

  /** Ends a stream without completing it (op `abort`). */
  async abort(messageId: MessageId, reason?: string): Promise<void> {
    await this.request({ op: 'abort', message_id: messageId, ...(reason !== undefined && { reason }) });
  }

  /** Publishes an event to a `topic:` scope whose namespace lets this connection
   * publish (op `publish`); `data` must satisfy the namespace's schema (`bad_request`
   * naming the failing path). The ack's `offset` is the event's (none in a namespace
   * without history). `defineTopic` (topics.ts) types `data` from the schema. */
  async publish(scope: string, type: string, data: unknown): Promise<AckFrame> {
    return this.request({ op: 'publish', scope, type, data });
  }

  /** A protocol-level ping; resolves with the round-trip time in ms. */
  async ping(): Promise<number> {
    const start = Date.now();
    await this.request({ op: 'ping' });
    return Date.now() - start;
  }

  /** Tells the catch-up where the application's copy of a channel ends (e.g. after it
   * loaded history), so a later gap is fetched from there. */
  noteMessages(channelId: ChannelId, messages: Pick<Message, 'id'>[]): void {
    for (const m of messages) this.noteMessageId(channelId, m.id);
  }

  // ---------------------------------------------------------------- connection

  private open(): void {
    const gen = ++this.gen;
    const resuming = this.positions.size > 0;
    this.holding = resuming;
    const url = new URL(wsUrl(this.url));
    // Browsers cannot set headers on a WebSocket: the token goes in the query.
    url.searchParams.set('token', this.token);
    // Hold the initial subscriptions until our `resume`, so replay and live events join
    // with no gap and no duplicate.
    if (resuming) url.searchParams.set('resume', '1');
    let ws: WebSocketLike;
    try {
      ws = new this.Ws(url.toString());
    } catch (err) {
      this.later(() => this.onDrop(gen, 1006, String(err)), 0);
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev: { data: unknown }) => {
      if (gen !== this.gen) return;
      try {
        this.onText(gen, typeof ev.data === 'string' ? ev.data : String(ev.data));
      } catch (err) {
        // A frame this client cannot handle: reported, and the connection goes on (an
        // exception escaping a socket handler ends a Node process). Listeners' own
        // exceptions are not caught here: `emit` rethrows them apart.
        this.emit('error', new ChorusError(0, 'unexpected_response', `handling a frame failed: ${String(err)}`));
      }
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      if (gen === this.gen) this.onDrop(gen, ev.code ?? 1006, ev.reason ?? '');
    };
    ws.onerror = () => {
      // `close` follows with the details.
    };
    // No hello in time: treat the attempt as failed.
    const helloTimer = setTimeout(() => {
      if (gen === this.gen && !this.connected) this.onDrop(gen, 1006, 'no hello in time');
    }, this.timeoutMs);
    this.timers.push(helloTimer);
  }

  /** Whether the current socket got its `hello`. */
  private connected = false;
  /** Whether the current socket was opened with `?resume=1` (its first frame must be `resume`). */
  private holding = false;

  private onText(gen: number, text: string): void {
    this.lastHeard = Date.now();
    const frame = parseServerFrame(text);
    if (!frame) return; // unknown frames are skipped so newer servers stay usable
    switch (frame.op) {
      case 'hello':
        if (!this.connected) this.onHello(gen, frame);
        return;
      case 'event':
        return this.onEvent(frame);
      case 'ack':
        return this.settle(frame.id, (p) => p.resolve(frame));
      case 'error':
        return this.onError(frame);
      case 'pong':
        return;
    }
  }

  private onHello(gen: number, hello: HelloFrame): void {
    const first = this._hello === undefined;
    const old = this.scopes;
    this.connected = true;
    this._hello = hello;
    this.openedAt = Date.now();
    this.scopes = new Set([...hello.scopes, ...this.explicit]);
    // Scopes that vanished while we were away (left or removed): nothing to resume.
    for (const scope of old) if (!this.scopes.has(scope)) this.forget(scope);
    this.startHeartbeat(gen, hello.heartbeat_ms);
    this.scheduleRefresh(gen);

    if (first) {
      for (const [scope, offset] of Object.entries(hello.offsets ?? {})) this.advance(scope, offset);
    } else {
      const positions: Record<string, number> = {};
      for (const scope of this.scopes) {
        const at = this.positions.get(scope);
        if (at !== undefined) positions[scope] = at;
      }
      // Events wait until the resume answer says, per scope, whether they join up.
      for (const scope of this.scopes) this.buffers.set(scope, []);
      if (this.holding) {
        // Sent before anything else: on a `?resume=1` connection it must be the first frame.
        this.send(gen, { op: 'resume', positions }).then(
          (ack) => this.onResumed(gen, hello, old, ack.scopes ?? {}),
          () => this.onDrop(gen, 1006, 'resume not answered'),
        );
      } else {
        this.onResumed(gen, hello, old, {});
      }
    }
    this.setState('open');
    this.emit('hello', hello);
    for (const w of this.connectWaiters.splice(0)) w.resolve(hello);
    if (first) this.baselineAll();
  }

  /** Applies the resume outcome per scope: joined-up scopes go live at once; the others
   * are caught up over HTTP first (`replay`), or reported as gaps when that cannot be. */
  private onResumed(gen: number, hello: HelloFrame, old: Set<string>, results: Record<string, ScopeResume>): void {
    if (gen !== this.gen) return;
    this.emit('resume', results);
    for (const scope of [...this.scopes]) {
      const result = results[scope];
      if (result?.error !== undefined) {
        this.forget(scope);
        this.emit('gap', { scope, reason: `resume refused: ${result.error}` });
        continue;
      }
      if (result?.recovered) {
        if (this.spilled.has(scope)) {
          // The replay went over the cap and was dropped: read it from the event log.
          this.readAgain(gen, scope, hello);
          continue;
        }
        this.release(scope);
        if (result.offset !== undefined) this.advance(scope, result.offset);
        continue;
      }
      const wasKnown = old.has(scope);
      const from = result ? this.positions.get(scope) : undefined;
      if (wasKnown && from !== undefined && this.catchUpOn) void this.replay(gen, scope, from, hello);
      else this.fallBack(gen, scope, wasKnown, result !== undefined, hello);
    }
    // Explicit scopes with no known position were not in the resume: subscribe again.
    for (const scope of this.explicit) {
      if (!(scope in results) && !hello.scopes.includes(scope)) {
        this.subscribe(scope).catch((err: ChorusError) => {
          this.forget(scope);
          this.emit('gap', { scope, reason: `resubscribe failed: ${err.code}` });
        });
      }
    }
  }

  /** Catches up a scope the server did not recover from its event log: every event after
   * `from`, page by page, delivered as if it had arrived live (advancing the position),
   * then the live events buffered meanwhile. When the server no longer has them (410) or
   * has no such route (404, an older server), or keeps failing: `fallBack`. */
  private async replay(gen: number, scope: string, from: number, hello: HelloFrame, unlogged = false): Promise<void> {
    let after = from;
    for (let failures = 0; ; ) {
      let page: ScopeEvents;
      try {
        page = await this.http.scopeEvents(scope, after, REPLAY_PAGE);
      } catch (err) {
        if (gen !== this.gen || !this.buffers.has(scope)) return;
        const gone = err instanceof ChorusError && (err.status === 410 || err.status === 404);
        if (!gone && ++failures < 3 && err instanceof ChorusError && err.retryable) {
          await sleep(500 * 2 ** failures);
          continue;
        }
        // Events dropped over the cap that the fallback cannot fetch: still a gap.
        if (unlogged) this.spilled.set(scope, true);
        return this.fallBack(gen, scope, true, true, hello);
      }
      // The connection changed meanwhile (its successor resumes from the position
      // reached), or the scope was left.
      if (gen !== this.gen || !this.buffers.has(scope)) return;
      for (const { scope: s, offset, type, data, wake } of page.events) {
        const ev: ChorusEvent = { op: 'event', scope: s, offset, type, data, ...(wake != null && { wake }) };
        if (offset <= (this.positions.get(scope) ?? -1)) continue;
        this.track(ev);
        this.deliver(ev);
        if (gen !== this.gen) return; // a listener closed or dropped the connection
      }
      if (page.more && page.next > after) {
        after = page.next;
        continue;
      }
      // Live events held meanwhile went over the cap and were dropped: read on.
      const spill = this.spilled.get(scope);
      if (spill === undefined) break;
      this.spilled.delete(scope);
      unlogged ||= spill;
      after = Math.max(after, page.next);
    }
    this.release(scope);
    if (unlogged) this.emit('gap', { scope, reason: `${OVER_HELD}, some without an offset` });
  }

  /** A held scope whose events went over the cap: its events after the position are
   * read from the event log (`replay`, which ends the hold), or, without a position or
   * the catch-up, the hold ends in a gap. */
  private readAgain(gen: number, scope: string, hello: HelloFrame): void {
    const from = this.positions.get(scope);
    if (from === undefined || !this.catchUpOn) {
      this.release(scope);
      this.emit('gap', { scope, reason: OVER_HELD });
      return;
    }
    const unlogged = this.spilled.get(scope);
    this.spilled.delete(scope);
    void this.replay(gen, scope, from, hello, unlogged);
  }

  /** The catch-up when a scope's events are lost: its position restarts from `hello`
   * (after a restart without a durable log, a new numbering); a channel's messages after
   * the last one seen are fetched; any other scope is reported as a gap. */
  private fallBack(gen: number, scope: string, wasKnown: boolean, resumed: boolean, hello: HelloFrame): void {
    if (resumed) {
      const at = hello.offsets?.[scope];
      if (at !== undefined) this.positions.set(scope, at);
      else this.positions.delete(scope);
    }
    const channel = channelOf(scope);
    if (wasKnown && channel !== undefined && this.catchUpOn) {
      void this.catchUp(gen, scope, channel);
    } else {
      const spilled = this.release(scope);
      if (wasKnown) this.emit('gap', { scope, reason: 'events were not retained' });
      else if (spilled) this.emit('gap', { scope, reason: OVER_HELD });
    }
  }

  /** Fetches the channel's messages after the last one delivered and hands them out as
   * replayed `message.created` events, then the live events buffered meanwhile. */
  private async catchUp(gen: number, scope: string, channel: ChannelId): Promise<void> {
    let after = this.lastMessageIds.get(channel);
    if (after === undefined) {
      this.release(scope);
      this.emit('gap', { scope, reason: 'no message seen in this channel yet; reload its history' });
      return;
    }
    const ids = this.caughtUp.get(channel) ?? new Set<MessageId>();
    this.caughtUp.set(channel, ids);
    for (let failures = 0; ; ) {
      let page: Message[];
      try {
        page = await this.http.listMessages(channel, { after, limit: CATCH_UP_PAGE });
      } catch (err) {
        if (gen !== this.gen) return;
        if (++failures < 3 && err instanceof ChorusError && err.retryable) {
          await sleep(500 * 2 ** failures);
          continue;
        }
        this.release(scope);
        this.emit('gap', { scope, reason: `catch-up failed: ${String(err)}` });
        return;
      }
      // The connection changed meanwhile: its successor resumes from the same point.
      if (gen !== this.gen) return;
      for (const message of page) {
        if (ids.has(message.id)) continue;
        ids.add(message.id);
        this.noteMessageId(channel, message.id);
        this.dispatch({ op: 'event', scope, type: 'message.created', data: message, replayed: true });
        after = message.id;
      }
      if (page.length < CATCH_UP_PAGE) break;
    }
    while (ids.size > MAX_CAUGHT_UP_IDS) ids.delete(ids.values().next().value as MessageId);
    // Only messages were fetched: other events dropped over the cap are a gap.
    if (this.release(scope)) this.emit('gap', { scope, reason: OVER_HELD });
  }

  private onEvent(ev: ChorusEvent): void {
    if (ev.offset !== undefined) {
      // Held events are in offset order: the last one with an offset is the highest.
      const held = this.buffers.get(ev.scope)?.findLast((e) => e.offset !== undefined)?.offset;
      if (ev.offset <= Math.max(this.positions.get(ev.scope) ?? -1, held ?? -1)) return; // a duplicate
    }
    this.track(ev);
    const buffer = this.buffers.get(ev.scope);
    if (!buffer) this.deliver(ev);
    else if (buffer.length < this.maxHeld && !this.spilled.has(ev.scope)) buffer.push(ev);
    else this.spill(ev.scope, buffer, ev);
  }

  /** A held scope over `maxHeld`: its held events and those that follow until the hold
   * ends are dropped; what has an offset is read again from the event log then, as its
   * position was not advanced past them (`replay`, `readAgain`). */
  private spill(scope: string, buffer: ChorusEvent[], ev: ChorusEvent): void {
    const unlogged = this.spilled.get(scope) || ev.offset === undefined || buffer.some((e) => e.offset === undefined);
    this.spilled.set(scope, unlogged);
    buffer.length = 0;
  }

  /** Follows membership changes announced on the user's own scope: the server has
   * already changed the subscriptions; this keeps the list of scopes to resume in step.
   * Only the server sends these types (it refuses them in a `publish`); they are still
   * believed only where the server puts them, and read defensively. */
  private track(ev: ChorusEvent): void {
    // The server ended the subscription (on the scope it ends, with no offset): the user
    // may no longer read it.
    if (isEvent(ev, 'subscription.revoked')) {
      if (ev.offset === undefined) this.forget(ev.scope);
      return;
    }
    const user = this._hello?.user_id;
    if (user === undefined || ev.scope !== `user:${user}`) return;
    const id = (value: unknown): number | undefined => (typeof value === 'number' ? value : undefined);
    const data = ev.data as Record<string, any> | null | undefined;
    if (isEvent(ev, 'channel.joined')) {
      const channel = id(data?.channel?.id);
      if (channel === undefined) return;
      this.scopes.add(`channel:${channel}`);
      if (this.catchUpOn) this.baseline(channel);
    } else if (isEvent(ev, 'channel.left')) {
      const channel = id(data?.channel_id);
      if (channel !== undefined) this.forget(`channel:${channel}`);
    } else if (isEvent(ev, 'workspace.joined')) {
      const workspace = id(data?.workspace?.id);
      if (workspace !== undefined) this.scopes.add(`workspace:${workspace}`);
    } else if (isEvent(ev, 'workspace.left')) {
      const workspace = id(data?.workspace_id);
      if (workspace !== undefined) this.forget(`workspace:${workspace}`);
    }
  }

  /** Hands a live (or released) event to the application and records its position. */
  private deliver(ev: ChorusEvent): void {
    if (ev.offset !== undefined) {
      if (ev.offset <= (this.positions.get(ev.scope) ?? -1)) return;
      this.positions.set(ev.scope, ev.offset);
    }
    const channel = channelOf(ev.scope);
    if (channel !== undefined && isEvent(ev, 'message.created')) {
      // Already handed out by an HTTP catch-up.
      if (this.caughtUp.get(channel)?.delete(ev.data.id)) return;
      this.noteMessageId(channel, ev.data.id);
    }
    this.dispatch(ev);
  }

  private dispatch(ev: ChorusEvent): void {
    this.emit('event', ev);
  }

  /** Ends buffering of a scope: its held events go out in order. Returns whether some
   * were dropped over the cap and not read again (the caller reports a gap). */
  private release(scope: string): boolean {
    const buffer = this.buffers.get(scope);
    this.buffers.delete(scope);
    const spilled = this.spilled.delete(scope);
    const gen = this.gen;
    for (const ev of buffer ?? []) {
      if (gen !== this.gen) break; // a listener closed or dropped the connection
      this.deliver(ev);
    }
    return spilled;
  }

  private onError(frame: ErrorFrame): void {
    const err = new ChorusError(0, frame.code, frame.message);
    if (frame.id === undefined || !this.pending.has(Number(frame.id))) this.emit('error', err);
    else this.settle(frame.id, (p) => p.reject(err));
  }

  /** Socket ended (or was given up on): clean up, then reconnect unless told not to. */
  private onDrop(gen: number, code: number, reason: string): void {
    if (gen !== this.gen) return;
    const hadHello = this.connected;
    this.teardown(LOCAL_DROP, reason);
    this.emit('disconnect', { code, reason });
    if (this.userClosed) return;
    if (code === CloseCode.Unauthorized && this.refreshToken) {
      // The token expired (a refresh failed or came too late): get a new one, reconnect.
      this.setState('reconnecting');
      this.fetchToken().then(
        (token) => {
          this.adopt(token);
          this.scheduleReconnect();
        },
        (err: unknown) => {
          if (this._state === 'closed') return;
          this.finish(new ChorusError(0, 'unauthorized', `token refresh failed: ${String(err)}`));
        },
      );
      return;
    }
    if (hadHello && !shouldReconnect(code)) {
      // 3502: the credential was revoked or expired (or its user deactivated); the
      // application should sign in again, as after a refused connect.
      const why = code === CloseCode.Unauthorized ? 'unauthorized' : 'closed';
      this.finish(new ChorusError(0, why, `closed by the server: ${code} ${reason}`));
      return;
    }
    if (!hadHello) {
      // A refused upgrade looks like any failed connect in browsers: ask over HTTP
      // whether the token is the problem before retrying forever.
      this.http.me().then(
        () => {},
        (err: unknown) => {
          // Only while still not connected: a later attempt may have succeeded meanwhile.
          if (err instanceof ChorusError && err.code === 'unauthorized' && !this.connected && this._state !== 'closed') {
            this.teardown(1000, 'unauthorized');
            this.finish(err);
          }
        },
      );
    }
    this.scheduleReconnect();
  }

  /** Arms the refresh of a JWT for the socket `gen` (nothing for other tokens, or
   * without a `refreshToken` callback). */
  private scheduleRefresh(gen: number): void {
    if (!this.refreshToken) return;
    const exp = jwtExpiry(this.token);
    if (exp === undefined) return;
    const left = exp - Date.now();
    this.later(() => void this.refreshNow(gen, exp), Math.max(0, Math.min(left * 0.8, left - 5_000)));
  }

  /** Asks the application for a new token and sends it on the socket `gen`. A failure
   * is reported and retried while the old token lasts; then the server closes (3502). */
  private async refreshNow(gen: number, oldExp: number): Promise<void> {
    try {
      const token = await this.fetchToken();
      if (gen !== this.gen) return this.adopt(token); // reconnected meanwhile
      await this.send(gen, { op: 'refresh', token });
      // Only a token the server took is kept: a refused one must not serve reconnects.
      this.adopt(token);
    } catch (err) {
      if (gen !== this.gen) return;
      this.emit('error', err instanceof ChorusError ? err : new ChorusError(0, 'unauthorized', `token refresh failed: ${String(err)}`));
      const left = oldExp - Date.now();
      if (left > 1_000) this.later(() => void this.refreshNow(gen, oldExp), Math.min(5_000, left / 2));
      return;
    }
    const exp = jwtExpiry(this.token);
    // A token that does not outlive the old one would be refreshed again at once, forever.
    if (exp !== undefined && exp > oldExp) this.scheduleRefresh(gen);
  }

  private async fetchToken(): Promise<string> {
    const token = await this.refreshToken!();
    if (typeof token !== 'string' || token === '') throw new Error('refreshToken gave no token');
    return token;
  }

  /** From now on `token` opens sockets and authenticates the HTTP catch-up. */
  private adopt(token: string): void {
    this.token = token;
    this.http = this.http.withToken(token);
  }

  private scheduleReconnect(): void {
    if (this.openedAt > 0 && Date.now() - this.openedAt >= this.stableMs) this.attempt = 0;
    this.openedAt = 0;
    const delay = this.random() * Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
    this.attempt++;
    this.setState('reconnecting');
    this.later(() => {
      if (!this.userClosed && this._state === 'reconnecting') this.open();
    }, delay);
  }

  /** Drops the current socket and everything tied to it. Buffered events are discarded:
   * their positions were not recorded, so the next resume asks for them again. */
  private teardown(code: number, reason: string): void {
    this.gen++;
    this.connected = false;
    for (const t of this.timers.splice(0)) clearTimeout(t);
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    this.buffers.clear();
    this.spilled.clear();
    const ws = this.ws;
    this.ws = undefined;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onopen = null;
      // Not null: Node's `ws` throws on an 'error' nobody listens to (closing while connecting).
      ws.onerror = () => {};
      try {
        ws.close(code, reason.slice(0, 100));
      } catch {
        // already closed
      }
    }
    const err = new ChorusError(0, 'closed', `connection closed: ${reason}`);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
  }

  /** The client is closed for good. */
  private finish(err: ChorusError): void {
    this.started = false;
    for (const w of this.connectWaiters.splice(0)) w.reject(err);
    if (!this.userClosed) this.emit('error', err);
    this.setState('closed');
  }

  private startHeartbeat(gen: number, heartbeatMs: number): void {
    const every = Math.max(500, heartbeatMs / 2);
    this.heartbeat = setInterval(() => {
      if (gen !== this.gen) return;
      // Two heartbeat periods of silence, our own pings unanswered included: dead.
      if (Date.now() - this.lastHeard > 2 * heartbeatMs) return this.onDrop(gen, 1006, 'server silent');
      try {
        this.ws?.send('{"op":"ping"}');
      } catch {
        // the close event follows
      }
    }, every);
  }

  // ---------------------------------------------------------------- requests

  /** Waits for an open connection (up to the request timeout), then sends. */
  private async request(op: ClientOp): Promise<AckFrame> {
    if (this._state !== 'open') await this.whenOpen();
    return this.send(this.gen, op);
  }

  private send(gen: number, op: ClientOp): Promise<AckFrame> {
    const ws = this.ws;
    if (gen !== this.gen || !ws || !this.connected) {
      return Promise.reject(new ChorusError(0, 'closed', 'not connected'));
    }
    const id = this.nextId++;
    return new Promise<AckFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ChorusError(0, 'timeout', `no answer to ${op.op} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      try {
        ws.send(JSON.stringify({ ...op, id }));
      } catch (err) {
        this.settle(id, (p) => p.reject(new ChorusError(0, 'closed', `send failed: ${String(err)}`)));
      }
    });
  }

  private settle(id: unknown, fn: (p: Pending) => void): void {
    const pending = this.pending.get(Number(id));
    if (!pending) return;
    this.pending.delete(Number(id));
    clearTimeout(pending.timer);
    fn(pending);
  }

  private whenOpen(): Promise<void> {
    if (this._state === 'closed') return Promise.reject(new ChorusError(0, 'closed', 'not connected'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new ChorusError(0, 'timeout', `not connected within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const off = this.on('state', (s) => {
        if (s !== 'open' && s !== 'closed') return;
        off();
        clearTimeout(timer);
        if (s === 'open') resolve();
        else reject(new ChorusError(0, 'closed', 'closed'));
      });
    });
  }

  // ---------------------------------------------------------------- bookkeeping

  /** Offsets only move forward. */
  private advance(scope: string, offset: number): void {
    if (offset > (this.positions.get(scope) ?? -1)) this.positions.set(scope, offset);
  }

  private forget(scope: string): void {
    this.scopes.delete(scope);
    this.explicit.delete(scope);
    this.positions.delete(scope);
    this.buffers.delete(scope);
    this.spilled.delete(scope);
  }

  private noteMessageId(channel: ChannelId, id: MessageId): void {
    if (id > (this.lastMessageIds.get(channel) ?? -1)) this.lastMessageIds.set(channel, id);
  }

  /** Records each channel's latest message id in the background, so a gap after the
   * next restart can be fetched even for a channel that delivered nothing meanwhile. */
  private baselineAll(): void {
    if (!this.catchUpOn) return;
    for (const scope of this.scopes) {
      const channel = channelOf(scope);
      if (channel !== undefined) this.baseline(channel);
    }
  }

  private baseline(channel: ChannelId): void {
    if (this.lastMessageIds.has(channel)) return;
    // One at a time: a user in many channels must not burst the HTTP rate limit.
    this.baselines = this.baselines.then(async () => {
      if (this.lastMessageIds.has(channel) || this.userClosed) return;
      try {
        const [latest] = await this.http.listMessages(channel, { limit: 1 });
        this.lastMessageIds.set(channel, Math.max(latest?.id ?? 0, this.lastMessageIds.get(channel) ?? 0));
      } catch {
        // best effort: a later gap in this channel is then reported, not fetched
      }
    });
  }

  private later(fn: () => void, ms: number): void {
    const t = setTimeout(() => {
      this.timers = this.timers.filter((x) => x !== t);
      fn();
    }, ms);
    this.timers.push(t);
  }

  private setState(state: ConnectionState): void {
    if (this._state === state) return;
    this._state = state;
    this.emit('state', state);
  }

  private emit<K extends keyof RealtimeListeners>(type: K, value: RealtimeListeners[K]): void {
    for (const fn of [...(this.listeners.get(type) ?? [])]) {
      try {
        (fn as (v: RealtimeListeners[K]) => void)(value);
      } catch (err) {
        // A throwing listener must not break delivery to the others or the socket loop.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

/** The `exp` of a JWT in ms since the epoch; `undefined` for anything else. The
 * payload is only read, not verified: the server does that. */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return undefined;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const payload: unknown = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')));
    const exp = (payload as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** A gap as an event, for the `events()` iterator. */
function gapEvent(gap: GapData): ChorusEvent<GapData> {
  return { op: 'event', scope: gap.scope, type: RESUME_GAP, data: gap };
}

/** `channel:42` → 42. */
function channelOf(scope: string): ChannelId | undefined {
  const m = /^channel:(\d+)$/.exec(scope);
  return m ? Number(m[1]) : undefined;
}

/** `http(s)://base` → `ws(s)://base/ws`; `ws(s)://…` URLs are used as given. */
export function wsUrl(url: string): string {
  const u = new URL(url);
  if (u.protocol === 'ws:' || u.protocol === 'wss:') return u.toString();
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`unsupported URL scheme: ${url}`);
  const base = u.toString().endsWith('/') ? u.toString() : `${u}/`;
  const out = new URL('ws', base);
  out.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return out.toString();
}

/** The HTTP base of a realtime URL: `ws://h/ws` → `http://h/`. */
function httpBase(url: string): string {
  const u = new URL(url);
  if (u.protocol === 'ws:' || u.protocol === 'wss:') {
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    u.pathname = u.pathname.replace(/ws\/?$/, '');
    u.search = '';
  }
  return u.toString();
}
