//! Group commit for plain messages (no mentions, no thread): the sends that arrive while
//! the single writer is busy are inserted together, by one multi-row insert on the
//! writer connection, with their events (one more multi-row insert and one head update
//! per scope) in the same transaction. A busy server then pays the writer's round trip
//! (a hand-off to SQLite's thread and back) once per batch instead of once per message,
//! and a lone send still goes out at once (a batch of one).
//!
//! A batch is one round trip when the batcher knows the messages' id sequence: it gives
//! the rows their ids itself, so their events (which carry the ids) are written by the
//! same call, `BEGIN` to `COMMIT`. Each row also asks there that its author is a member
//! of its channel (its `channel_id` is `NULL` otherwise, which fails the statement, and
//! the sends are then written one by one, that one refused: see [`author_in`]). What
//! the batcher knows is checked inside that call too — the
//! first row's `channel_id` is `NULL`, failing the statement, unless SQLite's sequence
//! (`sqlite_sequence`, the highest id ever given: ids of deleted messages are not given
//! again) is where the batcher thinks it is — so a wrong guess costs a retry, never a
//! wrong id. Otherwise (at start, after such a failure, or when an idempotency key
//! turns out taken) the batch takes two round trips: the rows' insert returns their
//! ids, then the events and `COMMIT`. Every insert tells the batcher its id (the
//! others through [`PlainInserts::inserted_elsewhere`]), so in practice it knows.
//!
//! The batcher keeps the writer connection across batches while sends are already
//! queued (at most [`HOLD_BATCHES`] in a row, [`MAX_BATCH`] sends): sqlx pings a pooled
//! connection's thread, from a task of its own, each time it goes back to the pool, and
//! with one writer that ping sat between every two batches (docs/benchmarks.md, "Round
//! 2, session 11").

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use chorus_realtime::Clock;

use crate::error::{ChatError, Result};
use crate::model::{MessageId, Timestamp};
use crate::store::rows::{created_message, mentions_json};
use crate::store::sql::{Append, Params, PlainInserts, Sql};
use crate::store::{Events, Inserted, NewMessage, Outbox};
use chorus_realtime::Publish;

/// Messages per statement, at most (10 bound values each, far under SQLite's limit).
const MAX_BATCH: usize = 256;

/// A plain insert and what it produced: `None` when the idempotency key is taken (the
/// caller looks up the earlier message), else the message and its logged events.
type Outcome = Result<Option<(Inserted, Vec<Publish>)>>;

struct Job {
    new: NewMessage,
    events: Events<Inserted>,
    reply: oneshot::Sender<Outcome>,
}

/// [`Sequence`]'s value while the batcher does not know it.
const UNKNOWN: i64 = -1;

/// The messages' id sequence as the batcher knows it: the highest id given, or
/// [`UNKNOWN`]. Ids rise with commits (one writer), so what is learnt is merged with
/// `fetch_max`.
type Sequence = Arc<AtomicI64>;

/// The batcher's queue, where the store sends plain inserts.
pub(super) struct Batcher {
    jobs: mpsc::Sender<Job>,
    sequence: Sequence,
}

#[async_trait::async_trait]
impl PlainInserts for Batcher {
    async fn insert(&self, new: &NewMessage, events: Events<Inserted>) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            new: new.clone(),
            events,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| ChatError::Internal(anyhow::anyhow!("the insert batcher is gone")))?;
        answer.await.map_err(|_| {
            ChatError::Internal(anyhow::anyhow!("the insert batcher dropped a send"))
        })?
    }

    fn inserted_elsewhere(&self, id: MessageId) {
        self.sequence.fetch_max(id.0, Ordering::Relaxed);
    }
}

/// The batcher and its task; the task ends when the store (the batcher) is dropped.
pub(super) fn start(writer: SqlitePool, clock: Clock) -> (Batcher, tokio::task::AbortHandle) {
    let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
    let sequence: Sequence = Arc::new(AtomicI64::new(UNKNOWN));
    let task = tokio::spawn(run(writer, clock, sequence.clone(), rx));
    (Batcher { jobs, sequence }, task.abort_handle())
}

