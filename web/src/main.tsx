// Entry point: `/ops` is the operations page; everything else is the chat, behind the
// sign-in screen until a token is stored.
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ChorusError, ChorusHttp, type User } from '@chorus/client';
import { ChatApp } from './chat';
import { handOver, handedIn, linkRefused } from './links';
import { OpsPage } from './ops';
import { forgetToken, rememberToken, storedToken, unusedMinted } from './session';
import { SignIn } from './signin';
import { ChatStore } from './store';
import { Dialog } from './ui';
import './style.css';

function Root() {
  if (location.pathname.replace(/\/+$/, '') === '/ops') return <OpsPage />;
  return <Chat />;
}

/** A credential handed over, checked by the server: its token, whose it is, and whether
 * it was minted for this browser (by a sign-in link's code or the `--dev` login: signing
 * out revokes it) rather than brought by the user (a typed token, a `#token=` link: only
 * forgotten here). */
interface Verified {
  token: string;
  user: User;
  minted?: boolean;
}

/** How long signing out waits for the server to revoke the token before it signs out
 * here anyway. */
const REVOKE_TIMEOUT_MS = 3_000;

/** Revokes a token minted for this browser (`DELETE /api/v1/me/token`), best effort: the
 * server unreachable, slow (past `REVOKE_TIMEOUT_MS`) or refusing, it stays as it is. */
const revoke = (token: string): Promise<void> =>
  new ChorusHttp(location.origin, { token, timeoutMs: REVOKE_TIMEOUT_MS }).signOut().catch(() => {
    // best effort: signed out here all the same
  });

/** Who is signed in here, by the stored token (checked); `problem` when it could not be
 * checked (the token stays stored). */
interface Here {
  session?: Verified;
  problem?: string;
}

/** The server cannot be reached: nothing was said about the credential. */
const unreachable = (err: unknown) => err instanceof ChorusError && (err.code === 'network' || err.code === 'timeout');

