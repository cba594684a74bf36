// The chat screen: sidebar (workspaces, channels, DMs with unread badges and presence),
// the open conversation with its composer, the thread panel, and the DM picker.
import type { ComponentChildren } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { ChannelView, ConnectionState, Message, MessageId } from '@chorus/client';
import type { ChatStore, Pending } from './store';

const EMOJI = ['👍', '❤️', '😄', '🎉', '👀', '🚀'];

/** Re-renders the caller whenever the store changes. */
function useStore(store: ChatStore): void {
  const [, bump] = useState(0);
  useEffect(() => store.subscribe(() => bump((n) => n + 1)), [store]);
}

export function ChatApp({ store, onSignOut }: { store: ChatStore; onSignOut: () => void }) {
  useStore(store);
  const [menuOpen, setMenuOpen] = useState(false);
  const [picker, setPicker] = useState(false);
  const current = store.current !== undefined ? store.channels.get(store.current) : undefined;

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key !== 'Escape') return;
      if (picker) setPicker(false);
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
  }, [store, picker, menuOpen]);

  useEffect(() => {
    document.title = current ? `${current.kind === 'dm' ? '' : '#'}${store.channelLabel(current)} · Chorus` : 'Chorus';
  });

  if (store.error) {
    return (
      <main class="signin">
        <p role="alert">{store.error}</p>
        <button onClick={onSignOut}>Sign in again</button>
      </main>
    );
  }

  return (
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
        <span class="spacer" />
        <ConnectionBadge state={store.conn} />
        <a class="toplink wide-only" href="/ops">
          Operations
        </a>
        <span class="me" title={`Signed in as ${store.me.name}`}>
          <Dot online={store.conn === 'open'} />
          <span class="me-name">{store.me.display_name || store.me.name}</span>
        </span>
        <button class="link wide-only" onClick={onSignOut}>
          Sign out
        </button>
      </header>

      <Sidebar store={store} onPick={() => setMenuOpen(false)} onNewDm={() => setPicker(true)} onSignOut={onSignOut} />

      <main class="conversation" aria-label={current ? `Conversation: ${store.channelLabel(current)}` : 'Conversation'}>
        {store.conn !== 'open' && (
          <p class="offline-banner" role="status">
            {store.conn === 'closed'
              ? 'Disconnected.'
              : 'Connection lost: reconnecting. What is sent meanwhile will show up when you are back.'}
          </p>
        )}
        {current ? (
          <Conversation store={store} channel={current} />
        ) : (
          <p class="empty">{store.workspaces.length ? 'Pick a channel.' : 'You are in no workspace yet.'}</p>
        )}
      </main>

      {store.thread && <ThreadPanel store={store} />}
      {picker && <DmPicker store={store} onClose={() => setPicker(false)} onPicked={() => setMenuOpen(false)} />}

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

function Dot({ online }: { online: boolean }) {
  return (
    <span
      class={`dot ${online ? 'online' : 'offline'}`}
      role="img"
      aria-label={online ? 'online' : 'offline'}
      data-presence={online ? 'online' : 'offline'}
    />
  );
}

// ------------------------------------------------------------------ sidebar

function Sidebar({
  store,
  onPick,
  onNewDm,
  onSignOut,
}: {
  store: ChatStore;
  onPick: () => void;
  onNewDm: () => void;
  onSignOut: () => void;
}) {
  const all = [...store.channels.values()];
  const channels = all.filter((c) => c.kind !== 'dm').sort((a, b) => a.name.localeCompare(b.name));
  const dms = all
    .filter((c) => c.kind === 'dm')
    .sort((a, b) => store.channelLabel(a).localeCompare(store.channelLabel(b)));
  const item = (c: ChannelView) => {
    const peer = store.dmPeer(c);
    const label = store.channelLabel(c);
    const unread = c.member ? c.unread : 0;
    const mentions = c.unread_mentions ?? 0;
    return (
      <li key={c.id}>
        <button
          class={`chan${unread ? ' has-unread' : ''}${c.member ? '' : ' not-member'}`}
          aria-current={store.current === c.id ? 'page' : undefined}
          data-channel-id={c.id}
          data-kind={c.kind}
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
          {unread > 0 && (
            <span class={`badge${mentions ? ' mention' : ''}`} aria-label={`${unread} unread`} data-unread={unread}>
              {mentions ? `@${unread}` : unread}
            </span>
          )}
        </button>
      </li>
    );
  };
  return (
    <nav id="sidebar" class="sidebar" aria-label="Channels and direct messages">
      <h2 id="channels-heading">Channels</h2>
      <ul aria-labelledby="channels-heading">{channels.map(item)}</ul>
      <div class="section-head">
        <h2 id="dms-heading">Direct messages</h2>
        <button class="icon add" aria-label="New direct message" title="New direct message" onClick={onNewDm}>
          +
        </button>
      </div>
      <ul aria-labelledby="dms-heading">{dms.map(item)}</ul>
      <div class="sidebar-foot">
        <span>Signed in as {store.me.name}</span>
        <a href="/ops">Operations</a>
        <button class="link" onClick={onSignOut}>
          Sign out
        </button>
      </div>
    </nav>
  );
}

function DmPicker({ store, onClose, onPicked }: { store: ChatStore; onClose: () => void; onPicked: () => void }) {
  const [filter, setFilter] = useState('');
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => {
    const opener = document.activeElement as HTMLElement | null;
    input.current?.focus();
    void store.loadMembers();
    return () => opener?.focus();
  }, [store]);
  const people = [...store.members.values()]
    .filter((m) => m.user.id !== store.me.id)
    .filter((m) => `${m.user.name} ${m.user.display_name}`.toLowerCase().includes(filter.toLowerCase()))
    .sort((a, b) => a.user.name.localeCompare(b.user.name));
  return (
    <div class="backdrop" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="dm-title">
        <h2 id="dm-title">New direct message</h2>
        <label for="dm-filter" class="sr-only">
          Find a person
        </label>
        <input
          id="dm-filter"
          ref={input}
          placeholder="Find a person"
          value={filter}
          onInput={(e) => setFilter(e.currentTarget.value)}
        />
        <ul class="people" aria-label="People">
          {people.map((m) => (
            <li key={m.user.id}>
              <button
                class="person"
                data-user={m.user.name}
                onClick={() => {
                  onClose();
                  onPicked();
                  void store.openDm(m.user.id);
                }}
              >
                <Dot online={store.online.get(m.user.id) ?? false} />
                <span>{m.user.display_name || m.user.name}</span>
                {m.user.display_name && m.user.display_name !== m.user.name && <span class="muted">@{m.user.name}</span>}
                {m.user.kind === 'agent' && <span class="tag">agent</span>}
              </button>
            </li>
          ))}
          {people.length === 0 && <li class="muted">Nobody else here yet.</li>}
        </ul>
        <button class="link" onClick={onClose}>
          Cancel
        </button>
      </div>
    </div>
  );
}

