//! Channels, DMs and channel membership. Membership changes move the live
//! subscriptions of every connection of the user concerned (see `events::joined_event`).
//! A channel's settings and the membership of others are for its managers
//! ([`require_channel_manager`](Chat::require_channel_manager)); docs/protocol.md,
//! "Permissions", has the whole table.

use std::collections::BTreeSet;

use chorus_api::events::{ChannelJoined as Joined, MembershipChange};
pub use chorus_api::requests::{CreateChannel, OpenDm, UpdateChannel};
use chorus_realtime::{Effect, Mark, Marks, Publish, Scope};

use super::Chat;
use super::events::{channel_scope, joined_event, left_event, user_scope, workspace_scope};
use crate::error::{ChatError, Result, bad, forbidden, not_found, not_in_workspace};
use crate::model::*;
use crate::store::{
    ChannelPatch, ChannelSettings, CreatedChannel, NewChannel, Outbox, events_only,
};

const MAX_TOPIC: usize = 250;
/// Bounds of the per-channel settings, in ms.
const ROLLUP_MS: std::ops::RangeInclusive<u64> = 10..=10_000;
const TURN_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

/// Checks per-channel settings against their bounds.
fn check_settings(settings: &ChannelSettings) -> Result<()> {
    if settings
        .stream_rollup_ms
        .is_some_and(|ms| !ROLLUP_MS.contains(&ms))
    {
        return Err(bad("stream_rollup_ms must be 10 to 10000"));
    }
    if settings
        .turn_timeout_ms
        .is_some_and(|ms| !TURN_TIMEOUT_MS.contains(&ms))
    {
        return Err(bad("turn_timeout_ms must be 100 to 3600000"));
    }
    Ok(())
}
const MAX_DM_PARTICIPANTS: usize = 16;

impl Chat {
    pub async fn create_channel(
        &self,
        caller: &User,
        ws: WorkspaceId,
        req: CreateChannel,
    ) -> Result<Channel> {
        let role = self.role_in(caller, ws).await?;
        if role == Role::Guest {
            return Err(forbidden("guests cannot create channels"));
        }
        if req.kind == ChannelKind::Dm {
            return Err(bad("open DMs with POST /api/v1/workspaces/{id}/dms"));
        }
        if !valid_channel_name(&req.name) {
            return Err(bad("channel name must match [a-z0-9_-]{1,80}"));
        }
        let topic = req.topic.unwrap_or_default();
        if topic.len() > MAX_TOPIC {
            return Err(bad("topic is at most 250 bytes"));
        }
        check_text_field("topic", &topic)?;
        let policy = req.policy.unwrap_or(Policy::All);
        if policy == Policy::Dm {
            return Err(bad("the dm policy is reserved for DMs"));
        }
        let settings = ChannelSettings {
            stream_rollup_ms: req.stream_rollup_ms,
            turn_timeout_ms: req.turn_timeout_ms,
            loop_guard_run: req.loop_guard_run,
            loop_guard_per_minute: req.loop_guard_per_minute,
        };
        check_settings(&settings)?;
        let mut members = BTreeSet::from([caller.id]);
        for id in req.member_ids {
            self.require_workspace_member(ws, id).await?;
            members.insert(id);
        }
        let members: Vec<UserId> = members.into_iter().collect();
        let joiners = members.clone();
        let (channel, logged) = self
            .store
            .create_channel_logged(
                NewChannel {
                    workspace_id: ws,
                    name: req.name,
                    topic,
                    kind: req.kind,
                    policy,
                    created_by: caller.id,
                    members,
                    dm_key: None,
                    settings,
                },
                Box::new(move |created| new_channel_events(created, &joiners, &[])),
            )
            .await?;
        self.cache.changed();
        self.emit_logged(logged).await;
        Ok(channel)
    }

