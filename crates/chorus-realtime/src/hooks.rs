//! What the engine asks of the application that embeds it. The engine decides nothing
//! about who may read what; it asks here, per connection and per subscribe.

use async_trait::async_trait;
use chorus_proto::ErrorCode;

use crate::{Scope, UserKey};

/// A refusal or failure from a hook, mapped to a wire error code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Internal(String),
}

impl HookError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

#[async_trait]
pub trait SessionHooks: Send + Sync + 'static {
    /// The scopes a new connection of `user` is subscribed to before `hello`. The
    /// engine always adds `user:{user}` itself.
    async fn initial_scopes(&self, user: UserKey) -> Result<Vec<Scope>, HookError>;

    /// Gate 2 of an explicit `subscribe` / `resume`: may `user` read `scope`?
    async fn authorize_subscribe(&self, user: UserKey, scope: &Scope) -> Result<(), HookError>;

    /// A `typing` signal from `user`.
    async fn typing(
        &self,
        user: UserKey,
        channel_id: i64,
        thread_id: Option<i64>,
    ) -> Result<(), HookError>;

    /// A connection of `user` opened; `first` when it is the user's only one on this node.
    async fn connected(&self, _user: UserKey, _first: bool) {}

    /// A connection of `user` closed; `last` when the user has none left on this node.
    async fn disconnected(&self, _user: UserKey, _last: bool) {}
}
