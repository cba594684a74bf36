use async_trait::async_trait;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::PgStore;
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
    conn: &mut PgConnection,
    rows: Vec<MessageRow>,
) -> Result<Vec<Message>> {
    let mut messages = rows
        .into_iter()
        .map(MessageRow::into_message)
        .collect::<Result<Vec<_>>>()?;
    if messages.is_empty() {
        return Ok(messages);
    }
    let ids: Vec<i64> = messages.iter().map(|m| m.id.0).collect();
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT message_id, emoji, user_id FROM reactions WHERE message_id = ANY($1)
         ORDER BY message_id, created_at, seq",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    attach_reactions(&mut messages, rows);
    Ok(messages)
}

/// One complete message, read on `conn` (a transaction sees its own writes).
pub(super) async fn load(conn: &mut PgConnection, id: MessageId) -> Result<Option<Message>> {
    let row: Option<MessageRow> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1"
    ))
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(complete(conn, row.into_iter().collect()).await?.pop())
}

async fn load_existing(conn: &mut PgConnection, id: MessageId) -> Result<Message> {
    load(conn, id)
        .await?
        .ok_or_else(|| ChatError::NotFound("no such message".into()))
}

/// Locks a thread's root until the transaction ends, so replies added or deleted
/// concurrently recount the thread one after the other, each seeing the other's
/// commit. `NO KEY UPDATE` does not conflict with the key-share locks that inserting
/// a reply (a foreign key to the root) takes.
async fn lock_root(conn: &mut PgConnection, root: MessageId) -> Result<()> {
    sqlx::query("SELECT 1 FROM messages WHERE id = $1 FOR NO KEY UPDATE")
        .bind(root.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Recomputes a root's thread summary from its (not deleted) replies. Call with the
/// root locked ([`lock_root`]) and after the lock was taken.
async fn refresh_thread(conn: &mut PgConnection, ch: ChannelId, root: MessageId) -> Result<()> {
    sqlx::query(
        "UPDATE messages SET
            reply_count = (SELECT COUNT(*) FROM messages r
                           WHERE r.channel_id = $1 AND r.thread_id = $2 AND NOT r.deleted),
            last_reply_at = (SELECT MAX(r.created_at) FROM messages r
                             WHERE r.channel_id = $1 AND r.thread_id = $2 AND NOT r.deleted)
         WHERE id = $2",
    )
    .bind(ch.0)
    .bind(root.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write_mentions(
    conn: &mut PgConnection,
    message: MessageId,
    ch: ChannelId,
    mentions: &[UserId],
) -> Result<()> {
    sqlx::query("DELETE FROM message_mentions WHERE message_id = $1")
        .bind(message.0)
        .execute(&mut *conn)
        .await?;
    let users: Vec<i64> = mentions.iter().map(|u| u.0).collect();
    sqlx::query(
        "INSERT INTO message_mentions (message_id, user_id, channel_id)
         SELECT $1, u, $3 FROM UNNEST($2::BIGINT[]) AS u
         ON CONFLICT DO NOTHING",
    )
    .bind(message.0)
    .bind(&users)
    .bind(ch.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl PgStore {
    async fn by_idempotency_key(&self, author: UserId, key: &str) -> Result<Option<Message>> {
        let mut conn = self.pool.acquire().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE author_id = $1 AND idempotency_key = $2",
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

    /// Inserts in one transaction; `None` when the idempotency key is already taken
    /// (another insert with the same key committed first).
    async fn try_insert(&self, new: &NewMessage) -> Result<Option<Inserted>> {
        let mut tx = self.pool.begin().await?;
        // Ids come from a sequence when inserted, not when committed. Holding the
        // channel's row until commit makes a channel's ids commit in order, so a reader
        // paging with `after` never passes an id that a slower insert commits later.
        sqlx::query("SELECT 1 FROM channels WHERE id = $1 FOR NO KEY UPDATE")
            .bind(new.channel_id.0)
            .execute(&mut *tx)
            .await?;
        // Taken with the channel's row held, so times rise with ids.
        let created_at = Timestamp::now();
        if let Some(root) = new.thread_id {
            lock_root(&mut tx, root).await?;
        }
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO messages (channel_id, author_id, text, thread_id, mentions, created_at, idempotency_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (author_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id",
        )
        .bind(new.channel_id.0)
        .bind(new.author_id.0)
        .bind(&new.text)
        .bind(new.thread_id.map(|t| t.0))
        .bind(mentions_json(&new.mentions)?)
        .bind(created_at.0)
        .bind(&new.idempotency_key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id.map(MessageId) else {
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
        // A new message has no reactions, pin or replies: nothing to read back.
        Ok(Some(Inserted {
            message: created_message(new, id, created_at),
            created: true,
            root,
        }))
    }
}

#[async_trait]
impl MessageStore for PgStore {
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
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, id).await
    }

    async fn list_messages(&self, ch: ChannelId, q: MessageQuery) -> Result<Vec<Message>> {
        // `after` pages forward (oldest first); otherwise newest first before `before`.
        // Either way the page is returned in ascending id order. Only the conditions in
        // use are written, so the planner sees plain index ranges.
        let forward = q.after.is_some() && q.before.is_none();
        let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.channel_id = "
        ));
        sql.push_bind(ch.0);
        match q.thread_id {
            Some(root) => {
                sql.push(" AND m.thread_id = ").push_bind(root.0);
            }
            None => {
                sql.push(" AND m.thread_id IS NULL");
            }
        }
        if let Some(after) = q.after {
            sql.push(" AND m.id > ").push_bind(after.0);
        }
        if let Some(before) = q.before {
            sql.push(" AND m.id < ").push_bind(before.0);
        }
        sql.push(if forward {
            " ORDER BY m.id ASC LIMIT "
        } else {
            " ORDER BY m.id DESC LIMIT "
        })
        .push_bind(i64::from(q.limit));
        let mut conn = self.pool.acquire().await?;
        let mut rows: Vec<MessageRow> = sql.build_query_as().fetch_all(&mut *conn).await?;
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
        let mut tx = self.pool.begin().await?;
        let channel: Option<i64> = sqlx::query_scalar(
            "UPDATE messages SET text = $1, mentions = $2, edited_at = $3 WHERE id = $4 AND NOT deleted
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
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "UPDATE messages SET text = '', mentions = '[]', deleted = TRUE, edited_at = $1
             WHERE id = $2 AND NOT deleted
             RETURNING channel_id, thread_id",
        )
        .bind(Timestamp::now().0)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let (channel, thread) = row.ok_or_else(|| ChatError::NotFound("no such message".into()))?;
        for table in ["reactions", "message_mentions"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE message_id = $1"))
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        }
        let unpinned = sqlx::query("DELETE FROM pins WHERE message_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        let root = match thread.map(MessageId) {
            Some(root) => {
                lock_root(&mut tx, root).await?;
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