// ------------------------------------------------------------------ conversation

function Conversation({ store, channel }: { store: ChatStore; channel: ChannelView }) {
  const list = store.list(channel.id);
  const scroller = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const anchor = useRef<{ height: number; top: number; firstId: number | undefined } | undefined>();
  const items = list?.items ?? [];
  const pending = store.pending.filter((p) => p.channelId === channel.id && p.threadId === undefined);
  const label = store.channelLabel(channel);
  const title = channel.kind === 'dm' ? label : `#${label}`;

  const loadOlder = async () => {
    const el = scroller.current;
    if (!el || !list || list.loading || list.complete) return;
    anchor.current = { height: el.scrollHeight, top: el.scrollTop, firstId: list.items[0]?.id };
    if (!(await store.loadOlder(channel.id))) anchor.current = undefined;
  };

  // Keep the view where the reader is: pinned to the bottom for new messages, or on the
  // same message after older ones were added above.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (anchor.current) {
      // Only once the older page is in: renders while it loads change nothing.
      if (items[0]?.id !== anchor.current.firstId) {
        el.scrollTop = el.scrollHeight - anchor.current.height + anchor.current.top;
        anchor.current = undefined;
      }
    } else if (atBottom.current) {
      el.scrollTop = el.scrollHeight;
    }
  });

  useEffect(() => {
    atBottom.current = true;
  }, [channel.id]);

  return (
    <>
      <div class="conv-head">
        <h1>{title}</h1>
        {channel.topic && <p class="topic">{channel.topic}</p>}
      </div>
      <div
        class="scroller"
        ref={scroller}
        onScroll={(e) => {
          const el = e.currentTarget;
          atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
          // Near the top of a list that overflows: the reader wants what came before.
          if (el.scrollTop < 60 && el.scrollHeight > el.clientHeight) void loadOlder();
        }}
      >
        {list && !list.complete && (
          <button class="link older" disabled={list.loading} onClick={() => void loadOlder()}>
            {list.loading ? 'Loading…' : 'Load older messages'}
          </button>
        )}
        {list?.complete && items.length > 0 && (
          <p class="start muted">
            {channel.kind === 'dm' ? `The beginning of your conversation with ${title}.` : `The beginning of ${title}.`}
          </p>
        )}
        <ol class="messages" aria-label={`Messages in ${title}`} role="log" aria-live="polite">
          {items.map((m, i) => (
            <MessageItem key={m.id} store={store} message={m} compact={followsUp(items[i - 1], m)} />
          ))}
        </ol>
        {items.length === 0 && list && !list.loading && <p class="empty">No messages yet: say hello.</p>}
        <PendingList store={store} pending={pending} />
      </div>
      <Typing store={store} channelId={channel.id} />
      {channel.member ? (
        <Composer store={store} channelId={channel.id} label={`Message ${title}`} id="composer-input" />
      ) : (
        <p class="muted composer">Join {title} to write here.</p>
      )}
    </>
  );
}

