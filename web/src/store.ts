// The chat state of one signed-in user, kept live by @chorus/client: the HTTP API for
// reads and writes, one realtime connection for everything that changes. Components
// read it and call its methods; it tells them to re-render through `subscribe`.
import {
  ChorusError,
  ChorusHttp,
  ChorusRealtime,
  type ChannelId,
  type ChannelView,
  type ChorusEvent,
  type ConnectionState,
  type Member,
  type Message,
  type MessageId,
  type User,
  type UserId,
  type WorkspaceMembership,
} from '@chorus/client';
import { findMessage, reduce, type LiveState, type MessageList, type Pending, type Thread, type Typing, type Update } from './events';

export type { MessageList, Pending, Thread } from './events';

const PAGE = 50;
/** How often a typist tells the others (the server expires the signal after ~5 s). */
const TYPING_EVERY_MS = 2_500;

export interface Notice {
  id: number;
  text: string;
}

export class ChatStore {
  readonly http: ChorusHttp;
  readonly live: ChorusRealtime;
  me: User;
  workspaces: WorkspaceMembership[] = [];
  workspaceId: number | undefined;
  channels = new Map<ChannelId, ChannelView>();
  members = new Map<UserId, Member>();
  online = new Map<UserId, boolean>();
  lists = new Map<ChannelId, MessageList>();
  pending: Pending[] = [];
  current: ChannelId | undefined;
  thread: Thread | undefined;
  typing: Typing = new Map();
  conn: ConnectionState = 'connecting';
  /** Set when the connection was lost; cleared by the next hello. */
  private away = false;
  /** From a reconnect's hello until its catch-up is reported: count what arrives. */
  private catchingUp = false;
  private caughtUp = 0;
  notices: Notice[] = [];
  error: string | undefined;

  private listeners = new Set<() => void>();
  private typingSent = new Map<string, number>();
  private typingTimer: ReturnType<typeof setTimeout> | undefined;
  private noticeId = 0;
  private readTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(base: string, token: string, me: User) {
    this.me = me;
    this.http = new ChorusHttp(base, { token });
    this.live = new ChorusRealtime(base, { token, http: this.http });
    this.live.on('state', (s) => this.onState(s));
    this.live.on('event', (ev) => this.onEvent(ev));
    this.live.on('hello', () => this.onHello());
    this.live.on('gap', ({ scope }) => this.onGap(scope));
    this.live.on('error', (err) => {
      if (err.code === 'unauthorized') this.fail('Your session expired: sign in again.');
    });
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => void this.listeners.delete(fn);
  }

  private changed(): void {
    for (const fn of this.listeners) fn();
  }

  // ---------------------------------------------------------------- start and stop

  /** Loads the workspaces and opens the realtime connection. */
  async start(): Promise<void> {
    try {
      this.workspaces = await this.http.listWorkspaces();
    } catch (err) {
      this.report(err);
    }
    const remembered = Number(localStorage.getItem('chorus.workspace'));
    const ws = this.workspaces.find((w) => w.id === remembered) ?? this.workspaces[0];
    if (ws) await this.selectWorkspace(ws.id);
    this.changed();
    await this.live.connect();
  }

  stop(): void {
    this.live.close();
    this.listeners.clear();
  }

  async selectWorkspace(id: number): Promise<void> {
    this.workspaceId = id;
    localStorage.setItem('chorus.workspace', String(id));
    this.current = undefined;
    this.thread = undefined;
    await Promise.all([this.loadChannels(), this.loadMembers()]);
    const remembered = Number(localStorage.getItem(`chorus.channel.${id}`));
    const first =
      this.channels.get(remembered) ?? [...this.channels.values()].find((c) => c.member && c.kind !== 'dm');
    if (first) await this.selectChannel(first.id);
    this.changed();
  }

  private async loadChannels(): Promise<void> {
    if (this.workspaceId === undefined) return;
    const list = await this.http.listChannels(this.workspaceId);
    this.channels = new Map(list.map((c) => [c.id, c]));
    this.changed();
  }