async fn run(writer: SqlitePool, clock: Clock, sequence: Sequence, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut texts = Texts::default();
    loop {
        if jobs.is_empty() && rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let mut conn = match writer.acquire().await {
            Ok(conn) => conn,
            Err(err) => {
                for job in jobs.drain(..) {
                    let cause = anyhow::anyhow!("the SQLite writer: {err}");
                    let _ = job.reply.send(Err(ChatError::Internal(cause)));
                }
                continue;
            }
        };
        // The writer is kept while sends are already waiting, for HOLD_BATCHES batches
        // and MAX_BATCH sends at most: sqlx pings SQLite's thread (from a task of its
        // own) whenever a connection goes back to the pool, which would sit between
        // every two batches. Other writers wait that long at most (the pool serves its
        // waiters in order); what is left over is written when the writer comes back
        // round. A batch that failed gives the connection back at once, so the pool's
        // check on release can replace a broken one.
        let mut written = 0;
        for _ in 0..HOLD_BATCHES {
            written += jobs.len();
            let batch = std::mem::take(&mut jobs);
            if !write(&mut conn, &clock, &sequence, &mut texts, batch).await || written >= MAX_BATCH
            {
                break;
            }
            while jobs.len() < MAX_BATCH
                && let Ok(job) = rx.try_recv()
            {
                jobs.push(job);
            }
            if jobs.is_empty() {
                break;
            }
        }
    }
}

/// Batches written on one acquisition of the writer, at most, when sends keep coming.
const HOLD_BATCHES: usize = 8;

/// The one-call batch's SQL by its shape (messages; the append's heads, event rows and
/// webhook deliveries): the text depends on nothing else, and building it anew (a
/// `format!` per row) cost a busy server ~3 µs a send (docs/benchmarks.md, "Round 2,
/// session 12"). A few shapes recur (a batch is as big as the sends that queued while
/// the last one was written); the cache is emptied when it holds [`TEXTS`] of them.
#[derive(Default)]
struct Texts(std::collections::HashMap<Shape, Arc<str>>);

/// A batch's shape: its messages, and its append's [`shape`](Append::shape).
type Shape = (usize, (usize, usize, usize));

/// Shapes of batch kept by [`Texts`], at most (sqlx keeps 100 prepared statements per
/// connection).
const TEXTS: usize = 64;

impl Texts {
    fn get(&mut self, jobs: usize, append: Option<&Append>) -> Arc<str> {
        let shape = (jobs, append.map_or((0, 0, 0), Append::shape));
        if let Some(text) = self.0.get(&shape) {
            return text.clone();
        }
        if self.0.len() >= TEXTS {
            self.0.clear();
        }
        let text: Arc<str> = write_known_sql(jobs, append).into();
        self.0.insert(shape, text.clone());
        text
    }
}

/// Writes one batch on the writer connection and answers its jobs; `false` when the
/// batch failed (its sends were then tried one by one).
async fn write(
    conn: &mut SqliteConnection,
    clock: &Clock,
    sequence: &Sequence,
    texts: &mut Texts,
    batch: Vec<Job>,
) -> bool {
    let known = sequence.load(Ordering::Relaxed);
    let written = if known == UNKNOWN {
        Err(None)
    } else {
        match write_known(conn, clock, texts, known, &batch).await {
            Ok(results) => Ok(results),
            Err(err) => Err(Some(err)),
        }
    };
    let outcome = match written {
        Ok(results) => Ok(results),
        Err(failed) => {
            if let Some(err) = failed {
                tracing::debug!(cause = %err, "batch with known ids failed; ids returned instead");
                // Not known after all; whatever the next insert learns is.
                let _ =
                    sequence.compare_exchange(known, UNKNOWN, Ordering::Relaxed, Ordering::Relaxed);
            }
            insert_batch(conn, clock, &batch).await
        }
    };
    match outcome {
        Ok(results) => {
            learn(sequence, &results);
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.reply.send(Ok(result));
            }
            true
        }
        // One bad row fails the statement (a departed author's among them): insert one
        // by one, so only that send fails, with its own error.
        Err(err) => {
            tracing::debug!(cause = %err, n = batch.len(), "batched insert failed; one by one");
            for job in batch {
                let outcome = insert_one(conn, clock, &job).await;
                if let Ok(Some((inserted, _))) = &outcome {
                    sequence.fetch_max(inserted.message.id.0, Ordering::Relaxed);
                }
                let _ = job.reply.send(outcome);
            }
            false
        }
    }
}

