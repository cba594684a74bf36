//! The `chorus` binary: `serve` runs the server; `openapi` prints the HTTP API's
//! OpenAPI document; `bench` runs the benchmarks (`chorus-bench`'s library); the other
//! subcommands are a CLI over the HTTP API and the realtime socket (built on
//! `chorus-client`, `cli.rs`).

mod cli;
mod export_ts;
mod output;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use chorus_server::Config;
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// `chorus --version`: the crate version and the commit it was built from (`build.rs`).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CHORUS_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "chorus",
    version = VERSION,
    about = "Realtime collaboration for humans and AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print the HTTP API's OpenAPI document (what `/openapi.json` serves); the
    /// TypeScript client's types are generated from it (`scripts/gen-ts-api`).
    Openapi,
    /// The declared topic namespaces (gateway mode, docs/protocol.md "Namespaces").
    #[command(subcommand)]
    Namespaces(NamespacesCommand),
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Benchmarks: Chorus against a baseline broadcast server on this machine (the
    /// same as the `chorus-bench` binary; docs/benchmarks.md).
    #[command(name = "bench")]
    Bench(chorus_bench::Cli),
    /// Print a shell completion script, e.g.
    /// `chorus completions bash > /etc/bash_completion.d/chorus`,
    /// `chorus completions zsh > "${fpath[1]}/_chorus"`,
    /// `chorus completions fish > ~/.config/fish/completions/chorus.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum NamespacesCommand {
    /// Write a TypeScript module of typed topics, one `defineTopic` descriptor (and its
    /// schema `as const`) per namespace of a server's TOML file, for `@chorus/client`.
    ExportTs(export_ts::ExportTsArgs),
}

/// Flags override the environment, which overrides the TOML file, which overrides defaults.
/// A setting that can hold a secret (a token, a key, a URL with a password) hides its
/// environment value from `--help`.
#[derive(Args)]
struct ServeArgs {
    /// TOML file with any of the settings below (keys as in `chorus_server::Config`).
    #[arg(long, env = "CHORUS_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "CHORUS_LISTEN")]
    listen: Option<SocketAddr>,
    #[arg(long, env = "CHORUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "CHORUS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Most connections to PostgreSQL (ignored for SQLite).
    #[arg(long, env = "CHORUS_DATABASE_POOL_SIZE")]
    database_pool_size: Option<u32>,
    #[arg(long, env = "CHORUS_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// PEM CA file for a `rediss://` Redis with a private CA.
    #[arg(long, env = "CHORUS_REDIS_CA_FILE")]
    redis_ca_file: Option<PathBuf>,
    #[arg(long, env = "CHORUS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// HS256 secret for JWTs: at least 32 bytes.
    #[arg(long, env = "CHORUS_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM public key (RSA or P-256) for RS256 / ES256 JWTs.
    #[arg(long, env = "CHORUS_JWT_PUBLIC_KEY_FILE")]
    jwt_public_key_file: Option<PathBuf>,
    /// JWKS for RS256 / ES256 JWTs: a file or an https:// URL (http:// to loopback only).
    #[arg(long, env = "CHORUS_JWT_JWKS", hide_env_values = true)]
    jwt_jwks: Option<String>,
    /// Let a JWT sign in a server admin (off: a token naming one is refused).
    #[arg(long, env = "CHORUS_JWT_ADMINS", value_parser = BoolishValueParser::new())]
    jwt_admins: bool,
    /// Bearer token `/metrics` requires (unset: `/metrics` is open).
    #[arg(long, env = "CHORUS_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Password-less login for local trials (never in production).
    #[arg(long, env = "CHORUS_DEV", value_parser = BoolishValueParser::new())]
    dev: bool,
    #[arg(long, env = "CHORUS_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Offer WebSocket compression (permessage-deflate) to clients that ask for it.
    #[arg(long, env = "CHORUS_WS_COMPRESSION", value_parser = BoolishValueParser::new())]
    ws_compression: bool,
    #[arg(long, env = "CHORUS_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    #[arg(long, env = "CHORUS_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    #[arg(long, env = "CHORUS_QUEUE_CAPACITY")]
    queue_capacity: Option<usize>,
    #[arg(long, env = "CHORUS_RETENTION_EVENTS")]
    retention_events: Option<usize>,
    #[arg(long, env = "CHORUS_RETENTION_SECS")]
    retention_secs: Option<u64>,
    /// One node: the event log's latest events kept in memory at start, for resumes
    /// after a restart; 0 = none.
    #[arg(long, env = "CHORUS_WARM_EVENTS")]
    warm_events: Option<usize>,
    #[arg(long, env = "CHORUS_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: Option<u64>,
    /// Connections queued by the kernel before they are accepted (capped by
    /// net.core.somaxconn); sized for reconnect storms.
    #[arg(long, env = "CHORUS_LISTEN_BACKLOG")]
    listen_backlog: Option<u32>,
    /// HTTP requests per second per token; 0 = unlimited.
    #[arg(long, env = "CHORUS_HTTP_PER_SEC")]
    http_per_sec: Option<u32>,
    #[arg(long, env = "CHORUS_HTTP_BURST")]
    http_burst: Option<u32>,
    /// WebSocket frames per second per connection, and burst.
    #[arg(long, env = "CHORUS_INBOUND_PER_SEC")]
    inbound_per_sec: Option<u32>,
    #[arg(long, env = "CHORUS_INBOUND_BURST")]
    inbound_burst: Option<u32>,
    /// Most subscriptions one connection may hold (and scopes one `resume` may name).
    #[arg(long, env = "CHORUS_MAX_SUBSCRIPTIONS")]
    max_subscriptions: Option<usize>,
    #[arg(long, env = "CHORUS_TYPING_PER_MINUTE")]
    typing_per_minute: Option<u32>,
    /// Workspaces one user (a server admin aside) may create (default 100).
    #[arg(long, env = "CHORUS_MAX_WORKSPACES_PER_USER")]
    max_workspaces_per_user: Option<usize>,
    /// Streaming messages: the roll-up window (ms) and the idle time (ms) after which
    /// the server aborts a stream.
    #[arg(long, env = "CHORUS_STREAM_ROLLUP_MS")]
    stream_rollup_ms: Option<u64>,
    #[arg(long, env = "CHORUS_STREAM_IDLE_MS")]
    stream_idle_ms: Option<u64>,
    /// Loop guard: agent messages in a row, and per minute, in a channel before agents
    /// stop being woken there (until a person writes); 0 = off.
    #[arg(long, env = "CHORUS_LOOP_GUARD_RUN")]
    loop_guard_run: Option<u32>,
    #[arg(long, env = "CHORUS_LOOP_GUARD_PER_MINUTE")]
    loop_guard_per_minute: Option<u32>,
    /// `round_robin`: how long (ms) a woken agent has to report `working` before the
    /// turn passes to the next agent.
    #[arg(long, env = "CHORUS_TURN_TIMEOUT_MS")]
    turn_timeout_ms: Option<u64>,
    #[arg(long, env = "CHORUS_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Log as JSON lines.
    #[arg(long, env = "CHORUS_LOG_JSON", value_parser = BoolishValueParser::new())]
    log_json: bool,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field { config.$field = v; }
            )*};
        }
        macro_rules! set_opt {
            ($($field:ident),*) => {$(
                if self.$field.is_some() { config.$field = self.$field; }
            )*};
        }
        set!(
            listen,
            data_dir,
            heartbeat_ms,
            max_message_bytes,
            max_frame_bytes,
            queue_capacity,
            retention_events,
            retention_secs,
            warm_events,
            shutdown_grace_ms,
            listen_backlog,
            max_body_bytes,
            http_per_sec,
            http_burst,
            inbound_per_sec,
            inbound_burst,
            max_subscriptions,
            typing_per_minute,
            max_workspaces_per_user,
            stream_rollup_ms,
            stream_idle_ms,
            loop_guard_run,
            loop_guard_per_minute,
            turn_timeout_ms,
            database_pool_size
        );
        set_opt!(database_url, redis_url, admin_token, jwt_secret);
        set_opt!(redis_ca_file);
        set_opt!(jwt_public_key_file, jwt_jwks);
        set_opt!(metrics_token);
        config.dev |= self.dev;
        config.ws_compression |= self.ws_compression;
        config.jwt_admins |= self.jwt_admins;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Openapi => openapi(),
        Command::Namespaces(NamespacesCommand::ExportTs(args)) => export_ts::run(&args),
        Command::Client(cmd) => cli::run(cmd).await,
        Command::Bench(args) => chorus_bench::run(args, chorus_bench::Host::Chorus).await,
        Command::Completions { shell } => completions(shell),
    }
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use std::io::Write;
    // Into a buffer first: `generate` panics on a write error (`… | head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "chorus", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

