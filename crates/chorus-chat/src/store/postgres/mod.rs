//! PostgreSQL backend: one connection pool, migrations run on open.
//!
//! Several Chorus nodes may share the database, so nothing here relies on being the
//! only writer: races are settled by unique constraints (`ON CONFLICT`) and row locks,
//! never by a check-then-write in the application. Each area's trait lives in its own
//! file, as in the SQLite backend.

mod agents;
mod channels;
mod keys;
mod messages;
mod pins;
mod reactions;
mod reads;
pub mod scratch;
mod users;
mod workspaces;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::store::rows::{conflict_or, parse};

pub use scratch::ScratchDatabase;

/// How long a request waits for a pooled connection before failing as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to a `postgres://…` (or `postgresql://…`) URL with a pool of up to
    /// `max_connections`, and migrates the database. Fails when the server cannot be
    /// reached now; later outages fail the requests that need the database.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
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
        Ok(Self { pool })
    }
}

#[async_trait::async_trait]
impl crate::store::HealthStore for PgStore {
    async fn ping(&self) -> crate::error::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
