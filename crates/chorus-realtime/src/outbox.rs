//! A connection's outbound queue: bounded, many producers (fanout, replies), one
//! consumer (the connection's task).
//!
//! Not a `tokio::sync::mpsc` channel: that allocates its first block of 32 slots and
//! cache-padded heads up front, about 1.7 KiB per connection whether or not anything is
//! ever queued. An idle connection is the common case, so this queue costs a few dozen
//! bytes until used and gives its buffer back once drained after a burst.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity: the consumer is too slow.
    Full,
    /// The connection is gone.
    Closed,
}

/// Buffer capacity kept after draining; larger buffers are released.
const KEEP_CAPACITY: usize = 16;

#[derive(Debug)]
pub struct Outbox {
    /// Held for a push or a pop only; never across an await.
    frames: Mutex<VecDeque<Utf8Bytes>>,
    ready: Notify,
    capacity: usize,
    closed: AtomicBool,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
        }
    }

    fn frames(&self) -> std::sync::MutexGuard<'_, VecDeque<Utf8Bytes>> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, frame: Utf8Bytes) -> Result<(), PushError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        {
            let mut frames = self.frames();
            if frames.len() >= self.capacity {
                return Err(PushError::Full);
            }
            frames.push_back(frame);
        }
        // Stores a permit when the consumer is not waiting, so no wake-up is lost.
        self.ready.notify_one();
        Ok(())
    }

    /// The next frame, if one is queued.
    pub fn try_pop(&self) -> Option<Utf8Bytes> {
        let mut frames = self.frames();
        let frame = frames.pop_front();
        if frames.is_empty() && frames.capacity() > KEEP_CAPACITY {
            frames.shrink_to(KEEP_CAPACITY);
        }
        frame
    }

    /// Waits for the next frame. Cancel-safe: a frame is only taken when returned.
    pub async fn pop(&self) -> Utf8Bytes {
        loop {
            if let Some(frame) = self.try_pop() {
                return frame;
            }
            self.ready.notified().await;
        }
    }

    /// Refuses further frames and drops the queued ones.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut frames = self.frames();
        frames.clear();
        frames.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.frames().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_and_closable() {
        let outbox = Outbox::new(2);
        outbox.push(Utf8Bytes::from_static("a")).expect("room");
        outbox.push(Utf8Bytes::from_static("b")).expect("room");
        assert_eq!(
            outbox.push(Utf8Bytes::from_static("c")),
            Err(PushError::Full)
        );
        assert_eq!(outbox.pop().await.as_str(), "a");
        assert_eq!(
            outbox.try_pop().map(|f| f.as_str().to_owned()).as_deref(),
            Some("b")
        );
        assert!(outbox.is_empty());
        outbox.close();
        assert_eq!(
            outbox.push(Utf8Bytes::from_static("d")),
            Err(PushError::Closed)
        );
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_woken() {
        let outbox = std::sync::Arc::new(Outbox::new(4));
        let consumer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.pop().await }
        });
        tokio::task::yield_now().await;
        outbox.push(Utf8Bytes::from_static("x")).expect("room");
        assert_eq!(consumer.await.expect("joined").as_str(), "x");
    }
}
