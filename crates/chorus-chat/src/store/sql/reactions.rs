//! Reactions: one row per (message, user, emoji).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, RowsAffected, Sql};
use crate::error::Result;
use crate::model::*;
use crate::store::{Events, ReactionStore};
use chorus_realtime::Publish;

#[async_trait]
impl<DB> ReactionStore for Sql<DB>
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
    async fn set_reaction_logged(
        &self,
        message: MessageId,
        user: UserId,
        emoji: &str,
        add: bool,
        events: Events<bool>,
    ) -> Result<(bool, Vec<Publish>)> {
        let mut tx = self.writer.begin().await?;
        // Only on a live message its reactor may read, asked with the message held: a
        // reaction never lands on a tombstone, and is neither added nor taken back
        // after its reactor's departure.
        Self::hold_live_message(&mut tx, message, user).await?;
        let now = self.now();
        let done = if add {
            sqlx::query(
                "INSERT INTO reactions (message_id, user_id, emoji, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(message.0)
            .bind(user.0)
            .bind(emoji)
            .bind(now.0)
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query(
                "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
            )
            .bind(message.0)
            .bind(user.0)
            .bind(emoji)
            .execute(&mut *tx)
            .await?
        };
        let changed = done.rows_affected() == 1;
        let logged = Self::log_events(&mut tx, now, events(&changed)).await?;
        tx.commit().await?;
        Ok((changed, logged))
    }
}
