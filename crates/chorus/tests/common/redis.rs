//! A Redis of the test's own (multi-node tests, the cluster checker): its own port and
//! directory, an append-only file fsynced on every write, restartable on the same port
//! and data.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::free_addr;

/// `redis-server`: `CHORUS_TEST_REDIS_SERVER`, else `/usr/bin/redis-server`, if it exists.
pub fn redis_server() -> Option<PathBuf> {
    [
        std::env::var("CHORUS_TEST_REDIS_SERVER").ok(),
        Some("/usr/bin/redis-server".to_owned()),
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

pub struct Redis {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Starts `bin` on a free loopback port; returns once it accepts connections.
    pub async fn start(bin: PathBuf) -> Self {
        let mut redis = Self {
            bin,
            port: free_addr().port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.up().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and data.
    pub async fn up(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on {}", self.port);
    }

    /// Stops it the way an operator's restart does (SIGTERM: it finishes the AOF).
    pub async fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().unwrap().to_string();
            let status = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .await
                .unwrap();
            assert!(status.success(), "kill -TERM {pid}");
            tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .expect("redis-server did not stop within 30 s")
                .unwrap();
        }
    }

    /// Restarts it without its data (a restart without AOF, a failover to an empty
    /// replica).
    pub async fn wipe(&mut self) {
        self.down().await;
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
        self.up().await;
    }
}
