//! Server keys in storage: the record, its row (one shape for both backends) and the
//! trait each backend implements (`sqlite/keys.rs`, `postgres/keys.rs`). What a key may
//! do is decided in `service::keys`; storage only keeps it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ChatError, Result};
use crate::model::Timestamp;

/// A server key's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ServerKeyId(pub i64);

impl std::fmt::Display for ServerKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a server key may do. Nothing else: every user route refuses a key.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum KeyPermission {
    /// `POST /api/v1/publish` (within the key's prefixes, when it has any).
    #[serde(rename = "publish")]
    Publish,
    /// `GET /api/v1/realtime/stats`.
    #[serde(rename = "stats:read")]
    StatsRead,
}

/// A server key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ServerKey {
    pub id: ServerKeyId,
    pub name: String,
    pub permissions: Vec<KeyPermission>,
    /// Scopes it may publish to start with one of these; `None`: any scope.
    pub publish_prefixes: Option<Vec<String>>,
    pub created_at: Timestamp,
}

impl KeyPermission {
    /// The name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::StatsRead => "stats:read",
        }
    }
}

impl ServerKey {
    pub fn may(&self, permission: KeyPermission) -> bool {
        self.permissions.contains(&permission)
    }
}

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