/// Moves the sequence to the highest id among `results`, the newest ids given (one
/// writer).
fn learn(sequence: &Sequence, results: &[Option<(Inserted, Vec<Publish>)>]) {
    let newest = results.iter().flatten().map(|(i, _)| i.message.id.0).max();
    if let Some(newest) = newest {
        sequence.fetch_max(newest, Ordering::Relaxed);
    }
}

/// Inserts the jobs' rows with the ids after `known`, and their events, in one call to
/// SQLite's thread: `BEGIN`, the rows' insert, the events' append, `COMMIT`. Fails, and
/// rolls back, unless the sequence is at `known` (or when an idempotency key is taken:
/// there is no `ON CONFLICT` here; the two-call path sorts that out).
async fn write_known(
    conn: &mut SqliteConnection,
    clock: &Clock,
    texts: &mut Texts,
    known: i64,
    jobs: &[Job],
) -> Result<Vec<Option<(Inserted, Vec<Publish>)>>> {
    // Taken with the writer held, so times rise with ids.
    let created_at = Timestamp(clock.now_ms());
    let mut mentions = Vec::with_capacity(jobs.len());
    let mut inserted = Vec::with_capacity(jobs.len());
    for (job, id) in jobs.iter().zip(known + 1..) {
        mentions.push(mentions_json(&job.new.mentions)?);
        inserted.push(Some(Inserted {
            message: created_message(&job.new, MessageId(id), created_at),
            created: true,
            root: None,
            readers: Vec::new(),
        }));
    }
    let (outbox, counts) = outboxes(jobs, &inserted);
    let append = Append::new(outbox, created_at)?;
    let sql = texts.get(jobs.len(), append.as_ref());
    let mut query = sqlx::query_as::<Sqlite, (String, i64)>(&sql);
    let rows = jobs.iter().zip(inserted.iter().flatten()).zip(&mentions);
    for (r, ((job, new), mentions)) in rows.enumerate() {
        let job = &job.new;
        query = query.bind(new.message.id.0);
        if r == 0 {
            query = query.bind(known);
        }
        query = query
            .bind(job.channel_id.0)
            .bind(job.author_id.0)
            .bind(job.channel_id.0)
            .bind(job.author_id.0)
            .bind(job.text.as_str())
            .bind(job.thread_id.map(|t| t.0))
            .bind(mentions.as_str())
            .bind(created_at.0)
            .bind(job.idempotency_key.as_deref());
    }
    if let Some(append) = &append {
        query = append.bind(query);
    }
    let heads = match query.fetch_all(&mut *conn).await {
        Ok(heads) => heads,
        Err(err) => {
            // A failed statement leaves the transaction open: nothing of it stays.
            if let Err(err) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                tracing::debug!(cause = %err, "rollback after a failed batch");
            }
            return Err(err.into());
        }
    };
    let logged = match append {
        Some(append) => append.numbered(&heads)?,
        None => Vec::new(),
    };
    Ok(with_their_events(inserted, counts, logged))
}

/// Values bound per message row by [`write_known_sql`] (the first row binds one more: the
/// sequence expected, after its id): the id, the channel and author twice more for
/// [`author_in`], then the row's own values from the channel on.
const WIDTH: usize = 10;

