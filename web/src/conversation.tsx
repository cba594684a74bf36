// The open conversation: its header (members, pins, details), the messages with date
// dividers and a "new messages" line, a view that follows new messages unless the
// reader scrolled up ("Jump to latest" then), the messages being sent, the typing line
// and the box; and the thread panel.
import type { ComponentChildren } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { ChannelView, Message, MessageId } from '@chorus/client';
import { Composer } from './composer';
import { EmojiPicker } from './emojipicker';
import { convKey, type ChatStore, type Outgoing } from './store';
import { Text, type TextContext } from './text';
import { AgentTag, dayLabel, useUi } from './ui';

/** Within this many pixels of the bottom, the view follows new messages. */
const NEAR_BOTTOM = 48;

export function Conversation({ channel }: { channel: ChannelView }) {
  const { store, open } = useUi();
  const list = store.list(channel.id);
  const scroller = useRef<HTMLDivElement>(null);
  const content = useRef<HTMLDivElement>(null);
  const following = useRef(true);
  const [away, setAway] = useState(false);
  const [unseen, setUnseen] = useState(0);
  const lastId = useRef<MessageId | undefined>();
  const anchor = useRef<{ height: number; top: number; firstId: number | undefined } | undefined>();
  const items = list?.items ?? [];
  const pending = store.pending.filter((p) => p.channelId === channel.id && p.threadId === undefined);
  const label = store.channelLabel(channel);
  const title = channel.kind === 'dm' ? label : `#${label}`;
  const peer = store.dmPeer(channel);
  const peerStatus = peer !== undefined ? store.statuses.get(peer) : undefined;
  const pins = store.pins.get(channel.id);

  /** Where the view was last put at the bottom: a position above it means the reader
   * scrolled up, even before their scroll event comes. */
  const pinnedTop = useRef<number | undefined>();
  const toBottom = () => {
    const el = scroller.current;
    if (!el) return;
    el.scrollTop = el.scrollHeight;
    pinnedTop.current = el.scrollTop;
  };
  /** Whether the reader left the bottom since the view was last put there. */
  const leftBottom = (el: HTMLElement) =>
    pinnedTop.current !== undefined &&
    el.scrollTop < pinnedTop.current - 1 &&
    el.scrollHeight - el.scrollTop - el.clientHeight >= NEAR_BOTTOM;

  const loadOlder = async () => {
    const el = scroller.current;
    if (!el || !list || list.loading || list.complete) return;
    anchor.current = { height: el.scrollHeight, top: el.scrollTop, firstId: list.items[0]?.id };
    if (!(await store.loadOlder(channel.id))) anchor.current = undefined;
  };

  // Keep the view where the reader is: at the bottom while following, or on the same
  // message after older ones were added above.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (anchor.current) {
      // Only once the older page is in: renders while it loads change nothing.
      if (items[0]?.id !== anchor.current.firstId) {
        el.scrollTop = el.scrollHeight - anchor.current.height + anchor.current.top;
        anchor.current = undefined;
      }
    } else if (following.current) {
      if (leftBottom(el)) {
        following.current = false;
        setAway(true);
      } else {
        toBottom();
      }
    }
    // New messages while the reader is up the page: counted on the jump button.
    const last = items.at(-1);
    if (last && lastId.current !== undefined && last.id > lastId.current && !following.current && last.author_id !== store.me.id) {
      setUnseen((n) => n + items.filter((m) => m.id > lastId.current! && m.author_id !== store.me.id).length);
    }
    lastId.current = last?.id;
  });

  // Sizes change without a render too (the box growing as one types, fonts, the
  // window): a view that follows stays at the bottom.
  useEffect(() => {
    const observer = new ResizeObserver(() => {
      const el = scroller.current;
      if (following.current && !anchor.current && el && !leftBottom(el)) toBottom();
    });
    if (scroller.current) observer.observe(scroller.current);
    if (content.current) observer.observe(content.current);
    return () => observer.disconnect();
  }, []);

  useEffect(() => {
    following.current = true;
    setAway(false);
    setUnseen(0);
    lastId.current = undefined;
    toBottom();
  }, [channel.id]);

  const jump = () => {
    following.current = true;
    setAway(false);
    setUnseen(0);
    toBottom();
    document.getElementById('composer-input')?.focus();
  };

  const canManage = channel.kind !== 'dm';
  return (
    <>
      <div class="conv-head">
        <h1>{title}</h1>
        {channel.kind === 'private' && <span class="tag">private</span>}
        {peerStatus && <span class="status-text muted">{peerStatus}</span>}
        {channel.topic && <p class="topic">{channel.topic}</p>}
        <span class="spacer" />
        <div class="conv-actions" role="toolbar" aria-label="Conversation">
          <button
            class="tool"
            aria-label={`Pinned messages${pins ? ` (${pins.length})` : ''}`}
            title="Pinned messages"
            onClick={() => open({ kind: 'pins', channelId: channel.id })}
          >
            📌{pins && pins.length > 0 && <span class="count">{pins.length}</span>}
          </button>
          {canManage && (
            <button
              class="tool"
              aria-label="Channel details and members"
              title="Channel details and members"
              onClick={() => open({ kind: 'channel-details', channelId: channel.id })}
            >
              Details
            </button>
          )}
        </div>
      </div>
      <div
        class="scroller"
        ref={scroller}
        tabIndex={-1}
        onScroll={(e) => {
          const el = e.currentTarget;
          const near = el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM;
          following.current = near;
          setAway(!near);
          if (near) setUnseen(0);
          // Near the top of a list that overflows: the reader wants what came before.
          if (el.scrollTop < 60 && el.scrollHeight > el.clientHeight) void loadOlder();
        }}
      >
        <div ref={content}>
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
          <MessageList items={items} label={`Messages in ${title}`} newSince={store.newSince.get(channel.id)} />
          {items.length === 0 && list && !list.loading && <p class="empty">No messages yet: say hello.</p>}
          <PendingList pending={pending} />
        </div>
      </div>
      {away && (
        <button class="jump" onClick={jump}>
          Jump to latest{unseen > 0 ? ` · ${unseen} new` : ''} ↓
        </button>
      )}
      <LoopGuardNotice channelId={channel.id} />
      <TypingLine channelId={channel.id} />
      {channel.member ? (
        <Composer channelId={channel.id} label={`Message ${title}`} id="composer-input" />
      ) : (
        <p class="muted composer">Join {title} to write here.</p>
      )}
    </>
  );
}

