// The Chorus wire protocol, version 1, mirrored by hand from crates/chorus-proto.
// test/protocol.test.ts parses the Rust source and fails when the two drift apart.

/** Protocol version announced in `hello`. */
export const PROTOCOL_VERSION = 1;

/** A client-chosen correlation id, echoed in `ack`/`error`. This client uses integers. */
export type FrameId = number | string;

// ---------------------------------------------------------------------------------
// Client → server (chorus-proto/src/client.rs: ClientOp)

export type ClientOp =
  | { op: 'subscribe'; scope: string; since?: number }
  | { op: 'unsubscribe'; scope: string }
  | { op: 'resume'; positions: Record<string, number> }
  | { op: 'typing'; channel_id: number; thread_id?: number }
  | { op: 'ping' }
  | { op: 'refresh'; token: string }
  /** Adds text to the end of one's own streaming message (acked once accepted). */
  | { op: 'append'; message_id: number; text: string }
  /** Ends one's own stream; with `text`, that becomes the whole text. */
  | { op: 'complete'; message_id: number; text?: string }
  /** Ends a stream without completing it. */
  | { op: 'abort'; message_id: number; reason?: string }
  /** Publishes to a `topic:` scope whose namespace lets this connection publish (acked
   * with the event's offset; none in a namespace without history). */
  | { op: 'publish'; scope: string; type: string; data: unknown };

/** Any client frame: an op, optionally with an `id` the server answers with ack/error. */
export type ClientFrame = ClientOp & { id?: FrameId };

/** The op names, in the order of the Rust enum. */
export const CLIENT_OPS = [
  'subscribe',
  'unsubscribe',
  'resume',
  'typing',
  'ping',
  'refresh',
  'append',
  'complete',
  'abort',
  'publish',
] as const;

// ---------------------------------------------------------------------------------
// Server → client (chorus-proto/src/server.rs: ServerFrame)

export interface HelloFrame {
  op: 'hello';
  v: number;
  session_id: string;
  user_id: number;
  heartbeat_ms: number;
  /** The scopes the connection was subscribed to on connect. */
  scopes: string[];
  /** Each of those scopes' offset at subscription (absent on older servers). */
  offsets?: Record<string, number>;
}

/** Outcome of resuming one scope. */
export interface ScopeResume {
  /** `false`: events left the retention window (or the server restarted): catch up over HTTP. */
  recovered: boolean;
  offset?: number;
  error?: ErrorCode;
}

export interface AckFrame {
  op: 'ack';
  id: FrameId;
  /** `subscribe`: the scope, whether `since` was fully replayed, and its latest offset. */
  scope?: string;
  recovered?: boolean;
  offset?: number;
  /** `resume`: the outcome per scope. */
  scopes?: Record<string, ScopeResume>;
}

export interface ErrorFrame {
  op: 'error';
  id?: FrameId;
  code: ErrorCode;
  message: string;
}

export interface EventFrame<T = unknown> {
  op: 'event';
  scope: string;
  /** Strictly increasing per scope; absent on ephemeral events (typing, presence). */
  offset?: number;
  type: string;
  data: T;
  /** Agent-aware delivery of `message.created`: `true` = act, `false` = record only. */
  wake?: boolean;
}

export interface PongFrame {
  op: 'pong';
  id?: FrameId;
}

export type ServerFrame = HelloFrame | AckFrame | ErrorFrame | EventFrame | PongFrame;

export const SERVER_OPS = ['hello', 'ack', 'error', 'event', 'pong'] as const;

/** Parses one text frame; `undefined` for anything that is not a known server frame
 * (newer servers may add ops: they are skipped, not fatal). */
export function parseServerFrame(text: string): ServerFrame | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const op = (value as { op?: unknown }).op;
  return (SERVER_OPS as readonly unknown[]).includes(op) ? (value as ServerFrame) : undefined;
}

// ---------------------------------------------------------------------------------
// Error codes (chorus-proto/src/codes.rs: ErrorCode), shared by HTTP bodies and WS frames.

export const ERROR_CODES = [
  'bad_request',
  'malformed_json',
  'unknown_op',
  'unsupported_frame',
  'unauthorized',
  'forbidden',
  'not_found',
  'conflict',
  'payload_too_large',
  'rate_limited',
  'limit_exceeded',
  'gone',
  'unknown_command',
  'unavailable',
  'internal',
] as const;

export type KnownErrorCode = (typeof ERROR_CODES)[number];

/** A known code, or any other string from a newer server (`string & {}` keeps
 * autocompletion of the known ones). */
export type ErrorCode = KnownErrorCode | (string & {});

export function isKnownErrorCode(code: string): code is KnownErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code);
}

// ---------------------------------------------------------------------------------
// Close codes (chorus-proto/src/codes.rs: CloseCode)

export const CloseCode = {
  /** The client asked to close. */
  Normal: 1000,
  /** A frame over the 1 MiB transport limit. */
  MessageTooBig: 1009,
  /** The server is shutting down or restarting: reconnect and resume. */
  ServerShutdown: 3001,
  /** Nothing heard for 1.4 × heartbeat: reconnect and resume. */
  HeartbeatTimeout: 3002,
  /** The outbound queue overflowed: reconnect and resume. */
  SlowConsumer: 3008,
  /** Inbound frame rate far over the limit: back off, fix the client. */
  Flood: 3501,
  /** The credentials are no longer valid: get a new token. */
  Unauthorized: 3502,
} as const;

export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Whether a client should reconnect (with backoff) and resume after this close code:
 * the RFC's going-away / abnormal / server-error / restart / try-later codes, and
 * Chorus's 3000–3499. 3500–3999 mean "change something first". */
export function shouldReconnect(code: number): boolean {
  return [1001, 1006, 1011, 1012, 1013].includes(code) || (code >= 3000 && code <= 3499);
}
