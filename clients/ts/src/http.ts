import { ChorusError, errorFromBody } from './errors.js';
import { StreamWriter, type StreamOptions } from './stream.js';
import type {
  AddMember,
  Command,
  CommandId,
  CommandResultData,
  CreateCommand,
  Appended,
  CreatedServerKey,
  CreateServerKey,
  Health,
  ServerKey,
  ServerKeyId,
  SetWebhook,
  UserIds,
  UserView,
  WebhookDelivery,
  WebhookSettings,
  ApiToken,
  Cancelled,
  Channel,
  ChannelId,
  ChannelView,
  CreateChannel,
  CreateSignInLink,
  CreateToken,
  CreateUser,
  HistoryQuery,
  Member,
  Message,
  MessageId,
  MessageReceipts,
  Namespace,
  NewApiToken,
  NewSignInLink,
  SignInLink,
  Pin,
  Presence,
  ReadState,
  Publish,
  RevokeProxySessions,
  Role,
  Published,
  ReceiptState,
  ScopeEvents,
  SendMessage,
  TopicPresence,
  TokenId,
  UpdateChannel,
  User,
  UserId,
  UsersQuery,
  UserWithToken,
  Workspace,
  WorkspaceId,
  WorkspaceMembership,
} from './model.js';

export interface HttpOptions {
  /** Bearer token; optional only for `devLogin`, `signIn` and `health`. */
  token?: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
  /** Per-request timeout (default 30 s). */
  timeoutMs?: number;
}

export interface SendOptions {
  /** The `Idempotency-Key`; default: a fresh random key for this logical send. */
  idempotencyKey?: string;
  /** Retries of a retryable failure (network, 5xx, 429, `unavailable`), each with the
   * same key so the server creates the message at most once. Default 3. */
  retries?: number;
}

/** A send's result: `replayed` when the key matched an earlier send (nothing created). */
export interface Sent {
  message: Message;
  replayed: boolean;
}

/** An opened DM: `created` when it did not exist before. */
export interface Opened {
  channel: ChannelView;
  created: boolean;
}

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

/** A typed client of the Chorus HTTP API (`/api/v1`), one method per route. */
export class ChorusHttp {
  /** Always ends with `/`, so relative joins keep any path prefix (`https://h/chorus/`). */
  readonly baseUrl: string;
  readonly token: string | undefined;
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;