/// A row's condition, on the parameters of its channel and author, that the author is
/// a member of the channel: the row's `channel_id` is `NULL` otherwise, which fails the
/// statement, so the batch is written one by one and only that send is refused
/// ([`insert_one`]). Asked by the batch's own statement on the writer connection: a
/// leave or a removal that committed after the service's check is seen, and none can
/// commit in between.
fn author_in(channel: &str, author: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM channel_members WHERE channel_id = {channel} AND user_id = {author})"
    )
}

/// The SQL of [`write_known`] for `jobs` messages and their `append`, with positional
/// parameters ([`Params`]): [`WIDTH`] values a message, the sequence expected after the
/// first message's id, then the append's.
fn write_known_sql(jobs: usize, append: Option<&Append>) -> String {
    let p = &mut Params::Positional;
    let rows: Vec<String> = (0..jobs)
        .map(|r| {
            let id = p.next();
            let sequence = if r == 0 {
                format!(
                    "(SELECT seq FROM sqlite_sequence WHERE name = 'messages') = {} AND ",
                    p.next()
                )
            } else {
                String::new()
            };
            let author_in = author_in(&p.next(), &p.next());
            let channel = format!("CASE WHEN {sequence}{author_in} THEN {} END", p.next());
            format!("({id}, {channel}, {})", p.list(WIDTH - 4))
        })
        .collect();
    let mut sql = format!(
        "BEGIN; INSERT INTO messages (id, channel_id, author_id, text, thread_id, mentions, created_at, idempotency_key) VALUES {}",
        rows.join(", ")
    );
    if let Some(append) = append {
        sql.push_str("; ");
        sql.push_str(&append.statements(p));
    }
    sql.push_str("; COMMIT");
    sql
}

/// The jobs' outboxes (of the messages inserted) as one, in the order of the jobs, and
/// how many durable events each job has in it.
fn outboxes(jobs: &[Job], inserted: &[Option<Inserted>]) -> (Outbox, Vec<usize>) {
    let mut events = Vec::new();
    let mut webhooks = Vec::new();
    let mut counts = Vec::with_capacity(jobs.len());
    for (job, inserted) in jobs.iter().zip(inserted) {
        let outbox = inserted
            .as_ref()
            .map(|i| (job.events)(i))
            .unwrap_or_default();
        let before = events.len();
        events.extend(outbox.events.into_iter().filter(|e| !e.ephemeral));
        counts.push(events.len() - before);
        webhooks.extend(outbox.webhooks);
    }
    let outbox = Outbox {
        events,
        webhooks,
        then: None,
    };
    (outbox, counts)
}

/// Each inserted message with its logged events (`counts` per job, in order).
fn with_their_events(
    inserted: Vec<Option<Inserted>>,
    counts: Vec<usize>,
    logged: Vec<Publish>,
) -> Vec<Option<(Inserted, Vec<Publish>)>> {
    let mut logged = logged.into_iter();
    inserted
        .into_iter()
        .zip(counts)
        .map(|(inserted, n)| inserted.map(|i| (i, logged.by_ref().take(n).collect())))
        .collect()
}

async fn insert_one(conn: &mut SqliteConnection, clock: &Clock, job: &Job) -> Outcome {
    let new = &job.new;
    let mut tx = sqlx::Connection::begin(conn).await?;
    Sql::<Sqlite>::require_author_in(&mut tx, new).await?;
    let created_at = Timestamp(clock.now_ms());
    let Some(id) = Sql::<Sqlite>::insert_row(&mut tx, new, created_at).await? else {
        return Ok(None);
    };
    let inserted = Inserted {
        message: created_message(new, id, created_at),
        created: true,
        root: None,
        readers: Vec::new(),
    };
    let logged = Sql::<Sqlite>::log_events(&mut tx, created_at, (job.events)(&inserted)).await?;
    tx.commit().await?;
    Ok(Some((inserted, logged)))
}

