//! Read cursors and unread counts.

use async_trait::async_trait;
use chorus_realtime::Publish;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, RowsAffected, Sql};
use crate::error::Result;
use crate::model::*;
use crate::store::{Events, Marked, ReadStore};

/// Unread top-level messages of member `cm` in channel `c`: by others, not deleted,
/// after the cursor. Thread replies are not counted (they show on their root).
pub(super) const UNREAD: &str = "(SELECT COUNT(*) FROM messages m
      WHERE m.channel_id = c.id AND m.thread_id IS NULL AND NOT m.deleted
        AND m.id > cm.last_read AND m.author_id <> cm.user_id)";

/// Of [`UNREAD`], those that mention the member.
pub(super) const UNREAD_MENTIONS: &str = "(SELECT COUNT(*) FROM message_mentions mm
      JOIN messages m ON m.id = mm.message_id
      WHERE mm.user_id = cm.user_id AND mm.channel_id = c.id AND mm.message_id > cm.last_read
        AND m.thread_id IS NULL AND NOT m.deleted AND m.author_id <> cm.user_id)";

#[async_trait]
impl<DB> ReadStore for Sql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
{
    async fn mark_read_logged(
        &self,
        ch: ChannelId,
        user: UserId,
        message: MessageId,
        events: Events<ReadState>,
    ) -> Result<(Marked, Vec<Publish>)> {
        let mut tx = self.writer.begin().await?;
        // The row lock makes a concurrent mark re-check `last_read < $1` against the
        // committed cursor, so the cursor only ever moves forward.
        let done = sqlx::query(
            "UPDATE channel_members SET last_read = $1
             WHERE channel_id = $2 AND user_id = $3 AND last_read < $1",
        )
        .bind(message.0)
        .bind(ch.0)
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
        let moved = done.rows_affected() == 1;
        let state = Self::read_state_on(&mut tx, ch, user).await?;
        let logged = match (&state, moved) {
            (Some(state), true) => Self::log_events(&mut tx, self.now(), events(state)).await?,
            _ => Vec::new(),
        };
        tx.commit().await?;
        Ok((Marked { moved, state }, logged))
    }

    async fn read_state(&self, ch: ChannelId, user: UserId) -> Result<Option<ReadState>> {
        let mut conn = self.reader.acquire().await?;
        Self::read_state_on(&mut conn, ch, user).await
    }
}

impl<DB> Sql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
{
    /// The member's cursor and unread counts, on `conn`.
    async fn read_state_on(
        conn: &mut DB::Connection,
        ch: ChannelId,
        user: UserId,
    ) -> Result<Option<ReadState>> {
        let row: Option<(i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT cm.last_read, {UNREAD}, {UNREAD_MENTIONS}
             FROM channel_members cm JOIN channels c ON c.id = cm.channel_id
             WHERE cm.channel_id = $1 AND cm.user_id = $2"
        ))
        .bind(ch.0)
        .bind(user.0)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(|(last_read, unread, unread_mentions)| ReadState {
            channel_id: ch,
            message_id: MessageId(last_read),
            unread,
            unread_mentions,
        }))
    }
}
