//! Channels and their members: create (with the first members), read one or the
//! channels a user sees with unread counts, rename, join and leave, memberships.

use std::collections::HashMap;

use async_trait::async_trait;
use chorus_realtime::Publish;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::reads::{UNREAD, UNREAD_MENTIONS};
use super::users::PRESENCE_COLUMNS;
use super::{Column, Dialect, Params, RowsAffected, Sql, lock_row, share_row};
use crate::error::{ChatError, Result, not_in_workspace};
use crate::model::*;
use crate::store::rows::conflict_or;
use crate::store::rows::{ChannelForRow, ChannelRow, memberships, presence_row};
use crate::store::{ChannelPatch, ChannelStore, CreatedChannel, Events, NewChannel};

const CHANNEL_COLUMNS: &str = "c.id, c.workspace_id, c.name, c.topic, c.kind, c.policy, c.created_by, c.created_at, \
     c.stream_rollup_ms, c.turn_timeout_ms, c.loop_guard_run, c.loop_guard_per_minute, \
     c.loop_guard_state, c.loop_guard_reason, c.loop_guard_since";
/// Members added by one statement, at most (3 bound values each).
const MEMBERS_PER_INSERT: usize = 1_000;
const RETURNING: &str = "RETURNING id, workspace_id, name, topic, kind, policy, created_by, created_at, \
     stream_rollup_ms, turn_timeout_ms, loop_guard_run, loop_guard_per_minute, \
     loop_guard_state, loop_guard_reason, loop_guard_since";

