// A writer for one streaming message (docs/protocol.md, "Streaming messages"): the
// application appends as often as tokens come; the writer sends what piled up as one
// append, one at a time and in order, and makes the application wait when the server
// falls behind.
import { ChorusError } from './errors.js';
import type { Message, MessageId } from './model.js';
import type { ChorusRealtime } from './realtime.js';

export interface StreamOptions {
  /** Send appends as WebSocket `append` ops over this connection (acked) instead of HTTP
   * requests. Completing and aborting always go over HTTP, after the last append's ack. */
  realtime?: Pick<ChorusRealtime, 'append'>;
  /** Appends made within this many ms of the first unsent one go as one request
   * (default 25; the server's roll-up window is 40 ms by default). */
  batchMs?: number;
  /** Unsent text above this many characters makes `append` wait until it has been sent
   * (default 16,384: the server's whole-message limit is 16 KiB by default). */
  highWaterMark?: number;
}

/** Where a writer sends: the HTTP routes, or the WebSocket op for appends. */
export interface StreamSink {
  append(id: MessageId, text: string): Promise<unknown>;
  complete(id: MessageId, text?: string): Promise<Message>;
  abort(id: MessageId, reason?: string): Promise<Message>;
}

/**
 * Writes one streaming message (from `ChorusHttp.openStream`). `append` buffers; the
 * buffer is sent `batchMs` after its first text, or as soon as the previous append was
 * answered, whichever is later, so there is never more than one append in flight and
 * the text arrives in order. `append` resolves at once while little is unsent, and
 * waits for the sends to catch up beyond `highWaterMark` (backpressure: `await` it).
 *
 * The first failed send fails the writer: that `append` (or the next call) rejects with
 * a `ChorusError` naming the message and keeping the server's code (`conflict`: the
 * stream was completed, aborted or cancelled; `forbidden`; `payload_too_large`…), and so
 * does every later call. A writer dropped without `complete` or `abort` leaves the
 * message streaming until the server aborts it as idle.
 */
export class StreamWriter {
  /** The message as opened (state `streaming`). */
  readonly message: Message;
  private readonly sink: StreamSink;
  private readonly batchMs: number;
  private readonly highWaterMark: number;
  private unsent = '';
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** The append in flight, if any. */
  private sending: Promise<void> | undefined;
  private failure: ChorusError | undefined;
  private ended = false;
  /** Waiters for `unsent` to be sent (or for the writer to fail). */
  private drained: (() => void)[] = [];
  private sent = 0;

  constructor(message: Message, sink: StreamSink, options: Omit<StreamOptions, 'realtime'> = {}) {
    this.message = message;
    this.sink = sink;
    this.batchMs = options.batchMs ?? 25;
    this.highWaterMark = options.highWaterMark ?? 16_384;
  }

  get id(): MessageId {
    return this.message.id;
  }

  /** How many appends were sent so far (each batches every `append` call it covers). */
  get requests(): number {
    return this.sent;
  }

  /** The error that failed the writer, if one did. */
  get error(): ChorusError | undefined {
    return this.failure;
  }

  /** Adds `text` to the message. Resolves once it is buffered, or, with more than
   * `highWaterMark` unsent, once the buffer has been sent. Empty text is ignored. */
  async append(text: string): Promise<void> {
    this.usable('append to');
    if (!text) return;
    this.unsent += text;
    if (!this.sending && this.timer === undefined) this.timer = setTimeout(() => this.pump(), this.batchMs);
    if (this.unsent.length > this.highWaterMark) {
      await this.waitDrained();
      if (this.failure) throw this.failure;
    }
  }

  /** Sends what is buffered now and resolves when the server has accepted all of it. */
  async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.unsent || this.sending) {
      if (!this.sending) this.pump();
      await this.waitDrained();
    }
    if (this.failure) throw this.failure;
  }

  /** Sends what is buffered, then completes the message (state `complete`) and returns
   * it. With `text`, that becomes the whole text and the buffer is dropped. */
  async complete(text?: string): Promise<Message> {
    this.usable('complete');
    if (text !== undefined) this.unsent = '';
    await this.flush();
    this.ended = true;
    return this.sink.complete(this.id, text).catch((err: unknown) => {
      throw this.fail('complete', err);
    });
  }

  /** Sends what is buffered, then aborts the message (state `aborted`, the text so far
   * kept) and returns it. After a failed append the buffer is dropped and the abort is
   * still sent (a stream the server already ended answers `conflict`). */
  async abort(reason?: string): Promise<Message> {
    if (this.ended) throw new ChorusError(0, 'closed', `message ${this.id}: the stream was already ended`);
    if (!this.failure) await this.flush().catch(() => undefined);
    this.ended = true;
    this.unsent = '';
    return this.sink.abort(this.id, reason).catch((err: unknown) => {
      throw this.fail('abort', err);
    });
  }

  // ---------------------------------------------------------------- sending

  private usable(what: string): void {
    if (this.failure) throw this.failure;
    if (this.ended) throw new ChorusError(0, 'closed', `cannot ${what} message ${this.id}: the stream was already ended`);
  }

  /** Sends the buffer as one append; when it is answered, sends what came meanwhile. */
  private pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.sending || this.failure) return;
    if (!this.unsent) return this.wake();
    const text = this.unsent;
    this.unsent = '';
    this.sending = this.sink.append(this.id, text).then(
      () => {
        this.sent++;
        this.sending = undefined;
        this.pump();
      },
      (err: unknown) => {
        this.sending = undefined;
        this.fail('append to', err);
        this.wake();
      },
    );
  }

  private fail(what: string, err: unknown): ChorusError {
    const cause = err instanceof ChorusError ? err : new ChorusError(0, 'network', String(err));
    this.failure ??= Object.assign(
      new ChorusError(cause.status, cause.code, `could not ${what} streaming message ${this.id}: ${cause.message}`),
      { cause },
    );
    return this.failure;
  }

  private waitDrained(): Promise<void> {
    if (this.failure || (!this.unsent && !this.sending)) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  private wake(): void {
    const waiting = this.drained;
    this.drained = [];
    for (const resolve of waiting) resolve();
  }
}