/** A message right after one by the same author (within 5 minutes) drops its header. */
function followsUp(prev: Message | undefined, m: Message): boolean {
  if (!prev || prev.author_id !== m.author_id || prev.deleted || (prev.reply_count ?? 0) > 0) return false;
  return Date.parse(m.created_at) - Date.parse(prev.created_at) < 5 * 60_000;
}

function MessageItem({
  store,
  message: m,
  inThread,
  compact,
}: {
  store: ChatStore;
  message: Message;
  inThread?: boolean;
  compact?: boolean;
}) {
  const [picking, setPicking] = useState(false);
  const time = new Date(m.created_at);
  const mine = m.author_id === store.me.id;
  return (
    <li class={`msg${mine ? ' mine' : ''}${compact ? ' compact' : ''}`} data-message-id={m.id} tabIndex={-1}>
      <div class={compact ? 'msg-head sr-only' : 'msg-head'}>
        <span class="author">{store.userName(m.author_id)}</span>
        <time dateTime={m.created_at} title={time.toLocaleString()}>
          {time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}
        </time>
        {m.edited_at && <span class="muted">(edited)</span>}
      </div>
      <div class="msg-text">{m.deleted ? <em class="muted">This message was deleted.</em> : <Text store={store} text={m.text} />}</div>
      {!m.deleted && ((m.reactions ?? []).length > 0 || (!inThread && (m.reply_count ?? 0) > 0)) && (
        <div class="msg-foot">
          {(m.reactions ?? []).map((r) => {
            const me = r.user_ids.includes(store.me.id);
            return (
              <button
                key={r.emoji}
                class={`reaction${me ? ' mine' : ''}`}
                aria-pressed={me}
                aria-label={`${r.emoji} ${r.count}: ${r.user_ids.map((id) => store.userName(id)).join(', ')}`}
                title={r.user_ids.map((id) => store.userName(id)).join(', ')}
                data-emoji={r.emoji}
                onClick={() => void store.toggleReaction(m, r.emoji)}
              >
                {r.emoji} <span class="count">{r.count}</span>
              </button>
            );
          })}
          {!inThread && (m.reply_count ?? 0) > 0 && (
            <button class="replies" onClick={() => void store.openThread(m.channel_id, m.id)}>
              {m.reply_count} {m.reply_count === 1 ? 'reply' : 'replies'}
            </button>
          )}
        </div>
      )}
      {!m.deleted && (
        <span class={`actions${picking ? ' open' : ''}`}>
          {picking && (
            <span
              class="emoji-menu"
              role="group"
              aria-label="Reactions"
              onKeyDown={(e) => {
                if (e.key === 'Escape') {
                  e.stopPropagation();
                  setPicking(false);
                }
              }}
            >
              {EMOJI.map((emoji) => (
                <button
                  key={emoji}
                  class="icon"
                  aria-label={`React with ${emoji}`}
                  onClick={() => {
                    setPicking(false);
                    void store.toggleReaction(m, emoji);
                  }}
                >
                  {emoji}
                </button>
              ))}
            </span>
          )}
          <button
            class="icon"
            aria-label="Add reaction"
            aria-expanded={picking}
            title="Add reaction"
            onClick={() => setPicking(!picking)}
          >
            ☺
          </button>
          {!inThread && (
            <button
              class="icon"
              aria-label="Reply in thread"
              title="Reply in thread"
              onClick={() => void store.openThread(m.channel_id, m.id)}
            >
              ↩
            </button>
          )}
        </span>
      )}
    </li>
  );
}

/** Message text with `@name` mentions highlighted; newlines kept by CSS. */
function Text({ store, text }: { store: ChatStore; text: string }) {
  const parts: ComponentChildren[] = [];
  const re = /(^|[^a-z0-9_.-])@([a-z0-9_.-]+)/g;
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const start = m.index + m[1]!.length;
    parts.push(text.slice(last, start));
    const name = m[2]!.replace(/[.-]+$/, '');
    const me = name === store.me.name;
    parts.push(
      <span key={start} class={`mention${me ? ' me' : ''}`}>
        @{name}
      </span>,
    );
    last = start + 1 + name.length;
  }
  parts.push(text.slice(last));
  return <>{parts}</>;
}

