//! A WebSocket connection's two halves, split at the TCP stream rather than above the
//! WebSocket library.
//!
//! Reading stays with `tokio-tungstenite` (parsing, limits, control frames). Writing is
//! ours: the connection's queued frames are framed with tungstenite's header encoder into
//! one buffer and written with one non-blocking `write` per batch. The write path of a
//! fanout is the server's hottest loop, and going through the library's `Sink` (a lock
//! shared with the read half, waker registrations and a copy into the library's own
//! buffer per frame) cost more than the framing itself — see docs/benchmarks.md,
//! "Session 6".
//!
//! The read half still needs to write now and then: tungstenite answers a client's ping
//! with a pong and a client's close with a close. [`ReadIo`] hands those bytes to the
//! connection's outbox as ready-made frames, so every byte of the socket goes through
//! one writer and frames never interleave.
//!
//! Unit tests run a session over an in-memory pipe instead of TCP ([`Socket::in_memory`]):
//! the transport is an enum whose second variant exists only in tests, so the server
//! writes to its TCP stream exactly as before (no dynamic dispatch, no allocation).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::deflate::Inflate;
use crate::outbox::Outbox;

/// An upgraded connection: its TCP stream and whatever the HTTP server had already
/// read past the upgrade request (a client may send its first frame right behind it).
pub struct Socket {
    stream: Transport,
    read_ahead: Bytes,
    config: WebSocketConfig,
    /// The connection negotiated `permessage-deflate` (see [`crate::deflate`]).
    deflate: bool,
}

/// The byte stream under the WebSocket.
enum Transport {
    Tcp(TcpStream),
    /// An in-memory pipe whose other end a test holds.
    #[cfg(test)]
    Memory(tokio::io::DuplexStream),
}

impl Socket {
    /// `config` applies to reading; writing has no buffer limit of its own (the
    /// outbox's queue bounds what waits).
    pub fn new(stream: TcpStream, read_ahead: Bytes, config: WebSocketConfig) -> Self {
        Self {
            stream: Transport::Tcp(stream),
            read_ahead,
            config,
            deflate: false,
        }
    }

    /// The connection negotiated `permessage-deflate`: the client's compressed messages
    /// are inflated before they are read, and events go out compressed.
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    pub fn deflates(&self) -> bool {
        self.deflate
    }

    /// A connection over an in-memory pipe (`tokio::io::duplex`); the test speaks
    /// WebSocket on the other end. Its capacity plays the socket's send buffer.
    #[cfg(test)]
    pub(crate) fn in_memory(stream: tokio::io::DuplexStream, config: WebSocketConfig) -> Self {
        Self {
            stream: Transport::Memory(stream),
            read_ahead: Bytes::new(),
            config,
            deflate: false,
        }
    }

    /// Splits the socket: the reading WebSocket and the raw writer for `outbox`.
    pub(crate) async fn split(self, outbox: &Arc<Outbox>) -> (Reader, RawWriter) {
        let (read, write) = match self.stream {
            Transport::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
            }
            #[cfg(test)]
            Transport::Memory(stream) => {
                let (read, write) = tokio::io::split(stream);
                (ReadHalf::Memory(read), WriteHalf::Memory(write))
            }
        };
        let mut read_ahead = self.read_ahead.to_vec();
        let inflate = if self.deflate {
            // Whatever the client sent behind the upgrade request goes through the
            // inflater too.
            let max = self.config.max_message_size.unwrap_or(usize::MAX);
            let mut inflate = Inflate::new(max);
            match inflate.feed(&std::mem::take(&mut read_ahead)) {
                Ok(()) => Some(Box::new(inflate)),
                Err(err) => Some(Box::new(Inflate::failed(err))),
            }
        } else {
            None
        };
        let io = ReadIo {
            read,
            outbox: outbox.clone(),
            inflate,
        };
        let reader =
            WebSocketStream::from_partially_read(io, read_ahead, Role::Server, Some(self.config))
                .await;
        (reader, RawWriter::new(write))
    }
}

pub(crate) type Reader = WebSocketStream<ReadIo>;

/// The read half as tungstenite sees it: reads from the socket; what tungstenite writes
/// (pongs, its close reply) is queued on the outbox like any other frame.
pub(crate) struct ReadIo {
    read: ReadHalf,
    outbox: Arc<Outbox>,
    /// With `permessage-deflate`: the filter that inflates the client's compressed
    /// messages before tungstenite parses them. `None` otherwise, and then the socket's
    /// bytes reach tungstenite as they are.
    inflate: Option<Box<Inflate>>,
}

enum ReadHalf {
    Tcp(OwnedReadHalf),
    #[cfg(test)]
    Memory(tokio::io::ReadHalf<tokio::io::DuplexStream>),
}

