//! The servers under test, each in its own child process so its memory can be read
//! from `/proc` and it competes with the load generator like a real deployment would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub const ADMIN_TOKEN: &str = "bench-admin-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chorus,
    Baseline,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Chorus => "chorus",
            Self::Baseline => "baseline",
        }
    }
}

impl Target {
    /// The name of a result row: the kind, `chorus+deflate` with compression.
    pub fn name(&self) -> &'static str {
        if self.deflate {
            "chorus+deflate"
        } else {
            self.kind.name()
        }
    }
}

pub struct Target {
    pub kind: Kind,
    /// Chorus started with `--ws-compression`, and clients offer `permessage-deflate`.
    pub deflate: bool,
    /// The first node: HTTP calls and senders go here.
    pub addr: SocketAddr,
    child: Child,
    /// Further nodes of a multi-node Chorus, and the Redis they share.
    others: Vec<(SocketAddr, Child)>,
    redis: Option<Child>,
    /// How a single Chorus node was started, to start it again ([`Target::restart`]).
    command: Option<(PathBuf, Vec<String>)>,
    data: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// How to start the servers under test.
#[derive(Clone)]
pub struct Launch {
    /// The `chorus` binary, run as `chorus serve …`.
    pub chorus_bin: PathBuf,
    /// Extra arguments for `chorus serve`.
    pub server_args: Vec<String>,
    /// The program and arguments that run the baseline server (then `--listen <addr>`).
    pub baseline: (PathBuf, Vec<String>),
    /// Chorus with `permessage-deflate`: started with `--ws-compression`, and the
    /// clients offer the extension (and inflate what comes compressed).
    pub deflate: bool,
}

impl Launch {
    /// This launch with `permessage-deflate` on.
    pub fn with_deflate(&self) -> Self {
        let mut launch = self.clone();
        launch.server_args.push("--ws-compression".to_owned());
        launch.deflate = true;
        launch
    }
}

impl Target {
    pub async fn start(kind: Kind, launch: &Launch) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let data = tempfile::tempdir()?;
        let (chorus_bin, extra) = (&launch.chorus_bin, &launch.server_args);
        let mut cmd = match kind {
            Kind::Chorus => chorus_command(chorus_bin, addr, data.path(), extra),
            Kind::Baseline => {
                let (program, args) = &launch.baseline;
                let mut cmd = Command::new(program);
                cmd.args(args).arg("--listen").arg(addr.to_string());
                cmd
            }
        };
        let child = spawn(&mut cmd, kind)?;
        let command = (kind == Kind::Chorus).then(|| (chorus_bin.clone(), extra.clone()));
        let mut target = Self {
            kind,
            deflate: launch.deflate && kind == Kind::Chorus,
            addr,
            child,
            others: Vec::new(),
            redis: None,
            command,
            data,
        };
        match kind {
            Kind::Chorus => wait_serving(target.addr, kind.name(), &mut target.child).await?,
            Kind::Baseline => wait_listening(target.addr, kind.name()).await?,
        }
        Ok(target)
    }

    /// `nodes` Chorus processes sharing a Redis started here (`redis_server`) and one
    /// database: `database_url`, or a SQLite file in a temp directory.
    pub async fn start_cluster(
        launch: &Launch,
        nodes: usize,
        redis_server: &Path,
        database_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let redis_addr = free_port()?;
        let redis = Command::new(redis_server)
            .args([
                "--port",
                &redis_addr.port().to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", redis_server.display()))?;
        wait_listening(redis_addr, "redis-server").await?;
        let redis_url = format!("redis://{redis_addr}");
        let database = database_url.map_or_else(
            || {
                format!(
                    "sqlite://{}?mode=rwc",
                    data.path().join("chorus.db").display()
                )
            },
            str::to_owned,
        );
        let mut started = Vec::new();
        for i in 0..nodes.max(1) {
            let addr = free_port()?;
            let mut child = Command::new(&launch.chorus_bin)
                .arg("serve")
                .arg("--data-dir")
                .arg(data.path().join(format!("node{i}")))
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--admin-token")
                .arg(ADMIN_TOKEN)
                .args(&launch.server_args)
                .env("CHORUS_DATABASE_URL", &database)
                .env("CHORUS_REDIS_URL", &redis_url)
                .env("CHORUS_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting chorus (build it with cargo build --release -p chorus)")?;
            // One at a time: the first creates the schema and the admin.
            wait_serving(addr, "chorus", &mut child).await?;
            started.push((addr, child));
        }
        let (addr, child) = started.remove(0);
        Ok(Self {
            kind: Kind::Chorus,
            deflate: launch.deflate,
            addr,
            child,
            others: started,
            redis: Some(redis),
            command: None,
            data,
        })
    }

    /// Stops a single Chorus node gracefully and starts it again on the same address
    /// and data directory; returns once it listens again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let Some((bin, extra)) = &self.command else {
            bail!("only a single Chorus node can be restarted");
        };
        stop_child(&mut self.child).await;
        let mut cmd = chorus_command(bin, self.addr, self.data.path(), extra);
        self.child = spawn(&mut cmd, self.kind)?;
        wait_serving(self.addr, "chorus (restarted)", &mut self.child).await
    }

