//! Who is calling: opaque API tokens, the configured admin token, and HS256 JWTs.
//! `limits::middleware` authenticates each request once; the extractors here read what
//! it found ([`Authenticated`]) instead of authenticating again.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use chorus_chat::Chat;
use chorus_chat::model::{User, UserId};
use chorus_proto::ErrorCode;
use chorus_realtime::SessionAuth;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::ApiError;
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
    jwt: Option<DecodingKey>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    pub fn new(
        chat: Arc<Chat>,
        admin: UserId,
        admin_token: Option<&str>,
        jwt_secret: Option<&str>,
    ) -> Self {
        Self {
            chat,
            admin_token_hash: admin_token.map(chorus_chat::token::hash),
            admin,
            jwt: jwt_secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
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
                .store()
                .user(self.admin)
                .await?
                .map(Principal::lasting)
                .ok_or_else(|| ApiError::unauthorized("the admin user is gone"));
        }
        if token.starts_with(chorus_chat::token::PREFIX) {
            return Ok(Principal::lasting(self.chat.authenticate_token(token).await?));
        }
        if let Some(key) = &self.jwt {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.validate_exp = true;
            validation.required_spec_claims = ["sub"].into_iter().map(String::from).collect();
            let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
                .map_err(|e| ApiError::unauthorized(format!("invalid JWT: {e}")))?;
            return self
                .chat
                .user_by_subject(&data.claims.sub)
                .await?
                .map(Principal::lasting)
                .ok_or_else(|| ApiError::unauthorized("the JWT names no known user"));
        }
        Err(ApiError::unauthorized("invalid token"))
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
            Outcome::Failed { code, message } => Err(ApiError::new(*code, message.clone())),
        }
    }
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

/// The owner of a request's credentials, from the bearer header or `?token=` (`/ws`);
/// `None` when it has none.
pub struct Identity(pub Option<Principal>);

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Authenticated::of(parts, state).await.map(Identity)
    }
}