function PendingList({ store, pending }: { store: ChatStore; pending: Pending[] }) {
  if (!pending.length) return null;
  return (
    <ol class="messages pending" aria-label="Messages being sent">
      {pending.map((p) => (
        <li key={p.key} class="msg mine pending">
          <div class="msg-head">
            <span class="author">{store.userName(store.me.id)}</span>
            <span class="muted">{p.failed ? 'not sent' : 'sending…'}</span>
          </div>
          <div class="msg-text">{p.text}</div>
          {p.failed && (
            <div class="msg-foot">
              <span class="error">{p.failed}</span>
              <button class="link" onClick={() => void store.retry(p.key)}>
                Retry
              </button>
              <button class="link" onClick={() => store.discard(p.key)}>
                Discard
              </button>
            </div>
          )}
        </li>
      ))}
    </ol>
  );
}

function Typing({ store, channelId, threadId }: { store: ChatStore; channelId: number; threadId?: MessageId }) {
  const who = store.typists(channelId, threadId).map((id) => store.userName(id));
  const text =
    who.length === 0
      ? ''
      : who.length === 1
        ? `${who[0]} is typing…`
        : who.length === 2
          ? `${who[0]} and ${who[1]} are typing…`
          : 'Several people are typing…';
  return (
    <p class="typing" aria-live="polite">
      {text}
    </p>
  );
}

function Composer({
  store,
  channelId,
  threadId,
  label,
  id,
  autofocus,
}: {
  store: ChatStore;
  channelId: number;
  threadId?: MessageId;
  label: string;
  id: string;
  autofocus?: boolean;
}) {
  const [text, setText] = useState('');
  const area = useRef<HTMLTextAreaElement>(null);
  useEffect(() => {
    if (autofocus || window.matchMedia('(min-width: 721px)').matches) area.current?.focus();
  }, [channelId, threadId]);
  const submit = () => {
    if (!text.trim()) return;
    void store.send(channelId, text, threadId);
    setText('');
  };
  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      <label for={id} class="sr-only">
        {label}
      </label>
      <textarea
        id={id}
        ref={area}
        rows={1}
        placeholder={label}
        value={text}
        onInput={(e) => {
          setText(e.currentTarget.value);
          if (e.currentTarget.value.trim()) store.typed(channelId, threadId);
        }}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            submit();
          }
        }}
      />
      <button type="submit" disabled={!text.trim()}>
        Send
      </button>
    </form>
  );
}

// ------------------------------------------------------------------ threads

function ThreadPanel({ store }: { store: ChatStore }) {
  const thread = store.thread!;
  const root = store.findMessage(thread.rootId);
  const pending = store.pending.filter((p) => p.threadId === thread.rootId);
  const end = useRef<HTMLDivElement>(null);
  useLayoutEffect(() => {
    end.current?.scrollIntoView({ block: 'end' });
  }, [thread.replies.length, pending.length]);
  // Closing the thread puts the keyboard back in the conversation's message box.
  useEffect(() => () => document.getElementById('composer-input')?.focus(), []);
  return (
    <aside class="thread" aria-label="Thread">
      <div class="conv-head">
        <h2>Thread</h2>
        <button class="icon" aria-label="Close thread" title="Close thread (Esc)" onClick={() => store.closeThread()}>
          ×
        </button>
      </div>
      <div class="scroller">
        {root && (
          <ol class="messages root" aria-label="Thread root">
            <MessageItem store={store} message={root} inThread />
          </ol>
        )}
        <p class="muted replies-count">
          {thread.loading ? 'Loading…' : `${thread.replies.length} ${thread.replies.length === 1 ? 'reply' : 'replies'}`}
        </p>
        <ol class="messages" aria-label="Replies" role="log" aria-live="polite">
          {thread.replies.map((m, i) => (
            <MessageItem key={m.id} store={store} message={m} inThread compact={followsUp(thread.replies[i - 1], m)} />
          ))}
        </ol>
        <PendingList store={store} pending={pending} />
        <div ref={end} />
      </div>
      <Typing store={store} channelId={thread.channelId} threadId={thread.rootId} />
      <Composer
        store={store}
        channelId={thread.channelId}
        threadId={thread.rootId}
        label="Reply in thread"
        id="thread-input"
        autofocus
      />
    </aside>
  );
}
