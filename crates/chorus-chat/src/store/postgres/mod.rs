//! PostgreSQL backend: one connection pool, migrations run on open.
//!
//! Several Chorus nodes may share the database, so nothing here relies on being the
//! only writer: races are settled by unique constraints (`ON CONFLICT`) and row locks,
//! never by a check-then-write in the application: the statements are the ones every
//! backend runs (`sql/`), with the row locks and `SKIP LOCKED` of this [`Dialect`].

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chorus_realtime::Clock;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres};

use super::sql::{Dialect, Sql};

/// How long a request waits for a pooled connection before failing as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared store: the one implementation ([`Sql`]) on PostgreSQL.
pub type PgStore = Sql<Postgres>;

impl Dialect for Postgres {
    // `NO KEY UPDATE`: does not block inserts of rows that reference the locked one
    // (their foreign keys take key-share locks).
    const LOCK_ROW: Option<&'static str> = Some("FOR NO KEY UPDATE");
    const SHARE_ROW: Option<&'static str> = Some("FOR SHARE");
    const SKIP_LOCKED: &'static str = "FOR UPDATE SKIP LOCKED";
    const BY_ID: &'static str = "";
    const REACTION_ORDER: &'static str = "seq";
    const USER_ID_LIST: &'static str = "string_agg(user_id::TEXT, ',' ORDER BY user_id)";
    const MULTI_STATEMENT: bool = false;
    const POSITIONAL: bool = false;
    fn json_elements(param: &str) -> String {
        format!("json_array_elements_text(CAST({param} AS json))")
    }
}

impl Sql<Postgres> {
    /// Connects to a `postgres://…` (or `postgresql://…`) URL with a pool of up to
    /// `max_connections`, and migrates the database. Fails when the server cannot be
    /// reached now; later outages fail the requests that need the database.
    pub async fn connect(url: &str, max_connections: u32, clock: Clock) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("parsing the PostgreSQL URL")?;
        // One direct attempt first: it fails at once with the cause (refused, auth,
        // no such database), where the pool would retry until its timeout and only
        // report that it timed out.
        PgConnection::connect_with(&options)
            .await
            .context("connecting to PostgreSQL")?
            .close()
            .await
            .context("connecting to PostgreSQL")?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL")?;
        // sqlx holds a PostgreSQL advisory lock while migrating, so nodes starting
        // together migrate once.
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("running migrations")?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
            clock,
            plain_inserts: None,
            tasks: Vec::new(),
        })
    }
}

#[async_trait::async_trait]
impl crate::store::HealthStore for Sql<Postgres> {
    async fn ping(&self) -> crate::error::Result<()> {
        sqlx::query("SELECT 1").execute(&self.writer).await?;
        Ok(())
    }

    async fn close(&self) {
        // `reader` is the same pool.
        self.writer.close().await;
    }
}