  constructor(baseUrl: string, options: HttpOptions = {}) {
    this.baseUrl = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
    this.token = options.token;
    // Bound: a detached global `fetch` throws "Illegal invocation" in browsers.
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** The same server and options with another token. */
  withToken(token: string): ChorusHttp {
    return new ChorusHttp(this.baseUrl, { token, fetch: this.fetchFn, timeoutMs: this.timeoutMs });
  }

  // ---- users

  /** Creates a user and its first token (admin token required). */
  createUser(req: CreateUser): Promise<UserWithToken> {
    return this.json('POST', 'api/v1/users', req);
  }

  /** The caller. */
  me(): Promise<User> {
    return this.json('GET', 'api/v1/me');
  }

  /** Every user by id, a page at a time (server admins); `deactivated_at` on the
   * deactivated. */
  listUsers(query: UsersQuery = {}): Promise<User[]> {
    return this.json('GET', `api/v1/users${queryString(query)}`);
  }

  /** Deactivates a user (server admins): their tokens stop working, their sockets close
   * (3502); their messages stay. */
  deactivateUser(userId: UserId): Promise<User> {
    return this.json('POST', `api/v1/users/${userId}/deactivate`);
  }

  /** Reactivates a user (server admins): their tokens that were not revoked work again. */
  reactivateUser(userId: UserId): Promise<User> {
    return this.json('POST', `api/v1/users/${userId}/reactivate`);
  }

  // ---- API tokens (the user themself, or a server admin)

  /** Creates a token; the answer's `token` is its secret, shown this once. */
  createToken(userId: UserId, req: CreateToken): Promise<NewApiToken> {
    return this.json('POST', `api/v1/users/${userId}/tokens`, req);
  }

  /** A user's tokens, oldest first (never their secrets). */
  listTokens(userId: UserId): Promise<ApiToken[]> {
    return this.json('GET', `api/v1/users/${userId}/tokens`);
  }

  /** Revokes a token: refused from now on; the sockets it opened close with 3502. */
  async revokeToken(userId: UserId, tokenId: TokenId): Promise<void> {
    await this.request('DELETE', `api/v1/users/${userId}/tokens/${tokenId}`);
  }

  /** Signs out: revokes the API token this client carries (refused from now on; the
   * sockets opened with it close with 3502). Fails (404) for any other credential. */
  async signOut(): Promise<void> {
    await this.request('DELETE', 'api/v1/me/token');
  }

  // ---- one-time sign-in links

  /** Creates a one-time sign-in link for a user (server admins); the answer's `code`
   * is shown this once. Hand over `<web UI origin>/` + `url_fragment`. */
  createSignInLink(userId: UserId, req: CreateSignInLink = {}): Promise<NewSignInLink> {
    return this.json('POST', `api/v1/users/${userId}/sign-in-links`, req);
  }

  /** A user's sign-in links that can still be used, oldest first (server admins; never
   * their codes). */
  listSignInLinks(userId: UserId): Promise<SignInLink[]> {
    return this.json('GET', `api/v1/users/${userId}/sign-in-links`);
  }

  /** Revokes a sign-in link before it is used (server admins): opening it is then
   * refused as an unknown link. */
  async revokeSignInLink(userId: UserId, linkId: number): Promise<void> {
    await this.request('DELETE', `api/v1/users/${userId}/sign-in-links/${linkId}`);
  }

  /** Exchanges a sign-in link's code for a new token of its user (no token needed);
   * the link is used up: a second use is `gone` (410), as is an expired link. */
  signIn(code: string): Promise<UserWithToken> {
    return this.json('POST', 'api/v1/sign-in', { code });
  }

  /** Password-less login; only on a server started with `chorus serve --dev`
   * (otherwise `not_found`). Creates the user on first use; returns a fresh token. */
  devLogin(name: string): Promise<UserWithToken> {
    return this.json('POST', 'api/v1/dev/login', { name });
  }

  // ---- workspaces

  /** Creates a workspace; the caller becomes its owner. */
  createWorkspace(name: string): Promise<Workspace> {
    return this.json('POST', 'api/v1/workspaces', { name });
  }

  /** The caller's workspaces, with the caller's role. */
  listWorkspaces(): Promise<WorkspaceMembership[]> {
    return this.json('GET', 'api/v1/workspaces');
  }

  /** Adds a member (owners and admins; only owners add owners); `conflict` when the
   * user already is one. */
  addWorkspaceMember(workspace: WorkspaceId, req: AddMember): Promise<Member> {
    return this.json('POST', `api/v1/workspaces/${workspace}/members`, req);
  }

  /** Changes a member's role (owners and admins; only owners touch owners). The last
   * owner cannot be demoted (`conflict`). */
  setMemberRole(workspace: WorkspaceId, userId: UserId, role: Role): Promise<Member> {
    return this.json('PATCH', `api/v1/workspaces/${workspace}/members/${userId}`, { role });
  }

  /** Removes a member from the workspace and its channels and DMs; with the caller's own
   * id, leaves it. The last owner cannot leave (`conflict`). */
  async removeWorkspaceMember(workspace: WorkspaceId, userId: UserId): Promise<void> {
    await this.request('DELETE', `api/v1/workspaces/${workspace}/members/${userId}`);
  }

  listWorkspaceMembers(workspace: WorkspaceId): Promise<Member[]> {
    return this.json('GET', `api/v1/workspaces/${workspace}/members`);
  }

  // ---- channels

  /** Creates a public or private channel. */
  createChannel(workspace: WorkspaceId, req: CreateChannel): Promise<Channel> {
    return this.json('POST', `api/v1/workspaces/${workspace}/channels`, req);
  }

  /** The channels the caller can see, with unread counts. */
  listChannels(workspace: WorkspaceId): Promise<ChannelView[]> {
    return this.json('GET', `api/v1/workspaces/${workspace}/channels`);
  }

  /** One channel, with its member ids. */
  getChannel(channel: ChannelId): Promise<ChannelView> {
    return this.json('GET', `api/v1/channels/${channel}`);
  }

  /** Renames, sets the topic or changes the policy. */
  updateChannel(channel: ChannelId, req: UpdateChannel): Promise<Channel> {
    return this.json('PATCH', `api/v1/channels/${channel}`, req);
  }

  async addChannelMember(channel: ChannelId, userId: UserId): Promise<void> {
    await this.request('POST', `api/v1/channels/${channel}/members`, { user_id: userId });
  }

  async removeChannelMember(channel: ChannelId, userId: UserId): Promise<void> {
    await this.request('DELETE', `api/v1/channels/${channel}/members/${userId}`);
  }

  /** Joins a public channel. */
  joinChannel(channel: ChannelId): Promise<Channel> {
    return this.json('POST', `api/v1/channels/${channel}/join`);
  }

  async leaveChannel(channel: ChannelId): Promise<void> {
    await this.request('POST', `api/v1/channels/${channel}/leave`);
  }

  /** Gets or creates the DM of the caller and `userIds`. */
  async openDm(workspace: WorkspaceId, userIds: UserId[]): Promise<Opened> {
    const res = await this.request('POST', `api/v1/workspaces/${workspace}/dms`, { user_ids: userIds });
    return { channel: (await res.json()) as ChannelView, created: res.status === 201 };
  }

  // ---- messages

  /**
   * Sends a message. One key is used for the whole logical send, retries included, so
   * a retry after a lost answer returns the first result (`replayed: true`) instead of
   * posting twice.
   */
  async sendMessage(channel: ChannelId, req: SendMessage | string, options: SendOptions = {}): Promise<Sent> {
    const given: SendMessage = typeof req === 'string' ? { text: req } : req;
    // Posted as given: a leading `/` is doubled so the server does not run it as a
    // slash command (`runCommand` runs one).
    const body = !given.streaming && given.text.startsWith('/') ? { ...given, text: `/${given.text}` } : given;
    const key = options.idempotencyKey ?? newIdempotencyKey();
    const retries = options.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.request('POST', `api/v1/channels/${channel}/messages`, body, {
          'Idempotency-Key': key,
        });
        const replayed = res.headers.get('idempotent-replayed')?.toLowerCase() === 'true';
        return { message: (await res.json()) as Message, replayed };
      } catch (err) {
        if (!(err instanceof ChorusError) || !err.retryable || attempt >= retries) throw err;
        const wait = err.retryAfter !== undefined ? err.retryAfter * 1000 : 250 * 2 ** attempt;
        await sleep(Math.min(wait, 10_000));
      }
    }
  }

  /**
   * Runs a slash command (`/topic …`, `/invite @name`, `/leave`, `/me …`, `/policy …`,
   * or one registered in the workspace) in `channel`. Resolves to its answer (also sent
   * to the caller's connections as `command.result`); a refusal rejects with a
   * `ChorusError` (`unknown_command` for a name that is no command).
   */
  async runCommand(channel: ChannelId, text: string, options: { threadId?: MessageId } = {}): Promise<CommandResultData> {
    if (!/^\/[a-z]/.test(text)) throw new ChorusError(0, 'bad_request', `${JSON.stringify(text)} is not a slash command (/name args)`);
    const body: SendMessage = { text, ...(options.threadId !== undefined && { thread_id: options.threadId }) };
    const res = await this.request('POST', `api/v1/channels/${channel}/messages`, body);
    if (res.status !== 200) throw new ChorusError(res.status, 'unexpected_response', `${JSON.stringify(text)} was posted as a message, not run as a command`);
    return (await res.json()) as CommandResultData;
  }

  /** Registers a slash command (workspace owners and admins; an agent for itself). */
  createCommand(workspace: WorkspaceId, req: CreateCommand): Promise<Command> {
    return this.json('POST', `api/v1/workspaces/${workspace}/commands`, req);
  }

  /** The workspace's registered commands (the built-ins are not listed). */
  listCommands(workspace: WorkspaceId): Promise<Command[]> {
    return this.json('GET', `api/v1/workspaces/${workspace}/commands`);
  }

  /** Removes a registered command (owners and admins, or its registrant). */
  async deleteCommand(workspace: WorkspaceId, id: CommandId): Promise<void> {
    await this.request('DELETE', `api/v1/workspaces/${workspace}/commands/${id}`);
  }

  /** A page of history, oldest first within the page. */
  listMessages(channel: ChannelId, query: HistoryQuery = {}): Promise<Message[]> {
    return this.json('GET', `api/v1/channels/${channel}/messages${queryString(query)}`);
  }

  /** Replaces a message's text (its author or a workspace admin). */
  editMessage(id: MessageId, text: string): Promise<Message> {
    return this.json('PATCH', `api/v1/messages/${id}`, { text });
  }

  // ---- streaming messages (docs/protocol.md, "Streaming messages")

  /**
   * Opens a streaming message in `channel` (state `streaming`; `req.streaming` is set for
   * you) and returns a writer that batches appends: call `append` for every token, then
   * `complete` or `abort`. With `options.realtime`, appends go as WebSocket `append` ops
   * over that connection (acked) instead of HTTP requests.
   */
  async openStream(channel: ChannelId, req: Partial<SendMessage> = {}, options: StreamOptions = {}): Promise<StreamWriter> {
    const { message } = await this.sendMessage(channel, { text: '', ...req, streaming: true });
    return new StreamWriter(message, {
      append: (id, text) => (options.realtime ? options.realtime.append(id, text) : this.appendMessage(id, text)),
      complete: (id, text) => this.completeMessage(id, text),
      abort: (id, reason) => this.abortMessage(id, reason),
    }, options);
  }

  /** Adds `text` to the end of the caller's streaming message: one request per call (a
   * `StreamWriter` batches many small appends into few). */
  appendMessage(id: MessageId, text: string): Promise<Appended> {
    return this.json('POST', `api/v1/messages/${id}/append`, { text });
  }

  /** Ends the caller's stream (state `complete`); with `text`, that becomes its whole text. */
  completeMessage(id: MessageId, text?: string): Promise<Message> {
    return this.json('POST', `api/v1/messages/${id}/complete`, text === undefined ? {} : { text });
  }

  /** Ends a stream without completing it (its author, or a workspace owner/admin); the
   * text so far stays. */
  abortMessage(id: MessageId, reason?: string): Promise<Message> {
    return this.json('POST', `api/v1/messages/${id}/abort`, reason === undefined ? {} : { reason });
  }

  // ---- turns and receipts

  /** Reports what the calling agent does with a message that woke it (`working` shows
   * people "… is working…"); returns every receipt on the message. */
  receipt(messageId: MessageId, state: ReceiptState): Promise<MessageReceipts> {
    return this.json('POST', `api/v1/messages/${messageId}/receipts`, { state });
  }

  /** Cancels agents' turns: `messageId` is a message that woke agents (all their turns,
   * or only `agentId`'s) or an agent's streaming reply (aborted with reason
   * `cancelled`). The agents get `turn.cancelled`. `conflict` when nothing was running. */
  cancel(messageId: MessageId, agentId?: UserId): Promise<Cancelled> {
    return this.json('POST', `api/v1/messages/${messageId}/cancel`, agentId === undefined ? {} : { agent_id: agentId });
  }

  /** Deletes a message, which remains as a tombstone. */
  deleteMessage(id: MessageId): Promise<Message> {
    return this.json('DELETE', `api/v1/messages/${id}`);
  }

  // ---- reactions, pins, read cursors, presence (newer servers; older ones answer not_found)

  /** Reacts with `emoji` (a repeat changes nothing); returns the message with its reactions. */
  addReaction(id: MessageId, emoji: string): Promise<Message> {
    return this.json('PUT', `api/v1/messages/${id}/reactions/${encodeURIComponent(emoji)}`);
  }

  removeReaction(id: MessageId, emoji: string): Promise<Message> {
    return this.json('DELETE', `api/v1/messages/${id}/reactions/${encodeURIComponent(emoji)}`);
  }

  /** Pins the message in its channel (pinning again returns the existing pin). */
  pinMessage(id: MessageId): Promise<Pin> {
    return this.json('PUT', `api/v1/messages/${id}/pin`);
  }

  async unpinMessage(id: MessageId): Promise<void> {
    await this.request('DELETE', `api/v1/messages/${id}/pin`);
  }

  /** The channel's pins, most recently pinned first. */
  listPins(channel: ChannelId): Promise<Pin[]> {
    return this.json('GET', `api/v1/channels/${channel}/pins`);
  }

  /** Moves the caller's read cursor forward (never back) to `messageId`. */
  markRead(channel: ChannelId, messageId: MessageId): Promise<ReadState> {
    return this.json('POST', `api/v1/channels/${channel}/read`, { message_id: messageId });
  }

  /** The caller's presence. */
  myPresence(): Promise<Presence> {
    return this.json('GET', 'api/v1/presence');
  }

  /** Sets the caller's status text (empty clears it); the online bit is the server's. */
  setStatus(statusText: string): Promise<Presence> {
    return this.json('PUT', 'api/v1/presence', { status_text: statusText });
  }

  /** Every member's presence. */
  workspacePresence(workspace: WorkspaceId): Promise<Presence[]> {
    return this.json('GET', `api/v1/workspaces/${workspace}/presence`);
  }

  // ---- realtime catch-up

  /** A page of the events of `scope` after the offset `after`, oldest first, as the
   * WebSocket would have delivered them to the caller; `limit` 1 to 1000 (default 200).
   * Call again with `after = next` while `more`. Fails with status 410 (`gone`) when
   * those events are no longer kept: reload the scope's state over the other routes. */
  scopeEvents(scope: string, after: number, limit?: number): Promise<ScopeEvents> {
    return this.json('GET', `api/v1/scopes/${encodeURIComponent(scope)}/events${queryString({ after, limit })}`);
  }

  /** Who is subscribed to the topic `scope` now, on every node: one entry per connection
   * (`session_id` as in its `hello`). Only for a topic whose namespace has
   * `presence = true`; fails with status 404 otherwise. */
  topicPresence(scope: string): Promise<TopicPresence> {
    return this.json('GET', `api/v1/scopes/${encodeURIComponent(scope)}/presence`);
  }

  // ---- operations

  /** Publishes an arbitrary event to a scope (admin / server token). */
  publish(req: Publish): Promise<Published> {
    return this.json('POST', 'api/v1/publish', req);
  }

  /** The application logged its user `sub` out (gateway mode; a server key with
   * `sessions:revoke`): their sockets the connect proxy authenticated close with 3502 on
   * every node, and their credentials are asked about again. */
  async revokeProxySessions(sub: string): Promise<void> {
    const body: RevokeProxySessions = { sub };
    await this.request('POST', 'api/v1/proxy/sessions/revoke', body);
  }

  /** The declared `topic:` namespaces (gateway mode), as configured (server admins). */
  namespaces(): Promise<Namespace[]> {
    return this.json('GET', 'api/v1/namespaces');
  }

  /** `GET /healthz`: resolves when the server answers. */
  health(): Promise<Health> {
    return this.json('GET', 'healthz');
  }

  /** `GET /readyz`: resolves when the server can serve (fails with 503 when not). */
  ready(): Promise<Health> {
    return this.json('GET', 'readyz');
  }

  /** `GET /metrics`: the Prometheus text (this client's token is sent as the bearer:
   * use the server's `metrics_token` when it has one). */
  async metrics(): Promise<string> {
    return (await this.request('GET', 'metrics')).text();
  }

  /** The realtime engine's counters (the admin token or a server key with `stats:read`). */
  stats(): Promise<Record<string, unknown>> {
    return this.json('GET', 'api/v1/realtime/stats');
  }

  /** Creates a server key (server admins); its secret `key` is in this answer only. */
  createServerKey(req: CreateServerKey): Promise<CreatedServerKey> {
    return this.json('POST', 'api/v1/server-keys', req);
  }

  /** Every server key, without secrets (server admins). */
  listServerKeys(): Promise<ServerKey[]> {
    return this.json('GET', 'api/v1/server-keys');
  }

  async deleteServerKey(id: ServerKeyId): Promise<void> {
    await this.request('DELETE', `api/v1/server-keys/${id}`);
  }

  // ---- users, agents

  /** One user: the full record for oneself and admins, the profile for others. */
  getUser(id: UserId): Promise<UserView> {
    return this.json('GET', `api/v1/users/${id}`);
  }

  /** Sets an agent's webhook (`url: null` turns it off); the secret is answered once. */
  setWebhook(user: UserId, req: SetWebhook): Promise<WebhookSettings> {
    return this.json('PUT', `api/v1/users/${user}/webhook`, req);
  }

  /** An agent's webhook deliveries, newest first, with their attempts. */
  webhookDeliveries(user: UserId, limit?: number): Promise<WebhookDelivery[]> {
    return this.json('GET', `api/v1/users/${user}/webhook-deliveries${queryString({ limit })}`);
  }

  /** A channel's on-duty list (who every message of an `on_duty` channel wakes). */
  getOnDuty(channel: ChannelId): Promise<UserIds> {
    return this.json('GET', `api/v1/channels/${channel}/on-duty`);
  }

  setOnDuty(channel: ChannelId, userIds: UserId[]): Promise<UserIds> {
    return this.json('PUT', `api/v1/channels/${channel}/on-duty`, { user_ids: userIds });
  }

  /** A channel's wake list (who every message of a `custom` channel wakes). */
  getWakeList(channel: ChannelId): Promise<UserIds> {
    return this.json('GET', `api/v1/channels/${channel}/wake-list`);
  }

  setWakeList(channel: ChannelId, userIds: UserId[]): Promise<UserIds> {
    return this.json('PUT', `api/v1/channels/${channel}/wake-list`, { user_ids: userIds });
  }

  /** Who observes the workspace's `on_duty` channels. */
  getObservers(workspace: WorkspaceId): Promise<UserIds> {
    return this.json('GET', `api/v1/workspaces/${workspace}/observers`);
  }

  setObservers(workspace: WorkspaceId, userIds: UserId[]): Promise<UserIds> {
    return this.json('PUT', `api/v1/workspaces/${workspace}/observers`, { user_ids: userIds });
  }

  // ---- plumbing

  private async json<T>(method: Method, path: string, body?: unknown): Promise<T> {
    return (await (await this.request(method, path, body)).json()) as T;
  }

  /** Sends and turns any non-2xx answer (or a failed transport) into a `ChorusError`. */
  private async request(
    method: Method,
    path: string,
    body?: unknown,
    extraHeaders: Record<string, string> = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...extraHeaders };
    if (this.token !== undefined) headers['Authorization'] = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res: Response;
    try {
      res = await this.fetchFn(new URL(path, this.baseUrl), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const timedOut = err instanceof Error && err.name === 'TimeoutError';
      throw new ChorusError(0, timedOut ? 'timeout' : 'network', `${method} ${path}: ${String(err)}`);
    }
    if (!res.ok) throw errorFromBody(res.status, await res.text().catch(() => ''), res.headers.get('retry-after'));
    return res;
  }
}

