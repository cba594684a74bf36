//! The servers under test, each in its own child process so its memory can be read
//! from `/proc` and it competes with the load generator like a real deployment would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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

pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    _data: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// `chorus` next to this executable (both come from `cargo build --release`).
pub fn default_chorus_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("chorus")))
        .unwrap_or_else(|| PathBuf::from("chorus"))
}

impl Target {
    pub async fn start(kind: Kind, chorus_bin: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let data = tempfile::tempdir()?;
        let mut cmd = match kind {
            Kind::Chorus => {
                let mut cmd = Command::new(chorus_bin);
                cmd.arg("serve")
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--data-dir")
                    .arg(data.path())
                    .arg("--admin-token")
                    .arg(ADMIN_TOKEN)
                    .args(extra)
                    .env("CHORUS_LOG", "warn");
                cmd
            }
            Kind::Baseline => {
                let mut cmd = Command::new(std::env::current_exe()?);
                cmd.arg("baseline-server")
                    .arg("--listen")
                    .arg(addr.to_string());
                cmd
            }
        };
        cmd.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {} (build it with cargo build --release -p chorus)",
                kind.name()
            )
        })?;
        let target = Self {
            kind,
            addr,
            child,
            _data: data,
        };
        target.wait_ready().await?;
        Ok(target)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "{} did not start listening on {}",
            self.kind.name(),
            self.addr
        )
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

    /// Stops the server gracefully (SIGTERM), or kills it after 15 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}
