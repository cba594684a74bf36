use async_trait::async_trait;

use super::users::USER_COLUMNS;
use super::{PgStore, parse};
use crate::error::Result;
use crate::model::*;
use crate::store::WorkspaceStore;
use crate::store::rows::{UserRow, WorkspaceRow, presence_row};

#[async_trait]
impl WorkspaceStore for PgStore {
    async fn create_workspace(&self, name: &str, owner: UserId) -> Result<Workspace> {
        let now = Timestamp::now().0;
        let mut tx = self.pool.begin().await?;
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
        tx.commit().await?;
        Ok(row.into())
    }

    async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>> {
        let row: Option<WorkspaceRow> =
            sqlx::query_as("SELECT id, name, created_by, created_at FROM workspaces WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
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
        .fetch_all(&self.pool)
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

    async fn member_role(&self, ws: WorkspaceId, user: UserId) -> Result<Option<Role>> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(ws.0)
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?;
        role.map(|r| parse(&r)).transpose()
    }

    async fn put_member(&self, ws: WorkspaceId, user: UserId, role: Role) -> Result<bool> {
        // One statement, so two concurrent adds of the same user cannot both report
        // "new": `xmax = 0` holds only for the row version this statement inserted.
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role
             RETURNING (xmax = 0)",
        )
        .bind(ws.0)
        .bind(user.0)
        .bind(role.as_str())
        .bind(Timestamp::now().0)
        .fetch_one(&self.pool)
        .await?;
        Ok(inserted)
    }

    async fn members(&self, ws: WorkspaceId) -> Result<Vec<Member>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            user: UserRow,
            role: String,
            last_seen: Option<i64>,
        }
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS}, m.role, users.last_seen FROM workspace_members m JOIN users ON users.id = m.user_id
             WHERE m.workspace_id = $1 ORDER BY users.id"
        ))
        .bind(ws.0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let user = r.user.into_user()?;
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
