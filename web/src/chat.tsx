// The chat screen: top bar (workspace, status, connection), sidebar (channels and DMs
// with unread and mention badges, presence), the open conversation, the thread panel,
// the dialogs, and the keyboard shortcuts (Ctrl/Cmd+K, Esc).
import { useEffect, useState } from 'preact/hooks';
import type { ChannelView, ConnectionState } from '@chorus/client';
import { Conversation, ThreadPanel } from './conversation';
import { Dialogs } from './dialogs';
import type { ChatStore } from './store';
import { AgentTag, Dot, UiContext, useStore, useUi, type DialogState, type Ui } from './ui';

export function ChatApp({ store, onSignOut }: { store: ChatStore; onSignOut: () => void }) {
  useStore(store);
  const [menuOpen, setMenuOpen] = useState(false);
  const [dialog, setDialog] = useState<DialogState | undefined>();
  // A dialog closes itself only: one that finishes its work late (after another was
  // opened) must not close the new one.
  const ui: Ui = { store, open: (d) => setDialog(d), close: () => setDialog((d) => (d === dialog ? undefined : d)) };
  const current = store.current !== undefined ? store.channels.get(store.current) : undefined;

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if ((e.ctrlKey || e.metaKey) && !e.altKey && e.key.toLowerCase() === 'k') {
        e.preventDefault();
        setDialog((d) => (d?.kind === 'switcher' ? undefined : { kind: 'switcher' }));
        return;
      }
      if (e.key !== 'Escape' || e.defaultPrevented) return;
      if (dialog) setDialog(undefined);
      else if (store.thread) store.closeThread();
      else if (menuOpen) setMenuOpen(false);
    };
    const onVisible = () => store.markReadSoon();
    window.addEventListener('keydown', onKey);
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      window.removeEventListener('keydown', onKey);
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [store, dialog, menuOpen]);

  // The tab's title: unread messages first, then where I am.
  const unread = store.unreadTotal();
  useEffect(() => {
    const where = current ? `${current.kind === 'dm' ? '' : '#'}${store.channelLabel(current)} · Chorus` : 'Chorus';
    document.title = unread > 0 ? `(${unread}) ${where}` : where;
  });

  if (store.error) {
    return (
      <main class="signin">
        <p role="alert">{store.error}</p>
        <button onClick={onSignOut}>Sign in again</button>
      </main>
    );
  }

  const status = store.statuses.get(store.me.id);
  return (
    <UiContext.Provider value={ui}>
      <div class={`layout${store.thread ? ' with-thread' : ''}${menuOpen ? ' menu-open' : ''}`}>
        <a class="skip" href="#composer-input">
          Skip to the message box
        </a>
        <header class="topbar">
          <button
            class="icon menu-toggle"
            aria-label="Channels"
            aria-expanded={menuOpen}
            aria-controls="sidebar"
            onClick={() => setMenuOpen(!menuOpen)}
          >
            ☰
          </button>
          <span class="brand">Chorus</span>
          {store.workspaces.length > 1 ? (
            <label class="workspace">
              <span class="sr-only">Workspace</span>
              <select value={store.workspaceId} onChange={(e) => void store.selectWorkspace(Number(e.currentTarget.value))}>
                {store.workspaces.map((w) => (
                  <option key={w.id} value={w.id}>
                    {w.name}
                  </option>
                ))}
              </select>
            </label>
          ) : (
            <span class="workspace">{store.workspaces[0]?.name}</span>
          )}
          <button class="icon wide-only add-workspace" aria-label="New workspace" title="New workspace" onClick={() => setDialog({ kind: 'workspace' })}>
            +
          </button>
          <button class="toplink search wide-only" aria-label="Go to a conversation (Ctrl+K)" onClick={() => setDialog({ kind: 'switcher' })}>
            Jump to… <kbd>Ctrl K</kbd>
          </button>
          <span class="spacer" />
          <ConnectionBadge state={store.conn} />
          <a class="toplink wide-only" href="/ops">
            Operations
          </a>
          <button class="me" title={`Signed in as ${store.me.name}: set your status`} aria-label="Your status" onClick={() => setDialog({ kind: 'status' })}>
            <Dot online={store.conn === 'open'} />
            <span class="me-name">{store.me.display_name || store.me.name}</span>
            {status ? <span class="my-status">{status}</span> : <span class="my-status muted wide-only">Set a status</span>}
          </button>
          <button class="link wide-only" onClick={onSignOut}>
            Sign out
          </button>
        </header>

        <Sidebar onPick={() => setMenuOpen(false)} onSignOut={onSignOut} />

        <main class="conversation" aria-label={current ? `Conversation: ${store.channelLabel(current)}` : 'Conversation'}>
          {store.conn !== 'open' && (
            <p class="offline-banner" role="status">
              {store.conn === 'closed'
                ? 'Disconnected.'
                : 'Connection lost: reconnecting. What you send meanwhile waits and goes by itself when you are back.'}
            </p>
          )}
          {current ? (
            <Conversation channel={current} />
          ) : store.workspaces.length ? (
            <div class="empty">
              <p>Pick a channel, or start something:</p>
              <p class="empty-actions">
                <button onClick={() => setDialog({ kind: 'channel' })}>Create a channel</button>
                <button onClick={() => setDialog({ kind: 'dm' })}>Message someone</button>
                {store.manages && <button onClick={() => setDialog({ kind: 'invite' })}>Invite people</button>}
              </p>
            </div>
          ) : (
            <div class="empty">
              <p>You are in no workspace yet. Ask someone to add you to theirs, or create one.</p>
              <p class="empty-actions">
                <button class="primary" onClick={() => setDialog({ kind: 'workspace' })}>
                  Create a workspace
                </button>
              </p>
            </div>
          )}
        </main>

        {store.thread && <ThreadPanel />}
        {dialog && <Dialogs dialog={dialog} />}

        <div class="notices" role="status" aria-live="polite">
          {store.notices.map((n) => (
            <p key={n.id} class="notice">
              {n.text}
              <button class="icon" aria-label="Dismiss" onClick={() => store.dismissNotice(n.id)}>
                ×
              </button>
            </p>
          ))}
        </div>
      </div>
    </UiContext.Provider>
  );
}

