// Entry point: `/ops` is the operations page; everything else is the chat, behind the
// sign-in screen until a token is stored.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ChorusHttp, type User } from '@chorus/client';
import { ChatApp } from './chat';
import { handedIn, linkRefused } from './links';
import { OpsPage } from './ops';
import { SignIn } from './signin';
import { ChatStore } from './store';
import './style.css';

const TOKEN_KEY = 'chorus.token';

function Root() {
  if (location.pathname.replace(/\/+$/, '') === '/ops') return <OpsPage />;
  return <Chat />;
}

function Chat() {
  const [store, setStore] = useState<ChatStore | undefined>();
  const [problem, setProblem] = useState<string | undefined>();
  const [checking, setChecking] = useState(
    () => localStorage.getItem(TOKEN_KEY) !== null || location.hash.startsWith('#token=') || location.hash.startsWith('#signin='),
  );

  const signedIn = (token: string, me: User, notice?: string) => {
    localStorage.setItem(TOKEN_KEY, token);
    const next = new ChatStore(location.origin, token, me);
    if (notice) next.notify(notice);
    setStore(next);
  };

  useEffect(() => {
    /** Signs in with the stored token, if any. `handed`: it came from a `#token=` link;
     * `refused`: a sign-in link just failed (said on the sign-in screen, or in a notice
     * when the stored token still works). */
    const check = (handed: boolean, refused?: string) => {
      const token = localStorage.getItem(TOKEN_KEY);
      if (!token) {
        if (refused) setProblem(refused);
        return setChecking(false);
      }
      setChecking(true);
      new ChorusHttp(location.origin, { token })
        .me()
        .then((me) => signedIn(token, me, refused))
        .catch(() => {
          localStorage.removeItem(TOKEN_KEY);
          if (refused) setProblem(refused);
          else if (handed) setProblem('That sign-in link is not valid (any more): ask for a new one.');
        })
        .finally(() => setChecking(false));
    };
    // A one-time sign-in link (`/#signin=<code>`, handed over by an administrator): the
    // code leaves the address bar at once and is exchanged for a new token of its user,
    // which replaces any stored one. Refused (used, expired), the sign-in screen says so
    // (or a notice, to someone already signed in here).
    const fromSignInLink = (): boolean => {
      const handed = handedIn(location.hash);
      if (handed?.kind !== 'code') return false;
      const code = handed.code;
      history.replaceState(null, '', location.pathname + location.search);
      setStore(undefined);
      setChecking(true);
      new ChorusHttp(location.origin)
        .signIn(code)
        .then(({ token, user }) => {
          signedIn(token, user);
          setChecking(false);
        })
        // Whoever is signed in here already stays so.
        .catch((err: unknown) => check(false, linkRefused(err)));
      return true;
    };
    // An older sign-in link (`/#token=…`) carries the token itself: it replaces any
    // stored one, and leaves the address bar at once. Opened in a new tab, or in this
    // one (a hash change loads no page).
    const fromLink = (): boolean => {
      const handed = handedIn(location.hash);
      if (handed?.kind !== 'token') return false;
      localStorage.setItem(TOKEN_KEY, handed.token);
      history.replaceState(null, '', location.pathname + location.search);
      return true;
    };
    if (!fromSignInLink()) check(fromLink());
    const onHash = () => {
      if (fromSignInLink()) return;
      if (!fromLink()) return;
      setStore(undefined);
      check(true);
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    if (!store) return;
    store.start().catch(() => {
      // shown by the store's notices and connection state
    });
    return () => store.stop();
  }, [store]);

  if (store) {
    return (
      <ChatApp
        store={store}
        onSignOut={() => {
          localStorage.removeItem(TOKEN_KEY);
          setStore(undefined);
        }}
      />
    );
  }
  if (checking) return <p class="loading" role="status">Loading…</p>;
  return <SignIn onSignedIn={signedIn} problem={problem} />;
}

render(<Root />, document.getElementById('app')!);
