//! Users: creating, listing, deactivating and reactivating them, and who sees what of a
//! user: the full [`User`] (webhook, admin flag) goes to the user themself and to server
//! admins only; everyone else gets the [`UserProfile`]. Tokens are `tokens.rs`.

pub use chorus_api::requests::CreateUser;

use super::Chat;
use super::events::close_sessions_event;
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::{
    User, UserId, UserKind, UserProfile, UserView, check_text_field, valid_user_name,
};
use crate::store::{DEACTIVATED_WEBHOOK, NewUser, events_only};

/// Users listed by `GET /api/v1/users` at most per page.
pub const MAX_USERS_PAGE: u32 = 200;
/// The name of the user `bootstrap_admin` creates (the admin token's user).
const BOOTSTRAP_ADMIN: &str = "admin";

/// A new user, its first token and (agents with a webhook) its webhook secret: the only
/// time either is shown.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub user: User,
    pub token: String,
    pub webhook_secret: Option<String>,
}

impl Chat {
    /// Creates a user and its first token. Only server admins may (except `bootstrap`).
    pub async fn create_user(&self, caller: &User, req: CreateUser) -> Result<NewAccount> {
        if !caller.is_admin {
            return Err(forbidden("only an admin token can create users"));
        }
        self.create_user_unchecked(req).await
    }

