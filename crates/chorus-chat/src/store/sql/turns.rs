//! Turns and receipts: one row per agent a message woke (`message_turns`), its receipt,
//! its round-robin deadline and how it ended; the message's receipts summary is kept
//! in `messages.receipts`, rewritten with each receipt.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, Params, RowsAffected, Sql, lock_row};
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::rows::parse;
use crate::store::{Events, NewTurns, Turn, TurnStore};
use chorus_realtime::Publish;

const TURN_COLUMNS: &str = "message_id, agent_id, channel_id, state, due_at, outcome";

/// The states a turn is open in (see [`Turn::open`]).
const OPEN: &str = "outcome IS NULL AND (state IS NULL OR state IN ('received', 'working'))";

#[derive(sqlx::FromRow)]
struct TurnRow {
    message_id: i64,
    agent_id: i64,
    channel_id: i64,
    state: Option<String>,
    due_at: Option<i64>,
    outcome: Option<String>,
}

impl TurnRow {
    fn into_turn(self) -> Result<Turn> {
        Ok(Turn {
            message_id: MessageId(self.message_id),
            agent_id: UserId(self.agent_id),
            channel_id: ChannelId(self.channel_id),
            state: self.state.as_deref().map(parse).transpose()?,
            due_at: self.due_at.map(Timestamp),
            outcome: self.outcome,
        })
    }
}

fn turns(rows: Vec<TurnRow>) -> Result<Vec<Turn>> {
    rows.into_iter().map(TurnRow::into_turn).collect()
}

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
    /// Gives each of `turns.agents` its turn at a new message (in its transaction).
    pub(crate) async fn insert_turns(
        conn: &mut DB::Connection,
        message: MessageId,
        channel: ChannelId,
        turns: &NewTurns,
        at: Timestamp,
    ) -> Result<()> {
        if turns.agents.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO message_turns (message_id, agent_id, channel_id, woken_at, due_at) VALUES {}
             ON CONFLICT DO NOTHING",
            Params::of::<DB>().rows(turns.agents.len(), 5)
        );
        let mut insert = sqlx::query(&sql).persistent(turns.agents.len() == 1);
        for agent in &turns.agents {
            insert = insert
                .bind(message.0)
                .bind(agent.0)
                .bind(channel.0)
                .bind(at.0)
                .bind(turns.due_at.map(|t| t.0));
        }
        insert.execute(&mut *conn).await?;
        Ok(())
    }
}

