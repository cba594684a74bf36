//! One-time sign-in links: a server admin creates one for a user and hands it over; the
//! first to open it before it expires gets a new API token of that user, and nobody
//! after. Only the code's SHA-256 is stored. The route that redeems a code is open to
//! anyone, so its guessing is limited at the edge like bad credentials are.

pub use chorus_api::model::NewSignInLink;
pub use chorus_api::requests::CreateSignInLink;

use super::Chat;
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::{SignInLink, User, UserId};
use crate::store::{NewSignInCode, Redemption};
use crate::token;

/// How long a link works when the request does not say: a day.
pub const DEFAULT_LINK_SECS: u64 = 24 * 3600;
/// The shortest and the longest life a request may give a link.
pub const MIN_LINK_SECS: u64 = 60;
pub const MAX_LINK_SECS: u64 = 7 * 24 * 3600;
/// What the token a link issues is named.
pub const LINK_TOKEN_NAME: &str = "sign-in link";
/// Longer codes are not looked up (ours are 47 bytes).
const MAX_CODE: usize = 256;

impl Chat {
    /// Creates a sign-in link for `user`: server admins only (anyone else, themself
    /// included, `Forbidden`: a link is a credential handed to someone else). A
    /// deactivated user gets none (`Conflict`).
    pub async fn create_sign_in_link(
        &self,
        caller: &User,
        user: UserId,
        req: CreateSignInLink,
    ) -> Result<NewSignInLink> {
        if !caller.is_admin {
            return Err(forbidden("only a server admin creates sign-in links"));
        }
        let secs = req.expires_in.unwrap_or(DEFAULT_LINK_SECS);
        if !(MIN_LINK_SECS..=MAX_LINK_SECS).contains(&secs) {
            return Err(bad(format!(
                "expires_in must be {MIN_LINK_SECS} to {MAX_LINK_SECS} seconds"
            )));
        }
        let owner = self
            .store
            .user(user)
            .await?
            .ok_or_else(|| not_found("no such user"))?;
        if owner.deactivated_at.is_some() {
            return Err(ChatError::Conflict(
                "the user is deactivated: reactivate them first".into(),
            ));
        }
        let (code, code_hash) = token::mint_sign_in_code();
        let expires_at = self.now().plus_secs(secs);
        let id = self
            .store
            .add_sign_in_link(NewSignInCode {
                user_id: user,
                created_by: caller.id,
                code_hash,
                expires_at,
            })
            .await?;
        Ok(NewSignInLink {
            id,
            url_fragment: format!("#signin={code}"),
            code,
            user_id: user,
            expires_at,
        })
    }

    /// A user's sign-in links that can still be used, oldest first: server admins only
    /// (as they create them). Never a code.
    pub async fn list_sign_in_links(&self, caller: &User, user: UserId) -> Result<Vec<SignInLink>> {
        self.link_holder(caller, user).await?;
        self.store.sign_in_links(user, self.now()).await
    }

    /// Revokes one of a user's sign-in links before it is used: server admins only.
    /// `NotFound` for none of that id that can still be used (a link used, expired or
    /// revoked already).
    pub async fn delete_sign_in_link(&self, caller: &User, user: UserId, id: i64) -> Result<()> {
        self.link_holder(caller, user).await?;
        if !self.store.delete_sign_in_link(user, id, self.now()).await? {
            return Err(not_found("no such sign-in link that can still be used"));
        }
        Ok(())
    }

    /// `user`, for a server admin managing their sign-in links.
    async fn link_holder(&self, caller: &User, user: UserId) -> Result<User> {
        if !caller.is_admin {
            return Err(forbidden("only a server admin manages sign-in links"));
        }
        self.store
            .user(user)
            .await?
            .ok_or_else(|| not_found("no such user"))
    }

    /// Exchanges a sign-in link's code for a new API token of its user, using the link
    /// up. `Unauthorized` for a code no link has; `Gone` for a link used before or
    /// expired; `Forbidden` when the user is deactivated (the link stays unused).
    pub async fn sign_in_with_link(&self, code: &str) -> Result<(User, String)> {
        let code = code.trim();
        if code.is_empty() || code.len() > MAX_CODE {
            return Err(ChatError::Unauthorized("unknown sign-in link".into()));
        }
        let (secret, token_hash) = token::mint();
        let redeemed = self
            .store
            .redeem_sign_in_link(&token::hash(code), &token_hash, LINK_TOKEN_NAME)
            .await?;
        match redeemed {
            Redemption::SignedIn { user, .. } => Ok((*user, secret)),
            Redemption::Unknown => Err(ChatError::Unauthorized("unknown sign-in link".into())),
            Redemption::Used => Err(ChatError::Gone(
                "this sign-in link was used already: ask for a new one".into(),
            )),
            Redemption::Expired => Err(ChatError::Gone(
                "this sign-in link has expired: ask for a new one".into(),
            )),
            Redemption::Deactivated => Err(forbidden("the user is deactivated")),
        }
    }
}
