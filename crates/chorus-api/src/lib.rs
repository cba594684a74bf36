//! The Chorus HTTP API's JSON: the one owner of every resource, request body, query
//! string and event payload that crosses the HTTP API or rides in an event frame. The
//! server (`chorus-server`, over the domain in `chorus-chat`) and the Rust client
//! (`chorus-client`) both use these types; the TypeScript types in
//! `clients/ts/src/generated/api.ts` are generated from the server's OpenAPI document,
//! which is built from them (`scripts/gen-ts-api`).
//!
//! Layout:
//! - [`model`]: resources with newtype ids, as responses and events show them.
//! - [`requests`]: request bodies and query strings.
//! - [`events`]: event payloads and [`Event`], the catalogue of event types.
//! - [`proxy`]: what the server POSTs to the application's proxies (gateway mode) and
//!   the answers it reads.
//!
//! Features: `openapi` derives `utoipa` schemas (the server turns it on); `sqlx` makes
//! the ids storable (the storage backends turn it on). Neither changes the JSON.

pub mod events;
pub mod model;
pub mod proxy;
pub mod requests;

pub use events::*;
pub use model::*;
pub use requests::*;
