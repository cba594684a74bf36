//! [`Client`]: one typed async method per `/api/v1` route. It owns URL building, the
//! bearer header and error decoding; it holds no state beyond a connection pool.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::model::*;
use crate::realtime::{Options, Realtime};
use crate::tls::ExtraRoots;

/// How long a request may take by default, from connecting until its answer's body is
/// read ([`Client::with_timeout`]). Every route answers at once (none holds a request
/// open), so a request still unanswered this late is lost: a silent peer, a dead link.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a connection may take by default ([`Client::with_connect_timeout`]).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A Chorus HTTP API client for one token. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The limit of each request, connect to body ([`Client::with_timeout`]).
    timeout: Duration,
    /// Always ends with `/`, so relative joins keep any path prefix.
    base: Url,
    token: String,
    /// CAs trusted besides the built-in roots, for HTTP and the realtime connection.
    roots: Option<ExtraRoots>,
    /// Sent with every request and realtime upgrade ([`Client::with_headers`]).
    headers: HeaderMap,
}

impl std::fmt::Debug for Client {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &redact_url(self.base.as_str()))
            .finish_non_exhaustive()
    }
}

/// The result of a send: the message, and whether it is an idempotent replay of an
/// earlier send with the same `Idempotency-Key` (nothing new was created).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub message: Message,
    pub replayed: bool,
}

