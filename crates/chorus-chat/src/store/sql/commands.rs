//! Slash commands registered in a workspace, and queueing a `webhook_url` command's
//! event (the delivery row points at the command, whose secret signs it).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, RowsAffected, Sql};
use crate::error::Result;
use crate::model::*;
use crate::store::{CommandStore, NewCommand, NewWebhookDelivery};

const COMMAND_COLUMNS: &str =
    "id, workspace_id, name, description, target_user_id, webhook_url, created_by, created_at";

#[derive(sqlx::FromRow)]
struct CommandRow {
    id: i64,
    workspace_id: i64,
    name: String,
    description: String,
    target_user_id: Option<i64>,
    webhook_url: Option<String>,
    created_by: i64,
    created_at: i64,
}

impl CommandRow {
    fn into_command(self) -> Command {
        Command {
            id: CommandId(self.id),
            workspace_id: WorkspaceId(self.workspace_id),
            name: self.name,
            description: self.description,
            target_user_id: self.target_user_id.map(UserId),
            webhook_url: self.webhook_url,
            webhook_secret: None,
            created_by: UserId(self.created_by),
            created_at: Timestamp(self.created_at),
        }
    }
}

#[async_trait]
impl<DB> CommandStore for Sql<DB>
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
    async fn create_command(&self, new: NewCommand) -> Result<Option<Command>> {
        let row: Option<CommandRow> = sqlx::query_as(&format!(
            "INSERT INTO commands (workspace_id, name, description, target_user_id, webhook_url,
                                   webhook_secret, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (workspace_id, name) DO NOTHING
             RETURNING {COMMAND_COLUMNS}"
        ))
        .bind(new.workspace_id.0)
        .bind(&new.name)
        .bind(&new.description)
        .bind(new.target_user_id.map(|u| u.0))
        .bind(new.webhook_url.as_deref())
        .bind(new.webhook_secret.as_deref())
        .bind(new.created_by.0)
        .bind(self.now().0)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.map(CommandRow::into_command))
    }

    async fn commands(&self, ws: WorkspaceId) -> Result<Vec<Command>> {
        let rows: Vec<CommandRow> = sqlx::query_as(&format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE workspace_id = $1 ORDER BY name"
        ))
        .bind(ws.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(CommandRow::into_command).collect())
    }

    async fn command(&self, id: CommandId) -> Result<Option<Command>> {
        let row: Option<CommandRow> = sqlx::query_as(&format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(CommandRow::into_command))
    }

    async fn command_named(&self, ws: WorkspaceId, name: &str) -> Result<Option<Command>> {
        let row: Option<CommandRow> = sqlx::query_as(&format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE workspace_id = $1 AND name = $2"
        ))
        .bind(ws.0)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(CommandRow::into_command))
    }

    async fn delete_command(&self, id: CommandId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM commands WHERE id = $1")
            .bind(id.0)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn enqueue_command_webhook(
        &self,
        new: NewWebhookDelivery,
        command: CommandId,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries
                (user_id, event_id, url, body, status, next_attempt_at, created_at, command_id)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)
             ON CONFLICT (user_id, event_id) DO NOTHING",
        )
        .bind(new.user_id.0)
        .bind(&new.event_id)
        .bind(&new.url)
        .bind(&new.body)
        .bind(new.due_at.0)
        .bind(self.now().0)
        .bind(command.0)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
