//! Client subcommands: a CLI over the HTTP API and the realtime socket for admins and
//! scripts, built on `chorus-client`. Results go to stdout as JSON lines (one object a
//! line), diagnostics to stderr. No domain logic lives here.

use std::io::Write;

use anyhow::Context;
use chorus_client::{
    AddMember, ChannelId, ChannelKind, Client, ConnectionState, CreateChannel, CreateToken,
    CreateUser, HistoryQuery, MessageId, Policy, Realtime, Role, SendMessage, TokenId, UserId,
    UserKind, UsersQuery, WorkspaceId,
};
use clap::{Args, Subcommand};
use serde::Serialize;

/// Where the server is and who is calling; shared by every command.
#[derive(Args)]
pub struct ConnArgs {
    /// The server's base URL.
    #[arg(long, env = "CHORUS_URL", default_value = "http://127.0.0.1:7800")]
    url: String,
    /// Bearer token: an API token, the admin token, or a JWT.
    #[arg(long, env = "CHORUS_TOKEN", hide_env_values = true)]
    token: String,
    /// PEM file of a CA to trust besides the built-in roots, for an `https://` server
    /// with a self-signed or private-CA certificate.
    #[arg(long, env = "CHORUS_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
}

impl ConnArgs {
    fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_roots(
            &self.url,
            self.token.as_str(),
            self.roots()?,
        )?)
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
    /// Manage workspaces and their members.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage channels and their members.
    #[command(subcommand)]
    Channel(ChannelCommand),
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
    /// Every user, one per line, by id (`deactivated_at` on the deactivated).
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
    /// The tokens, one per line (never their secrets).
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
    /// Add a user to a workspace.
    AddMember {
        workspace_id: WorkspaceId,
        user_id: UserId,
        /// owner, admin, member or guest.
        #[arg(long, default_value = "member")]
        role: Role,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Change a member's role (owner, admin, member or guest).
    SetRole {
        workspace_id: WorkspaceId,
        user_id: UserId,
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
    /// The caller's workspaces, with its role in each.
    List {
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
    /// Add a workspace member to a channel; prints the channel with its members.
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

/// Runs one client subcommand.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::User(cmd) => user(cmd).await,
        ClientCommand::Token(cmd) => token(cmd).await,
        ClientCommand::Workspace(cmd) => workspace(cmd).await,
        ClientCommand::Channel(cmd) => channel(cmd).await,
        ClientCommand::Dm {
            workspace_id,
            user_ids,
            conn,
        } => {
            let opened = conn.client()?.open_dm(workspace_id, &user_ids).await?;
            emit(&opened.channel)
        }
        ClientCommand::Send {
            channel_id,
            text,
            thread,
            idempotency_key,
            conn,
        } => {
            let req = SendMessage {
                thread_id: thread,
                ..SendMessage::new(text)
            };
            let sent = conn
                .client()?
                .send_message(channel_id, &req, idempotency_key.as_deref())
                .await?;
            if sent.replayed {
                eprintln!(
                    "idempotent replay: this key already sent message {}",
                    sent.message.id
                );
            }
            emit(&sent.message)
        }
        ClientCommand::History {
            channel_id,
            limit,
            before,
            after,
            thread,
            conn,
        } => {
            let query = HistoryQuery {
                before,
                after,
                limit,
                thread_id: thread,
            };
            let messages = conn.client()?.list_messages(channel_id, &query).await?;
            messages.iter().try_for_each(emit)
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
        .with_context(|| format!("connecting to Chorus at {}", conn.url))?;
    chorus_mcp::serve_stdio(std::sync::Arc::new(agent))
        .await
        .context("serving MCP on stdio")
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
            emit(&conn.client()?.create_user(&req).await?)
        }
        UserCommand::List { after, conn } => {
            const PAGE: u32 = 200;
            let client = conn.client()?;
            let mut query = UsersQuery {
                after,
                limit: Some(PAGE),
            };
            loop {
                let users = client.list_users(&query).await?;
                users.iter().try_for_each(emit)?;
                match users.last() {
                    Some(last) if users.len() == PAGE as usize => query.after = Some(last.id),
                    _ => return Ok(()),
                }
            }
        }
        UserCommand::Deactivate { user_id, conn } => {
            emit(&conn.client()?.deactivate_user(user_id).await?)
        }
        UserCommand::Reactivate { user_id, conn } => {
            emit(&conn.client()?.reactivate_user(user_id).await?)
        }
    }
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
            emit(&client.create_token(user, &req).await?)
        }
        TokenCommand::List { user, conn } => {
            let client = conn.client()?;
            let user = whose(&client, user).await?;
            client.list_tokens(user).await?.iter().try_for_each(emit)
        }
        TokenCommand::Revoke {
            token_id,
            user,
            conn,
        } => {
            let client = conn.client()?;
            let user = whose(&client, user).await?;
            client.revoke_token(user, token_id).await?;
            Ok(())
        }
    }
}

