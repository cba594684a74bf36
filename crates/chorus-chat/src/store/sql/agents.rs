//! Agent-aware delivery: policy lists, observers, round-robin turns, webhook queue.
//! The webhook claim is one statement, so it is atomic even between processes sharing
//! an SQLite file; on PostgreSQL it skips rows another node is claiming.

use std::collections::HashMap;

use async_trait::async_trait;
use chorus_realtime::Publish;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::users::USER_COLUMNS;
use super::{Column, Dialect, RowsAffected, Sql, json_list, share_row};
use crate::error::{ChatError, Result, not_in_channel, not_in_workspace};
use crate::model::*;
use crate::store::rows::UserRow;
use crate::store::rows::parse;
use crate::store::{
    AgentMember, AgentStore, AttemptOutcome, ClaimLimits, DEACTIVATED_WEBHOOK, DeliveryList,
    DueWebhook, Events, NO_WEBHOOK, NewWebhookDelivery,
};

/// A delivery's user as they are now: webhook URL, secret, deactivated.
type Recipient = (Option<String>, Option<String>, bool);

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    user_id: i64,
    event_id: String,
    url: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
}

/// The oldest due webhook deliveries a claim ranks per user when no user is busy, at
/// most (see `claim_due_webhooks`).
const CLAIM_WINDOW: usize = 1_000;

