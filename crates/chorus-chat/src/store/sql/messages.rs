//! Messages: insert (with mentions and thread summaries, idempotency keys), read a
//! page or one message with its reactions, edit, delete.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, Params, RowsAffected, Sql, json_list, lock_row, share_row};
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::rows::{MessageRow, attach_reactions, created_message, mentions_json, parse};
use crate::store::{
    Deletion, Edited, Events, Inserted, MessageQuery, MessageStore, NewMessage, NewTurns,
};
use chorus_realtime::Publish;

/// The columns of [`MessageRow`], for a query naming the table `m`.
pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.channel_id, m.author_id, m.text, m.thread_id, m.mentions, \
     m.created_at, m.edited_at, m.deleted, m.reply_count, m.last_reply_at, \
     EXISTS (SELECT 1 FROM pins pn WHERE pn.message_id = m.id) AS pinned, m.state, m.stream_seq, m.receipts, m.kind";

/// A live message that a change to it (a reaction or a pin, added or taken back) holds
/// until it commits ([`Sql::hold_live_message`]).
pub(crate) struct Held {
    /// The message's channel.
    pub(crate) channel: ChannelId,
    /// Whether whoever adds to it is a member of that channel.
    pub(crate) member: bool,
}

/// Reading and writing a message's rows inside a transaction (or on one connection),
/// shared by the trait methods here, pins and SQLite's batched inserts.
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
    /// Turns rows into messages and fills in their reactions (one query for the lot).
    pub(crate) async fn complete(
        conn: &mut DB::Connection,
        rows: Vec<MessageRow>,
    ) -> Result<Vec<Message>> {
        let mut messages = rows
            .into_iter()
            .map(MessageRow::into_message)
            .collect::<Result<Vec<_>>>()?;
        if messages.is_empty() {
            return Ok(messages);
        }
        let sql = format!(
            "SELECT message_id, emoji, user_id FROM reactions WHERE message_id IN ({})
             ORDER BY message_id, created_at, {}",
            Params::of::<DB>().list(messages.len()),
            DB::REACTION_ORDER
        );
        // One statement per list length: only the one-message read (the common one) is
        // kept prepared; the others would crowd the connection's statement cache.
        let mut query = sqlx::query_as(&sql).persistent(messages.len() == 1);
        for m in &messages {
            query = query.bind(m.id.0);
        }
        let rows: Vec<(i64, String, i64)> = query.fetch_all(&mut *conn).await?;
        attach_reactions(&mut messages, rows);
        Ok(messages)
    }

    /// One complete message, read on `conn` (a transaction sees its own writes).
    pub(crate) async fn load(conn: &mut DB::Connection, id: MessageId) -> Result<Option<Message>> {
        let row: Option<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(Self::complete(conn, row.into_iter().collect()).await?.pop())
    }

    async fn load_existing(conn: &mut DB::Connection, id: MessageId) -> Result<Message> {
        Self::load(conn, id)
            .await?
            .ok_or_else(|| ChatError::NotFound("no such message".into()))
    }

    /// Locks a thread's root until the transaction ends (where the dialect has row
    /// locks), so replies added or deleted concurrently recount the thread one after the
    /// other, each seeing the other's commit. PostgreSQL's `NO KEY UPDATE` does not
    /// conflict with the key-share locks that inserting a reply (a foreign key to the
    /// root) takes.
    async fn lock_root(conn: &mut DB::Connection, root: MessageId) -> Result<()> {
        lock_row::<DB>(conn, "messages", root.0).await
    }

    /// Recomputes a root's thread summary from its (not deleted) replies. Call with the
    /// root locked ([`Self::lock_root`]) and after the lock was taken.
    async fn refresh_thread(
        conn: &mut DB::Connection,
        ch: ChannelId,
        root: MessageId,
    ) -> Result<()> {
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
        conn: &mut DB::Connection,
        message: MessageId,
        ch: ChannelId,
        mentions: &[UserId],
    ) -> Result<()> {
        sqlx::query("DELETE FROM message_mentions WHERE message_id = $1")
            .bind(message.0)
            .execute(&mut *conn)
            .await?;
        if mentions.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO message_mentions (message_id, user_id, channel_id) VALUES {}
             ON CONFLICT DO NOTHING",
            Params::of::<DB>().rows(mentions.len(), 3)
        );
        let mut insert = sqlx::query(&sql).persistent(mentions.len() == 1);
        for user in mentions {
            insert = insert.bind(message.0).bind(user.0).bind(ch.0);
        }
        insert.execute(&mut *conn).await?;
        Ok(())
    }

    /// Those of `users` who may read channel `ch` (ascending): its members and, for a
    /// public channel, its workspace's members who are not guests — the rule of
    /// `Chat::readable_channel`, for many users in one query. Asked in the transaction
    /// that logs what they are told, after it locked the channel's row (see
    /// [`MessageStore::insert_message_logged`]): PostgreSQL's `READ COMMITTED` reads
    /// each statement from a fresh snapshot, so this one sees every removal that
    /// committed before the lock was granted.
    pub(crate) async fn readers(
        conn: &mut DB::Connection,
        ch: ChannelId,
        users: &[UserId],
    ) -> Result<Vec<UserId>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT cm.user_id FROM channel_members cm
             WHERE cm.channel_id = $1 AND cm.user_id IN (SELECT CAST(value AS BIGINT) FROM {list})
             UNION
             SELECT wm.user_id FROM channels c
             JOIN workspace_members wm ON wm.workspace_id = c.workspace_id
             WHERE c.id = $1 AND c.kind = 'public' AND wm.role <> 'guest'
               AND wm.user_id IN (SELECT CAST(value AS BIGINT) FROM {list})
             ORDER BY 1",
            list = DB::json_elements("$2")
        ))
        .bind(ch.0)
        .bind(json_list(users))
        .fetch_all(&mut *conn)
        .await?;
        Ok(ids.into_iter().map(UserId).collect())
    }

    /// Holds message `id` for a change to it by `user` (a reaction or a pin, added or
    /// taken back) until the transaction ends, and answers as `Chat::visible_message`
    /// does, now: `NotFound` for a message that is not there or is deleted (or a reader
    /// outside the workspace), `Forbidden` when `user` may not read its channel. The
    /// service asked before the transaction, under a gate of its node only; asked again
    /// here, a delete, leave or removal that committed since, on any node, is seen, and
    /// one that commits later waits for the change (and takes an addition away with the
    /// rest).
    ///
    /// The channel's row first, shared, as leaves, removals (from the channel or the
    /// workspace) and demotions lock it before they take reading away, and as sends
    /// and edits lock it before a message's row; then the message's row, shared, which
    /// a delete's `UPDATE` holds. Each lock is its own statement, before the check: a
    /// PostgreSQL statement sees what committed before it began, so the check sees the
    /// change a lock waited for. (SQLite: the single writer orders them already.)
    pub(crate) async fn hold_live_message(
        conn: &mut DB::Connection,
        id: MessageId,
        user: UserId,
    ) -> Result<Held> {
        let no_such = || ChatError::NotFound("no such message".into());
        // A message never changes channel.
        let channel: i64 = sqlx::query_scalar("SELECT channel_id FROM messages WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(no_such)?;
        share_row::<DB>(conn, "channels", channel).await?;
        share_row::<DB>(conn, "messages", id.0).await?;
        type Row = (bool, bool, bool, Option<bool>, Option<String>);
        let (deleted, public, member, admin, role): Row = sqlx::query_as(
            "SELECT m.deleted, c.kind = 'public',
                    EXISTS (SELECT 1 FROM channel_members cm
                            WHERE cm.channel_id = c.id AND cm.user_id = $2),
                    (SELECT u.is_admin FROM users u WHERE u.id = $2),
                    (SELECT wm.role FROM workspace_members wm
                     WHERE wm.workspace_id = c.workspace_id AND wm.user_id = $2)
             FROM messages m JOIN channels c ON c.id = m.channel_id WHERE m.id = $1",
        )
        .bind(id.0)
        .bind(user.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(no_such)?;
        // `Chat::readable_channel`'s rule, in its order: members; then a server admin
        // as an owner, anyone else by their role in the workspace (none: not found).
        let readable = member
            || match (admin == Some(true), role) {
                (true, _) => public,
                (false, None) => return Err(ChatError::NotFound("no such workspace".into())),
                (false, Some(role)) => public && parse::<Role>(&role)? != Role::Guest,
            };
        if !readable {
            return Err(ChatError::Forbidden("not a member of this channel".into()));
        }
        if deleted {
            return Err(ChatError::NotFound("message was deleted".into()));
        }
        Ok(Held {
            channel: ChannelId(channel),
            member,
        })
    }

    /// `forbidden` unless the new message's author is a member of its channel.
    pub(crate) async fn require_author_in(
        conn: &mut DB::Connection,
        new: &NewMessage,
    ) -> Result<()> {
        Self::require_poster(conn, new.channel_id, new.author_id).await
    }

    /// Refuses (`Forbidden`) `user` posting in `channel` unless they are a member of it.
    /// The caller holds the channel's row, which a leave or removal locks first.
    async fn require_poster(
        conn: &mut DB::Connection,
        channel: ChannelId,
        user: UserId,
    ) -> Result<()> {
        let member: Option<i64> = sqlx::query_scalar(
            "SELECT user_id FROM channel_members WHERE channel_id = $1 AND user_id = $2",
        )
        .bind(channel.0)
        .bind(user.0)
        .fetch_optional(&mut *conn)
        .await?;
        match member {
            Some(_) => Ok(()),
            None => Err(ChatError::Forbidden(
                "join the channel to post in it".into(),
            )),
        }
    }

    /// Inserts a message's row; `None` when its idempotency key is taken.
    pub(crate) async fn insert_row(
        conn: &mut DB::Connection,
        new: &NewMessage,
        created_at: Timestamp,
    ) -> Result<Option<MessageId>> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO messages (channel_id, author_id, text, thread_id, mentions, created_at, idempotency_key, state, stream_at, kind)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
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
        .bind(if new.streaming { "streaming" } else { "complete" })
        .bind(new.streaming.then_some(created_at.0))
        .bind(new.kind.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(id.map(MessageId))
    }

    async fn by_idempotency_key(&self, author: UserId, key: &str) -> Result<Option<Message>> {
        let mut conn = self.writer.acquire().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE author_id = $1 AND idempotency_key = $2",
        )
        .bind(author.0)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        match id {
            Some(id) => Self::load(&mut conn, MessageId(id)).await,
            None => Ok(None),
        }
    }

    /// Inserts the message; `None` when the idempotency key is already taken (another
    /// insert with the same key won a race). A message with neither mentions nor a
    /// thread, that wakes no agent, is one row: where the backend batches those
    /// ([`PlainInserts`], SQLite), it is written with the others waiting by one
    /// statement. Otherwise one transaction writes the row, the mention rows, the
    /// agents' turns and the root's thread summary.
    async fn try_insert(
        &self,
        new: &NewMessage,
        events: Events<Inserted>,
    ) -> Result<Option<(Inserted, Vec<Publish>)>> {
        if let Some(batcher) = &self.plain_inserts
            && new.mentions.is_empty()
            && new.thread_id.is_none()
            && !new.streaming
            && new.kind == MessageKind::Text
            && new.turns.agents.is_empty()
            && new.audience.is_empty()
        {
            return batcher.insert(new, events).await;
        }
        let mut tx = self.writer.begin().await?;
        // Ids come from a sequence when inserted, not when committed. Holding the
        // channel's row until commit makes a channel's ids commit in order, so a reader
        // paging with `after` never passes an id that a slower insert commits later.
        // (SQLite: the single writer is held already.)
        lock_row::<DB>(&mut tx, "channels", new.channel_id.0).await?;
        // The author posts as a member of the channel, asked with its row held: a leave
        // or a removal (which locks that row first) that committed since the service's
        // check, on this node or another, is seen here.
        Self::require_author_in(&mut tx, new).await?;
        // Taken with the channel's row (or the writer) held, so times rise with ids.
        let created_at = self.now();
        if let Some(root) = new.thread_id {
            Self::lock_root(&mut tx, root).await?;
        }
        let Some(id) = Self::insert_row(&mut tx, new, created_at).await? else {
            return Ok(None);
        };
        Self::write_mentions(&mut tx, id, new.channel_id, &new.mentions).await?;
        // Who is told, and which woken agents get a turn: asked here, with the channel's
        // row held, not before the transaction, so that a removal from the channel is
        // either seen or logged after this message (see `insert_message_logged`).
        // One query, and none for a message with no audience.
        let mut audience = new.audience.clone();
        audience.extend(&new.turns.agents);
        audience.sort_unstable();
        audience.dedup();
        let readers = Self::readers(&mut tx, new.channel_id, &audience).await?;
        let turns = NewTurns {
            agents: (new.turns.agents.iter().copied())
                .filter(|a| readers.binary_search(a).is_ok())
                .collect(),
            due_at: new.turns.due_at,
        };
        Self::insert_turns(&mut tx, id, new.channel_id, &turns, created_at).await?;
        let root = match new.thread_id {
            Some(root) => {
                Self::refresh_thread(&mut tx, new.channel_id, root).await?;
                Some(Self::load_existing(&mut tx, root).await?)
            }
            None => None,
        };
        // A new message has no reactions, pin or replies: nothing to read back.
        let inserted = Inserted {
            message: created_message(new, id, created_at),
            created: true,
            root,
            readers,
        };
        let logged = Self::log_events(&mut tx, created_at, events(&inserted)).await?;
        tx.commit().await?;
        if let Some(batcher) = &self.plain_inserts {
            batcher.inserted_elsewhere(id);
        }
        Ok(Some((inserted, logged)))
    }
}

