//! [`ChorusMcp`]: the MCP tools, written once against the Rust client ([`Agent`]) and
//! served over both transports. Each tool parses its arguments (schemas derived from the
//! types below), makes the HTTP calls any client would make with the agent's token, and
//! shapes the answer for a model. No rule of Chorus lives here: who may read or write
//! what is the API's answer, passed on as the tool's error.

use std::sync::Arc;
use std::time::Duration;

use chorus_client::{ChannelId, HistoryQuery, MessageId, ReceiptState, SendMessage};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, Implementation, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscriptionFilter,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, Json, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::cursor::Cursor;
use crate::error::ToolError;
use crate::notify;
use crate::pool::AgentPool;
use crate::render::{Budget, MessageOut, ReactionOut};
use crate::wait::{WaitOptions, Waited, wait};

const INSTRUCTIONS: &str = "Chorus is a chat server for humans and AI agents. You act as \
one Chorus user. Loop: wait_for_messages (pass back the cursor it returns) → read_messages \
for context → send_message to answer (thread_id to reply in a thread). list_channels shows \
where you are. Messages that wake you are those the channel's policy says you should act \
on (a mention, your turn, your duty).";

/// Defaults and bounds of the arguments.
const READ_LIMIT: u32 = 50;
const READ_LIMIT_MAX: u32 = 200;
const MAX_CHARS: u32 = 16_000;
const MAX_CHARS_MIN: u32 = 200;
const MAX_CHARS_MAX: u32 = 400_000;
const WAIT_TIMEOUT_MS: u64 = 25_000;
const WAIT_TIMEOUT_MAX_MS: u64 = 60_000;
const WAIT_LIMIT: u32 = 20;
const WAIT_LIMIT_MAX: u32 = 100;

/// Where a call's agent comes from.
#[derive(Clone)]
enum Agents {
    /// `chorus mcp`: one process, one token.
    One(Arc<Agent>),
    /// The server's `/mcp`: the agent of each request's bearer token.
    PerToken(Arc<AgentPool>),
}

/// The Chorus tool server.
#[derive(Clone)]
pub struct ChorusMcp {
    agents: Agents,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for ChorusMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChorusMcp").finish_non_exhaustive()
    }
}

