// The chat state of one signed-in user, kept live by @chorus/client: the HTTP API for
// reads and writes, one realtime connection for everything that changes. Components
// read it and call its methods; it tells them to re-render through `subscribe`.
import {
  ChorusError,
  ChorusHttp,
  ChorusRealtime,
  isEvent,
  type ChannelId,
  type ChannelKind,
  type ChannelView,
  type ChorusEvent,
  type Command,
  type CommandResultData,
  type ConnectionState,
  type Member,
  type Message,
  type MessageId,
  type Pin,
  type Policy,
  type Role,
  type User,
  type UserId,
  type UserProfile,
  type NewSignInLink,
  type UserWithToken,
  type WorkspaceMembership,
} from '@chorus/client';
import {
  findMessage,
  reduce,
  withoutThreadMention,
  type LiveState,
  type MessageList,
  type Outgoing,
  type Thread,
  type ThreadMentions,
  type Typing,
  type Update,
} from './events';
import { convKey, Persisted } from './persist';
import { endedBecause, endedBy, type Revoked } from './session';

export type { MessageList, Outgoing, Thread } from './events';
export { convKey } from './persist';

const PAGE = 50;
/** How often a typist tells the others (the server expires the signal after ~5 s). */
const TYPING_EVERY_MS = 2_500;
/** While connected, a send that failed for a passing reason is tried again after this. */
const RESEND_AFTER_MS = 3_000;

export interface Notice {
  id: number;
  text: string;
}

/** A person (or agent) one may add to a workspace. */
export interface Candidate {
  id: UserId;
  name: string;
  display_name: string;
  kind: UserProfile['kind'];
}

const encoder = new TextEncoder();

export class ChatStore {
  readonly http: ChorusHttp;
  readonly live: ChorusRealtime;
  me: User;
  workspaces: WorkspaceMembership[] = [];
  workspaceId: number | undefined;
  channels = new Map<ChannelId, ChannelView>();
  members = new Map<UserId, Member>();
  online = new Map<UserId, boolean>();
  statuses = new Map<UserId, string>();
  lists = new Map<ChannelId, MessageList>();
  pending: Outgoing[] = [];
  pins = new Map<ChannelId, Pin[]>();
  threadMentions: ThreadMentions;
  current: ChannelId | undefined;
  thread: Thread | undefined;
  typing: Typing = new Map();
  /** Channels whose agents the loop guard holds, with its reason (`channel.loop_guard`). */
  loopGuards = new Map<ChannelId, string>();
  /** Per channel, the answer to my last slash command there (shown above its box). */
  commandAnswers = new Map<ChannelId, CommandResultData>();
  /** The open workspace's registered slash commands (the composer offers them). */
  commands: Command[] = [];
  conn: ConnectionState = 'connecting';
  /** Where the "new messages" line goes in each channel: my read cursor when I opened it. */
  newSince = new Map<ChannelId, MessageId>();
  /** The server's message size limit, once a refusal told it. */
  maxMessageBytes: number | undefined;
  /** Per conversation (`convKey`): why the last send from its box did not go. */
  composerErrors = new Map<string, string>();
  /** The message being edited, and the box it is edited in. */
  editing: { key: string; id: MessageId } | undefined;
  /** Set when the connection was lost; cleared by the next hello. */
  private away = false;
  /** From a reconnect's hello until its catch-up is reported: count what arrives. */
  private catchingUp = false;
  private caughtUp = 0;
  notices: Notice[] = [];
  error: string | undefined;

  private readonly persisted: Persisted;
  private drafts: Map<string, string>;
  /** Bumped when the store (not the box) changes a draft: the box takes it up. */
  private draftRevisions = new Map<string, number>();
  private draftTimer: ReturnType<typeof setTimeout> | undefined;
  private listeners = new Set<() => void>();
  private typingSent = new Map<string, number>();
  private typingTimer: ReturnType<typeof setTimeout> | undefined;
  private noticeId = 0;
  private readTimer: ReturnType<typeof setTimeout> | undefined;
  private resendTimer: ReturnType<typeof setTimeout> | undefined;
  private flushing = false;
  /** Streaming messages being loaded again after a missed delta. */
  private refetching = new Set<MessageId>();
  private readonly onPageHide = () => this.saveDrafts();
  /** The server ended the session (see `end`). */
  private ended = false;
  /** The last `credentials.revoked` heard, until another event comes: why the socket
   * closes, if it closes with 3502 right after. */
  private revoked: Revoked | undefined;

