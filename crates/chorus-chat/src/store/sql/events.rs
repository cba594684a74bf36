//! The event log: appending a change's events in its transaction, reading a scope's
//! events back, trimming what left the retention window.

use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use chorus_realtime::event::{Effect, Marks};
use chorus_realtime::{Publish, Scope};
use sqlx::query::QueryAs;
use sqlx::{ColumnIndex, Database, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, Params, RowsAffected, Sql};
use crate::error::{ChatError, Result};
use crate::model::Timestamp;
use crate::store::{EventStore, NewWebhookDelivery, Outbox};

/// A row of `events`: offset, kind, data, marks, effect, time (ms).
type EventRow = (i64, String, String, Option<String>, Option<String>, i64);

fn json_text<T: serde::Serialize>(value: Option<&T>) -> Result<Option<String>> {
    value
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| ChatError::Internal(e.into()))
}

impl<DB> Sql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
{
    /// Appends `events` on `conn` (inside the caller's transaction): each gets its
    /// scope's next offset, in the order given. Taking a scope's next offsets locks its
    /// head row until commit (SQLite: the single writer is held), so a scope's offsets
    /// commit in order and a rolled-back change gives its offsets back. Returns the
    /// events with their offsets and log time.
    pub(crate) async fn log_events(
        conn: &mut DB::Connection,
        at: Timestamp,
        outbox: impl Into<Outbox>,
    ) -> Result<Vec<Publish>> {
        let mut outbox = outbox.into();
        let then = outbox.then.take();
        let mut logged = Self::log_events_then(&mut *conn, at, outbox, None).await?;
        if let Some(then) = then {
            let more = then(&logged);
            logged.extend(Self::log_events_then(conn, at, more.into(), None).await?);
        }
        Ok(logged)
    }

    /// [`log_events`](Self::log_events), then `tail` (e.g. `COMMIT`) — in the same call
    /// to the database where the dialect runs several statements per call (SQLite: one
    /// hand-off to its thread for the whole append).
    pub(crate) async fn log_events_then(
        conn: &mut DB::Connection,
        at: Timestamp,
        outbox: Outbox,
        tail: Option<&str>,
    ) -> Result<Vec<Publish>> {
        debug_assert!(outbox.then.is_none(), "`then` is logged by `log_events`");
        let Some(append) = Append::new(outbox, at)? else {
            if let Some(tail) = tail {
                sqlx::query(tail).execute(&mut *conn).await?;
            }
            return Ok(Vec::new());
        };
        let heads: Vec<(String, i64)> = if DB::MULTI_STATEMENT && append.params() <= MAX_PARAMS {
            let mut sql = append.statements(&mut Params::of::<DB>());
            if let Some(tail) = tail {
                sql.push_str("; ");
                sql.push_str(tail);
            }
            append
                .bind(sqlx::query_as(&sql))
                .fetch_all(&mut *conn)
                .await?
        } else {
            let mut heads = Vec::with_capacity(append.heads.len());
            for (scope, count) in &append.heads {
                let head: (String, i64) = sqlx::query_as(&head_sql(&mut Params::of::<DB>(), true))
                    .bind(scope.as_str())
                    .bind(*count)
                    .bind(*count)
                    .fetch_one(&mut *conn)
                    .await?;
                heads.push(head);
            }
            // In statements of at most ROWS_PER_INSERT rows: far under both databases'
            // limits on bound values however many events one change logs (a channel
            // created with 10,000 members logs 10,000 joins).
            for start in (0..append.rows.len()).step_by(ROWS_PER_INSERT) {
                let rows = start..append.rows.len().min(start + ROWS_PER_INSERT);
                let sql = events_sql(&mut Params::of::<DB>(), rows.len());
                append
                    .bind_rows(sqlx::query_as::<_, (i64,)>(&sql), rows)
                    .fetch_all(&mut *conn)
                    .await?;
            }
            for start in (0..append.webhooks.len()).step_by(ROWS_PER_INSERT) {
                let webhooks = start..append.webhooks.len().min(start + ROWS_PER_INSERT);
                let sql = webhooks_sql(&mut Params::of::<DB>(), webhooks.len());
                append
                    .bind_webhooks(sqlx::query_as::<_, (i64,)>(&sql), webhooks)
                    .fetch_all(&mut *conn)
                    .await?;
            }
            if let Some(tail) = tail {
                sqlx::query(tail).execute(&mut *conn).await?;
            }
            heads
        };
        append.numbered(&heads)
    }
}

