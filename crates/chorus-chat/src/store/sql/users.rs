//! Users, their API tokens, and the stored part of presence (last seen, status text).

use async_trait::async_trait;
use chorus_realtime::Publish;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, Params, RowsAffected, Sql, below_cap};
use crate::error::{ChatError, Result};
use crate::model::*;
use crate::store::rows::conflict_or;
use crate::store::rows::{HashedTokenOwnerRow, TokenOwnerRow, TokenRow, UserRow, presence_row};
use crate::store::{
    Events, NewSignInCode, NewToken, NewUser, ProxyEpoch, Redemption, TokenOwner, UserStore,
};

/// The stored part of a user's presence, as read by [`presence_row`].
pub(super) const PRESENCE_COLUMNS: &str = "users.id, users.last_seen, users.status_text";

/// How long a logout of a subject without a user is kept (ms): far longer than any
/// question to the application may take.
const UNSEEN_LOGOUTS_KEPT_MS: i64 = 10 * 60 * 1000;

pub(super) const USER_COLUMNS: &str = "users.id, users.name, users.display_name, users.kind, users.webhook_url, users.status_text, users.is_admin, users.created_at, users.deactivated_at";
/// A token as listed (`rows::TokenRow`).
const TOKEN_COLUMNS: &str =
    "tokens.id, tokens.name, tokens.created_at, tokens.expires_at, tokens.last_used_at";

/// What others may see of a user (`rows::ProfileRow`): no webhook, no admin flag.
pub(super) const PROFILE_COLUMNS: &str =
    "users.id, users.name, users.display_name, users.kind, users.status_text, users.created_at";