  async loadMembers(): Promise<void> {
    if (this.workspaceId === undefined) return;
    const list = await this.http.listWorkspaceMembers(this.workspaceId);
    this.members = new Map(list.map((m) => [m.user.id, m]));
    for (const m of list) if (m.presence) this.online.set(m.user.id, m.presence.online);
    this.online.set(this.me.id, true);
    this.changed();
  }

  // ---------------------------------------------------------------- reading

  userName(id: UserId): string {
    if (id === this.me.id) return this.me.display_name || this.me.name;
    const u = this.members.get(id)?.user;
    return u ? u.display_name || u.name : `user ${id}`;
  }

  /** A channel's label: `general`, or the other participants of a DM. */
  channelLabel(c: ChannelView): string {
    if (c.kind !== 'dm') return c.name;
    const others = (c.member_ids ?? []).filter((id) => id !== this.me.id);
    return others.length ? others.map((id) => this.userName(id)).join(', ') : 'Just you';
  }

  /** The other participant of a one-to-one DM. */
  dmPeer(c: ChannelView): UserId | undefined {
    if (c.kind !== 'dm') return undefined;
    const others = (c.member_ids ?? []).filter((id) => id !== this.me.id);
    return others.length === 1 ? others[0] : undefined;
  }

  /** Who is typing in a channel (or a thread of it), other than me. */
  typists(channelId: ChannelId, threadId?: MessageId): UserId[] {
    const now = Date.now();
    const users = this.typing.get(channelId)?.get(threadId ?? 0);
    return users ? [...users].filter(([id, until]) => until > now && id !== this.me.id).map(([id]) => id) : [];
  }

  list(channelId: ChannelId): MessageList | undefined {
    return this.lists.get(channelId);
  }

  // ---------------------------------------------------------------- navigation

  async selectChannel(id: ChannelId): Promise<void> {
    if (this.current !== id) this.thread = undefined;
    this.current = id;
    if (this.workspaceId !== undefined) localStorage.setItem(`chorus.channel.${this.workspaceId}`, String(id));
    const channel = this.channels.get(id);
    if (channel && !channel.member && channel.kind === 'public') {
      await this.http.joinChannel(id);
      this.channels.set(id, { ...channel, member: true });
    }
    this.changed();
    if (!this.lists.has(id)) await this.loadLatest(id);
    this.markReadSoon();
  }

  private async loadLatest(id: ChannelId): Promise<void> {
    const list: MessageList = { items: [], complete: false, loading: true };
    this.lists.set(id, list);
    this.changed();
    try {
      const page = await this.http.listMessages(id, { limit: PAGE });
      this.merge(list, page);
      list.complete = page.length < PAGE;
      this.live.noteMessages(id, page);
    } catch (err) {
      this.lists.delete(id);
      this.report(err);
    } finally {
      list.loading = false;
      this.changed();
    }
  }

  /** Loads the page before the oldest loaded message; resolves false when there is none. */
  async loadOlder(id: ChannelId): Promise<boolean> {
    const list = this.lists.get(id);
    if (!list || list.loading || list.complete) return false;
    const oldest = list.items[0];
    list.loading = true;
    this.changed();
    try {
      const page = await this.http.listMessages(id, { limit: PAGE, ...(oldest && { before: oldest.id }) });
      this.merge(list, page);
      list.complete = page.length < PAGE;
      return page.length > 0;
    } catch (err) {
      this.report(err);
      return false;
    } finally {
      list.loading = false;
      this.changed();
    }
  }

  async openThread(channelId: ChannelId, rootId: MessageId): Promise<void> {
    const thread: Thread = { channelId, rootId, replies: [], loading: true };
    this.thread = thread;
    this.changed();
    try {
      const replies = await this.http.listMessages(channelId, { thread_id: rootId, limit: 200 });
      if (this.thread !== thread) return;
      for (const m of replies) insertSorted(thread.replies, m);
    } catch (err) {
      this.report(err);
    } finally {
      thread.loading = false;
      this.changed();
    }
  }

  closeThread(): void {
    this.thread = undefined;
    this.changed();
  }

  findMessage(id: MessageId): Message | undefined {
    return findMessage(this, id);
  }

  // ---------------------------------------------------------------- writing

