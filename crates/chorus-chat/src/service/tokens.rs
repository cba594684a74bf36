//! API tokens and their lifecycle: issuing (named, optionally expiring), listing,
//! revoking, and authenticating one. A revoked or expired token is refused at once on
//! this node and within the read cache's TTL on the others ([`super::cache`]); the
//! sockets it opened are closed on every node (3502). `last_used_at` is coarse: written
//! at most once a minute per token, by a task off the request path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use chorus_api::model::NewApiToken;
pub use chorus_api::requests::CreateToken;
use chorus_realtime::SessionAuth;
use tokio::time::Instant;

use super::Chat;
use super::events::{close_sessions_event, proxy_credential};
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::{ApiToken, Timestamp, TokenId, User, UserId};
use crate::store::{NewToken, TokenOwner, events_only};
use crate::token;

/// Tokens a user may hold for [`Chat::create_token`] to issue another (creating the
/// user and a dev login issue theirs regardless).
pub const MAX_TOKENS_PER_USER: usize = 100;
/// Longest `expires_in`: ten years.
const MAX_EXPIRES_IN_SECS: u64 = 10 * 365 * 24 * 3600;
/// Longest token name, in bytes.
const MAX_NAME: usize = 64;
/// A token's use is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Tokens whose use is remembered at once; past it, uses of further tokens go
/// unrecorded until older entries are a minute old.
const MAX_NOTED: usize = 10_000;

/// Whether a token expiring at `expires_at` (`None`: never) may be minted with
/// credential `with`: not when it would outlive it (see [`Chat::create_token`]).
fn outlived_by(with: &SessionAuth, expires_at: Option<Timestamp>) -> Result<()> {
    if with.credential.is_some_and(|c| c < 0) {
        return Err(forbidden(
            "an identity the application's connect proxy vouched for cannot mint API \
             tokens: they would outlive the application's logout",
        ));
    }
    let Some(ends) = with.expires_at.map(Timestamp::from_system_time) else {
        return Ok(());
    };
    if expires_at.is_none_or(|at| at > ends) {
        return Err(bad(format!(
            "this credential expires at {} (ms): a token it mints must expire no later \
             (give expires_in)",
            ends.0
        )));
    }
    Ok(())
}

impl TokenOwner {
    /// What the realtime engine keeps of the token for a socket it opens: its id (a
    /// revocation closes the sockets opened with it) and its expiry (the socket closes
    /// then).
    pub fn session(&self) -> SessionAuth {
        SessionAuth {
            credential: Some(self.token_id.0),
            expires_at: self.expires_at.map(Timestamp::to_system_time),
            roles: None,
        }
    }
}

impl Chat {
    /// Mints and stores a token for `user`: its secret, shown once. With `cap`,
    /// `Conflict` when the user holds that many tokens already.
    pub(crate) async fn issue_token(
        &self,
        user: &User,
        (name, expires_at): (&str, Option<Timestamp>),
        cap: Option<usize>,
    ) -> Result<NewApiToken> {
        let (secret, hash) = token::mint();
        let info = self
            .store
            .add_token(NewToken {
                user_id: user.id,
                hash,
                name: name.to_owned(),
                expires_at,
                cap,
            })
            .await?;
        Ok(NewApiToken {
            info,
            token: secret,
        })
    }

