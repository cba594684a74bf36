//! Workspaces and their members: adding, re-roling and removing them under the
//! rules of docs/protocol.md ("Permissions"), and the events that move the affected
//! user's live subscriptions. A workspace always keeps an owner; the store enforces it.

use chorus_api::events::{
    RoleChanged, WorkspaceJoined as JoinedWorkspace, WorkspaceLeft,
    WorkspaceMemberJoined as MemberEvent, WorkspaceMemberLeft as MemberLeft,
};
pub use chorus_api::requests::{AddMember, SetRole};

use chorus_realtime::{Effect, Publish};

use super::Chat;
use super::channels::removed_from_events;
use super::events::{access_changed_event, channel_scope, joined_event, workspace_scope};
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::*;
use crate::store::{Acting, Events, Outbox, events_only};

impl Chat {
    pub async fn create_workspace(&self, caller: &User, name: &str) -> Result<Workspace> {
        let name = name.trim();
        if name.is_empty() || name.len() > 80 {
            return Err(bad("workspace name must be 1 to 80 bytes"));
        }
        check_text_field("name", name)?;
        let owner = caller.id;
        let cap = (!caller.is_admin).then_some(self.config.max_workspaces_per_user);
        let (ws, logged) = self
            .store
            .create_workspace_logged(
                name,
                (owner, cap),
                events_only(move |ws: &Workspace| {
                    let joined = JoinedWorkspace {
                        workspace: ws.clone(),
                        role: Role::Owner,
                    };
                    vec![joined_event(
                        owner,
                        "workspace.joined",
                        workspace_scope(ws.id),
                        None,
                        &joined,
                    )]
                }),
            )
            .await?;
        self.emit_logged(logged).await;
        Ok(ws)
    }

    pub async fn my_workspaces(&self, caller: &User) -> Result<Vec<WorkspaceMembership>> {
        self.store.workspaces_of(caller.id).await
    }

    /// The caller's role in a workspace; `NotFound` when not a member, so non-members
    /// cannot even learn the workspace exists. Server admins act as owners of every
    /// workspace, whatever their stored role.
    pub(crate) async fn role_in(&self, caller: &User, ws: WorkspaceId) -> Result<Role> {
        if caller.is_admin {
            return match self.store.workspace(ws).await? {
                Some(_) => Ok(Role::Owner),
                None => Err(not_found("no such workspace")),
            };
        }
        self.store
            .member_role(ws, caller.id)
            .await?
            .ok_or_else(|| not_found("no such workspace"))
    }

    /// The members, each with their presence.
    pub async fn workspace_members(&self, caller: &User, ws: WorkspaceId) -> Result<Vec<Member>> {
        self.role_in(caller, ws).await?;
        let mut members = self.store.members(ws).await?;
        self.fill_online(members.iter_mut().map(|m| &mut m.presence))
            .await;
        Ok(members)
    }

