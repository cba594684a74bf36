//! A connection's outbound side: its bounded queue of frames (many producers: fanout,
//! replies) and the write half of its socket, written by whoever owns the writing.
//!
//! Ownership of the writing moves between three places, and exactly one holds it while
//! frames are queued, so a frame is never stranded and no two writers interleave:
//! - the connection's own task, from connect until `hello` is sent ([`Outbox::go_live`]);
//! - a writer task ([`crate::writer`]): a push onto an empty, unowned queue puts the
//!   connection in its writer's queue; the writer writes what is queued with a
//!   non-blocking attempt and gives the ownership back;
//! - the connection's task again when the socket would block (or its write half is busy):
//!   the writer hands over ([`Outbox::handed_over`]) and the task finishes the write
//!   with a real waker, watched by its heartbeat for a stuck peer.
//!
//! This keeps a fanout from waking one task per subscriber per event: a few writer tasks
//! walk the connections that have something queued, and a connection's frames pile up
//! while it waits for its turn, so a busy server writes many frames per syscall.
//!
//! Not a `tokio::sync::mpsc` channel for the frames: that allocates its first block of 32
//! slots and cache-padded heads up front, about 1.7 KiB per connection whether or not
//! anything is ever queued. An idle connection is the common case, so this queue costs a
//! few dozen bytes until used; drained, it keeps up to a write's worth of slots and
//! gives the rest back at its next heartbeat once idle ([`Outbox::trim`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

use crate::Metrics;
use crate::socket::{RawWriter, frame_deflated, frame_text};

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity: the consumer is too slow.
    Full,
    /// The connection is gone.
    Closed,
}

/// What waits in a connection's queue.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A text message (an event, a reply), framed when written.
    Text(Utf8Bytes),
    /// A text message's payload compressed (`permessage-deflate`), shared like the text:
    /// framed with RSV1 set when written.
    Deflated(Bytes),
    /// Whole frames already encoded: the read half's pongs and close reply.
    Frames(Bytes),
}

impl Outgoing {
    fn frame_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Text(text) => frame_text(out, text.as_str()),
            Self::Deflated(payload) => frame_deflated(out, payload),
            Self::Frames(frames) => out.extend_from_slice(frames),
        }
    }

    /// The text of a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text.as_str()),
            Self::Deflated(_) | Self::Frames(_) => None,
        }
    }
}

/// Buffer capacity an idle connection keeps: a larger buffer is given back at the
/// connection's next heartbeat if the queue is empty then ([`Outbox::trim`]).
const KEEP_CAPACITY: usize = 16;

/// Buffer capacity a connection keeps when a write empties its queue (a busy one, at
/// most a write's worth, 512 bytes): a connection getting a steady stream of frames
/// reuses its buffer pass after pass. Given back at every write, it was grown again by
/// doubling as the next pass's frames arrived (`VecDeque::grow`, `realloc` in the
/// profile at 1,000 subscribers flat out; docs/benchmarks.md, "Round 2, session 27").
const BUSY_CAPACITY: usize = WRITE_BATCH;

/// Gives back all but `keep` slots of an empty queue's buffer.
fn shrink_when_empty(frames: &mut VecDeque<Arc<Outgoing>>, keep: usize) {
    if frames.is_empty() && frames.capacity() > keep {
        frames.shrink_to(keep);
    }
}

/// Frames written per flush, at most.
pub(crate) const WRITE_BATCH: usize = 64;

/// What a non-blocking write attempt did.
pub(crate) enum Attempt {
    /// Everything queued was written; the ownership was given back.
    Drained,
    /// A batch was written; more is queued. The caller keeps the ownership.
    More,
    /// The socket would block, its write half was busy, or the write failed: the
    /// connection's task now owns the writing.
    HandedOver,
}