impl AsyncRead for ReadIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(inflate) = this.inflate.as_deref_mut() else {
            return this.read.poll_read(cx, buf);
        };
        loop {
            if inflate.has_ready() {
                let n = inflate.take(buf.initialize_unfilled());
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            inflate.check().map_err(io::Error::from)?;
            // Read from the socket into a buffer of the filter's, whose bytes come out
            // (inflated where compressed) as soon as they make whole frames.
            let mut chunk = [0u8; 2048];
            let mut raw = ReadBuf::new(&mut chunk);
            std::task::ready!(this.read.poll_read(cx, &mut raw))?;
            if raw.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            inflate.feed(raw.filled()).map_err(io::Error::from)?;
        }
    }
}

impl ReadHalf {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            #[cfg(test)]
            Self::Memory(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ReadIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // tungstenite writes whole frames from its buffer, and this takes all of it.
        Poll::Ready(match self.outbox.push_raw(Bytes::copy_from_slice(buf)) {
            Ok(()) => Ok(buf.len()),
            Err(_) => Err(io::ErrorKind::BrokenPipe.into()),
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Frames one text message (unmasked, final: a server's frame) into `out`.
pub(crate) fn frame_text(out: &mut Vec<u8>, text: &str) {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(text.len() as u64, out);
    out.extend_from_slice(text.as_bytes());
}

/// Frames one compressed text message (`permessage-deflate`: RSV1 set, unmasked, final).
pub(crate) fn frame_deflated(out: &mut Vec<u8>, payload: &[u8]) {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        rsv1: true,
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// The write half: bytes framed but not yet accepted by the socket, and the socket.
pub(crate) struct RawWriter {
    socket: WriteHalf,
    pending: Vec<u8>,
    /// How much of `pending` the socket has taken.
    written: usize,
}

impl RawWriter {
    fn new(socket: WriteHalf) -> Self {
        Self {
            socket,
            pending: Vec::new(),
            written: 0,
        }
    }

    /// The bytes waiting to be written, for framing more behind them.
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Frames a control or data frame (ping, close, `hello`) behind what is pending.
    pub(crate) fn push_frame(&mut self, frame: Frame) {
        // Writing into a Vec cannot fail.
        let _ = frame.format(&mut self.pending);
    }

    /// Writes `frames` (whole frames, framed by the caller) behind what is pending,
    /// without waiting: `Ok(true)` when everything went out; `Ok(false)` when the socket
    /// would block, and what it did not take is kept here for [`flush`](Self::flush).
    pub(crate) fn write_through(&mut self, frames: &[u8]) -> io::Result<bool> {
        if !self.try_flush()? {
            self.pending.extend_from_slice(frames);
            return Ok(false);
        }
        let done = write_some(&mut self.socket, frames)?;
        if done < frames.len() {
            self.pending.extend_from_slice(&frames[done..]);
            return Ok(false);
        }
        Ok(true)
    }

    /// Writes what is pending without waiting: `Ok(true)` when all of it was written,
    /// `Ok(false)` when the socket would block.
    pub(crate) fn try_flush(&mut self) -> io::Result<bool> {
        self.written += write_some(&mut self.socket, &self.pending[self.written..])?;
        if self.written < self.pending.len() {
            return Ok(false);
        }
        // Nothing is kept between writes: an idle connection holds no buffer. (The
        // writer tasks frame into a buffer of their own; this one holds only what a
        // socket did not take, and the rare frames its connection writes itself.)
        self.pending = Vec::new();
        self.written = 0;
        Ok(true)
    }

    /// Writes what is pending, waiting for the socket as long as it takes. Cancel-safe:
    /// progress is kept in `self`, so a caller may give up and come back.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        while !self.try_flush()? {
            let rest = &self.pending[self.written..];
            self.written += self.socket.write_when_ready(rest).await?;
        }
        Ok(())
    }
}

/// The socket's write half.
enum WriteHalf {
    Tcp(OwnedWriteHalf),
    #[cfg(test)]
    Memory(tokio::io::WriteHalf<tokio::io::DuplexStream>),
}

impl WriteHalf {
    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(socket) => socket.try_write(bytes),
            #[cfg(test)]
            Self::Memory(pipe) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match Pin::new(pipe).poll_write(&mut cx, bytes) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Waits until the socket takes bytes again; returns how much of `bytes` it wrote
    /// meanwhile. A TCP socket says when it is writable and writes nothing here; a
    /// pipe cannot say so without writing, so it writes what it takes then.
    #[cfg_attr(not(test), allow(unused_variables))]
    async fn write_when_ready(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(socket) => socket.as_ref().writable().await.map(|()| 0),
            #[cfg(test)]
            Self::Memory(pipe) => {
                std::future::poll_fn(|cx| Pin::new(&mut *pipe).poll_write(cx, bytes)).await
            }
        }
    }
}

/// Writes as much of `bytes` as the socket takes without waiting; returns how much.
fn write_some(socket: &mut WriteHalf, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match socket.try_write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(done)
}
