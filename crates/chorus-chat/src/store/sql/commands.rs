//! Slash commands registered in a workspace, which of them can be invoked, and an
//! invocation's delivery (a `webhook_url` command's delivery row points at the command,
//! whose secret signs it).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, RowsAffected, Sql, lock_row, share_row};
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::{
    CommandStore, IdempotentAnswer, Invocation, Invoked, MAX_COMMANDS_PER_WORKSPACE, NewCommand,
    NewWebhookDelivery,
};

const COMMAND_COLUMNS: &str =
    "id, workspace_id, name, description, target_user_id, webhook_url, created_by, created_at";

/// Whether command `c` can be invoked: whom it acts for — its agent, or a `webhook_url`
/// command's registrant — is active and a member of its workspace; a registrant who is
/// a server admin needs no membership (admins act as owners of every workspace). The
/// one copy of the rule: the listing shows what invoking delivers.
const INVOCABLE: &str = "EXISTS (SELECT 1 FROM users u
      WHERE u.id = COALESCE(c.target_user_id, c.created_by) AND u.deactivated_at IS NULL
        AND (EXISTS (SELECT 1 FROM workspace_members m
                     WHERE m.workspace_id = c.workspace_id AND m.user_id = u.id)
             OR (c.target_user_id IS NULL AND u.is_admin)))";

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
        let mut tx = self.writer.begin().await?;
        // Two registrations at once count one after the other (the workspace first, as
        // every transaction that locks it takes it before its other rows).
        lock_row::<DB>(&mut tx, "workspaces", new.workspace_id.0).await?;
        // A command of that name that can no longer be invoked is listed nowhere: it
        // gives its name up (its queued deliveries go with it).
        sqlx::query(&format!(
            "DELETE FROM commands WHERE id IN (SELECT c.id FROM commands c
              WHERE c.workspace_id = $1 AND c.name = $2 AND NOT {INVOCABLE})"
        ))
        .bind(new.workspace_id.0)
        .bind(&new.name)
        .execute(&mut *tx)
        .await?;
        // Those that can be invoked, as listed: one whose agent or registrant is gone is
        // listed nowhere, so nobody could delete it to make room.
        let held: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM commands c WHERE c.workspace_id = $1 AND {INVOCABLE}"
        ))
        .bind(new.workspace_id.0)
        .fetch_one(&mut *tx)
        .await?;
        if usize::try_from(held).unwrap_or(usize::MAX) >= MAX_COMMANDS_PER_WORKSPACE {
            return Err(ChatError::Conflict(format!(
                "a workspace holds at most {MAX_COMMANDS_PER_WORKSPACE} commands: delete one first"
            )));
        }
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
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(CommandRow::into_command))
    }

    async fn commands(&self, ws: WorkspaceId) -> Result<Vec<Command>> {
        let rows: Vec<CommandRow> = sqlx::query_as(&format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c WHERE workspace_id = $1 AND {INVOCABLE}
             ORDER BY name"
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

    async fn invoke_command_logged(
        &self,
        id: CommandId,
        (ch, invoker): (ChannelId, UserId),
        invocation: Invocation,
        key: Option<IdempotentAnswer<'_>>,
    ) -> Result<Invoked> {
        let mut tx = self.writer.begin().await?;
        let now = self.now();
        // The key first: a retry is answered as the first invocation was, whatever
        // became of the command since. Claimed by an insert, so of two invocations
        // racing with one key the second waits for the first's row (PostgreSQL) and
        // finds it taken.
        if let Some(IdempotentAnswer { key, answer }) = key {
            let claimed = sqlx::query(
                "INSERT INTO command_invocations
                    (user_id, idempotency_key, channel_id, command_id, answer, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (user_id, idempotency_key) DO NOTHING",
            )
            .bind(invoker.0)
            .bind(key)
            .bind(ch.0)
            .bind(id.0)
            .bind(answer)
            .bind(now.0)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if !claimed {
                let (channel_id, answer): (i64, String) = sqlx::query_as(
                    "SELECT channel_id, answer FROM command_invocations
                      WHERE user_id = $1 AND idempotency_key = $2",
                )
                .bind(invoker.0)
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
                return Ok(Invoked::Replayed {
                    channel_id: ChannelId(channel_id),
                    answer,
                });
            }
        }
        // Who the command acts for never changes: a command is only ever deleted.
        let Some((ws, acting)): Option<(i64, i64)> = sqlx::query_as(
            "SELECT workspace_id, COALESCE(target_user_id, created_by) FROM commands WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Invoked::Refused);
        };
        // The workspace's row, as removals and role changes take it (before channels'
        // rows and scope heads), then the channel's, as leaves and sends take it, then
        // the acting user's, as deactivation takes it (before scope heads); shared, so
        // invocations do not wait for each other. Each lock is its own statement,
        // before the check: a PostgreSQL statement sees what committed before it
        // began, so the check sees the change a lock waited for.
        share_row::<DB>(&mut tx, "workspaces", ws).await?;
        share_row::<DB>(&mut tx, "channels", ch.0).await?;
        share_row::<DB>(&mut tx, "users", acting).await?;
        let invocable: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT c.id FROM commands c WHERE c.id = $1 AND {INVOCABLE}
               AND EXISTS (SELECT 1 FROM channel_members cm
                           WHERE cm.channel_id = $2 AND cm.user_id = $3)"
        ))
        .bind(id.0)
        .bind(ch.0)
        .bind(invoker.0)
        .fetch_optional(&mut *tx)
        .await?;
        if invocable.is_none() {
            // Rolled back: the key's row too, so a retry once it can be invoked runs.
            return Ok(Invoked::Refused);
        }
        for new in &invocation.command_webhooks {
            Self::enqueue_command_webhook(&mut tx, new, id, now).await?;
        }
        let logged = Self::log_events(&mut tx, now, invocation.outbox).await?;
        tx.commit().await?;
        Ok(Invoked::Logged(logged))
    }

    async fn command_invocation(
        &self,
        user: UserId,
        key: &str,
    ) -> Result<Option<(ChannelId, String)>> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT channel_id, answer FROM command_invocations
              WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(user.0)
        .bind(key)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.map(|(channel, answer)| (ChannelId(channel), answer)))
    }

    async fn forget_command_invocations(&self, before: Timestamp) -> Result<u64> {
        // One pass over the table, as the event log's trim is (no index on the time: the
        // table holds about a day of keyed invocations, and the pass runs every few
        // minutes).
        let done = sqlx::query("DELETE FROM command_invocations WHERE created_at < $1")
            .bind(before.0)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}

impl<DB> Sql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: Column<DB>,
{
    /// Queues a `webhook_url` command's event (under `new.user_id`, the registrant),
    /// signed with the command's secret when delivered; one already queued is left.
    async fn enqueue_command_webhook(
        conn: &mut DB::Connection,
        new: &NewWebhookDelivery,
        command: CommandId,
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_deliveries
                (user_id, event_id, url, body, status, next_attempt_at, created_at, command_id)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)
             ON CONFLICT (user_id, event_id) DO NOTHING",
        )
        .bind(new.user_id.0)
        .bind(new.event_id.as_str())
        .bind(new.url.as_str())
        .bind(new.body.as_str())
        .bind(new.due_at.0)
        .bind(at.0)
        .bind(command.0)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
