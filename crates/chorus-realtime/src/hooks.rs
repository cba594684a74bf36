//! What the engine asks of the application that embeds it. The engine decides nothing
//! about who may read what; it asks here, per connection and per subscribe.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

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
    /// Any other refusal, with its wire code (e.g. `conflict`, `payload_too_large`).
    #[error("{1}")]
    Coded(ErrorCode, String),
}

impl HookError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::Internal(_) => ErrorCode::Internal,
            Self::Coded(code, _) => *code,
        }
    }
}

/// The roles a credential gives its connection (the application's names, e.g. from a
/// JWT claim): handed to [`SessionHooks::authorize_subscribe`] and
/// [`SessionHooks::publish`]; the engine does not interpret them. `None`: no roles.
pub type Roles = Option<Arc<[String]>>;

/// What opened a connection, as far as the engine needs to know: the credential (an
/// application's id for it, so revoking it closes the connections it opened), when
/// it stops being valid (the connection closes with 3502 then, unless refreshed), and
/// the roles it carries (they change only with a `refresh`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionAuth {
    pub credential: Option<i64>,
    pub expires_at: Option<SystemTime>,
    pub roles: Roles,
}

#[async_trait]
pub trait SessionHooks: Send + Sync + 'static {
    /// The scopes a new connection of `user` is subscribed to before `hello`. The
    /// engine always adds `user:{user}` itself. An `unauthorized` error
    /// ([`HookError::Coded`]) closes the connection with 3502 instead of `hello`; any
    /// other error with 3001.
    async fn initial_scopes(&self, user: UserKey) -> Result<Vec<Scope>, HookError>;

    /// Gate 2 of an explicit `subscribe` / `resume` (and of every re-check): may `user`,
    /// on a connection whose credential carries `roles`, read `scope`?
    async fn authorize_subscribe(
        &self,
        user: UserKey,
        roles: &[String],
        scope: &Scope,
    ) -> Result<(), HookError>;

    /// Since when `user`'s present read access to `scope` holds, asked before a replay
    /// from the client's position (`subscribe` with `since`, a `resume`) where the
    /// scope's own log may not mark it (its events carry no join of the user's, as a
    /// channel's do): a replay that would give an event logged before it is not
    /// given (`recovered: false`; the client reloads). `None`: no such bound. `roles`
    /// are the connection's credential's, as for [`authorize_subscribe`]: asked after
    /// it, this refuses (as it would now) when the access it found has ended since.
    ///
    /// [`authorize_subscribe`]: Self::authorize_subscribe
    async fn access_since(
        &self,
        _user: UserKey,
        _roles: &[String],
        _scope: &Scope,
    ) -> Result<Option<SystemTime>, HookError> {
        Ok(None)
    }

    /// A `typing` signal from `user`.
    async fn typing(
        &self,
        user: UserKey,
        channel_id: i64,
        thread_id: Option<i64>,
    ) -> Result<(), HookError>;

    /// A `refresh` from a connection of `user` (from address `client`): the credentials
    /// `token` stands for, if it is valid and names the same user.
    async fn refresh(
        &self,
        _user: UserKey,
        _token: &str,
        _client: Option<IpAddr>,
    ) -> Result<SessionAuth, HookError> {
        Err(HookError::BadRequest(
            "this server does not refresh connections".into(),
        ))
    }

    /// A streaming-message op (`append`, `complete`, `abort`) from `user`.
    async fn stream(&self, _user: UserKey, _op: chorus_proto::StreamOp) -> Result<(), HookError> {
        Err(HookError::BadRequest(
            "this server has no streaming messages".into(),
        ))
    }

    /// A client's `publish` from `user` ([`ANONYMOUS`](crate::ANONYMOUS) without
    /// credentials), on a connection whose credential carries `roles`: the event's
    /// offset once published (`None`: kept in no history).
    async fn publish(
        &self,
        _user: UserKey,
        _roles: &[String],
        _op: chorus_proto::PublishOp,
    ) -> Result<Option<u64>, HookError> {
        Err(HookError::Forbidden(
            "this server does not take publishes from clients".into(),
        ))
    }

    /// Whether `credential` — the application's id of the credential that opened (or
    /// last refreshed) a connection of `user`, [`SessionAuth::credential`] — still
    /// stands. Asked before each op that reads or acts on the user's behalf
    /// (`subscribe`, `resume`, `typing`, the streaming ops, `publish`), so a revocation
    /// whose close has not reached this node yet (a broker outage) is refused all the
    /// same: `false` closes the connection with 3502. Not asked for a connection whose
    /// credential has no id. No default: a wrapper that forgot to pass it on would
    /// silently grant every revoked credential.
    async fn credential_stands(&self, user: UserKey, credential: i64) -> Result<bool, HookError>;

    /// A connection of `user` opened; `first` when it is the user's only one on this node.
    async fn connected(&self, _user: UserKey, _first: bool) {}

    /// A connection of `user` closed; `last` when the user has none left on this node.
    async fn disconnected(&self, _user: UserKey, _last: bool) {}
}