/// Most values bound in the one call of a dialect that runs several statements per call
/// (SQLite's limit is 32,766); a bigger append goes statement by statement.
const MAX_PARAMS: usize = 30_000;

/// Most rows in one insert of events or webhook deliveries (eight values each at most).
const ROWS_PER_INSERT: usize = 1_000;

/// Moves a scope's head on by as many events as it logs (a new scope starts at the base,
/// the empty scope's row); binds the scope, the count, the count again. The row stays locked
/// until commit. Then the scope's new head: returned (`RETURNING`, binds nothing more),
/// or selected by a second statement binding the scope again (for SQLite's one-call
/// batches: SQLite buffers a `RETURNING`'s rows in a temporary table, built and dropped
/// for each statement). The head is read from the base with a subquery, not `INSERT …
/// SELECT` from the table itself, which SQLite also buffers in a temporary table.
fn head_sql(p: &mut Params, returning: bool) -> String {
    let mut sql = format!(
        "INSERT INTO scope_heads (scope, head)
         VALUES ({}, (SELECT head FROM scope_heads WHERE scope = '') + {})
         ON CONFLICT (scope) DO UPDATE SET head = scope_heads.head + {}",
        p.next(),
        p.next(),
        p.next()
    );
    if returning {
        sql.push_str(" RETURNING scope, head");
    } else {
        sql.push_str("; SELECT scope, head FROM scope_heads WHERE scope = ");
        sql.push_str(&p.next());
    }
    sql
}

/// Inserts `rows` events, eight values each (scope, scope again, how many of the scope's
/// events come after it in this append, kind, data, marks, effect, log time), numbered
/// back from their scope's new head.
fn events_sql(p: &mut Params, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|_| {
            let scope = p.next();
            let head = format!(
                "(SELECT h.head FROM scope_heads AS h WHERE h.scope = {})",
                p.next()
            );
            format!("({scope}, {head} - {}, {})", p.next(), p.list(5))
        })
        .collect();
    format!(
        "INSERT INTO events (scope, seq, kind, data, marks, effect, created_at) VALUES {}",
        values.join(", ")
    )
}

/// Queues `rows` webhook deliveries, six values each (user, event id, URL, body, due
/// time, queue time); one already queued for that user and event is left as it is.
fn webhooks_sql(p: &mut Params, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|_| {
            let (first, rest) = (p.list(4), p.list(2));
            format!("({first}, 'pending', {rest})")
        })
        .collect();
    format!(
        "INSERT INTO webhook_deliveries (user_id, event_id, url, body, status, next_attempt_at, created_at)
         VALUES {} ON CONFLICT (user_id, event_id) DO NOTHING",
        values.join(", ")
    )
}

/// One event's row beyond what its [`Publish`] holds.
struct AppendRow {
    index: usize,
    back: i64,
    marks: Option<String>,
    effect: Option<String>,
}

/// One append: the heads to move (one per scope, sorted, so concurrent appends lock
/// them in one order) and the rows to write.
pub(crate) struct Append {
    heads: Vec<(String, i64)>,
    rows: Vec<AppendRow>,
    events: Vec<Publish>,
    /// Per event: its place in its scope's run (1-based) and the scope's count.
    places: Vec<(i64, i64)>,
    webhooks: Vec<NewWebhookDelivery>,
    at: Timestamp,
}

