//! SQLite backend: one file in WAL mode, migrations run on open.
//!
//! Writes go through a pool of exactly one connection, so writers queue in the pool
//! instead of spinning on SQLITE_BUSY; reads use a separate pool and, thanks to WAL,
//! never wait for the writer.
//!
//! The WAL is restarted by a checkpointer task. SQLite's own automatic checkpoint copies
//! pages back but can only start the log over when no reader is using it, which under a
//! steady load of reads never happens: the log then grows without bound (half a
//! gigabyte in ten seconds of the send benchmark) and every page lookup walks it, so
//! reads and writes slow down the longer the server runs.
//!
//! The checkpointer copies pages back on a connection of its own, and commits never
//! checkpoint (`wal_autocheckpoint = 0`): copying pages and syncing the database file
//! then happen beside the writer, not in its place. On the writer's connection, each
//! checkpoint held up every insert behind it (docs/benchmarks.md, session 7: the send
//! benchmark's p99 went from 3.3–4.2 to 1.4–1.6 ms, and stalls of 130–400 ms seen in 3
//! of 16 light-load fanout runs were not seen in 10).

mod agents;
mod batch;
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
    /// Plain message inserts, group-committed ([`batch`]).
    inserts: tokio::sync::mpsc::Sender<batch::Job>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How often the checkpointer looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// WAL frames (pages) past which the checkpointer restarts the log.
const RESTART_AT_FRAMES: i64 = 2_048;
/// Size the WAL file is cut back to when it is restarted.
const WAL_SIZE_LIMIT: &str = "67108864";

/// Keeps the WAL short: a passive checkpoint on the checkpointer's own connection (which
/// copies what it can without blocking anyone) to learn its length, and a restart once
/// it is long, on the writer's connection: inserts queue for it in the pool, with little
/// left to copy, while it waits for the readers of old snapshots (a few milliseconds).
/// (From another connection, a restart would hold the write lock and the writer would
/// back off in SQLite's busy handler, which sleeps in steps of up to 100 ms.)
async fn checkpoint_forever(checkpointer: SqlitePool, writer: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let passive: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&checkpointer)
                .await;
        let restart = match &passive {
            Ok((_, frames, _)) => *frames >= RESTART_AT_FRAMES,
            Err(err) => {
                tracing::warn!(cause = %err, "WAL checkpoint failed");
                false
            }
        };
        if restart
            && let Err(err) = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                .execute(&writer)
                .await
        {
            tracing::warn!(cause = %err, "WAL restart failed");
        }
    }
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
            .pragma("journal_size_limit", WAL_SIZE_LIMIT)
            .busy_timeout(Duration::from_secs(5));
        // A commit that ran SQLite's automatic checkpoint would copy pages and sync the
        // file before the insert's caller hears back; the checkpointer does it instead.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await
            .context("opening the SQLite database")?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .context("running migrations")?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await
            .context("opening SQLite readers")?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .context("opening the SQLite checkpointer")?;
        let checkpointer =
            tokio::spawn(checkpoint_forever(checkpointer, writer.clone())).abort_handle();
        let (inserts, batcher) = batch::start(writer.clone());
        Ok(Self {
            writer,
            reader,
            inserts,
            tasks: [checkpointer, batcher],
        })
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
