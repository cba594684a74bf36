// The token the chat signs in with, kept in the browser across reloads, and whether it
// was minted for this browser: a sign-in link's code or the `--dev` login by name gives
// a new token that nobody else holds, which signing out revokes (`DELETE /api/v1/me/token`);
// a token brought by the user (typed on the sign-in screen, or a `#token=` link) may be
// used elsewhere too, so it is only forgotten here, never revoked. Pure apart from the
// `Storage` it is given: unit-tested in Node.
import type { KeyValue } from './persist.js';

export const TOKEN_KEY = 'chorus.token';
/** The token of `TOKEN_KEY` again when it was minted for this browser: written and
 * cleared with it, and only believed while both agree (a token stored by anything that
 * does not know this key is never taken for a minted one). */
export const MINTED_KEY = 'chorus.token.minted';

/** The stored token, if any, and whether it was minted here. */
export function storedToken(kv: KeyValue): { token: string; minted: boolean } | undefined {
  const token = read(kv, TOKEN_KEY);
  if (!token) return undefined;
  return { token, minted: read(kv, MINTED_KEY) === token };
}

/** Stores `token` as the one to sign in with; `minted`: it was minted for this browser. */
export function rememberToken(kv: KeyValue, token: string, minted: boolean): void {
  try {
    kv.setItem(TOKEN_KEY, token);
    if (minted) kv.setItem(MINTED_KEY, token);
    else kv.removeItem(MINTED_KEY);
  } catch {
    // storage full or disabled: signed in for this page only
  }
}

/** Forgets the stored token (only if it is still `token`, when given: another tab may
 * have stored another one meanwhile). */
export function forgetToken(kv: KeyValue, token?: string): void {
  try {
    if (token !== undefined && kv.getItem(TOKEN_KEY) !== token) return;
    kv.removeItem(TOKEN_KEY);
    kv.removeItem(MINTED_KEY);
  } catch {
    // storage disabled: nothing was kept
  }
}

/** A credential checked by the server, and whether its token was minted for this
 * browser. */
export interface Minted {
  token: string;
  minted?: boolean;
}

/** The token to revoke once `next` is no longer used (a hand-over's candidate the user
 * declined, staying signed in as `kept`; or the session the user switched away from,
 * `kept` being the one switched to): only one minted for this browser (by a sign-in link
 * or the `--dev` login) that is not the token kept. */
export function unusedMinted(next: Minted, kept?: Minted): string | undefined {
  if (!next.minted) return undefined;
  return kept?.token === next.token ? undefined : next.token;
}

function read(kv: KeyValue, key: string): string | null {
  try {
    return kv.getItem(key);
  } catch {
    return null;
  }
}

/** The server's `credentials.revoked` (on the user's own scope), just before it closes
 * the sockets opened with those credentials (3502). */
export interface Revoked {
  reason: string;
  token_id?: number;
}

/** The close code of a socket whose credentials are no longer valid (revoked, expired,
 * the account deactivated): the client's `CloseCode.Unauthorized`. */
export const CREDENTIALS_CLOSE = 3502;

/** Whether the socket's close ended the session here, and then what to tell the user:
 * `revoked` is the `credentials.revoked` heard just before, if any. The event alone ends
 * nothing: every socket of the user hears it, and a revoked token closes only the
 * sockets it opened (another browser signing out must not sign this one out), while a
 * resumed connection may replay an old one; and an expiry closes with no event. The
 * close with 3502 is what says that this session is over. */
export function endedBy(code: number, revoked: Revoked | undefined): string | undefined {
  return code === CREDENTIALS_CLOSE ? endedBecause(revoked?.reason) : undefined;
}

/** What the sign-in screen says when the server ended the session here: `why`, the
 * reason of the `credentials.revoked` heard just before, if any (an expired token's
 * socket closes with none). */
export function endedBecause(why: string | undefined): string {
  switch (why) {
    case 'deactivated':
      return 'You were signed out: your account was deactivated. Ask an administrator.';
    case 'token_revoked':
    case 'session_revoked':
      return 'You were signed out: this session was ended (signed out elsewhere, or by an administrator). Sign in again.';
    default:
      return 'Your session expired: sign in again.';
  }
}