    /// How many server processes serve clients.
    pub fn nodes(&self) -> usize {
        1 + self.others.len()
    }

    /// The node client `i` connects to: spread evenly over the nodes.
    pub fn node_for(&self, i: usize) -> SocketAddr {
        match i % self.nodes() {
            0 => self.addr,
            k => self.others[k - 1].0,
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_path(&self) -> &'static str {
        match self.kind {
            Kind::Chorus => "/ws",
            Kind::Baseline => "/",
        }
    }

    /// Resident memory of the server process, KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("server exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc status")
    }

    /// The process id of the first node.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// CPU time (user + system) the server processes used so far, summed over the
    /// nodes (not Redis).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for child in std::iter::once(&self.child).chain(self.others.iter().map(|(_, c)| c)) {
            total += process_cpu(child.id().context("server exited")?)?;
        }
        Ok(total)
    }

    /// Stops the servers gracefully (SIGTERM), or kills them after 15 s; then Redis.
    pub async fn stop(mut self) {
        stop_child(&mut self.child).await;
        for (_, child) in &mut self.others {
            stop_child(child).await;
        }
        if let Some(redis) = &mut self.redis {
            stop_child(redis).await;
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`: 100 on every
/// architecture Linux runs these benchmarks on).
const USER_HZ: u64 = 100;

/// The load generator's own CPU time (this process's), to compare what reading each
/// server's frames costs the client.
pub fn own_cpu_time() -> anyhow::Result<Duration> {
    process_cpu(std::process::id())
}

/// User + system CPU time of process `pid`, from `/proc/<pid>/stat` (fields 14 and 15,
/// counted after the command name, which may hold spaces).
fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').context("no command in /proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc stat")?.parse()?)
    };
    Ok(Duration::from_millis(
        (ticks(11)? + ticks(12)?) * 1000 / USER_HZ,
    ))
}

/// The kernel's TCP counters (`TcpExt` of `/proc/net/netstat`), machine-wide: a SYN
/// dropped at a full listen queue shows in `ListenOverflows` / `ListenDrops`, and the
/// client's retry of it in `TCPSynRetrans`.
pub fn tcp_ext() -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let text = std::fs::read_to_string("/proc/net/netstat")?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("no TcpExt in /proc/net/netstat");
    };
    Ok(names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect())
}

/// `perf record -g` of a server process, from [`Profile::start`] until [`Profile::stop`].
pub struct Profile(Child);

impl Profile {
    /// Starts recording `pid` into `out`; returns once `perf` had time to attach.
    pub async fn start(pid: u32, out: &Path) -> anyhow::Result<Self> {
        let child = Command::new("perf")
            .args(["record", "-g", "-q", "-p", &pid.to_string(), "-o"])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting perf record")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Self(child))
    }

    /// Stops recording (SIGINT: `perf` writes its file) and waits for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.0.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), self.0.wait()).await;
    }
}

fn chorus_command(bin: &Path, addr: SocketAddr, data: &Path, extra: &[String]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data)
        .arg("--admin-token")
        .arg(ADMIN_TOKEN)
        .args(extra)
        .env("CHORUS_LOG", "warn");
    cmd
}

fn spawn(cmd: &mut Command, kind: Kind) -> anyhow::Result<Child> {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd.spawn().with_context(|| {
        format!(
            "starting {} (build it with cargo build --release -p chorus)",
            kind.name()
        )
    })
}

async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Until Chorus answers `/healthz`: it binds its port before it opens its database
/// (connections wait in the listen backlog meanwhile), so an accepted TCP connection
/// does not yet say it serves.
async fn wait_serving(addr: SocketAddr, what: &str, child: &mut Child) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before it served: {status}");
        }
        let answer = client
            .get(&url)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("{what} did not start serving on {addr} within 30 s")
}

async fn wait_listening(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not start listening on {addr}")
}