function Chat() {
  const [store, setStore] = useState<ChatStore | undefined>();
  const [problem, setProblem] = useState<string | undefined>();
  /** Another account's credential, waiting for the user's word before it is used. */
  const [asking, setAsking] = useState<{ candidate: Verified; current: User } | undefined>();
  /** A link's credential with nobody signed in here, waiting for the user's word. */
  const [confirming, setConfirming] = useState<Verified | undefined>();
  const [checking, setChecking] = useState(() => storedToken(localStorage) !== undefined || handedIn(location.hash) !== undefined);
  /** Signing out: the token being revoked (a few seconds at most). */
  const [leaving, setLeaving] = useState(false);
  // The running session and its store, for the handlers of links that arrive later.
  const session = useRef<Verified | undefined>(undefined);
  const running = useRef<ChatStore | undefined>(undefined);
  /** `asking` as last rendered, for the handlers the store calls. */
  const askingNow = useRef(asking);
  askingNow.current = asking;
  const confirmingNow = useRef(confirming);
  confirmingNow.current = confirming;

  /** Signs in as `next.user`: its token stored, and a store of its own (the running one
   * when it is the same token). */
  const enter = (next: Verified, notice?: string) => {
    setAsking(undefined);
    setConfirming(undefined);
    setProblem(undefined);
    rememberToken(localStorage, next.token, next.minted === true);
    if (session.current?.token === next.token && running.current) {
      if (notice) running.current.notify(notice);
      return;
    }
    session.current = next;
    const created: ChatStore = new ChatStore(location.origin, next.token, next.user, (reason) => ended(created, reason));
    if (notice) created.notify(notice);
    running.current = created;
    setStore(created);
  };

  /** The server ended the session of `store` (its token revoked or expired, the account
   * deactivated): signed out here as by signing out — the token forgotten, the sign-in
   * screen saying why — except that the drafts and messages not sent stay for the
   * user's next sign-in (they did not choose to leave), and there is no token to revoke. */
  const ended = (store: ChatStore, reason: string) => {
    if (running.current !== store) return;
    const current = session.current;
    session.current = undefined;
    running.current = undefined;
    // A sign-in link's candidate still waiting for the user's word is not used either.
    const waiting = askingNow.current;
    if (waiting) discard(waiting.candidate);
    setAsking(undefined);
    if (current) forgetToken(localStorage, current.token);
    setProblem(reason);
    setStore(undefined);
  };

  /** Who the stored token signs in, if any. Refused, it is removed (signed out); the
   * server unreachable, it is kept. */
  const stored = async (): Promise<Here> => {
    if (session.current) return { session: session.current };
    const found = storedToken(localStorage);
    if (!found) return {};
    const { token, minted } = found;
    try {
      return { session: { token, minted, user: await new ChorusHttp(location.origin, { token }).me() } };
    } catch (err) {
      if (unreachable(err)) return { problem: 'The server cannot be reached right now: reload the page in a moment.' };
      forgetToken(localStorage, token);
      return {};
    }
  };

  /** The one way in for every credential handed over: a sign-in link's code, a
   * `#token=` link, a token or name typed on the sign-in screen. `verify` asks the server
   * whose it is, and nothing is stored before it answered: a credential that fails is
   * said (`refused`) and costs nobody the account signed in here; one of another account
   * than the signed-in one waits for the user's word (`asking`), and so does a link's
   * with nobody signed in (`confirming`: `by` says where it came from). A token minted
   * for this browser (a sign-in link's) that ends up unused is revoked, best effort. */
  const adopt = async (verify: () => Promise<Verified>, refused: (err: unknown) => string, by: 'typed' | 'link') => {
    if (!session.current) setChecking(true);
    const [here, candidate] = await Promise.all([
      stored(),
      verify().then(
        (ok) => ({ ok }),
        (err: unknown) => ({ error: refused(err) }),
      ),
    ]);
    setChecking(false);
    // A stored token that could not be checked is not replaced unseen: whose it is, is
    // not known, so neither is whether to ask.
    if (!here.session && here.problem) {
      if ('ok' in candidate) discard(candidate.ok);
      return setProblem(here.problem);
    }
    if ('error' in candidate) {
      if (here.session) enter(here.session, candidate.error);
      else setProblem(candidate.error);
      return;
    }
    switch (handOver(here.session?.user, candidate.ok.user, by)) {
      case 'adopt':
        return enter(candidate.ok);
      case 'confirm': {
        // One asked about before is not used either.
        const before = confirmingNow.current;
        if (before && before.token !== candidate.ok.token) discard(before);
        return setConfirming(candidate.ok);
      }
      case 'stay':
        discard(candidate.ok, here.session);
        return enter(here.session!);
      case 'ask':
        enter(here.session!);
        setAsking({ candidate: candidate.ok, current: here.session!.user });
    }
  };

  /** A credential no longer used (a candidate the user declined, staying `kept`, or one
   * nothing is signed in with; the account switched away from, `kept` being the one
   * switched to): its token revoked if it was minted for this browser, best effort. */
  const discard = (next: Verified, kept?: Verified) => {
    const token = unusedMinted(next, kept);
    if (token) void revoke(token);
  };

  useEffect(() => {
    // A sign-in link: `/#signin=<code>` (one-time, handed over by an administrator: the
    // code is exchanged for a new token of its user) or the older `/#token=<token>`. It
    // leaves the address bar at once. Opened in a new tab, or in this one (a hash change
    // loads no page).
    const fromLink = (): boolean => {
      const handed = handedIn(location.hash);
      if (!handed) return false;
      history.replaceState(null, '', location.pathname + location.search);
      const http = new ChorusHttp(location.origin);
      void adopt(
        handed.kind === 'code'
          ? () => http.signIn(handed.code).then(({ token, user }) => ({ token, user, minted: true }))
          : () => http
              .withToken(handed.token)
              .me()
              .then((user) => ({ token: handed.token, user })),
        linkRefused,
        'link',
      );
      return true;
    };
    if (!fromLink()) {
      void stored().then((here) => {
        if (here.session) enter(here.session);
        else if (here.problem) setProblem(here.problem);
        setChecking(false);
      });
    }
    const onHash = () => void fromLink();
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  /** Signs out: a token minted for this browser is revoked first (best effort, a few
   * seconds at most: the server unreachable or refusing, it is signed out here all the
   * same); a token the user brought is only forgotten here. */
  const signOut = async () => {
    const current = session.current;
    if (!current) return;
    // What the user left here goes with them (a shared machine): before the store
    // stops, which would save its drafts again.
    running.current?.forget();
    session.current = undefined;
    running.current = undefined;
    // A sign-in link's candidate still waiting for the user's word is not used either.
    if (asking) discard(asking.candidate, current);
    setAsking(undefined);
    setStore(undefined);
    // Forgotten first: a reload while the revoke is under way finds nobody signed in,
    // and a token another tab stores meanwhile is not wiped.
    forgetToken(localStorage);
    if (current.minted) {
      setLeaving(true);
      await revoke(current.token);
      setLeaving(false);
    }
  };

  useEffect(() => {
    if (!store) return;
    store.start().catch(() => {
      // shown by the store's notices and connection state
    });
    return () => store.stop();
  }, [store]);

  if (leaving) return <p class="loading" role="status">Signing out…</p>;
  if (store) {
    return (
      <>
        <ChatApp
          store={store}
          onSignOut={() => void signOut()}
        />
        {asking && (
          <SwitchAccount
            current={asking.current}
            next={asking.candidate.user}
            onStay={() => {
              discard(asking.candidate, session.current);
              setAsking(undefined);
            }}
            onSwitch={() => {
              // Switching is signing out of the account before: its token is forgotten
              // here, so one minted for this browser is revoked as signing out would,
              // and what it left here (drafts, messages not sent) goes as well.
              const left = session.current;
              running.current?.forget();
              enter(asking.candidate);
              if (left) discard(left, asking.candidate);
            }}
          />
        )}
      </>
    );
  }
  if (checking) return <p class="loading" role="status">Loading…</p>;
  return (
    <>
      <SignIn
        onSignedIn={(token, user, minted) => void adopt(async () => ({ token, user, minted }), (err) => String(err), 'typed')}
        problem={problem}
      />
      {confirming && (
        <ConfirmLink
          next={confirming.user}
          onSignIn={() => enter(confirming)}
          onCancel={() => {
            discard(confirming);
            setConfirming(undefined);
          }}
        />
      )}
    </>
  );
}

/** "Sign in as Name (@name)", or "@name" when the name is all there is. */
const who = (u: User) => (u.display_name && u.display_name !== u.name ? `${u.display_name} (@${u.name})` : `@${u.name}`);

/** Keeps the keyboard in the dialog of `button` (and on `button` when it strays): the
 * page behind may still be loading, and focus its own field when it is done. */
function useHoldFocus(button: { current: HTMLButtonElement | null }) {
  useEffect(() => {
    const keep = (e: FocusEvent) => {
      const box = button.current?.closest('[role="dialog"]');
      if (box && e.target instanceof Node && !box.contains(e.target)) button.current?.focus();
    };
    document.addEventListener('focusin', keep);
    return () => document.removeEventListener('focusin', keep);
  }, []);
}

/** Asks before a link signs in when nobody is signed in here, naming the account:
 * not signing in is the default (Esc, the backdrop, the focused button). */
function ConfirmLink({ next, onSignIn, onCancel }: { next: User; onSignIn: () => void; onCancel: () => void }) {
  const cancel = useRef<HTMLButtonElement>(null);
  useHoldFocus(cancel);
  return (
    <Dialog id="confirm-link" title={`Sign in as @${next.name}?`} onClose={onCancel}>
      <p>
        This link signs in as <strong>{who(next)}</strong>.
      </p>
      <p class="hint">
        Sign in only if it is your own account: what you write afterwards is written as {who(next)}, and anyone may post a link
        like this one.
      </p>
      <div class="dialog-actions">
        <button class="link" onClick={onSignIn}>
          Sign in as @{next.name}
        </button>
        <button class="primary" data-autofocus ref={cancel} onClick={onCancel}>
          Don’t sign in
        </button>
      </div>
    </Dialog>
  );
}

/** Asks before a link signs in as another account than the one signed in here: staying
 * is the default (Esc, the backdrop, the focused button). */
function SwitchAccount({ current, next, onStay, onSwitch }: { current: User; next: User; onStay: () => void; onSwitch: () => void }) {
  // The chat behind may still be loading, and it focuses the message box when it is
  // done: the keyboard stays here until the question is answered.
  const stay = useRef<HTMLButtonElement>(null);
  useHoldFocus(stay);
  return (
    <Dialog id="switch-account" title="Sign in as someone else?" onClose={onStay}>
      <p>
        This link signs in as <strong>{who(next)}</strong>. You are signed in here as <strong>{who(current)}</strong>.
      </p>
      <p class="hint">
        Switch only if it is your own account: what you write afterwards is written as {who(next)}, and anyone may post a link
        like this one.
      </p>
      <div class="dialog-actions">
        <button class="link" onClick={onSwitch}>
          Sign in as @{next.name}
        </button>
        <button class="primary" data-autofocus ref={stay} onClick={onStay}>
          Stay @{current.name}
        </button>
      </div>
    </Dialog>
  );
}

render(<Root />, document.getElementById('app')!);