impl Append {
    /// `None` when nothing is durable.
    pub(crate) fn new(outbox: Outbox, at: Timestamp) -> Result<Option<Self>> {
        let Outbox {
            mut events,
            webhooks,
            then,
        } = outbox;
        debug_assert!(then.is_none(), "`then` is logged by `log_events`");
        events.retain(|e| !e.ephemeral);
        if events.is_empty() && webhooks.is_empty() {
            return Ok(None);
        }
        let mut counts: std::collections::BTreeMap<&str, i64> = Default::default();
        let mut places = Vec::with_capacity(events.len());
        for event in &events {
            let n = counts.entry(event.scope.as_str()).or_default();
            *n += 1;
            places.push((*n, 0));
        }
        for (event, place) in events.iter().zip(&mut places) {
            place.1 = counts[event.scope.as_str()];
        }
        let heads = counts.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect();
        let mut rows = Vec::with_capacity(events.len());
        for (index, (event, (i, n))) in events.iter().zip(&places).enumerate() {
            rows.push(AppendRow {
                index,
                back: n - i,
                marks: json_text(event.marks.as_deref())?,
                effect: json_text(event.effect.as_deref())?,
            });
        }
        Ok(Some(Self {
            heads,
            rows,
            events,
            places,
            webhooks,
            at,
        }))
    }

    /// How many values [`statements`](Self::statements) binds.
    fn params(&self) -> usize {
        4 * self.heads.len() + 8 * self.rows.len() + 6 * self.webhooks.len()
    }

    /// What [`statements`](Self::statements) depends on: how many heads, event rows and
    /// webhook deliveries the append writes.
    pub(crate) fn shape(&self) -> (usize, usize, usize) {
        (self.heads.len(), self.rows.len(), self.webhooks.len())
    }

    /// The statements of the append, for a dialect that runs several per call (SQLite),
    /// with parameters from `p` on: per scope, its head's upsert and a select of the new
    /// head, then the events' insert and the webhook deliveries'. Bound by
    /// [`bind`](Self::bind).
    pub(crate) fn statements(&self, p: &mut Params) -> String {
        let mut statements = Vec::new();
        for _ in &self.heads {
            statements.push(head_sql(p, false));
        }
        if !self.rows.is_empty() {
            statements.push(events_sql(p, self.rows.len()));
        }
        if !self.webhooks.is_empty() {
            statements.push(webhooks_sql(p, self.webhooks.len()));
        }
        statements.join("; ")
    }

