//! Server keys in storage: the row (one shape for both backends) and the trait the
//! store implements (`sql/keys.rs`). The key as listed is `chorus-api`'s; what a key
//! may do is decided in `service::keys`; storage only keeps it.

use async_trait::async_trait;

pub use chorus_api::model::{KeyPermission, ServerKey, ServerKeyId};

use crate::error::{ChatError, Result};
use crate::model::Timestamp;

/// A key to store: its hash, never the key.
pub struct NewServerKey {
    pub name: String,
    pub hash: String,
    pub permissions: Vec<KeyPermission>,
    pub publish_prefixes: Option<Vec<String>>,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn create_server_key(&self, new: NewServerKey) -> Result<ServerKey>;
    /// Every key, oldest first.
    async fn server_keys(&self) -> Result<Vec<ServerKey>>;
    async fn server_key_by_hash(&self, hash: &str) -> Result<Option<ServerKey>>;
    /// `true` when the key existed.
    async fn delete_server_key(&self, id: ServerKeyId) -> Result<bool>;
}

/// The columns both backends read into [`KeyRow`].
pub(crate) const KEY_COLUMNS: &str = "id, name, permissions, publish_prefixes, created_at";

/// A `server_keys` row: the lists as JSON text, the time as Unix milliseconds.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    id: i64,
    name: String,
    permissions: String,
    publish_prefixes: Option<String>,
    created_at: i64,
}

impl KeyRow {
    pub(crate) fn into_key(self) -> Result<ServerKey> {
        let corrupt =
            |e: serde_json::Error| ChatError::Internal(anyhow::anyhow!("corrupt server key: {e}"));
        Ok(ServerKey {
            id: ServerKeyId(self.id),
            name: self.name,
            permissions: serde_json::from_str(&self.permissions).map_err(corrupt)?,
            publish_prefixes: self
                .publish_prefixes
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(corrupt)?,
            created_at: Timestamp(self.created_at),
        })
    }
}

/// The lists of a new key as stored.
pub(crate) fn encode(new: &NewServerKey) -> Result<(String, Option<String>)> {
    let json = |e: serde_json::Error| ChatError::Internal(e.into());
    Ok((
        serde_json::to_string(&new.permissions).map_err(json)?,
        new.publish_prefixes
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(json)?,
    ))
}
