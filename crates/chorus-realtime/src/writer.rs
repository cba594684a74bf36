//! Writer tasks: a few tasks (one per core) that write the queued frames of many
//! connections, so a fanout to N subscribers costs N queue pushes and a handful of task
//! wake-ups instead of N wake-ups of N connection tasks.
//!
//! A connection is in at most one writer's queue at a time (see [`crate::outbox`]). A
//! writer takes the connections queued so far, writes each one's frames with a
//! non-blocking attempt, and yields between batches so the tasks that publish (HTTP
//! handlers, the broker's reader) keep running under load. While a connection waits its
//! turn, its frames pile up: the busier the server, the more frames each syscall carries.
//! Under sustained load a writer also paces its passes over the queue ([`MIN_PASS`]), so
//! the piling up does not depend on how fast the writing itself is; writing a firehose
//! (the connections it writes getting more than [`FIREHOSE_RATE`] frames a second), it
//! paces them further apart ([`FIREHOSE_PASS`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::outbox::{Attempt, Outbox};
use crate::{Clock, Metrics};

/// Connections a writer takes from its queue per batch, before yielding. Small: the
/// tasks that publish run between batches (measured: 16 beats 64 and 256, which starve
/// the HTTP handlers and so shrink the batches of frames per write).
const CONNS_PER_BATCH: usize = 16;

/// Under sustained load, the shortest time between the starts of two passes: what a
/// connection waits at most, beyond its turn, for frames to go out together. Measured
/// (docs/benchmarks.md, sessions 6 and 7): against no pause, 5 ms carried ~11 % more
/// events at 1,000 subscribers flat out; 10 ms carries another 4–10 % with p50/p99 at
/// 200 and 500 msg/s no worse than 5 ms's (near saturation, cheaper events queue less).
/// A message after a quiet spell never waits: a pass that ends with nothing queued does
/// not pause, and a pass pauses only once the writer has been busy without a break for
/// `MIN_PASS` (otherwise, at a light load, a message that happens to arrive during a
/// short pass waits: 200 subscribers at 100 msg/s had a p99 of 12.8 ms against the
/// baseline's 3.7).
const MIN_PASS: Duration = Duration::from_millis(10);

/// Frames a second to the connections a writer writes (how fast the frames of its
/// writes piled up since each connection's queue was last emptied: all of a pass's
/// frames over all their time, a moving average over the writer's passes) above which
/// a busy writer's passes last at least [`FIREHOSE_PASS`]. The rate is the writer's,
/// not each connection's: one connection far above it among a few slow ones can put
/// them all on the longer pass. The connections then get enough frames per 10 ms that
/// waiting longer for them buys far fewer syscalls per event at a cost their readers
/// hardly see (a flat-out load: ~1,300 a second to each of 1,000 subscribers here). A
/// fixed load of 200 or 500 messages a second to 1,000 subscribers, or a flat-out one
/// to 5,000 (~400), stays below it and keeps [`MIN_PASS`].
const FIREHOSE_RATE: f64 = 800.0;

/// The weight of the last pass in the writer's moving average of that rate, which
/// starts from 0 whenever the writer finds its queue empty: a fixed load's messages
/// bunched up in one pass rarely make a firehose (one pass would have to measure
/// ~2,700 a second); a flat-out load's ~1,300 reach it on the fourth pass of a busy
/// spell.
const RATE_WEIGHT: f64 = 0.3;

/// The longest a write's frames count as having piled up (µs): a connection written
/// after a quiet hour weighs in the writer's rate as one quiet for 100 ms, so it does
/// not hide the firehose beside it.
const LONGEST_PILE_US: u64 = 100_000;

/// The shortest pass while the writer writes above [`FIREHOSE_RATE`]. Measured
/// (docs/benchmarks.md, round 2, session 19): 30 ms instead of 10 for every sustained
/// pass carried ~10 % more events flat out at 1,000 subscribers (five alternated pairs)
/// with 10–20 % less server CPU per event, but raised the p99 at 1,000 subscribers and
/// 200 or 500 msg/s by ~40 %; hence only above the rate, where those loads stay.
const FIREHOSE_PASS: Duration = Duration::from_millis(30);

/// The writer's framing buffer: a batch of frames of a few hundred bytes each.
const SCRATCH_CAPACITY: usize = 64 * 1024;