  async send(channelId: ChannelId, text: string, threadId?: MessageId): Promise<void> {
    const trimmed = text.trim();
    if (!trimmed) return;
    const item: Pending = { key: crypto.getRandomValues(new Uint32Array(2)).join('-'), channelId, text: trimmed };
    if (threadId !== undefined) item.threadId = threadId;
    this.pending.push(item);
    this.typingSent.delete(`${channelId}:${threadId ?? 0}`);
    this.changed();
    await this.deliver(item);
  }

  async retry(key: string): Promise<void> {
    const item = this.pending.find((p) => p.key === key);
    if (!item) return;
    delete item.failed;
    this.changed();
    await this.deliver(item);
  }

  discard(key: string): void {
    this.pending = this.pending.filter((p) => p.key !== key);
    this.changed();
  }

  private async deliver(item: Pending): Promise<void> {
    try {
      const { message } = await this.http.sendMessage(
        item.channelId,
        { text: item.text, ...(item.threadId !== undefined && { thread_id: item.threadId }) },
        { idempotencyKey: item.key, retries: 4 },
      );
      this.pending = this.pending.filter((p) => p !== item);
      this.apply(message);
      this.markReadSoon();
    } catch (err) {
      item.failed = err instanceof ChorusError ? err.message : String(err);
    }
    this.changed();
  }

  async toggleReaction(message: Message, emoji: string): Promise<void> {
    const mine = message.reactions?.find((r) => r.emoji === emoji)?.user_ids.includes(this.me.id);
    try {
      const updated = mine
        ? await this.http.removeReaction(message.id, emoji)
        : await this.http.addReaction(message.id, emoji);
      this.apply(updated);
    } catch (err) {
      this.report(err);
    }
  }

  async openDm(userId: UserId): Promise<void> {
    if (this.workspaceId === undefined) return;
    try {
      const { channel } = await this.http.openDm(this.workspaceId, [userId]);
      const known = this.channels.get(channel.id);
      this.channels.set(channel.id, { ...channel, unread: known?.unread ?? channel.unread });
      await this.selectChannel(channel.id);
    } catch (err) {
      this.report(err);
    }
  }

  /** Tells the others I am typing, at most every few seconds. */
  typed(channelId: ChannelId, threadId?: MessageId): void {
    const key = `${channelId}:${threadId ?? 0}`;
    const now = Date.now();
    if (now - (this.typingSent.get(key) ?? 0) < TYPING_EVERY_MS || this.conn !== 'open') return;
    this.typingSent.set(key, now);
    this.live.typing(channelId, threadId).catch(() => {
      // best effort: a missed typing signal is harmless
    });
  }

