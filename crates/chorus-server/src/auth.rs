//! Who is calling: opaque API tokens, the configured admin token, and JWTs (`jwt.rs`).
//! `limits::middleware` authenticates each request once; the extractors here read what
//! it found ([`Authenticated`]) instead of authenticating again.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use chorus_chat::Chat;
use chorus_chat::model::{User, UserId};
use chorus_chat::store::{KeyPermission, ServerKey};
use chorus_proto::ErrorCode;
use chorus_realtime::SessionAuth;
use serde::Deserialize;

use crate::error::ApiError;
use crate::jwt::JwtVerifier;
use crate::proxies::{Credential, Proxies};
use crate::state::AppState;

/// Who a credential stands for, and what the realtime engine needs to know of the
/// credential itself (its id, for revocation; its expiry, for open sockets).
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub session: SessionAuth,
}

impl Principal {
    /// A credential with no id of its own and no expiry (the admin token).
    fn lasting(user: User) -> Self {
        Self {
            user,
            session: SessionAuth::default(),
        }
    }
}

pub struct Authenticator {
    chat: Arc<Chat>,
    /// SHA-256 of `CHORUS_ADMIN_TOKEN`, compared by hash so timing reveals nothing.
    admin_token_hash: Option<String>,
    admin: UserId,
    jwt: Option<JwtVerifier>,
    /// The application's connect proxy: asked about credentials none of the above
    /// recognises (`proxies.rs`).
    connect: Option<Arc<Proxies>>,
}

impl Authenticator {
    pub fn new(
        chat: Arc<Chat>,
        admin: UserId,
        admin_token: Option<&str>,
        jwt: Option<JwtVerifier>,
        proxies: Option<Arc<Proxies>>,
    ) -> Self {
        Self {
            chat,
            admin_token_hash: admin_token.map(chorus_chat::token::hash),
            admin,
            jwt,
            connect: proxies.filter(|p| p.connects()),
        }
    }

    /// The connect proxy, when `[proxy.connect]` is configured.
    pub fn connect_proxy(&self) -> Option<&Proxies> {
        self.connect.as_deref()
    }

    /// The `Cookie` credential of a `/ws` upgrade without a token, when the connect
    /// proxy is configured to judge it and the upgrade's `Origin` is one it allows.
    pub fn connect_cookie(&self, headers: &HeaderMap) -> Option<Credential> {
        self.connect.as_ref()?.cookie(headers)
    }

    /// Credentials for the connect proxy (a token or a cookie). Without `ask`, a cookie
    /// the proxy has no cached answer for is refused without asking the application.
    pub async fn authenticate_credential(
        &self,
        credential: Credential,
        ask: bool,
    ) -> Result<Principal, ApiError> {
        match credential {
            Credential::Token(token) => self.authenticate(&token).await,
            cookie @ Credential::Cookie { .. } => match &self.connect {
                Some(proxy) => proxy.connect(&self.chat, cookie, ask).await,
                None => Err(ApiError::unauthorized("invalid credentials")),
            },
        }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        if token.is_empty() || token.len() > 4096 {
            return Err(ApiError::unauthorized("invalid token"));
        }
        if self
            .admin_token_hash
            .as_deref()
            .is_some_and(|h| h == chorus_chat::token::hash(token))
        {
            return self
                .chat
                .credential_user(self.admin)
                .await?
                .map(Principal::lasting)
                .ok_or_else(|| ApiError::unauthorized("the admin user is gone"));
        }
        if token.starts_with(chorus_chat::token::PREFIX) {
            // The token's id and expiry go with the socket (revocation, expiry: 3502).
            let owner = self.chat.authenticate_token(token).await?;
            let session = owner.session();
            return Ok(Principal {
                user: owner.user,
                session,
            });
        }
        // With a connect proxy, only what looks like a JWT is checked as one; the rest
        // is the application's to judge.
        if let Some(jwt) = &self.jwt
            && (self.connect.is_none() || jsonwebtoken::decode_header(token).is_ok())
        {
            return jwt.authenticate(&self.chat, token).await;
        }
        if let Some(proxy) = &self.connect {
            // Never hand Chorus's own credentials to the application.
            if token.starts_with(chorus_chat::token::KEY_PREFIX) {
                return Err(ApiError::unauthorized("a server key is not a user's token"));
            }
            return proxy
                .connect(&self.chat, Credential::Token(token.to_owned()), true)
                .await;
        }
        Err(ApiError::unauthorized("invalid token"))
    }
}

/// Server keys (`chk_…`): a backend's credentials, authenticated apart from users'.
impl Authenticator {
    /// Whether `token` is to be authenticated as a server key (the admin token is the
    /// admin's, whatever it looks like).
    pub fn is_server_key(&self, token: &str) -> bool {
        token.starts_with(chorus_chat::token::KEY_PREFIX)
            && self
                .admin_token_hash
                .as_deref()
                .is_none_or(|h| h != chorus_chat::token::hash(token))
    }

