use async_trait::async_trait;

use super::PgStore;
use crate::error::Result;
use crate::model::Timestamp;
use crate::store::keys::{KEY_COLUMNS, KeyRow, encode};
use crate::store::{KeyStore, NewServerKey, ServerKey, ServerKeyId};

#[async_trait]
impl KeyStore for PgStore {
    async fn create_server_key(&self, new: NewServerKey) -> Result<ServerKey> {
        let (permissions, prefixes) = encode(&new)?;
        let row: KeyRow = sqlx::query_as(&format!(
            "INSERT INTO server_keys (name, hash, permissions, publish_prefixes, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING {KEY_COLUMNS}"
        ))
        .bind(&new.name)
        .bind(&new.hash)
        .bind(permissions)
        .bind(prefixes)
        .bind(Timestamp::now().0)
        .fetch_one(&self.pool)
        .await?;
        row.into_key()
    }

    async fn server_keys(&self) -> Result<Vec<ServerKey>> {
        let rows: Vec<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM server_keys ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(KeyRow::into_key).collect()
    }

    async fn server_key_by_hash(&self, hash: &str) -> Result<Option<ServerKey>> {
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM server_keys WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(KeyRow::into_key).transpose()
    }

    async fn delete_server_key(&self, id: ServerKeyId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM server_keys WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
