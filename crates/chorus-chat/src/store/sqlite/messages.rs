use async_trait::async_trait;
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};

use super::SqliteStore;
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::rows::{MessageRow, attach_reactions, created_message, mentions_json};
use crate::store::{Deletion, Inserted, MessageQuery, MessageStore, NewMessage};

/// The columns of [`MessageRow`], for a query naming the table `m`.
pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.channel_id, m.author_id, m.text, m.thread_id, m.mentions, \
     m.created_at, m.edited_at, m.deleted, m.reply_count, m.last_reply_at, \
     EXISTS (SELECT 1 FROM pins pn WHERE pn.message_id = m.id) AS pinned";

/// Turns rows into messages and fills in their reactions (one query for the lot).
pub(super) async fn complete(
    conn: &mut SqliteConnection,
    rows: Vec<MessageRow>,
) -> Result<Vec<Message>> {
    let mut messages = rows
        .into_iter()
        .map(MessageRow::into_message)
        .collect::<Result<Vec<_>>>()?;
    if messages.is_empty() {
        return Ok(messages);
    }
    let mut query: QueryBuilder<Sqlite> =
        QueryBuilder::new("SELECT message_id, emoji, user_id FROM reactions WHERE message_id IN (");
    let mut ids = query.separated(", ");
    for m in &messages {
        ids.push_bind(m.id.0);
    }
    query.push(") ORDER BY message_id, created_at, rowid");
    let rows: Vec<(i64, String, i64)> = query.build_query_as().fetch_all(&mut *conn).await?;
    attach_reactions(&mut messages, rows);
    Ok(messages)
}

/// One complete message, read on `conn` (a transaction sees its own writes).
pub(super) async fn load(conn: &mut SqliteConnection, id: MessageId) -> Result<Option<Message>> {
    let row: Option<MessageRow> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?"
    ))
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(complete(conn, row.into_iter().collect()).await?.pop())
}

async fn load_existing(conn: &mut SqliteConnection, id: MessageId) -> Result<Message> {
    load(conn, id)
        .await?
        .ok_or_else(|| ChatError::NotFound("no such message".into()))
}

