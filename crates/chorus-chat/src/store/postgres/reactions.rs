use async_trait::async_trait;

use super::PgStore;
use crate::error::Result;
use crate::model::*;
use crate::store::ReactionStore;

#[async_trait]
impl ReactionStore for PgStore {
    async fn add_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO reactions (message_id, user_id, emoji, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(message.0)
        .bind(user.0)
        .bind(emoji)
        .bind(Timestamp::now().0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_reaction(&self, message: MessageId, user: UserId, emoji: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
        )
        .bind(message.0)
        .bind(user.0)
        .bind(emoji)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
