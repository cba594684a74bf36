//! The event log: appending a change's events in its transaction, reading a scope's
//! events back, trimming what left the retention window.

use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use chorus_realtime::event::{Effect, Marks};
use chorus_realtime::{Publish, Scope};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, RowsAffected, Sql, value_rows};
use crate::error::{ChatError, Result};
use crate::model::Timestamp;
use crate::store::EventStore;

/// Event rows per `INSERT` (7 values each).
const ROWS_PER_INSERT: usize = 500;

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
        mut events: Vec<Publish>,
    ) -> Result<Vec<Publish>> {
        events.retain(|e| !e.ephemeral);
        if events.is_empty() {
            return Ok(events);
        }
        // One head update per scope, in the order scopes first appear.
        let mut scopes: Vec<(&str, i64)> = Vec::new();
        for event in &events {
            match scopes.iter_mut().find(|(s, _)| *s == event.scope.as_str()) {
                Some((_, n)) => *n += 1,
                None => scopes.push((event.scope.as_str(), 1)),
            }
        }
        let mut next: Vec<(String, i64)> = Vec::with_capacity(scopes.len());
        for (scope, count) in scopes {
            let head: i64 = sqlx::query_scalar(
                "INSERT INTO scope_heads (scope, head)
                 SELECT $1, head + $2 FROM scope_heads WHERE scope = ''
                 ON CONFLICT (scope) DO UPDATE SET head = scope_heads.head + $2
                 RETURNING head",
            )
            .bind(scope)
            .bind(count)
            .fetch_one(&mut *conn)
            .await?;
            next.push((scope.to_owned(), head - count + 1));
        }
        let logged_at = UNIX_EPOCH + std::time::Duration::from_millis(at.0.max(0) as u64);
        let mut rows = Vec::with_capacity(events.len());
        for event in &mut events {
            let slot = next
                .iter_mut()
                .find(|(s, _)| s == event.scope.as_str())
                .ok_or_else(|| ChatError::Internal(anyhow::anyhow!("event scope lost")))?;
            event.offset = Some(slot.1 as u64);
            event.logged_at = Some(logged_at);
            rows.push((
                slot.1,
                json_text(event.marks.as_deref())?,
                json_text(event.effect.as_deref())?,
            ));
            slot.1 += 1;
        }
        for (chunk, chunk_rows) in events
            .chunks(ROWS_PER_INSERT)
            .zip(rows.chunks(ROWS_PER_INSERT))
        {
            let sql = format!(
                "INSERT INTO events (scope, seq, kind, data, marks, effect, created_at) VALUES {}",
                value_rows(1, chunk.len(), 7)
            );
            let mut insert = sqlx::query(&sql).persistent(chunk.len() == 1);
            for (event, (seq, marks, effect)) in chunk.iter().zip(chunk_rows) {
                insert = insert
                    .bind(event.scope.as_str())
                    .bind(*seq)
                    .bind(event.kind.as_str())
                    .bind(event.data.as_str())
                    .bind(marks.as_deref())
                    .bind(effect.as_deref())
                    .bind(at.0);
            }
            insert.execute(&mut *conn).await?;
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

    async fn scope_events(
        &self,
        scope: &Scope,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Publish>, u64)> {
        let mut conn = self.reader.acquire().await?;
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
        let events = rows
            .into_iter()
            .map(|(seq, kind, data, marks, effect, at)| {
                let mut publish = Publish {
                    scope: scope.clone(),
                    kind,
                    data,
                    marks: None,
                    effect: None,
                    ephemeral: false,
                    offset: Some(seq as u64),
                    logged_at: Some(
                        UNIX_EPOCH + std::time::Duration::from_millis(at.max(0) as u64),
                    ),
                };
                if let Some(marks) = marks {
                    publish.marks = Some(std::sync::Arc::new(
                        serde_json::from_str::<Marks>(&marks)
                            .map_err(|e| ChatError::Internal(e.into()))?,
                    ));
                }
                if let Some(effect) = effect {
                    publish.effect = Some(std::sync::Arc::new(
                        serde_json::from_str::<Effect>(&effect)
                            .map_err(|e| ChatError::Internal(e.into()))?,
                    ));
                }
                Ok(publish)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((events, head as u64))
    }

    async fn trim_events(&self, max_per_scope: usize, before: Timestamp) -> Result<u64> {
        let mut removed = sqlx::query("DELETE FROM events WHERE created_at < $1")
            .bind(before.0)
            .execute(&self.writer)
            .await?
            .rows_affected();
        removed += sqlx::query(
            "DELETE FROM events WHERE seq <= (SELECT h.head FROM scope_heads h WHERE h.scope = events.scope) - $1",
        )
        .bind(max_per_scope as i64)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(removed)
    }
}
