//! Pins: at most one per message, listed with their messages.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::messages::MESSAGE_COLUMNS;
use super::{Column, Dialect, RowsAffected, Sql};
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::rows::MessageRow;
use crate::store::{Events, PinStore};
use chorus_realtime::Publish;

impl<DB> Sql<DB>
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
    /// Holds `message` for a pin or an unpin by `by` until the transaction ends: only a
    /// live message of `ch`, by a member of it, asked with the message held
    /// ([`Sql::hold_live_message`]), so a pin never lands on a tombstone and none is
    /// made or taken away after its pinner's departure.
    async fn hold_pinnable(
        conn: &mut DB::Connection,
        ch: ChannelId,
        message: MessageId,
        by: UserId,
    ) -> Result<()> {
        let held = Self::hold_live_message(conn, message, by).await?;
        if held.channel != ch {
            return Err(ChatError::NotFound("no such message".into()));
        }
        if !held.member {
            return Err(ChatError::Forbidden(
                "only members of the channel can pin".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl<DB> PinStore for Sql<DB>
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
    async fn pin_logged(
        &self,
        ch: ChannelId,
        message: MessageId,
        by: UserId,
        events: Events<(Pin, bool)>,
    ) -> Result<((Pin, bool), Vec<Publish>)> {
        let mut tx = self.writer.begin().await?;
        Self::hold_pinnable(&mut tx, ch, message, by).await?;
        let created = sqlx::query(
            "INSERT INTO pins (channel_id, message_id, pinned_by, pinned_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(ch.0)
        .bind(message.0)
        .bind(by.0)
        .bind(self.now().0)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        // After a conflict this statement's fresh snapshot sees the pin that won.
        let pinned: Option<(i64, i64)> = sqlx::query_as(
            "SELECT pinned_by, pinned_at FROM pins WHERE channel_id = $1 AND message_id = $2",
        )
        .bind(ch.0)
        .bind(message.0)
        .fetch_optional(&mut *tx)
        .await?;
        let (pinned_by, pinned_at) = pinned
            .ok_or_else(|| ChatError::Conflict("the message was unpinned meanwhile".into()))?;
        let message = Self::load(&mut tx, message)
            .await?
            .ok_or_else(|| ChatError::NotFound("no such message".into()))?;
        let pin = Pin {
            channel_id: ch,
            message,
            pinned_by: UserId(pinned_by),
            pinned_at: Timestamp(pinned_at),
        };
        let result = (pin, created);
        let logged = Self::log_events(&mut tx, self.now(), events(&result)).await?;
        tx.commit().await?;
        Ok((result, logged))
    }

    async fn unpin_logged(
        &self,
        ch: ChannelId,
        message: MessageId,
        by: UserId,
        events: Events<bool>,
    ) -> Result<(bool, Vec<Publish>)> {
        let mut tx = self.writer.begin().await?;
        Self::hold_pinnable(&mut tx, ch, message, by).await?;
        let done = sqlx::query("DELETE FROM pins WHERE channel_id = $1 AND message_id = $2")
            .bind(ch.0)
            .bind(message.0)
            .execute(&mut *tx)
            .await?;
        let unpinned = done.rows_affected() == 1;
        let logged = Self::log_events(&mut tx, self.now(), events(&unpinned)).await?;
        tx.commit().await?;
        Ok((unpinned, logged))
    }

    async fn pins(&self, ch: ChannelId) -> Result<Vec<Pin>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            pinned_by: i64,
            pinned_at: i64,
            #[sqlx(flatten)]
            message: MessageRow,
        }
        let mut conn = self.reader.acquire().await?;
        // A delete takes its message's pin away; a pin left on a tombstone (by a version
        // that did not hold the message while pinning) is neither listed nor counted.
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT p.pinned_by, p.pinned_at, {MESSAGE_COLUMNS}
             FROM pins p JOIN messages m ON m.id = p.message_id
             WHERE p.channel_id = $1 AND NOT m.deleted ORDER BY p.pinned_at DESC, p.message_id DESC"
        ))
        .bind(ch.0)
        .fetch_all(&mut *conn)
        .await?;
        let (meta, rows): (Vec<(i64, i64)>, Vec<MessageRow>) = rows
            .into_iter()
            .map(|r| ((r.pinned_by, r.pinned_at), r.message))
            .unzip();
        let messages = Self::complete(&mut conn, rows).await?;
        Ok(messages
            .into_iter()
            .zip(meta)
            .map(|(message, (by, at))| Pin {
                channel_id: ch,
                message,
                pinned_by: UserId(by),
                pinned_at: Timestamp(at),
            })
            .collect())
    }

    async fn count_pins(&self, ch: ChannelId) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM pins p JOIN messages m ON m.id = p.message_id
             WHERE p.channel_id = $1 AND NOT m.deleted",
        )
        .bind(ch.0)
        .fetch_one(&self.reader)
        .await?)
    }
}
