//! Streaming messages: an author opens a message in state `streaming`, appends text,
//! and ends it with `complete` or `abort`.
//!
//! Each node keeps, per stream it has taken appends for, a [`Stream`]: the text
//! appended and not yet written. The streams of one channel (or of one thread) share a
//! [`Rollup`] and its flusher task, which writes what piled up at most once per roll-up
//! window (`ChatConfig::stream_rollup`): for each stream that grew, one `UPDATE` that
//! adds the text to the stored text and counts the message's `seq` up by one; then one
//! `message.deltas {channel_id, thread_id?, deltas: [{id, seq, text}]}` for all of
//! them, published ephemeral (never logged or replayed). So the stored text is never
//! more than one window behind what was accepted, a reader gets at most one frame per
//! window however many replies stream into the channel at once (a hundred agents
//! answering together cost each reader 25 frames a second at 40 ms, not 2,500), and
//! `seq` is gap-free per message, assigned by the database. The end
//! (`message.completed` / `message.aborted`) is logged with the change that writes it,
//! like every durable event.
//!
//! Several nodes: an append is taken by whichever node gets it; each node that holds
//! appends for a message flushes them through the same `UPDATE`, so the text and its
//! `seq` stay one sequence (the database's order); deltas from two nodes may then
//! reach a reader out of `seq` order, which it detects as a gap and repairs by
//! fetching the message (whose `seq` says which deltas its text includes). The
//! total-size limit is checked against what this node knows of the text.
//!
//! A stream nobody appended to for `ChatConfig::stream_idle` is aborted (reason
//! `idle`) by a sweep that reads the database, so streams left open by a node that
//! stopped are ended too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_api::events::{MessageAborted, MessageDelta, MessageDeltas};
use chorus_api::requests::Appended;
use chorus_realtime::{Engine, Publish, Scope};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Chat;
use super::messages::message_scopes;
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::*;
use crate::store::{Store, events_only};

/// Longest `abort` reason, in bytes.
const MAX_REASON: usize = 200;
/// Idle streams ended per sweep.
const SWEEP_BATCH: u32 = 100;

/// The reason of a stream ended because its author left its channel.
const AUTHOR_LEFT: &str = "author_left";

/// The streams this node holds appends for.
#[derive(Default)]
pub(crate) struct Streams {
    open: Mutex<HashMap<MessageId, Arc<Stream>>>,
    /// The roll-ups with streams on this node, by channel and thread. Locked after
    /// `open` when both are.
    rollups: Mutex<HashMap<RollupKey, Arc<Rollup>>>,
    /// The flusher tasks; [`Chat::shutdown`] waits for them (each writes what it holds).
    tasks: TaskTracker,
}

impl Streams {
    fn get(&self, id: MessageId) -> Option<Arc<Stream>> {
        self.open.lock().ok()?.get(&id).cloned()
    }

    /// Marks `stream` ended and stops holding it (its roll-up forgets it next).
    fn forget(&self, stream: &Stream) {
        stream.ended();
        if let Ok(mut open) = self.open.lock() {
            open.remove(&stream.id);
        }
    }