    /// Issues a named token for `user`: the user themself or a server admin. A
    /// deactivated user gets none (`Conflict`); nor does one holding
    /// [`MAX_TOKENS_PER_USER`].
    ///
    /// `with` is the credential the request came with. A credential that does not
    /// last cannot make one that lasts longer (a server admin's aside): one that
    /// expires (a JWT, an expiring token) mints tokens that expire no later
    /// (`BadRequest` otherwise), and an identity the connect proxy vouched for mints
    /// none (`Forbidden`: it ends with the application's logout, which a token would
    /// outlive).
    pub async fn create_token(
        &self,
        (caller, with): (&User, &SessionAuth),
        user: UserId,
        req: CreateToken,
    ) -> Result<NewApiToken> {
        let owner = self.token_holder(caller, user).await?;
        let name = req.name.trim();
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(bad(format!(
                "name must be 1 to {MAX_NAME} bytes, without control characters"
            )));
        }
        let expires_at = match req.expires_in {
            None => None,
            Some(secs) if (1..=MAX_EXPIRES_IN_SECS).contains(&secs) => {
                Some(self.now().plus_secs(secs))
            }
            Some(_) => {
                return Err(bad(format!(
                    "expires_in must be 1 to {MAX_EXPIRES_IN_SECS} seconds"
                )));
            }
        };
        if !caller.is_admin {
            outlived_by(with, expires_at)?;
        }
        if owner.deactivated_at.is_some() {
            return Err(ChatError::Conflict(
                "the user is deactivated: reactivate them first".into(),
            ));
        }
        self.issue_token(&owner, (name, expires_at), Some(MAX_TOKENS_PER_USER))
            .await
    }

    /// A user's tokens, oldest first (expired ones included): the user themself or a
    /// server admin. Never a secret or a hash.
    pub async fn list_tokens(&self, caller: &User, user: UserId) -> Result<Vec<ApiToken>> {
        self.token_holder(caller, user).await?;
        self.store.tokens(user).await
    }

    /// Revokes one of a user's tokens (the user themself or a server admin): the next
    /// request with it is refused, and every socket opened with it closes with 3502
    /// after `credentials.revoked {reason: "token_revoked", token_id}`.
    pub async fn revoke_token(&self, caller: &User, user: UserId, id: TokenId) -> Result<()> {
        self.token_holder(caller, user).await?;
        // The close is logged with the deletion: a crash after the commit still closes
        // the token's sockets on every node (the relay publishes it).
        let close =
            events_only(move |()| vec![close_sessions_event(user, Some(id.0), "token_revoked")]);
        let Some(logged) = self.store.delete_token_logged(user, id, close).await? else {
            return Err(not_found("no such token"));
        };
        self.cache.changed();
        self.cache.credentials_changed();
        self.emit_logged(logged).await;
        self.close_sessions_again_later(user, Some(id.0), "token_revoked");
        Ok(())
    }

    /// Whether the credential a connection of `user` was opened with still stands: the
    /// token (`credential` ≥ 0, its id) is still theirs, or the connect-proxy epoch
    /// (`credential` < 0, [`proxy_credential`]) is still current. Asked before each op
    /// of the socket; positive answers are kept in the read cache, so a revocation
    /// through this node is seen at once and one through another node within its TTL —
    /// whether or not the revocation's close reached this node.
    pub(crate) async fn credential_stands(&self, user: UserId, credential: i64) -> Result<bool> {
        if self.cache.credential(user, credential) {
            return Ok(true);
        }
        let epoch = self.cache.credential_epoch();
        let stands = if credential >= 0 {
            self.store.has_token(user, TokenId(credential)).await?
        } else {
            self.store
                .proxy_epoch(user)
                .await?
                .is_some_and(|current| proxy_credential(current.epoch) == credential)
        };
        if stands {
            self.cache.put_credential(user, credential, epoch);
        }
        Ok(stands)
    }

    /// The user whose tokens `caller` wants to see or change: themself, or anyone for
    /// a server admin.
    async fn token_holder(&self, caller: &User, user: UserId) -> Result<User> {
        if caller.id == user {
            return Ok(caller.clone());
        }
        if !caller.is_admin {
            return Err(forbidden(
                "only the user themself or a server admin manages their tokens",
            ));
        }
        self.store
            .user(user)
            .await?
            .ok_or_else(|| not_found("no such user"))
    }

    /// The owner of an opaque token, with the token's id and expiry. Refused
    /// (`Unauthorized`) when the token is unknown (or revoked), expired, or its user is
    /// deactivated.
    pub async fn authenticate_token(&self, token: &str) -> Result<TokenOwner> {
        let hash = token::hash(token);
        let owner = match self.cache.token(&hash) {
            Some(owner) => owner,
            None => {
                let epoch = self.cache.epoch();
                // Coalesced with the other connections' lookups (a connect storm).
                let owner = self
                    .lookups
                    .tokens
                    .get(hash.clone())
                    .await?
                    .ok_or_else(|| ChatError::Unauthorized("invalid token".into()))?;
                self.cache.put_token(hash, owner.clone(), epoch);
                owner
            }
        };
        let now = self.now();
        if owner.expires_at.is_some_and(|at| at <= now) {
            return Err(ChatError::Unauthorized("the token has expired".into()));
        }
        if owner.user.deactivated_at.is_some() {
            return Err(ChatError::Unauthorized("the user is deactivated".into()));
        }
        if self
            .token_usage
            .note(owner.token_id, self.config.clock.instant(), now)
        {
            self.spawn_usage_writer();
        }
        Ok(owner)
    }

    /// Writes the noted token uses until none is left; one such task at a time.
    fn spawn_usage_writer(&self) {
        let (store, usage) = (self.store.clone(), self.token_usage.clone());
        // Tracked: shutdown waits until the uses noted are written.
        self.background.spawn(async move {
            loop {
                let batch = usage.take();
                if batch.is_empty() {
                    break;
                }
                if let Err(err) = store.touch_tokens(&batch).await {
                    tracing::warn!(tokens = batch.len(), cause = %err, "token use not recorded");
                }
            }
        });
    }
}

