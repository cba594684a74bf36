use async_trait::async_trait;

use super::reads::{UNREAD, UNREAD_MENTIONS};
use super::users::PRESENCE_COLUMNS;
use super::{PgStore, conflict_or};
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::rows::{ChannelForRow, ChannelRow, memberships, presence_row};
use crate::store::{ChannelPatch, ChannelStore, NewChannel};

const CHANNEL_COLUMNS: &str =
    "c.id, c.workspace_id, c.name, c.topic, c.kind, c.policy, c.created_by, c.created_at";
const RETURNING: &str =
    "RETURNING id, workspace_id, name, topic, kind, policy, created_by, created_at";

#[async_trait]
impl ChannelStore for PgStore {
    async fn create_channel(&self, new: NewChannel) -> Result<Channel> {
        let now = Timestamp::now().0;
        let mut tx = self.pool.begin().await?;
        // A concurrent insert of the same name or DM key waits for the first to commit
        // and then fails here as a unique violation: the caller's "get" retry sees it.
        let row: ChannelRow = sqlx::query_as(&format!(
            "INSERT INTO channels (workspace_id, name, topic, kind, policy, dm_key, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) {RETURNING}"
        ))
        .bind(new.workspace_id.0)
        .bind(&new.name)
        .bind(&new.topic)
        .bind(new.kind.as_str())
        .bind(new.policy.as_str())
        .bind(&new.dm_key)
        .bind(new.created_by.0)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, "a channel with this name"))?;
        let members: Vec<i64> = new.members.iter().map(|u| u.0).collect();
        sqlx::query(
            "INSERT INTO channel_members (channel_id, user_id, joined_at)
             SELECT $1, u, $3 FROM UNNEST($2::BIGINT[]) AS u
             ON CONFLICT DO NOTHING",
        )
        .bind(row.id)
        .bind(&members)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        row.into_channel()
    }

    async fn channel(&self, id: ChannelId) -> Result<Option<Channel>> {
        let row: Option<ChannelRow> = sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ChannelRow::into_channel).transpose()
    }

    async fn channel_for(&self, id: ChannelId, user: UserId) -> Result<Option<(Channel, bool)>> {
        let row: Option<ChannelForRow> = sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS}, EXISTS (
                 SELECT 1 FROM channel_members cm WHERE cm.channel_id = c.id AND cm.user_id = $2
             ) AS member
             FROM channels c WHERE c.id = $1"
        ))
        .bind(id.0)
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ChannelForRow::into_pair).transpose()
    }

    async fn dm_by_key(&self, ws: WorkspaceId, key: &str) -> Result<Option<Channel>> {
        let row: Option<ChannelRow> = sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.workspace_id = $1 AND c.kind = 'dm' AND c.dm_key = $2"
        ))
        .bind(ws.0)
        .bind(key)
        .fetch_optional(&self.pool)
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
            dm_members: Option<Vec<i64>>,
        }
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS},
                    cm.user_id IS NOT NULL AS member,
                    CASE WHEN cm.user_id IS NULL THEN 0 ELSE {UNREAD} END AS unread,
                    CASE WHEN cm.user_id IS NULL THEN 0 ELSE {UNREAD_MENTIONS} END AS unread_mentions,
                    COALESCE(cm.last_read, 0) AS last_read,
                    CASE WHEN c.kind = 'dm' THEN (
                        SELECT array_agg(user_id ORDER BY user_id) FROM channel_members WHERE channel_id = c.id
                    ) END AS dm_members
             FROM channels c
             LEFT JOIN channel_members cm ON cm.channel_id = c.id AND cm.user_id = $1
             WHERE c.workspace_id = $2 AND (cm.user_id IS NOT NULL OR (c.kind = 'public' AND $3))
             ORDER BY c.id"
        ))
        .bind(user.0)
        .bind(ws.0)
        .bind(include_public)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(ChannelView {
                    channel: r.channel.into_channel()?,
                    member: r.member,
                    unread: r.unread,
                    unread_mentions: r.unread_mentions,
                    last_read: (r.last_read > 0).then_some(MessageId(r.last_read)),
                    member_ids: r
                        .dm_members
                        .unwrap_or_default()
                        .into_iter()
                        .map(UserId)
                        .collect(),
                    presence: Vec::new(),
                })
            })
            .collect()
    }

    async fn update_channel(&self, id: ChannelId, patch: ChannelPatch) -> Result<Channel> {
        let row: Option<ChannelRow> = sqlx::query_as(&format!(
            "UPDATE channels SET
                name = COALESCE($1, name),
                topic = COALESCE($2, topic),
                policy = COALESCE($3, policy)
             WHERE id = $4 {RETURNING}"
        ))
        .bind(patch.name)
        .bind(patch.topic)
        .bind(patch.policy.map(Policy::as_str))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| conflict_or(e, "a channel with this name"))?;
        row.ok_or_else(|| ChatError::NotFound("no such channel".into()))?
            .into_channel()
    }

    async fn is_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM channel_members WHERE channel_id = $1 AND user_id = $2",
        )
        .bind(ch.0)
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn add_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool> {
        // A new member starts with the history read: joining is not 10,000 unread.
        let done = sqlx::query(
            "INSERT INTO channel_members (channel_id, user_id, joined_at, last_read)
             VALUES ($1, $2, $3, (SELECT COALESCE(MAX(id), 0) FROM messages WHERE channel_id = $1))
             ON CONFLICT DO NOTHING",
        )
        .bind(ch.0)
        .bind(user.0)
        .bind(Timestamp::now().0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_channel_member(&self, ch: ChannelId, user: UserId) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2")
                .bind(ch.0)
                .bind(user.0)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn channel_members(&self, ch: ChannelId) -> Result<Vec<UserId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id",
        )
        .bind(ch.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(UserId).collect())
    }

    async fn member_channels(&self, user: UserId) -> Result<Vec<ChannelId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT channel_id FROM channel_members WHERE user_id = $1 ORDER BY channel_id",
        )
        .bind(user.0)
        .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        Ok(memberships(rows))
    }

    async fn channel_presence(&self, ch: ChannelId) -> Result<Vec<Presence>> {
        let rows: Vec<(i64, Option<i64>, String)> = sqlx::query_as(&format!(
            "SELECT {PRESENCE_COLUMNS} FROM channel_members cm JOIN users ON users.id = cm.user_id
             WHERE cm.channel_id = $1 ORDER BY users.id"
        ))
        .bind(ch.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(presence_row).collect())
    }
}