fn openapi() -> anyhow::Result<()> {
    use std::io::Write;
    let doc = chorus_server::openapi()
        .to_pretty_json()
        .context("serializing the OpenAPI document")?;
    writeln!(std::io::stdout().lock(), "{doc}").context("writing to stdout")
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_env("CHORUS_LOG").unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config_file = args.config.clone();
    let config = args.into_config()?;
    let listener = chorus_server::bind(config.listen, config.listen_backlog)
        .with_context(|| format!("binding {}", config.listen))?;
    let data_dir = config.data_dir.clone();
    let built = chorus_server::build(config).await?;
    if let Some(token) = &built.bootstrap_token {
        let path = data_dir.join("admin.token");
        write_secret(&path, token)?;
        eprintln!(
            "\nCreated the admin user. Its token (shown once) is:\n\n    {token}\n\nIt is also in {} (mode 600).\n",
            path.display()
        );
    }
    tracing::info!(addr = %listener.local_addr()?, "chorus listening");
    #[cfg(unix)]
    if let Some(path) = config_file {
        tokio::spawn(reload_on_sighup(path, built.state.clone()));
    }
    chorus_server::run(listener, built.state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        // Private like the data dir it usually is (0700).
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` applies to a file created now: one that was there keeps its own, so it is
    // made private before the secret goes in.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    writeln!(file, "{secret}")?;
    Ok(())
}

/// SIGHUP: the TOML file's `namespaces` are read again and replace the running ones;
/// connections stay open. A file that does not parse, or declares a bad namespace, is
/// logged and the running rules are kept.
#[cfg(unix)]
async fn reload_on_sighup(path: PathBuf, state: chorus_server::AppState) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("SIGHUP cannot be caught: namespaces will not reload");
        return;
    };
    while hangups.recv().await.is_some() {
        let reloaded = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|text| {
                toml::from_str::<Config>(&text)
                    .with_context(|| format!("parsing {}", path.display()))
            })
            .and_then(|config| chorus_server::reload_namespaces(&state, config.namespaces));
        match reloaded {
            Ok(count) => tracing::info!(namespaces = count, "namespaces reloaded"),
            Err(err) => {
                tracing::error!(cause = %format!("{err:#}"), "namespaces not reloaded; the running ones stay")
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
