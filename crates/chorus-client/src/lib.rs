//! The Rust client for Chorus: a typed HTTP API client and a realtime WebSocket
//! connection. It depends only on the wire protocol (`chorus-proto`: frames and codes)
//! and the API's JSON (`chorus-api`: the types the server serializes), never on server
//! crates, so it sees the server exactly as any other client does.
//!
//! Layout:
//! - [`http`]: [`Client`], one async method per `/api/v1` route.
//! - [`realtime`]: [`Realtime`], a WebSocket owned by a background task; requests are
//!   correlated with their `ack`/`error`, events arrive once and in order, and a lost
//!   connection is re-established and resumed (with an HTTP catch-up when the server's
//!   retention does not reach back far enough).
//! - [`model`]: the JSON shapes of requests, responses and event payloads, with newtype
//!   ids (`chorus-api`'s, re-exported).
//! - [`events`]: [`TypedEvent`], an event with its payload typed (`chorus-api`'s
//!   [`Event`]) when its type is known, raw otherwise.
//! - [`error`]: one [`Error`] for both transports, with the server's [`ErrorCode`].
//! - [`tls`]: extra CAs for `https://` / `wss://` servers with a private certificate
//!   (public ones are trusted through the built-in Mozilla roots).
//!
//! Cargo feature `test-util`: fault injection for tests
//! (`Realtime::drop_connection_for_test`); not part of the stable API.
//!
//! ```no_run
//! # async fn demo() -> chorus_client::Result<()> {
//! use chorus_client::{Client, SendMessage};
//! let client = Client::new("http://127.0.0.1:7800", "chr_…")?;
//! let mut live = client.realtime().await?;
//! let workspaces = client.list_workspaces().await?;
//! # let channel = chorus_client::ChannelId(1);
//! client.send_message(channel, &SendMessage::new("hello"), None).await?;
//! while let Some(event) = live.next_event().await {
//!     println!("{} {}", event.scope, event.kind);
//! }
//! # Ok(()) }
//! ```

pub mod error;
pub mod events;
pub mod http;
pub mod model;
pub mod realtime;
pub mod tls;

pub use chorus_proto::{
    AckFrame, CloseCode, ErrorCode, EventFrame, FrameId, HelloFrame, ScopeResume,
};
pub use error::{Error, Result};
pub use events::{Payload, TypedEvent};
pub use http::{
    Client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, Opened, Sent, StreamWriter, redact_url,
};
pub use model::*;
pub use realtime::{Backoff, ConnectionState, Disconnect, Options, RESUME_GAP, Realtime};
pub use reqwest::StatusCode;
pub use reqwest::header::HeaderMap;
pub use tls::ExtraRoots;