#[async_trait]
impl<DB> UserStore for Sql<DB>
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
    async fn create_user(&self, new: NewUser) -> Result<User> {
        let row: UserRow = sqlx::query_as(&format!(
            "INSERT INTO users (name, display_name, kind, webhook_url, is_admin, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {USER_COLUMNS}"
        ))
        .bind(&new.name)
        .bind(&new.display_name)
        .bind(new.kind.as_str())
        .bind(&new.webhook_url)
        .bind(new.is_admin)
        .bind(self.now().0)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| conflict_or(e, "a user with this name"))?;
        row.into_user()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                .bind(id.0)
                .fetch_optional(&self.reader)
                .await?;
        row.map(UserRow::into_user).transpose()
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
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

    async fn list_users(&self, after: Option<UserId>, limit: u32) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.map_or(0, |u| u.0))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(UserRow::into_user).collect()
    }

    async fn set_deactivated_logged(
        &self,
        user: UserId,
        at: Option<Timestamp>,
        events: Events<User>,
    ) -> Result<Option<(User, Vec<Publish>)>> {
        let query = match at {
            Some(_) => format!(
                "UPDATE users SET deactivated_at = COALESCE(deactivated_at, $1)
                 WHERE id = $2 RETURNING {USER_COLUMNS}"
            ),
            None => format!(
                "UPDATE users SET deactivated_at = $1 WHERE id = $2 RETURNING {USER_COLUMNS}"
            ),
        };
        let mut tx = self.writer.begin().await?;
        let row: Option<UserRow> = sqlx::query_as(&query)
            .bind(at.map(|t| t.0))
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(user) = row.map(UserRow::into_user).transpose()? else {
            return Ok(None);
        };
        let logged = Self::log_events(&mut tx, self.now(), events(&user)).await?;
        tx.commit().await?;
        Ok(Some((user, logged)))
    }

    async fn proxy_epoch(&self, user: UserId) -> Result<Option<ProxyEpoch>> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT proxy_epoch, proxy_logout FROM users WHERE id = $1")
                .bind(user.0)
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(|(epoch, logout)| ProxyEpoch { epoch, logout }))
    }

    async fn proxy_logouts(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT logouts FROM proxy_logouts WHERE id = 1")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    async fn note_unseen_proxy_logout(&self, name: &str) -> Result<()> {
        let now = self.now().0;
        let mut tx = self.writer.begin().await?;
        let number: i64 = sqlx::query_scalar(
            "UPDATE proxy_logouts SET logouts = logouts + 1 WHERE id = 1 RETURNING logouts",
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO proxy_unseen_logouts (name, logout, at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET logout = excluded.logout, at = excluded.at",
        )
        .bind(name)
        .bind(number)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Past any question to the application still in flight.
        sqlx::query("DELETE FROM proxy_unseen_logouts WHERE at < $1")
            .bind(now - UNSEEN_LOGOUTS_KEPT_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unseen_proxy_logout(&self, name: &str) -> Result<i64> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT logout FROM proxy_unseen_logouts WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.unwrap_or(0))
    }

    async fn end_proxy_epoch_logged(
        &self,
        user: UserId,
        events: Events<i64>,
    ) -> Result<Option<(i64, Vec<Publish>)>> {
        let mut tx = self.writer.begin().await?;
        // Its row locked until the commit: logouts commit in the order of their numbers.
        let number: i64 = sqlx::query_scalar(
            "UPDATE proxy_logouts SET logouts = logouts + 1 WHERE id = 1 RETURNING logouts",
        )
        .fetch_one(&mut *tx)
        .await?;
        let next: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET proxy_epoch = proxy_epoch + 1, proxy_logout = $1
             WHERE id = $2 RETURNING proxy_epoch",
        )
        .bind(number)
        .bind(user.0)
        .fetch_optional(&mut *tx)
        .await?;
        // No such user: nothing changes (the transaction is rolled back).
        let Some(ended) = next.map(|n| n - 1) else {
            return Ok(None);
        };
        let logged = Self::log_events(&mut tx, self.now(), events(&ended)).await?;
        tx.commit().await?;
        Ok(Some((ended, logged)))
    }

    async fn add_token(&self, new: NewToken) -> Result<ApiToken> {
        let mut tx = self.writer.begin().await?;
        if let Some(cap) = new.cap {
            let refusal = format!("a user holds at most {cap} tokens: revoke one first");
            below_cap::<DB>(
                &mut tx,
                ("tokens", "user_id"),
                new.user_id.0,
                (cap, &refusal),
            )
            .await?;
        }
        let row: TokenRow = sqlx::query_as(&format!(
            "INSERT INTO tokens (hash, user_id, name, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(&new.hash)
        .bind(new.user_id.0)
        .bind(&new.name)
        .bind(self.now().0)
        .bind(new.expires_at.map(|t| t.0))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, "a token with this hash"))?;
        tx.commit().await?;
        Ok(row.into())
    }

    async fn token_owner(&self, hash: &str) -> Result<Option<TokenOwner>> {
        let row: Option<TokenOwnerRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS}, tokens.id AS token_id, tokens.expires_at AS token_expires_at
             FROM tokens JOIN users ON users.id = tokens.user_id WHERE tokens.hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        row.map(TokenOwnerRow::into_owner).transpose()
    }

    async fn token_owners(&self, hashes: &[String]) -> Result<Vec<(String, TokenOwner)>> {
        let rows: Vec<HashedTokenOwnerRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS}, tokens.id AS token_id, tokens.expires_at AS token_expires_at,
                    tokens.hash AS token_hash
             FROM tokens JOIN users ON users.id = tokens.user_id
             WHERE tokens.hash IN (SELECT value FROM {})",
            DB::json_elements("$1")
        ))
        .bind(super::json_list(hashes))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|row| Ok((row.token_hash, row.owner.into_owner()?)))
            .collect()
    }

    async fn tokens(&self, user: UserId) -> Result<Vec<ApiToken>> {
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_id = $1 ORDER BY id"
        ))
        .bind(user.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(ApiToken::from).collect())
    }

    async fn has_token(&self, user: UserId, id: TokenId) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM tokens WHERE id = $1 AND user_id = $2")
                .bind(id.0)
                .bind(user.0)
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.is_some())
    }

    async fn delete_token_logged(
        &self,
        user: UserId,
        id: TokenId,
        events: Events<()>,
    ) -> Result<Option<Vec<Publish>>> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("DELETE FROM tokens WHERE id = $1 AND user_id = $2")
            .bind(id.0)
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let logged = Self::log_events(&mut tx, self.now(), events(&())).await?;
        tx.commit().await?;
        Ok(Some(logged))
    }

    async fn add_sign_in_link(&self, new: NewSignInCode) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sign_in_links (code_hash, user_id, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&new.code_hash)
        .bind(new.user_id.0)
        .bind(new.created_by.0)
        .bind(self.now().0)
        .bind(new.expires_at.0)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| conflict_or(e, "a sign-in link with this code"))?;
        Ok(id)
    }

    async fn sign_in_links(&self, user: UserId, now: Timestamp) -> Result<Vec<SignInLink>> {
        let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT id, user_id, created_by, created_at, expires_at FROM sign_in_links
             WHERE user_id = $1 AND used_at IS NULL AND expires_at > $2 ORDER BY id",
        )
        .bind(user.0)
        .bind(now.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, user_id, created_by, created_at, expires_at)| SignInLink {
                    id,
                    user_id: UserId(user_id),
                    created_by: UserId(created_by),
                    created_at: Timestamp(created_at),
                    expires_at: Timestamp(expires_at),
                },
            )
            .collect())
    }

    async fn delete_sign_in_link(&self, user: UserId, id: i64, now: Timestamp) -> Result<bool> {
        // The exchange claims a link by a conditional update of its row: of the two, the
        // one that commits first wins, and the other finds nothing to do.
        let done = sqlx::query(
            "DELETE FROM sign_in_links
             WHERE id = $1 AND user_id = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(id)
        .bind(user.0)
        .bind(now.0)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn redeem_sign_in_link(
        &self,
        code_hash: &str,
        token_hash: &str,
        token_name: &str,
    ) -> Result<Redemption> {
        let now = self.now();
        let mut tx = self.writer.begin().await?;
        // The conditional update is the claim: a concurrent exchange (PostgreSQL: on
        // another node) waits for this row and then finds it used.
        let claimed: Option<i64> = sqlx::query_scalar(
            "UPDATE sign_in_links SET used_at = $1
             WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $3
             RETURNING user_id",
        )
        .bind(now.0)
        .bind(code_hash)
        .bind(now.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user_id) = claimed else {
            let link: Option<(Option<i64>,)> =
                sqlx::query_as("SELECT used_at FROM sign_in_links WHERE code_hash = $1")
                    .bind(code_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(match link {
                None => Redemption::Unknown,
                Some((Some(_),)) => Redemption::Used,
                Some((None,)) => Redemption::Expired,
            });
        };
        let user: UserRow =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
        let user = user.into_user()?;
        if user.deactivated_at.is_some() {
            // Dropped without a commit: the link stays unused.
            return Ok(Redemption::Deactivated);
        }
        let token: TokenRow = sqlx::query_as(&format!(
            "INSERT INTO tokens (hash, user_id, name, created_at, expires_at)
             VALUES ($1, $2, $3, $4, NULL) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(token_hash)
        .bind(user_id)
        .bind(token_name)
        .bind(now.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, "a token with this hash"))?;
        tx.commit().await?;
        Ok(Redemption::SignedIn {
            user: Box::new(user),
            token: token.into(),
        })
    }

    async fn touch_tokens(&self, used: &[(TokenId, Timestamp)]) -> Result<()> {
        // One statement per 500 tokens, each with its own time (`VALUES` columns are
        // `column1`, `column2` in SQLite and PostgreSQL alike): one statement per token
        // was a round trip to the database thread per connection of a connect storm.
        for chunk in used.chunks(super::MAX_LIST) {
            let sql = format!(
                "UPDATE tokens SET last_used_at = v.column2
                 FROM (VALUES {}) AS v
                 WHERE tokens.id = v.column1
                   AND (tokens.last_used_at IS NULL OR tokens.last_used_at < v.column2)",
                Params::of::<DB>().rows(chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql).persistent(false);
            for (id, at) in chunk {
                query = query.bind(id.0).bind(at.0);
            }
            query.execute(&self.writer).await?;
        }
        Ok(())
    }

    async fn presence(&self, user: UserId) -> Result<Option<Presence>> {
        let row: Option<(i64, Option<i64>, String)> = sqlx::query_as(&format!(
            "SELECT {PRESENCE_COLUMNS} FROM users WHERE id = $1"
        ))
        .bind(user.0)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(presence_row))
    }

    async fn set_status_text(&self, user: UserId, text: &str) -> Result<Presence> {
        let row: Option<(i64, Option<i64>, String)> = sqlx::query_as(&format!(
            "UPDATE users SET status_text = $1 WHERE id = $2 RETURNING {PRESENCE_COLUMNS}"
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
            "UPDATE users SET last_seen = $1 WHERE id = $2 RETURNING {PRESENCE_COLUMNS}"
        ))
        .bind(at.0)
        .bind(user.0)
        .fetch_optional(&self.writer)
        .await?;
        row.map(presence_row)
            .ok_or_else(|| ChatError::NotFound("no such user".into()))
    }

    async fn set_last_seen_of(&self, users: &[UserId], at: Timestamp) -> Result<Vec<Presence>> {
        let rows: Vec<(i64, Option<i64>, String)> = sqlx::query_as(&format!(
            "UPDATE users SET last_seen = $1
             WHERE id IN (SELECT CAST(value AS BIGINT) FROM {}) RETURNING {PRESENCE_COLUMNS}",
            DB::json_elements("$2")
        ))
        .bind(at.0)
        .bind(super::json_list(users))
        .fetch_all(&self.writer)
        .await?;
        Ok(rows.into_iter().map(presence_row).collect())
    }
}