function MessageList({
  items,
  label,
  newSince,
  inThread,
}: {
  items: Message[];
  label: string;
  newSince?: MessageId | undefined;
  inThread?: boolean;
}) {
  const { store } = useUi();
  const rows: ComponentChildren[] = [];
  let newLine = newSince === undefined;
  for (let i = 0; i < items.length; i++) {
    const m = items[i]!;
    const prev = items[i - 1];
    const day = new Date(m.created_at);
    if (!prev || new Date(prev.created_at).toDateString() !== day.toDateString()) {
      const text = dayLabel(day);
      rows.push(
        <li key={`day-${m.id}`} class="day" role="separator" aria-label={text}>
          <span>{text}</span>
        </li>,
      );
    }
    let shownNew = false;
    if (!newLine && m.id > newSince! && m.author_id !== store.me.id) {
      newLine = true;
      shownNew = true;
      rows.push(
        <li key="new" class="new-line" role="separator" aria-label="New messages">
          <span>New messages</span>
        </li>,
      );
    }
    rows.push(<MessageItem key={m.id} message={m} inThread={inThread} compact={!shownNew && followsUp(prev, m)} />);
  }
  return (
    <ol class="messages" aria-label={label} role="log" aria-live="polite">
      {rows}
    </ol>
  );
}

/** A message right after one by the same author (within 5 minutes, the same day) drops
 * its header. */
function followsUp(prev: Message | undefined, m: Message): boolean {
  if (!prev || prev.author_id !== m.author_id || prev.deleted || (prev.reply_count ?? 0) > 0) return false;
  if (new Date(prev.created_at).toDateString() !== new Date(m.created_at).toDateString()) return false;
  return Date.parse(m.created_at) - Date.parse(prev.created_at) < 5 * 60_000;
}

export function textContext(store: ChatStore): TextContext {
  return {
    me: store.me.name,
    isMember: (name) => name === store.me.name || [...store.members.values()].some((m) => m.user.name === name),
  };
}

