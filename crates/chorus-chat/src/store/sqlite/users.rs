use async_trait::async_trait;

use super::{SqliteStore, conflict_or};
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::rows::{UserRow, presence_row};
use crate::store::{NewUser, UserStore};

/// The stored part of a user's presence, as read by [`presence_row`].
pub(super) const PRESENCE_COLUMNS: &str = "users.id, users.last_seen, users.status_text";

pub(super) const USER_COLUMNS: &str = "users.id, users.name, users.display_name, users.kind, users.webhook_url, users.status_text, users.is_admin, users.created_at";
/// What others may see of a user (`rows::ProfileRow`): no webhook, no admin flag.
pub(super) const PROFILE_COLUMNS: &str =
    "users.id, users.name, users.display_name, users.kind, users.status_text, users.created_at";

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, new: NewUser) -> Result<User> {
        let row: UserRow = sqlx::query_as(&format!(
            "INSERT INTO users (name, display_name, kind, webhook_url, is_admin, created_at)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}"
        ))
        .bind(&new.name)
        .bind(&new.display_name)
        .bind(new.kind.as_str())
        .bind(&new.webhook_url)
        .bind(new.is_admin)
        .bind(Timestamp::now().0)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| conflict_or(e, "a user with this name"))?;
        row.into_user()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"))
                .bind(id.0)
                .fetch_optional(&self.reader)
                .await?;
        row.map(UserRow::into_user).transpose()
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?"))
                .bind(name)
                .fetch_optional(&self.reader)
                .await?;
        row.map(UserRow::into_user).transpose()
    }

    async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.reader)
            .await?)
    }

    async fn add_token(&self, user: UserId, hash: &str, label: &str) -> Result<()> {
        sqlx::query("INSERT INTO tokens (hash, user_id, label, created_at) VALUES (?, ?, ?, ?)")
            .bind(hash)
            .bind(user.0)
            .bind(label)
            .bind(Timestamp::now().0)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn user_by_token_hash(&self, hash: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM tokens JOIN users ON users.id = tokens.user_id WHERE tokens.hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        row.map(UserRow::into_user).transpose()
    }

    async fn presence(&self, user: UserId) -> Result<Option<Presence>> {
        let row: Option<(i64, Option<i64>, String)> = sqlx::query_as(&format!(
            "SELECT {PRESENCE_COLUMNS} FROM users WHERE id = ?"
        ))
        .bind(user.0)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(presence_row))
    }

    async fn set_status_text(&self, user: UserId, text: &str) -> Result<Presence> {
        let row: Option<(i64, Option<i64>, String)> = sqlx::query_as(&format!(
            "UPDATE users SET status_text = ? WHERE id = ? RETURNING {PRESENCE_COLUMNS}"
        ))
        .bind(text)
        .bind(user.0)
        .fetch_optional(&self.writer)
        .await?;
        row.map(presence_row)
            .ok_or_else(|| ChatError::NotFound("no such user".into()))
    }

    async fn set_last_seen(&self, user: UserId, at: Timestamp) -> Result<Presence> {
        let row: Option<(i64, Option<i64>, String)> = sqlx::query_as(&format!(
            "UPDATE users SET last_seen = ? WHERE id = ? RETURNING {PRESENCE_COLUMNS}"
        ))
        .bind(at.0)
        .bind(user.0)
        .fetch_optional(&self.writer)
        .await?;
        row.map(presence_row)
            .ok_or_else(|| ChatError::NotFound("no such user".into()))
    }
}