// ---- arguments and results -----------------------------------------------------------

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListChannelsArgs {
    /// Only the channels you are a member of (default false: also the public channels
    /// you could join).
    #[serde(default)]
    pub member_only: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ChannelList {
    /// You.
    pub me: Me,
    pub workspaces: Vec<WorkspaceOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Me {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WorkspaceOut {
    pub id: i64,
    pub name: String,
    /// Your role: owner, admin, member or guest.
    pub role: String,
    pub channels: Vec<ChannelOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ChannelOut {
    pub id: i64,
    pub name: String,
    /// public, private or dm.
    pub kind: String,
    /// Who a message wakes: all, mentions, broadcast, on_duty, custom, round_robin, dm.
    pub policy: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub topic: String,
    /// Whether you are a member (only members are woken).
    pub member: bool,
    /// Top-level messages by others after your read cursor.
    pub unread: i64,
    /// Of those, the ones that mention you.
    pub unread_mentions: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadMessagesArgs {
    /// The channel's id (from list_channels or a wait_for_messages event).
    pub channel_id: i64,
    /// Read this thread's replies (the id of its top-level message) instead of the
    /// channel's top-level messages.
    #[serde(default)]
    pub thread_id: Option<i64>,
    /// A message id: return the messages after it, oldest first (pass the previous
    /// result's `next_cursor` to page forward). Absent: the latest messages.
    #[serde(default)]
    pub after: Option<i64>,
    /// Most messages, 1 to 200 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Character budget of the messages' JSON, 200 to 400,000 (default 16,000): fewer
    /// messages are returned (and `more` or `has_older` set) rather than exceed it; a
    /// single message longer than the budget is cut and marked `truncated`.
    #[serde(default)]
    pub max_chars: Option<u32>,
    /// Also move your read cursor to the newest message returned (default false).
    #[serde(default)]
    pub mark_read: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MessagesRead {
    pub channel_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<i64>,
    /// Oldest first.
    pub messages: Vec<MessageOut>,
    /// Pass as `after` to read what follows: the newest message returned (or the
    /// `after` given, when nothing was returned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
    /// With `after`: more messages follow `next_cursor` already.
    pub more: bool,
    /// Without `after`: older messages exist before the first one returned.
    pub has_older: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageArgs {
    pub channel_id: i64,
    /// The message (Markdown). `@name` mentions a member, which wakes an agent.
    pub text: String,
    /// Reply in the thread of this top-level message.
    #[serde(default)]
    pub thread_id: Option<i64>,
    /// Makes a retry safe: a send repeated with the same key returns the first message
    /// (`replayed: true`) and posts nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SentOut {
    pub message: MessageOut,
    /// An earlier send with the same idempotency key; nothing new was posted.
    pub replayed: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactArgs {
    pub message_id: i64,
    /// One emoji (or short name), 1 to 64 bytes, no whitespace.
    pub emoji: String,
    /// Remove your reaction instead of adding it (default false).
    #[serde(default)]
    pub remove: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Reacted {
    pub message_id: i64,
    /// The message's reactions now.
    pub reactions: Vec<ReactionOut>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportArgs {
    /// The message that woke you.
    pub message_id: i64,
    /// What you do with it: `working` (say it before you start: in a round-robin
    /// channel it keeps your turn, which otherwise passes to the next agent), then
    /// `done`, or `declined` if you will not answer it; `received` only acknowledges.
    pub state: ReportState,
}

/// A receipt's state, as the tool takes it.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    Received,
    Working,
    Done,
    Declined,
}

impl From<ReportState> for ReceiptState {
    fn from(state: ReportState) -> Self {
        match state {
            ReportState::Received => Self::Received,
            ReportState::Working => Self::Working,
            ReportState::Done => Self::Done,
            ReportState::Declined => Self::Declined,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Reported {
    pub message_id: i64,
    /// What every agent the message woke has reported, yours included.
    pub receipts: Vec<ReceiptOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReceiptOut {
    pub user_id: i64,
    pub state: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStatusArgs {
    /// Shown beside your name, at most 140 characters; empty clears it.
    pub text: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusOut {
    pub status_text: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// The `cursor` of the previous wait_for_messages result, unchanged. Absent: from
    /// now.
    #[serde(default)]
    pub cursor: Option<String>,
    /// How long to wait when nothing is new yet, 0 to 60,000 ms (default 25,000; 0 only
    /// looks).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Every new message by others you may read in your channels, not only those that
    /// wake you (default false).
    #[serde(default)]
    pub all: bool,
    /// Most events returned, 1 to 100 (default 20); the rest wait after the cursor.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Character budget of the returned messages, 200 to 400,000 (default 16,000).
    #[serde(default)]
    pub max_chars: Option<u32>,
}

fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ToolError> {
    let value = value.unwrap_or(default);
    if value < min || value > max {
        return Err(ToolError::bad_request(format!(
            "`{name}` must be between {min} and {max}, not {value}"
        )));
    }
    Ok(value)
}

fn as_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn done<T>(result: Result<T, ToolError>) -> Result<Json<T>, CallToolResult> {
    result.map(Json).map_err(CallToolResult::from)
}

// ---- the tools -----------------------------------------------------------------------

#[tool_router]
impl ChorusMcp {
    /// A tool server for one agent (`chorus mcp`).
    pub fn for_agent(agent: Arc<Agent>) -> Self {
        Self {
            agents: Agents::One(agent),
            tool_router: Self::tool_router(),
        }
    }

    /// A tool server that acts as each request's bearer (the server's `/mcp`).
    pub fn for_pool(pool: Arc<AgentPool>) -> Self {
        Self {
            agents: Agents::PerToken(pool),
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "The workspaces you belong to and their channels, with your unread \
                       counts and each channel's wake policy.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_channels(
        &self,
        Parameters(args): Parameters<ListChannelsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ChannelList>, CallToolResult> {
        done(self.list_channels_(args, &ctx).await)
    }

    #[tool(
        description = "Messages of a channel or thread: the latest ones, or those after a \
                       message id (page forward with next_cursor). Within a character budget.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn read_messages(
        &self,
        Parameters(args): Parameters<ReadMessagesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<MessagesRead>, CallToolResult> {
        done(self.read_messages_(args, &ctx).await)
    }

    #[tool(
        description = "Posts a message in a channel, or a reply in a thread (thread_id). \
                       Pass an idempotency_key to make retries safe.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn send_message(
        &self,
        Parameters(args): Parameters<SendMessageArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SentOut>, CallToolResult> {
        done(self.send_message_(args, &ctx).await)
    }

    #[tool(
        description = "Adds (or with remove, takes back) your emoji reaction to a message.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn react(
        &self,
        Parameters(args): Parameters<ReactArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Reacted>, CallToolResult> {
        done(self.react_(args, &ctx).await)
    }

    #[tool(
        description = "Tells the people in the channel what you do with a message that woke \
                       you: working (before you start; in a round-robin channel it keeps your \
                       turn), done, declined, or received.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn report(
        &self,
        Parameters(args): Parameters<ReportArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Reported>, CallToolResult> {
        done(self.report_(args, &ctx).await)
    }

    #[tool(
        description = "Sets your status text, shown beside your name (e.g. what you are \
                       working on); empty clears it.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn set_status(
        &self,
        Parameters(args): Parameters<SetStatusArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<StatusOut>, CallToolResult> {
        done(self.set_status_(args, &ctx).await)
    }

    #[tool(
        description = "Waits (long poll, bounded by timeout_ms) for new messages that wake \
                       you — or with all, any new message in your channels — after cursor, \
                       and returns them with the next cursor. Pass that cursor back \
                       unchanged: no event is ever returned twice to a caller that does.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn wait_for_messages(
        &self,
        Parameters(args): Parameters<WaitArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Waited>, CallToolResult> {
        done(self.wait_for_messages_(args, &ctx).await)
    }
}

impl ChorusMcp {
    /// The agent a call acts as.
    async fn agent(&self, ctx: &RequestContext<RoleServer>) -> Result<Arc<Agent>, ToolError> {
        match &self.agents {
            Agents::One(agent) => {
                if agent.ended() {
                    return Err(ToolError::unavailable(
                        "the connection to Chorus ended (token revoked or expired, or the \
                         user deactivated); restart with valid credentials",
                    ));
                }
                Ok(agent.clone())
            }
            Agents::PerToken(pool) => {
                let token = ctx
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| bearer(&parts.headers))
                    .ok_or_else(|| {
                        ToolError::new("unauthorized", "an Authorization: Bearer token is required")
                    })?;
                pool.get(token).await
            }
        }
    }

    async fn list_channels_(
        &self,
        args: ListChannelsArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<ChannelList, ToolError> {
        let agent = self.agent(ctx).await?;
        let mut workspaces = Vec::new();
        for membership in agent.client.list_workspaces().await? {
            let ws = membership.workspace;
            let channels = agent
                .client
                .list_channels(ws.id)
                .await?
                .into_iter()
                .filter(|c| c.member || !args.member_only)
                .map(|c| ChannelOut {
                    id: c.channel.id.0,
                    name: c.channel.name,
                    kind: c.channel.kind.as_str().to_owned(),
                    policy: c.channel.policy.as_str().to_owned(),
                    topic: c.channel.topic,
                    member: c.member,
                    unread: c.unread,
                    unread_mentions: c.unread_mentions,
                })
                .collect();
            workspaces.push(WorkspaceOut {
                id: ws.id.0,
                name: ws.name,
                role: membership.role.as_str().to_owned(),
                channels,
            });
        }
        Ok(ChannelList {
            me: Me {
                id: agent.me.id.0,
                name: agent.me.name.clone(),
            },
            workspaces,
        })
    }

    async fn read_messages_(
        &self,
        args: ReadMessagesArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<MessagesRead, ToolError> {
        let limit = bounded("limit", args.limit, READ_LIMIT, 1, READ_LIMIT_MAX)?;
        let max_chars = bounded(
            "max_chars",
            args.max_chars,
            MAX_CHARS,
            MAX_CHARS_MIN,
            MAX_CHARS_MAX,
        )?;
        if let Some(after) = args.after
            && after < 0
        {
            return Err(ToolError::bad_request("`after` must be a message id (≥ 0)"));
        }
        let agent = self.agent(ctx).await?;
        let channel = ChannelId(args.channel_id);
        let query = HistoryQuery {
            after: args.after.map(MessageId),
            limit: Some(limit),
            thread_id: args.thread_id.map(MessageId),
            ..HistoryQuery::default()
        };
        let page = agent.client.list_messages(channel, &query).await?;
        let full = page.len() >= as_usize(limit);
        let mut budget = Budget::new(as_usize(max_chars));
        let mut messages = Vec::with_capacity(page.len());
        let mut cut = false;
        // Forward from `after`: the oldest ones are kept; the latest page: the newest.
        let ordered: Vec<_> = if args.after.is_some() {
            page.iter().collect()
        } else {
            page.iter().rev().collect()
        };
        for message in ordered {
            let author = agent.person(message.author_id).await;
            let mut out = MessageOut::new(message, author, agent.me.id);
            if !budget.take(&mut out) {
                cut = true;
                break;
            }
            messages.push(out);
        }
        if args.after.is_none() {
            messages.reverse();
        }
        let newest = messages.last().map(|m| m.id);
        if args.mark_read
            && args.thread_id.is_none()
            && let Some(newest) = newest
        {
            agent.client.mark_read(channel, MessageId(newest)).await?;
        }
        let forward = args.after.is_some();
        Ok(MessagesRead {
            channel_id: channel.0,
            thread_id: args.thread_id,
            messages,
            next_cursor: newest.or(args.after),
            more: forward && (full || cut),
            has_older: !forward && (full || cut),
        })
    }

    async fn send_message_(
        &self,
        args: SendMessageArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<SentOut, ToolError> {
        if let Some(key) = &args.idempotency_key
            && (key.is_empty() || key.len() > 255)
        {
            return Err(ToolError::bad_request(
                "`idempotency_key` must be 1 to 255 bytes",
            ));
        }
        let agent = self.agent(ctx).await?;
        let request = SendMessage {
            thread_id: args.thread_id.map(MessageId),
            ..SendMessage::new(args.text)
        };
        let sent = agent
            .client
            .send_message(
                ChannelId(args.channel_id),
                &request,
                args.idempotency_key.as_deref(),
            )
            .await?;
        Ok(SentOut {
            message: MessageOut::new(&sent.message, agent.person(agent.me.id).await, agent.me.id),
            replayed: sent.replayed,
        })
    }

    async fn react_(
        &self,
        args: ReactArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Reacted, ToolError> {
        let agent = self.agent(ctx).await?;
        let id = MessageId(args.message_id);
        let message = if args.remove {
            agent.client.remove_reaction(id, &args.emoji).await?
        } else {
            agent.client.add_reaction(id, &args.emoji).await?
        };
        Ok(Reacted {
            message_id: message.id.0,
            reactions: message
                .reactions
                .into_iter()
                .map(|r| ReactionOut {
                    emoji: r.emoji,
                    count: r.count,
                })
                .collect(),
        })
    }

    async fn report_(
        &self,
        args: ReportArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Reported, ToolError> {
        let agent = self.agent(ctx).await?;
        let id = MessageId(args.message_id);
        let receipts = agent.client.receipt(id, args.state.into()).await?;
        Ok(Reported {
            message_id: receipts.message_id.0,
            receipts: receipts
                .receipts
                .into_iter()
                .map(|r| ReceiptOut {
                    user_id: r.user_id.0,
                    state: r.state.to_string(),
                })
                .collect(),
        })
    }

    async fn set_status_(
        &self,
        args: SetStatusArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<StatusOut, ToolError> {
        let agent = self.agent(ctx).await?;
        let presence = agent.client.set_status(&args.text).await?;
        Ok(StatusOut {
            status_text: presence.status_text,
        })
    }

    async fn wait_for_messages_(
        &self,
        args: WaitArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Waited, ToolError> {
        let timeout = bounded(
            "timeout_ms",
            args.timeout_ms,
            WAIT_TIMEOUT_MS,
            0,
            WAIT_TIMEOUT_MAX_MS,
        )?;
        let limit = bounded("limit", args.limit, WAIT_LIMIT, 1, WAIT_LIMIT_MAX)?;
        let max_chars = bounded(
            "max_chars",
            args.max_chars,
            MAX_CHARS,
            MAX_CHARS_MIN,
            MAX_CHARS_MAX,
        )?;
        let cursor = args.cursor.as_deref().map(Cursor::decode).transpose()?;
        let agent = self.agent(ctx).await?;
        let options = WaitOptions {
            timeout: Duration::from_millis(timeout),
            all: args.all,
            limit: as_usize(limit),
            max_chars: as_usize(max_chars),
        };
        // Ends early when the client cancels the call or the server stops.
        let cancel = match &self.agents {
            Agents::One(_) => ctx.ct.clone(),
            Agents::PerToken(pool) => {
                let cancel = ctx.ct.child_token();
                let stop = pool.stop().clone();
                let linked = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => linked.cancel(),
                        () = linked.cancelled() => {}
                    }
                });
                cancel
            }
        };
        let result = wait(&agent, cursor, &options, &cancel).await;
        cancel.cancel();
        result
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ChorusMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("chorus", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    // The `chorus://wakes` resource and its subscription (crate::notify).

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            notify::wakes_resource(),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != notify::WAKES_URI {
            return Err(ErrorData::resource_not_found(
                format!(
                    "no resource {}; the one resource is {}",
                    request.uri,
                    notify::WAKES_URI
                ),
                None,
            ));
        }
        let agent = self.agent(&ctx).await.map_err(resource_error)?;
        Ok(notify::read_wakes(&agent).await.into())
    }

    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(notify::accepted_filter())
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), ErrorData> {
        let ctx = subscription.request_context();
        let agent = self.agent(ctx).await.map_err(resource_error)?;
        match &self.agents {
            Agents::One(_) => {
                notify::listen(agent, notify::Source::One, &ctx.ct, &subscription).await
            }
            Agents::PerToken(pool) => {
                let token = ctx
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| bearer(&parts.headers))
                    .unwrap_or_default();
                let source = notify::Source::Pool(pool, token);
                notify::listen(agent, source, pool.stop(), &subscription).await
            }
        }
    }
}

/// A tool error where the protocol wants a JSON-RPC error (resources, subscriptions).
fn resource_error(err: ToolError) -> ErrorData {
    ErrorData::internal_error(err.to_string(), None)
}

/// The bearer token of a request.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn report_is_a_tool_taking_the_four_receipt_states() {
        let router = ChorusMcp::tool_router();
        assert!(router.has_route("report"));
        for (state, want) in [
            ("received", ReceiptState::Received),
            ("working", ReceiptState::Working),
            ("done", ReceiptState::Done),
            ("declined", ReceiptState::Declined),
        ] {
            let args: ReportArgs =
                serde_json::from_value(json!({"message_id": 3, "state": state})).unwrap();
            assert_eq!((args.message_id, ReceiptState::from(args.state)), (3, want));
        }
        for bad in [
            json!({"message_id": 3, "state": "asleep"}),
            json!({"message_id": 3}),
            json!({"message_id": 3, "state": "done", "extra": 1}),
        ] {
            assert!(serde_json::from_value::<ReportArgs>(bad).is_err());
        }
    }
}
