//! SQLite backend: one file in WAL mode, migrations run on open.
//!
//! Writes go through a pool of exactly one connection, so writers queue in the pool
//! instead of spinning on SQLITE_BUSY; reads use a separate pool and, thanks to WAL,
//! never wait for the writer.

mod agents;
mod channels;
mod messages;
mod pins;
mod reactions;
mod reads;
mod users;
mod workspaces;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::store::rows::{conflict_or, parse};

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::new().filename(path);
        Self::open_with(options).await
    }

    /// Opens a `sqlite://…` URL.
    pub async fn open_url(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url).context("parsing the SQLite URL")?;
        Self::open_with(options).await
    }

    async fn open_with(options: SqliteConnectOptions) -> anyhow::Result<Self> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .context("opening the SQLite database")?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .context("running migrations")?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .context("opening SQLite readers")?;
        Ok(Self { writer, reader })
    }
}

#[async_trait::async_trait]
impl crate::store::HealthStore for SqliteStore {
    async fn ping(&self) -> crate::error::Result<()> {
        // The writer: it is the connection a stuck or locked database would hold up.
        sqlx::query("SELECT 1").execute(&self.writer).await?;
        Ok(())
    }
}
