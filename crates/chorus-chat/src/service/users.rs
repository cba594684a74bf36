//! Users, tokens and authentication of opaque tokens, and who sees what of a user: the
//! full [`User`] (webhook, admin flag) goes to the user themself and to server admins
//! only; everyone else gets the [`UserProfile`].

use serde::Deserialize;
use utoipa::ToSchema;

use super::Chat;
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::{User, UserId, UserKind, UserProfile, UserView, valid_user_name};
use crate::store::NewUser;
use crate::token;

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default = "default_kind")]
    pub kind: UserKind,
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// For an agent with a `webhook_url`: the secret its webhook requests are signed
    /// with (at least 16 bytes). Generated when absent, and returned once.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Make the new user a server administrator.
    #[serde(default)]
    pub admin: bool,
}

/// A new user, its first token and (agents with a webhook) its webhook secret: the only
/// time either is shown.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub user: User,
    pub token: String,
    pub webhook_secret: Option<String>,
}

fn default_kind() -> UserKind {
    UserKind::Human
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
        let token = self.issue_token(&user, "created").await?;
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

    /// Mints and stores a new opaque token for `user`.
    pub async fn issue_token(&self, user: &User, label: &str) -> Result<String> {
        let (token, hash) = token::mint();
        self.store.add_token(user.id, &hash, label).await?;
        Ok(token)
    }

    /// The user an opaque token belongs to.
    pub async fn authenticate_token(&self, token: &str) -> Result<User> {
        let hash = token::hash(token);
        if let Some(user) = self.cache.token(&hash) {
            return Ok(user);
        }
        let epoch = self.cache.epoch();
        let user = self
            .store
            .user_by_token_hash(&hash)
            .await?
            .ok_or_else(|| ChatError::Unauthorized("invalid token".into()))?;
        self.cache.put_token(hash, user.clone(), epoch);
        Ok(user)
    }

    /// Finds a user by numeric id or by name (JWT `sub`).
    pub async fn user_by_subject(&self, sub: &str) -> Result<Option<User>> {
        match sub.parse::<i64>() {
            Ok(id) => self.store.user(crate::model::UserId(id)).await,
            Err(_) => self.store.user_by_name(sub).await,
        }
    }

    /// Ensures the `admin` user exists. When it is created, so is its first token,
    /// returned (once) so the operator can be told.
    pub async fn bootstrap_admin(&self) -> Result<(User, Option<String>)> {
        if let Some(admin) = self.store.user_by_name("admin").await? {
            return Ok((admin, None));
        }
        let created = self
            .create_user_unchecked(CreateUser {
                name: "admin".into(),
                display_name: Some("Administrator".into()),
                kind: UserKind::Human,
                webhook_url: None,
                webhook_secret: None,
                admin: true,
            })
            .await;
        match created {
            Ok(account) => Ok((account.user, Some(account.token))),
            // Another node sharing the database created it first.
            Err(ChatError::Conflict(_)) => {
                let admin = self.store.user_by_name("admin").await?;
                admin
                    .map(|admin| (admin, None))
                    .ok_or_else(|| ChatError::Conflict("admin creation raced".into()))
            }
            Err(err) => Err(err),
        }
    }
}
