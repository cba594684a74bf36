// Sign-in links in the address: `#signin=<code>` (one-time, exchanged for a token by
// `POST /api/v1/sign-in`) and the older `#token=<token>` (the token itself), and what
// to do with a credential handed over once it is checked. Pure: no DOM, no network, so
// the unit tests run it in Node.

/** What a link's fragment carries, if it is a sign-in link. */
export type Handed = { kind: 'code'; code: string } | { kind: 'token'; token: string };

/** Reads a sign-in link's fragment (`location.hash`); `undefined` for any other. */
export function handedIn(hash: string): Handed | undefined {
  const found = /^#(signin|token)=([^&]+)/.exec(hash);
  if (!found) return undefined;
  let value: string;
  try {
    value = decodeURIComponent(found[2]!);
  } catch {
    value = found[2]!;
  }
  return found[1] === 'signin' ? { kind: 'code', code: value } : { kind: 'token', token: value };
}

/** The address to hand over for a new sign-in link: the web UI's origin and the
 * server's `url_fragment` (`#signin=<code>`). */
export function signInUrl(origin: string, urlFragment: string): string {
  return `${origin.replace(/\/+$/, '')}/${urlFragment}`;
}

/** What the sign-in screen says when a sign-in link is refused (`err`: what the client
 * threw, a `ChorusError` with the server's `code`). */
export function linkRefused(err: unknown): string {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  switch (code) {
    case 'gone':
      return 'That sign-in link is not valid any more: it was used already or has expired. Ask for a new one.';
    case 'unauthorized':
      return 'That sign-in link is not valid: ask for a new one.';
    case 'forbidden':
      return 'That account is deactivated: ask an administrator.';
    case 'rate_limited':
      return 'Too many sign-in attempts from here: try again in a minute.';
    case 'network':
    case 'timeout':
      return 'The server cannot be reached right now: open the link again in a moment.';
    default:
      return `That sign-in link did not work: ${err instanceof Error ? err.message : String(err)}.`;
  }
}

/** What to do with a credential handed over (a link, a typed token or name), once the
 * server said whose it is: `stay` when it is the account signed in already; `ask` first
 * when it is someone else's — a link anyone may post in a channel must not switch the
 * account without a word. Nobody signed in here: `adopt` what the user typed, but
 * `confirm` a link's account first (`by: 'link'`), saying whose it is — a `#token=` link
 * of the poster's own token, or a sign-in link they did not use, would otherwise sign the
 * reader in as them, and the reader would write as the poster without noticing. */
export function handOver(
  current: { id: number } | undefined,
  candidate: { id: number },
  by: 'typed' | 'link' = 'typed',
): 'adopt' | 'stay' | 'ask' | 'confirm' {
  if (!current) return by === 'link' ? 'confirm' : 'adopt';
  return current.id === candidate.id ? 'stay' : 'ask';
}