/// Which token uses are waiting to be written, and when each token's use last was:
/// the request path only notes a use here (a short critical section, no I/O); one
/// writer task at a time writes them.
#[derive(Default)]
pub(crate) struct TokenUsage {
    /// A std mutex: held for a map lookup, never across an `.await`.
    state: Mutex<UsageState>,
}

#[derive(Default)]
struct UsageState {
    /// When each token's use was last queued for writing.
    noted: HashMap<TokenId, Instant>,
    /// Uses waiting for the writer (each token at most once: it is in `noted`).
    pending: Vec<(TokenId, Timestamp)>,
    /// A writer task is running; it drains `pending` until it finds it empty.
    writing: bool,
}

impl TokenUsage {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UsageState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that `id` was used (`now` on the monotonic clock, `at` on the wall clock).
    /// `true` when the caller must start a writer.
    fn note(&self, id: TokenId, now: Instant, at: Timestamp) -> bool {
        let fresh = |noted: &Instant| now.saturating_duration_since(*noted) < TOUCH_EVERY;
        let mut state = self.lock();
        if state.noted.get(&id).is_some_and(fresh) {
            return false;
        }
        if state.noted.len() >= MAX_NOTED {
            state.noted.retain(|_, noted| fresh(noted));
            if state.noted.len() >= MAX_NOTED {
                return false;
            }
        }
        state.noted.insert(id, now);
        state.pending.push((id, at));
        !std::mem::replace(&mut state.writing, true)
    }

    /// The uses to write next; empty (and the writer done) when there are none.
    fn take(&self) -> Vec<(TokenId, Timestamp)> {
        let mut state = self.lock();
        let batch = std::mem::take(&mut state.pending);
        if batch.is_empty() {
            state.writing = false;
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_use_is_written_at_most_once_a_minute_by_one_writer() {
        let usage = TokenUsage::default();
        let t0 = Instant::now();
        let (a, b) = (TokenId(1), TokenId(2));
        assert!(
            usage.note(a, t0, Timestamp(1)),
            "the first use starts a writer"
        );
        assert!(!usage.note(a, t0 + Duration::from_secs(30), Timestamp(2)));
        assert!(
            !usage.note(b, t0, Timestamp(3)),
            "a writer is already running"
        );
        assert_eq!(usage.take(), vec![(a, Timestamp(1)), (b, Timestamp(3))]);
        assert_eq!(usage.take(), vec![], "the writer stops");
        assert!(!usage.note(a, t0 + Duration::from_secs(59), Timestamp(4)));
        assert!(
            usage.note(a, t0 + Duration::from_secs(60), Timestamp(5)),
            "a minute later: written again, by a new writer"
        );
        assert_eq!(usage.take(), vec![(a, Timestamp(5))]);
    }

    #[test]
    fn past_its_cap_a_use_goes_unrecorded_until_entries_age() {
        let usage = TokenUsage::default();
        let t0 = Instant::now();
        for id in 0..MAX_NOTED as i64 {
            usage.note(TokenId(id), t0, Timestamp(0));
        }
        let extra = TokenId(MAX_NOTED as i64);
        usage.note(extra, t0, Timestamp(0));
        assert!(!usage.take().contains(&(extra, Timestamp(0))));
        usage.take();
        usage.note(extra, t0 + TOUCH_EVERY, Timestamp(1));
        assert_eq!(usage.take(), vec![(extra, Timestamp(1))]);
    }
}