function MessageItem({ message: m, inThread, compact }: { message: Message; inThread?: boolean | undefined; compact?: boolean }) {
  const { store, open } = useUi();
  const [picker, setPicker] = useState<HTMLElement | undefined>();
  const time = new Date(m.created_at);
  const mine = m.author_id === store.me.id;
  const agent = store.isAgent(m.author_id);
  const channel = store.channels.get(m.channel_id);
  const canDelete = mine || store.manages;
  const mentions = inThread ? 0 : store.threadMentionCount(m.channel_id, m.id);
  const streaming = m.state === 'streaming' && !m.deleted;
  return (
    <li
      class={`msg${mine ? ' mine' : ''}${compact ? ' compact' : ''}${agent ? ' by-agent' : ''}${m.pinned ? ' pinned' : ''}${streaming ? ' streaming' : ''}`}
      data-message-id={m.id}
      data-state={m.state ?? 'complete'}
      aria-busy={streaming}
      tabIndex={-1}
    >
      <div class={compact ? 'msg-head sr-only' : 'msg-head'}>
        <span class="author">{store.userName(m.author_id)}</span>
        {agent && <AgentTag />}
        <time dateTime={m.created_at} title={time.toLocaleString()}>
          {time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}
        </time>
        {m.edited_at && !m.deleted && <span class="muted edited">(edited)</span>}
        {m.state === 'aborted' && !m.deleted && <span class="muted stopped">(stopped)</span>}
        {m.pinned && (
          <span class="pin-mark" title="Pinned">
            📌 <span class="sr-only">pinned</span>
          </span>
        )}
      </div>
      <div class={m.kind === 'action' ? 'msg-text action' : 'msg-text'}>
        {m.deleted ? (
          <em class="muted">This message was deleted.</em>
        ) : m.kind === 'action' ? (
          // `/me waves`: "alice waves".
          <em>
            {store.userName(m.author_id)} <Text text={m.text} ctx={textContext(store)} />
          </em>
        ) : (
          <Text text={m.text} ctx={textContext(store)} />
        )}
      </div>
      {streaming && <StreamingLine message={m} agent={agent} />}
      {!m.deleted && <WorkingLine message={m} />}
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
            <button
              class={`replies${mentions ? ' mention' : ''}`}
              aria-label={`${m.reply_count} ${m.reply_count === 1 ? 'reply' : 'replies'}${mentions ? `, ${mentions} mentioning you` : ''}`}
              onClick={() => void store.openThread(m.channel_id, m.id)}
            >
              {m.reply_count} {m.reply_count === 1 ? 'reply' : 'replies'}
              {mentions > 0 && <span class="at"> · @{mentions}</span>}
            </button>
          )}
        </div>
      )}
      {!m.deleted && (
        <span class={`actions${picker ? ' open' : ''}`} role="toolbar" aria-label="Message actions">
          <button
            class="icon"
            aria-label="Add reaction"
            aria-haspopup="dialog"
            aria-expanded={picker !== undefined}
            title="Add reaction"
            onClick={(e) => setPicker(picker ? undefined : e.currentTarget)}
          >
            ☺
          </button>
          {!inThread && (
            <button class="icon" aria-label="Reply in thread" title="Reply in thread" onClick={() => void store.openThread(m.channel_id, m.id)}>
              ↩
            </button>
          )}
          {channel?.member && (
            <button
              class="icon"
              aria-label={m.pinned ? 'Unpin' : 'Pin'}
              aria-pressed={m.pinned}
              title={m.pinned ? 'Unpin' : 'Pin to the conversation'}
              onClick={() => void store.togglePin(m)}
            >
              📌
            </button>
          )}
          {mine && (
            <button
              class="icon"
              aria-label="Edit"
              title="Edit (↑ in an empty box)"
              onClick={() => store.startEdit(convKey(m.channel_id, m.thread_id), m.id)}
            >
              ✎
            </button>
          )}
          {canDelete && (
            <button class="icon" aria-label="Delete" title="Delete" onClick={() => open({ kind: 'delete', message: m })}>
              🗑
            </button>
          )}
          {picker && (
            <EmojiPicker anchor={picker} onPick={(emoji) => void store.toggleReaction(m, emoji)} onClose={() => setPicker(undefined)} />
          )}
        </span>
      )}
    </li>
  );
}