pub struct Outbox {
    /// Held for a push, a pop or a trim only; never across an await. One pointer a
    /// frame: an event's frame is made once and shared by all its recipients, and a
    /// fanout writes a slot of every recipient's queue that its writer then reads on the
    /// other core. 8 bytes a slot instead of an `Outgoing`'s 40 cut the server's CPU per
    /// event by ~10 % at 1,000 subscribers flat out (docs/benchmarks.md, "Round 2,
    /// session 27").
    frames: Mutex<VecDeque<Arc<Outgoing>>>,
    capacity: usize,
    /// Queued frames are dropped and nothing more is written ([`Outbox::close`]).
    closed: AtomicBool,
    /// No frame is queued any more ([`Outbox::seal`], and [`Outbox::close`]); what is
    /// queued is still written.
    refusing: AtomicBool,
    /// A frame did not fit: no later frame is queued either (set and read under the
    /// `frames` lock). A client must never get an event after one it missed — it resumes
    /// from the last offset it has, so a hole before it would be lost for good.
    overflowed: AtomicBool,
    /// The connection negotiated `permessage-deflate`: its events go out compressed.
    deflate: bool,
    /// Whether someone owns the writing (see the module docs). Set from creation until
    /// [`go_live`](Self::go_live): the connection's task sends `hello` first.
    owned: AtomicBool,
    /// The writer queue this connection belongs to; `None` when nothing writes for it
    /// (a queue read directly, as in tests).
    writer: Option<UnboundedSender<Arc<Outbox>>>,
    /// The socket's write half, once the connection's task has put it there. A tokio
    /// mutex: the connection's task holds it across its awaited writes; writers only
    /// ever `try_lock` it.
    sink: tokio::sync::Mutex<Option<RawWriter>>,
    /// Tells the connection's task that it owns the writing now.
    handover: Notify,
    /// When its writer last wrote all it had queued (the writer's microseconds; 0:
    /// never, or the last write left frames queued): how long the frames of the next
    /// write piled up ([`crate::writer`]'s rate).
    last_written: AtomicU64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.len())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("owned", &self.owned.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The socket's write half is gone (the session ended) or was never attached.
fn detached() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "socket write half not attached",
    )
}

impl Outbox {
    pub fn new(capacity: usize, writer: Option<UnboundedSender<Arc<Outbox>>>) -> Self {
        Self {
            frames: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            deflate: false,
            owned: AtomicBool::new(true),
            writer,
            sink: tokio::sync::Mutex::new(None),
            handover: Notify::new(),
            last_written: AtomicU64::new(0),
        }
    }

    /// This connection's frames go out compressed where worth it (`permessage-deflate`).
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    /// Whether the connection negotiated `permessage-deflate`.
    pub fn deflates(&self) -> bool {
        self.deflate
    }

