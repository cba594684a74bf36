//! The one implementation of every store trait, for both databases.
//!
//! Each query is written once, with `$n` parameters (PostgreSQL's syntax, which SQLite
//! binds by number too; statements of many values — lists of keys, multi-row inserts,
//! SQLite's one-call batches — take theirs from [`Params`], positional on SQLite), in a
//! store generic over the database: [`Sql<DB>`]. The two backends are two instances of it — [`SqliteStore`](super::SqliteStore) is
//! `Sql<Sqlite>`, [`PgStore`](super::PgStore) is `Sql<Postgres>` — and what really
//! differs between the databases is a [`Dialect`]: opening and migrating
//! (`sqlite/mod.rs`, `postgres/mod.rs`), row locks and `SKIP LOCKED` (which only
//! PostgreSQL needs: SQLite has one writer), and SQLite's group commit of plain message
//! inserts (`sqlite/batch.rs`).
//!
//! The schemas store the same columns with the same representation (ids as 64-bit
//! integers, times as Unix milliseconds, enums as text, lists as JSON text), so one row
//! type per table (`rows.rs`) serves both.
//!
//! Files, one per area: `users` (users, tokens, presence columns), `workspaces`,
//! `channels`, `messages`, `reactions`, `pins`, `reads`, `agents` (delivery lists,
//! round-robin state, webhook queue), `turns` (each agent's turn at a message, its
//! receipts), `keys` (server keys), `commands` (slash commands), `events` (the event
//! log).

mod agents;
mod channels;
mod commands;
mod events;
pub(crate) use events::Append;
mod keys;
mod messages;
mod pins;
mod reactions;
mod reads;
mod turns;
mod users;
mod workspaces;

use std::sync::Arc;

use chorus_realtime::Clock;
use sqlx::database::HasStatementCache;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

use crate::error::{ChatError, Result};
use crate::model::Timestamp;
use crate::store::{Events, Inserted, NewMessage};

/// What differs between the two databases in the statements written once.
pub trait Dialect: Database<QueryResult: RowsAffected> + HasStatementCache {
    /// Appended to a `SELECT … WHERE id = $1` that must hold the row until commit, so
    /// that concurrent writers (on several nodes) serialize on it; `None` where one
    /// writer serializes every transaction anyway (SQLite).
    const LOCK_ROW: Option<&'static str>;
    /// Like [`LOCK_ROW`](Self::LOCK_ROW), but shared: it waits for (and holds off) the
    /// writers that take `LOCK_ROW` or update the row, not other holders of this one.
    const SHARE_ROW: Option<&'static str>;
    /// Appended to the webhook claim's inner `SELECT`: rows another node is claiming
    /// right now are skipped rather than waited for. Empty where there is one writer.
    const SKIP_LOCKED: &'static str;
    /// Written after the table's name in an `UPDATE` whose rows are found by id
    /// (`WHERE id IN (…)`) beside conditions an index range could serve too: SQLite,
    /// which has no statistics here (nothing runs `ANALYZE`), may otherwise read the
    /// whole range and test each row's id. Empty where the planner knows better.
    const BY_ID: &'static str;
    /// The order reactions were added in, as a column of `reactions`.
    const REACTION_ORDER: &'static str;
    /// An aggregate of a group's `user_id`s as text, comma-separated.
    const USER_ID_LIST: &'static str;
    /// Whether one call may carry several statements (`a; b`), run in order.
    const MULTI_STATEMENT: bool;
    /// Whether statements of many values are written with positional parameters
    /// ([`Params::Positional`]; SQLite) rather than numbered ones.
    const POSITIONAL: bool;
    /// The elements of a JSON array bound as the text parameter `param`, as rows of one
    /// column, `value` (text on PostgreSQL, the element's own type on SQLite: compare
    /// numbers as `CAST(value AS BIGINT)`). See [`json_list`].
    fn json_elements(param: &str) -> String;
}

/// Keys for a lookup of many (`WHERE id IN (SELECT … FROM {Dialect::json_elements})`),
/// bound as one parameter: a JSON array. Such a statement is the same for any number of
/// keys, so it is prepared once and kept; a list written out (`IN ($1, $2, …)`) is a new
/// statement for every length, parsed and planned again at every lookup — in a connect
/// storm, SQLite's parser was 5.5 % of the server's time (docs/benchmarks.md, round 2,
/// session 17).
pub(crate) fn json_list<T: serde::Serialize>(keys: &[T]) -> String {
    // Ids (numbers) and strings: nothing here can fail to serialize.
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".to_owned())
}

/// How many rows a statement changed (each driver has its own result type).
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// The most rows one `VALUES` list of a statement of many rows binds: well under
/// SQLite's limit of bound parameters per statement.
pub(crate) const MAX_LIST: usize = 500;

/// How a statement's parameters are written, one after the other: numbered from a first
/// (`$n`: PostgreSQL's syntax, which SQLite binds by number too), or positional (`?`,
/// SQLite's). A statement whose values are bound in the order they appear, each once, is
/// the same statement either way. Statements of many values (lists of keys, multi-row
/// inserts, one-call batches) take the positional form on SQLite: sqlx finds a numbered
/// parameter's value by its name, and SQLite finds a name by scanning all of the
/// statement's, so binding a batch cost the square
/// of its values (~9% of SQLite's thread in `chorus-bench send`, docs/benchmarks.md,
/// "Round 2, session 14").
pub(crate) enum Params {
    Numbered(usize),
    Positional,
}