/** Under a reply still being written: that it is, and, for an agent's, a Stop button. */
function StreamingLine({ message: m, agent }: { message: Message; agent: boolean }) {
  const { store } = useUi();
  const [stopping, setStopping] = useState(false);
  const name = store.userName(m.author_id);
  return (
    <div class="msg-stream">
      <span class="writing">writing…</span>
      {agent && (
        <button
          class="small stop"
          aria-label={`Stop ${name}'s reply`}
          title="Stop this reply"
          disabled={stopping}
          onClick={() => {
            setStopping(true);
            void store.stopReply(m).finally(() => setStopping(false));
          }}
        >
          ■ Stop
        </button>
      )}
    </div>
  );
}

/** The agents that reported working on a message (its receipts): "helper is working…". */
function WorkingLine({ message: m }: { message: Message }) {
  const { store } = useUi();
  const who = (m.receipts ?? []).filter((r) => r.state === 'working').map((r) => store.userName(r.user_id));
  if (!who.length) return null;
  const text = who.length === 1 ? `${who[0]} is working…` : `${who.slice(0, -1).join(', ')} and ${who[who.length - 1]} are working…`;
  return (
    <p class="working" role="status">
      {text}
    </p>
  );
}

const LOOP_GUARD_REASONS: Record<string, string> = {
  agent_messages: 'agents wrote too many messages in a row',
  per_minute: 'agents wrote too many messages in a minute',
};

/** While the loop guard holds a channel: its agents are not woken until a person writes. */
function LoopGuardNotice({ channelId }: { channelId: number }) {
  const { store } = useUi();
  const reason = store.loopGuards.get(channelId);
  return (
    <div class="loop-guard-slot" role="status">
      {reason !== undefined && (
        <p class="loop-guard">
          <strong>Agents are paused here</strong>: {LOOP_GUARD_REASONS[reason] ?? reason}. They answer again when a person
          writes.
        </p>
      )}
    </div>
  );
}

function PendingList({ pending }: { pending: Outgoing[] }) {
  const { store } = useUi();
  if (!pending.length) return null;
  return (
    <ol class="messages pending" aria-label="Messages being sent">
      {pending.map((p) => (
        <li key={p.key} class={`msg mine pending ${p.state}`}>
          <div class="msg-head">
            <span class="author">{store.userName(store.me.id)}</span>
            <span class="muted">{p.state === 'sending' ? 'sending…' : p.state === 'waiting' ? 'waiting to send' : 'not sent'}</span>
          </div>
          <div class="msg-text">
            <Text text={p.text} ctx={textContext(store)} />
          </div>
          {p.error && (
            <div class="msg-foot">
              <span class={`pending-state${p.state === 'failed' ? ' error' : ''}`} role={p.state === 'failed' ? 'alert' : 'status'}>
                {p.error}
              </span>
              {p.state === 'waiting' && store.conn === 'open' && (
                <button class="link" onClick={() => void store.retry(p.key)}>
                  Send now
                </button>
              )}
              {p.state === 'failed' && (
                <button class="link" onClick={() => store.reclaim(p.key)}>
                  Back to the box
                </button>
              )}
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

function TypingLine({ channelId, threadId }: { channelId: number; threadId?: MessageId }) {
  const { store } = useUi();
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

// ------------------------------------------------------------------ threads

export function ThreadPanel() {
  const { store } = useUi();
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
        <span class="spacer" />
        <button class="icon" aria-label="Close thread" title="Close thread (Esc)" onClick={() => store.closeThread()}>
          ×
        </button>
      </div>
      <div class="scroller">
        {root && (
          <ol class="messages root" aria-label="Thread root">
            <MessageItem message={root} inThread />
          </ol>
        )}
        <p class="muted replies-count">
          {thread.loading ? 'Loading…' : `${thread.replies.length} ${thread.replies.length === 1 ? 'reply' : 'replies'}`}
        </p>
        <MessageList items={thread.replies} label="Replies" inThread />
        <PendingList pending={pending} />
        <div ref={end} />
      </div>
      <TypingLine channelId={thread.channelId} threadId={thread.rootId} />
      <Composer channelId={thread.channelId} threadId={thread.rootId} label="Reply in thread" id="thread-input" autofocus />
    </aside>
  );
}
