// Sign in: by name on a `chorus serve --dev` server (password-less), or with a token.
// A name's login mints a token for this browser (signing out revokes it); a token typed
// here is the user's own (signing out only forgets it here).
import { useState } from 'preact/hooks';
import { ChorusError, ChorusHttp, type User } from '@chorus/client';

export function SignIn({ onSignedIn, problem }: { onSignedIn: (token: string, me: User, minted: boolean) => void; problem?: string | undefined }) {
  const [name, setName] = useState('');
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | undefined>(problem);
  const [busy, setBusy] = useState(false);
  const http = new ChorusHttp(location.origin);

  const run = async (work: () => Promise<void>) => {
    setBusy(true);
    setError(undefined);
    try {
      await work();
    } catch (err) {
      if (err instanceof ChorusError && err.code === 'not_found') {
        setError('Password-less sign-in is off on this server (start it with --dev), so use a token.');
      } else if (err instanceof ChorusError && err.code === 'unauthorized') {
        setError('That token is not valid.');
      } else {
        setError(
          err instanceof ChorusError && err.code === 'network'
            ? 'The server cannot be reached right now: try again in a moment.'
            : err instanceof ChorusError
              ? `${err.message.charAt(0).toUpperCase()}${err.message.slice(1)}.`
              : String(err),
        );
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="signin" aria-labelledby="signin-title">
      <h1 id="signin-title">Chorus</h1>
      <p class="muted">Realtime collaboration for humans and agents.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void run(async () => {
            const { token, user } = await http.devLogin(name.trim().toLowerCase());
            onSignedIn(token, user, true);
          });
        }}
      >
        <label for="signin-name">Your name</label>
        <input
          id="signin-name"
          name="name"
          autocomplete="username"
          pattern="[a-z0-9_.\-]{1,32}"
          title="1 to 32 of a–z, 0–9, _ . -"
          required
          autofocus
          value={name}
          onInput={(e) => setName(e.currentTarget.value)}
        />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        <p class="hint">Dev mode: no password; the name is created on first use.</p>
      </form>
      <details>
        <summary>Sign in with a token</summary>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void run(async () => {
              const me = await http.withToken(token.trim()).me();
              onSignedIn(token.trim(), me, false);
            });
          }}
        >
          <label for="signin-token">API token</label>
          <input
            id="signin-token"
            type="password"
            autocomplete="off"
            required
            value={token}
            onInput={(e) => setToken(e.currentTarget.value)}
          />
          <button type="submit" disabled={busy}>
            Sign in with token
          </button>
        </form>
      </details>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </main>
  );
}
