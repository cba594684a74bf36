//! Workspaces and their members: roles, the last-owner rule, member lists.

use async_trait::async_trait;
use chorus_realtime::Publish;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::users::PROFILE_COLUMNS;
use super::{Column, Dialect, RowsAffected, Sql, below_cap, lock_row};
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::rows::parse;
use crate::store::rows::{ProfileRow, WorkspaceRow, presence_row};
use crate::store::{Acting, ChannelAccess, Events, WorkspaceStore};

#[async_trait]
impl<DB> WorkspaceStore for Sql<DB>
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
    async fn create_workspace_logged(
        &self,
        name: &str,
        (owner, cap): (UserId, Option<usize>),
        events: Events<Workspace>,
    ) -> Result<(Workspace, Vec<Publish>)> {
        let now = self.now().0;
        let mut tx = self.writer.begin().await?;
        if let Some(cap) = cap {
            let refusal = format!("a user creates at most {cap} workspaces");
            below_cap::<DB>(
                &mut tx,
                ("workspaces", "created_by"),
                owner.0,
                (cap, &refusal),
            )
            .await?;
        }
        let row: WorkspaceRow = sqlx::query_as(
            "INSERT INTO workspaces (name, created_by, created_at) VALUES ($1, $2, $3)
             RETURNING id, name, created_by, created_at",
        )
        .bind(name)
        .bind(owner.0)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(row.id)
        .bind(owner.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let workspace: Workspace = row.into();
        let logged = Self::log_events(&mut tx, self.now(), events(&workspace)).await?;
        tx.commit().await?;
        Ok((workspace, logged))
    }

    async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>> {
        let row: Option<WorkspaceRow> =
            sqlx::query_as("SELECT id, name, created_by, created_at FROM workspaces WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(Into::into))
    }

    async fn workspaces_of(&self, user: UserId) -> Result<Vec<WorkspaceMembership>> {
        let rows: Vec<(i64, String, i64, i64, String)> = sqlx::query_as(
            "SELECT w.id, w.name, w.created_by, w.created_at, m.role
             FROM workspaces w JOIN workspace_members m ON m.workspace_id = w.id
             WHERE m.user_id = $1 ORDER BY w.id",
        )
        .bind(user.0)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|(id, name, created_by, created_at, role)| {
                Ok(WorkspaceMembership {
                    workspace: WorkspaceRow {
                        id,
                        name,
                        created_by,
                        created_at,
                    }
                    .into(),
                    role: parse(&role)?,
                })
            })
            .collect()
    }

    async fn channel_access(&self, ch: ChannelId, user: UserId) -> Result<Option<ChannelAccess>> {
        type Row = (String, Option<i64>, Option<String>, Option<i64>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT c.kind, w.joined_at, w.role,
                    (SELECT joined_at FROM channel_members
                     WHERE channel_id = c.id AND user_id = $2)
             FROM channels c
             LEFT JOIN workspace_members w ON w.workspace_id = c.workspace_id AND w.user_id = $2
             WHERE c.id = $1",
        )
        .bind(ch.0)
        .bind(user.0)
        .fetch_optional(&self.reader)
        .await?;
        let Some((kind, workspace_since, role, channel_since)) = row else {
            return Ok(None);
        };
        let guest = match role {
            Some(role) => parse::<Role>(&role)? == Role::Guest,
            None => false,
        };
        Ok(Some(ChannelAccess {
            public: parse::<ChannelKind>(&kind)? == ChannelKind::Public,
            workspace_since: workspace_since.map(Timestamp),
            guest,
            channel_since: channel_since.map(Timestamp),
        }))
    }

    async fn role_since(&self, ws: WorkspaceId, user: UserId) -> Result<Option<Timestamp>> {
        let since: Option<i64> = sqlx::query_scalar(
            "SELECT COALESCE(role_since, joined_at) FROM workspace_members
             WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(ws.0)
        .bind(user.0)
        .fetch_optional(&self.reader)
        .await?;
        Ok(since.map(Timestamp))
    }

    async fn member_role(&self, ws: WorkspaceId, user: UserId) -> Result<Option<Role>> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(ws.0)
        .bind(user.0)
        .fetch_optional(&self.reader)
        .await?;
        role.map(|r| parse(&r)).transpose()
    }

    async fn add_member_logged(
        &self,
        ws: WorkspaceId,
        user: UserId,
        role: Role,
        events: Events<()>,
    ) -> Result<Option<Vec<Publish>>> {
        let mut tx = self.writer.begin().await?;
        if role == Role::Guest {
            // Ordered with a public channel's creation, which lists the guests its
            // `channel.created` is not for (`CreatedChannel::guests`).
            lock_membership::<DB>(&mut tx, ws).await?;
        }
        // One statement: of two concurrent adds of the same user, exactly one inserts.
        let done = sqlx::query(
            "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, user_id) DO NOTHING",
        )
        .bind(ws.0)
        .bind(user.0)
        .bind(role.as_str())
        .bind(self.now().0)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let logged = Self::log_events(&mut tx, self.now(), events(&())).await?;
        tx.commit().await?;
        Ok(Some(logged))
    }

    async fn set_member_role_logged(
        &self,
        ws: WorkspaceId,
        user: UserId,
        from: Role,
        to: Role,
        by: Option<Acting>,
        events: Events<()>,
    ) -> Result<Option<Vec<Publish>>> {
        let mut tx = self.writer.begin().await?;
        lock_membership::<DB>(&mut tx, ws).await?;
        still_allowed::<DB>(&mut tx, ws, by).await?;
        if to == Role::Guest {
            lock_readable_channels::<DB>(&mut tx, ws, user, true).await?;
        }
        // A guest made a member starts reading the workspace's public channels now: their
        // `joined_at` is when their present read access through the workspace began.
        // `role_since` is when this role was given (topics ruled by the role).
        let promoted = from == Role::Guest && to != Role::Guest;
        let done = sqlx::query(if promoted {
            "UPDATE workspace_members SET role = $1, role_since = $5, joined_at = $5
             WHERE workspace_id = $2 AND user_id = $3 AND role = $4"
        } else {
            "UPDATE workspace_members SET role = $1, role_since = $5
             WHERE workspace_id = $2 AND user_id = $3 AND role = $4"
        })
        .bind(to.as_str())
        .bind(ws.0)
        .bind(user.0)
        .bind(from.as_str())
        .bind(self.now().0)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        keeps_an_owner::<DB>(&mut tx, ws).await?;
        let logged = Self::log_events(&mut tx, self.now(), events(&())).await?;
        tx.commit().await?;
        Ok(Some(logged))
    }

    async fn remove_member_logged(
        &self,
        ws: WorkspaceId,
        user: UserId,
        role: Role,
        by: Option<Acting>,
        events: Events<Vec<ChannelId>>,
    ) -> Result<Option<(Vec<ChannelId>, Vec<Publish>)>> {
        let mut tx = self.writer.begin().await?;
        lock_membership::<DB>(&mut tx, ws).await?;
        still_allowed::<DB>(&mut tx, ws, by).await?;
        lock_readable_channels::<DB>(&mut tx, ws, user, false).await?;
        let done = sqlx::query(
            "DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2 AND role = $3",
        )
        .bind(ws.0)
        .bind(user.0)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        keeps_an_owner::<DB>(&mut tx, ws).await?;
        let mut left: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM channel_members
             WHERE user_id = $1 AND channel_id IN (SELECT id FROM channels WHERE workspace_id = $2)
             RETURNING channel_id",
        )
        .bind(user.0)
        .bind(ws.0)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM channel_delivery_lists
             WHERE user_id = $1 AND channel_id IN (SELECT id FROM channels WHERE workspace_id = $2)",
        )
        .bind(user.0)
        .bind(ws.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM workspace_observers WHERE workspace_id = $1 AND user_id = $2")
            .bind(ws.0)
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        left.sort_unstable();
        let left: Vec<ChannelId> = left.into_iter().map(ChannelId).collect();
        let logged = Self::log_events(&mut tx, self.now(), events(&left)).await?;
        tx.commit().await?;
        Ok(Some((left, logged)))
    }

    async fn members(&self, ws: WorkspaceId) -> Result<Vec<Member>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            user: ProfileRow,
            role: String,
            last_seen: Option<i64>,
        }
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {PROFILE_COLUMNS}, m.role, users.last_seen FROM workspace_members m JOIN users ON users.id = m.user_id
             WHERE m.workspace_id = $1 ORDER BY users.id"
        ))
        .bind(ws.0)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|r| {
                let user = r.user.into_profile()?;
                let presence = presence_row((user.id.0, r.last_seen, user.status_text.clone()));
                Ok(Member {
                    user,
                    role: parse(&r.role)?,
                    presence,
                })
            })
            .collect()
    }
}

