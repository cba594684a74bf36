//! Who is calling: opaque API tokens, the configured admin token, and HS256 JWTs.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chorus_chat::Chat;
use chorus_chat::model::{User, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;

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

    pub async fn authenticate(&self, token: &str) -> Result<User, ApiError> {
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
                .ok_or_else(|| ApiError::unauthorized("the admin user is gone"));
        }
        if token.starts_with(chorus_chat::token::PREFIX) {
            return Ok(self.chat.authenticate_token(token).await?);
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

/// The authenticated caller of a route.
pub struct Caller(pub User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer(&parts.headers).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        state.auth.authenticate(token).await.map(Caller)
    }
}