/// The result of opening a DM: the channel, and whether it was created now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    pub channel: ChannelView,
    pub created: bool,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:7800`, optionally
    /// with a path prefix) that authenticates with `token`.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Self> {
        Self::with_roots(base_url, token, None)
    }

    /// As [`Client::new`], also trusting `roots` for `https://` and `wss://` (a server
    /// with a self-signed or private-CA certificate).
    pub fn with_roots(
        base_url: &str,
        token: impl Into<String>,
        roots: Option<ExtraRoots>,
    ) -> Result<Self> {
        Ok(Self {
            http: http_client(roots.as_ref(), DEFAULT_CONNECT_TIMEOUT)?,
            timeout: DEFAULT_TIMEOUT,
            base: base_url_with_slash(base_url)?,
            token: token.into(),
            roots,
            headers: HeaderMap::new(),
        })
    }

    /// The same client, sending `headers` besides its token with every request, and
    /// with the upgrade of every realtime connection it opens (when its [`Options`]
    /// name no headers of their own). For what a server asks of its own callers, such
    /// as Chorus's `/mcp` agents marking their requests as the server's.
    pub fn with_headers(self, headers: HeaderMap) -> Self {
        Self { headers, ..self }
    }

    /// The same client with another limit on each request, from connecting until the
    /// answer's body is read ([`DEFAULT_TIMEOUT`], 30 s, unless set). A request past it
    /// fails with [`Error::Http`] whose `is_timeout()` is true; a write may still have
    /// been applied. The realtime connection is not an HTTP request: no such limit
    /// applies to it.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The same client with another limit on opening a connection
    /// ([`DEFAULT_CONNECT_TIMEOUT`], 10 s, unless set). The limit belongs to the
    /// connection pool, so the client gets a pool of its own (not shared with clones
    /// made before).
    pub fn with_connect_timeout(self, connect_timeout: Duration) -> Result<Self> {
        Ok(Self {
            http: http_client(self.roots.as_ref(), connect_timeout)?,
            ..self
        })
    }

    /// The same server and connection pool with another token.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            ..self.clone()
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Opens a realtime connection to this server with this client's token; it
    /// reconnects and resumes by itself (see [`Options::reconnect`]).
    pub async fn realtime(&self) -> Result<Realtime> {
        self.realtime_with(Options::default()).await
    }

    /// Opens a realtime connection with the given [`Options`].
    pub async fn realtime_with(&self, mut options: Options) -> Result<Realtime> {
        if options.roots.is_none() {
            options.roots = self.roots.clone();
        }
        if options.headers.is_empty() {
            options.headers = self.headers.clone();
        }
        Realtime::connect_with(self.base.as_str(), &self.token, options).await
    }

    /// Creates a user and its first token (admin token required).
    pub async fn create_user(&self, req: &CreateUser) -> Result<UserWithToken> {
        self.json(self.request(Method::POST, "api/v1/users")?.json(req))
            .await
    }

    /// Every user by id, a page at a time (server admins), with `deactivated_at` on the
    /// deactivated.
    pub async fn list_users(&self, query: &UsersQuery) -> Result<Vec<User>> {
        self.json(self.request(Method::GET, "api/v1/users")?.query(query))
            .await
    }

    /// Deactivates a user (server admins): their tokens stop working and their
    /// sockets close; their messages stay.
    pub async fn deactivate_user(&self, id: UserId) -> Result<User> {
        let path = format!("api/v1/users/{id}/deactivate");
        self.json(self.request(Method::POST, &path)?).await
    }

    /// Reactivates a user (server admins): their tokens that were not revoked work again.
    pub async fn reactivate_user(&self, id: UserId) -> Result<User> {
        let path = format!("api/v1/users/{id}/reactivate");
        self.json(self.request(Method::POST, &path)?).await
    }

    /// Creates an API token for `user` (themself, or anyone for a server admin); the
    /// answer holds its secret, shown this once.
    pub async fn create_token(&self, user: UserId, req: &CreateToken) -> Result<NewApiToken> {
        let path = format!("api/v1/users/{user}/tokens");
        self.json(self.request(Method::POST, &path)?.json(req))
            .await
    }

    /// A user's API tokens, oldest first (never their secrets).
    pub async fn list_tokens(&self, user: UserId) -> Result<Vec<ApiToken>> {
        let path = format!("api/v1/users/{user}/tokens");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Revokes one of a user's tokens: requests with it are refused from now on, and
    /// the sockets it opened close with 3502.
    pub async fn revoke_token(&self, user: UserId, token: TokenId) -> Result<()> {
        let path = format!("api/v1/users/{user}/tokens/{token}");
        self.empty(self.request(Method::DELETE, &path)?).await
    }

    /// Signs out: revokes the API token this client carries (refused from now on; the
    /// sockets opened with it close with 3502). Fails for any other credential.
    pub async fn sign_out(&self) -> Result<()> {
        self.empty(self.request(Method::DELETE, "api/v1/me/token")?)
            .await
    }

    /// Creates a one-time sign-in link for `user` (server admins): its code, shown this
    /// once, and `url_fragment` (`#signin=<code>`) to append to the web UI's address.
    pub async fn create_sign_in_link(
        &self,
        user: UserId,
        req: &CreateSignInLink,
    ) -> Result<NewSignInLink> {
        let path = format!("api/v1/users/{user}/sign-in-links");
        self.json(self.request(Method::POST, &path)?.json(req))
            .await
    }

    /// A user's sign-in links that can still be used, oldest first (server admins;
    /// never their codes).
    pub async fn list_sign_in_links(&self, user: UserId) -> Result<Vec<SignInLink>> {
        let path = format!("api/v1/users/{user}/sign-in-links");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Revokes a sign-in link before it is used (server admins): opening it is then
    /// refused as an unknown link.
    pub async fn revoke_sign_in_link(&self, user: UserId, link: i64) -> Result<()> {
        let path = format!("api/v1/users/{user}/sign-in-links/{link}");
        self.empty(self.request(Method::DELETE, &path)?).await
    }

    /// Exchanges a sign-in link's code for a new API token of its user, using the link
    /// up (`410 gone` when it was used before or has expired). Sent without this client's
    /// token, so a client made with none (`Client::new(url, "")`) can sign in.
    pub async fn sign_in(&self, code: &str) -> Result<UserWithToken> {
        let body = SignIn {
            code: code.to_owned(),
        };
        let request = self.unauthenticated(Method::POST, "api/v1/sign-in")?;
        self.json(request.json(&body)).await
    }

    /// The caller.
    pub async fn me(&self) -> Result<User> {
        self.json(self.request(Method::GET, "api/v1/me")?).await
    }

    /// One user: the full record for the caller themself (and for a server admin), the
    /// profile for someone sharing a workspace with the caller.
    pub async fn user(&self, id: UserId) -> Result<UserView> {
        self.json(self.request(Method::GET, &format!("api/v1/users/{id}"))?)
            .await
    }

    /// Creates a workspace; the caller becomes its owner.
    pub async fn create_workspace(&self, name: &str) -> Result<Workspace> {
        let req = self.request(Method::POST, "api/v1/workspaces")?;
        let name = name.to_owned();
        self.json(req.json(&CreateWorkspace { name })).await
    }

    /// The workspaces the caller belongs to, with the caller's role.
    pub async fn list_workspaces(&self) -> Result<Vec<WorkspaceMembership>> {
        self.json(self.request(Method::GET, "api/v1/workspaces")?)
            .await
    }

    /// Adds a member to a workspace (owners and admins); `conflict` when the user
    /// already is one.
    pub async fn add_workspace_member(&self, ws: WorkspaceId, req: &AddMember) -> Result<Member> {
        let path = format!("api/v1/workspaces/{ws}/members");
        self.json(self.request(Method::POST, &path)?.json(req))
            .await
    }

    /// Changes a member's role (owners and admins; only owners touch owners). The
    /// last owner cannot be demoted (`conflict`).
    pub async fn set_member_role(
        &self,
        ws: WorkspaceId,
        user_id: UserId,
        role: Role,
    ) -> Result<Member> {
        let path = format!("api/v1/workspaces/{ws}/members/{user_id}");
        self.json(self.request(Method::PATCH, &path)?.json(&SetRole { role }))
            .await
    }

    /// Removes a member from a workspace and from its channels and DMs; with the
    /// caller's own id, leaves the workspace. The last owner cannot leave (`conflict`).
    pub async fn remove_workspace_member(&self, ws: WorkspaceId, user_id: UserId) -> Result<()> {
        let path = format!("api/v1/workspaces/{ws}/members/{user_id}");
        self.empty(self.request(Method::DELETE, &path)?).await
    }

    /// A workspace's members.
    pub async fn list_workspace_members(&self, ws: WorkspaceId) -> Result<Vec<Member>> {
        let path = format!("api/v1/workspaces/{ws}/members");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Creates a public or private channel.
    pub async fn create_channel(&self, ws: WorkspaceId, req: &CreateChannel) -> Result<Channel> {
        let path = format!("api/v1/workspaces/{ws}/channels");
        self.json(self.request(Method::POST, &path)?.json(req))
            .await
    }

    /// The channels of a workspace the caller can see, with unread counts.
    pub async fn list_channels(&self, ws: WorkspaceId) -> Result<Vec<ChannelView>> {
        let path = format!("api/v1/workspaces/{ws}/channels");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// One channel, with its member ids.
    pub async fn get_channel(&self, id: ChannelId) -> Result<ChannelView> {
        let path = format!("api/v1/channels/{id}");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Renames a channel, sets its topic or changes its policy.
    pub async fn update_channel(&self, id: ChannelId, req: &UpdateChannel) -> Result<Channel> {
        let path = format!("api/v1/channels/{id}");
        self.json(self.request(Method::PATCH, &path)?.json(req))
            .await
    }

    /// Replaces a channel's on-duty list (who an `on_duty` channel's messages wake).
    pub async fn set_on_duty(&self, id: ChannelId, user_ids: &[UserId]) -> Result<UserIds> {
        let path = format!("api/v1/channels/{id}/on-duty");
        let body = UserIds {
            user_ids: user_ids.to_vec(),
        };
        self.json(self.request(Method::PUT, &path)?.json(&body))
            .await
    }

    /// Replaces a channel's wake list (who a `custom` channel's messages wake).
    pub async fn set_wake_list(&self, id: ChannelId, user_ids: &[UserId]) -> Result<UserIds> {
        let path = format!("api/v1/channels/{id}/wake-list");
        let body = UserIds {
            user_ids: user_ids.to_vec(),
        };
        self.json(self.request(Method::PUT, &path)?.json(&body))
            .await
    }

    /// Replaces a workspace's observers (who observe its `on_duty` channels).
    pub async fn set_observers(&self, ws: WorkspaceId, user_ids: &[UserId]) -> Result<UserIds> {
        let path = format!("api/v1/workspaces/{ws}/observers");
        let body = UserIds {
            user_ids: user_ids.to_vec(),
        };
        self.json(self.request(Method::PUT, &path)?.json(&body))
            .await
    }

    /// Adds a workspace member to a channel.
    pub async fn add_channel_member(&self, id: ChannelId, user_id: UserId) -> Result<()> {
        let path = format!("api/v1/channels/{id}/members");
        self.empty(
            self.request(Method::POST, &path)?
                .json(&AddChannelMember { user_id }),
        )
        .await
    }

    /// Removes a member from a channel.
    pub async fn remove_channel_member(&self, id: ChannelId, user_id: UserId) -> Result<()> {
        let path = format!("api/v1/channels/{id}/members/{user_id}");
        self.empty(self.request(Method::DELETE, &path)?).await
    }

    /// Runs a slash command (`/topic …`, `/invite @name`, `/leave`, `/me …`,
    /// `/policy …`, or one registered in the workspace) in `channel`, in the thread of
    /// `thread_id` if given. Returns its answer (also sent to the caller's connections as
    /// `command.result`); a refusal is an [`Error::Api`] (`unknown_command` for a name
    /// that is no command).
    pub async fn run_command(
        &self,
        channel: ChannelId,
        text: &str,
        thread_id: Option<MessageId>,
    ) -> Result<CommandResult> {
        let name = text.strip_prefix('/').unwrap_or_default();
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(Error::Protocol(format!(
                "{text:?} is not a slash command (/name args)"
            )));
        }
        let path = format!("api/v1/channels/{channel}/messages");
        let req = SendMessage {
            thread_id,
            ..SendMessage::new(text)
        };
        let response = self
            .send(self.request(Method::POST, &path)?.json(&req))
            .await?;
        if response.status() != StatusCode::OK {
            return Err(Error::Protocol(format!(
                "{text:?} was posted as a message, not run as a command"
            )));
        }
        Ok(response.json().await?)
    }

    /// Registers a slash command in a workspace (owners and admins; an agent for
    /// itself). A `webhook_url` command's `webhook_secret` is in this answer only.
    pub async fn create_command(&self, ws: WorkspaceId, req: &CreateCommand) -> Result<Command> {
        let path = format!("api/v1/workspaces/{ws}/commands");
        self.json(self.request(Method::POST, &path)?.json(req))
            .await
    }

    /// The slash commands registered in a workspace (the built-ins are not listed).
    pub async fn list_commands(&self, ws: WorkspaceId) -> Result<Vec<Command>> {
        let path = format!("api/v1/workspaces/{ws}/commands");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Removes a registered command (owners and admins, or its registrant).
    pub async fn delete_command(&self, ws: WorkspaceId, id: CommandId) -> Result<()> {
        let path = format!("api/v1/workspaces/{ws}/commands/{id}");
        self.empty(self.request(Method::DELETE, &path)?).await
    }

    /// Joins a public channel.
    pub async fn join_channel(&self, id: ChannelId) -> Result<Channel> {
        let path = format!("api/v1/channels/{id}/join");
        self.json(self.request(Method::POST, &path)?).await
    }

    /// Leaves a channel.
    pub async fn leave_channel(&self, id: ChannelId) -> Result<()> {
        let path = format!("api/v1/channels/{id}/leave");
        self.empty(self.request(Method::POST, &path)?).await
    }

    /// Gets or creates the DM of the caller and `user_ids`.
    pub async fn open_dm(&self, ws: WorkspaceId, user_ids: &[UserId]) -> Result<Opened> {
        let path = format!("api/v1/workspaces/{ws}/dms");
        let response = self
            .send(self.request(Method::POST, &path)?.json(&OpenDm {
                user_ids: user_ids.to_vec(),
            }))
            .await?;
        let created = response.status() == StatusCode::CREATED;
        Ok(Opened {
            channel: response.json().await?,
            created,
        })
    }

    /// Sends a message. With `idempotency_key`, a retry of the same send returns the
    /// first result with `replayed: true` and creates nothing. The text is posted as
    /// given: one starting with `/` is sent as `//…` so the server does not run it as
    /// a slash command ([`run_command`](Self::run_command) runs one).
    pub async fn send_message(
        &self,
        channel: ChannelId,
        req: &SendMessage,
        idempotency_key: Option<&str>,
    ) -> Result<Sent> {
        let path = format!("api/v1/channels/{channel}/messages");
        let escaped;
        let req = if !req.streaming && req.text.starts_with('/') {
            escaped = SendMessage {
                text: format!("/{}", req.text),
                ..req.clone()
            };
            &escaped
        } else {
            req
        };
        let mut request = self.request(Method::POST, &path)?.json(req);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = self.send(request).await?;
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(Sent {
            message: response.json().await?,
            replayed,
        })
    }

    /// A page of history, oldest first within the page.
    pub async fn list_messages(
        &self,
        channel: ChannelId,
        query: &HistoryQuery,
    ) -> Result<Vec<Message>> {
        let path = format!("api/v1/channels/{channel}/messages");
        self.json(self.request(Method::GET, &path)?.query(query))
            .await
    }

    /// [`list_messages`](Self::list_messages) as the server's JSON, every field kept
    /// (the realtime catch-up delivers these as event data).
    pub(crate) async fn list_messages_json(
        &self,
        channel: ChannelId,
        query: &HistoryQuery,
    ) -> Result<Vec<serde_json::Value>> {
        let path = format!("api/v1/channels/{channel}/messages");
        self.json(self.request(Method::GET, &path)?.query(query))
            .await
    }

    /// A page of the durable events of `scope` after the position `after`, oldest first,
    /// as the WebSocket would have delivered them to this user; `limit` 1 to 1000
    /// (default 200). Page on from `next` while `more`. A `410 Gone` error: the events
    /// after `after` are no longer retained (reload the scope's state instead).
    pub async fn scope_events(
        &self,
        scope: &str,
        after: u64,
        limit: Option<u32>,
    ) -> Result<ScopeEvents> {
        let path = format!("api/v1/scopes/{}/events", encode_segment(scope));
        let query = ScopeEventsQuery { after, limit };
        self.json(self.request(Method::GET, &path)?.query(&query))
            .await
    }

    /// Who is subscribed to the topic `scope` now, on every node (a topic whose
    /// namespace has `presence = true`; `404` otherwise): one entry per connection.
    pub async fn topic_presence(&self, scope: &str) -> Result<TopicPresence> {
        let path = format!("api/v1/scopes/{}/presence", encode_segment(scope));
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Replaces a message's text (its author or a workspace admin).
    pub async fn edit_message(&self, id: MessageId, text: &str) -> Result<Message> {
        let path = format!("api/v1/messages/{id}");
        let text = text.to_owned();
        self.json(
            self.request(Method::PATCH, &path)?
                .json(&EditMessage { text }),
        )
        .await
    }

    /// Opens a streaming message in `channel` (`req.streaming` is set for you) and
    /// returns a [`StreamWriter`] that batches appends.
    pub async fn open_stream(&self, channel: ChannelId, req: &SendMessage) -> Result<StreamWriter> {
        let req = SendMessage {
            streaming: true,
            ..req.clone()
        };
        let sent = self.send_message(channel, &req, None).await?;
        Ok(StreamWriter::new(self.clone(), sent.message))
    }

    /// Adds `text` to the end of the caller's streaming message (one request; see
    /// [`StreamWriter`] to batch many small appends).
    pub async fn append_message(&self, id: MessageId, text: &str) -> Result<Appended> {
        let path = format!("api/v1/messages/{id}/append");
        let body = AppendText {
            text: text.to_owned(),
        };
        self.json(self.request(Method::POST, &path)?.json(&body))
            .await
    }

    /// Ends the caller's stream; with `text`, that becomes its whole text.
    pub async fn complete_message(&self, id: MessageId, text: Option<&str>) -> Result<Message> {
        let path = format!("api/v1/messages/{id}/complete");
        let body = CompleteMessage {
            text: text.map(str::to_owned),
        };
        self.json(self.request(Method::POST, &path)?.json(&body))
            .await
    }

    /// Ends a stream without completing it (its author, or a workspace admin).
    pub async fn abort_message(&self, id: MessageId, reason: &str) -> Result<Message> {
        let path = format!("api/v1/messages/{id}/abort");
        let body = AbortMessage {
            reason: reason.to_owned(),
        };
        self.json(self.request(Method::POST, &path)?.json(&body))
            .await
    }

    /// Reports what the caller (an agent the message woke) does with message `id`:
    /// `received`, `working` (under `round_robin`, keeps its turn), `done`, `declined`.
    /// Returns the message's receipts.
    pub async fn receipt(&self, id: MessageId, state: ReceiptState) -> Result<Receipts> {
        let path = format!("api/v1/messages/{id}/receipts");
        self.json(
            self.request(Method::POST, &path)?
                .json(&SetReceipt { state }),
        )
        .await
    }

    /// Cancels agents' turns at message `id` (only `agent`'s, when given), or, when `id`
    /// is an agent's streaming reply, aborts it (reason `cancelled`) with its author's
    /// turn. Returns whose turns ended; `conflict` when nothing was running.
    pub async fn cancel(&self, id: MessageId, agent: Option<UserId>) -> Result<Cancelled> {
        let path = format!("api/v1/messages/{id}/cancel");
        let body = CancelTurn { agent_id: agent };
        self.json(self.request(Method::POST, &path)?.json(&body))
            .await
    }

    /// Deletes a message, which remains as a tombstone.
    pub async fn delete_message(&self, id: MessageId) -> Result<Message> {
        let path = format!("api/v1/messages/{id}");
        self.json(self.request(Method::DELETE, &path)?).await
    }

    /// Adds the caller's reaction `emoji` to a message (adding it twice changes
    /// nothing); returns the message with its reactions.
    pub async fn add_reaction(&self, id: MessageId, emoji: &str) -> Result<Message> {
        let path = format!("api/v1/messages/{id}/reactions/{}", encode_segment(emoji));
        self.json(self.request(Method::PUT, &path)?).await
    }

    /// Removes the caller's reaction `emoji` from a message (absent: nothing changes).
    pub async fn remove_reaction(&self, id: MessageId, emoji: &str) -> Result<Message> {
        let path = format!("api/v1/messages/{id}/reactions/{}", encode_segment(emoji));
        self.json(self.request(Method::DELETE, &path)?).await
    }

    /// Sets the caller's status text (at most 140 characters; empty clears it).
    pub async fn set_status(&self, status_text: &str) -> Result<Presence> {
        let body = SetStatus {
            status_text: status_text.to_owned(),
        };
        self.json(self.request(Method::PUT, "api/v1/presence")?.json(&body))
            .await
    }

    /// Moves the caller's read cursor in a channel forward to `message` (it never moves
    /// back); returns what is left unread.
    pub async fn mark_read(&self, channel: ChannelId, message: MessageId) -> Result<ReadState> {
        let path = format!("api/v1/channels/{channel}/read");
        let body = MarkRead {
            message_id: message,
        };
        self.json(self.request(Method::POST, &path)?.json(&body))
            .await
    }

    /// Publishes an arbitrary event to a scope (admin / server token).
    pub async fn publish(&self, req: &Publish) -> Result<Published> {
        self.json(self.request(Method::POST, "api/v1/publish")?.json(req))
            .await
    }

    /// The application logged its user `sub` out (gateway mode; a server key with
    /// `sessions:revoke`): their sockets the connect proxy authenticated close with 3502
    /// on every node, and their credentials are asked about again.
    pub async fn revoke_proxy_sessions(&self, sub: &str) -> Result<()> {
        let body = RevokeProxySessions {
            sub: sub.to_owned(),
        };
        self.empty(
            self.request(Method::POST, "api/v1/proxy/sessions/revoke")?
                .json(&body),
        )
        .await
    }

    /// The declared `topic:` namespaces (gateway mode), as configured (server admins).
    pub async fn namespaces(&self) -> Result<Vec<chorus_api::Namespace>> {
        self.json(self.request(Method::GET, "api/v1/namespaces")?)
            .await
    }

    /// Password-less sign-in by name, only on a server started with `--dev` (404
    /// otherwise): creates the person on first use. This client's token is not used.
    pub async fn dev_login(&self, name: &str) -> Result<UserWithToken> {
        let body = DevLogin {
            name: name.to_owned(),
        };
        self.json(self.request(Method::POST, "api/v1/dev/login")?.json(&body))
            .await
    }

    /// Sets an agent's webhook URL and signing secret (the agent itself or an admin);
    /// `url: None` turns webhooks off. The secret is in the answer, once.
    pub async fn set_webhook(&self, user: UserId, req: &SetWebhook) -> Result<WebhookSettings> {
        let path = format!("api/v1/users/{user}/webhook");
        self.json(self.request(Method::PUT, &path)?.json(req)).await
    }

    /// An agent's webhook deliveries, newest first, with their attempts.
    pub async fn webhook_deliveries(
        &self,
        user: UserId,
        query: &DeliveriesQuery,
    ) -> Result<Vec<WebhookDelivery>> {
        let path = format!("api/v1/users/{user}/webhook-deliveries");
        self.json(self.request(Method::GET, &path)?.query(query))
            .await
    }

    /// Presence of every member of a workspace.
    pub async fn workspace_presence(&self, ws: WorkspaceId) -> Result<Vec<Presence>> {
        let path = format!("api/v1/workspaces/{ws}/presence");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Who observes the workspace's `on_duty` channels.
    pub async fn observers(&self, ws: WorkspaceId) -> Result<UserIds> {
        let path = format!("api/v1/workspaces/{ws}/observers");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// A channel's on-duty list.
    pub async fn on_duty(&self, id: ChannelId) -> Result<UserIds> {
        let path = format!("api/v1/channels/{id}/on-duty");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// A channel's wake list.
    pub async fn wake_list(&self, id: ChannelId) -> Result<UserIds> {
        let path = format!("api/v1/channels/{id}/wake-list");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// A channel's pinned messages, most recently pinned first.
    pub async fn list_pins(&self, id: ChannelId) -> Result<Vec<Pin>> {
        let path = format!("api/v1/channels/{id}/pins");
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Pins a message in its channel (pinning again returns the existing pin).
    pub async fn pin_message(&self, id: MessageId) -> Result<Pin> {
        let path = format!("api/v1/messages/{id}/pin");
        self.json(self.request(Method::PUT, &path)?).await
    }

    /// Unpins a message (not pinned: nothing changes).
    pub async fn unpin_message(&self, id: MessageId) -> Result<()> {
        let path = format!("api/v1/messages/{id}/pin");
        self.empty(self.request(Method::DELETE, &path)?).await
    }

    /// The caller's presence.
    pub async fn my_presence(&self) -> Result<Presence> {
        self.json(self.request(Method::GET, "api/v1/presence")?)
            .await
    }

    /// Creates a server key (server admins); its secret (`key`) is in this answer only.
    pub async fn create_server_key(&self, req: &CreateServerKey) -> Result<CreatedServerKey> {
        self.json(self.request(Method::POST, "api/v1/server-keys")?.json(req))
            .await
    }

    /// Every server key, without secrets (server admins).
    pub async fn list_server_keys(&self) -> Result<Vec<ServerKey>> {
        self.json(self.request(Method::GET, "api/v1/server-keys")?)
            .await
    }

    /// Deletes a server key (server admins).
    pub async fn delete_server_key(&self, id: ServerKeyId) -> Result<()> {
        let path = format!("api/v1/server-keys/{}", id.0);
        self.empty(self.request(Method::DELETE, &path)?).await
    }

    /// The realtime engine's counters (the admin token or a server key with
    /// `stats:read`), as the server's JSON.
    pub async fn stats(&self) -> Result<serde_json::Value> {
        self.json(self.request(Method::GET, "api/v1/realtime/stats")?)
            .await
    }

    /// Liveness: `ok` when the process answers.
    pub async fn health(&self) -> Result<Health> {
        self.json(self.request(Method::GET, "healthz")?).await
    }

    /// Readiness: `ready` when the server can serve (an error with 503 when not).
    pub async fn ready(&self) -> Result<Health> {
        self.json(self.request(Method::GET, "readyz")?).await
    }

    /// The Prometheus metrics text. This client's token is sent as the bearer: give the
    /// client the server's `metrics_token` when it has one.
    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .send(self.request(Method::GET, "metrics")?)
            .await?
            .text()
            .await?)
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        Ok(self.unauthenticated(method, path)?.bearer_auth(&self.token))
    }

    /// A request to `path` with the client's headers and time limit, without its token.
    fn unauthenticated(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Error::Url(format!("{path}: {e}")))?;
        Ok(self
            .http
            .request(method, url)
            .headers(self.headers.clone())
            .timeout(self.timeout))
    }

    /// Sends and turns any non-2xx answer into an error.
    async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(Error::from_response(status, &body))
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        Ok(self.send(request).await?.json().await?)
    }

    async fn empty(&self, request: RequestBuilder) -> Result<()> {
        self.send(request).await.map(drop)
    }
}

/// Every route of the HTTP API this client has a method for: `(method, path as the
/// OpenAPI document writes it, the method's name)`. `tests/coverage.rs` compares it
/// with the server's document, both ways.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/api/v1/messages/{id}/receipts", "receipt"),
    ("POST", "/api/v1/messages/{id}/cancel", "cancel"),
    ("GET", "/api/v1/namespaces", "namespaces"),
    ("POST", "/api/v1/users", "create_user"),
    ("GET", "/api/v1/users", "list_users"),
    ("GET", "/api/v1/me", "me"),
    ("GET", "/api/v1/users/{id}", "user"),
    ("POST", "/api/v1/dev/login", "dev_login"),
    ("PUT", "/api/v1/users/{id}/webhook", "set_webhook"),
    (
        "GET",
        "/api/v1/users/{id}/webhook-deliveries",
        "webhook_deliveries",
    ),
    ("POST", "/api/v1/users/{id}/tokens", "create_token"),
    ("GET", "/api/v1/users/{id}/tokens", "list_tokens"),
    (
        "DELETE",
        "/api/v1/users/{id}/tokens/{token_id}",
        "revoke_token",
    ),
    ("DELETE", "/api/v1/me/token", "sign_out"),
    (
        "POST",
        "/api/v1/users/{id}/sign-in-links",
        "create_sign_in_link",
    ),
    (
        "GET",
        "/api/v1/users/{id}/sign-in-links",
        "list_sign_in_links",
    ),
    (
        "DELETE",
        "/api/v1/users/{id}/sign-in-links/{link_id}",
        "revoke_sign_in_link",
    ),
    ("POST", "/api/v1/sign-in", "sign_in"),
    ("POST", "/api/v1/users/{id}/deactivate", "deactivate_user"),
    ("POST", "/api/v1/users/{id}/reactivate", "reactivate_user"),
    ("POST", "/api/v1/workspaces", "create_workspace"),
    ("GET", "/api/v1/workspaces", "list_workspaces"),
    (
        "POST",
        "/api/v1/workspaces/{id}/members",
        "add_workspace_member",
    ),
    (
        "GET",
        "/api/v1/workspaces/{id}/members",
        "list_workspace_members",
    ),
    (
        "PATCH",
        "/api/v1/workspaces/{id}/members/{user_id}",
        "set_member_role",
    ),
    (
        "DELETE",
        "/api/v1/workspaces/{id}/members/{user_id}",
        "remove_workspace_member",
    ),
    (
        "GET",
        "/api/v1/workspaces/{id}/presence",
        "workspace_presence",
    ),
    ("POST", "/api/v1/workspaces/{id}/channels", "create_channel"),
    ("GET", "/api/v1/workspaces/{id}/channels", "list_channels"),
    ("POST", "/api/v1/workspaces/{id}/dms", "open_dm"),
    ("GET", "/api/v1/workspaces/{id}/observers", "observers"),
    ("PUT", "/api/v1/workspaces/{id}/observers", "set_observers"),
    ("POST", "/api/v1/workspaces/{id}/commands", "create_command"),
    ("GET", "/api/v1/workspaces/{id}/commands", "list_commands"),
    (
        "DELETE",
        "/api/v1/workspaces/{id}/commands/{command_id}",
        "delete_command",
    ),
    ("GET", "/api/v1/channels/{id}", "get_channel"),
    ("PATCH", "/api/v1/channels/{id}", "update_channel"),
    (
        "POST",
        "/api/v1/channels/{id}/members",
        "add_channel_member",
    ),
    (
        "DELETE",
        "/api/v1/channels/{id}/members/{user_id}",
        "remove_channel_member",
    ),
    ("POST", "/api/v1/channels/{id}/join", "join_channel"),
    ("POST", "/api/v1/channels/{id}/leave", "leave_channel"),
    ("POST", "/api/v1/channels/{id}/messages", "send_message"),
    ("GET", "/api/v1/channels/{id}/messages", "list_messages"),
    ("GET", "/api/v1/channels/{id}/pins", "list_pins"),
    ("POST", "/api/v1/channels/{id}/read", "mark_read"),
    ("GET", "/api/v1/channels/{id}/on-duty", "on_duty"),
    ("PUT", "/api/v1/channels/{id}/on-duty", "set_on_duty"),
    ("GET", "/api/v1/channels/{id}/wake-list", "wake_list"),
    ("PUT", "/api/v1/channels/{id}/wake-list", "set_wake_list"),
    ("PATCH", "/api/v1/messages/{id}", "edit_message"),
    ("DELETE", "/api/v1/messages/{id}", "delete_message"),
    (
        "PUT",
        "/api/v1/messages/{id}/reactions/{emoji}",
        "add_reaction",
    ),
    (
        "DELETE",
        "/api/v1/messages/{id}/reactions/{emoji}",
        "remove_reaction",
    ),
    ("PUT", "/api/v1/messages/{id}/pin", "pin_message"),
    ("DELETE", "/api/v1/messages/{id}/pin", "unpin_message"),
    ("POST", "/api/v1/messages/{id}/append", "append_message"),
    ("POST", "/api/v1/messages/{id}/complete", "complete_message"),
    ("POST", "/api/v1/messages/{id}/abort", "abort_message"),
    ("GET", "/api/v1/presence", "my_presence"),
    ("PUT", "/api/v1/presence", "set_status"),
    ("GET", "/api/v1/scopes/{scope}/events", "scope_events"),
    ("GET", "/api/v1/scopes/{scope}/presence", "topic_presence"),
    ("POST", "/api/v1/publish", "publish"),
    (
        "POST",
        "/api/v1/proxy/sessions/revoke",
        "revoke_proxy_sessions",
    ),
    ("GET", "/api/v1/realtime/stats", "stats"),
    ("POST", "/api/v1/server-keys", "create_server_key"),
    ("GET", "/api/v1/server-keys", "list_server_keys"),
    ("DELETE", "/api/v1/server-keys/{id}", "delete_server_key"),
    ("GET", "/healthz", "health"),
    ("GET", "/readyz", "ready"),
    ("GET", "/metrics", "metrics"),
];

/// The connection pool: the built-in roots plus `roots`, and the connect limit.
fn http_client(roots: Option<&ExtraRoots>, connect_timeout: Duration) -> Result<reqwest::Client> {
    let mut http = reqwest::Client::builder().connect_timeout(connect_timeout);
    if let Some(roots) = roots {
        http = roots.add_to(http)?;
    }
    Ok(http.build()?)
}

/// Percent-encodes one path segment: every byte but the unreserved ones (`channel:12`
/// → `channel%3A12`), so a scope name never adds a segment or a query.
fn encode_segment(segment: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `url` with the password of its `user:password@` replaced by `***`, for messages and
/// logs: a base URL may carry the credentials of a proxy in front of the server. Text
/// that does not parse as a URL (what an error about a bad URL names) is redacted the
/// same way: up to its last `@`, after a scheme's `://`, is taken as the user part.
pub fn redact_url(url: &str) -> String {
    if let Ok(mut parsed) = Url::parse(url) {
        if parsed.password().is_some() && parsed.set_password(Some("***")).is_ok() {
            return parsed.into();
        }
        // `user:pw@host` parses as the scheme `user`: not what it looks like.
        if !parsed.cannot_be_a_base() {
            return url.to_owned();
        }
    }
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

/// Parses `base_url` and makes its path end with `/`.
pub(crate) fn base_url_with_slash(base_url: &str) -> Result<Url> {
    let shown = || redact_url(base_url);
    let mut url = Url::parse(base_url).map_err(|e| Error::Url(format!("{}: {e}", shown())))?;
    if url.cannot_be_a_base() {
        return Err(Error::Url(format!("{}: not a base URL", shown())));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Writes a streaming message: [`append`](Self::append) as often as tokens come; the
/// writer sends what piled up at most once per [`interval`](Self::with_interval)
/// (default 50 ms), so a model's tokens cost a few requests a second, not one each.
/// End with [`complete`](Self::complete) or [`abort`](Self::abort) (which send what is
/// still buffered first); a writer dropped without either leaves the message
/// streaming until the server aborts it as idle.
pub struct StreamWriter {
    client: Client,
    message: Message,
    pending: String,
    last_sent: Option<tokio::time::Instant>,
    interval: Duration,
    requests: u64,
}

impl StreamWriter {
    fn new(client: Client, message: Message) -> Self {
        Self {
            client,
            message,
            pending: String::new(),
            last_sent: None,
            interval: Duration::from_millis(50),
            requests: 0,
        }
    }

    /// Sends at most once per `interval`.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The message as opened.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// How many append requests were sent so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Buffers `text`; sends the buffer when the last send is `interval` old.
    pub async fn append(&mut self, text: &str) -> Result<()> {
        self.pending.push_str(text);
        let due = self
            .last_sent
            .is_none_or(|at| at.elapsed() >= self.interval);
        if due { self.flush().await } else { Ok(()) }
    }

    /// Sends what is buffered now.
    pub async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.client
            .append_message(self.message.id, &self.pending)
            .await?;
        self.requests += 1;
        self.pending.clear();
        self.last_sent = Some(tokio::time::Instant::now());
        Ok(())
    }

    /// Sends what is buffered and completes the message; returns it.
    pub async fn complete(mut self) -> Result<Message> {
        self.flush().await?;
        self.client.complete_message(self.message.id, None).await
    }

    /// Completes the message with `text` as its whole text (the buffer is dropped).
    pub async fn complete_with(self, text: &str) -> Result<Message> {
        self.client
            .complete_message(self.message.id, Some(text))
            .await
    }

    /// Sends what is buffered and aborts the message; returns it.
    pub async fn abort(mut self, reason: &str) -> Result<Message> {
        self.flush().await?;
        self.client.abort_message(self.message.id, reason).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        let cases = [
            ("http://u:s3cret@h:7800/p", "http://u:***@h:7800/p"),
            ("https://:s3cret@h/", "https://:***@h/"),
            ("http://u@h/", "http://u@h/"),
            ("http://h:7800/a@b", "http://h:7800/a@b"),
            // Not URLs: what an error about a bad one shows.
            ("http://u:s3cret@h:99999", "http://u:***@h:99999"),
            ("u:s3cret@h:1", "u:***@h:1"),
            ("http://u:s3c/ret@h", "http://u:***@h"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let err = Client::new("http://u:s3cret@h:99999", "t").expect_err("a bad port");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let client = Client::new("http://u:s3cret@h:1", "t").expect("valid");
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn paths_join_under_any_prefix() {
        let base = base_url_with_slash("http://h:1/chorus").expect("valid");
        assert_eq!(
            base.join("api/v1/me").expect("joins").as_str(),
            "http://h:1/chorus/api/v1/me"
        );
        let base = base_url_with_slash("http://h:1").expect("valid");
        assert_eq!(
            base.join("api/v1/me").expect("joins").as_str(),
            "http://h:1/api/v1/me"
        );
        assert!(base_url_with_slash("mailto:x@y").is_err());
    }

    #[test]
    fn scopes_are_one_path_segment() {
        assert_eq!(encode_segment("channel:12"), "channel%3A12");
        assert_eq!(encode_segment("topic:a/b c?"), "topic%3Aa%2Fb%20c%3F");
        assert_eq!(encode_segment("topic:é"), "topic%3A%C3%A9");
    }
}