const STATE_TEXT: Record<ConnectionState, string> = {
  open: 'Connected',
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
};

function ConnectionBadge({ state }: { state: ConnectionState }) {
  return (
    <span class={`conn conn-${state}`} role="status" aria-live="polite" data-state={state}>
      <span class="conn-light" aria-hidden="true" />
      {STATE_TEXT[state]}
    </span>
  );
}

// ------------------------------------------------------------------ sidebar

function Sidebar({ onPick, onSignOut }: { onPick: () => void; onSignOut: () => void }) {
  const { store, open } = useUi();
  const all = [...store.channels.values()];
  const channels = all.filter((c) => c.kind !== 'dm').sort((a, b) => a.name.localeCompare(b.name));
  const dms = all
    .filter((c) => c.kind === 'dm')
    .sort((a, b) => store.channelLabel(a).localeCompare(store.channelLabel(b)));
  const item = (c: ChannelView) => {
    const peer = store.dmPeer(c);
    const label = store.channelLabel(c);
    const unread = c.member ? c.unread : 0;
    const mentions = store.mentionCount(c);
    const status = peer !== undefined ? store.statuses.get(peer) : undefined;
    return (
      <li key={c.id}>
        <button
          class={`chan${unread || mentions ? ' has-unread' : ''}${c.member ? '' : ' not-member'}`}
          aria-current={store.current === c.id ? 'page' : undefined}
          data-channel-id={c.id}
          data-kind={c.kind}
          title={status ? `${label}: ${status}` : undefined}
          onClick={() => {
            onPick();
            void store.selectChannel(c.id);
          }}
        >
          {c.kind === 'dm' ? (
            peer !== undefined ? (
              <Dot online={store.online.get(peer) ?? false} />
            ) : (
              <span class="hash" aria-hidden="true">
                ◇
              </span>
            )
          ) : (
            <span class="hash" aria-hidden="true">
              {c.kind === 'private' ? '🔒' : '#'}
            </span>
          )}
          <span class="chan-name">{label}</span>
          {peer !== undefined && store.isAgent(peer) && <AgentTag />}
          {(unread > 0 || mentions > 0) && (
            <span
              class={`badge${mentions ? ' mention' : ''}`}
              aria-label={`${unread} unread${mentions ? `, ${mentions} mention${mentions === 1 ? '' : 's'}` : ''}`}
              data-unread={unread}
              data-mentions={mentions}
            >
              {mentions ? `@${mentions}` : unread}
            </span>
          )}
        </button>
      </li>
    );
  };
  return (
    <nav id="sidebar" class="sidebar" aria-label="Channels and direct messages">
      <div class="section-head">
        <h2 id="channels-heading">Channels</h2>
        {store.workspaceId !== undefined && store.role !== 'guest' && (
          <button class="icon add" aria-label="New channel" title="New channel" onClick={() => open({ kind: 'channel' })}>
            +
          </button>
        )}
      </div>
      <ul aria-labelledby="channels-heading">{channels.map(item)}</ul>
      <div class="section-head">
        <h2 id="dms-heading">Direct messages</h2>
        {store.workspaceId !== undefined && (
          <button class="icon add" aria-label="New direct message" title="New direct message" onClick={() => open({ kind: 'dm' })}>
            +
          </button>
        )}
      </div>
      <ul aria-labelledby="dms-heading">{dms.map(item)}</ul>
      {store.workspaceId !== undefined && (
        <div class="sidebar-tools">
          <button class="link" onClick={() => open({ kind: 'members' })}>
            Members ({store.members.size})
          </button>
          {store.manages && (
            <button class="link" onClick={() => open({ kind: 'invite' })}>
              Invite people
            </button>
          )}
        </div>
      )}
      <div class="sidebar-foot">
        <span>Signed in as {store.me.name}</span>
        <button class="link" onClick={() => open({ kind: 'workspace' })}>
          New workspace
        </button>
        <a href="/ops">Operations</a>
        <button class="link" onClick={onSignOut}>
          Sign out
        </button>
      </div>
    </nav>
  );
}
