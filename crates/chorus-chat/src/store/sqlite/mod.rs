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
//!
//! The file holds every message and the agents' webhook secrets, so it is private:
//! [`SqliteStore::open`] creates the database file 0600 (and a missing directory 0700)
//! before SQLite opens it, and tightens an older 0644 file. SQLite gives the `-wal` and
//! `-shm` files it creates the database file's mode, so they are 0600 too; ones left
//! over from an older version are tightened after opening. (Not `umask`: it is
//! process-wide, so setting it from a library in a multi-threaded server would race
//! with every other file being created.) Before migrating, the database must pass
//! `PRAGMA quick_check` and take a write lock, or the start fails naming the file.

mod batch;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chorus_realtime::Clock;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::sql::{Dialect, Sql};

/// The embedded store: the one implementation ([`Sql`]) on SQLite.
pub type SqliteStore = Sql<Sqlite>;

impl Dialect for Sqlite {
    // One writer connection: transactions run one after the other, nothing to lock.
    const LOCK_ROW: Option<&'static str> = None;
    const SHARE_ROW: Option<&'static str> = None;
    const SKIP_LOCKED: &'static str = "";
    // Rowid lookups stay allowed.
    const BY_ID: &'static str = "NOT INDEXED";
    const REACTION_ORDER: &'static str = "rowid";
    const USER_ID_LIST: &'static str = "group_concat(user_id)";
    const MULTI_STATEMENT: bool = true;
    const POSITIONAL: bool = true;
    fn json_elements(param: &str) -> String {
        format!("json_each({param})")
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

impl Sql<Sqlite> {
    /// Opens (creating if needed) the database at `path` and migrates it. The file is
    /// made private (0600; a missing directory is created 0700).
    pub async fn open(path: &Path, clock: Clock) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private::create_dir(dir)?;
        }
        private::create_file(path)?;
        let options = SqliteConnectOptions::new().filename(path);
        let store = Self::open_with(options, clock).await?;
        // What SQLite created has the file's mode already; this is for leftovers.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            private::tighten_if_present(Path::new(&side))?;
        }
        Ok(store)
    }

    /// Opens a `sqlite://…` URL.
    pub async fn open_url(url: &str, clock: Clock) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url).context("parsing the SQLite URL")?;
        Self::open_with(options, clock).await
    }

    async fn open_with(options: SqliteConnectOptions, clock: Clock) -> anyhow::Result<Self> {
        let file = options.get_filename().display().to_string();
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .pragma("journal_size_limit", WAL_SIZE_LIMIT)
            .busy_timeout(Duration::from_secs(5));
        // A commit that ran SQLite's automatic checkpoint would copy pages and sync the
        // file before the insert's caller hears back; the checkpointer does it instead.
        // No ping before each acquire (sqlx's default): the database is a local file, and
        // a ping is one more hand-off to SQLite's thread and back before every write.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await
            .with_context(|| format!("opening the SQLite database {file}"))?;
        check_usable(&writer, &file).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .context("running migrations")?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
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
        let (inserts, batcher) = batch::start(writer.clone(), clock);
        Ok(Self {
            writer,
            reader,
            clock,
            plain_inserts: Some(Arc::new(inserts)),
            tasks: vec![checkpointer, batcher],
        })
    }
}

/// At start: the file is a sound database (`PRAGMA quick_check`: every page and
/// index readable, in time linear in the file's size) and can be written (a write lock
/// taken and released, the same check as [`HealthStore::ping`]). Each failure names
/// the file.
///
/// [`HealthStore::ping`]: crate::store::HealthStore::ping
async fn check_usable(writer: &SqlitePool, file: &str) -> anyhow::Result<()> {
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_all(writer)
        .await
        .with_context(|| format!("the SQLite database {file} is damaged (PRAGMA quick_check)"))?;
    if problems.iter().any(|p| p != "ok") {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        anyhow::bail!(
            "the SQLite database {file} is damaged (PRAGMA quick_check: {}); restore it \
             from a backup",
            shown.join("; ")
        );
    }
    writable(writer)
        .await
        .with_context(|| format!("the SQLite database {file} cannot be written"))
}

/// Takes the write lock and lets it go (nothing is written): fails when the file or
/// its directory is read-only, or another process holds the lock past the busy
/// timeout.
async fn writable(writer: &SqlitePool) -> Result<(), sqlx::Error> {
    let tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    tx.rollback().await
}

