//! Test support, compiled only with the `test-util` feature (the crates' tests turn it
//! on; the server binary does not ship it): throwaway databases, each test getting an
//! empty database of its own on a shared PostgreSQL server, dropped when it is done.

use anyhow::Context;
use rand::Rng;
use sqlx::{Connection, Executor, PgConnection};

/// An empty database `chorus_test_<random>` on the server behind an admin URL, dropped
/// (with any connections still open to it) when this value is dropped.
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates the database through `admin_url` (a role allowed to `CREATE DATABASE`).
    pub async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("chorus_test_{:016x}", rand::rng().random::<u64>());
        let mut url = url::Url::parse(admin_url).context("parsing the PostgreSQL URL")?;
        url.set_path(&format!("/{name}"));
        let mut conn = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await.ok();
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url: url.into(),
        })
    }

    /// The URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread
        // with its own small runtime can.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await?;
                conn.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(cause = %err, db = %self.name, "dropping a scratch database failed")
            }
            Err(_) => tracing::warn!(db = %self.name, "dropping a scratch database panicked"),
        }
    }
}

/// Runs `sql` (one or more statements) on the database at `url` (`sqlite://…` or
/// `postgres://…`), beside the server using it: how a test injects a fault under a
/// running server (a trigger that fails one row's writes) and takes it away again.
pub async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    if url.starts_with("sqlite:") {
        execute_on::<sqlx::SqliteConnection>(url, sql).await
    } else {
        execute_on::<PgConnection>(url, sql).await
    }
}

/// A connection to the database at `url`, beside the server using it.
async fn connect<C: Connection>(url: &str) -> anyhow::Result<C> {
    C::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

async fn execute_on<C>(url: &str, sql: &str) -> anyhow::Result<()>
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
{
    let mut conn: C = connect(url).await?;
    sqlx::raw_sql(sql).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// A PostgreSQL session beside the server holding advisory lock `key`, so that a
/// statement of the server that takes the same lock (in a trigger a test installed)
/// waits until the test lets it go: how a test holds one of the server's writes in
/// flight. Released by [`release`](Self::release), or when dropped (the connection
/// closes).
pub struct AdvisoryLock {
    conn: PgConnection,
}

impl AdvisoryLock {
    pub async fn take(url: &str, key: i64) -> anyhow::Result<Self> {
        let mut conn: PgConnection = connect(url).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut conn)
            .await?;
        Ok(Self { conn })
    }

    pub async fn release(self) -> anyhow::Result<()> {
        self.conn.close().await?;
        Ok(())
    }
}

/// How many sessions of the PostgreSQL database at `url` are waiting for a lock (an
/// [`AdvisoryLock`] for one): a barrier that says a write of the server is in flight.
pub async fn sessions_waiting_for_a_lock(url: &str) -> anyhow::Result<i64> {
    let mut conn: PgConnection = connect(url).await?;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(waiting)
}