#[async_trait]
impl<DB> TurnStore for Sql<DB>
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
    async fn turn(&self, message: MessageId, agent: UserId) -> Result<Option<Turn>> {
        let row: Option<TurnRow> = sqlx::query_as(&format!(
            "SELECT {TURN_COLUMNS} FROM message_turns WHERE message_id = $1 AND agent_id = $2"
        ))
        .bind(message.0)
        .bind(agent.0)
        .fetch_optional(&self.reader)
        .await?;
        row.map(TurnRow::into_turn).transpose()
    }

    async fn turns(&self, message: MessageId) -> Result<Vec<Turn>> {
        let rows: Vec<TurnRow> = sqlx::query_as(&format!(
            "SELECT {TURN_COLUMNS} FROM message_turns WHERE message_id = $1 ORDER BY agent_id"
        ))
        .bind(message.0)
        .fetch_all(&self.reader)
        .await?;
        turns(rows)
    }

    async fn set_receipt_logged(
        &self,
        message: MessageId,
        agent: UserId,
        state: ReceiptState,
        events: Events<Vec<Receipt>>,
    ) -> Result<Option<(Vec<Receipt>, Vec<Publish>)>> {
        let mut tx = self.writer.begin().await?;
        let now = self.now();
        // Only `received` leaves a round-robin turn due.
        let changed = sqlx::query(
            "UPDATE message_turns SET state = $1, updated_at = $2,
                 due_at = CASE WHEN $1 = 'received' THEN due_at ELSE NULL END
             WHERE message_id = $3 AND agent_id = $4 AND (state IS NULL OR state <> $1)",
        )
        .bind(state.as_str())
        .bind(now.0)
        .bind(message.0)
        .bind(agent.0)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            return Ok(None);
        }
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT agent_id, state, updated_at FROM message_turns
             WHERE message_id = $1 AND state IS NOT NULL ORDER BY updated_at, agent_id",
        )
        .bind(message.0)
        .fetch_all(&mut *tx)
        .await?;
        let receipts = rows
            .into_iter()
            .map(|(user, state, at)| {
                Ok(Receipt {
                    user_id: UserId(user),
                    state: parse(&state)?,
                    updated_at: Timestamp(at),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let summary =
            serde_json::to_string(&receipts).map_err(|e| ChatError::Internal(e.into()))?;
        sqlx::query("UPDATE messages SET receipts = $1 WHERE id = $2")
            .bind(summary)
            .bind(message.0)
            .execute(&mut *tx)
            .await?;
        let logged = Self::log_events(&mut tx, now, events(&receipts)).await?;
        tx.commit().await?;
        Ok(Some((receipts, logged)))
    }

    async fn cancel_turns_logged(
        &self,
        message: MessageId,
        agents: &[UserId],
        events: Events<Vec<UserId>>,
    ) -> Result<(Vec<UserId>, Vec<Publish>)> {
        if agents.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut tx = self.writer.begin().await?;
        let p = &mut Params::of::<DB>();
        let sql = format!(
            "UPDATE message_turns SET outcome = 'cancelled', due_at = NULL
             WHERE message_id = {} AND agent_id IN ({}) AND {OPEN}
             RETURNING agent_id",
            p.next(),
            p.list(agents.len())
        );
        let mut update = sqlx::query_scalar(&sql)
            .persistent(agents.len() == 1)
            .bind(message.0);
        for agent in agents {
            update = update.bind(agent.0);
        }
        let mut cancelled: Vec<UserId> = update
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(UserId)
            .collect();
        cancelled.sort();
        let logged = Self::log_events(&mut tx, self.now(), events(&cancelled)).await?;
        tx.commit().await?;
        Ok((cancelled, logged))
    }

    async fn overdue_turns(&self, now: Timestamp, limit: u32) -> Result<Vec<Turn>> {
        let rows: Vec<TurnRow> = sqlx::query_as(&format!(
            "SELECT {TURN_COLUMNS} FROM message_turns
             WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at, message_id LIMIT $2"
        ))
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        turns(rows)
    }

    async fn pass_turn_logged(
        &self,
        turn: &Turn,
        next: &[UserId],
        due: Timestamp,
        events: Events<Option<UserId>>,
    ) -> Result<Option<(Option<UserId>, Vec<Publish>)>> {
        let mut tx = self.writer.begin().await?;
        // Who may read is asked with the channel's row held, as a new message does: a
        // removal (which locks the row before it changes anything) either committed
        // and is seen below, or waits for this pass and logs its `member.left` after
        // it. No deadlock on PostgreSQL: the row is taken first, as an insert takes it,
        // then turn rows, `channel_turns`, and the scope heads last (`log_events`), the
        // order every other writer of these follows (removals: the workspace's row,
        // then channels; receipts and cancels take no channel row). A pass to nobody
        // wakes nobody and waits for no lock. (SQLite: the single writer is held.)
        if !next.is_empty() {
            lock_row::<DB>(&mut tx, "channels", turn.channel_id.0).await?;
        }
        let now = self.now();
        let passed = sqlx::query(
            "UPDATE message_turns SET outcome = 'passed', due_at = NULL
             WHERE message_id = $1 AND agent_id = $2 AND due_at IS NOT NULL AND outcome IS NULL",
        )
        .bind(turn.message_id.0)
        .bind(turn.agent_id.0)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !passed {
            return Ok(None);
        }
        let readers = Self::readers(&mut tx, turn.channel_id, next).await?;
        let to = (next.iter().copied()).find(|a| readers.binary_search(a).is_ok());
        if let Some(to) = to {
            let next = NewTurns {
                agents: vec![to],
                due_at: Some(due),
            };
            Self::insert_turns(&mut tx, turn.message_id, turn.channel_id, &next, now).await?;
            sqlx::query(
                "UPDATE channel_turns SET last_woken = $1 WHERE channel_id = $2 AND last_woken = $3",
            )
            .bind(to.0)
            .bind(turn.channel_id.0)
            .bind(turn.agent_id.0)
            .execute(&mut *tx)
            .await?;
        }
        let logged = Self::log_events(&mut tx, now, events(&to)).await?;
        tx.commit().await?;
        Ok(Some((to, logged)))
    }

    async fn streams_after(
        &self,
        author: UserId,
        channel: ChannelId,
        after: MessageId,
    ) -> Result<Vec<MessageId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM messages
             WHERE channel_id = $1 AND author_id = $2 AND id > $3 AND state = 'streaming'
             ORDER BY id",
        )
        .bind(channel.0)
        .bind(author.0)
        .bind(after.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(ids.into_iter().map(MessageId).collect())
    }

    async fn open_turn_before(
        &self,
        agent: UserId,
        channel: ChannelId,
        before: MessageId,
    ) -> Result<Option<Turn>> {
        let row: Option<TurnRow> = sqlx::query_as(&format!(
            "SELECT {TURN_COLUMNS} FROM message_turns
             WHERE agent_id = $1 AND channel_id = $2 AND message_id < $3 AND {OPEN}
             ORDER BY message_id DESC LIMIT 1"
        ))
        .bind(agent.0)
        .bind(channel.0)
        .bind(before.0)
        .fetch_optional(&self.reader)
        .await?;
        row.map(TurnRow::into_turn).transpose()
    }
}
