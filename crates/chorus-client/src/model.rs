//! The JSON shapes of the HTTP API as a client sees them: responses, request bodies,
//! event payloads and newtype ids. They are `chorus-api`'s, the same types the server
//! serializes, re-exported here so a client needs only this crate.

pub use chorus_api::events::*;
pub use chorus_api::model::*;
pub use chorus_api::requests::*;