#[async_trait]
impl<DB> AgentStore for Sql<DB>
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
    async fn delivery_list(&self, ch: ChannelId, list: DeliveryList) -> Result<Vec<UserId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM channel_delivery_lists WHERE channel_id = $1 AND list = $2
             ORDER BY user_id",
        )
        .bind(ch.0)
        .bind(list.as_str())
        .fetch_all(&self.reader)
        .await?;
        Ok(ids.into_iter().map(UserId).collect())
    }

    async fn set_delivery_list(
        &self,
        ch: ChannelId,
        list: DeliveryList,
        users: &[UserId],
        events: Events<()>,
    ) -> Result<Vec<Publish>> {
        let mut tx = self.writer.begin().await?;
        // The channel's row, as a leave or a removal takes it before it deletes the
        // member's list entries: each of them comes after this (and deletes what this
        // wrote) or before it (and this sees that they are gone).
        share_row::<DB>(&mut tx, "channels", ch.0).await?;
        sqlx::query("DELETE FROM channel_delivery_lists WHERE channel_id = $1 AND list = $2")
            .bind(ch.0)
            .bind(list.as_str())
            .execute(&mut *tx)
            .await?;
        for user in users {
            sqlx::query(
                "INSERT INTO channel_delivery_lists (channel_id, list, user_id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(ch.0)
            .bind(list.as_str())
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        }
        // The service checked the members before; a leave since is seen here.
        let outsider: Option<i64> = sqlx::query_scalar(
            "SELECT l.user_id FROM channel_delivery_lists l
              WHERE l.channel_id = $1 AND l.list = $2
                AND NOT EXISTS (SELECT 1 FROM channel_members cm
                                WHERE cm.channel_id = $1 AND cm.user_id = l.user_id)
              LIMIT 1",
        )
        .bind(ch.0)
        .bind(list.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(user) = outsider {
            return Err(not_in_channel(UserId(user)));
        }
        let logged = Self::log_events(&mut tx, self.now(), events(&())).await?;
        tx.commit().await?;
        Ok(logged)
    }

    async fn observers(&self, ws: WorkspaceId) -> Result<Vec<UserId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM workspace_observers WHERE workspace_id = $1 ORDER BY user_id",
        )
        .bind(ws.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(ids.into_iter().map(UserId).collect())
    }

    async fn set_observers(
        &self,
        ws: WorkspaceId,
        users: &[UserId],
        events: Events<()>,
    ) -> Result<Vec<Publish>> {
        let mut tx = self.writer.begin().await?;
        // The workspace's row, as a removal from it takes it before it deletes the
        // member's observing: the removal comes after this (and deletes what this
        // wrote) or before it (and this sees that they are gone).
        share_row::<DB>(&mut tx, "workspaces", ws.0).await?;
        sqlx::query("DELETE FROM workspace_observers WHERE workspace_id = $1")
            .bind(ws.0)
            .execute(&mut *tx)
            .await?;
        for user in users {
            sqlx::query(
                "INSERT INTO workspace_observers (workspace_id, user_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(ws.0)
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        }
        // The service checked the members before; a removal since is seen here.
        let outsider: Option<i64> = sqlx::query_scalar(
            "SELECT o.user_id FROM workspace_observers o
              WHERE o.workspace_id = $1
                AND NOT EXISTS (SELECT 1 FROM workspace_members wm
                                WHERE wm.workspace_id = $1 AND wm.user_id = o.user_id)
              LIMIT 1",
        )
        .bind(ws.0)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(user) = outsider {
            return Err(not_in_workspace(UserId(user)));
        }
        let logged = Self::log_events(&mut tx, self.now(), events(&())).await?;
        tx.commit().await?;
        Ok(logged)
    }

    async fn agent_members(&self, ch: ChannelId) -> Result<Vec<AgentMember>> {
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
            // The (few) agents first (partial index), then a primary key probe of the
            // membership, whatever the channel's size.
            "SELECT users.id, users.webhook_url FROM users CROSS JOIN channel_members cm
             WHERE users.kind = 'agent' AND cm.channel_id = $1 AND cm.user_id = users.id
               AND users.deactivated_at IS NULL
             ORDER BY users.id",
        )
        .bind(ch.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, webhook_url)| AgentMember {
                id: UserId(id),
                webhook_url,
            })
            .collect())
    }

    async fn last_woken(&self, ch: ChannelId) -> Result<Option<UserId>> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT last_woken FROM channel_turns WHERE channel_id = $1")
                .bind(ch.0)
                .fetch_optional(&self.writer)
                .await?;
        Ok(id.map(UserId))
    }

    async fn advance_turn(&self, ch: ChannelId, from: Option<UserId>, to: UserId) -> Result<bool> {
        let done = match from {
            None => {
                sqlx::query(
                    "INSERT INTO channel_turns (channel_id, last_woken) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .bind(ch.0)
                .bind(to.0)
                .execute(&self.writer)
                .await?
            }
            Some(from) => sqlx::query(
                "UPDATE channel_turns SET last_woken = $1 WHERE channel_id = $2 AND last_woken = $3",
            )
            .bind(to.0)
            .bind(ch.0)
            .bind(from.0)
            .execute(&self.writer)
            .await?,
        };
        Ok(done.rows_affected() == 1)
    }

    async fn set_webhook(
        &self,
        user: UserId,
        url: Option<&str>,
        secret: Option<&str>,
    ) -> Result<User> {
        let row: Option<UserRow> = sqlx::query_as(&format!(
            "UPDATE users SET webhook_url = $1, webhook_secret = $2 WHERE id = $3
             RETURNING {USER_COLUMNS}"
        ))
        .bind(url)
        .bind(secret)
        .bind(user.0)
        .fetch_optional(&self.writer)
        .await?;
        row.ok_or_else(|| ChatError::NotFound("no such user".into()))?
            .into_user()
    }

    async fn enqueue_webhook(&self, new: NewWebhookDelivery) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries
                (user_id, event_id, url, body, status, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6)
             ON CONFLICT (user_id, event_id) DO NOTHING",
        )
        .bind(new.user_id.0)
        .bind(&new.event_id)
        .bind(&new.url)
        .bind(&new.body)
        .bind(new.due_at.0)
        .bind(self.now().0)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_due_webhooks(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limits: &ClaimLimits,
    ) -> Result<Vec<DueWebhook>> {
        if limits.total == 0 || limits.per_user == 0 {
            return Ok(Vec::new());
        }
        // One statement (a read-then-write transaction could lose its snapshot to another
        // writer), and rows another node is claiming right now are skipped rather than
        // waited for (the lock is taken a level above the ranking: PostgreSQL locks no
        // rows of a window function's query). The due condition is asked again of each
        // row updated, so a row another node leased meanwhile is not taken twice; the
        // rows updated are found by id (`DB::BY_ID`), not by that condition's index
        // range, which holds every due row.
        //
        // What is ranked per user is read through an index, never a whole backlog:
        // - With no user busy, the oldest [`CLAIM_WINDOW`] due rows, which the index on
        //   (status, next_attempt_at) gives in order.
        // - With users busy, that order would read past all their due rows, and a busy
        //   user is typically one whose receiver hangs, its backlog growing for as long
        //   as it does. So the claim walks the users with pending rows instead, one seek
        //   each on (status, user_id, next_attempt_at), skips the busy ones, and reads
        //   each other user's due rows up to their `per_user`-th pending one (more only
        //   where several share its time; the ranking keeps `per_user`). Its cost grows
        //   with how many users have deliveries pending (microseconds each: some 15 on
        //   PostgreSQL, where 10,000 of them cost more than reading past a backlog of
        //   100,000), not with how long a receiver has been hanging. (`CROSS JOIN`:
        //   SQLite, which has no statistics, keeps the users as the outer loop.)
        let candidates = if limits.busy.is_empty() {
            format!(
                "SELECT id, user_id, next_attempt_at FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= $2
                 ORDER BY next_attempt_at, id LIMIT {CLAIM_WINDOW}"
            )
        } else {
            format!(
                "WITH RECURSIVE waiting(user_id) AS (
                     SELECT MIN(user_id) FROM webhook_deliveries WHERE status = 'pending'
                     UNION ALL
                     SELECT (SELECT MIN(p.user_id) FROM webhook_deliveries p
                             WHERE p.status = 'pending' AND p.user_id > w.user_id)
                     FROM waiting w WHERE w.user_id IS NOT NULL
                 ),
                 cutoffs(user_id, last) AS (
                     SELECT w.user_id, (SELECT p.next_attempt_at FROM webhook_deliveries p
                                        WHERE p.status = 'pending' AND p.user_id = w.user_id
                                        ORDER BY p.next_attempt_at, p.id LIMIT 1 OFFSET $4 - 1)
                     FROM waiting w
                     WHERE w.user_id IS NOT NULL
                       AND w.user_id NOT IN (SELECT CAST(value AS BIGINT) FROM {busy})
                 )
                 SELECT d.id, d.user_id, d.next_attempt_at
                 FROM cutoffs c CROSS JOIN webhook_deliveries d
                 WHERE d.status = 'pending' AND d.user_id = c.user_id
                   AND d.next_attempt_at <= $2 AND d.next_attempt_at <= COALESCE(c.last, $2)",
                busy = DB::json_elements("$5"),
            )
        };
        let sql = format!(
            "UPDATE webhook_deliveries {by_id} SET next_attempt_at = $1
             WHERE status = 'pending' AND next_attempt_at <= $2 AND id IN (
                 SELECT d.id FROM webhook_deliveries d WHERE d.id IN (
                     SELECT id FROM (
                         SELECT id, next_attempt_at, ROW_NUMBER() OVER
                                (PARTITION BY user_id ORDER BY next_attempt_at, id) AS nth
                         FROM ({candidates}) due
                     ) ranked
                     WHERE nth <= $4 ORDER BY next_attempt_at, id LIMIT $3)
                 {skip_locked})
             RETURNING id, user_id, event_id, url, body, attempts, command_id",
            by_id = DB::BY_ID,
            skip_locked = DB::SKIP_LOCKED,
        );
        let mut claim =
            sqlx::query_as::<_, (i64, i64, String, String, String, i64, Option<i64>)>(&sql)
                .bind(lease_until.0)
                .bind(now.0)
                .bind(i64::from(limits.total))
                .bind(i64::from(limits.per_user));
        if !limits.busy.is_empty() {
            let busy: Vec<i64> = limits.busy.iter().map(|user| user.0).collect();
            claim = claim.bind(json_list(&busy));
        }
        let rows = claim.fetch_all(&self.writer).await?;
        // Whom each delivery is for, as they are now (one read a user): a deactivated
        // user gets nothing, whenever the delivery was queued (a message whose send read
        // the agents just before the deactivation queues it after the deactivation gave
        // up the pending ones; a command's acts for its agent or registrant); an agent's
        // delivery goes to its webhook and is signed with its secret as they are now, so
        // a URL replaced (say one that leaked) gets nothing more.
        let mut users: HashMap<i64, Recipient> = HashMap::new();
        for (_, user, ..) in &rows {
            if !users.contains_key(user) {
                let found: Option<Recipient> = sqlx::query_as(
                    "SELECT webhook_url, webhook_secret, deactivated_at IS NOT NULL
                     FROM users WHERE id = $1",
                )
                .bind(user)
                .fetch_optional(&self.writer)
                .await?;
                users.insert(*user, found.unwrap_or((None, None, true)));
            }
        }
        // A registered command's deliveries go to the command's URL, signed with its
        // secret.
        let mut command_secrets: HashMap<i64, Option<String>> = HashMap::new();
        for (.., command) in &rows {
            if let Some(command) = command
                && !command_secrets.contains_key(command)
            {
                let secret: Option<Option<String>> =
                    sqlx::query_scalar("SELECT webhook_secret FROM commands WHERE id = $1")
                        .bind(command)
                        .fetch_optional(&self.writer)
                        .await?;
                command_secrets.insert(*command, secret.flatten());
            }
        }
        let mut due = Vec::with_capacity(rows.len());
        let mut given_up: Vec<(i64, &str)> = Vec::new();
        for (id, user_id, event_id, url, body, attempts, command) in rows {
            let Some((current, secret, deactivated)) = users.get(&user_id) else {
                continue; // read above for every row
            };
            let (url, secret) = match command {
                _ if *deactivated => {
                    given_up.push((id, DEACTIVATED_WEBHOOK));
                    continue;
                }
                Some(command) => (url, command_secrets.get(&command).cloned().flatten()),
                None => match current {
                    Some(current) => {
                        if *current != url {
                            // The row shows where its latest attempt went.
                            sqlx::query("UPDATE webhook_deliveries SET url = $1 WHERE id = $2")
                                .bind(current)
                                .bind(id)
                                .execute(&self.writer)
                                .await?;
                        }
                        (current.clone(), secret.clone())
                    }
                    // The webhook was taken away: nowhere to send it.
                    None => {
                        given_up.push((id, NO_WEBHOOK));
                        continue;
                    }
                },
            };
            due.push(DueWebhook {
                id,
                user_id: UserId(user_id),
                event_id,
                url,
                body,
                attempts,
                secret,
            });
        }
        for (id, why) in given_up {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', last_error = $1, finished_at = $2
                 WHERE id = $3 AND status = 'pending'",
            )
            .bind(why)
            .bind(now.0)
            .bind(id)
            .execute(&self.writer)
            .await?;
        }
        due.sort_by_key(|d| d.id);
        Ok(due)
    }

    async fn next_webhook_due(&self) -> Result<Option<Timestamp>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.writer)
        .await?;
        Ok(at.map(Timestamp))
    }

    async fn record_webhook_attempt(
        &self,
        delivery: i64,
        attempt: &WebhookAttempt,
        outcome: AttemptOutcome,
    ) -> Result<()> {
        let (status, next, finished) = match outcome {
            AttemptOutcome::Delivered => (WebhookStatus::Delivered, attempt.at, Some(attempt.at)),
            AttemptOutcome::Retry { at } => (WebhookStatus::Pending, at, None),
            AttemptOutcome::Failed => (WebhookStatus::Failed, attempt.at, Some(attempt.at)),
            AttemptOutcome::Refused => (WebhookStatus::Refused, attempt.at, Some(attempt.at)),
        };
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(delivery)
        .bind(attempt.attempt)
        .bind(attempt.at.0)
        .bind(attempt.status_code)
        .bind(&attempt.error)
        .bind(attempt.duration_ms)
        .execute(&mut *tx)
        .await?;
        // A retry keeps only a delivery still pending: one given up meanwhile (its agent
        // deactivated) stays given up. A final outcome is what happened, and is kept.
        let still_pending = match outcome {
            AttemptOutcome::Retry { .. } => " AND status = 'pending'",
            _ => "",
        };
        sqlx::query(&format!(
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3,
                last_error = COALESCE($4, last_error), finished_at = $5
             WHERE id = $6{still_pending}"
        ))
        .bind(status.as_str())
        .bind(attempt.attempt)
        .bind(next.0)
        .bind(&attempt.error)
        .bind(finished.map(|t| t.0))
        .bind(delivery)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn webhook_deliveries(&self, user: UserId, limit: u32) -> Result<Vec<WebhookDelivery>> {
        let mut conn = self.reader.acquire().await?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(
            "SELECT id, user_id, event_id, url, status, attempts, next_attempt_at, last_error,
                    created_at, finished_at
             FROM webhook_deliveries WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user.0)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        let mut attempts: HashMap<i64, Vec<WebhookAttempt>> = HashMap::new();
        if let (Some(first), Some(last)) = (rows.last(), rows.first()) {
            let log: Vec<(i64, i64, i64, Option<i64>, Option<String>, i64)> = sqlx::query_as(
                "SELECT a.delivery_id, a.attempt, a.at, a.status_code, a.error, a.duration_ms
                 FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
                 WHERE d.user_id = $1 AND a.delivery_id BETWEEN $2 AND $3
                 ORDER BY a.delivery_id, a.attempt",
            )
            .bind(user.0)
            .bind(first.id)
            .bind(last.id)
            .fetch_all(&mut *conn)
            .await?;
            for (delivery, attempt, at, status_code, error, duration_ms) in log {
                attempts.entry(delivery).or_default().push(WebhookAttempt {
                    attempt,
                    at: Timestamp(at),
                    status_code,
                    error,
                    duration_ms,
                });
            }
        }
        rows.into_iter()
            .map(|r| {
                let status: WebhookStatus = parse(&r.status)?;
                Ok(WebhookDelivery {
                    id: r.id,
                    user_id: UserId(r.user_id),
                    event_id: r.event_id,
                    url: r.url,
                    status,
                    attempts: r.attempts,
                    next_attempt_at: (status == WebhookStatus::Pending)
                        .then_some(Timestamp(r.next_attempt_at)),
                    last_error: r.last_error,
                    created_at: Timestamp(r.created_at),
                    finished_at: r.finished_at.map(Timestamp),
                    attempt_log: attempts.remove(&r.id).unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn fail_pending_webhooks(&self, user: UserId, at: Timestamp, error: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'failed', last_error = $1, finished_at = $2
             WHERE user_id = $3 AND status = 'pending'",
        )
        .bind(error)
        .bind(at.0)
        .bind(user.0)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }
}