  /** `onEnded`: the server ended the session (its credentials revoked or expired, the
   * account deactivated), with what to tell the user. */
  constructor(
    base: string,
    token: string,
    me: User,
    private readonly onEnded?: (reason: string) => void,
  ) {
    this.me = me;
    this.http = new ChorusHttp(base, { token });
    this.live = new ChorusRealtime(base, { token, http: this.http });
    this.persisted = new Persisted(localStorage, me.id);
    this.drafts = this.persisted.drafts();
    this.pending = this.persisted.outbox();
    this.threadMentions = this.persisted.threadMentions();
    if (me.status_text) this.statuses.set(me.id, me.status_text);
    this.live.on('state', (s) => this.onState(s));
    this.live.on('event', (ev) => {
      this.onCredentials(ev);
      this.onEvent(ev);
    });
    this.live.on('hello', () => this.onHello());
    this.live.on('gap', ({ scope }) => this.onGap(scope));
    // The close code says the credentials are no longer valid (the SDK then finishes
    // with `unauthorized`; `disconnect` comes first, and ends the session here).
    this.live.on('disconnect', ({ code }) => {
      const reason = endedBy(code, this.revoked);
      if (reason) this.end(reason);
    });
    this.live.on('error', (err) => {
      if (err.code === 'unauthorized') this.end(endedBecause(this.revoked?.reason));
    });
    window.addEventListener('pagehide', this.onPageHide);
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

  /** Signing out on purpose (not a lost session): what the user left in this browser —
   * drafts, messages not sent, thread mentions not seen — is removed, and nothing is
   * written again (not even the drafts `stop` saves). */
  forget(): void {
    clearTimeout(this.draftTimer);
    clearTimeout(this.resendTimer);
    this.persisted.clear();
  }

  stop(): void {
    this.saveDrafts();
    clearTimeout(this.resendTimer);
    window.removeEventListener('pagehide', this.onPageHide);
    this.live.close();
    this.listeners.clear();
  }

  get isServerAdmin(): boolean {
    return this.me.is_admin;
  }

  /** My role in the open workspace (a server admin acts as an owner). */
  get role(): Role | undefined {
    if (this.me.is_admin) return 'owner';
    return this.workspaces.find((w) => w.id === this.workspaceId)?.role;
  }

  /** Whether I manage the open workspace (add members, change roles). */
  get manages(): boolean {
    return this.role === 'owner' || this.role === 'admin';
  }

  async selectWorkspace(id: number): Promise<void> {
    this.workspaceId = id;
    localStorage.setItem('chorus.workspace', String(id));
    this.current = undefined;
    this.thread = undefined;
    this.pins.clear();
    this.commands = [];
    await Promise.all([this.loadChannels(), this.loadMembers(), this.loadCommands()]);
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
    // A loop guard that held before this load is only on the channel: no event comes.
    this.loopGuards = new Map(
      list.flatMap((c) => (c.loop_guard?.state === 'held' ? [[c.id, c.loop_guard.reason] as const] : [])),
    );
    this.changed();
  }

  /** The workspace's registered commands; none when they cannot be read. */
  private async loadCommands(): Promise<void> {
    if (this.workspaceId === undefined) return;
    try {
      this.commands = await this.http.listCommands(this.workspaceId);
    } catch {
      this.commands = [];
    }
  }

  async loadMembers(): Promise<void> {
    if (this.workspaceId === undefined) return;
    const list = await this.http.listWorkspaceMembers(this.workspaceId);
    this.members = new Map(list.map((m) => [m.user.id, m]));
    for (const m of list) {
      if (!m.presence) continue;
      this.online.set(m.user.id, m.presence.online);
      if (m.presence.status_text) this.statuses.set(m.user.id, m.presence.status_text);
      else this.statuses.delete(m.user.id);
    }
    this.online.set(this.me.id, true);
    this.changed();
  }

  // ---------------------------------------------------------------- reading

  userName(id: UserId): string {
    if (id === this.me.id) return this.me.display_name || this.me.name;
    const u = this.members.get(id)?.user;
    return u ? u.display_name || u.name : `user ${id}`;
  }

  user(id: UserId): UserProfile | undefined {
    return id === this.me.id ? this.me : this.members.get(id)?.user;
  }

  isAgent(id: UserId): boolean {
    return this.user(id)?.kind === 'agent';
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

  /** Mentions of me not read yet in a channel: top-level ones (the server's count) and
   * replies in its threads. */
  mentionCount(c: ChannelView): number {
    return (c.member ? (c.unread_mentions ?? 0) : 0) + (this.threadMentions.get(c.id)?.size ?? 0);
  }

  /** Unseen mentions in one thread. */
  threadMentionCount(channelId: ChannelId, rootId: MessageId): number {
    let n = 0;
    for (const root of this.threadMentions.get(channelId)?.values() ?? []) if (root === rootId) n++;
    return n;
  }

  /** Unread messages over every channel of the open workspace (the tab's title). */
  unreadTotal(): number {
    let n = 0;
    for (const c of this.channels.values()) n += c.member ? c.unread : 0;
    for (const ids of this.threadMentions.values()) n += ids.size;
    return n;
  }

  // ---------------------------------------------------------------- drafts

  draft(key: string): string {
    return this.drafts.get(key) ?? '';
  }

  setDraft(key: string, text: string): void {
    if (text) this.drafts.set(key, text);
    else this.drafts.delete(key);
    clearTimeout(this.draftTimer);
    this.draftTimer = setTimeout(() => this.saveDrafts(), 250);
  }

  /** Puts text in a conversation's box from outside it (a refused send coming back). */
  putDraft(key: string, text: string): void {
    this.setDraft(key, text);
    this.draftRevisions.set(key, (this.draftRevisions.get(key) ?? 0) + 1);
    this.changed();
  }

  draftRevision(key: string): number {
    return this.draftRevisions.get(key) ?? 0;
  }

  startEdit(key: string, id: MessageId): void {
    this.editing = { key, id };
    this.changed();
  }

  stopEdit(): void {
    this.editing = undefined;
    this.changed();
  }

  private saveDrafts(): void {
    clearTimeout(this.draftTimer);
    this.persisted.saveDrafts(this.drafts);
  }

  clearComposerError(key: string): void {
    if (this.composerErrors.delete(key)) this.changed();
  }

  // ---------------------------------------------------------------- navigation

  async selectChannel(id: ChannelId): Promise<void> {
    if (this.current !== id) {
      this.thread = undefined;
      const c = this.channels.get(id);
      // The "new messages" line: after what I had read when I came in.
      if (c?.member && c.unread > 0 && c.last_read !== undefined) this.newSince.set(id, c.last_read);
      else this.newSince.delete(id);
    }
    this.current = id;
    if (this.workspaceId !== undefined) localStorage.setItem(`chorus.channel.${this.workspaceId}`, String(id));
    const channel = this.channels.get(id);
    if (channel && !channel.member && channel.kind === 'public') {
      try {
        await this.http.joinChannel(id);
        this.channels.set(id, { ...(this.channels.get(id) ?? channel), member: true });
      } catch (err) {
        this.report(err);
      }
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
    this.seeThreadMentions(channelId, rootId);
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

  private seeThreadMentions(channelId: ChannelId, rootId: MessageId): void {
    let mentions: ThreadMentions | undefined;
    for (const [reply, root] of this.threadMentions.get(channelId) ?? []) {
      if (root === rootId) mentions = withoutThreadMention(mentions ?? this.threadMentions, channelId, reply);
    }
    if (mentions) {
      this.threadMentions = mentions;
      this.persisted.saveThreadMentions(mentions);
    }
  }

  closeThread(): void {
    this.thread = undefined;
    this.changed();
  }

  findMessage(id: MessageId): Message | undefined {
    return findMessage(this, id);
  }

  /** My newest message, not deleted, in a conversation (what ↑ edits). */
  lastOwnMessage(channelId: ChannelId, threadId?: MessageId): Message | undefined {
    const items = threadId === undefined ? this.lists.get(channelId)?.items : this.thread?.rootId === threadId ? this.thread.replies : undefined;
    return items?.findLast((m) => m.author_id === this.me.id && !m.deleted);
  }

  // ---------------------------------------------------------------- writing

  /** Sends the conversation's box; `false` (with the reason in `composerErrors`) when it
   * cannot go as it is: the text stays in the box. */
  send(channelId: ChannelId, text: string, threadId?: MessageId): boolean {
    const key = convKey(channelId, threadId);
    const trimmed = text.trim();
    if (!trimmed) return false;
    const bytes = encoder.encode(trimmed).length;
    if (this.maxMessageBytes !== undefined && bytes > this.maxMessageBytes) {
      this.composerErrors.set(key, tooLong(bytes, this.maxMessageBytes));
      this.changed();
      return false;
    }
    if (isCommand(trimmed)) {
      this.composerErrors.delete(key);
      this.setDraft(key, '');
      this.changed();
      void this.runCommand(channelId, trimmed, threadId);
      return true;
    }
    // `//…` posts `/…`: the client posts its text as given (a leading slash included).
    const posted = trimmed.startsWith('//') ? trimmed.slice(1) : trimmed;
    const item: Outgoing = { key: newKey(), channelId, text: posted, state: 'sending' };
    if (threadId !== undefined) item.threadId = threadId;
    this.pending.push(item);
    this.saveOutbox();
    this.composerErrors.delete(key);
    this.setDraft(key, '');
    this.typingSent.delete(`${channelId}:${threadId ?? 0}`);
    this.changed();
    void this.deliver(item);
    return true;
  }

  /** Runs a slash command typed in a box; its answer (or refusal) is shown above the box
   * (`command.result` brings it too, to every tab). A refused command goes back in its
   * box unless something else was typed there since. */
  private async runCommand(channelId: ChannelId, text: string, threadId?: MessageId): Promise<void> {
    try {
      const result = await this.http.runCommand(channelId, text, threadId !== undefined ? { threadId } : {});
      this.commandAnswers.set(channelId, result);
      if (result.message) this.apply(result.message);
      if (text.startsWith('/invite') || text.startsWith('/leave')) void this.loadChannels().catch(() => {});
    } catch (err) {
      const e = err instanceof ChorusError ? err : new ChorusError(0, 'network', String(err));
      const command = /^\/([a-z0-9_-]+)/.exec(text)?.[1] ?? '';
      this.commandAnswers.set(channelId, { channel_id: channelId, command, ok: false, text: e.message, code: e.code });
      const box = convKey(channelId, threadId);
      if (!this.draft(box)) this.putDraft(box, text);
    }
    this.changed();
  }

  /** Forgets the answer shown above a channel's box. */
  clearCommandAnswer(channelId: ChannelId): void {
    if (this.commandAnswers.delete(channelId)) this.changed();
  }

  /** Sends a message that is waiting now, instead of at the next reconnect. */
  async retry(key: string): Promise<void> {
    const item = this.pending.find((p) => p.key === key);
    if (!item || item.state === 'sending') return;
    await this.deliver(item);
  }

  discard(key: string): void {
    this.pending = this.pending.filter((p) => p.key !== key);
    this.saveOutbox();
    this.changed();
  }

  /** Puts a message that was not sent back in its box (replacing what is there only when
   * that is empty) and drops it from the outbox. */
  reclaim(key: string): void {
    const item = this.pending.find((p) => p.key === key);
    if (!item) return;
    const box = convKey(item.channelId, item.threadId);
    const draft = this.draft(box);
    this.putDraft(box, draft ? `${draft}\n${item.text}` : item.text);
    this.discard(key);
  }

  private saveOutbox(): void {
    this.persisted.saveOutbox(this.pending);
  }

  private async deliver(item: Outgoing): Promise<void> {
    item.state = 'sending';
    delete item.error;
    this.changed();
    try {
      const { message } = await this.http.sendMessage(
        item.channelId,
        { text: item.text, ...(item.threadId !== undefined && { thread_id: item.threadId }) },
        // While disconnected, one attempt: the reconnect sends it again.
        { idempotencyKey: item.key, retries: this.conn === 'open' ? 3 : 0 },
      );
      this.pending = this.pending.filter((p) => p.key !== item.key);
      this.apply(message);
      this.markReadSoon();
    } catch (err) {
      if (!this.pending.includes(item)) return; // discarded meanwhile
      const e = err instanceof ChorusError ? err : new ChorusError(0, 'network', String(err));
      if (e.retryable) {
        item.state = 'waiting';
        item.error =
          e.code === 'rate_limited'
            ? 'Not sent yet: too many messages at once. It is sent again in a moment.'
            : 'Not sent yet: the server cannot be reached. It is sent by itself when the connection is back.';
        this.scheduleResend();
      } else if (e.code === 'payload_too_large') {
        const limit = /limit is (\d+)/.exec(e.message);
        if (limit) this.maxMessageBytes = Number(limit[1]);
        const box = convKey(item.channelId, item.threadId);
        const bytes = encoder.encode(item.text).length;
        this.composerErrors.set(box, this.maxMessageBytes ? tooLong(bytes, this.maxMessageBytes) : `Not sent: ${e.message}.`);
        // Back in its box to shorten (unless something else was typed there since).
        if (!this.draft(box)) {
          this.pending = this.pending.filter((p) => p.key !== item.key);
          this.putDraft(box, item.text);
        } else {
          item.state = 'failed';
          item.error = `Not sent: too long (${e.message}).`;
        }
      } else {
        item.state = 'failed';
        item.error = `Not sent: ${refusal(e)}`;
      }
    }
    this.saveOutbox();
    this.changed();
  }

  /** Sends every waiting message again, oldest first, one at a time (so they keep
   * their order). */
  private async flushOutbox(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      for (;;) {
        const next = this.pending.find((p) => p.state === 'waiting');
        if (!next || this.conn !== 'open') return;
        await this.deliver(next);
        if (next.state === 'waiting') return; // still failing: the next reconnect or timer
      }
    } finally {
      this.flushing = false;
    }
  }

  private scheduleResend(): void {
    if (this.conn !== 'open') return; // the reconnect does it
    clearTimeout(this.resendTimer);
    this.resendTimer = setTimeout(() => void this.flushOutbox(), RESEND_AFTER_MS);
  }

  async editMessage(message: Message, text: string): Promise<boolean> {
    const trimmed = text.trim();
    if (!trimmed || trimmed === message.text) return true;
    try {
      this.apply(await this.http.editMessage(message.id, trimmed));
      this.changed();
      return true;
    } catch (err) {
      this.report(err);
      return false;
    }
  }

  async deleteMessage(message: Message): Promise<void> {
    try {
      this.apply(await this.http.deleteMessage(message.id));
      this.changed();
    } catch (err) {
      this.report(err);
    }
  }

  async togglePin(message: Message): Promise<void> {
    try {
      if (message.pinned) {
        await this.http.unpinMessage(message.id);
        this.apply({ ...message, pinned: false });
        const pins = this.pins.get(message.channel_id);
        if (pins) this.pins.set(message.channel_id, pins.filter((p) => p.message.id !== message.id));
      } else {
        const pin = await this.http.pinMessage(message.id);
        this.apply({ ...message, pinned: true });
        const pins = this.pins.get(message.channel_id);
        if (pins) this.pins.set(message.channel_id, [pin, ...pins.filter((p) => p.message.id !== message.id)]);
      }
      this.changed();
    } catch (err) {
      this.report(err);
    }
  }

  async loadPins(channelId: ChannelId): Promise<void> {
    try {
      this.pins.set(channelId, await this.http.listPins(channelId));
      this.changed();
    } catch (err) {
      this.report(err);
    }
  }

  async toggleReaction(message: Message, emoji: string): Promise<void> {
    const mine = message.reactions?.find((r) => r.emoji === emoji)?.user_ids.includes(this.me.id);
    try {
      const updated = mine
        ? await this.http.removeReaction(message.id, emoji)
        : await this.http.addReaction(message.id, emoji);
      this.apply(updated);
      this.changed();
    } catch (err) {
      this.report(err);
    }
  }

  /** Opens (creating when needed) the DM with `userIds`: one person, or a group. */
  async openDm(userIds: UserId[]): Promise<void> {
    if (this.workspaceId === undefined) return;
    try {
      const { channel } = await this.http.openDm(this.workspaceId, userIds);
      const known = this.channels.get(channel.id);
      this.channels.set(channel.id, { ...channel, unread: known?.unread ?? channel.unread });
      await this.selectChannel(channel.id);
    } catch (err) {
      this.report(err);
    }
  }

  async setStatus(text: string): Promise<boolean> {
    try {
      const p = await this.http.setStatus(text);
      this.me = { ...this.me, status_text: p.status_text };
      if (p.status_text) this.statuses.set(this.me.id, p.status_text);
      else this.statuses.delete(this.me.id);
      this.changed();
      return true;
    } catch (err) {
      this.report(err);
      return false;
    }
  }

  // ---------------------------------------------------------------- workspaces, channels, members

  /** Creates a workspace and opens it; the error message when refused. */
  async createWorkspace(name: string): Promise<string | undefined> {
    try {
      const ws = await this.http.createWorkspace(name);
      if (!this.workspaces.some((w) => w.id === ws.id)) this.workspaces = [...this.workspaces, { ...ws, role: 'owner' }];
      await this.selectWorkspace(ws.id);
      return undefined;
    } catch (err) {
      return describe(err);
    }
  }

  async createChannel(req: {
    name: string;
    kind: Exclude<ChannelKind, 'dm'>;
    policy: Exclude<Policy, 'dm'>;
    topic: string;
    member_ids: UserId[];
  }): Promise<string | undefined> {
    if (this.workspaceId === undefined) return 'No workspace is open.';
    try {
      const channel = await this.http.createChannel(this.workspaceId, {
        name: req.name,
        kind: req.kind,
        policy: req.policy,
        ...(req.topic && { topic: req.topic }),
        ...(req.member_ids.length && { member_ids: req.member_ids }),
      });
      const known = this.channels.get(channel.id);
      this.channels.set(channel.id, { unread: 0, unread_mentions: 0, ...known, ...channel, member: true });
      await this.selectChannel(channel.id);
      return undefined;
    } catch (err) {
      return describe(err);
    }
  }

  async leaveChannel(id: ChannelId): Promise<void> {
    try {
      await this.http.leaveChannel(id);
      const c = this.channels.get(id);
      if (c?.kind === 'public') this.channels.set(id, { ...c, member: false, unread: 0, unread_mentions: 0 });
      else this.channels.delete(id);
      if (this.current === id) {
        this.current = undefined;
        this.thread = undefined;
        const next = [...this.channels.values()].find((x) => x.member && x.kind !== 'dm');
        if (next) await this.selectChannel(next.id);
      }
      this.changed();
    } catch (err) {
      this.report(err);
    }
  }

  async updateChannel(id: ChannelId, req: { name?: string; topic?: string; policy?: Exclude<Policy, 'dm'> }): Promise<string | undefined> {
    try {
      const c = await this.http.updateChannel(id, req);
      const known = this.channels.get(id);
      if (known) this.channels.set(id, { ...known, ...c });
      this.changed();
      return undefined;
    } catch (err) {
      return describe(err);
    }
  }

  async addToChannel(channelId: ChannelId, userId: UserId): Promise<string | undefined> {
    try {
      await this.http.addChannelMember(channelId, userId);
      return undefined;
    } catch (err) {
      return describe(err);
    }
  }

  /** People one may add to the open workspace: every user for a server admin; else the
   * people of my other workspaces (the API lists users to server admins only). */
  async candidates(): Promise<Candidate[]> {
    const out = new Map<UserId, Candidate>();
    if (this.me.is_admin) {
      for (let after: number | undefined; ; ) {
        const page = await this.http.listUsers({ limit: 200, ...(after !== undefined && { after }) });
        for (const u of page) if (!u.deactivated_at && u.id !== this.me.id) out.set(u.id, u);
        if (page.length < 200) break;
        after = page.at(-1)!.id;
      }
    } else {
      for (const w of this.workspaces) {
        if (w.id === this.workspaceId) continue;
        for (const m of await this.http.listWorkspaceMembers(w.id)) if (m.user.id !== this.me.id) out.set(m.user.id, m.user);
      }
    }
    for (const id of this.members.keys()) out.delete(id);
    return [...out.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  async addMember(userId: UserId, role: Role): Promise<string | undefined> {
    if (this.workspaceId === undefined) return 'No workspace is open.';
    try {
      const m = await this.http.addWorkspaceMember(this.workspaceId, { user_id: userId, role });
      this.members.set(m.user.id, m);
      this.changed();
      return undefined;
    } catch (err) {
      return describe(err);
    }
  }

  /** Creates an account (server admins), adds it to the open workspace, and returns it
   * with what to hand over: its token, and for a person a one-time sign-in link (absent
   * if the server refused one; then the token is what to hand over). */
  async createAccount(req: {
    name: string;
    display_name: string;
    kind: 'human' | 'agent';
    role: Role;
  }): Promise<NewAccount | string> {
    let created: UserWithToken;
    try {
      created = await this.http.createUser({
        name: req.name,
        kind: req.kind,
        ...(req.display_name && { display_name: req.display_name }),
      });
    } catch (err) {
      return describe(err);
    }
    const refused = await this.addMember(created.user.id, req.role);
    if (refused) this.notify(`${created.user.name} was created, but not added to the workspace: ${refused}`);
    // An agent signs in with its token, never through the web UI.
    if (req.kind === 'agent') return created;
    try {
      return { ...created, link: await this.http.createSignInLink(created.user.id) };
    } catch (err) {
      this.notify(`${created.user.name} was created, but no sign-in link: ${describe(err)} Hand over the token.`);
      return created;
    }
  }

  async setRole(userId: UserId, role: Role): Promise<string | undefined> {
    if (this.workspaceId === undefined) return 'No workspace is open.';
    try {
      const m = await this.http.setMemberRole(this.workspaceId, userId, role);
      this.members.set(userId, { ...this.members.get(userId), ...m });
      this.changed();
      return undefined;
    } catch (err) {
      return describe(err);
    }
  }

  async removeMember(userId: UserId): Promise<string | undefined> {
    if (this.workspaceId === undefined) return 'No workspace is open.';
    try {
      const ws = this.workspaceId;
      await this.http.removeWorkspaceMember(ws, userId);
      this.members.delete(userId);
      if (userId === this.me.id) {
        // Left it: the next workspace, or none (its `workspace.left` may come later).
        this.workspaces = this.workspaces.filter((w) => w.id !== ws);
        this.commit({ effects: [{ do: 'leftWorkspace', workspaceId: ws }] });
      }
      this.changed();
      return undefined;
    } catch (err) {
      return describe(err);
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

  notify(text: string): void {
    const notice = { id: ++this.noticeId, text };
    this.notices = [...this.notices.slice(-2), notice];
    setTimeout(() => this.dismissNotice(notice.id), 8_000);
    this.changed();
  }

  private report(err: unknown): void {
    this.notify(describe(err));
  }

  /** The server ended the session: nothing more is sent or saved here (the drafts and
   * the messages not sent stay, for the user's next sign-in), and the page goes back to
   * the sign-in screen with `reason` (`onEnded`). */
  private end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.saveDrafts();
    this.persisted.close();
    clearTimeout(this.resendTimer);
    this.live.close();
    this.error = reason;
    this.changed();
    this.onEnded?.(reason);
  }

  /** `credentials.revoked` on my own scope: kept until another event comes, to say why
   * if the socket now closes with 3502 (see `endedBy`). */
  private onCredentials(ev: ChorusEvent): void {
    this.revoked = isEvent(ev, 'credentials.revoked') && ev.scope === `user:${this.me.id}` ? ev.data : undefined;
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
    if (s === 'open') void this.flushOutbox();
    this.changed();
  }

  /** Every hello after the first. What was missed arrives as events right after it
   * (resumed from the server's log, or fetched over HTTP), unread counts included: they
   * are not reloaded on top (that would count those messages twice). Presence is not
   * replayed: it is reloaded. */
  private onHello(): void {
    void this.flushOutbox();
    if (!this.away) return;
    this.away = false;
    this.catchingUp = true;
    void this.loadMembers().catch(() => {});
    setTimeout(() => {
      this.catchingUp = false;
      this.markReadSoon();
      this.notify(
        this.caughtUp > 0
          ? `Reconnected: ${this.caughtUp} new message${this.caughtUp === 1 ? '' : 's'} while you were away.`
          : 'Reconnected.',
      );
      this.caughtUp = 0;
    }, 800);
  }

  /** Events of a scope were lost for good: reload that channel. */
  private onGap(scope: string): void {
    // Their counts too: the events that would have moved them are gone.
    void this.loadChannels().catch(() => {});
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
      threadMentions: this.threadMentions,
      pins: this.pins,
      statuses: this.statuses,
      current: this.current,
      catchingUp: this.catchingUp,
      caughtUp: this.caughtUp,
      loopGuards: this.loopGuards,
      commandAnswers: this.commandAnswers,
    };
  }

  private commit(u: Update): void {
    if (u.channels) this.channels = u.channels;
    if (u.members) this.members = u.members;
    if (u.online) this.online = u.online;
    if (u.statuses) this.statuses = u.statuses;
    if (u.workspaces) this.workspaces = u.workspaces;
    if (u.typing) this.typing = u.typing;
    if (u.pins) this.pins = u.pins;
    if (u.loopGuards) this.loopGuards = u.loopGuards;
    if (u.commandAnswers) this.commandAnswers = u.commandAnswers;
    if (u.pending) {
      this.pending = u.pending;
      this.saveOutbox();
    }
    if (u.threadMentions) {
      this.threadMentions = u.threadMentions;
      this.persisted.saveThreadMentions(u.threadMentions);
    }
    if (u.caughtUp !== undefined) this.caughtUp = u.caughtUp;
    for (const m of u.put ?? []) this.apply(m);
    if (this.current !== undefined && !this.channels.has(this.current)) {
      // Left (or removed from) the open channel.
      this.current = undefined;
      this.thread = undefined;
    }
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
        case 'leftWorkspace': {
          this.workspaceId = undefined;
          this.current = undefined;
          this.thread = undefined;
          this.channels = new Map();
          this.members = new Map();
          const next = this.workspaces[0];
          if (next) void this.selectWorkspace(next.id);
          break;
        }
        case 'fetchMessage':
          void this.refetch(effect.channelId, effect.threadId, effect.id);
          break;
        default:
          effect satisfies never;
      }
    }
  }

  /** Loads a streaming message again (it missed a delta): the stored text is at most one
   * roll-up behind, and the deltas after its `seq` apply to it. */
  private async refetch(channelId: ChannelId, threadId: MessageId | undefined, id: MessageId): Promise<void> {
    if (this.refetching.has(id)) return;
    this.refetching.add(id);
    try {
      const [m] = await this.http.listMessages(channelId, { after: id - 1, limit: 1, ...(threadId !== undefined && { thread_id: threadId }) });
      const shown = this.findMessage(id);
      // Newer than what is shown (a delta or the completion may have come meanwhile).
      if (m?.id === id && shown && (shown.state === 'streaming' || shown.state === undefined) && (m.seq ?? 0) >= (shown.seq ?? 0)) {
        this.apply(m);
        this.changed();
      }
    } catch (err) {
      this.report(err);
    } finally {
      this.refetching.delete(id);
    }
  }

  /** Stops an agent's streaming reply (`POST /api/v1/messages/{id}/cancel`): the
   * server aborts it and tells the agent. */
  async stopReply(message: Message): Promise<void> {
    try {
      await this.http.cancel(message.id);
    } catch (err) {
      if (err instanceof ChorusError && err.code === 'conflict') return; // it had just ended
      if (err instanceof ChorusError && (err.status === 405 || err.message === 'no such route')) {
        this.notify('This server cannot stop agents yet.');
        return;
      }
      this.report(err);
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
      if (this.thread?.rootId === m.id) this.thread = { ...this.thread };
    } else if (this.thread?.rootId === m.thread_id) {
      insertSorted(this.thread.replies, m);
    }
    const pins = this.pins.get(m.channel_id);
    const at = pins?.findIndex((p) => p.message.id === m.id) ?? -1;
    if (pins && at >= 0) pins[at] = { ...pins[at]!, message: m };
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

function newKey(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

function tooLong(bytes: number, limit: number): string {
  return `Too long to send: ${bytes.toLocaleString('en')} bytes, and this server takes at most ${limit.toLocaleString('en')}. Shorten it (or split it) and send again.`;
}

/** A refusal in words for people. */
/** `/name …` with a command's name: run, not posted (`//…` posts a leading slash). */
export function isCommand(text: string): boolean {
  return /^\/[a-z][a-z0-9_-]*(\s|$)/.test(text);
}

function refusal(e: ChorusError): string {
  switch (e.code) {
    case 'forbidden':
      return `you may not post here (${e.message}).`;
    case 'not_found':
      return 'the conversation no longer exists.';
    default:
      return `${e.message} (${e.code}).`;
  }
}

/** An error in words for people (never a raw `TypeError`). */
/** A new account and what to hand over (`ChatStore.createAccount`). */
export type NewAccount = UserWithToken & { link?: NewSignInLink };

export function describe(err: unknown): string {
  if (err instanceof ChorusError) {
    if (err.code === 'network' || err.code === 'timeout' || err.code === 'closed') {
      return 'The server cannot be reached right now: try again in a moment.';
    }
    return `${err.message.charAt(0).toUpperCase()}${err.message.slice(1)} (${err.code}).`;
  }
  return err instanceof Error ? err.message : String(err);
}