#[async_trait::async_trait]
impl crate::store::HealthStore for Sql<Sqlite> {
    async fn ping(&self) -> crate::error::Result<()> {
        // The writer, and its write lock: a stuck, locked or read-only database fails
        // here, not only one that does not answer. Cheap: nothing is written.
        writable(&self.writer).await?;
        Ok(())
    }

    async fn close(&self) {
        // No insert is waiting any more (requests were drained before): stop the
        // batcher and the checkpointer, then start the WAL over with everything in the
        // database file, so the next start (or a copy of the file) needs no recovery.
        for task in &self.tasks {
            task.abort();
        }
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await
        {
            tracing::warn!(cause = %err, "final WAL checkpoint failed");
        }
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Owner-only files and directories (Unix; elsewhere nothing is changed).
mod private {
    use std::path::Path;

    use anyhow::Context;

    /// Creates `dir` (and missing parents) readable by the owner only.
    pub(super) fn create_dir(dir: &Path) -> anyhow::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))
    }

    /// Creates `file` 0600 when missing; an existing one is tightened to 0600.
    pub(super) fn create_file(file: &Path) -> anyhow::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(file)
            .with_context(|| format!("opening the SQLite database {}", file.display()))?;
        tighten_if_present(file)
    }

    /// Clears the group and other bits of `file`, if it exists.
    pub(super) fn tighten_if_present(file: &Path) -> anyhow::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = match std::fs::metadata(file) {
                Ok(meta) => meta,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(err) => {
                    return Err(err).with_context(|| format!("reading {}", file.display()));
                }
            };
            let mode = meta.permissions().mode();
            // A file of another owner cannot be changed: say so, but serve.
            if mode & 0o077 != 0
                && let Err(err) =
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
            {
                tracing::warn!(
                    file = %file.display(),
                    cause = %err,
                    "could not make the file private (0600)"
                );
            }
        }
        #[cfg(not(unix))]
        let _ = file;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use chorus_realtime::{Effect, Mark, Marks, Scope};

    use super::*;
    use crate::store::EventStore;

    /// One connection to the database at `path`, migrated as a build before migration
    /// `version` left it.
    async fn migrated_before(path: &Path, version: i64) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let mut before = sqlx::migrate!("./migrations/sqlite");
        let earlier: Vec<_> = before
            .migrations
            .iter()
            .filter(|m| m.version < version)
            .cloned()
            .collect();
        before.migrations = earlier.into();
        before.run(&pool).await.unwrap();
        pool
    }

    /// A database written by a build before migration 0013 (the log a `WITHOUT ROWID`
    /// table) opens with every logged event kept — offset, kind, data, marks, effect —
    /// and the table rebuilt as a rowid table with its unique (scope, seq) index.
    #[tokio::test]
    async fn a_log_written_before_the_rowid_table_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.db");
        let channel = Scope::parse("channel:1").unwrap();
        let user = Scope::parse("user:2").unwrap();
        let marks = Marks {
            default: Mark::Observe,
            users: BTreeMap::from([(2, Mark::Wake), (3, Mark::Skip)]),
        };
        let effect = Effect {
            subscribe: vec![channel.clone()],
            after: Some(1_000_001),
            ..Effect::default()
        };
        {
            let pool = migrated_before(&path, 13).await;
            let rows = [
                (
                    &channel,
                    1_000_001,
                    "member.joined",
                    "{\"n\":1}",
                    None,
                    None,
                ),
                (
                    &channel,
                    1_000_002,
                    "message.created",
                    "{\"n\":2}",
                    Some(serde_json::to_string(&marks).unwrap()),
                    None,
                ),
                (
                    &user,
                    1_000_001,
                    "channel.joined",
                    "{\"n\":3}",
                    None,
                    Some(serde_json::to_string(&effect).unwrap()),
                ),
                (
                    &channel,
                    1_000_003,
                    "message.updated",
                    "{\"n\":4}",
                    None,
                    None,
                ),
            ];
            for (i, (scope, seq, kind, data, marks, effect)) in rows.into_iter().enumerate() {
                sqlx::query(
                    "INSERT INTO events (scope, seq, kind, data, marks, effect, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(scope.as_str())
                .bind(seq)
                .bind(kind)
                .bind(data)
                .bind(marks)
                .bind(effect)
                .bind(1_700_000_000_000_i64 + i as i64)
                .execute(&pool)
                .await
                .unwrap();
            }
            sqlx::query(
                "INSERT INTO scope_heads (scope, head) VALUES ('channel:1', 1000003), ('user:2', 1000001)",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }

        let store = Sql::<Sqlite>::open(&path, Clock::system()).await.unwrap();
        let (events, head) = store.scope_events(&channel, 1_000_000, 10).await.unwrap();
        assert_eq!(head, 1_000_003);
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.offset, e.kind.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some(1_000_001), "member.joined", "{\"n\":1}"),
                (Some(1_000_002), "message.created", "{\"n\":2}"),
                (Some(1_000_003), "message.updated", "{\"n\":4}"),
            ]
        );
        assert_eq!(events[1].marks.as_deref(), Some(&marks));
        let (events, _) = store.scope_events(&user, 1_000_000, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].effect.as_deref(), Some(&effect));

        let (table,): (String,) = sqlx::query_as(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        )
        .fetch_one(&store.writer)
        .await
        .unwrap();
        assert!(!table.contains("WITHOUT ROWID"), "{table}");
        let (index,): (String,) = sqlx::query_as(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'events_scope_seq'",
        )
        .fetch_one(&store.writer)
        .await
        .unwrap();
        assert!(index.contains("UNIQUE"), "{index}");
        // The next append continues the scope after its head.
        let appended = store
            .append_events(vec![chorus_realtime::Publish::new(
                channel.clone(),
                "message.created",
                &5,
            )])
            .await
            .unwrap();
        assert_eq!(appended[0].offset, Some(1_000_004));
    }

    /// A message row is checked without a temporary table: migration 0014 writes the
    /// state rule with OR, where an IN list of three made SQLite build an ephemeral
    /// B-tree for every inserted row. The rule still refuses an unknown state, and a
    /// database written before the migration keeps its rows and stays sound.
    #[tokio::test]
    async fn a_message_row_is_checked_without_a_temporary_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.db");
        {
            let pool = migrated_before(&path, 14).await;
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("PRAGMA foreign_keys = OFF")
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO messages (channel_id, author_id, text, created_at, state)
                 VALUES (1, 1, 'written before', 0, 'streaming')",
            )
            .execute(&mut *conn)
            .await
            .unwrap();
            drop(conn);
            pool.close().await;
        }

        let store = Sql::<Sqlite>::open(&path, Clock::system()).await.unwrap();
        let insert = "INSERT INTO messages (channel_id, author_id, text, created_at, state)
                      VALUES (1, 1, 'after', 0, 'complete')";
        let plan: Vec<(i64, String)> = sqlx::query_as(&format!("EXPLAIN {insert}"))
            .fetch_all(&store.writer)
            .await
            .unwrap();
        let opcodes: Vec<String> = plan.into_iter().map(|(_addr, op)| op).collect();
        assert!(opcodes.iter().any(|op| op == "Insert"), "{opcodes:?}");
        assert!(
            !opcodes.iter().any(|op| op == "OpenEphemeral"),
            "a temporary table per row: {opcodes:?}"
        );

        let refused = sqlx::query(
            "INSERT INTO messages (channel_id, author_id, text, created_at, state)
             VALUES (1, 1, 'bad', 0, 'finished')",
        )
        .execute(&store.writer)
        .await
        .unwrap_err();
        assert!(
            refused.to_string().contains("CHECK constraint failed"),
            "{refused}"
        );
        let kept: Vec<(String, String)> = sqlx::query_as("SELECT text, state FROM messages")
            .fetch_all(&store.writer)
            .await
            .unwrap();
        assert_eq!(
            kept,
            [("written before".to_owned(), "streaming".to_owned())]
        );
        let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&store.writer)
            .await
            .unwrap();
        assert_eq!(integrity, ["ok"]);
    }

    /// An append takes each scope's next offsets, in the order given, whether it is
    /// written in one call (positional parameters) or, too big for one, statement by
    /// statement; a scope's offsets go on from one append to the next.
    #[tokio::test]
    async fn appends_of_any_size_number_each_scope_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sql::<Sqlite>::open(&dir.path().join("chorus.db"), Clock::system())
            .await
            .unwrap();
        let a = Scope::parse("channel:1").unwrap();
        let b = Scope::parse("channel:2").unwrap();
        // 2 events, then 5,000: one call, then over the one call's limit of values.
        let mut n = 0;
        for size in [2, 5_000] {
            let events: Vec<_> = (0..size)
                .map(|i| {
                    n += 1;
                    let scope = if i % 3 == 0 { &b } else { &a };
                    chorus_realtime::Publish::new(scope.clone(), "message.created", &n)
                })
                .collect();
            let appended = store.append_events(events).await.unwrap();
            assert_eq!(appended.len(), size);
        }
        let base = {
            let (events, _) = store.scope_events(&a, 0, 1).await.unwrap();
            events[0].offset.unwrap() - 1
        };
        for (scope, sent) in [(&a, 3_334), (&b, 1_668)] {
            let (events, head) = store.scope_events(scope, 0, 10_000).await.unwrap();
            assert_eq!(events.len(), sent, "{scope}");
            assert_eq!(head, base + sent as u64, "{scope}");
            let offsets: Vec<_> = events.iter().map(|e| e.offset.unwrap()).collect();
            let expected: Vec<_> = (base + 1..=base + sent as u64).collect();
            assert_eq!(offsets, expected, "{scope}");
            let data: Vec<u64> = events
                .iter()
                .map(|e| serde_json::from_str(&e.data).unwrap())
                .collect();
            assert!(data.windows(2).all(|w| w[0] < w[1]), "{scope}: {data:?}");
        }
    }

    /// Migration 0017 on a database that the add-racing-a-removal bug (fixed with it)
    /// had written to: a channel member who is no member of the channel's workspace (nor
    /// a server admin) is taken out of the channel and its delivery lists; the members,
    /// a server admin in the channel, and other channels' rows stay.
    #[tokio::test]
    async fn migration_17_removes_the_channel_members_a_removal_left() {
        use crate::model::{ChannelId, UserId};
        use crate::store::{AgentStore, ChannelStore, DeliveryList};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.db");
        {
            let pool = migrated_before(&path, 17).await;
            for sql in [
                "INSERT INTO users (id, name, display_name, kind, is_admin, created_at) VALUES
                    (1, 'owner', 'Owner', 'human', 0, 0), (2, 'left', 'Left', 'human', 0, 0),
                    (3, 'root', 'Root', 'human', 1, 0), (4, 'other', 'Other', 'human', 0, 0)",
                "INSERT INTO workspaces (id, name, created_by, created_at) VALUES
                    (1, 'acme', 1, 0), (2, 'elsewhere', 4, 0)",
                // `left` was removed from acme, and stayed in its channel; `other` is a
                // member of elsewhere only.
                "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at) VALUES
                    (1, 1, 'owner', 0), (2, 4, 'owner', 0), (2, 2, 'member', 0)",
                "INSERT INTO channels (id, workspace_id, name, kind, created_by, created_at) VALUES
                    (1, 1, 'secret', 'private', 1, 0), (2, 2, 'there', 'public', 4, 0)",
                "INSERT INTO channel_members (channel_id, user_id, joined_at) VALUES
                    (1, 1, 0), (1, 2, 0), (1, 3, 0), (2, 4, 0), (2, 2, 0)",
                "INSERT INTO channel_delivery_lists (channel_id, list, user_id) VALUES
                    (1, 'wake', 1), (1, 'wake', 2), (1, 'on_duty', 2), (2, 'wake', 2)",
            ] {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }

        let store = Sql::<Sqlite>::open(&path, Clock::system()).await.unwrap();
        let members = |ch| store.channel_members(ChannelId(ch));
        assert_eq!(members(1).await.unwrap(), [UserId(1), UserId(3)]);
        assert_eq!(members(2).await.unwrap(), [UserId(2), UserId(4)]);
        let list = |ch, list| store.delivery_list(ChannelId(ch), list);
        assert_eq!(list(1, DeliveryList::Wake).await.unwrap(), [UserId(1)]);
        assert_eq!(list(1, DeliveryList::OnDuty).await.unwrap(), []);
        assert_eq!(list(2, DeliveryList::Wake).await.unwrap(), [UserId(2)]);
    }
}
