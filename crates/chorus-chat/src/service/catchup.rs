//! Who may read a scope, and the complete catch-up over HTTP: every event of a scope
//! after an offset, from the event log, as the WebSocket would have delivered it.

use chorus_api::requests::{ScopeEvent, ScopeEvents, ScopeEventsQuery};
use chorus_realtime::{Mark, Membership, Publish, Scope};

use super::{Chat, canonical_id};
use crate::error::{ChatError, Result, bad, not_found};
use crate::model::{ChannelId, MessageId, User, UserId, WorkspaceId};

pub const DEFAULT_EVENTS_PAGE: u32 = 200;
pub const MAX_EVENTS_PAGE: u32 = 1_000;

fn scope_id(scope: &Scope) -> Result<i64> {
    // Only as events are published (`channel:7`): `channel:07` would be authorized for
    // channel 7 and then never receive anything.
    canonical_id(scope.id()).ok_or_else(|| not_found(format!("no such {}", scope.kind())))
}

/// Events a catch-up reads past its page, at most, looking for the caller's first join
/// or leave of the scope (where they stood at `after`).
const MAX_LOOKAHEAD: usize = 20 * MAX_EVENTS_PAGE as usize;

impl Chat {
    /// Whether `caller`, with the roles its credential carries (a JWT claim, the connect
    /// proxy's answer: they count for `role:<name>` namespaces only), may read `scope`:
    /// subscribe to it, or read its events over HTTP. The one rule for both
    /// (docs/protocol.md, "Permissions").
    pub async fn authorize_scope(
        &self,
        caller: &User,
        roles: &[String],
        scope: &Scope,
    ) -> Result<()> {
        match scope.kind() {
            "user" => {
                if scope.id() != caller.id.0.to_string() {
                    return Err(ChatError::Forbidden("another user's scope".into()));
                }
            }
            "workspace" => {
                self.role_in(caller, WorkspaceId(scope_id(scope)?)).await?;
            }
            "channel" => {
                self.readable_channel(caller, ChannelId(scope_id(scope)?))
                    .await?;
            }
            "thread" => {
                let root = self
                    .store
                    .message(MessageId(scope_id(scope)?))
                    .await?
                    .ok_or_else(|| not_found("no such thread"))?;
                self.readable_channel(caller, root.channel_id).await?;
            }
            // Topics carry what backends (and, where a namespace allows, clients)
            // publish; declared namespaces decide who reads them (`gateway.rs`).
            "topic" => self.authorize_topic(Some(caller), roles, scope).await?,
            other => return Err(not_found(format!("unknown scope kind {other:?}"))),
        }
        Ok(())
    }

