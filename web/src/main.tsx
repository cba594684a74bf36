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
  const [checking, setChecking] = useState(() => localStorage.getItem(TOKEN_KEY) !== null);

  const signedIn = (token: string, me: User) => {
    localStorage.setItem(TOKEN_KEY, token);
    setStore(new ChatStore(location.origin, token, me));
  };

  useEffect(() => {
    const token = localStorage.getItem(TOKEN_KEY);
    if (!token) return;
    new ChorusHttp(location.origin, { token })
      .me()
      .then((me) => signedIn(token, me))
      .catch(() => localStorage.removeItem(TOKEN_KEY))
      .finally(() => setChecking(false));
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
  return <SignIn onSignedIn={signedIn} />;
}

render(<Root />, document.getElementById('app')!);
