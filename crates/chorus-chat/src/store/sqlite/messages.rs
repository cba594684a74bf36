use async_trait::async_trait;

use super::SqliteStore;
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::{MessageQuery, MessageStore, NewMessage};

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    channel_id: i64,
    author_id: i64,
    text: String,
    thread_id: Option<i64>,
    mentions: String,
    created_at: i64,
    edited_at: Option<i64>,
    deleted: bool,
}

impl MessageRow {
    fn into_message(self) -> Result<Message> {
        let mentions: Vec<i64> = serde_json::from_str(&self.mentions)
            .map_err(|e| ChatError::Internal(anyhow::anyhow!("corrupt mentions: {e}")))?;
        Ok(Message {
            id: MessageId(self.id),
            channel_id: ChannelId(self.channel_id),
            author_id: UserId(self.author_id),
            text: self.text,
            thread_id: self.thread_id.map(MessageId),
            mentions: mentions.into_iter().map(UserId).collect(),
            created_at: Timestamp(self.created_at),
            edited_at: self.edited_at.map(Timestamp),
            deleted: self.deleted,
        })
    }
}

const MESSAGE_COLUMNS: &str =
    "id, channel_id, author_id, text, thread_id, mentions, created_at, edited_at, deleted";

impl SqliteStore {
    async fn by_idempotency_key(&self, author: UserId, key: &str) -> Result<Option<Message>> {
        let row: Option<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE author_id = ? AND idempotency_key = ?"
        ))
        .bind(author.0)
        .bind(key)
        .fetch_optional(&self.writer)
        .await?;
        row.map(MessageRow::into_message).transpose()
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_message(&self, new: NewMessage) -> Result<(Message, bool)> {
        if let Some(key) = &new.idempotency_key
            && let Some(earlier) = self.by_idempotency_key(new.author_id, key).await?
        {
            return Ok((earlier, false));
        }
        let mentions = serde_json::to_string(&new.mentions.iter().map(|u| u.0).collect::<Vec<_>>())
            .map_err(|e| ChatError::Internal(e.into()))?;
        let inserted: std::result::Result<MessageRow, sqlx::Error> = sqlx::query_as(&format!(
            "INSERT INTO messages (channel_id, author_id, text, thread_id, mentions, created_at, idempotency_key)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {MESSAGE_COLUMNS}"
        ))
        .bind(new.channel_id.0)
        .bind(new.author_id.0)
        .bind(&new.text)
        .bind(new.thread_id.map(|t| t.0))
        .bind(mentions)
        .bind(Timestamp::now().0)
        .bind(&new.idempotency_key)
        .fetch_one(&self.writer)
        .await;
        match (inserted, &new.idempotency_key) {
            (Ok(row), _) => Ok((row.into_message()?, true)),
            // Lost a race with the same key: the other insert's message is the answer.
            (Err(sqlx::Error::Database(db)), Some(key)) if db.is_unique_violation() => self
                .by_idempotency_key(new.author_id, key)
                .await?
                .map(|m| (m, false))
                .ok_or_else(|| ChatError::Conflict("idempotency key in use".into())),
            (Err(err), _) => Err(err.into()),
        }
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>> {
        let row: Option<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?"
        ))
        .bind(id.0)
        .fetch_optional(&self.reader)
        .await?;
        row.map(MessageRow::into_message).transpose()
    }

    async fn list_messages(&self, ch: ChannelId, q: MessageQuery) -> Result<Vec<Message>> {
        // `after` pages forward (oldest first); otherwise newest first before `before`.
        // Either way the page is returned in ascending id order.
        let forward = q.after.is_some() && q.before.is_none();
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE channel_id = ?1
               AND ((?2 IS NULL AND thread_id IS NULL) OR thread_id = ?2)
               AND (?3 IS NULL OR id > ?3)
               AND (?4 IS NULL OR id < ?4)
             ORDER BY id {} LIMIT ?5",
            if forward { "ASC" } else { "DESC" }
        );
        let rows: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(ch.0)
            .bind(q.thread_id.map(|t| t.0))
            .bind(q.after.map(|a| a.0))
            .bind(q.before.map(|b| b.0))
            .bind(i64::from(q.limit))
            .fetch_all(&self.reader)
            .await?;
        let mut out = rows
            .into_iter()
            .map(MessageRow::into_message)
            .collect::<Result<Vec<_>>>()?;
        if !forward {
            out.reverse();
        }
        Ok(out)
    }

    async fn edit_message(&self, id: MessageId, text: &str) -> Result<Message> {
        let row: Option<MessageRow> = sqlx::query_as(&format!(
            "UPDATE messages SET text = ?, edited_at = ? WHERE id = ? AND deleted = 0 RETURNING {MESSAGE_COLUMNS}"
        ))
        .bind(text)
        .bind(Timestamp::now().0)
        .bind(id.0)
        .fetch_optional(&self.writer)
        .await?;
        row.ok_or_else(|| ChatError::NotFound("no such message".into()))?
            .into_message()
    }

    async fn delete_message(&self, id: MessageId) -> Result<Message> {
        let row: Option<MessageRow> = sqlx::query_as(&format!(
            "UPDATE messages SET text = '', mentions = '[]', deleted = 1, edited_at = ? WHERE id = ? RETURNING {MESSAGE_COLUMNS}"
        ))
        .bind(Timestamp::now().0)
        .bind(id.0)
        .fetch_optional(&self.writer)
        .await?;
        row.ok_or_else(|| ChatError::NotFound("no such message".into()))?
            .into_message()
    }
}