#[async_trait]
impl<DB> MessageStore for Sql<DB>
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
    async fn insert_message_logged(
        &self,
        new: NewMessage,
        events: Events<Inserted>,
    ) -> Result<(Inserted, Vec<Publish>)> {
        let earlier = |message| {
            (
                Inserted {
                    message,
                    created: false,
                    root: None,
                    readers: Vec::new(),
                },
                Vec::new(),
            )
        };
        if let Some(key) = &new.idempotency_key
            && let Some(found) = self.by_idempotency_key(new.author_id, key).await?
        {
            return Ok(earlier(found));
        }
        if let Some(inserted) = self.try_insert(&new, events).await? {
            return Ok(inserted);
        }
        // Lost a race with the same key: the other insert's message is the answer.
        let key = new.idempotency_key.as_deref().unwrap_or_default();
        self.by_idempotency_key(new.author_id, key)
            .await?
            .map(earlier)
            .ok_or_else(|| ChatError::Conflict("idempotency key in use".into()))
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>> {
        let mut conn = self.reader.acquire().await?;
        Self::load(&mut conn, id).await
    }

    async fn list_messages(&self, ch: ChannelId, q: MessageQuery) -> Result<Vec<Message>> {
        // `after` pages forward (oldest first); otherwise newest first before `before`.
        // Either way the page is returned in ascending id order. Only the conditions in
        // use are written, so the planner sees plain index ranges.
        let forward = q.after.is_some() && q.before.is_none();
        let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.channel_id = $1");
        let mut values = vec![ch.0];
        let mut condition = |sql: &mut String, condition: &str, value: i64| {
            values.push(value);
            sql.push_str(&format!(" AND {condition} ${}", values.len()));
        };
        match q.thread_id {
            Some(root) => condition(&mut sql, "m.thread_id =", root.0),
            None => sql.push_str(" AND m.thread_id IS NULL"),
        }
        if let Some(after) = q.after {
            condition(&mut sql, "m.id >", after.0);
        }
        if let Some(before) = q.before {
            condition(&mut sql, "m.id <", before.0);
        }
        values.push(i64::from(q.limit));
        sql.push_str(&format!(
            " ORDER BY m.id {} LIMIT ${}",
            if forward { "ASC" } else { "DESC" },
            values.len()
        ));
        let mut query = sqlx::query_as(&sql);
        for value in values {
            query = query.bind(value);
        }
        let mut conn = self.reader.acquire().await?;
        let mut rows: Vec<MessageRow> = query.fetch_all(&mut *conn).await?;
        if !forward {
            rows.reverse();
        }
        Self::complete(&mut conn, rows).await
    }

    async fn edit_message_logged(
        &self,
        id: MessageId,
        text: &str,
        mentions: &[UserId],
        audience: &[UserId],
        events: Events<Edited>,
    ) -> Result<(Edited, Vec<Publish>)> {
        let mut tx = self.writer.begin().await?;
        // Who is told is asked with the channel's row held, as for a new message; first,
        // as an insert takes it (channel, then a thread's root). Edits that tell nobody
        // do not wait for the channel's inserts.
        if let Some(lock) = DB::LOCK_ROW
            && !audience.is_empty()
        {
            sqlx::query(&format!(
                "SELECT 1 FROM channels WHERE id = (SELECT channel_id FROM messages WHERE id = $1) {lock}"
            ))
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        }
        let channel: Option<i64> = sqlx::query_scalar(
            "UPDATE messages SET text = $1, mentions = $2, edited_at = $3 WHERE id = $4 AND NOT deleted
             RETURNING channel_id",
        )
        .bind(text)
        .bind(mentions_json(mentions)?)
        .bind(self.now().0)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let channel = channel.ok_or_else(|| ChatError::NotFound("no such message".into()))?;
        Self::write_mentions(&mut tx, id, ChannelId(channel), mentions).await?;
        let readers = Self::readers(&mut tx, ChannelId(channel), audience).await?;
        let edited = Edited {
            message: Self::load_existing(&mut tx, id).await?,
            readers,
        };
        let logged = Self::log_events(&mut tx, self.now(), events(&edited)).await?;
        tx.commit().await?;
        Ok((edited, logged))
    }

    async fn delete_message_logged(
        &self,
        id: MessageId,
        events: Events<Deletion>,
    ) -> Result<(Deletion, Vec<Publish>)> {
        let mut tx = self.writer.begin().await?;
        // The update holds the message's row until commit, as the additions to it (a
        // reaction, a pin) share it (`hold_live_message`): one that got it first commits
        // first and is removed below, by statements that see its commit; a later one
        // waits, then finds a tombstone.
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "UPDATE messages SET text = '', mentions = '[]', receipts = '[]', deleted = TRUE, edited_at = $1
             WHERE id = $2 AND NOT deleted
             RETURNING channel_id, thread_id",
        )
        .bind(self.now().0)
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
                Self::lock_root(&mut tx, root).await?;
                Self::refresh_thread(&mut tx, ChannelId(channel), root).await?;
                Some(Self::load_existing(&mut tx, root).await?)
            }
            None => None,
        };
        let message = Self::load_existing(&mut tx, id).await?;
        let deletion = Deletion {
            message,
            root,
            unpinned,
        };
        let logged = Self::log_events(&mut tx, self.now(), events(&deletion)).await?;
        tx.commit().await?;
        Ok((deletion, logged))
    }

    async fn append_streams(
        &self,
        appends: &[(MessageId, &str)],
        at: Timestamp,
    ) -> Result<Vec<Option<u64>>> {
        let mut tx = self.writer.begin().await?;
        let mut seqs = Vec::with_capacity(appends.len());
        for (id, text) in appends {
            let seq: Option<i64> = sqlx::query_scalar(
                "UPDATE messages SET text = text || $1, stream_seq = stream_seq + 1, stream_at = $2
                 WHERE id = $3 AND state = 'streaming' AND NOT deleted
                 RETURNING stream_seq",
            )
            .bind(*text)
            .bind(at.0)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
            seqs.push(seq.map(|s| u64::try_from(s).unwrap_or(0)));
        }
        tx.commit().await?;
        Ok(seqs)
    }

    async fn end_stream_logged(
        &self,
        id: MessageId,
        to: MessageState,
        text: Option<&str>,
        tail: &str,
        events: Events<Message>,
    ) -> Result<Option<(Message, Vec<Publish>)>> {
        let mut tx = self.writer.begin().await?;
        if to == MessageState::Complete {
            // Completing (with a new text, too) is the author's last post in the channel:
            // asked again under the channel's lock, as a send is, so a completion racing
            // the author's leave or removal comes before it or not at all. (An abort is
            // not a post: anyone allowed ends a stream, the author gone or not.)
            let found: Option<(i64, i64)> =
                sqlx::query_as("SELECT channel_id, author_id FROM messages WHERE id = $1")
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((channel, author)) = found {
                lock_row::<DB>(&mut tx, "channels", channel).await?;
                Self::require_poster(&mut tx, ChannelId(channel), UserId(author)).await?;
            }
        }
        let now = self.now();
        let ended: Option<i64> = sqlx::query_scalar(
            "UPDATE messages SET state = $1, text = COALESCE($2, text || $3), stream_at = $4
             WHERE id = $5 AND state = 'streaming' AND NOT deleted
             RETURNING id",
        )
        .bind(to.as_str())
        .bind(text)
        .bind(tail)
        .bind(now.0)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        if ended.is_none() {
            return Ok(None);
        }
        let message = Self::load_existing(&mut tx, id).await?;
        let logged = Self::log_events(&mut tx, now, events(&message)).await?;
        tx.commit().await?;
        Ok(Some((message, logged)))
    }

    async fn idle_streams(&self, before: Timestamp, limit: u32) -> Result<Vec<MessageId>> {
        let mut conn = self.reader.acquire().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE state = 'streaming' AND stream_at < $1
             ORDER BY stream_at LIMIT $2",
        )
        .bind(before.0)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        Ok(ids.into_iter().map(MessageId).collect())
    }
}
