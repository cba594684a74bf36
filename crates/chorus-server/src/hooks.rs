//! The engine's hooks as the server answers them: every question about users, scopes
//! and presence goes to the chat's [`ChatHooks`]; a `refresh` is answered here, with
//! the same [`Authenticator`] that opened the connection, because credentials are the
//! edge's business, not the chat's.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use chorus_chat::service::ChatHooks;
use chorus_proto::ErrorCode;
use chorus_realtime::{HookError, Scope, SessionAuth, SessionHooks, UserKey};

use crate::auth::Authenticator;
use crate::limits::HttpLimiter;

pub struct ServerHooks {
    chat: ChatHooks,
    auth: Arc<Authenticator>,
    /// The failed authentications per address that HTTP counts: a `refresh` is one
    /// more place credentials are tried.
    limiter: Option<Arc<HttpLimiter>>,
}

impl ServerHooks {
    pub fn new(
        chat: ChatHooks,
        auth: Arc<Authenticator>,
        limiter: Option<Arc<HttpLimiter>>,
    ) -> Self {
        Self {
            chat,
            auth,
            limiter,
        }
    }
}

#[async_trait]
impl SessionHooks for ServerHooks {
    async fn initial_scopes(&self, user: UserKey) -> Result<Vec<Scope>, HookError> {
        self.chat.initial_scopes(user).await
    }

    async fn authorize_subscribe(
        &self,
        user: UserKey,
        roles: &[String],
        scope: &Scope,
    ) -> Result<(), HookError> {
        self.chat.authorize_subscribe(user, roles, scope).await
    }

    async fn credential_stands(&self, user: UserKey, credential: i64) -> Result<bool, HookError> {
        self.chat.credential_stands(user, credential).await
    }

    async fn access_since(
        &self,
        user: UserKey,
        roles: &[String],
        scope: &Scope,
    ) -> Result<Option<std::time::SystemTime>, HookError> {
        self.chat.access_since(user, roles, scope).await
    }

    async fn typing(
        &self,
        user: UserKey,
        channel_id: i64,
        thread_id: Option<i64>,
    ) -> Result<(), HookError> {
        self.chat.typing(user, channel_id, thread_id).await
    }

    /// Valid credentials of the same user: the connection continues under them (a JWT's
    /// `exp` becomes its expiry; a lasting token takes the expiry away). Anything else is
    /// refused and the connection keeps its current expiry. Refusals count against the
    /// client's address like a bad token over HTTP, and an address over that limit is
    /// refused before its token is looked at (unless it authenticated from there
    /// recently, as over HTTP): a socket is no faster way to guess.
    async fn refresh(
        &self,
        user: UserKey,
        token: &str,
        client: Option<IpAddr>,
    ) -> Result<SessionAuth, HookError> {
        let limiter = self.limiter.as_deref().zip(client);
        if let Some((limiter, client)) = limiter
            && limiter.credential_wait(client, token).is_some()
        {
            return Err(HookError::RateLimited(
                "too many failed authentications from this address; retry later".into(),
            ));
        }
        let (refused, counted) = match self.auth.authenticate(token).await {
            Ok(principal) if principal.user.id.0 == user => {
                if let Some((limiter, client)) = limiter {
                    limiter.succeeded(client, token);
                }
                return Ok(principal.session);
            }
            Ok(_) => ("the token is another user's".to_owned(), true),
            Err(err) if err.code == ErrorCode::Unavailable => {
                return Err(HookError::Internal(err.message));
            }
            // Counted as HTTP counts them: bad credentials, not a refusal of good ones.
            Err(err) => (err.message, err.code == ErrorCode::Unauthorized),
        };
        if counted && let Some((limiter, client)) = limiter {
            limiter.failed_with(client, token);
        }
        Err(HookError::Forbidden(refused))
    }

    async fn stream(&self, user: UserKey, op: chorus_proto::StreamOp) -> Result<(), HookError> {
        self.chat.stream(user, op).await
    }

    async fn publish(
        &self,
        user: UserKey,
        roles: &[String],
        op: chorus_proto::PublishOp,
    ) -> Result<Option<u64>, HookError> {
        self.chat.publish(user, roles, op).await
    }

    async fn connected(&self, user: UserKey, first: bool) {
        self.chat.connected(user, first).await;
    }

    async fn disconnected(&self, user: UserKey, last: bool) {
        self.chat.disconnected(user, last).await;
    }
}