    /// Binds the parameters of [`statements`](Self::statements), after those already
    /// bound to `query`.
    pub(crate) fn bind<'q, DB, O>(
        &'q self,
        mut query: QueryAs<'q, DB, O, DB::Arguments<'q>>,
    ) -> QueryAs<'q, DB, O, DB::Arguments<'q>>
    where
        DB: Database,
        &'q str: Encode<'q, DB> + Type<DB>,
        Option<&'q str>: Encode<'q, DB> + Type<DB>,
        i64: Encode<'q, DB> + Type<DB>,
    {
        for (scope, count) in &self.heads {
            query = query
                .bind(scope.as_str())
                .bind(*count)
                .bind(*count)
                .bind(scope.as_str());
        }
        if !self.rows.is_empty() {
            query = self.bind_rows(query, 0..self.rows.len());
        }
        if !self.webhooks.is_empty() {
            query = self.bind_webhooks(query, 0..self.webhooks.len());
        }
        query
    }

    /// Binds the parameters of the insert of the events `rows` alone.
    fn bind_rows<'q, DB, O>(
        &'q self,
        mut query: QueryAs<'q, DB, O, DB::Arguments<'q>>,
        rows: std::ops::Range<usize>,
    ) -> QueryAs<'q, DB, O, DB::Arguments<'q>>
    where
        DB: Database,
        &'q str: Encode<'q, DB> + Type<DB>,
        Option<&'q str>: Encode<'q, DB> + Type<DB>,
        i64: Encode<'q, DB> + Type<DB>,
    {
        for row in &self.rows[rows] {
            let event = &self.events[row.index];
            query = query
                .bind(event.scope.as_str())
                .bind(event.scope.as_str())
                .bind(row.back)
                .bind(event.kind.as_str())
                .bind(event.data.as_str())
                .bind(row.marks.as_deref())
                .bind(row.effect.as_deref())
                .bind(self.at.0);
        }
        query
    }

    /// Binds the parameters of the insert of the webhook deliveries `webhooks` alone.
    fn bind_webhooks<'q, DB, O>(
        &'q self,
        mut query: QueryAs<'q, DB, O, DB::Arguments<'q>>,
        webhooks: std::ops::Range<usize>,
    ) -> QueryAs<'q, DB, O, DB::Arguments<'q>>
    where
        DB: Database,
        &'q str: Encode<'q, DB> + Type<DB>,
        Option<&'q str>: Encode<'q, DB> + Type<DB>,
        i64: Encode<'q, DB> + Type<DB>,
    {
        for new in &self.webhooks[webhooks] {
            query = query
                .bind(new.user_id.0)
                .bind(new.event_id.as_str())
                .bind(new.url.as_str())
                .bind(new.body.as_str())
                .bind(new.due_at.0)
                .bind(self.at.0);
        }
        query
    }

    /// The events with their offsets, from the scopes' new heads.
    pub(crate) fn numbered(self, heads: &[(String, i64)]) -> Result<Vec<Publish>> {
        let logged_at = UNIX_EPOCH + std::time::Duration::from_millis(self.at.0.max(0) as u64);
        let mut events = self.events;
        for (event, (i, n)) in events.iter_mut().zip(self.places) {
            let head = heads
                .iter()
                .find(|(s, _)| s == event.scope.as_str())
                .map(|(_, h)| *h)
                .ok_or_else(|| {
                    ChatError::Internal(anyhow::anyhow!("no head for {}", event.scope))
                })?;
            event.offset = Some((head - n + i) as u64);
            event.logged_at = Some(logged_at);
        }
        Ok(events)
    }
}

