//! Client subcommands: a CLI over the HTTP API and the realtime socket for admins and
//! scripts, built on `chorus-client`. Results go to stdout as aligned tables, or as JSON
//! lines (one object a line) with `--json`; diagnostics and progress go to stderr. No
//! domain logic lives here.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use chorus_client::{
    AddMember, ApiToken, Channel, ChannelId, ChannelKind, ChannelView, Client, ConnectionState,
    CreateChannel, CreateSignInLink, CreateToken, CreateUser, Event, EventFrame, HistoryQuery,
    Member, Message, MessageId, Policy, Realtime, Role, SendMessage, TokenId, User, UserId,
    UserIds, UserKind, UsersQuery, Workspace, WorkspaceId, WorkspaceMembership,
};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::output::{self, Table, clean, flag, time};

/// Where the server is, who is calling and how to print; shared by every command.
#[derive(Args)]
pub struct ConnArgs {
    /// Print JSON lines (one object a line, as the HTTP API has them) instead of a
    /// table: for scripts.
    #[arg(long)]
    json: bool,
    /// The server's base URL (its value from the environment is not shown: it may
    /// carry a password).
    #[arg(
        long,
        env = "CHORUS_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:7800"
    )]
    url: String,
    /// Bearer token: an API token, the admin token, or a JWT. On the command line it is
    /// visible to other local users (`ps`, /proc): prefer CHORUS_TOKEN or --token-file.
    #[arg(
        long,
        env = "CHORUS_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file"
    )]
    token: Option<String>,
    /// Read the bearer token from this file (trailing newline and spaces dropped); it
    /// takes precedence over --token and CHORUS_TOKEN.
    #[arg(long, value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,
    /// PEM file of a CA to trust besides the built-in roots, for an `https://` server
    /// with a self-signed or private-CA certificate.
    #[arg(long, env = "CHORUS_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
}