/// The writers' queues; connection `id` belongs to writer `id % n`.
pub(crate) struct Writers {
    queues: Vec<UnboundedSender<Arc<Outbox>>>,
}

impl Writers {
    /// Starts `n` writer tasks on the current runtime. Outside a runtime (unit tests of
    /// the registry) there are none, and queues are read directly.
    pub(crate) fn start(n: usize, metrics: &Arc<Metrics>, clock: Clock) -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self { queues: Vec::new() };
        };
        let queues = (0..n.max(1))
            .map(|_| {
                let (tx, rx) = unbounded_channel();
                runtime.spawn(run(rx, metrics.clone(), clock));
                tx
            })
            .collect();
        Self { queues }
    }

    /// The queue of connection `id`'s writer.
    pub(crate) fn queue_for(&self, id: u64) -> Option<UnboundedSender<Arc<Outbox>>> {
        if self.queues.is_empty() {
            return None;
        }
        let i = (id % self.queues.len() as u64) as usize;
        Some(self.queues[i].clone())
    }
}

/// One writer. Ends when every sender of its queue is gone (the registry and all its
/// connections).
async fn run(mut queue: UnboundedReceiver<Arc<Outbox>>, metrics: Arc<Metrics>, clock: Clock) {
    let mut batch = Vec::with_capacity(CONNS_PER_BATCH);
    // Every connection's frames are framed here, then written with one `write`: a
    // connection keeps a buffer of its own only for what its socket did not take.
    let mut scratch = Vec::with_capacity(SCRATCH_CAPACITY);
    // A pass: one turn for each connection queued when it began.
    let mut pass_left = 0usize;
    let mut pass_start = clock.instant();
    // The writer's clock for the connections' last writes (`Outbox::write_now`).
    let epoch = clock.instant();
    // This pass's writes to connections written before: their frames, and how long
    // those piled up (µs); the frames a second to each connection, a moving average
    // over the passes of this busy spell.
    let (mut pass_frames, mut pass_piled_us) = (0u64, 0u64);
    let mut rate = 0.0f64;
    // Connections this pass put back because they had more than a batch queued.
    let mut unfinished = 0usize;
    // When the writer last found its queue empty and waited: the start of this busy spell.
    let mut busy_since = clock.instant();
    loop {
        let idle = queue.is_empty();
        if queue.recv_many(&mut batch, CONNS_PER_BATCH).await == 0 {
            break;
        }
        if idle {
            busy_since = clock.instant();
            rate = 0.0;
        }
        if pass_left == 0 {
            if !idle && pass_piled_us > 0 {
                let last = pass_frames as f64 * 1e6 / pass_piled_us as f64;
                rate += RATE_WEIGHT * (last - rate);
            }
            pass_start = clock.instant();
            pass_left = batch.len() + queue.len();
            unfinished = 0;
            (pass_frames, pass_piled_us) = (0, 0);
        }
        let now_us = u64::try_from(clock.instant().duration_since(epoch).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        for outbox in batch.drain(..) {
            let (attempt, frames, last_us) = outbox.write_now(&mut scratch, &metrics, now_us);
            if frames > 0 && last_us > 0 && now_us > last_us {
                pass_frames += frames;
                // A connection quiet for long counts as quiet, not as hours of it.
                pass_piled_us += (now_us - last_us).min(LONGEST_PILE_US);
            }
            match attempt {
                Attempt::Drained | Attempt::HandedOver => {}
                // More than a batch queued: back of the line, still owned.
                Attempt::More => {
                    outbox.requeue();
                    unfinished += 1;
                }
            }
            pass_left = pass_left.saturating_sub(1);
        }
        let elapsed = clock.instant() - pass_start;
        let busy = pass_start.duration_since(busy_since);
        let pass = if rate >= FIREHOSE_RATE {
            FIREHOSE_PASS
        } else {
            MIN_PASS
        };
        if pass_left == 0 && queue.len() > unfinished && busy >= MIN_PASS && elapsed < pass {
            // Sustained load: new frames made connections queue again during the pass,
            // and the writer has not been idle for a while. The next pass waits, so
            // frames pile up into fewer, larger writes. (A backlog being written out, a
            // replay, say, does not wait; nor does a message that happens to arrive
            // during a short pass at a light load.)
            tokio::time::sleep(pass - elapsed).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}