    fn rollups(&self) -> std::sync::MutexGuard<'_, HashMap<RollupKey, Arc<Rollup>>> {
        // A panic while holding it cannot leave the map inconsistent.
        self.rollups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a task [`shutdown`](Self::shutdown) waits for (the sweepers).
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    pub(crate) async fn shutdown(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A roll-up's channel and thread (`None`: the channel's top-level messages).
type RollupKey = (ChannelId, Option<MessageId>);

/// The streams of one channel (or thread) on this node: one flusher writes and announces
/// them all, once per window.
#[derive(Default)]
struct Rollup {
    /// Its streams (ended ones leave at the next roll-up); locked after
    /// [`Streams::rollups`] when both are.
    streams: Mutex<Vec<Arc<Stream>>>,
    /// Rung by an append (and by an end), for the flusher.
    wake: Notify,
}

impl Rollup {
    fn streams(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Stream>>> {
        // A panic while holding it cannot leave the list inconsistent.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One stream's state on this node.
pub(crate) struct Stream {
    id: MessageId,
    channel_id: ChannelId,
    thread_id: Option<MessageId>,
    author: UserId,
    scopes: Vec<Scope>,
    buf: Mutex<Buffer>,
    /// Its channel's (or thread's) roll-up on this node.
    rollup: Arc<Rollup>,
    /// Held while a roll-up is written and published, so deltas go out in `seq` order
    /// and the end waits for a write in flight.
    flushing: tokio::sync::Mutex<()>,
}

struct Buffer {
    /// Accepted, not yet written.
    pending: String,
    /// The text's length with everything accepted, in bytes.
    bytes: usize,
    last_append: Instant,
    life: Life,
}

/// Where a stream is in its life on this node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Taking appends.
    Open,
    /// Its end is being written: appends are refused, and it stays held (in
    /// [`Streams::open`] and its roll-up) so that, if the write fails, it opens again
    /// with its text.
    Ending,
    /// Ended (here or elsewhere): its roll-up forgets it.
    Ended,
}

impl Stream {
    fn new(message: &Message, rollup: Arc<Rollup>) -> Self {
        Self {
            id: message.id,
            channel_id: message.channel_id,
            thread_id: message.thread_id,
            author: message.author_id,
            scopes: message_scopes(message),
            buf: Mutex::new(Buffer {
                pending: String::new(),
                bytes: message.text.len(),
                last_append: Instant::now(),
                life: Life::Open,
            }),
            rollup,
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A panic while holding it cannot leave the buffer inconsistent (plain fields).
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts ending the stream: refuses appends from now on and returns what was
    /// accepted and not written; `None` when it is not open. Call holding `flushing`,
    /// and follow with [`ended`](Self::ended) or [`reopen`](Self::reopen).
    fn begin_end(&self) -> Option<String> {
        let mut buf = self.buffer();
        if buf.life != Life::Open {
            return None;
        }
        buf.life = Life::Ending;
        Some(std::mem::take(&mut buf.pending))
    }

    /// Marks the stream ended; its roll-up forgets it at its next turn.
    fn ended(&self) {
        self.buffer().life = Life::Ended;
        self.rollup.wake.notify_one();
    }

    /// Opens the stream again after its end was not written, with the `tail`
    /// [`begin_end`](Self::begin_end) took back in front of what it holds.
    fn reopen(&self, tail: &str) {
        let mut buf = self.buffer();
        buf.life = Life::Open;
        buf.pending.insert_str(0, tail);
        let wake = !buf.pending.is_empty();
        drop(buf);
        if wake {
            self.rollup.wake.notify_one();
        }
    }
}

/// A stream whose end is being written: dropped with its `tail` still in it, it opens
/// the stream again with that tail ([`Stream::reopen`]).
struct Ending<'a> {
    stream: &'a Stream,
    tail: Option<String>,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        if let Some(tail) = self.tail.take() {
            self.stream.reopen(&tail);
        }
    }
}

/// What a roll-up's flusher needs: no `Chat`, so it does not keep the chat alive.
struct Flusher {
    rollup: Arc<Rollup>,
    key: RollupKey,
    streams: Arc<Streams>,
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    clock: chorus_realtime::Clock,
    window: Duration,
    stop: CancellationToken,
}

impl Flusher {
    async fn run(self) {
        let mut last: Option<Instant> = None;
        loop {
            let stopping = tokio::select! {
                () = self.rollup.wake.notified() => false,
                () = self.stop.cancelled() => true,
            };
            // Appends within a window of the last roll-up wait for the next one.
            if !stopping && let Some(last) = last {
                tokio::select! {
                    () = tokio::time::sleep_until(last + self.window) => {}
                    () = self.stop.cancelled() => {}
                }
            }
            last = Some(Instant::now());
            if !self.flush().await || self.stop.is_cancelled() {
                return;
            }
        }
    }

    /// Writes what piled up in each stream (one transaction) and announces it in one
    /// `message.deltas` per scope. `false` once no stream is left (the roll-up is then
    /// gone).
    async fn flush(&self) -> bool {
        let mut streams = self.rollup.streams().clone();
        // In id order: nodes writing the same messages lock their rows in one order.
        streams.sort_unstable_by_key(|stream| stream.id);
        // Each stream with text is held (`flushing`) until its delta is published.
        let mut taken = Vec::with_capacity(streams.len());
        for stream in &streams {
            let flushing = stream.flushing.lock().await;
            let mut buf = stream.buffer();
            if buf.life == Life::Open && !buf.pending.is_empty() {
                let text = std::mem::take(&mut buf.pending);
                drop(buf);
                taken.push((stream, text, flushing));
            }
        }
        if taken.is_empty() {
            return self.retire_closed();
        }
        let written = self.write(&taken).await;
        let mut deltas = Vec::with_capacity(taken.len());
        let mut failed = false;
        for ((stream, text, flushing), seq) in taken.into_iter().zip(written) {
            match seq {
                Ok(Some(seq)) => {
                    let delta = MessageDelta {
                        id: stream.id,
                        seq,
                        text,
                    };
                    deltas.push((stream, delta, flushing));
                }
                Ok(None) => {
                    // Ended (or deleted) elsewhere: what is left here cannot be written.
                    self.streams.forget(stream);
                }
                Err(err) => {
                    tracing::warn!(message = %stream.id, cause = %err, "stream roll-up not written; retrying");
                    stream.buffer().pending.insert_str(0, &text);
                    failed = true;
                }
            }
        }
        self.announce(&deltas).await;
        drop(deltas);
        if failed {
            self.rollup.wake.notify_one();
            // Not at once: the database may be down.
            tokio::select! {
                () = tokio::time::sleep(self.window.max(Duration::from_millis(100))) => {}
                () = self.stop.cancelled() => {}
            }
        }
        self.retire_closed()
    }

    /// Writes the texts taken, in one transaction; when that fails, each in its own, so
    /// a stream whose write fails does not hold back the others. Each stream's new
    /// `seq`, `None` when it is no longer streaming.
    async fn write<G>(&self, taken: &[(&Arc<Stream>, String, G)]) -> Vec<Result<Option<u64>>> {
        let appends: Vec<(MessageId, &str)> = taken
            .iter()
            .map(|(stream, text, _)| (stream.id, text.as_str()))
            .collect();
        let now = Timestamp(self.clock.now_ms());
        match self.store.append_streams(&appends, now).await {
            Ok(seqs) => seqs.into_iter().map(Ok).collect(),
            Err(err) if appends.len() > 1 => {
                tracing::debug!(channel = %self.key.0, cause = %err, "roll-up not written together; one by one");
                let mut seqs = Vec::with_capacity(appends.len());
                for append in &appends {
                    let one = self.store.append_streams(std::slice::from_ref(append), now);
                    seqs.push(one.await.map(|seq| seq.into_iter().next().flatten()));
                }
                seqs
            }
            Err(err) => vec![Err(err)],
        }
    }

    /// Publishes the deltas written, one `message.deltas` per scope: the channel's (or
    /// thread's) for all of them, and a top-level message's own thread for its own.
    async fn announce<G>(&self, written: &[(&Arc<Stream>, MessageDelta, G)]) {
        let mut scopes: Vec<&Scope> = Vec::new();
        for (stream, _, _) in written {
            for scope in &stream.scopes {
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
        for scope in scopes {
            let deltas = MessageDeltas {
                channel_id: self.key.0,
                thread_id: self.key.1,
                deltas: written
                    .iter()
                    .filter(|(stream, _, _)| stream.scopes.contains(scope))
                    .map(|(_, delta, _)| delta.clone())
                    .collect(),
            };
            let publish = Publish::new(scope.clone(), "message.deltas", &deltas).ephemeral();
            if let Err(err) = self.engine.publish(publish).await {
                tracing::warn!(%scope, cause = %err, "message.deltas not published");
            }
        }
    }

    /// Forgets the roll-up's closed streams; `false` when none is left, and the roll-up
    /// is then no longer found by new streams (which start another).
    fn retire_closed(&self) -> bool {
        let mut rollups = self.streams.rollups();
        let mut streams = self.rollup.streams();
        streams.retain(|stream| stream.buffer().life != Life::Ended);
        if !streams.is_empty() {
            return true;
        }
        if rollups
            .get(&self.key)
            .is_some_and(|rollup| Arc::ptr_eq(rollup, &self.rollup))
        {
            rollups.remove(&self.key);
        }
        false
    }
}

impl Chat {
    /// Starts holding appends for a streaming `message` on this node (the one already
    /// held, if another request got there first); `true` when this call started it.
    pub(crate) fn hold_stream(&self, message: &Message, window: Duration) -> (Arc<Stream>, bool) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stream) = open.get(&message.id) {
            return (stream.clone(), false);
        }
        let key = (message.channel_id, message.thread_id);
        let mut rollups = self.streams.rollups();
        let (rollup, started) = match rollups.get(&key) {
            Some(rollup) => (rollup.clone(), false),
            None => {
                let rollup = Arc::new(Rollup::default());
                rollups.insert(key, rollup.clone());
                (rollup, true)
            }
        };
        let stream = Arc::new(Stream::new(message, rollup.clone()));
        rollup.streams().push(stream.clone());
        drop(rollups);
        open.insert(message.id, stream.clone());
        drop(open);
        if !started {
            return (stream, true);
        }
        // The roll-up's window is its first stream's channel's.
        let flusher = Flusher {
            rollup,
            key,
            streams: self.streams.clone(),
            store: self.store.clone(),
            engine: self.engine.clone(),
            clock: self.config.clock,
            window,
            stop: self.background.stop().clone(),
        };
        self.streams.tasks.spawn(flusher.run());
        (stream, true)
    }

    /// [`hold_stream`](Self::hold_stream) for a `message` read as streaming from the
    /// database; `Conflict` when it ended meanwhile. A stream this node ends is held
    /// until its end is committed, so a stream started here afresh after that reads the
    /// end when it reads the row again, and is dropped before it takes an append.
    pub(crate) async fn hold_stored_stream(&self, message: &Message) -> Result<Arc<Stream>> {
        let window = match self.store.channel(message.channel_id).await {
            Ok(Some(channel)) => self.rollup_window(&channel),
            Ok(None) => self.config.stream_rollup,
            Err(err) => {
                tracing::warn!(channel = %message.channel_id, cause = %err, "channel unread; default roll-up");
                self.config.stream_rollup
            }
        };
        let (stream, started) = self.hold_stream(message, window);
        if !started {
            return Ok(stream);
        }
        match self.store.message(message.id).await {
            Ok(Some(now)) if now.state == MessageState::Streaming && !now.deleted => Ok(stream),
            read => {
                self.streams.forget(&stream);
                match read {
                    Ok(Some(now)) => Err(not_streaming(&now)),
                    Ok(None) => Err(not_found("no such message")),
                    Err(err) => Err(err),
                }
            }
        }
    }

    /// A channel's roll-up window: its own setting, else the server's.
    pub(crate) fn rollup_window(&self, channel: &Channel) -> Duration {
        channel
            .stream_rollup_ms
            .map_or(self.config.stream_rollup, Duration::from_millis)
    }

    /// The stream of message `id`: the one held here, else one started from its row
    /// when that is streaming; `None` when it is not (or it ended meanwhile).
    async fn stream_of(&self, id: MessageId) -> Result<Option<Arc<Stream>>> {
        if let Some(stream) = self.streams.get(id) {
            return Ok(Some(stream));
        }
        match self.store.message(id).await? {
            Some(message) if message.state == MessageState::Streaming => {
                match self.hold_stored_stream(&message).await {
                    Ok(stream) => Ok(Some(stream)),
                    Err(ChatError::Conflict(_) | ChatError::NotFound(_)) => Ok(None),
                    Err(err) => Err(err),
                }
            }
            _ => Ok(None),
        }
    }

    /// Aborts a stream for a cancel (reason `cancelled`); `false` when it had ended.
    pub(crate) async fn cancel_stream(&self, id: MessageId) -> Result<bool> {
        let Some(stream) = self.stream_of(id).await? else {
            return Ok(false);
        };
        match self
            .end_stream(&stream, MessageState::Aborted, None, "cancelled".into())
            .await
        {
            Ok(_) => Ok(true),
            Err(ChatError::Conflict(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The stream of message `id`, held on this node, for an author's append or
    /// complete: `NotFound` (no such message, or one the caller cannot read),
    /// `Forbidden` (another's, or the author is no longer a member of its channel),
    /// `Conflict` (not streaming).
    async fn authored_stream(&self, caller: &User, id: MessageId) -> Result<Arc<Stream>> {
        let stream = match self.streams.get(id) {
            // The author's own, held here: no read.
            Some(stream) if stream.author == caller.id => stream,
            // Anyone else is answered from the row, whether this node holds the stream
            // or not: `NotFound` to one who cannot read it, so a stream held here does
            // not tell an outsider that the message exists and is streaming.
            _ => {
                // Whose it is before what state it is in: another's ended stream is
                // `403` (it was never the caller's to write), not `409`.
                let (message, _) = self.readable_message(caller, id).await?;
                if message.author_id != caller.id {
                    return Err(forbidden(
                        "only its author can write to a streaming message",
                    ));
                }
                self.hold_stored_stream(streaming(&message)?).await?
            }
        };
        self.still_posting(&stream).await?;
        Ok(stream)
    }

    /// Writing to a stream is posting in its channel, for as long as it is open: an
    /// author who left the channel, or was removed from it or from its workspace, or
    /// was deactivated, can no longer, and the stream ends there (`message.aborted {reason: "author_left"}`)
    /// with the text it had. Asked on every append: the membership is read through the
    /// send path's cache (a change made through this node is seen at once, one made
    /// through another within its TTL).
    async fn still_posting(&self, stream: &Stream) -> Result<()> {
        let (_, member) = self.channel_for(stream.channel_id, stream.author).await?;
        if member {
            return Ok(());
        }
        Err(self.author_left(stream).await)
    }

    /// Ends `stream` because its author is no longer in its channel, and says so.
    async fn author_left(&self, stream: &Stream) -> ChatError {
        // Already ending or ended (an abort racing this one): the refusal stands.
        let _ = self
            .end_stream(stream, MessageState::Aborted, None, AUTHOR_LEFT.into())
            .await;
        forbidden(
            "the author is no longer a member of the channel: the streaming message was aborted",
        )
    }

    /// Ends the streams `user` has open in `channels`, which they just left or were
    /// removed from (`message.aborted {reason: "author_left"}`): every one the database
    /// has as streaming, whether this node holds it, another does, or none (after a
    /// restart). Another node holding one forgets it when it next writes it.
    pub(crate) async fn end_streams_of(&self, user: UserId, channels: &[ChannelId]) {
        for &channel in channels {
            let ids = match self.store.streams_after(user, channel, MessageId(0)).await {
                Ok(ids) => ids,
                Err(err) => {
                    tracing::warn!(%user, channel = channel.0, cause = %err, "a departed author's streams were not looked up");
                    continue;
                }
            };
            for id in ids {
                let ended = match self.stream_of(id).await {
                    Ok(Some(stream)) => self
                        .end_stream(&stream, MessageState::Aborted, None, AUTHOR_LEFT.into())
                        .await
                        .map(drop),
                    Ok(None) => Ok(()),
                    Err(err) => Err(err),
                };
                if let Err(err) = ended
                    && !matches!(err, ChatError::Conflict(_))
                {
                    tracing::warn!(message = id.0, cause = %err, "a departed author's stream was not ended");
                }
            }
        }
    }

    /// The message, if the caller may read it (in whatever state), with its channel
    /// when that was read to tell (the caller is not its author).
    async fn readable_message(
        &self,
        caller: &User,
        id: MessageId,
    ) -> Result<(Message, Option<Channel>)> {
        let message = self
            .store
            .message(id)
            .await?
            .ok_or_else(|| not_found("no such message"))?;
        let channel = if message.author_id != caller.id {
            Some(self.readable_channel(caller, message.channel_id).await?)
        } else {
            None
        };
        if message.deleted {
            return Err(not_found("message was deleted"));
        }
        Ok((message, channel))
    }

    /// Adds `text` to the end of the caller's streaming message. Readers get it with
    /// the next roll-up (`message.deltas`).
    pub async fn append_to_message(
        &self,
        caller: &User,
        id: MessageId,
        text: &str,
    ) -> Result<Appended> {
        if text.is_empty() {
            return Err(bad("text must not be empty"));
        }
        let stream = self.authored_stream(caller, id).await?;
        self.append_to(&stream, text)
    }

    /// [`append_to_message`](Self::append_to_message) by user id: a stream this node
    /// holds needs no read of the user (the WebSocket op's path).
    pub async fn append_by(&self, user: UserId, id: MessageId, text: &str) -> Result<Appended> {
        match self.streams.get(id) {
            Some(stream) if stream.author == user && !text.is_empty() => {
                self.still_posting(&stream).await?;
                self.append_to(&stream, text)
            }
            _ => {
                let caller = self
                    .store
                    .user(user)
                    .await?
                    .ok_or_else(|| forbidden("unknown user"))?;
                self.append_to_message(&caller, id, text).await
            }
        }
    }

    fn append_to(&self, stream: &Stream, text: &str) -> Result<Appended> {
        check_no_nul("text", text)?;
        let id = stream.id;
        let mut buf = stream.buffer();
        match buf.life {
            Life::Open => {}
            Life::Ending => {
                return Err(ChatError::Conflict(
                    "the message is being ended (should that fail, it takes appends again)".into(),
                ));
            }
            Life::Ended => {
                return Err(ChatError::Conflict(
                    "the message is no longer streaming".into(),
                ));
            }
        }
        let bytes = buf.bytes + text.len();
        if bytes > self.config.max_message_bytes {
            return Err(ChatError::PayloadTooLarge(format!(
                "the message would be {bytes} bytes; the limit is {}",
                self.config.max_message_bytes
            )));
        }
        buf.bytes = bytes;
        buf.pending.push_str(text);
        buf.last_append = Instant::now();
        drop(buf);
        stream.rollup.wake.notify_one();
        Ok(Appended {
            message_id: id,
            bytes: bytes as u64,
        })
    }

    /// Whether `caller`, who reads `channel`, may abort another's stream there: they
    /// manage its workspace.
    async fn may_abort_anothers(&self, caller: &User, channel: &Channel) -> Result<()> {
        if self.role_in(caller, channel.workspace_id).await?.manages() {
            Ok(())
        } else {
            Err(forbidden(
                "only its author or an admin can abort a streaming message",
            ))
        }
    }

    /// Ends the caller's stream as `complete`; with `text`, that becomes its whole text.
    pub async fn complete_message(
        &self,
        caller: &User,
        id: MessageId,
        text: Option<String>,
    ) -> Result<Message> {
        let stream = self.authored_stream(caller, id).await?;
        match &text {
            Some(text) => self.check_text(text)?,
            None if stream.buffer().bytes == 0 => {
                return Err(bad("nothing was appended: complete with a text, or abort"));
            }
            None => {}
        }
        match self
            .end_stream(&stream, MessageState::Complete, text, String::new())
            .await
        {
            // The store asks again, under the channel's lock: the author left (or was
            // removed) since the read above, through another node perhaps.
            Err(ChatError::Forbidden(_)) => Err(self.author_left(&stream).await),
            ended => ended,
        }
    }

    /// Ends a stream without completing it (its author, or a workspace admin); the text
    /// appended so far stays.
    pub async fn abort_message(
        &self,
        caller: &User,
        id: MessageId,
        reason: String,
    ) -> Result<Message> {
        if reason.len() > MAX_REASON {
            return Err(bad(format!("reason is over {MAX_REASON} bytes")));
        }
        let stream = match self.streams.get(id) {
            Some(stream) if stream.author != caller.id => {
                let channel = self.readable_channel(caller, stream.channel_id).await?;
                self.may_abort_anothers(caller, &channel).await?;
                stream
            }
            Some(stream) => stream,
            None => {
                // Whether the caller may end it (another's: read, its channel with it)
                // before whether it is streaming.
                let (message, channel) = self.readable_message(caller, id).await?;
                if let Some(channel) = &channel {
                    self.may_abort_anothers(caller, channel).await?;
                }
                self.hold_stored_stream(streaming(&message)?).await?
            }
        };
        if stream.author == caller.id {
            // A departed author's stream ends as `author_left`, not with their reason.
            self.still_posting(&stream).await?;
        }
        let reason = if reason.is_empty() {
            "aborted".to_owned()
        } else {
            reason
        };
        self.end_stream(&stream, MessageState::Aborted, None, reason)
            .await
    }

    /// Writes the stream's end (with what was accepted and not yet written) and
    /// publishes `message.completed` or `message.aborted {message, reason}`. While the
    /// end is written the stream refuses appends and stays held here, so an append
    /// cannot slip past it into a stream started afresh from the database; when the
    /// write fails, the stream opens again with all its text.
    pub(crate) async fn end_stream(
        &self,
        stream: &Stream,
        to: MessageState,
        text: Option<String>,
        reason: String,
    ) -> Result<Message> {
        let flushing = stream.flushing.lock().await;
        let Some(tail) = stream.begin_end() else {
            return Err(ChatError::Conflict(
                "the message is no longer streaming".into(),
            ));
        };
        // Until the end is written, anything that stops it (a refusal, the request
        // dropped while it waits) opens the stream again with its tail.
        let mut ending = Ending {
            stream,
            tail: Some(tail),
        };
        let order = self
            .gates
            .threads
            .lock(stream.thread_id.unwrap_or(stream.id).0)
            .await;
        let events = events_only(move |message: &Message| {
            let aborted = MessageAborted {
                message: message.clone(),
                reason: reason.clone(),
            };
            message_scopes(message)
                .into_iter()
                .map(|scope| match to {
                    MessageState::Aborted => Publish::new(scope, "message.aborted", &aborted),
                    _ => Publish::new(scope, "message.completed", message),
                })
                .collect()
        });
        let tail = ending.tail.as_deref().unwrap_or_default();
        let ended = self
            .store
            .end_stream_logged(stream.id, to, text.as_deref(), tail, events)
            .await;
        match &ended {
            // The author left since the service's check: the caller ends it otherwise.
            Err(ChatError::Forbidden(_)) => drop(ending),
            Err(err) => {
                tracing::warn!(message = %stream.id, cause = %err, "stream end not written; open again");
                drop(ending);
            }
            Ok(_) => {
                ending.tail = None;
                self.streams.forget(stream);
            }
        }
        drop(flushing);
        let Some((message, logged)) = ended? else {
            return Err(ChatError::Conflict(
                "the message is no longer streaming".into(),
            ));
        };
        self.emit_logged(logged).await;
        drop(order);
        Ok(message)
    }

    /// Aborts (reason `idle`) the streams nobody wrote to for `stream_idle`, on any
    /// node. Returns how many.
    pub async fn abort_idle_streams(&self) -> Result<usize> {
        let idle = self.config.stream_idle;
        let before = Timestamp(self.now().0 - idle.as_millis() as i64);
        let mut ended = 0;
        for id in self.store.idle_streams(before, SWEEP_BATCH).await? {
            // Appended to here since its last write: not idle.
            let held = self.streams.get(id);
            if held.is_some_and(|stream| stream.buffer().last_append.elapsed() < idle) {
                continue;
            }
            let Some(stream) = self.stream_of(id).await? else {
                continue;
            };
            match self
                .end_stream(&stream, MessageState::Aborted, None, "idle".into())
                .await
            {
                Ok(_) => ended += 1,
                Err(ChatError::Conflict(_)) => {}
                // One stream the database refuses to end stays open (nothing lost);
                // the others are still swept.
                Err(err) => {
                    tracing::warn!(message = %id, cause = %err, "idle stream not ended");
                }
            }
        }
        Ok(ended)
    }

    /// Ends idle streams every quarter of `stream_idle` (at least every 100 ms), until
    /// the chat shuts down or is dropped.
    pub fn spawn_stream_sweeper(self: &Arc<Self>) {
        let chat = Arc::downgrade(self);
        let every = (self.config.stream_idle / 4).max(Duration::from_millis(100));
        let stop = self.background.stop().clone();
        // Not a background task: those are what tests wait to settle.
        self.streams.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                let Some(chat) = chat.upgrade() else { return };
                match chat.abort_idle_streams().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(streams = n, "idle streams aborted"),
                    Err(err) => tracing::warn!(cause = %err, "idle streams not swept"),
                }
            }
        });
    }
}

/// `message`, if it is streaming.
fn streaming(message: &Message) -> Result<&Message> {
    if message.state == MessageState::Streaming {
        Ok(message)
    } else {
        Err(not_streaming(message))
    }
}

fn not_streaming(message: &Message) -> ChatError {
    ChatError::Conflict(format!(
        "the message is {}; only a streaming message can be written to or ended",
        message.state
    ))
}