#[async_trait]
impl<DB> ChannelStore for Sql<DB>
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
    async fn create_channel_logged(
        &self,
        new: NewChannel,
        events: Events<CreatedChannel>,
    ) -> Result<(Channel, Vec<Publish>)> {
        let now = self.now().0;
        let mut tx = self.writer.begin().await?;
        // The first members must be members of the workspace until this commits.
        share_row::<DB>(&mut tx, "workspaces", new.workspace_id.0).await?;
        // A concurrent insert of the same name or DM key waits for the first to commit
        // and then fails here as a unique violation: the caller's "get" retry sees it.
        let row: ChannelRow = sqlx::query_as(&format!(
            "INSERT INTO channels (workspace_id, name, topic, kind, policy, dm_key, created_by, created_at,
                 stream_rollup_ms, turn_timeout_ms, loop_guard_run, loop_guard_per_minute)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) {RETURNING}"
        ))
        .bind(new.workspace_id.0)
        .bind(&new.name)
        .bind(&new.topic)
        .bind(new.kind.as_str())
        .bind(new.policy.as_str())
        .bind(&new.dm_key)
        .bind(new.created_by.0)
        .bind(now)
        .bind(setting(new.settings.stream_rollup_ms))
        .bind(setting(new.settings.turn_timeout_ms))
        .bind(new.settings.loop_guard_run.map(i64::from))
        .bind(new.settings.loop_guard_per_minute.map(i64::from))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, "a channel with this name"))?;
        // One statement per chunk, far under both databases' limits on bound values.
        for chunk in new.members.chunks(MEMBERS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO channel_members (channel_id, user_id, joined_at) VALUES {}
                 ON CONFLICT DO NOTHING",
                Params::of::<DB>().rows(chunk.len(), 3)
            );
            // Not kept prepared: one statement per list length.
            let mut insert = sqlx::query(&sql).persistent(false);
            for user in chunk {
                insert = insert.bind(row.id).bind(user.0).bind(now);
            }
            insert.execute(&mut *tx).await?;
        }
        if let Some(outsider) =
            first_outsider::<DB>(&mut tx, ChannelId(row.id), new.workspace_id).await?
        {
            return Err(not_in_workspace(outsider));
        }
        let channel = row.into_channel()?;
        let guests = if channel.kind == ChannelKind::Public {
            sqlx::query_scalar::<_, i64>(
                "SELECT user_id FROM workspace_members w
                 WHERE w.workspace_id = $1 AND w.role = $2 AND NOT EXISTS
                     (SELECT 1 FROM channel_members m WHERE m.channel_id = $3 AND m.user_id = w.user_id)
                 ORDER BY user_id",
            )
            .bind(new.workspace_id.0)
            .bind(Role::Guest.as_str())
            .bind(channel.id.0)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(UserId)
            .collect()
        } else {
            Vec::new()
        };
        let created = CreatedChannel { channel, guests };
        let logged = Self::log_events(&mut tx, self.now(), events(&created)).await?;
        tx.commit().await?;
        Ok((created.channel, logged))
    }

    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        let row: Option<ChannelRow> = sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.reader)
        .await?;
        row.map(ChannelRow::into_channel).transpose()
    }

    async fn channel_for(&self, id: ChannelId, user: UserId) -> Result<Option<(Channel, bool)>> {
        let row: Option<ChannelForRow> = sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS}, EXISTS (
                 SELECT 1 FROM channel_members cm JOIN users u ON u.id = cm.user_id
                 WHERE cm.channel_id = c.id AND cm.user_id = $2 AND u.deactivated_at IS NULL
             ) AS member
             FROM channels c WHERE c.id = $1"
        ))
        .bind(id.0)
        .bind(user.0)
        .fetch_optional(&self.reader)
        .await?;
        row.map(ChannelForRow::into_pair).transpose()
    }

    async fn dm_by_key(&self, ws: WorkspaceId, key: &str) -> Result<Option<Channel>> {
        let row: Option<ChannelRow> = sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.workspace_id = $1 AND c.kind = 'dm' AND c.dm_key = $2"
        ))
        .bind(ws.0)
        .bind(key)
        .fetch_optional(&self.writer)
        .await?;
        row.map(ChannelRow::into_channel).transpose()
    }

    async fn visible_channels(
        &self,
        ws: WorkspaceId,
        user: UserId,
        include_public: bool,
    ) -> Result<Vec<ChannelView>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            channel: ChannelRow,
            member: bool,
            unread: i64,
            unread_mentions: i64,
            last_read: i64,
            dm_members: Option<String>,
        }
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS},
                    cm.user_id IS NOT NULL AS member,
                    CASE WHEN cm.user_id IS NULL THEN 0 ELSE {UNREAD} END AS unread,
                    CASE WHEN cm.user_id IS NULL THEN 0 ELSE {UNREAD_MENTIONS} END AS unread_mentions,
                    COALESCE(cm.last_read, 0) AS last_read,
                    CASE WHEN c.kind = 'dm' THEN (
                        SELECT {ids} FROM channel_members WHERE channel_id = c.id
                    ) END AS dm_members
             FROM channels c
             LEFT JOIN channel_members cm ON cm.channel_id = c.id AND cm.user_id = $1
             WHERE c.workspace_id = $2 AND (cm.user_id IS NOT NULL OR (c.kind = 'public' AND $3))
             ORDER BY c.id",
            ids = DB::USER_ID_LIST,
        ))
        .bind(user.0)
        .bind(ws.0)
        .bind(include_public)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(ChannelView {
                    channel: r.channel.into_channel()?,
                    member: r.member,
                    unread: r.unread,
                    unread_mentions: r.unread_mentions,
                    last_read: (r.last_read > 0).then_some(MessageId(r.last_read)),
                    member_ids: user_ids(r.dm_members.as_deref()),
                    presence: Vec::new(),
                })
            })
            .collect()
    }

    async fn update_channel_logged(
        &self,
        id: ChannelId,
        patch: ChannelPatch,
        events: Events<Channel>,
    ) -> Result<(Channel, Vec<Publish>)> {
        let mut tx = self.writer.begin().await?;
        let row: Option<ChannelRow> = sqlx::query_as(&format!(
            "UPDATE channels SET
                name = COALESCE($1, name),
                topic = COALESCE($2, topic),
                policy = COALESCE($3, policy),
                stream_rollup_ms = CASE WHEN $5 THEN $6 ELSE stream_rollup_ms END,
                turn_timeout_ms = CASE WHEN $5 THEN $7 ELSE turn_timeout_ms END,
                loop_guard_run = CASE WHEN $5 THEN $8 ELSE loop_guard_run END,
                loop_guard_per_minute = CASE WHEN $5 THEN $9 ELSE loop_guard_per_minute END
             WHERE id = $4 {RETURNING}"
        ))
        .bind(patch.name)
        .bind(patch.topic)
        .bind(patch.policy.map(Policy::as_str))
        .bind(id.0)
        .bind(patch.settings.is_some())
        .bind(patch.settings.and_then(|s| setting(s.stream_rollup_ms)))
        .bind(patch.settings.and_then(|s| setting(s.turn_timeout_ms)))
        .bind(patch.settings.and_then(|s| s.loop_guard_run.map(i64::from)))
        .bind(
            patch
                .settings
                .and_then(|s| s.loop_guard_per_minute.map(i64::from)),
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, "a channel with this name"))?;
        let channel = row
            .ok_or_else(|| ChatError::NotFound("no such channel".into()))?
            .into_channel()?;
        let logged = Self::log_events(&mut tx, self.now(), events(&channel)).await?;
        tx.commit().await?;
        Ok((channel, logged))
    }

    async fn set_loop_guard(
        &self,
        id: ChannelId,
        guard: &ChannelLoopGuard,
        events: Events<()>,
    ) -> Result<Vec<Publish>> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "UPDATE channels SET loop_guard_state = $2, loop_guard_reason = $3, loop_guard_since = $4
             WHERE id = $1",
        )
        .bind(id.0)
        .bind(guard.state.as_str())
        .bind(guard.reason.as_str())
        .bind(guard.since.0)
        .execute(&mut *tx)
        .await?;
        let logged = Self::log_events(&mut tx, self.now(), events(&())).await?;
        tx.commit().await?;
        Ok(logged)
    }

    async fn is_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM channel_members WHERE channel_id = $1 AND user_id = $2",
        )
        .bind(ch.0)
        .bind(user.0)
        .fetch_optional(&self.reader)
        .await?;
        Ok(found.is_some())
    }

    async fn add_channel_member_logged(
        &self,
        ch: ChannelId,
        user: UserId,
        events: Events<()>,
    ) -> Result<(bool, Vec<Publish>)> {
        let mut tx = self.writer.begin().await?;
        // The new member must be a member of the workspace until this commits.
        let ws: Option<i64> = sqlx::query_scalar("SELECT workspace_id FROM channels WHERE id = $1")
            .bind(ch.0)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(ws) = ws {
            share_row::<DB>(&mut tx, "workspaces", ws).await?;
        }
        // A new member starts with the history read: joining is not 10,000 unread.
        let done = sqlx::query(
            "INSERT INTO channel_members (channel_id, user_id, joined_at, last_read)
             VALUES ($1, $2, $3, (SELECT COALESCE(MAX(id), 0) FROM messages WHERE channel_id = $1))
             ON CONFLICT DO NOTHING",
        )
        .bind(ch.0)
        .bind(user.0)
        .bind(self.now().0)
        .execute(&mut *tx)
        .await?;
        let added = done.rows_affected() == 1;
        if added
            && let Some(ws) = ws
            && outside_workspace::<DB>(&mut tx, WorkspaceId(ws), user).await?
        {
            return Err(not_in_workspace(user));
        }
        let logged = if added {
            Self::log_events(&mut tx, self.now(), events(&())).await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok((added, logged))
    }

    async fn remove_channel_member_logged(
        &self,
        ch: ChannelId,
        user: UserId,
        events: Events<()>,
    ) -> Result<(bool, Vec<Publish>)> {
        let mut tx = self.writer.begin().await?;
        // The channel's row, as a message insert holds it while it checks who may read
        // the channel: the leaver is told of a message only if it commits first.
        lock_row::<DB>(&mut tx, "channels", ch.0).await?;
        let done =
            sqlx::query("DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2")
                .bind(ch.0)
                .bind(user.0)
                .execute(&mut *tx)
                .await?;
        let removed = done.rows_affected() == 1;
        let logged = if removed {
            // The channel's delivery lists name its members only.
            sqlx::query(
                "DELETE FROM channel_delivery_lists WHERE channel_id = $1 AND user_id = $2",
            )
            .bind(ch.0)
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
            Self::log_events(&mut tx, self.now(), events(&())).await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok((removed, logged))
    }

    async fn channel_members(&self, ch: ChannelId) -> Result<Vec<UserId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id",
        )
        .bind(ch.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(ids.into_iter().map(UserId).collect())
    }

    async fn member_channels(&self, user: UserId) -> Result<Vec<ChannelId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT channel_id FROM channel_members WHERE user_id = $1 ORDER BY channel_id",
        )
        .bind(user.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(ids.into_iter().map(ChannelId).collect())
    }

    async fn memberships_of(&self, user: UserId) -> Result<(Vec<WorkspaceId>, Vec<ChannelId>)> {
        // Kind 0: a workspace, 1: a channel.
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT 0, workspace_id FROM workspace_members WHERE user_id = $1
             UNION ALL SELECT 1, channel_id FROM channel_members WHERE user_id = $1
             ORDER BY 1, 2",
        )
        .bind(user.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(memberships(rows))
    }

    async fn memberships_of_users(
        &self,
        users: &[UserId],
    ) -> Result<HashMap<UserId, (Vec<WorkspaceId>, Vec<ChannelId>)>> {
        let mut out: HashMap<UserId, (Vec<WorkspaceId>, Vec<ChannelId>)> = HashMap::new();
        // Kind 0: a workspace, 1: a channel.
        let rows: Vec<(i64, i32, i64)> = sqlx::query_as(&format!(
            "SELECT user_id, 0, workspace_id FROM workspace_members
             WHERE user_id IN (SELECT CAST(value AS BIGINT) FROM {list})
             UNION ALL SELECT user_id, 1, channel_id FROM channel_members
             WHERE user_id IN (SELECT CAST(value AS BIGINT) FROM {list})
             ORDER BY 1, 2, 3",
            list = DB::json_elements("$1")
        ))
        .bind(super::json_list(users))
        .fetch_all(&self.reader)
        .await?;
        for (user, kind, id) in rows {
            let (workspaces, channels) = out.entry(UserId(user)).or_default();
            if kind == 0 {
                workspaces.push(WorkspaceId(id));
            } else {
                channels.push(ChannelId(id));
            }
        }
        Ok(out)
    }

    async fn channel_presence(&self, ch: ChannelId) -> Result<Vec<Presence>> {
        let rows: Vec<(i64, Option<i64>, String)> = sqlx::query_as(&format!(
            "SELECT {PRESENCE_COLUMNS} FROM channel_members cm JOIN users ON users.id = cm.user_id
             WHERE cm.channel_id = $1 ORDER BY users.id"
        ))
        .bind(ch.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(presence_row).collect())
    }
}