/// Recomputes a root's thread summary from its (not deleted) replies.
async fn refresh_thread(conn: &mut SqliteConnection, ch: ChannelId, root: MessageId) -> Result<()> {
    sqlx::query(
        "UPDATE messages SET
            reply_count = (SELECT COUNT(*) FROM messages r
                           WHERE r.channel_id = ?1 AND r.thread_id = ?2 AND r.deleted = 0),
            last_reply_at = (SELECT MAX(r.created_at) FROM messages r
                             WHERE r.channel_id = ?1 AND r.thread_id = ?2 AND r.deleted = 0)
         WHERE id = ?2",
    )
    .bind(ch.0)
    .bind(root.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write_mentions(
    conn: &mut SqliteConnection,
    message: MessageId,
    ch: ChannelId,
    mentions: &[UserId],
) -> Result<()> {
    sqlx::query("DELETE FROM message_mentions WHERE message_id = ?")
        .bind(message.0)
        .execute(&mut *conn)
        .await?;
    for user in mentions {
        sqlx::query(
            "INSERT INTO message_mentions (message_id, user_id, channel_id) VALUES (?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(message.0)
        .bind(user.0)
        .bind(ch.0)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl SqliteStore {
    async fn by_idempotency_key(&self, author: UserId, key: &str) -> Result<Option<Message>> {
        let mut conn = self.writer.acquire().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE author_id = ? AND idempotency_key = ?",
        )
        .bind(author.0)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        match id {
            Some(id) => load(&mut conn, MessageId(id)).await,
            None => Ok(None),
        }
    }

    /// Inserts the message; `None` when the idempotency key is already taken (another
    /// insert with the same key won a race). A message with neither mentions nor a
    /// thread is one row, written with the others waiting by one statement
    /// ([`super::batch`]); otherwise one transaction writes the mention rows and the
    /// root's thread summary with it. The single writer is held for as few round trips
    /// as possible: every other send waits for it.
    async fn try_insert(&self, new: &NewMessage) -> Result<Option<Inserted>> {
        if super::batch::batchable(new) {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let job = super::batch::Job {
                new: new.clone(),
                reply,
            };
            self.inserts
                .send(job)
                .await
                .map_err(|_| ChatError::Internal(anyhow::anyhow!("the insert batcher is gone")))?;
            return answer.await.map_err(|_| {
                ChatError::Internal(anyhow::anyhow!("the insert batcher dropped a send"))
            })?;
        }
        let mut conn = self.writer.acquire().await?;
        // Taken with the writer held, so times rise with ids.
        let created_at = Timestamp::now();
        let mut tx = conn.begin().await?;
        let Some(id) = insert_row(&mut tx, new, created_at).await? else {
            return Ok(None);
        };
        write_mentions(&mut tx, id, new.channel_id, &new.mentions).await?;
        let root = match new.thread_id {
            Some(root) => {
                refresh_thread(&mut tx, new.channel_id, root).await?;
                Some(load_existing(&mut tx, root).await?)
            }
            None => None,
        };
        tx.commit().await?;
        Ok(Some(Inserted {
            message: created_message(new, id, created_at),
            created: true,
            root,
        }))
    }
}

/// Inserts a message's row; `None` when its idempotency key is taken.
pub(super) async fn insert_row(
    conn: &mut SqliteConnection,
    new: &NewMessage,
    created_at: Timestamp,
) -> Result<Option<MessageId>> {
    let inserted: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(
        "INSERT INTO messages (channel_id, author_id, text, thread_id, mentions, created_at, idempotency_key)
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(new.channel_id.0)
    .bind(new.author_id.0)
    .bind(&new.text)
    .bind(new.thread_id.map(|t| t.0))
    .bind(mentions_json(&new.mentions)?)
    .bind(created_at.0)
    .bind(&new.idempotency_key)
    .fetch_one(&mut *conn)
    .await;
    match inserted {
        Ok(id) => Ok(Some(MessageId(id))),
        Err(sqlx::Error::Database(db))
            if db.is_unique_violation() && new.idempotency_key.is_some() =>
        {
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_message(&self, new: NewMessage) -> Result<Inserted> {
        if let Some(key) = &new.idempotency_key
            && let Some(earlier) = self.by_idempotency_key(new.author_id, key).await?
        {
            return Ok(Inserted {
                message: earlier,
                created: false,
                root: None,
            });
        }
        if let Some(inserted) = self.try_insert(&new).await? {
            return Ok(inserted);
        }
        // Lost a race with the same key: the other insert's message is the answer.
        let key = new.idempotency_key.as_deref().unwrap_or_default();
        self.by_idempotency_key(new.author_id, key)
            .await?
            .map(|message| Inserted {
                message,
                created: false,
                root: None,
            })
            .ok_or_else(|| ChatError::Conflict("idempotency key in use".into()))
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>> {
        let mut conn = self.reader.acquire().await?;
        load(&mut conn, id).await
    }

    async fn list_messages(&self, ch: ChannelId, q: MessageQuery) -> Result<Vec<Message>> {
        // `after` pages forward (oldest first); otherwise newest first before `before`.
        // Either way the page is returned in ascending id order.
        let forward = q.after.is_some() && q.before.is_none();
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m
             WHERE m.channel_id = ?1
               AND ((?2 IS NULL AND m.thread_id IS NULL) OR m.thread_id = ?2)
               AND (?3 IS NULL OR m.id > ?3)
               AND (?4 IS NULL OR m.id < ?4)
             ORDER BY m.id {} LIMIT ?5",
            if forward { "ASC" } else { "DESC" }
        );
        let mut conn = self.reader.acquire().await?;
        let mut rows: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(ch.0)
            .bind(q.thread_id.map(|t| t.0))
            .bind(q.after.map(|a| a.0))
            .bind(q.before.map(|b| b.0))
            .bind(i64::from(q.limit))
            .fetch_all(&mut *conn)
            .await?;
        if !forward {
            rows.reverse();
        }
        complete(&mut conn, rows).await
    }

    async fn edit_message(
        &self,
        id: MessageId,
        text: &str,
        mentions: &[UserId],
    ) -> Result<Message> {
        let mut tx = self.writer.begin().await?;
        let channel: Option<i64> = sqlx::query_scalar(
            "UPDATE messages SET text = ?, mentions = ?, edited_at = ? WHERE id = ? AND deleted = 0
             RETURNING channel_id",
        )
        .bind(text)
        .bind(mentions_json(mentions)?)
        .bind(Timestamp::now().0)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let channel = channel.ok_or_else(|| ChatError::NotFound("no such message".into()))?;
        write_mentions(&mut tx, id, ChannelId(channel), mentions).await?;
        let message = load_existing(&mut tx, id).await?;
        tx.commit().await?;
        Ok(message)
    }

    async fn delete_message(&self, id: MessageId) -> Result<Deletion> {
        let mut tx = self.writer.begin().await?;
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "UPDATE messages SET text = '', mentions = '[]', deleted = 1, edited_at = ? WHERE id = ? AND deleted = 0
             RETURNING channel_id, thread_id",
        )
        .bind(Timestamp::now().0)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let (channel, thread) = row.ok_or_else(|| ChatError::NotFound("no such message".into()))?;
        for table in ["reactions", "message_mentions"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE message_id = ?"))
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        }
        let unpinned = sqlx::query("DELETE FROM pins WHERE message_id = ?")
            .bind(id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        let root = match thread.map(MessageId) {
            Some(root) => {
                refresh_thread(&mut tx, ChannelId(channel), root).await?;
                Some(load_existing(&mut tx, root).await?)
            }
            None => None,
        };
        let message = load_existing(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Deletion {
            message,
            root,
            unpinned,
        })
    }
}
