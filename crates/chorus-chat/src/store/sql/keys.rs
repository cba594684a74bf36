//! Server keys: stored by hash with their permissions and publish prefixes.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, RowsAffected, Sql};
use crate::error::Result;
use crate::store::keys::{KEY_COLUMNS, KeyRow, encode};
use crate::store::{KeyStore, NewServerKey, ServerKey, ServerKeyId};

#[async_trait]
impl<DB> KeyStore for Sql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
{
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
        .bind(self.now().0)
        .fetch_one(&self.writer)
        .await?;
        row.into_key()
    }

    async fn server_keys(&self) -> Result<Vec<ServerKey>> {
        let rows: Vec<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM server_keys ORDER BY id"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(KeyRow::into_key).collect()
    }

    async fn server_key_by_hash(&self, hash: &str) -> Result<Option<ServerKey>> {
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM server_keys WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        row.map(KeyRow::into_key).transpose()
    }

    async fn delete_server_key(&self, id: ServerKeyId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM server_keys WHERE id = $1")
            .bind(id.0)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