/// The ids of a [`Dialect::USER_ID_LIST`], in ascending order.
fn user_ids(list: Option<&str>) -> Vec<UserId> {
    let mut ids: Vec<UserId> = list
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.trim().parse().ok().map(UserId))
        .collect();
    ids.sort_unstable();
    ids
}

/// A setting in milliseconds as stored.
fn setting(ms: Option<u64>) -> Option<i64> {
    ms.and_then(|ms| i64::try_from(ms).ok())
}

/// Whether `user` is neither a member of workspace `ws` nor a server admin (who acts
/// as an owner of every workspace without joining it): one who cannot be a member of
/// its channels. Asked in the transaction that adds them, after it took the workspace's
/// row shared: a removal from the workspace takes that row first, so either the removal
/// comes after and takes the new member out with their other channels, or this sees it.
/// The service checks the same before (for its answer); this closes the window between
/// that check and the insert, which would otherwise leave someone removed from the
/// workspace reading and posting in the channel.
async fn outside_workspace<DB>(
    tx: &mut DB::Connection,
    ws: WorkspaceId,
    user: UserId,
) -> Result<bool>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
{
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT u.id FROM users u
          WHERE u.id = $2 AND NOT u.is_admin
            AND NOT EXISTS (SELECT 1 FROM workspace_members wm
                            WHERE wm.workspace_id = $1 AND wm.user_id = $2)",
    )
    .bind(ws.0)
    .bind(user.0)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(found.is_some())
}

/// [`outside_workspace`] for a new channel's first members, in one statement: the first
/// of them who cannot be a member, if any.
async fn first_outsider<DB>(
    tx: &mut DB::Connection,
    ch: ChannelId,
    ws: WorkspaceId,
) -> Result<Option<UserId>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
{
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT cm.user_id FROM channel_members cm JOIN users u ON u.id = cm.user_id
          WHERE cm.channel_id = $1 AND NOT u.is_admin
            AND NOT EXISTS (SELECT 1 FROM workspace_members wm
                            WHERE wm.workspace_id = $2 AND wm.user_id = cm.user_id)
          LIMIT 1",
    )
    .bind(ch.0)
    .bind(ws.0)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(found.map(UserId))
}