/// Inserts every job's row in one statement, and their events, in one transaction; a
/// row whose idempotency key is taken is skipped (`None`). Ids are assigned in the
/// order of the `VALUES` list, which is how the returned rows are matched back to the
/// jobs without a key.
async fn insert_batch(
    conn: &mut SqliteConnection,
    clock: &Clock,
    jobs: &[Job],
) -> Result<Vec<Option<(Inserted, Vec<Publish>)>>> {
    let written = write_batch(conn, clock, jobs).await;
    if written.is_err() {
        // The transaction is left open by a failed statement: nothing of it stays.
        if let Err(err) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
            tracing::debug!(cause = %err, "rollback after a failed batch");
        }
    }
    written
}

/// [`insert_batch`] on the writer connection, in two calls to SQLite's thread: `BEGIN`
/// with the messages' insert, then the events' append with `COMMIT` (the transaction is
/// opened and closed by the statements themselves, which is what lets each ride along
/// with the work; the caller rolls back on error).
async fn write_batch(
    conn: &mut SqliteConnection,
    clock: &Clock,
    jobs: &[Job],
) -> Result<Vec<Option<(Inserted, Vec<Publish>)>>> {
    // Taken with the writer held, so times rise with ids.
    let created_at = Timestamp(clock.now_ms());
    let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
        "BEGIN; INSERT INTO messages (channel_id, author_id, text, thread_id, mentions, created_at, idempotency_key) ",
    );
    let mut mentions = Vec::with_capacity(jobs.len());
    for job in jobs {
        mentions.push(mentions_json(&job.new.mentions)?);
    }
    query.push_values(jobs.iter().zip(&mentions), |mut row, (job, mentions)| {
        let new = &job.new;
        // The channel, `NULL` unless the author is a member of it ([`author_in`]).
        row.push("CASE WHEN EXISTS (SELECT 1 FROM channel_members WHERE channel_id = ")
            .push_bind_unseparated(new.channel_id.0)
            .push_unseparated(" AND user_id = ")
            .push_bind_unseparated(new.author_id.0)
            .push_unseparated(") THEN ")
            .push_bind_unseparated(new.channel_id.0)
            .push_unseparated(" END")
            .push_bind(new.author_id.0)
            .push_bind(new.text.as_str())
            .push_bind(new.thread_id.map(|t| t.0))
            .push_bind(mentions.as_str())
            .push_bind(created_at.0)
            .push_bind(new.idempotency_key.as_deref());
    });
    query.push(" ON CONFLICT DO NOTHING RETURNING id, author_id, idempotency_key");
    let rows: Vec<(i64, i64, Option<String>)> =
        query.build_query_as().fetch_all(&mut *conn).await?;

    let mut unkeyed: Vec<i64> = Vec::new();
    let mut keyed = std::collections::HashMap::new();
    for (id, author, key) in rows {
        match key {
            Some(key) => {
                keyed.insert((author, key), id);
            }
            None => unkeyed.push(id),
        }
    }
    unkeyed.sort_unstable();
    let mut unkeyed = unkeyed.into_iter();
    let mut claimed: HashSet<(i64, &str)> = HashSet::new();
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let new = &job.new;
        let id = match new.idempotency_key.as_deref() {
            None => unkeyed.next(),
            // Two sends with one key in one batch: the first made the row, the second
            // gets it as an earlier send (`None`: looked up by the caller).
            Some(key) if claimed.insert((new.author_id.0, key)) => {
                keyed.get(&(new.author_id.0, key.to_owned())).copied()
            }
            Some(_) => None,
        };
        out.push(id.map(|id| Inserted {
            message: created_message(new, MessageId(id), created_at),
            created: true,
            root: None,
            readers: Vec::new(),
        }));
    }
    // Every new message's events, logged together in the order of the messages.
    let (outbox, counts) = outboxes(jobs, &out);
    let logged =
        Sql::<Sqlite>::log_events_then(&mut *conn, created_at, outbox, Some("COMMIT")).await?;
    Ok(with_their_events(out, counts, logged))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chorus_realtime::Scope;

    use super::*;
    use crate::model::{ChannelId, UserId};

    fn job(text: &str, channel: &Scope) -> Job {
        let scope = channel.clone();
        Job {
            new: NewMessage {
                channel_id: ChannelId(1),
                author_id: UserId(1),
                text: text.to_owned(),
                thread_id: None,
                mentions: Vec::new(),
                idempotency_key: None,
                streaming: false,
                turns: Default::default(),
                kind: Default::default(),
                audience: Vec::new(),
            },
            events: Box::new(move |i: &Inserted| {
                Outbox::from(vec![Publish::new(
                    scope.clone(),
                    "message.created",
                    &i.message.id.0,
                )])
            }),
            reply: oneshot::channel().0,
        }
    }

    /// The one-call batch writes its messages with the ids after the sequence it is
    /// told, and their events at consecutive offsets; told a wrong sequence, it fails
    /// and writes nothing (the caller then falls back to two calls). A batch that
    /// failed for a wrong binding would fall back silently, so this is what guards the
    /// one call's SQL and binding order.
    #[tokio::test]
    async fn a_batch_with_the_right_sequence_is_written_in_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sql::<Sqlite>::open(&dir.path().join("chorus.db"), Clock::system())
            .await
            .unwrap();
        let mut conn = store.writer.acquire().await.unwrap();
        // A message of no channel or user: the foreign keys are not what is tested.
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await
            .unwrap();
        // Distinct numbers, so a parameter bound in another's place shows: the sequence at
        // 5, channel 3, author 7 a member of it (and nobody a member of a channel 7).
        sqlx::query("INSERT INTO messages (id, channel_id, author_id, text, created_at) VALUES (5, 3, 7, 'seed', 0)")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO channel_members (channel_id, user_id, joined_at) VALUES (3, 7, 0)",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        let channel = Scope::parse("channel:3").unwrap();
        let mut jobs: Vec<_> = ["a", "b", "c"].iter().map(|t| job(t, &channel)).collect();
        for job in &mut jobs {
            (job.new.channel_id, job.new.author_id) = (ChannelId(3), UserId(7));
        }
        let clock = Clock::system();
        let mut texts = Texts::default();
        let count = async |conn: &mut SqliteConnection| {
            let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            count
        };

        let wrong = write_known(&mut conn, &clock, &mut texts, 4, &jobs).await;
        assert!(wrong.is_err(), "a wrong sequence fails the batch");
        assert_eq!(count(&mut conn).await, 1, "nothing of it written");
        // A row whose author is no member of its channel fails it too, in either call,
        // the first row (with the sequence's check) or another.
        for departed in [0, 1] {
            jobs[departed].new.author_id = UserId(9);
            let failed = write_known(&mut conn, &clock, &mut texts, 5, &jobs).await;
            assert!(failed.is_err(), "row {departed}'s departed author fails it");
            assert!(insert_batch(&mut conn, &clock, &jobs).await.is_err());
            assert_eq!(count(&mut conn).await, 1, "nothing of it written");
            jobs[departed].new.author_id = UserId(7);
        }

        let written = write_known(&mut conn, &clock, &mut texts, 5, &jobs)
            .await
            .unwrap();
        let got: Vec<_> = written
            .iter()
            .map(|w| {
                let (inserted, events) = w.as_ref().unwrap();
                (
                    inserted.message.id.0,
                    inserted.message.text.clone(),
                    events.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [(6, "a".into(), 1), (7, "b".into(), 1), (8, "c".into(), 1)]
        );
        let offsets: Vec<u64> = written
            .iter()
            .flatten()
            .map(|(_, events)| events[0].offset.unwrap())
            .collect();
        assert_eq!(offsets[1], offsets[0] + 1);
        assert_eq!(offsets[2], offsets[0] + 2);
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "SELECT id, channel_id, author_id, text FROM messages WHERE id > 5 ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                (6, 3, 7, "a".into()),
                (7, 3, 7, "b".into()),
                (8, 3, 7, "c".into())
            ]
        );
        let (logged,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(logged, 3);
    }
}