    pub async fn authenticate_key(&self, token: &str) -> Result<ServerKey, ApiError> {
        if token.len() > 4096 {
            return Err(ApiError::unauthorized("invalid server key"));
        }
        Ok(self.chat.authenticate_server_key(token).await?)
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The token a request carries: the bearer header, else `?token=` (percent-decoded;
/// browsers cannot set headers on a WebSocket upgrade). Only `/ws` accepts `?token=`,
/// but the limits count it on every route.
pub fn credentials(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    #[derive(Deserialize)]
    struct TokenQuery {
        token: Option<String>,
    }
    if let Some(token) = bearer(headers) {
        return Some(token.to_owned());
    }
    if !uri.query()?.contains("token=") {
        return None;
    }
    let axum::extract::Query(query) = axum::extract::Query::<TokenQuery>::try_from_uri(uri).ok()?;
    query.token.map(|t| t.trim().to_owned())
}

/// What authenticating a request's credentials gave, left in its extensions by
/// `limits::middleware`.
#[derive(Clone)]
pub struct Authenticated(Outcome);

#[derive(Clone)]
enum Outcome {
    /// No credentials.
    Anonymous,
    User(Principal),
    /// A server key: refused by every route but publish and stats ([`Operator`]).
    Key(ServerKey),
    /// The answer for credentials that did not authenticate.
    Failed {
        code: ErrorCode,
        message: String,
    },
}

impl Authenticated {
    /// `None`: the request has no credentials.
    pub fn new(outcome: Option<Result<Principal, ApiError>>) -> Self {
        Self(match outcome {
            None => Outcome::Anonymous,
            Some(Ok(user)) => Outcome::User(user),
            Some(Err(err)) => Outcome::Failed {
                code: err.code,
                message: err.message,
            },
        })
    }

    /// What authenticating a server key gave.
    pub fn key(outcome: Result<ServerKey, ApiError>) -> Self {
        match outcome {
            Ok(key) => Self(Outcome::Key(key)),
            Err(err) => Self::new(Some(Err(err))),
        }
    }

    /// The principal of a request; `Ok(None)` when it has no credentials.
    async fn of(parts: &Parts, state: &AppState) -> Result<Option<Principal>, ApiError> {
        let Some(Self(outcome)) = parts.extensions.get::<Self>() else {
            // Only for a router without `limits::middleware` (one not built by `app`).
            return match credentials(&parts.headers, &parts.uri) {
                Some(token) => state.auth.authenticate(&token).await.map(Some),
                None => Ok(None),
            };
        };
        match outcome {
            Outcome::Anonymous => Ok(None),
            Outcome::User(user) => Ok(Some(user.clone())),
            Outcome::Key(_) => Err(key_refused()),
            Outcome::Failed { code, message } => Err(ApiError::new(*code, message.clone())),
        }
    }
}

fn key_refused() -> ApiError {
    ApiError::forbidden("a server key may only publish and read the stats")
}

/// The authenticated caller of a route (bearer header only).
pub struct Caller(pub User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let missing = || ApiError::unauthorized("missing bearer token");
        // With a bearer header, that header is what was authenticated.
        if bearer(&parts.headers).is_none() {
            return Err(missing());
        }
        Authenticated::of(parts, state)
            .await?
            .map(|p| Caller(p.user))
            .ok_or_else(missing)
    }
}

/// As [`Caller`], with what the credential carries besides the user (its roles).
pub struct CallerPrincipal(pub Principal);

impl FromRequestParts<AppState> for CallerPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let missing = || ApiError::unauthorized("missing bearer token");
        if bearer(&parts.headers).is_none() {
            return Err(missing());
        }
        Authenticated::of(parts, state)
            .await?
            .map(CallerPrincipal)
            .ok_or_else(missing)
    }
}

/// The owner of a request's credentials, from the bearer header or `?token=` (`/ws`);
/// `None` when it has none.
pub struct Identity(pub Option<Principal>);

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Authenticated::of(parts, state).await.map(Identity)
    }
}

/// The caller of an operations route: a server admin, or a server key. Users who are
/// not admins are refused (403); [`Operator::require`] checks a key's permission.
pub enum Operator {
    Admin(User),
    Key(ServerKey),
}

impl Operator {
    /// `self` when it may do `permission` (an admin may do anything).
    pub fn require(self, permission: KeyPermission) -> Result<Self, ApiError> {
        match &self {
            Self::Key(key) if !key.may(permission) => Err(ApiError::forbidden(format!(
                "this server key lacks the {} permission",
                permission.as_str()
            ))),
            _ => Ok(self),
        }
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if bearer(&parts.headers).is_none() {
            return Err(ApiError::unauthorized("missing bearer token"));
        }
        if let Some(Authenticated(Outcome::Key(key))) = parts.extensions.get::<Authenticated>() {
            return Ok(Self::Key(key.clone()));
        }
        let Caller(user) = Caller::from_request_parts(parts, state).await?;
        if user.is_admin {
            Ok(Self::Admin(user))
        } else {
            Err(ApiError::forbidden("needs the admin token or a server key"))
        }
    }
}