/** `?k=v&…` of the fields that are set; empty when none is. */
function queryString(query: object): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
  return params.toString() ? `?${params}` : '';
}

/** A random key for one logical send (visible ASCII, ≤ 255 bytes as the server requires). */
export function newIdempotencyKey(): string {
  const c = globalThis.crypto;
  // randomUUID exists only in secure contexts (https, localhost); getRandomValues everywhere.
  if (typeof c.randomUUID === 'function') return c.randomUUID();
  return Array.from(c.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Every route of the HTTP API this client has a method for: method, path as the
 * OpenAPI document writes it, and the `ChorusHttp` method. A test compares it with the
 * server's document both ways (test/coverage.test.ts). */
export const ROUTES: ReadonlyArray<readonly [string, string, keyof ChorusHttp]> = [
  ['POST', '/api/v1/messages/{id}/receipts', 'receipt'],
  ['POST', '/api/v1/messages/{id}/cancel', 'cancel'],
  ['GET', '/api/v1/namespaces', 'namespaces'],
  ['POST', '/api/v1/users', 'createUser'],
  ['GET', '/api/v1/users', 'listUsers'],
  ['GET', '/api/v1/me', 'me'],
  ['GET', '/api/v1/users/{id}', 'getUser'],
  ['POST', '/api/v1/dev/login', 'devLogin'],
  ['PUT', '/api/v1/users/{id}/webhook', 'setWebhook'],
  ['GET', '/api/v1/users/{id}/webhook-deliveries', 'webhookDeliveries'],
  ['POST', '/api/v1/users/{id}/tokens', 'createToken'],
  ['GET', '/api/v1/users/{id}/tokens', 'listTokens'],
  ['DELETE', '/api/v1/users/{id}/tokens/{token_id}', 'revokeToken'],
  ['DELETE', '/api/v1/me/token', 'signOut'],
  ['POST', '/api/v1/users/{id}/sign-in-links', 'createSignInLink'],
  ['GET', '/api/v1/users/{id}/sign-in-links', 'listSignInLinks'],
  ['DELETE', '/api/v1/users/{id}/sign-in-links/{link_id}', 'revokeSignInLink'],
  ['POST', '/api/v1/sign-in', 'signIn'],
  ['POST', '/api/v1/users/{id}/deactivate', 'deactivateUser'],
  ['POST', '/api/v1/users/{id}/reactivate', 'reactivateUser'],
  ['POST', '/api/v1/workspaces', 'createWorkspace'],
  ['GET', '/api/v1/workspaces', 'listWorkspaces'],
  ['POST', '/api/v1/workspaces/{id}/members', 'addWorkspaceMember'],
  ['GET', '/api/v1/workspaces/{id}/members', 'listWorkspaceMembers'],
  ['PATCH', '/api/v1/workspaces/{id}/members/{user_id}', 'setMemberRole'],
  ['DELETE', '/api/v1/workspaces/{id}/members/{user_id}', 'removeWorkspaceMember'],
  ['GET', '/api/v1/workspaces/{id}/presence', 'workspacePresence'],
  ['POST', '/api/v1/workspaces/{id}/channels', 'createChannel'],
  ['GET', '/api/v1/workspaces/{id}/channels', 'listChannels'],
  ['POST', '/api/v1/workspaces/{id}/dms', 'openDm'],
  ['GET', '/api/v1/workspaces/{id}/observers', 'getObservers'],
  ['PUT', '/api/v1/workspaces/{id}/observers', 'setObservers'],
  ['POST', '/api/v1/workspaces/{id}/commands', 'createCommand'],
  ['GET', '/api/v1/workspaces/{id}/commands', 'listCommands'],
  ['DELETE', '/api/v1/workspaces/{id}/commands/{command_id}', 'deleteCommand'],
  ['GET', '/api/v1/channels/{id}', 'getChannel'],
  ['PATCH', '/api/v1/channels/{id}', 'updateChannel'],
  ['POST', '/api/v1/channels/{id}/members', 'addChannelMember'],
  ['DELETE', '/api/v1/channels/{id}/members/{user_id}', 'removeChannelMember'],
  ['POST', '/api/v1/channels/{id}/join', 'joinChannel'],
  ['POST', '/api/v1/channels/{id}/leave', 'leaveChannel'],
  ['POST', '/api/v1/channels/{id}/messages', 'sendMessage'],
  ['GET', '/api/v1/channels/{id}/messages', 'listMessages'],
  ['GET', '/api/v1/channels/{id}/pins', 'listPins'],
  ['POST', '/api/v1/channels/{id}/read', 'markRead'],
  ['GET', '/api/v1/channels/{id}/on-duty', 'getOnDuty'],
  ['PUT', '/api/v1/channels/{id}/on-duty', 'setOnDuty'],
  ['GET', '/api/v1/channels/{id}/wake-list', 'getWakeList'],
  ['PUT', '/api/v1/channels/{id}/wake-list', 'setWakeList'],
  ['PATCH', '/api/v1/messages/{id}', 'editMessage'],
  ['DELETE', '/api/v1/messages/{id}', 'deleteMessage'],
  ['PUT', '/api/v1/messages/{id}/reactions/{emoji}', 'addReaction'],
  ['DELETE', '/api/v1/messages/{id}/reactions/{emoji}', 'removeReaction'],
  ['PUT', '/api/v1/messages/{id}/pin', 'pinMessage'],
  ['DELETE', '/api/v1/messages/{id}/pin', 'unpinMessage'],
  ['POST', '/api/v1/messages/{id}/append', 'appendMessage'],
  ['POST', '/api/v1/messages/{id}/complete', 'completeMessage'],
  ['POST', '/api/v1/messages/{id}/abort', 'abortMessage'],
  ['GET', '/api/v1/presence', 'myPresence'],
  ['PUT', '/api/v1/presence', 'setStatus'],
  ['GET', '/api/v1/scopes/{scope}/events', 'scopeEvents'],
  ['GET', '/api/v1/scopes/{scope}/presence', 'topicPresence'],
  ['POST', '/api/v1/publish', 'publish'],
  ['POST', '/api/v1/proxy/sessions/revoke', 'revokeProxySessions'],
  ['GET', '/api/v1/realtime/stats', 'stats'],
  ['POST', '/api/v1/server-keys', 'createServerKey'],
  ['GET', '/api/v1/server-keys', 'listServerKeys'],
  ['DELETE', '/api/v1/server-keys/{id}', 'deleteServerKey'],
  ['GET', '/healthz', 'health'],
  ['GET', '/readyz', 'ready'],
  ['GET', '/metrics', 'metrics'],
];
