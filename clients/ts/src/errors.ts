import type { ErrorCode } from './protocol.js';

/**
 * Every failure the client reports. `status` is the HTTP status for HTTP errors and 0
 * for realtime ones (an `error` frame, a timeout, a closed connection); `code` is the
 * server's machine-matchable code, or one of the client's own:
 * `network` (the request did not complete), `unexpected_response` (a non-Chorus error
 * body, e.g. from a proxy), `timeout`, `closed`.
 */
export class ChorusError extends Error {
  override readonly name = 'ChorusError';
  /** `Retry-After` in seconds, on 429 answers. */
  retryAfter?: number;

  constructor(
    readonly status: number,
    readonly code: ErrorCode | 'network' | 'unexpected_response' | 'timeout' | 'closed',
    message: string,
  ) {
    super(message);
  }

  /** Whether retrying the same request later may succeed. */
  get retryable(): boolean {
    return (
      this.code === 'network' ||
      this.code === 'timeout' ||
      this.code === 'closed' ||
      this.code === 'rate_limited' ||
      this.code === 'unavailable' ||
      this.status >= 500
    );
  }
}

/** Longest non-Chorus body kept in an error message. */
const MAX_BODY_IN_ERROR = 512;

/** Decodes a failed response: the Chorus body `{"error":{"code","message"}}` when it is one. */
export function errorFromBody(status: number, body: string, retryAfter?: string | null): ChorusError {
  let err: ChorusError | undefined;
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    const { code, message } = parsed.error ?? {};
    if (typeof code === 'string' && typeof message === 'string') err = new ChorusError(status, code, message);
  } catch {
    // not JSON: handled below
  }
  err ??= new ChorusError(status, 'unexpected_response', `HTTP ${status}: ${body.slice(0, MAX_BODY_IN_ERROR)}`);
  const seconds = retryAfter ? Number(retryAfter) : NaN;
  if (Number.isFinite(seconds)) err.retryAfter = seconds;
  return err;
}