/// Serializes the role changes and removals of one workspace (several nodes may make
/// them at once): without it, two owners demoting each other would each still see the
/// other as owner, and both commit. PostgreSQL's `NO KEY UPDATE` leaves inserts that
/// only reference the workspace (new workspace members) unblocked; an add to one of
/// its channels, and a new channel, share the row on purpose, to be ordered with
/// removals (`channels.rs`, `outside_workspace`). (SQLite: the single writer runs these
/// transactions one after the other already.)
async fn lock_membership<DB>(tx: &mut DB::Connection, ws: WorkspaceId) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
{
    lock_row::<DB>(tx, "workspaces", ws.0).await
}

/// Locks the rows of the workspace's channels that `user` may read through it: its
/// public channels and, unless `public_only`, those `user` is a member of — before a
/// change that takes that reading away (a removal, a demotion to guest). A message
/// insert holds its channel's row while it checks who may read the channel, so each of
/// those messages either commits first (and is told before the removal's events) or
/// sees the change (see `MessageStore::insert_message_logged`). In id order, so two
/// such changes lock them in one order; an insert locks one channel only.
/// (SQLite: the single writer orders them already.)
async fn lock_readable_channels<DB>(
    tx: &mut DB::Connection,
    ws: WorkspaceId,
    user: UserId,
    public_only: bool,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    bool: Column<DB>,
{
    let Some(lock) = DB::LOCK_ROW else {
        return Ok(());
    };
    sqlx::query(&format!(
        "SELECT id FROM channels WHERE workspace_id = $1 AND (kind = 'public'
             OR (NOT $3 AND id IN (SELECT channel_id FROM channel_members WHERE user_id = $2)))
         ORDER BY id {lock}"
    ))
    .bind(ws.0)
    .bind(user.0)
    .bind(public_only)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Fails the change being made in `tx` unless whoever makes it (`by`) still has the
/// role it takes, read under the workspace's lock (see [`Acting`]).
async fn still_allowed<DB>(
    tx: &mut DB::Connection,
    ws: WorkspaceId,
    by: Option<Acting>,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    String: Column<DB>,
{
    let Some(by) = by else {
        return Ok(());
    };
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
    )
    .bind(ws.0)
    .bind(by.user.0)
    .fetch_optional(&mut *tx)
    .await?;
    let role = role.map(|r| parse::<Role>(&r)).transpose()?;
    let allowed = matches!(
        (role, by.least),
        (Some(Role::Owner), _) | (Some(Role::Admin), Role::Admin)
    );
    if allowed {
        Ok(())
    } else {
        Err(ChatError::Forbidden(
            "your role in this workspace changed meanwhile; it no longer allows this".into(),
        ))
    }
}

/// Fails the change being made in `tx` when it left the workspace without an owner.
async fn keeps_an_owner<DB>(tx: &mut DB::Connection, ws: WorkspaceId) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
{
    let owners: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM workspace_members WHERE workspace_id = $1 AND role = 'owner'",
    )
    .bind(ws.0)
    .fetch_one(&mut *tx)
    .await?;
    if owners == 0 {
        return Err(ChatError::Conflict(
            "a workspace keeps at least one owner: make someone else owner first".into(),
        ));
    }
    Ok(())
}
