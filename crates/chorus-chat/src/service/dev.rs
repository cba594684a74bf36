//! Password-less login for `chorus serve --dev` (local trials and browser tests).
//! It signs people in by name alone, so it must never be reachable in production: the
//! edge refuses it unless dev mode is on. It never hands out an administrator's or an agent's token.

use super::Chat;
use super::channels::CreateChannel;
use super::users::CreateUser;
use super::workspaces::AddMember;
use crate::error::{ChatError, Result, bad, forbidden};
use crate::model::*;

/// The workspace every dev login joins, and its public channel.
pub const DEV_WORKSPACE: &str = "dev";
pub const DEV_CHANNEL: &str = "general";

impl Chat {
    /// Signs `name` in: creates the user on first use, makes sure the shared
    /// [`DEV_WORKSPACE`] and its [`DEV_CHANNEL`] exist and that the user belongs to
    /// both, and returns the user with a fresh token.
    pub async fn dev_login(&self, name: &str) -> Result<(User, String)> {
        // Checked before it is looked up: a NUL is no name, and PostgreSQL would fail on it.
        if !valid_user_name(name) {
            return Err(bad("name must match [a-z0-9_.-]{1,32}"));
        }
        let user = match self.store.user_by_name(name).await? {
            Some(user) if user.is_admin => {
                return Err(forbidden("dev login never signs in an administrator"));
            }
            Some(user) if user.deactivated_at.is_some() => {
                return Err(forbidden("this user is deactivated"));
            }
            // An agent signs in with its own token: a name alone must not become it.
            Some(user) if user.kind == UserKind::Agent => {
                return Err(forbidden(
                    "that name belongs to an agent: dev login signs in people only (pick another name)",
                ));
            }
            Some(user) => user,
            None => {
                let create = CreateUser {
                    name: name.to_owned(),
                    display_name: None,
                    kind: UserKind::Human,
                    webhook_url: None,
                    webhook_secret: None,
                    admin: false,
                };
                self.create_user_unchecked(create).await?.user
            }
        };
        let admin = self.ensure_admin().await?;
        {
            // Two first logins at once must not create two dev workspaces. A tokio mutex:
            // it is held across the setup's writes.
            let _setup = self.gates.dev_setup.lock().await;
            let ws = match self
                .store
                .workspaces_of(admin.id)
                .await?
                .into_iter()
                .find(|w| w.workspace.name == DEV_WORKSPACE)
            {
                Some(w) => w.workspace,
                None => self.create_workspace(&admin, DEV_WORKSPACE).await?,
            };
            let added = self
                .add_workspace_member(
                    &admin,
                    ws.id,
                    AddMember {
                        user_id: user.id,
                        role: Role::Member,
                    },
                )
                .await;
            match added {
                // A conflict: already a member (every login after the first).
                Ok(_) | Err(ChatError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
            let general = match self
                .list_channels(&admin, ws.id)
                .await?
                .into_iter()
                .find(|c| c.channel.name == DEV_CHANNEL && c.channel.kind == ChannelKind::Public)
            {
                Some(view) => view.channel,
                None => {
                    let create = CreateChannel {
                        topic: Some("Everyone who signs in with --dev".to_owned()),
                        ..CreateChannel::new(DEV_CHANNEL)
                    };
                    self.create_channel(&admin, ws.id, create).await?
                }
            };
            self.join_channel(&user, general.id).await?;
        }
        let token = self
            .issue_token(&user, ("dev login", None), None)
            .await?
            .token;
        Ok((user, token))
    }
}