    /// Adds a user to the workspace (owners and admins; only owners add owners).
    /// `Conflict` for a user who already is a member: roles change with
    /// [`set_member_role`](Self::set_member_role).
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
        // Logged with the change: a user's joins and removals of a workspace are in
        // the log in commit order, on every node. The join marks the joiner in the
        // workspace's order (`Effect::join_user`), and their subscription starts there:
        // what the workspace published while they were out is not theirs.
        let (profile, id, role) = (UserProfile::from(user.clone()), user.id, req.role);
        let events: Events<()> = Box::new(move |()| {
            let joined = Publish::new(
                workspace_scope(ws),
                "workspace.member_joined",
                &MemberEvent {
                    workspace_id: ws,
                    user: profile.clone(),
                    role,
                },
            )
            .with_effect(Effect {
                join_user: Some(id.0),
                ..Effect::default()
            });
            let workspace = workspace.clone();
            Outbox {
                events: vec![joined],
                webhooks: Vec::new(),
                then: Some(Box::new(move |logged: &[Publish]| {
                    let after = logged.first().and_then(|e| e.offset).map(|o| o - 1);
                    vec![joined_event(
                        id,
                        "workspace.joined",
                        workspace_scope(ws),
                        after,
                        &JoinedWorkspace { workspace, role },
                    )]
                })),
            }
        });
        let Some(logged) = self
            .store
            .add_member_logged(ws, user.id, req.role, events)
            .await?
        else {
            return Err(ChatError::Conflict(
                "already a member; change the role with PATCH /api/v1/workspaces/{id}/members/{user_id}"
                    .into(),
            ));
        };
        self.cache.changed();
        self.emit_logged(logged).await;
        self.member_view(user, req.role).await
    }

    /// Changes a member's role. Owners and admins change the roles of admins, members
    /// and guests (their own included); only owners change an owner's role or make
    /// someone owner. The last owner cannot be demoted (`Conflict`). Setting the role a
    /// member already has changes nothing and announces nothing.
    pub async fn set_member_role(
        &self,
        caller: &User,
        ws: WorkspaceId,
        user: UserId,
        req: SetRole,
    ) -> Result<Member> {
        let my_role = self.role_in(caller, ws).await?;
        if !my_role.manages() {
            return Err(forbidden("only owners and admins change roles"));
        }
        let current = self.target_role(ws, user).await?;
        let needs_owner = current == Role::Owner || req.role == Role::Owner;
        if needs_owner && my_role != Role::Owner {
            return Err(forbidden(
                "only an owner can change an owner's role or make someone owner",
            ));
        }
        let target = self
            .store
            .user(user)
            .await?
            .ok_or_else(|| not_found("not a member of this workspace"))?;
        if current == req.role {
            return self.member_view(target, current).await;
        }
        let event = RoleChanged {
            workspace_id: ws,
            user_id: user,
            role: req.role,
        };
        // Logged with the change. The member's own scope first: a demotion re-checks
        // their subscriptions (public channels they did not join, thread panels) before
        // anything else is sent.
        let events = events_only(move |()| {
            vec![
                access_changed_event(
                    user,
                    "member.role_changed",
                    Vec::new(),
                    "role_changed",
                    &event,
                ),
                Publish::new(workspace_scope(ws), "member.role_changed", &event),
            ]
        });
        let Some(logged) = self
            .store
            .set_member_role_logged(
                ws,
                user,
                current,
                req.role,
                acting(caller, needs_owner),
                events,
            )
            .await?
        else {
            return Err(self.changed_meanwhile(ws, user).await);
        };
        self.cache.changed();
        self.emit_logged(logged).await;
        self.member_view(target, req.role).await
    }

    /// Removes a member from the workspace, with their memberships of its channels and
    /// DMs (their messages stay). A member may remove themself (leave); removing others
    /// is for owners and admins, and only owners remove an owner. The last owner can
    /// neither leave nor be removed (`Conflict`).
    pub async fn remove_workspace_member(
        &self,
        caller: &User,
        ws: WorkspaceId,
        user: UserId,
    ) -> Result<()> {
        let my_role = self.role_in(caller, ws).await?;
        let leaving = user == caller.id;
        if !leaving && !my_role.manages() {
            return Err(forbidden("only owners and admins remove members"));
        }
        let current = self.target_role(ws, user).await?;
        if !leaving && current == Role::Owner && my_role != Role::Owner {
            return Err(forbidden("only an owner can remove an owner"));
        }
        // Asked again with the removal (a leave takes no role).
        let by = if leaving {
            None
        } else {
            acting(caller, current == Role::Owner)
        };
        // Logged with the change. One event drops the workspace and every channel of it
        // from the user's connections at once and re-checks the rest (thread panels of
        // those channels); then each channel hears that they left, and the workspace.
        let events = events_only(move |channels: &Vec<ChannelId>| {
            let scopes = std::iter::once(workspace_scope(ws))
                .chain(channels.iter().copied().map(channel_scope))
                .collect();
            let mut events = vec![access_changed_event(
                user,
                "workspace.left",
                scopes,
                "workspace_left",
                &WorkspaceLeft { workspace_id: ws },
            )];
            events.extend(removed_from_events(channels, user));
            // The leave in the workspace's order: nothing it publishes after reaches
            // the user, on any node, whenever their own scope's event arrives.
            events.push(
                Publish::new(
                    workspace_scope(ws),
                    "member.left",
                    &MemberLeft {
                        workspace_id: ws,
                        user_id: user,
                    },
                )
                .with_effect(Effect {
                    drop_user: Some(user.0),
                    ..Effect::default()
                }),
            );
            events
        });
        let Some((channels, logged)) = self
            .store
            .remove_member_logged(ws, user, current, by, events)
            .await?
        else {
            return Err(self.changed_meanwhile(ws, user).await);
        };
        self.cache.changed();
        self.emit_logged(logged).await;
        self.end_streams_of(user, &channels).await;
        Ok(())
    }

    /// The role of the member a change is about; `NotFound` when not a member.
    async fn target_role(&self, ws: WorkspaceId, user: UserId) -> Result<Role> {
        self.store
            .member_role(ws, user)
            .await?
            .ok_or_else(|| not_found("not a member of this workspace"))
    }

    /// The error for a compare-and-set that lost: the member left, or their role
    /// changed since it was checked.
    async fn changed_meanwhile(&self, ws: WorkspaceId, user: UserId) -> ChatError {
        match self.store.member_role(ws, user).await {
            Ok(None) => not_found("not a member of this workspace"),
            Ok(Some(_)) => ChatError::Conflict("the member's role changed meanwhile; retry".into()),
            Err(err) => err,
        }
    }

    /// A member as the API shows it, with their presence.
    async fn member_view(&self, user: User, role: Role) -> Result<Member> {
        let mut presence = self
            .store
            .presence(user.id)
            .await?
            .ok_or_else(|| not_found("no such user"))?;
        self.fill_online([&mut presence]).await;
        Ok(Member {
            user: user.into(),
            role,
            presence,
        })
    }
}

/// The role a change to the members takes of `caller`, for the store to ask again in
/// the change's transaction (a manager's own role can change meanwhile); `None` for a
/// server admin, whose rights are no role in the workspace.
fn acting(caller: &User, needs_owner: bool) -> Option<Acting> {
    (!caller.is_admin).then_some(Acting {
        user: caller.id,
        least: if needs_owner {
            Role::Owner
        } else {
            Role::Admin
        },
    })
}
