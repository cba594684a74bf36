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
