//! Writer tasks: a few tasks (one per core) that write the queued frames of many
//! connections, so a fanout to N subscribers costs N queue pushes and a handful of task
//! wake-ups instead of N wake-ups of N connection tasks.
//!
//! A connection is in at most one writer's queue at a time (see [`crate::outbox`]). A
//! writer takes the connections queued so far, writes each one's frames with a
//! non-blocking attempt, and yields between batches so the tasks that publish (HTTP
//! handlers, the broker's reader) keep running under load. While a connection waits its
//! turn, its frames pile up: the busier the server, the more frames each syscall carries.

use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::Metrics;
use crate::outbox::{Attempt, Outbox};

/// Connections a writer takes from its queue per batch, before yielding. Small: the
/// tasks that publish run between batches (measured: 16 beats 64 and 256, which starve
/// the HTTP handlers and so shrink the batches of frames per write).
const CONNS_PER_BATCH: usize = 16;

/// The writer's framing buffer: a batch of frames of a few hundred bytes each.
const SCRATCH_CAPACITY: usize = 64 * 1024;

/// The writers' queues; connection `id` belongs to writer `id % n`.
pub(crate) struct Writers {
    queues: Vec<UnboundedSender<Arc<Outbox>>>,
}

impl Writers {
    /// Starts `n` writer tasks on the current runtime. Outside a runtime (unit tests of
    /// the registry) there are none, and queues are read directly.
    pub(crate) fn start(n: usize, metrics: &Arc<Metrics>) -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self { queues: Vec::new() };
        };
        let queues = (0..n.max(1))
            .map(|_| {
                let (tx, rx) = unbounded_channel();
                runtime.spawn(run(rx, metrics.clone()));
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
async fn run(mut queue: UnboundedReceiver<Arc<Outbox>>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(CONNS_PER_BATCH);
    // Every connection's frames are framed here, then written with one `write`: a
    // connection keeps a buffer of its own only for what its socket did not take.
    let mut scratch = Vec::with_capacity(SCRATCH_CAPACITY);
    while queue.recv_many(&mut batch, CONNS_PER_BATCH).await > 0 {
        for outbox in batch.drain(..) {
            match outbox.write_now(&mut scratch, &metrics) {
                Attempt::Drained | Attempt::HandedOver => {}
                // More than a batch queued: back of the line, still owned.
                Attempt::More => outbox.requeue(),
            }
        }
        tokio::task::yield_now().await;
    }
}