impl Params {
    /// The parameters of `DB`'s statements of many values, from the first.
    pub(crate) fn of<DB: Dialect>() -> Self {
        if DB::POSITIONAL {
            Params::Positional
        } else {
            Params::Numbered(1)
        }
    }

    /// The next parameter.
    pub(crate) fn next(&mut self) -> String {
        match self {
            Params::Numbered(n) => {
                *n += 1;
                format!("${}", *n - 1)
            }
            Params::Positional => "?".to_owned(),
        }
    }

    /// The next `count` parameters, comma-separated.
    pub(crate) fn list(&mut self, count: usize) -> String {
        let list: Vec<String> = (0..count).map(|_| self.next()).collect();
        list.join(", ")
    }

    /// `(…), (…)`: `rows` tuples of the next `width` parameters each, for a `VALUES` list.
    pub(crate) fn rows(&mut self, rows: usize, width: usize) -> String {
        let tuples: Vec<String> = (0..rows)
            .map(|_| format!("({})", self.list(width)))
            .collect();
        tuples.join(", ")
    }
}

/// Inserts of plain messages done elsewhere than in a transaction of their own (SQLite's
/// group commit, `sqlite/batch.rs`).
#[async_trait::async_trait]
pub(crate) trait PlainInserts: Send + Sync {
    /// `None`: the idempotency key is taken (the caller looks up the earlier message).
    /// The message's `events` are logged in the same transaction.
    async fn insert(
        &self,
        new: &NewMessage,
        events: Events<Inserted>,
    ) -> Result<Option<(Inserted, Vec<chorus_realtime::Publish>)>>;

    /// A message with this id was committed by another path (a transaction of its
    /// own), so the batcher's idea of the next id moves past it.
    fn inserted_elsewhere(&self, id: crate::model::MessageId);
}

/// A store on a database of dialect `DB`.
pub struct Sql<DB: Database> {
    /// Where writes go (SQLite: a pool of one connection, the single writer).
    pub(crate) writer: Pool<DB>,
    /// Where reads go (SQLite: read-only connections; PostgreSQL: the same pool).
    pub(crate) reader: Pool<DB>,
    pub(crate) clock: Clock,
    /// Plain message inserts, when the backend batches them.
    pub(crate) plain_inserts: Option<Arc<dyn PlainInserts>>,
    /// Background tasks of the backend, stopped with the store.
    pub(crate) tasks: Vec<tokio::task::AbortHandle>,
}

impl<DB: Database> Sql<DB> {
    /// The time now, as stored.
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp(self.clock.now_ms())
    }
}

impl<DB: Database> Drop for Sql<DB> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A Rust type stored in, and read from, a column of `DB`. Each area's `impl` states
/// these for the types its rows use, with what sqlx needs to run a statement on `DB`
/// (an executor for its connections, arguments, column indexes): Rust does not carry
/// such bounds from [`Dialect`] to its users, so they are written at each `impl`. (`Option<T>` and `&T` of
/// these are too: sqlx implements them for every such `T`.)
pub trait Column<DB: Database>:
    for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync
{
}

impl<DB: Database, T> Column<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync
{
}

/// Locks row `id` of `table` until the transaction ends, where the dialect has row
/// locks ([`Dialect::LOCK_ROW`]).
pub(crate) async fn lock_row<DB>(conn: &mut DB::Connection, table: &str, id: i64) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Column<DB>,
{
    lock_row_as::<DB>(conn, table, id, DB::LOCK_ROW).await
}

/// A user's cap on what they hold: locks the user's row (so that additions at once are
/// counted one after the other), then counts their rows of `table` (its `column` naming
/// the user); `Conflict` with `refusal` at `cap`. Call it in the addition's transaction.
pub(crate) async fn below_cap<DB>(
    conn: &mut DB::Connection,
    (table, column): (&str, &str),
    user: i64,
    (cap, refusal): (usize, &str),
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    lock_row::<DB>(&mut *conn, "users", user).await?;
    let held: i64 =
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1"))
            .bind(user)
            .fetch_one(&mut *conn)
            .await?;
    if usize::try_from(held).unwrap_or(usize::MAX) >= cap {
        return Err(ChatError::Conflict(refusal.to_owned()));
    }
    Ok(())
}

/// [`lock_row`], shared ([`Dialect::SHARE_ROW`]): ordered with the changes that lock
/// the row, not with other sharers.
pub(crate) async fn share_row<DB>(conn: &mut DB::Connection, table: &str, id: i64) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Column<DB>,
{
    lock_row_as::<DB>(conn, table, id, DB::SHARE_ROW).await
}

async fn lock_row_as<DB>(
    conn: &mut DB::Connection,
    table: &str,
    id: i64,
    lock: Option<&'static str>,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Column<DB>,
{
    if let Some(lock) = lock {
        sqlx::query(&format!("SELECT 1 FROM {table} WHERE id = $1 {lock}"))
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