async fn workspace(cmd: WorkspaceCommand) -> anyhow::Result<()> {
    match cmd {
        WorkspaceCommand::Create { name, conn } => {
            emit(&conn.client()?.create_workspace(&name).await?)
        }
        WorkspaceCommand::AddMember {
            workspace_id,
            user_id,
            role,
            conn,
        } => {
            let req = AddMember { user_id, role };
            emit(
                &conn
                    .client()?
                    .add_workspace_member(workspace_id, &req)
                    .await?,
            )
        }
        WorkspaceCommand::SetRole {
            workspace_id,
            user_id,
            role,
            conn,
        } => emit(
            &conn
                .client()?
                .set_member_role(workspace_id, user_id, role)
                .await?,
        ),
        WorkspaceCommand::RemoveMember {
            workspace_id,
            user_id,
            conn,
        } => {
            conn.client()?
                .remove_workspace_member(workspace_id, user_id)
                .await?;
            Ok(())
        }
        WorkspaceCommand::List { conn } => {
            let workspaces = conn.client()?.list_workspaces().await?;
            workspaces.iter().try_for_each(emit)
        }
        WorkspaceCommand::Observers {
            workspace_id,
            user_ids,
            conn,
        } => emit(
            &conn
                .client()?
                .set_observers(workspace_id, &user_ids)
                .await?,
        ),
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
            emit(&conn.client()?.create_channel(workspace_id, &req).await?)
        }
        ChannelCommand::List { workspace_id, conn } => {
            let channels = conn.client()?.list_channels(workspace_id).await?;
            channels.iter().try_for_each(emit)
        }
        ChannelCommand::AddMember {
            channel_id,
            user_id,
            conn,
        } => {
            let client = conn.client()?;
            client.add_channel_member(channel_id, user_id).await?;
            emit(&client.get_channel(channel_id).await?)
        }
        ChannelCommand::OnDuty {
            channel_id,
            user_ids,
            conn,
        } => emit(&conn.client()?.set_on_duty(channel_id, &user_ids).await?),
        ChannelCommand::WakeList {
            channel_id,
            user_ids,
            conn,
        } => emit(&conn.client()?.set_wake_list(channel_id, &user_ids).await?),
    }
}

/// Prints every event of the connection until Ctrl-C or the server closes for good. A
/// lost connection is re-established and resumed by the client; reconnects go to stderr.
async fn tail(conn: &ConnArgs, scopes: &[String]) -> anyhow::Result<()> {
    let options = chorus_client::Options {
        roots: conn.roots()?,
        ..chorus_client::Options::default()
    };
    let mut live = Realtime::connect_with(&conn.url, &conn.token, options).await?;
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
                Some(event) => emit(&event)?,
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

/// Prints one JSON line to stdout: printing is this CLI's job. `writeln!` rather than
/// `println!` so a closed pipe (`chorus tail | head`) is an error, not a panic.
fn emit(value: &impl Serialize) -> anyhow::Result<()> {
    let line = serde_json::to_string(value)?;
    writeln!(std::io::stdout().lock(), "{line}").context("writing to stdout")
}