    /// Since when `user`'s present read access to `scope` holds, where the scope's own
    /// log does not mark it: a replay or catch-up of theirs from a position reaching
    /// back before it is not given (docs/protocol.md, "Membership changes").
    ///
    /// A channel's log marks its members' joins and leaves (`Membership` skips their
    /// time out exactly), not the workspace's: a public channel read without joining
    /// it is read since the workspace's access began (the join, or the promotion from
    /// guest). A thread's log marks nobody's: it is read since the channel's access
    /// began — through the workspace for a public channel's reader who is no guest,
    /// else since they joined the channel too. A `topic:` whose namespace's `read`
    /// rests on a workspace role is read since the member was given their present role
    /// (or joined; [`Chat::topic_access_since`]). `None` for other scopes (a
    /// workspace's log marks its members' joins; a user scope is its user's; other
    /// topics are read by rules with no time), and for a reader who is no member (the
    /// server's administrator; a topic's reader by the credential's `roles`).
    ///
    /// Asked after the authorization, which it does not repeat, but a reader who is
    /// no longer a member of the workspace (and none of those) is refused
    /// (`forbidden`), not given an unbounded replay: a removal that committed in
    /// between took their access away, and the row that bounded it with it.
    pub async fn access_since(
        &self,
        user: UserId,
        roles: &[String],
        scope: &Scope,
    ) -> Result<Option<std::time::SystemTime>> {
        let as_time = |t: crate::model::Timestamp| {
            std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(t.0).unwrap_or(0))
        };
        let (channel, thread) = match scope.kind() {
            "topic" => {
                return Ok(self
                    .topic_access_since(user, roles, scope)
                    .await?
                    .map(as_time));
            }
            "channel" => (ChannelId(scope_id(scope)?), false),
            "thread" => match self.store.message(MessageId(scope_id(scope)?)).await? {
                Some(root) => (root.channel_id, true),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        let Some(access) = self.store.channel_access(channel, user).await? else {
            return Ok(None);
        };
        if access.workspace_since.is_none() {
            // No member of the workspace, so of none of its channels.
            self.read_as_administrator(user).await?;
            return Ok(None);
        }
        let since = match (thread, access.channel_since) {
            // A member of the channel: its log marks their time out.
            (false, Some(_)) => None,
            (false, None) => access.workspace_since,
            (true, _) if access.public && !access.guest => access.workspace_since,
            (true, in_channel) => access.workspace_since.into_iter().chain(in_channel).max(),
        };
        Ok(since.map(as_time))
    }

    /// The events of `scope` after `query.after` that `caller` may see (marked `skip`
    /// for them: left out), one page. `Gone` when some of them are no longer kept (or
    /// `after` is past the scope's head, a position of another database): the client
    /// reloads state instead.
    pub async fn scope_events(
        &self,
        caller: &User,
        roles: &[String],
        scope: &str,
        query: ScopeEventsQuery,
    ) -> Result<ScopeEvents> {
        let scope = Scope::parse(scope).map_err(|e| bad(e.to_string()))?;
        self.authorize_scope(caller, roles, &scope).await?;
        let limit = match query.limit {
            None => DEFAULT_EVENTS_PAGE,
            Some(n @ 1..=MAX_EVENTS_PAGE) => n,
            Some(_) => return Err(bad("limit must be 1 to 1000")),
        };
        let after = query.after;
        let (events, head) = self
            .store
            .scope_events(&scope, after, limit as usize)
            .await?;
        let gone = || {
            ChatError::Gone(format!(
                "events of {scope} after {after} are no longer kept; reload instead"
            ))
        };
        if after > head {
            return Err(gone());
        }
        if after < head && events.first().and_then(|e| e.offset) != Some(after + 1) {
            return Err(gone());
        }
        // A topic whose namespace has its own retention window: applied here as a
        // resume applies it (the event log, trimmed to the widest window of all, may
        // still hold events that left it). Other scopes are caught up from whatever the
        // log still holds, beyond the resume window too.
        if let Some(window) = self.engine.retentions.own(&scope) {
            let now = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(self.now().0).unwrap_or(0));
            let oldest = now
                .checked_sub(window.max_age)
                .unwrap_or(std::time::UNIX_EPOCH);
            let first_too_old = events
                .first()
                .and_then(|e| e.logged_at)
                .is_some_and(|at| at < oldest);
            if after < head && (head - after > window.max_events as u64 || first_too_old) {
                return Err(gone());
            }
        }
        // An event logged before the caller's access began, where the scope's log does
        // not mark it (a thread, a channel read through the workspace): the position
        // reaches back before their access, and nothing from there is theirs to catch
        // up; they reload.
        if !events.is_empty()
            && let Some(since) = self.access_since(caller.id, roles, &scope).await?
            && events
                .iter()
                .any(|e| e.logged_at.is_some_and(|at| at < since))
        {
            return Err(ChatError::Gone(format!(
                "events of {scope} after {after} reach back before your access to it; reload instead"
            )));
        }
        let next = events.last().and_then(|e| e.offset).unwrap_or(after);
        let user = caller.id.0;
        // Nothing of the time the caller was out of the scope (a leave and a re-join
        // since `after`): where they stood at `after` is told by their first join or
        // leave from there on, in this page or past it.
        let mut membership = Membership::before(user, events.iter().map(|e| e.effect.as_deref()));
        let marked = |e: &Publish| {
            e.effect
                .as_ref()
                .is_some_and(|f| f.membership_of(user).is_some())
        };
        // Past the page, as far as it takes to find their first join or leave: a short
        // page (`limit=1`) must not leave a re-join out of sight and count them in for
        // the time they were out. Past `MAX_LOOKAHEAD` events without one: `Gone`
        // rather than a guess.
        let mut cursor = next;
        let mut looked = 0usize;
        while cursor < head && !events.iter().any(marked) {
            let (rest, _) = self
                .store
                .scope_events(&scope, cursor, MAX_EVENTS_PAGE as usize)
                .await?;
            if rest.iter().any(marked) {
                membership = Membership::before(user, rest.iter().map(|e| e.effect.as_deref()));
                break;
            }
            let Some(last) = rest.last().and_then(|e| e.offset) else {
                break;
            };
            looked += rest.len();
            if looked >= MAX_LOOKAHEAD {
                return Err(gone());
            }
            cursor = last;
        }
        let events = events
            .into_iter()
            .filter(|e| membership.admits(e.effect.as_deref()))
            .filter_map(|e| visible(e, user))
            .collect();
        Ok(ScopeEvents {
            scope: scope.to_string(),
            events,
            head,
            next,
            more: next < head,
        })
    }
}

/// A logged event as `user` receives it; `None` when it is not for them.
fn visible(event: Publish, user: i64) -> Option<ScopeEvent> {
    let mark = event
        .marks
        .as_ref()
        .map_or(Mark::Plain, |m| m.mark_for(user));
    let wake = match mark {
        Mark::Skip => return None,
        Mark::Plain => None,
        Mark::Wake => Some(true),
        Mark::Observe => Some(false),
    };
    Some(ScopeEvent {
        scope: event.scope.to_string(),
        offset: event.offset?,
        kind: event.kind,
        data: serde_json::from_str(&event.data).unwrap_or(serde_json::Value::Null),
        wake,
    })
}