#[async_trait]
impl<DB> EventStore for Sql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
{
    async fn append_events(&self, events: Vec<Publish>) -> Result<Vec<Publish>> {
        let mut tx = self.writer.begin().await?;
        let events = Self::log_events(&mut tx, self.now(), events).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn scope_head(&self, scope: &Scope) -> Result<u64> {
        let head: i64 = sqlx::query_scalar(
            "SELECT head FROM scope_heads WHERE scope = $1 OR scope = ''
             ORDER BY scope DESC LIMIT 1",
        )
        .bind(scope.as_str())
        .fetch_one(&self.reader)
        .await?;
        Ok(head as u64)
    }

    async fn scope_heads(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT scope, head FROM scope_heads")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(|(s, h)| (s, h as u64)).collect())
    }

    async fn recent_scopes(&self, since: Timestamp) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT scope, MAX(seq) FROM events WHERE created_at >= $1 GROUP BY scope",
        )
        .bind(since.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|(s, h)| (s, h as u64)).collect())
    }

    async fn scope_events(
        &self,
        scope: &Scope,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Publish>, u64)> {
        let mut conn = self.reader.acquire().await?;
        let mut read_again = true;
        let (rows, head) = loop {
            let rows: Vec<EventRow> = sqlx::query_as(
                "SELECT seq, kind, data, marks, effect, created_at FROM events
                 WHERE scope = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(scope.as_str())
            .bind(after as i64)
            .bind(limit as i64)
            .fetch_all(&mut *conn)
            .await?;
            // Read after the events: at least as new as the last of them.
            let head: i64 = sqlx::query_scalar(
                "SELECT head FROM scope_heads WHERE scope = $1 OR scope = ''
                 ORDER BY scope DESC LIMIT 1",
            )
            .bind(scope.as_str())
            .fetch_one(&mut *conn)
            .await?;
            // Each statement reads its own snapshot: an event committed between the two
            // is counted by the head and missing from the rows. With no row after
            // `after`, that would look like a hole (a replay not recovered, a catch-up
            // answered 410: seen in the multi-node tests while sends went on). Read
            // once more: a scope's events commit in offset order, so the second read
            // has every event up to the head read before it.
            if rows.is_empty() && head > after as i64 && read_again {
                read_again = false;
                continue;
            }
            break (rows, head);
        };
        let events = rows
            .into_iter()
            .map(|row| logged_publish(scope.clone(), row))
            .collect::<Result<Vec<_>>>()?;
        Ok((events, head as u64))
    }

    async fn latest_events(&self, limit: usize, per_scope: usize) -> Result<Vec<Publish>> {
        // Each scope's last `per_scope` through its key (a range after its head minus
        // that many), whatever else the log holds: what is sorted is at most the
        // windows, never the whole log (SQLite keeps no time index).
        let rows: Vec<(
            String,
            i64,
            String,
            String,
            Option<String>,
            Option<String>,
            i64,
        )> = sqlx::query_as(
            "SELECT e.scope, e.seq, e.kind, e.data, e.marks, e.effect, e.created_at
                 FROM scope_heads AS h JOIN events AS e
                   ON e.scope = h.scope AND e.seq > h.head - $2
                 ORDER BY e.created_at DESC LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(per_scope).unwrap_or(i64::MAX).min(1 << 62))
        .fetch_all(&self.reader)
        .await?;
        // Each scope's name parsed once, whatever the number of its events.
        let mut scopes: std::collections::HashMap<String, Scope> = Default::default();
        let mut events = Vec::with_capacity(rows.len());
        for (name, seq, kind, data, marks, effect, at) in rows {
            let scope = match scopes.get(&name) {
                Some(scope) => scope.clone(),
                None => {
                    let Ok(scope) = Scope::parse(&name) else {
                        continue;
                    };
                    scopes.insert(name, scope.clone());
                    scope
                }
            };
            events.push(logged_publish(scope, (seq, kind, data, marks, effect, at))?);
        }
        events.sort_by(|a, b| (&a.scope, a.offset).cmp(&(&b.scope, b.offset)));
        Ok(events)
    }

    async fn trim_events(&self, max_per_scope: usize, before: Timestamp) -> Result<u64> {
        // One pass over the log (SQLite keeps no time index: it would cost every send a
        // third B-tree; the pass runs every few minutes and reads never depend on it —
        // history applies the window itself).
        let removed = sqlx::query(
            "DELETE FROM events WHERE created_at < $1
                OR seq <= (SELECT h.head FROM scope_heads h WHERE h.scope = events.scope) - $2",
        )
        .bind(before.0)
        .bind(max_per_scope as i64)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(removed)
    }
}

/// The event of `scope` a row of `events` holds, at its offset and log time.
fn logged_publish(scope: Scope, (seq, kind, data, marks, effect, at): EventRow) -> Result<Publish> {
    let parse = |e: serde_json::Error| ChatError::Internal(e.into());
    Ok(Publish {
        scope,
        kind,
        data,
        marks: marks
            .map(|m| serde_json::from_str::<Marks>(&m).map(std::sync::Arc::new))
            .transpose()
            .map_err(parse)?,
        effect: effect
            .map(|e| serde_json::from_str::<Effect>(&e).map(std::sync::Arc::new))
            .transpose()
            .map_err(parse)?,
        ephemeral: false,
        offset: Some(seq as u64),
        logged_at: Some(UNIX_EPOCH + std::time::Duration::from_millis(at.max(0) as u64)),
    })
}