    /// Creates a user without an authorization check (CLI bootstrap, dev login).
    pub async fn create_user_unchecked(&self, req: CreateUser) -> Result<NewAccount> {
        if !valid_user_name(&req.name) {
            return Err(bad("name must match [a-z0-9_.-]{1,32}"));
        }
        let webhook = match (&req.webhook_url, req.kind) {
            (Some(_), UserKind::Human) => return Err(bad("only agents have a webhook_url")),
            (Some(url), UserKind::Agent) => Some(super::agents::webhook_config(
                url,
                req.webhook_secret.clone(),
            )?),
            (None, _) if req.webhook_secret.is_some() => {
                return Err(bad("webhook_secret needs a webhook_url"));
            }
            (None, _) => None,
        };
        let display_name = req
            .display_name
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| req.name.clone());
        if display_name.len() > 80 {
            return Err(bad("display_name is at most 80 bytes"));
        }
        check_text_field("display_name", &display_name)?;
        let user = self
            .store
            .create_user(NewUser {
                name: req.name,
                display_name,
                kind: req.kind,
                webhook_url: req.webhook_url,
                is_admin: req.admin,
            })
            .await?;
        let token = self
            .issue_token(&user, ("default", None), None)
            .await?
            .token;
        let (user, webhook_secret) = match webhook {
            Some((url, secret)) => {
                let user = self
                    .store
                    .set_webhook(user.id, Some(&url), Some(&secret))
                    .await?;
                self.cache.changed();
                (user, Some(secret))
            }
            None => (user, None),
        };
        Ok(NewAccount {
            user,
            token,
            webhook_secret,
        })
    }

    /// One user as the caller may see them: the full record for themself and for server
    /// admins, the profile for someone sharing a workspace with the caller. Anyone else
    /// is `NotFound`, so users cannot be enumerated across workspaces.
    pub async fn user_view(&self, caller: &User, id: UserId) -> Result<UserView> {
        if caller.id == id {
            return Ok(UserView::Full(caller.clone()));
        }
        let user = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| not_found("no such user"))?;
        if caller.is_admin {
            return Ok(UserView::Full(user));
        }
        let mine = self.store.workspaces_of(caller.id).await?;
        let theirs = self.store.workspaces_of(id).await?;
        let shared = theirs
            .iter()
            .any(|t| mine.iter().any(|m| m.workspace.id == t.workspace.id));
        if !shared {
            return Err(not_found("no such user"));
        }
        Ok(UserView::Profile(UserProfile::from(user)))
    }

    /// The user a subject names, as [`user_by_subject`](Self::user_by_subject), a
    /// deactivated one included (to change what they will find when reactivated).
    pub async fn any_user_by_subject(&self, sub: &str) -> Result<Option<User>> {
        match sub.parse::<i64>() {
            Ok(id) => self.store.user(crate::model::UserId(id)).await,
            Err(_) => self.store.user_by_name(sub).await,
        }
    }

    /// Finds a user by numeric id or by name (JWT `sub`). A deactivated user is
    /// refused (`Unauthorized`), as their API tokens are.
    pub async fn user_by_subject(&self, sub: &str) -> Result<Option<User>> {
        let user = self.any_user_by_subject(sub).await?;
        if user.as_ref().is_some_and(|u| u.deactivated_at.is_some()) {
            return Err(ChatError::Unauthorized("the user is deactivated".into()));
        }
        Ok(user)
    }

    /// Every user, by id: the first `limit` (default 50, at most [`MAX_USERS_PAGE`])
    /// after `after`. Server admins only.
    pub async fn list_users(
        &self,
        caller: &User,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>> {
        require_admin(caller)?;
        let limit = match limit {
            0 => 50,
            n => n.min(MAX_USERS_PAGE),
        };
        self.store.list_users(after, limit).await
    }

    /// Deactivates a user (server admins; not oneself, never the bootstrap admin): their
    /// tokens are refused from now on (on other nodes within the read cache's TTL),
    /// every socket of theirs closes with 3502 on every node (which takes them
    /// offline), and an agent is no longer woken: left out of rotations, sent no
    /// webhooks, its pending deliveries given up. Their messages and memberships stay.
    /// Deactivating a deactivated user changes nothing.
    pub async fn deactivate_user(&self, caller: &User, id: UserId) -> Result<User> {
        require_admin(caller)?;
        if caller.id == id {
            return Err(forbidden("you cannot deactivate yourself"));
        }
        let target = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| not_found("no such user"))?;
        if target.is_admin && target.name == BOOTSTRAP_ADMIN {
            return Err(forbidden("the bootstrap admin cannot be deactivated"));
        }
        let now = self.now();
        // The close is logged with the change (see `revoke_token`).
        let close =
            events_only(move |_: &User| vec![close_sessions_event(id, None, "deactivated")]);
        let (user, logged) = self
            .store
            .set_deactivated_logged(id, Some(now), close)
            .await?
            .ok_or_else(|| not_found("no such user"))?;
        self.cache.changed();
        self.emit_logged(logged).await;
        self.close_sessions_again_later(id, None, "deactivated");
        if let Err(err) = self
            .store
            .fail_pending_webhooks(id, now, DEACTIVATED_WEBHOOK)
            .await
        {
            tracing::warn!(user = %id, cause = %err, "pending webhooks of a deactivated agent kept");
        }
        Ok(user)
    }

    /// Reactivates a user (server admins): their tokens that were not revoked (and have
    /// not expired) work again. Reactivating an active user changes nothing.
    pub async fn reactivate_user(&self, caller: &User, id: UserId) -> Result<User> {
        require_admin(caller)?;
        let user = self
            .store
            .set_deactivated(id, None)
            .await?
            .ok_or_else(|| not_found("no such user"))?;
        self.cache.changed();
        Ok(user)
    }

    /// Ensures the `admin` user exists. When it is created, so is its first token,
    /// returned (once) so the operator can be told. For a server without a configured
    /// admin token: that first token is how the operator gets in.
    pub async fn bootstrap_admin(&self) -> Result<(User, Option<String>)> {
        self.bootstrap(true).await
    }

    /// Ensures the `admin` user exists, creating it with no token: for a server whose
    /// admin token is configured (that token is the admin's credential, there is no
    /// second one to hand out), and for callers that only need the user.
    pub async fn ensure_admin(&self) -> Result<User> {
        Ok(self.bootstrap(false).await?.0)
    }

    async fn bootstrap(&self, issue_token: bool) -> Result<(User, Option<String>)> {
        if let Some(admin) = self.store.user_by_name(BOOTSTRAP_ADMIN).await? {
            return Ok((admin, None));
        }
        let created = self
            .store
            .create_user(NewUser {
                name: BOOTSTRAP_ADMIN.into(),
                display_name: "Administrator".into(),
                kind: UserKind::Human,
                webhook_url: None,
                is_admin: true,
            })
            .await;
        match created {
            Ok(admin) => {
                let token = if issue_token {
                    Some(
                        self.issue_token(&admin, ("default", None), None)
                            .await?
                            .token,
                    )
                } else {
                    None
                };
                Ok((admin, token))
            }
            // Another node sharing the database created it first.
            Err(ChatError::Conflict(_)) => {
                let admin = self.store.user_by_name(BOOTSTRAP_ADMIN).await?;
                admin
                    .map(|admin| (admin, None))
                    .ok_or_else(|| ChatError::Conflict("admin creation raced".into()))
            }
            Err(err) => Err(err),
        }
    }
}

fn require_admin(caller: &User) -> Result<()> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(forbidden("only a server admin"))
    }
}
