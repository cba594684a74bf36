//! The Chorus wire protocol, version 1: the one owner of every frame, error code and
//! close code that crosses a WebSocket. The server and the Rust client both use these
//! types; `docs/protocol.md` documents them and must stay exact.
//!
//! Layout:
//! - [`client`]: frames a client sends, and the decoder that turns bytes into them with
//!   a precise [`ErrorCode`] for every way a frame can be wrong.
//! - [`server`]: frames the server sends (`hello`, `ack`, `error`, `event`, `pong`).
//! - [`codes`]: error codes and WebSocket close codes.

pub mod client;
pub mod codes;
pub mod server;

pub use client::{
    ClientFrame, ClientOp, DecodeError, FrameId, PublishOp, StreamOp, decode_client_frame,
};
pub use codes::{CloseCode, ErrorCode};
pub use server::{AckFrame, ErrorFrame, EventFrame, HelloFrame, ScopeResume, ServerFrame};

/// Protocol version announced in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