    /// Returns the DM of exactly the caller and `user_ids`, creating it on first use.
    /// The bool is `true` when it was created by this call.
    pub async fn open_dm(
        &self,
        caller: &User,
        ws: WorkspaceId,
        req: OpenDm,
    ) -> Result<(ChannelView, bool)> {
        self.role_in(caller, ws).await?;
        let mut participants = BTreeSet::from([caller.id]);
        for id in req.user_ids {
            self.require_workspace_member(ws, id).await?;
            participants.insert(id);
        }
        if participants.len() < 2 {
            return Err(bad("a DM needs at least one other participant"));
        }
        if participants.len() > MAX_DM_PARTICIPANTS {
            return Err(bad("a DM has at most 16 participants"));
        }
        let members: Vec<UserId> = participants.into_iter().collect();
        let key = members
            .iter()
            .map(|u| u.0.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let view = |channel| ChannelView {
            channel,
            member: true,
            unread: 0,
            unread_mentions: 0,
            last_read: None,
            member_ids: members.clone(),
            presence: Vec::new(),
        };
        if let Some(existing) = self.store.dm_by_key(ws, &key).await? {
            // A participant removed from the workspace lost the DM; added back, they
            // get it back (with its history) the next time it is opened.
            let current = self.store.channel_members(existing.id).await?;
            for &user in members.iter().filter(|u| !current.contains(u)) {
                self.add_member_and_announce(&existing, user, &members)
                    .await?;
            }
            return Ok((view(existing), false));
        }
        let joiners = members.clone();
        let created = self
            .store
            .create_channel_logged(
                NewChannel {
                    workspace_id: ws,
                    name: format!("dm-{}", key.replace(',', "-")),
                    topic: String::new(),
                    kind: ChannelKind::Dm,
                    policy: Policy::Dm,
                    created_by: caller.id,
                    members: members.clone(),
                    dm_key: Some(key.clone()),
                    settings: ChannelSettings::default(),
                },
                Box::new(move |created| new_channel_events(created, &joiners, &joiners)),
            )
            .await;
        let (channel, logged) = match created {
            Ok(created) => created,
            // Another request created it first: that one is the DM.
            Err(ChatError::Conflict(_)) => {
                let existing = self.store.dm_by_key(ws, &key).await?;
                return existing
                    .map(|c| (view(c), false))
                    .ok_or_else(|| ChatError::Conflict("DM creation raced".into()));
            }
            Err(err) => return Err(err),
        };
        self.cache.changed();
        self.emit_logged(logged).await;
        Ok((view(channel), true))
    }

    pub async fn list_channels(&self, caller: &User, ws: WorkspaceId) -> Result<Vec<ChannelView>> {
        let role = self.role_in(caller, ws).await?;
        self.store
            .visible_channels(ws, caller.id, role != Role::Guest)
            .await
    }

    /// The channel, if the caller may read it: members always; for public channels,
    /// every non-guest member of the workspace. Server admins get no exception: they
    /// administer, they do not read private channels and DMs they are not in. (The same
    /// rule for many users at once, inside a message's transaction: `Sql::readers`.)
    pub async fn readable_channel(&self, caller: &User, id: ChannelId) -> Result<Channel> {
        let channel = self
            .store
            .channel(id)
            .await?
            .ok_or_else(|| not_found("no such channel"))?;
        if self.store.is_channel_member(id, caller.id).await? {
            return Ok(channel);
        }
        let role = self.role_in(caller, channel.workspace_id).await?;
        if channel.kind == ChannelKind::Public && role != Role::Guest {
            return Ok(channel);
        }
        Err(forbidden("not a member of this channel"))
    }

    /// One channel with its members, their presence, and the caller's read state.
    pub async fn get_channel(&self, caller: &User, id: ChannelId) -> Result<ChannelView> {
        let channel = self.readable_channel(caller, id).await?;
        let member_ids = self.store.channel_members(id).await?;
        let mut presence = self.store.channel_presence(id).await?;
        self.fill_online(presence.iter_mut()).await;
        let read = self.store.read_state(id, caller.id).await?;
        Ok(ChannelView {
            member: read.is_some(),
            unread: read.as_ref().map_or(0, |r| r.unread),
            unread_mentions: read.as_ref().map_or(0, |r| r.unread_mentions),
            last_read: read.map(|r| r.message_id).filter(|m| m.0 > 0),
            member_ids,
            presence,
            channel,
        })
    }

    pub async fn update_channel(
        &self,
        caller: &User,
        id: ChannelId,
        req: UpdateChannel,
    ) -> Result<Channel> {
        let channel = self.readable_channel(caller, id).await?;
        let changes_settings = req.stream_rollup_ms.is_some()
            || req.turn_timeout_ms.is_some()
            || req.loop_guard_run.is_some()
            || req.loop_guard_per_minute.is_some();
        let settings = changes_settings.then(|| {
            let now = ChannelSettings::of(&channel);
            ChannelSettings {
                stream_rollup_ms: req.stream_rollup_ms.unwrap_or(now.stream_rollup_ms),
                turn_timeout_ms: req.turn_timeout_ms.unwrap_or(now.turn_timeout_ms),
                loop_guard_run: req.loop_guard_run.unwrap_or(now.loop_guard_run),
                loop_guard_per_minute: req
                    .loop_guard_per_minute
                    .unwrap_or(now.loop_guard_per_minute),
            }
        });
        if channel.kind == ChannelKind::Dm {
            // A DM has no manager: any participant (its only readers) may set its
            // topic; its settings (the loop guard among them) stay the workspace
            // managers', as for any channel.
            if req.name.is_some() || req.policy.is_some() {
                return Err(bad("a DM's name and policy are fixed"));
            }
            if settings.is_some() && !self.role_in(caller, channel.workspace_id).await?.manages() {
                return Err(forbidden(
                    "a DM's settings are for the workspace's owners and admins; \
                     any participant may set its topic",
                ));
            }
        } else {
            self.require_channel_manager(caller, &channel).await?;
        }
        if let Some(name) = &req.name
            && !valid_channel_name(name)
        {
            return Err(bad("channel name must match [a-z0-9_-]{1,80}"));
        }
        if let Some(topic) = &req.topic {
            if topic.len() > MAX_TOPIC {
                return Err(bad("topic is at most 250 bytes"));
            }
            // `/topic` comes here too: its text passed a message's rules, which allow lines.
            check_text_field("topic", topic)?;
        }
        if req.policy == Some(Policy::Dm) {
            return Err(bad("the dm policy is reserved for DMs"));
        }
        if let Some(settings) = &settings {
            check_settings(settings)?;
        }
        let (updated, logged) = self
            .store
            .update_channel_logged(
                id,
                ChannelPatch {
                    name: req.name,
                    topic: req.topic,
                    policy: req.policy,
                    settings,
                },
                events_only(|updated: &Channel| {
                    vec![Publish::new(
                        channel_scope(updated.id),
                        "channel.updated",
                        updated,
                    )]
                }),
            )
            .await?;
        self.cache.changed();
        self.emit_logged(logged).await;
        Ok(updated)
    }

    pub async fn join_channel(&self, caller: &User, id: ChannelId) -> Result<Channel> {
        let channel = self
            .store
            .channel(id)
            .await?
            .ok_or_else(|| not_found("no such channel"))?;
        let role = self.role_in(caller, channel.workspace_id).await?;
        if channel.kind != ChannelKind::Public || role == Role::Guest {
            if self.store.is_channel_member(id, caller.id).await? {
                return Ok(channel);
            }
            return Err(forbidden(
                "only public channels can be joined; ask a member to add you",
            ));
        }
        self.add_member_and_announce(&channel, caller.id, &[])
            .await?;
        Ok(channel)
    }

    /// Leaves a channel the caller may read (leaving one they are not in is done
    /// already). One they may not read answers as every other channel route does
    /// (`403`; `404` outside its workspace) before anything about its kind, so the
    /// answer tells nothing of a DM or a private channel one is not in.
    pub async fn leave_channel(&self, caller: &User, id: ChannelId) -> Result<()> {
        let channel = self.readable_channel(caller, id).await?;
        if channel.kind == ChannelKind::Dm {
            return Err(bad("DMs cannot be left"));
        }
        self.remove_member_and_announce(&channel, caller.id).await?;
        Ok(())
    }

    pub async fn add_channel_member(
        &self,
        caller: &User,
        id: ChannelId,
        user: UserId,
    ) -> Result<()> {
        let channel = self.readable_channel(caller, id).await?;
        if channel.kind == ChannelKind::Dm {
            return Err(bad("a DM's participants are fixed; open a new DM instead"));
        }
        if self.role_in(caller, channel.workspace_id).await? == Role::Guest {
            return Err(forbidden("guests cannot add members to channels"));
        }
        // A public channel's members may bring others in; a private one's may not.
        if channel.kind == ChannelKind::Private
            || !self.store.is_channel_member(id, caller.id).await?
        {
            self.require_channel_manager(caller, &channel).await?;
        }
        self.require_workspace_member(channel.workspace_id, user)
            .await?;
        self.add_member_and_announce(&channel, user, &[]).await?;
        Ok(())
    }

    pub async fn remove_channel_member(
        &self,
        caller: &User,
        id: ChannelId,
        user: UserId,
    ) -> Result<()> {
        if user == caller.id {
            return self.leave_channel(caller, id).await;
        }
        let channel = self.readable_channel(caller, id).await?;
        if channel.kind == ChannelKind::Dm {
            return Err(bad("a DM's participants are fixed"));
        }
        self.require_channel_manager(caller, &channel).await?;
        if !self.remove_member_and_announce(&channel, user).await? {
            return Err(not_found("not a member of this channel"));
        }
        Ok(())
    }

    /// A channel's settings (name, topic, policy, on-duty and wake lists) and the
    /// membership of others (adding to a private channel, removing) are for its
    /// creator and the workspace's owners and admins; guests never, a creator who was
    /// made a guest included. The caller must also be able to read the channel.
    pub(crate) async fn require_channel_manager(
        &self,
        caller: &User,
        channel: &Channel,
    ) -> Result<()> {
        let role = self.role_in(caller, channel.workspace_id).await?;
        if role.manages() || (role != Role::Guest && channel.created_by == caller.id) {
            return Ok(());
        }
        Err(forbidden(
            "only the channel's creator and workspace owners and admins manage a channel",
        ))
    }

    async fn require_workspace_member(&self, ws: WorkspaceId, user: UserId) -> Result<Role> {
        self.store
            .member_role(ws, user)
            .await?
            .ok_or_else(|| not_in_workspace(user))
    }

    /// Adds `user` to the channel; when new, its `member.joined` and their
    /// `channel.joined` are logged with the change and published. `true` when new.
    async fn add_member_and_announce(
        &self,
        channel: &Channel,
        user: UserId,
        member_ids: &[UserId],
    ) -> Result<bool> {
        let (channel_, members) = (channel.clone(), member_ids.to_vec());
        let (added, logged) = self
            .store
            .add_channel_member_logged(
                channel.id,
                user,
                Box::new(move |()| joined_events(&channel_, user, &members)),
            )
            .await?;
        if added {
            self.cache.changed();
            self.emit_logged(logged).await;
        }
        Ok(added)
    }

    /// Removes `user` from the channel; when they were a member, their `channel.left`
    /// and its `member.left` are logged with the change and published. `true` when
    /// they were.
    async fn remove_member_and_announce(&self, channel: &Channel, user: UserId) -> Result<bool> {
        let id = channel.id;
        let (removed, logged) = self
            .store
            .remove_channel_member_logged(
                id,
                user,
                events_only(move |()| {
                    let change = MembershipChange {
                        channel_id: id,
                        user_id: user,
                    };
                    // Unsubscribe first, so the leaver's connections stop at once.
                    vec![
                        left_event(user, "channel.left", channel_scope(id), &change),
                        member_left(channel_scope(id), &change),
                    ]
                }),
            )
            .await?;
        if removed {
            self.cache.changed();
            self.emit_logged(logged).await;
            self.end_streams_of(user, &[id]).await;
        }
        Ok(removed)
    }
}

/// After a user was removed from a workspace: each of its channels they were in hears
/// `member.left`, and their own scope `channel.left` for each (their connections already
/// dropped those channels with `workspace.left`).
pub(crate) fn removed_from_events(channels: &[ChannelId], user: UserId) -> Vec<Publish> {
    let mut events = Vec::with_capacity(2 * channels.len());
    for &channel in channels {
        let change = MembershipChange {
            channel_id: channel,
            user_id: user,
        };
        events.push(Publish::new(user_scope(user), "channel.left", &change));
        events.push(member_left(channel_scope(channel), &change));
    }
    events
}

/// A join's events: `member.joined` on the channel (marking the joiner, see
/// `Effect::join_user`), then — built from it as logged — `channel.joined` on the
/// user's scope, whose effect subscribes their connections from that offset on.
fn joined_events(channel: &Channel, user: UserId, member_ids: &[UserId]) -> Outbox {
    let change = MembershipChange {
        channel_id: channel.id,
        user_id: user,
    };
    let joined_here = Effect {
        join_user: Some(user.0),
        ..Effect::default()
    };
    let joined = Joined {
        channel: channel.clone(),
        user_id: user,
        member_ids: member_ids.to_vec(),
    };
    let scope = channel_scope(channel.id);
    Outbox {
        events: vec![
            Publish::new(scope.clone(), "member.joined", &change).with_effect(joined_here),
        ],
        webhooks: Vec::new(),
        then: Some(Box::new(move |logged: &[Publish]| {
            // The join's place in the channel's order: the joiner's subscription
            // starts there (events of the channel before it are not theirs).
            let after = logged.first().and_then(|e| e.offset).map(|o| o - 1);
            vec![joined_event(user, "channel.joined", scope, after, &joined)]
        })),
    }
}

/// A new channel's events, logged with it: `channel.created` on its workspace (public
/// channels only), then each first member's `member.joined` on the channel and, built
/// from those as logged, their `channel.joined` starting at their own join (so each
/// sees the joins after theirs, as if they had joined one by one).
/// `member_ids`: the channel's members as told to each joiner (a DM's participants).
fn new_channel_events(
    created: &CreatedChannel,
    members: &[UserId],
    member_ids: &[UserId],
) -> Outbox {
    let channel = &created.channel;
    let mut events = Vec::with_capacity(members.len() + 1);
    if channel.kind == ChannelKind::Public {
        let mut event = Publish::new(
            workspace_scope(channel.workspace_id),
            "channel.created",
            channel,
        );
        // Guests read the workspace's scope (its members, presence) but list only their
        // own channels: a public channel they are not in is not theirs to hear of.
        if !created.guests.is_empty() {
            event = event.with_marks(Marks {
                default: Mark::Plain,
                users: created.guests.iter().map(|g| (g.0, Mark::Skip)).collect(),
            });
        }
        events.push(event);
    }
    let created = events.len();
    let mut thens = Vec::with_capacity(members.len());
    for &user in members {
        let outbox = joined_events(channel, user, member_ids);
        events.extend(outbox.events);
        thens.extend(outbox.then);
    }
    Outbox {
        events,
        webhooks: Vec::new(),
        then: Some(Box::new(move |logged: &[Publish]| {
            // One `member.joined` per member, in order, after the creation.
            thens
                .into_iter()
                .zip(logged.iter().skip(created))
                .flat_map(|(then, joined)| then(std::slice::from_ref(joined)))
                .collect()
        })),
    }
}

fn member_left(scope: Scope, change: &MembershipChange) -> Publish {
    let effect = Effect {
        drop_user: Some(change.user_id.0),
        ..Effect::default()
    };
    Publish::new(scope, "member.left", change).with_effect(effect)
}
