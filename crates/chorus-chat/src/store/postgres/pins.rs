use async_trait::async_trait;

use super::PgStore;
use super::messages::{MESSAGE_COLUMNS, complete, load};
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::PinStore;
use crate::store::rows::MessageRow;

#[async_trait]
impl PinStore for PgStore {
    async fn pin(&self, ch: ChannelId, message: MessageId, by: UserId) -> Result<(Pin, bool)> {
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query(
            "INSERT INTO pins (channel_id, message_id, pinned_by, pinned_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(ch.0)
        .bind(message.0)
        .bind(by.0)
        .bind(Timestamp::now().0)
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
        let message = load(&mut tx, message)
            .await?
            .ok_or_else(|| ChatError::NotFound("no such message".into()))?;
        tx.commit().await?;
        let pin = Pin {
            channel_id: ch,
            message,
            pinned_by: UserId(pinned_by),
            pinned_at: Timestamp(pinned_at),
        };
        Ok((pin, created))
    }

    async fn unpin(&self, ch: ChannelId, message: MessageId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM pins WHERE channel_id = $1 AND message_id = $2")
            .bind(ch.0)
            .bind(message.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn pins(&self, ch: ChannelId) -> Result<Vec<Pin>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            pinned_by: i64,
            pinned_at: i64,
            #[sqlx(flatten)]
            message: MessageRow,
        }
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT p.pinned_by, p.pinned_at, {MESSAGE_COLUMNS}
             FROM pins p JOIN messages m ON m.id = p.message_id
             WHERE p.channel_id = $1 ORDER BY p.pinned_at DESC, p.message_id DESC"
        ))
        .bind(ch.0)
        .fetch_all(&mut *conn)
        .await?;
        let (meta, rows): (Vec<(i64, i64)>, Vec<MessageRow>) = rows
            .into_iter()
            .map(|r| ((r.pinned_by, r.pinned_at), r.message))
            .unzip();
        let messages = complete(&mut conn, rows).await?;
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
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM pins WHERE channel_id = $1")
                .bind(ch.0)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
