//! The Chorus chat domain: users, workspaces, channels, messages and the rules that
//! govern them, plus the storage they live in.
//!
//! Layout:
//! - [`model`]: domain types with newtype ids, as they appear in the API.
//! - [`service`]: [`Chat`], the rules. Every operation takes the caller, checks what
//!   the caller may do, writes through the store, and only after the write is durable
//!   publishes the events that describe it to the realtime engine.
//! - [`store`]: one trait per storage area and a backend per database (SQLite,
//!   PostgreSQL).
//! - [`namespaces`]: declared `topic:` namespaces (gateway mode): patterns, access,
//!   payload schemas.
//! - [`token`]: API token minting and hashing.
//! - [`rate`]: rate limiters on the injected clock.

pub mod error;
pub mod model;
pub mod namespaces;
pub mod rate;
pub mod service;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod token;

pub use error::ChatError;
pub use service::{Chat, ChatConfig};