impl ConnArgs {
    fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_roots(&self.url, self.token()?, self.roots()?)?)
    }

    /// The content of `--token-file`, else `--token` (clap requires one of them).
    fn token(&self) -> anyhow::Result<String> {
        let Some(path) = &self.token_file else {
            return Ok(self.token.clone().unwrap_or_default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token from {}", path.display()))?;
        let token = text.trim_end();
        if token.is_empty() {
            bail!("no token in {}", path.display());
        }
        Ok(token.to_owned())
    }

    /// The server's URL for messages: without the password it may carry.
    fn shown_url(&self) -> String {
        chorus_client::redact_url(&self.url)
    }

    fn roots(&self) -> anyhow::Result<Option<chorus_client::ExtraRoots>> {
        Ok(match &self.ca_file {
            Some(path) => Some(chorus_client::ExtraRoots::from_pem_file(path)?),
            None => None,
        })
    }
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Manage users (admin token).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens: the caller's own, or any user's with an admin token.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage channels.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// List and manage the members of a workspace or a channel.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Get or create the DM of the caller and the given users.
    Dm {
        workspace_id: WorkspaceId,
        #[arg(required = true)]
        user_ids: Vec<UserId>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Send a message to a channel; prints the message.
    Send {
        channel_id: ChannelId,
        text: String,
        /// Reply in the thread of this top-level message.
        #[arg(long)]
        thread: Option<MessageId>,
        /// Makes retries safe: a repeat returns the first message and creates nothing.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print a channel's messages, oldest first (the latest page by default).
    History {
        channel_id: ChannelId,
        /// Page size (server default 50, at most 200).
        #[arg(long)]
        limit: Option<u32>,
        /// Only messages older than this id.
        #[arg(long)]
        before: Option<MessageId>,
        /// Only messages newer than this id.
        #[arg(long)]
        after: Option<MessageId>,
        /// Every message (after `--after`, if given), paged through 200 at a time.
        #[arg(long, conflicts_with_all = ["limit", "before"])]
        all: bool,
        /// The replies of this thread instead of top-level messages.
        #[arg(long)]
        thread: Option<MessageId>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Follow scopes live (e.g. `channel:3`, `topic:deploys`), one event per line, until
    /// Ctrl-C or the server closes. With no scopes, the auto-subscribed ones.
    Tail {
        scopes: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Serve the token's user as an MCP server on stdin/stdout (what MCP clients
    /// launch): tools to list channels, read, send, react, set a status and wait for
    /// messages that wake it. See docs/mcp.md.
    Mcp {
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user; prints it with its token (shown once).
    Create {
        /// `[a-z0-9_.-]{1,32}`.
        name: String,
        #[arg(long)]
        display_name: Option<String>,
        /// An AI agent rather than a person.
        #[arg(long)]
        agent: bool,
        /// A server administrator.
        #[arg(long)]
        admin: bool,
        /// Where an offline agent is woken.
        #[arg(long)]
        webhook_url: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Every user, by id (deactivated ones with the time).
    List {
        /// Start after this user id.
        #[arg(long)]
        after: Option<UserId>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Deactivate a user: their tokens are refused and their sockets closed; their
    /// messages stay.
    Deactivate {
        user_id: UserId,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Create a one-time sign-in link for a user (admin token); prints the link to hand
    /// over: opened in the web UI, it signs the user in once, until it expires.
    SignInLink {
        user_id: UserId,
        /// Seconds until it stops working: 60 to 604800 (default a day).
        #[arg(long)]
        expires_in: Option<u64>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Reactivate a user: their tokens that were not revoked work again.
    Reactivate {
        user_id: UserId,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it with its secret (shown once).
    Create {
        /// What it is for, e.g. `laptop` or `ci`.
        name: String,
        /// Seconds until it stops working (default: never).
        #[arg(long)]
        expires_in: Option<u64>,
        /// Whose token: default the caller's; another user's needs an admin token.
        #[arg(long)]
        user: Option<UserId>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// The tokens (never their secrets).
    List {
        /// Whose tokens: default the caller's.
        #[arg(long)]
        user: Option<UserId>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Revoke a token by id: it is refused from now on and its sockets close.
    Revoke {
        token_id: TokenId,
        /// Whose token: default the caller's.
        #[arg(long)]
        user: Option<UserId>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace owned by the caller.
    Create {
        name: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// The caller's workspaces, with its role in each.
    List {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Add a user to a workspace (also: `chorus member add --workspace`).
    AddMember {
        workspace_id: WorkspaceId,
        user_id: UserId,
        /// owner, admin, member or guest.
        #[arg(long, default_value = "member")]
        role: Role,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Change a member's role (also: `chorus member role`).
    SetRole {
        workspace_id: WorkspaceId,
        user_id: UserId,
        /// owner, admin, member or guest.
        role: Role,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove a member from the workspace and its channels (your own id: leave it).
    RemoveMember {
        workspace_id: WorkspaceId,
        user_id: UserId,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Replace who observes the workspace's `on_duty` channels (no users: nobody).
    Observers {
        workspace_id: WorkspaceId,
        user_ids: Vec<UserId>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
pub enum ChannelCommand {
    /// Create a channel.
    Create {
        workspace_id: WorkspaceId,
        name: String,
        #[arg(long)]
        private: bool,
        /// An initial member besides the caller (repeatable).
        #[arg(long = "member")]
        members: Vec<UserId>,
        /// all, mentions, broadcast, on_duty, custom or round_robin.
        #[arg(long)]
        policy: Option<Policy>,
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// The workspace's channels the caller can see, with unread counts.
    List {
        workspace_id: WorkspaceId,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Join a public channel.
    Join {
        channel_id: ChannelId,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Leave a channel.
    Leave {
        channel_id: ChannelId,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Add a workspace member to a channel; prints the channel (also: `chorus member
    /// add --channel`).
    AddMember {
        channel_id: ChannelId,
        user_id: UserId,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Replace the on-duty list of an `on_duty` channel (no users: empty it).
    OnDuty {
        channel_id: ChannelId,
        user_ids: Vec<UserId>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Replace the wake list of a `custom` channel (no users: empty it).
    WakeList {
        channel_id: ChannelId,
        user_ids: Vec<UserId>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// A workspace or a channel: whose members.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Place {
    /// A workspace's members.
    #[arg(long)]
    workspace: Option<WorkspaceId>,
    /// A channel's members.
    #[arg(long)]
    channel: Option<ChannelId>,
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// The members, with their workspace role and presence.
    List {
        #[command(flatten)]
        place: Place,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Add a user (to a channel: a member of its workspace).
    Add {
        #[command(flatten)]
        place: Place,
        user_id: UserId,
        /// The workspace role: owner, admin, member or guest.
        #[arg(long, default_value = "member", conflicts_with = "channel")]
        role: Role,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove a member (your own id: leave).
    Remove {
        #[command(flatten)]
        place: Place,
        user_id: UserId,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Change a workspace member's role.
    Role {
        #[arg(long)]
        workspace: WorkspaceId,
        user_id: UserId,
        /// owner, admin, member or guest.
        role: Role,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// Runs one client subcommand.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::User(cmd) => user(cmd).await,
        ClientCommand::Token(cmd) => token(cmd).await,
        ClientCommand::Workspace(cmd) => workspace(cmd).await,
        ClientCommand::Channel(cmd) => channel(cmd).await,
        ClientCommand::Member(cmd) => member(cmd).await,
        ClientCommand::Dm {
            workspace_id,
            user_ids,
            conn,
        } => {
            let opened = conn.client()?.open_dm(workspace_id, &user_ids).await?;
            show(&conn, &[opened.channel])
        }
        ClientCommand::Send {
            channel_id,
            text,
            thread,
            idempotency_key,
            conn,
        } => {
            let client = conn.client()?;
            let req = SendMessage {
                thread_id: thread,
                ..SendMessage::new(text)
            };
            let sent = client
                .send_message(channel_id, &req, idempotency_key.as_deref())
                .await?;
            if sent.replayed {
                eprintln!(
                    "idempotent replay: this key already sent message {}",
                    sent.message.id
                );
            }
            show_messages(&conn, &client, &[sent.message]).await
        }
        ClientCommand::History {
            channel_id,
            limit,
            before,
            after,
            all,
            thread,
            conn,
        } => {
            let client = conn.client()?;
            let query = HistoryQuery {
                before,
                after,
                limit,
                thread_id: thread,
            };
            let messages = if all {
                every_message(&conn, &client, channel_id, query).await?
            } else {
                client.list_messages(channel_id, &query).await?
            };
            show_messages(&conn, &client, &messages).await
        }
        ClientCommand::Tail { scopes, conn } => tail(&conn, &scopes).await,
        ClientCommand::Mcp { conn } => mcp(&conn).await,
    }
}

/// `chorus mcp`: stdout carries the protocol, so diagnostics go to stderr only.
async fn mcp(conn: &ConnArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHORUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let agent = chorus_mcp::Agent::connect(conn.client()?)
        .await
        .with_context(|| format!("connecting to Chorus at {}", conn.shown_url()))?;
    chorus_mcp::serve_stdio(std::sync::Arc::new(agent))
        .await
        .context("serving MCP on stdio")
}

/// Pages forward through a channel's (or thread's) messages from `query.after`. With
/// `--json` each page is printed as it arrives (and nothing is returned); for a table
/// they are collected.
async fn every_message(
    conn: &ConnArgs,
    client: &Client,
    channel: ChannelId,
    mut query: HistoryQuery,
) -> anyhow::Result<Vec<Message>> {
    const PAGE: u32 = 200;
    query.limit = Some(PAGE);
    query.after = Some(query.after.unwrap_or(MessageId(0)));
    let progress = spinner("messages");
    let mut kept = Vec::new();
    loop {
        let page = client.list_messages(channel, &query).await?;
        progress.inc(page.len() as u64);
        let full = page.len() == PAGE as usize;
        query.after = page.last().map(|m| m.id).or(query.after);
        if conn.json {
            page.iter().try_for_each(output::json_line)?;
        } else {
            kept.extend(page);
        }
        if !full {
            progress.finish_and_clear();
            return Ok(kept);
        }
    }
}

/// A spinner with a count on stderr, for work that takes several requests. Not drawn
/// when stderr is not a terminal (scripts, pipes, CI logs).
fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} {msg} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            name,
            display_name,
            agent,
            admin,
            webhook_url,
            conn,
        } => {
            let req = CreateUser {
                display_name,
                kind: if agent {
                    UserKind::Agent
                } else {
                    UserKind::Human
                },
                webhook_url,
                admin,
                ..CreateUser::new(name)
            };
            let created = conn.client()?.create_user(&req).await?;
            if conn.json {
                return output::json_line(&created);
            }
            rows(&[created.user]).print()?;
            output::line(&format!("\ntoken: {}  (shown once)", created.token))?;
            if let Some(secret) = &created.webhook_secret {
                output::line(&format!("webhook secret: {secret}  (shown once)"))?;
            }
            Ok(())
        }
        UserCommand::List { after, conn } => {
            const PAGE: u32 = 200;
            let client = conn.client()?;
            let mut query = UsersQuery {
                after,
                limit: Some(PAGE),
            };
            let progress = spinner("users");
            let mut kept = Vec::new();
            loop {
                let users = client.list_users(&query).await?;
                progress.inc(users.len() as u64);
                let full = users.len() == PAGE as usize;
                query.after = users.last().map(|u| u.id);
                if conn.json {
                    users.iter().try_for_each(output::json_line)?;
                } else {
                    kept.extend(users);
                }
                if !full {
                    break;
                }
            }
            progress.finish_and_clear();
            show(&conn, &kept)
        }
        UserCommand::Deactivate { user_id, conn } => {
            show(&conn, &[conn.client()?.deactivate_user(user_id).await?])
        }
        UserCommand::SignInLink {
            user_id,
            expires_in,
            conn,
        } => {
            let req = CreateSignInLink { expires_in };
            let client = conn.client()?;
            let link = client.create_sign_in_link(user_id, &req).await?;
            if conn.json {
                return output::json_line(&link);
            }
            output::line(&format!(
                "{}\n(works once, until {} UTC)",
                sign_in_url(&client, &link.url_fragment),
                time(Some(link.expires_at))
            ))
        }
        UserCommand::Reactivate { user_id, conn } => {
            show(&conn, &[conn.client()?.reactivate_user(user_id).await?])
        }
    }
}

/// The web UI's address with a sign-in link's fragment: the server serves the UI at its
/// own address. The link is handed to someone else, so without the caller's credentials
/// for a proxy in front of the server.
fn sign_in_url(client: &Client, fragment: &str) -> String {
    let mut base = client.base_url().clone();
    // Both fail only for URLs that cannot have credentials.
    let _ = base.set_username("");
    let _ = base.set_password(None);
    format!("{}/{fragment}", base.as_str().trim_end_matches('/'))
}

/// `--user`, or the caller.
async fn whose(client: &Client, user: Option<UserId>) -> anyhow::Result<UserId> {
    match user {
        Some(user) => Ok(user),
        None => Ok(client.me().await?.id),
    }
}

async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            name,
            expires_in,
            user,
            conn,
        } => {
            let client = conn.client()?;
            let user = whose(&client, user).await?;
            let req = CreateToken {
                expires_in,
                ..CreateToken::new(name)
            };
            let created = client.create_token(user, &req).await?;
            if conn.json {
                return output::json_line(&created);
            }
            rows(&[created.info]).print()?;
            output::line(&format!("\ntoken: {}  (shown once)", created.token))
        }
        TokenCommand::List { user, conn } => {
            let client = conn.client()?;
            let user = whose(&client, user).await?;
            show(&conn, &client.list_tokens(user).await?)
        }
        TokenCommand::Revoke {
            token_id,
            user,
            conn,
        } => {
            let client = conn.client()?;
            let user = whose(&client, user).await?;
            client.revoke_token(user, token_id).await?;
            done(&conn, &format!("revoked token {token_id} of user {user}"))
        }
    }
}

async fn workspace(cmd: WorkspaceCommand) -> anyhow::Result<()> {
    match cmd {
        WorkspaceCommand::Create { name, conn } => {
            show(&conn, &[conn.client()?.create_workspace(&name).await?])
        }
        WorkspaceCommand::List { conn } => show(&conn, &conn.client()?.list_workspaces().await?),
        WorkspaceCommand::AddMember {
            workspace_id,
            user_id,
            role,
            conn,
        } => add_member(&conn, Some(workspace_id), None, user_id, role).await,
        WorkspaceCommand::SetRole {
            workspace_id,
            user_id,
            role,
            conn,
        } => {
            let client = conn.client()?;
            let member = client.set_member_role(workspace_id, user_id, role).await?;
            show(&conn, &[member])
        }
        WorkspaceCommand::RemoveMember {
            workspace_id,
            user_id,
            conn,
        } => remove_member(&conn, Some(workspace_id), None, user_id).await,
        WorkspaceCommand::Observers {
            workspace_id,
            user_ids,
            conn,
        } => {
            let client = conn.client()?;
            let set = client.set_observers(workspace_id, &user_ids).await?;
            show_ids(&conn, "observers", &set)
        }
    }
}

async fn channel(cmd: ChannelCommand) -> anyhow::Result<()> {
    match cmd {
        ChannelCommand::Create {
            workspace_id,
            name,
            private,
            members,
            policy,
            topic,
            conn,
        } => {
            let req = CreateChannel {
                kind: if private {
                    ChannelKind::Private
                } else {
                    ChannelKind::Public
                },
                policy,
                topic,
                member_ids: members,
                ..CreateChannel::new(name)
            };
            let created = conn.client()?.create_channel(workspace_id, &req).await?;
            show(&conn, &[created])
        }
        ChannelCommand::List { workspace_id, conn } => {
            show(&conn, &conn.client()?.list_channels(workspace_id).await?)
        }
        ChannelCommand::Join { channel_id, conn } => {
            show(&conn, &[conn.client()?.join_channel(channel_id).await?])
        }
        ChannelCommand::Leave { channel_id, conn } => {
            conn.client()?.leave_channel(channel_id).await?;
            done(&conn, &format!("left channel {channel_id}"))
        }
        ChannelCommand::AddMember {
            channel_id,
            user_id,
            conn,
        } => add_member(&conn, None, Some(channel_id), user_id, Role::Member).await,
        ChannelCommand::OnDuty {
            channel_id,
            user_ids,
            conn,
        } => {
            let set = conn.client()?.set_on_duty(channel_id, &user_ids).await?;
            show_ids(&conn, "on duty", &set)
        }
        ChannelCommand::WakeList {
            channel_id,
            user_ids,
            conn,
        } => {
            let set = conn.client()?.set_wake_list(channel_id, &user_ids).await?;
            show_ids(&conn, "wake list", &set)
        }
    }
}

async fn member(cmd: MemberCommand) -> anyhow::Result<()> {
    match cmd {
        MemberCommand::List { place, conn } => {
            let client = conn.client()?;
            let members = match (place.workspace, place.channel) {
                (Some(ws), _) => client.list_workspace_members(ws).await?,
                (None, Some(channel)) => channel_members(&client, channel).await?,
                (None, None) => bail!("give --workspace or --channel"),
            };
            show(&conn, &members)
        }
        MemberCommand::Add {
            place,
            user_id,
            role,
            conn,
        } => add_member(&conn, place.workspace, place.channel, user_id, role).await,
        MemberCommand::Remove {
            place,
            user_id,
            conn,
        } => remove_member(&conn, place.workspace, place.channel, user_id).await,
        MemberCommand::Role {
            workspace,
            user_id,
            role,
            conn,
        } => {
            let client = conn.client()?;
            show(
                &conn,
                &[client.set_member_role(workspace, user_id, role).await?],
            )
        }
    }
}

/// A channel's members as workspace members (profile, workspace role, presence).
async fn channel_members(client: &Client, channel: ChannelId) -> anyhow::Result<Vec<Member>> {
    let view = client.get_channel(channel).await?;
    let mut by_id: HashMap<UserId, Member> = client
        .list_workspace_members(view.channel.workspace_id)
        .await?
        .into_iter()
        .map(|m| (m.user.id, m))
        .collect();
    let mut members = Vec::new();
    for id in &view.member_ids {
        match by_id.remove(id) {
            Some(member) => members.push(member),
            // Leaving a workspace leaves its channels: only a race shows this.
            None => eprintln!("user {id} is in the channel but no longer in its workspace"),
        }
    }
    Ok(members)
}

/// Adds `user` to a workspace (with `role`) and prints the member, or to a channel and
/// prints the channel.
async fn add_member(
    conn: &ConnArgs,
    workspace: Option<WorkspaceId>,
    channel: Option<ChannelId>,
    user_id: UserId,
    role: Role,
) -> anyhow::Result<()> {
    let client = conn.client()?;
    match (workspace, channel) {
        (Some(ws), _) => {
            let req = AddMember { user_id, role };
            show(conn, &[client.add_workspace_member(ws, &req).await?])
        }
        (None, Some(channel)) => {
            client.add_channel_member(channel, user_id).await?;
            show(conn, &[client.get_channel(channel).await?])
        }
        (None, None) => bail!("give --workspace or --channel"),
    }
}

async fn remove_member(
    conn: &ConnArgs,
    workspace: Option<WorkspaceId>,
    channel: Option<ChannelId>,
    user_id: UserId,
) -> anyhow::Result<()> {
    let client = conn.client()?;
    match (workspace, channel) {
        (Some(ws), _) => {
            client.remove_workspace_member(ws, user_id).await?;
            done(conn, &format!("removed user {user_id} from workspace {ws}"))
        }
        (None, Some(channel)) => {
            client.remove_channel_member(channel, user_id).await?;
            done(
                conn,
                &format!("removed user {user_id} from channel {channel}"),
            )
        }
        (None, None) => bail!("give --workspace or --channel"),
    }
}

/// Prints every event of the connection until Ctrl-C or the server closes for good. A
/// lost connection is re-established and resumed by the client; reconnects go to stderr.
async fn tail(conn: &ConnArgs, scopes: &[String]) -> anyhow::Result<()> {
    let options = chorus_client::Options {
        roots: conn.roots()?,
        ..chorus_client::Options::default()
    };
    let client = conn.client()?;
    let mut names = Names::default();
    let mut live = Realtime::connect_with(&conn.url, &conn.token()?, options).await?;
    let hello = live.hello();
    eprintln!(
        "connected as user {} (session {}); subscribed to {}",
        hello.user_id,
        hello.session_id,
        hello.scopes.join(", ")
    );
    for scope in scopes {
        live.subscribe(scope, None)
            .await
            .with_context(|| format!("subscribing to {scope}"))?;
        eprintln!("subscribed to {scope}");
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut states = live.state_changes();
    let mut watching = true;
    let interrupted = loop {
        tokio::select! {
            event = live.next_event() => match event {
                Some(event) if conn.json => output::json_line(&event)?,
                Some(event) => {
                    output::line(&event_line(&client, &mut names, &event).await)?;
                }
                None => break false,
            },
            changed = states.changed(), if watching => {
                if changed.is_err() {
                    // The connection ended for good; `next_event` drains what is left.
                    watching = false;
                    continue;
                }
                let state = states.borrow_and_update().clone();
                match state {
                    ConnectionState::Reconnecting { attempt, cause } => {
                        eprintln!("connection lost ({cause}); reconnecting, attempt {attempt}");
                    }
                    ConnectionState::Open => {
                        eprintln!("reconnected (session {})", live.hello().session_id);
                    }
                    ConnectionState::Closed(_) => {}
                }
            }
            _ = &mut ctrl_c => break true,
        }
    };
    let end = if interrupted {
        live.close().await
    } else {
        live.disconnect()
            .context("the connection ended without a reason")?
    };
    eprintln!("closed: {end}");
    Ok(())
}

/// One event for people: `scope  #offset  type  summary`. Messages read as
/// `author: text` (with `[wake]` / `[observe]` when delivery says so); other events
/// show their data as compact JSON.
async fn event_line(client: &Client, names: &mut Names, event: &EventFrame) -> String {
    let offset = event
        .offset
        .map_or_else(|| "-".to_owned(), |o| format!("#{o}"));
    let summary = match Event::decode(&event.kind, &event.data) {
        Some(Event::MessageCreated(m) | Event::MessageUpdated(m)) => {
            names.learn(client, [m.author_id]).await;
            let wake = match event.wake {
                Some(true) => "  [wake]",
                Some(false) => "  [observe]",
                None => "",
            };
            format!("{}: {}{wake}", names.of(m.author_id), message_text(&m))
        }
        Some(Event::Typing(t)) => {
            names.learn(client, [t.user_id]).await;
            format!("{} is typing", names.of(t.user_id))
        }
        Some(Event::PresenceUpdated(p)) => {
            names.learn(client, [p.user_id]).await;
            let state = if p.online { "online" } else { "offline" };
            format!("{} is {state}", names.of(p.user_id))
        }
        _ => clean(&event.data.to_string()),
    };
    format!(
        "{}  {offset}  {}  {summary}",
        clean(&event.scope),
        clean(&event.kind)
    )
}

/// User names by id, looked up once each (`GET /api/v1/users/{id}`); one the caller
/// may not see is shown as `#id`.
#[derive(Default)]
struct Names(HashMap<UserId, String>);

impl Names {
    async fn learn(&mut self, client: &Client, ids: impl IntoIterator<Item = UserId>) {
        for id in ids {
            if self.0.contains_key(&id) {
                continue;
            }
            let name = match client.user(id).await {
                Ok(view) => clean(&view.profile().name),
                Err(_) => format!("#{id}"),
            };
            self.0.insert(id, name);
        }
    }

    fn of(&self, id: UserId) -> String {
        self.0.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    }
}

/// A message's text for a terminal, with what else there is to know about it.
fn message_text(m: &Message) -> String {
    if m.deleted {
        return "(deleted)".to_owned();
    }
    let mut text = clean(&m.text);
    if m.edited_at.is_some() {
        text.push_str("  (edited)");
    }
    if m.reply_count > 0 {
        let s = if m.reply_count == 1 { "y" } else { "ies" };
        text.push_str(&format!("  [{} repl{s}]", m.reply_count));
    }
    for r in &m.reactions {
        text.push_str(&format!("  [{} {}]", clean(&r.emoji), r.count));
    }
    if m.pinned {
        text.push_str("  [pinned]");
    }
    text
}

/// Messages as a table with their authors' names, or as JSON lines.
async fn show_messages(
    conn: &ConnArgs,
    client: &Client,
    messages: &[Message],
) -> anyhow::Result<()> {
    if conn.json {
        return messages.iter().try_for_each(output::json_line);
    }
    let mut names = Names::default();
    names
        .learn(client, messages.iter().map(|m| m.author_id))
        .await;
    let mut table = Table::new(&["ID", "TIME", "AUTHOR", "TEXT"]);
    for m in messages {
        let id = match m.thread_id {
            Some(root) => format!("{} (in {root})", m.id),
            None => m.id.to_string(),
        };
        table.row(vec![
            id,
            time(Some(m.created_at)),
            names.of(m.author_id),
            message_text(m),
        ]);
    }
    table.print()
}

/// What a command that returns nothing did: a line for people, nothing for scripts
/// (the exit status says it).
fn done(conn: &ConnArgs, what: &str) -> anyhow::Result<()> {
    if conn.json {
        Ok(())
    } else {
        output::line(what)
    }
}

fn show_ids(conn: &ConnArgs, what: &str, set: &UserIds) -> anyhow::Result<()> {
    if conn.json {
        return output::json_line(set);
    }
    output::line(&format!("{what}: {}", output::ids(&set.user_ids)))
}

/// Resources as a table (one row each) or as JSON lines.
fn show<T: Row>(conn: &ConnArgs, items: &[T]) -> anyhow::Result<()> {
    if conn.json {
        items.iter().try_for_each(output::json_line)
    } else {
        rows(items).print()
    }
}

fn rows<T: Row>(items: &[T]) -> Table {
    let mut table = Table::new(T::HEADER);
    for item in items {
        table.row(item.cells());
    }
    table
}

/// A resource shown as a table row.
trait Row: Serialize {
    const HEADER: &'static [&'static str];
    fn cells(&self) -> Vec<String>;
}

impl Row for User {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "NAME",
        "DISPLAY NAME",
        "KIND",
        "ADMIN",
        "CREATED",
        "DEACTIVATED",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            clean(&self.name),
            clean(&self.display_name),
            self.kind.to_string(),
            flag(self.is_admin, "admin"),
            time(Some(self.created_at)),
            self.deactivated_at
                .map_or_else(String::new, |t| time(Some(t))),
        ]
    }
}

impl Row for ApiToken {
    const HEADER: &'static [&'static str] = &["ID", "NAME", "CREATED", "EXPIRES", "LAST USED"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            clean(&self.name),
            time(Some(self.created_at)),
            self.expires_at
                .map_or_else(|| "never".to_owned(), |t| time(Some(t))),
            time(self.last_used_at),
        ]
    }
}

impl Row for Workspace {
    const HEADER: &'static [&'static str] = &["ID", "NAME", "CREATED BY", "CREATED"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            clean(&self.name),
            self.created_by.to_string(),
            time(Some(self.created_at)),
        ]
    }
}

impl Row for WorkspaceMembership {
    const HEADER: &'static [&'static str] = &["ID", "NAME", "ROLE", "CREATED"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.workspace.id.to_string(),
            clean(&self.workspace.name),
            self.role.to_string(),
            time(Some(self.workspace.created_at)),
        ]
    }
}

impl Row for Member {
    const HEADER: &'static [&'static str] = &[
        "USER ID",
        "NAME",
        "DISPLAY NAME",
        "KIND",
        "ROLE",
        "ONLINE",
        "STATUS",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.user.id.to_string(),
            clean(&self.user.name),
            clean(&self.user.display_name),
            self.user.kind.to_string(),
            self.role.to_string(),
            flag(self.presence.online, "online"),
            clean(&self.presence.status_text),
        ]
    }
}

impl Row for Channel {
    const HEADER: &'static [&'static str] = &["ID", "WORKSPACE", "NAME", "KIND", "POLICY", "TOPIC"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.workspace_id.to_string(),
            clean(&self.name),
            self.kind.to_string(),
            self.policy.to_string(),
            clean(&self.topic),
        ]
    }
}

impl Row for ChannelView {
    const HEADER: &'static [&'static str] = &[
        "ID", "NAME", "KIND", "POLICY", "JOINED", "UNREAD", "MENTIONS", "TOPIC",
    ];
    fn cells(&self) -> Vec<String> {
        let c = &self.channel;
        vec![
            c.id.to_string(),
            clean(&c.name),
            c.kind.to_string(),
            c.policy.to_string(),
            flag(self.member, "yes"),
            self.unread.to_string(),
            self.unread_mentions.to_string(),
            clean(&c.topic),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_link_carries_no_credentials() {
        let client = Client::new("https://u:proxy-pw@chat.example/chorus", "t").expect("valid");
        assert_eq!(
            sign_in_url(&client, "#signin=chs_x"),
            "https://chat.example/chorus/#signin=chs_x"
        );
    }
}
