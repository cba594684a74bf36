// Entry point: `/ops` is the operations page; everything else is the chat, behind the
// sign-in screen until a token is stored.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ChorusHttp, type User } from '@chorus/client';
import { ChatApp } from './chat';
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
  const [checking, setChecking] = useState(() => localStorage.getItem(TOKEN_KEY) !== null || location.hash.startsWith('#token='));

  const signedIn = (token: string, me: User) => {
    localStorage.setItem(TOKEN_KEY, token);
    setStore(new ChatStore(location.origin, token, me));
  };

  useEffect(() => {
    const check = (handed: boolean) => {
      const token = localStorage.getItem(TOKEN_KEY);
      if (!token) return setChecking(false);
      setChecking(true);
      new ChorusHttp(location.origin, { token })
        .me()
        .then((me) => signedIn(token, me))
        .catch(() => {
          localStorage.removeItem(TOKEN_KEY);
          if (handed) setProblem('That sign-in link is not valid (any more): ask for a new one.');
        })
        .finally(() => setChecking(false));
    };
    // A sign-in link (`/#token=…`, handed over by an administrator): its token replaces
    // any stored one, and leaves the address bar at once. Opened in a new tab, or in
    // this one (a hash change loads no page).
    const fromLink = (): boolean => {
      const handed = /^#token=([^&]+)/.exec(location.hash);
      if (!handed) return false;
      localStorage.setItem(TOKEN_KEY, decodeURIComponent(handed[1]!));
      history.replaceState(null, '', location.pathname + location.search);
      return true;
    };
    check(fromLink());
    const onHash = () => {
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