    fn frames(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Outgoing>>> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a text message as framed for this connection (a queue nobody owns is
    /// handed to its writer): compressed if it negotiated `permessage-deflate` and the
    /// message is worth compressing (replies, compressed for this connection alone;
    /// events share theirs, see [`crate::Event::frame_deflated`]).
    pub fn push_reply(self: &Arc<Self>, frame: Utf8Bytes) -> Result<(), PushError> {
        if self.deflate
            && let Some(payload) = crate::deflate::compress(frame.as_str().as_bytes())
        {
            return self.enqueue(Arc::new(Outgoing::Deflated(payload)));
        }
        self.enqueue(Arc::new(Outgoing::Text(frame)))
    }

    /// Queues a message framed already for this connection (see [`Outgoing`]), shared
    /// with its other recipients.
    pub fn push_outgoing(self: &Arc<Self>, item: Arc<Outgoing>) -> Result<(), PushError> {
        self.enqueue(item)
    }

    /// Queues bytes that are already whole frames.
    pub(crate) fn push_raw(self: &Arc<Self>, frames: Bytes) -> Result<(), PushError> {
        self.enqueue(Arc::new(Outgoing::Frames(frames)))
    }

    fn enqueue(self: &Arc<Self>, item: Arc<Outgoing>) -> Result<(), PushError> {
        if self.refusing.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        {
            let mut frames = self.frames();
            // Once full, full for good: the writer draining a frame meanwhile must not
            // let a later one in behind the one refused.
            if frames.len() >= self.capacity || self.overflowed.load(Ordering::Relaxed) {
                self.overflowed.store(true, Ordering::Relaxed);
                return Err(PushError::Full);
            }
            frames.push_back(item);
        }
        // A plain load first: under load the connection is usually owned already, and
        // the swap (a locked instruction on a line the writers also write) is the
        // costliest step of a fanout's push. A stale `true` is safe, by the order the
        // frames mutex gives: an owner whose `release` re-check takes the lock after
        // this push sees the frame and keeps the writing; one whose re-check came
        // before stored `false` before it, and this load comes after this push's lock.
        if !self.owned.load(Ordering::Acquire) && !self.owned.swap(true, Ordering::AcqRel) {
            self.schedule();
        }
        Ok(())
    }

    /// Puts the connection in its writer's queue; the caller owns the writing and
    /// passes it on.
    fn schedule(self: &Arc<Self>) {
        match &self.writer {
            Some(writer) if writer.send(self.clone()).is_ok() => {}
            // No writer (or it is gone): the connection's task writes.
            _ => self.handover.notify_one(),
        }
    }

    /// The owner, with more to write, goes to the back of its writer's queue.
    pub(crate) fn requeue(self: &Arc<Self>) {
        self.schedule();
    }

    /// Gives the ownership back; takes it again (and schedules) when a frame was pushed
    /// meanwhile, so nothing is left queued with nobody to write it.
    fn release(self: &Arc<Self>) {
        self.owned.store(false, Ordering::SeqCst);
        if !self.is_empty() && !self.owned.swap(true, Ordering::AcqRel) {
            self.schedule();
        }
    }

    /// The next frame, if one is queued.
    pub fn try_pop(&self) -> Option<Arc<Outgoing>> {
        let mut frames = self.frames();
        let frame = frames.pop_front();
        shrink_when_empty(&mut frames, BUSY_CAPACITY);
        frame
    }

    /// Gives back what a burst grew the buffer to, when nothing is queued (the
    /// connection's heartbeat, so an idle connection holds [`KEEP_CAPACITY`] within a
    /// period of its last frame).
    pub(crate) fn trim(&self) {
        shrink_when_empty(&mut self.frames(), KEEP_CAPACITY);
    }

    /// Frames up to `max` queued messages into `out`; returns how many, and whether the
    /// queue was emptied.
    fn frame_queued(&self, out: &mut Vec<u8>, max: usize) -> (u64, bool) {
        let mut frames = self.frames();
        let mut n = 0;
        while n < max {
            let Some(item) = frames.pop_front() else {
                break;
            };
            item.frame_into(out);
            n += 1;
        }
        let emptied = frames.is_empty();
        shrink_when_empty(&mut frames, BUSY_CAPACITY);
        (n as u64, emptied)
    }

    /// Refuses further frames ([`PushError::Closed`]) and keeps writing the queued
    /// ones: the last frame a connection gets is the last one queued before this (its
    /// `credentials.revoked`, then the close).
    pub fn seal(&self) {
        self.refusing.store(true, Ordering::Release);
    }

    /// Refuses further frames and drops the queued ones.
    pub fn close(&self) {
        self.refusing.store(true, Ordering::Release);
        self.closed.store(true, Ordering::Release);
        let mut frames = self.frames();
        frames.clear();
        frames.shrink_to_fit();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.frames().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Installs the socket's write half (the connection's task, before `hello`).
    pub(crate) async fn attach(&self, sink: RawWriter) {
        *self.sink.lock().await = Some(sink);
    }

    /// Drops the socket's write half (the session is over): with the read half gone
    /// too, the socket is closed, however long this outbox is still referenced.
    pub(crate) async fn detach(&self) {
        self.sink.lock().await.take();
    }

    /// After `hello`: from now on writers write this connection's frames.
    pub(crate) fn go_live(self: &Arc<Self>) {
        self.release();
    }

    /// Resolves when the connection's task has been handed the writing.
    pub(crate) async fn handed_over(&self) {
        self.handover.notified().await;
    }

    /// Sends one frame now, behind nothing queued (`hello`, pings).
    pub(crate) async fn send_now(&self, frame: Frame) -> std::io::Result<()> {
        self.write_frame(frame, false).await
    }

    /// Closes the queue (dropping what it holds) and then sends the close frame:
    /// nothing queued can be written after it.
    pub(crate) async fn close_with(&self, frame: Frame) -> std::io::Result<()> {
        self.write_frame(frame, true).await
    }

    /// Writes one frame behind what the write half holds, closing the queue first
    /// (with the write half held, so no writer slips a frame in between) if asked.
    async fn write_frame(&self, frame: Frame, close_first: bool) -> std::io::Result<()> {
        let mut sink = self.sink.lock().await;
        if close_first {
            self.close();
        }
        let sink = sink.as_mut().ok_or_else(detached)?;
        sink.push_frame(frame);
        sink.flush().await
    }

    /// The connection's task writes everything queued, waiting for the socket as long
    /// as it takes (its caller bounds the wait), then gives the ownership back.
    /// Cancel-safe: what was framed and not yet written stays with the write half.
    pub(crate) async fn drain(self: &Arc<Self>, metrics: &Metrics) -> std::io::Result<()> {
        let mut guard = self.sink.lock().await;
        let sink = guard.as_mut().ok_or_else(detached)?;
        loop {
            let (frames, emptied) = self.frame_queued(sink.buffer(), WRITE_BATCH);
            if frames > 0 {
                metrics.socket_writes.fetch_add(1, Ordering::Relaxed);
                metrics.socket_frames.fetch_add(frames, Ordering::Relaxed);
            }
            sink.flush().await?;
            if emptied && self.is_empty() {
                break;
            }
        }
        drop(guard);
        self.release();
        Ok(())
    }

    /// A writer's turn at `now_us` (the writer's clock, in microseconds, never 0):
    /// frames what is queued into the writer's `scratch` buffer and writes it without
    /// waiting. Returns what that did, how many frames it wrote and when the writer last
    /// emptied this connection's queue (0: unknown, see `last_written`). Only called by
    /// the owner.
    pub(crate) fn write_now(
        self: &Arc<Self>,
        scratch: &mut Vec<u8>,
        metrics: &Metrics,
        now_us: u64,
    ) -> (Attempt, u64, u64) {
        let Ok(mut guard) = self.sink.try_lock() else {
            // The connection's task is writing (a ping, a drain): it takes over.
            self.handover.notify_one();
            return (Attempt::HandedOver, 0, 0);
        };
        if self.is_closed() {
            return (Attempt::Drained, 0, 0); // nothing will be written any more
        }
        let Some(sink) = guard.as_mut() else {
            self.handover.notify_one();
            return (Attempt::HandedOver, 0, 0);
        };
        scratch.clear();
        let (frames, emptied) = self.frame_queued(scratch, WRITE_BATCH);
        let mut last_written = 0;
        if frames > 0 {
            metrics.socket_writes.fetch_add(1, Ordering::Relaxed);
            metrics.socket_frames.fetch_add(frames, Ordering::Relaxed);
            // A write that leaves frames queued starts no measure: what follows it was
            // queued before it (a backlog), not piled up since.
            let mark = if emptied { now_us } else { 0 };
            last_written = self.last_written.swap(mark, Ordering::Relaxed);
        }
        let attempt = match sink.write_through(scratch) {
            Ok(true) if emptied => {
                drop(guard);
                self.release();
                Attempt::Drained
            }
            Ok(true) => Attempt::More,
            // Would block (what the socket did not take waits in the write half), or
            // failed: the connection's task finishes with a real waker (and its
            // stuck-write watch), or learns the peer is gone.
            Ok(false) | Err(_) => {
                drop(guard);
                metrics.socket_handovers.fetch_add(1, Ordering::Relaxed);
                self.handover.notify_one();
                Attempt::HandedOver
            }
        };
        (attempt, frames, last_written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_ordered_and_closable() {
        let outbox = Arc::new(Outbox::new(2, None));
        outbox
            .push_reply(Utf8Bytes::from_static("a"))
            .expect("room");
        outbox
            .push_reply(Utf8Bytes::from_static("b"))
            .expect("room");
        assert_eq!(
            outbox.push_reply(Utf8Bytes::from_static("c")),
            Err(PushError::Full)
        );
        assert_eq!(
            outbox.try_pop().as_deref().and_then(Outgoing::as_text),
            Some("a")
        );
        assert_eq!(
            outbox.try_pop().as_deref().and_then(Outgoing::as_text),
            Some("b")
        );
        assert!(outbox.is_empty());
        outbox.close();
        assert_eq!(
            outbox.push_reply(Utf8Bytes::from_static("d")),
            Err(PushError::Closed)
        );
    }

    #[test]
    fn a_sealed_outbox_keeps_what_it_holds_and_takes_nothing_more() {
        let outbox = Arc::new(Outbox::new(8, None));
        outbox
            .push_reply(Utf8Bytes::from_static("last"))
            .expect("room");
        outbox.seal();
        assert_eq!(
            outbox.push_reply(Utf8Bytes::from_static("after")),
            Err(PushError::Closed)
        );
        assert!(!outbox.is_closed(), "what it holds is still written");
        assert_eq!(
            outbox.try_pop().as_deref().and_then(Outgoing::as_text),
            Some("last")
        );
        assert!(outbox.is_empty());
    }

    /// A write that empties the queue keeps a busy connection's buffer (a write's
    /// worth), so the next pass's frames reuse it; the heartbeat's trim gives back all
    /// but an idle connection's share once nothing is queued.
    #[test]
    fn a_busy_buffer_is_kept_until_the_queue_is_trimmed() {
        let outbox = Arc::new(Outbox::new(1024, None));
        let mut out = Vec::new();
        for _ in 0..3 * WRITE_BATCH {
            outbox
                .push_reply(Utf8Bytes::from_static("a"))
                .expect("room");
        }
        assert!(outbox.frames().capacity() >= 3 * WRITE_BATCH);
        while !outbox.frame_queued(&mut out, WRITE_BATCH).1 {}
        let busy = outbox.frames().capacity();
        assert!(
            busy > KEEP_CAPACITY && busy <= BUSY_CAPACITY,
            "kept {busy} slots"
        );
        outbox
            .push_reply(Utf8Bytes::from_static("a"))
            .expect("room");
        outbox.trim();
        assert_eq!(
            outbox.frames().capacity(),
            busy,
            "not while a frame is queued"
        );
        assert!(outbox.frame_queued(&mut out, WRITE_BATCH).1);
        outbox.trim();
        assert!(outbox.frames().capacity() <= KEEP_CAPACITY);
    }

    /// A frame refused for want of room leaves a hole; nothing may be queued behind it,
    /// even once the writer has made room.
    #[test]
    fn once_full_nothing_more_is_queued() {
        let outbox = Arc::new(Outbox::new(1, None));
        outbox
            .push_reply(Utf8Bytes::from_static("a"))
            .expect("room");
        assert_eq!(
            outbox.push_reply(Utf8Bytes::from_static("b")),
            Err(PushError::Full)
        );
        assert!(outbox.try_pop().is_some());
        assert_eq!(
            outbox.push_reply(Utf8Bytes::from_static("c")),
            Err(PushError::Full)
        );
        assert!(outbox.is_empty());
    }

    /// A push onto a live, unowned queue hands the connection to its writer once; the
    /// writer's release hands it on again if something was pushed meanwhile.
    #[tokio::test]
    async fn a_live_queue_is_scheduled_once_and_rescheduled_after_release() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox::new(8, Some(tx)));
        outbox
            .push_reply(Utf8Bytes::from_static("before hello"))
            .expect("room");
        assert!(
            rx.try_recv().is_err(),
            "owned by the connection until hello"
        );
        outbox.go_live();
        let scheduled = rx.try_recv().expect("scheduled on going live");
        assert!(Arc::ptr_eq(&scheduled, &outbox));
        outbox
            .push_reply(Utf8Bytes::from_static("x"))
            .expect("room");
        assert!(rx.try_recv().is_err(), "already owned: not scheduled twice");
        // The owner drains one frame and releases with one still queued.
        outbox.try_pop();
        outbox.release();
        assert!(
            rx.try_recv().is_ok(),
            "rescheduled: a frame is still queued"
        );
        while outbox.try_pop().is_some() {}
        outbox.release();
        assert!(rx.try_recv().is_err(), "empty: released for good");
        outbox
            .push_reply(Utf8Bytes::from_static("y"))
            .expect("room");
        assert!(
            rx.try_recv().is_ok(),
            "a push onto the idle queue schedules it"
        );
    }
}