  /** Moves my read cursor to the newest message of the open channel, when I can see it. */
  markReadSoon(): void {
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => void this.markRead(), 150);
  }

  private async markRead(): Promise<void> {
    const id = this.current;
    if (id === undefined || document.visibilityState !== 'visible') return;
    const channel = this.channels.get(id);
    const last = this.lists.get(id)?.items.at(-1);
    if (!channel || !last || !channel.member) return;
    if ((channel.last_read ?? 0) >= last.id && channel.unread === 0) return;
    try {
      const state = await this.http.markRead(id, last.id);
      const now = this.channels.get(id);
      if (now) this.channels.set(id, { ...now, unread: state.unread, unread_mentions: state.unread_mentions, last_read: state.message_id });
      this.changed();
    } catch {
      // the badge stays; the next view retries
    }
  }

  dismissNotice(id: number): void {
    this.notices = this.notices.filter((n) => n.id !== id);
    this.changed();
  }

  private notify(text: string): void {
    const notice = { id: ++this.noticeId, text };
    this.notices = [...this.notices.slice(-2), notice];
    setTimeout(() => this.dismissNotice(notice.id), 8_000);
    this.changed();
  }

  private report(err: unknown): void {
    this.notify(err instanceof ChorusError ? `${err.code}: ${err.message}` : String(err));
  }

  private fail(text: string): void {
    this.error = text;
    this.changed();
  }

  // ---------------------------------------------------------------- live events

  private onState(s: ConnectionState): void {
    this.conn = s;
    if (s === 'reconnecting') {
      this.away = true;
      this.caughtUp = 0;
      // Nobody can be seen typing while we cannot hear them.
      this.typing.clear();
    }
    this.changed();
  }

  /** Every hello after the first: counts and presence may have moved while away. */
  private onHello(): void {
    if (!this.away) return;
    this.away = false;
    this.catchingUp = true;
    void Promise.all([this.loadChannels(), this.loadMembers()]).then(() => {
      this.markReadSoon();
      // The resumed (or fetched) events arrive right after hello; report them after.
      setTimeout(() => {
        this.catchingUp = false;
        if (this.caughtUp > 0) {
          this.notify(`Reconnected: ${this.caughtUp} new message${this.caughtUp === 1 ? '' : 's'} while you were away.`);
        } else {
          this.notify('Reconnected.');
        }
        this.caughtUp = 0;
      }, 800);
    });
  }

  /** Events of a scope were lost for good: reload that channel. */
  private onGap(scope: string): void {
    const m = /^channel:(\d+)$/.exec(scope);
    if (!m) return;
    const id = Number(m[1]);
    this.lists.delete(id);
    if (this.current === id) void this.loadLatest(id);
  }

  /** An event through its reducer (events.ts); types the UI ignores change nothing. */
  private onEvent(ev: ChorusEvent): void {
    const update = reduce(this.liveState(), ev, { now: Date.now(), visible: document.visibilityState === 'visible' });
    if (!update) return;
    this.commit(update);
    this.changed();
  }

  private liveState(): LiveState {
    return {
      me: this.me.id,
      workspaceId: this.workspaceId,
      workspaces: this.workspaces,
      channels: this.channels,
      members: this.members,
      online: this.online,
      lists: this.lists,
      thread: this.thread,
      typing: this.typing,
      pending: this.pending,
      current: this.current,
      catchingUp: this.catchingUp,
      caughtUp: this.caughtUp,
    };
  }

  private commit(u: Update): void {
    if (u.channels) this.channels = u.channels;
    if (u.members) this.members = u.members;
    if (u.online) this.online = u.online;
    if (u.workspaces) this.workspaces = u.workspaces;
    if (u.typing) this.typing = u.typing;
    if (u.pending) this.pending = u.pending;
    if (u.caughtUp !== undefined) this.caughtUp = u.caughtUp;
    for (const m of u.put ?? []) this.apply(m);
    for (const effect of u.effects ?? []) {
      switch (effect.do) {
        case 'markRead':
          this.markReadSoon();
          break;
        case 'expireTyping':
          this.scheduleTypingExpiry();
          break;
        case 'selectWorkspace':
          void this.selectWorkspace(effect.workspaceId);
          break;
        default:
          effect satisfies never;
      }
    }
  }

  /** Re-renders when the next typing signal expires. */
  private scheduleTypingExpiry(): void {
    clearTimeout(this.typingTimer);
    let next = Infinity;
    for (const byThread of this.typing.values())
      for (const users of byThread.values()) for (const until of users.values()) next = Math.min(next, until);
    if (next === Infinity) return;
    this.typingTimer = setTimeout(() => {
      const now = Date.now();
      for (const byThread of this.typing.values())
        for (const users of byThread.values()) for (const [id, until] of users) if (until <= now) users.delete(id);
      this.changed();
      this.scheduleTypingExpiry();
    }, Math.max(50, next - Date.now() + 10));
  }

  /** Puts a message (new or changed) wherever it is shown. */
  private apply(m: Message): void {
    if (m.thread_id === undefined) {
      const list = this.lists.get(m.channel_id);
      if (list) this.merge(list, [m]);
    } else if (this.thread?.rootId === m.thread_id) {
      insertSorted(this.thread.replies, m);
    }
  }

  private merge(list: MessageList, messages: Message[]): void {
    for (const m of messages) insertSorted(list.items, m);
  }
}

/** Inserts by id (ids are time-ordered), replacing an existing copy. */
function insertSorted(items: Message[], m: Message): void {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (items[mid]!.id < m.id) lo = mid + 1;
    else hi = mid;
  }
  if (items[lo]?.id === m.id) items[lo] = m;
  else items.splice(lo, 0, m);
}
