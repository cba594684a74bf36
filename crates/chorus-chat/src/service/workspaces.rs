//! Workspaces and their members.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Chat;
use super::events::workspace_scope;
use crate::error::{Result, bad, forbidden, not_found};
use crate::model::*;

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AddMember {
    pub user_id: UserId,
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::Member
}

#[derive(Serialize)]
struct MemberEvent<'a> {
    workspace_id: WorkspaceId,
    user: &'a User,
    role: Role,
}

#[derive(Serialize)]
struct JoinedWorkspace<'a> {
    workspace: &'a Workspace,
    role: Role,
}

impl Chat {
    pub async fn create_workspace(&self, caller: &User, name: &str) -> Result<Workspace> {
        let name = name.trim();
        if name.is_empty() || name.len() > 80 {
            return Err(bad("workspace name must be 1 to 80 bytes"));
        }
        let ws = self.store.create_workspace(name, caller.id).await?;
        self.emit_joined(
            caller.id,
            "workspace.joined",
            workspace_scope(ws.id),
            &JoinedWorkspace {
                workspace: &ws,
                role: Role::Owner,
            },
        )
        .await;
        Ok(ws)
    }

    pub async fn my_workspaces(&self, caller: &User) -> Result<Vec<WorkspaceMembership>> {
        self.store.workspaces_of(caller.id).await
    }

    /// The caller's role in a workspace; `NotFound` when not a member (server admins
    /// act as owners), so non-members cannot even learn the workspace exists.
    pub(crate) async fn role_in(&self, caller: &User, ws: WorkspaceId) -> Result<Role> {
        match self.store.member_role(ws, caller.id).await? {
            Some(role) => Ok(role),
            None if caller.is_admin && self.store.workspace(ws).await?.is_some() => Ok(Role::Owner),
            None => Err(not_found("no such workspace")),
        }
    }

    /// The members, each with their presence.
    pub async fn workspace_members(&self, caller: &User, ws: WorkspaceId) -> Result<Vec<Member>> {
        self.role_in(caller, ws).await?;
        let mut members = self.store.members(ws).await?;
        self.fill_online(members.iter_mut().map(|m| &mut m.presence))
            .await;
        Ok(members)
    }

    pub async fn add_workspace_member(
        &self,
        caller: &User,
        ws: WorkspaceId,
        req: AddMember,
    ) -> Result<Member> {
        let my_role = self.role_in(caller, ws).await?;
        if !my_role.manages() {
            return Err(forbidden("only owners and admins add members"));
        }
        if req.role == Role::Owner && my_role != Role::Owner {
            return Err(forbidden("only an owner can add owners"));
        }
        let user = self
            .store
            .user(req.user_id)
            .await?
            .ok_or_else(|| not_found("no such user"))?;
        let workspace = self
            .store
            .workspace(ws)
            .await?
            .ok_or_else(|| not_found("no such workspace"))?;
        let added = self.store.put_member(ws, user.id, req.role).await?;
        if added {
            self.emit_event(
                workspace_scope(ws),
                "workspace.member_joined",
                &MemberEvent {
                    workspace_id: ws,
                    user: &user,
                    role: req.role,
                },
            )
            .await;
            self.emit_joined(
                user.id,
                "workspace.joined",
                workspace_scope(ws),
                &JoinedWorkspace {
                    workspace: &workspace,
                    role: req.role,
                },
            )
            .await;
        }
        let mut presence = self
            .store
            .presence(user.id)
            .await?
            .ok_or_else(|| not_found("no such user"))?;
        self.fill_online([&mut presence]).await;
        Ok(Member {
            user,
            role: req.role,
            presence,
        })
    }
}
