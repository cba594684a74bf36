//! Publishing domain events. Called only after the change they describe is committed;
//! a broker failure is logged, never undoes the change (the event is in the event log:
//! clients resume or catch up over HTTP).
//!
//! Two ways in: events a store method logged in the change's own transaction
//! ([`Chat::emit_logged`]: every change the chat stores — docs/architecture.md, "The
//! event log", lists them), and events appended to the log by the broker as they are
//! published ([`Chat::emit`]: events that are the change themselves, such as `topic:`
//! publishes, the loop guard's notices, and ephemeral events).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_api::events::CredentialsRevoked;
use chorus_realtime::broker::{LogHeads, logged_event};
use chorus_realtime::{
    BrokerError, Clock, CloseSessions, Effect, EventLog, LogRead, Publish, Scope,
};
use serde::Serialize;

use super::Chat;
use crate::model::{ChannelId, MessageId, TokenId, UserId, WorkspaceId};
use crate::store::{Store, events_only};

pub(crate) fn user_scope(id: UserId) -> Scope {
    Scope::of("user", id)
}

pub(crate) fn channel_scope(id: ChannelId) -> Scope {
    Scope::of("channel", id)
}

pub(crate) fn workspace_scope(id: WorkspaceId) -> Scope {
    Scope::of("workspace", id)
}

pub(crate) fn thread_scope(id: MessageId) -> Scope {
    Scope::of("thread", id)
}

impl Chat {
    pub(crate) async fn emit(&self, publish: Publish) {
        self.emit_at(publish).await;
    }

    /// [`emit`](Self::emit), returning the event's offset (`None` when it was not
    /// published, or is ephemeral).
    pub(crate) async fn emit_at(&self, publish: Publish) -> Option<u64> {
        let (scope, kind) = (publish.scope.clone(), publish.kind.clone());
        match self.engine.publish(publish).await {
            Ok(offset) => offset,
            Err(err) => {
                tracing::warn!(%scope, kind, cause = %err, "event not published");
                None
            }
        }
    }

    /// Publishes events the store logged with their change (they carry their offsets;
    /// the broker delivers each once, in offset order).
    pub(crate) async fn emit_logged(&self, events: Vec<Publish>) {
        for publish in events {
            self.emit(publish).await;
        }
    }

    /// [`close_sessions_event`] once more, [`CLOSE_AGAIN_AFTER`] later: a
    /// socket whose credentials were checked just before the change (from another
    /// node's read cache, or by a read that raced the commit) can register after the
    /// first close went out. For a whole user (`credential: None`, a deactivation) only
    /// if they are still deactivated then; a token's id is never reused, nor is a
    /// connect-proxy epoch's ([`proxy_credential`]).
    pub(crate) fn close_sessions_again_later(
        &self,
        user: UserId,
        credential: Option<i64>,
        reason: &'static str,
    ) {
        let (engine, store) = (self.engine.clone(), self.store.clone());
        let background = self.background.clone();
        // At shutdown the second close goes out at once, not never.
        self.background.spawn(async move {
            background.sleep(CLOSE_AGAIN_AFTER).await;
            if credential.is_none() {
                match store.user(user).await {
                    Ok(Some(u)) if u.deactivated_at.is_some() => {}
                    Ok(_) => return,
                    Err(err) => tracing::warn!(%user, cause = %err, "closing again anyway"),
                }
            }
            let publish = close_sessions_event(user, credential, reason);
            if let Err(err) = engine.publish(publish).await {
                tracing::warn!(%user, cause = %err, "second close not published");
            }
        });
    }
}

/// `kind` on the user's scope after a change that may have taken away read access
/// (removal, demotion): every connection of the user, on every node, drops
/// `unsubscribe` at once and authorizes each of its other subscriptions again; those no
/// longer allowed end with `subscription.revoked {scope, reason}`.
pub(crate) fn access_changed_event(
    user: UserId,
    kind: &str,
    unsubscribe: Vec<Scope>,
    reason: &str,
    data: &impl Serialize,
) -> Publish {
    let effect = Effect {
        unsubscribe,
        recheck: Some(reason.to_owned()),
        ..Effect::default()
    };
    Publish::new(user_scope(user), kind, data).with_effect(effect)
}

/// `kind` on the user's scope, subscribing their connections to `scope` after offset
/// `after`: from that point of the scope's order on (the join's own event there), on
/// every node, whatever each node's reading of it.
pub(crate) fn joined_event(
    user: UserId,
    kind: &str,
    scope: Scope,
    after: Option<u64>,
    data: &impl Serialize,
) -> Publish {
    let effect = Effect {
        subscribe: vec![scope],
        after,
        ..Effect::default()
    };
    Publish::new(user_scope(user), kind, data).with_effect(effect)
}

/// `kind` on the user's scope: their connections leave a channel and are unsubscribed
/// from it. Their `thread:` subscriptions are authorized again: a thread of a private
/// channel they left is no longer theirs to read.
pub(crate) fn left_event(user: UserId, kind: &str, scope: Scope, data: &impl Serialize) -> Publish {
    let effect = Effect {
        unsubscribe: vec![scope],
        recheck: Some("channel_left".to_owned()),
        recheck_kinds: vec!["thread".to_owned()],
        ..Effect::default()
    };
    Publish::new(user_scope(user), kind, data).with_effect(effect)
}

/// How long after a revocation or a deactivation its sockets are closed a second time:
/// past the read cache's TTL, so no node still accepts the credentials then.
const CLOSE_AGAIN_AFTER: Duration = super::cache::TTL.saturating_add(Duration::from_secs(1));

/// The credential id of the connections the application's connect proxy authenticated
/// (gateway mode) while the user's connect-proxy epoch was `epoch` (see
/// [`Store::proxy_epoch`](crate::store::UserStore::proxy_epoch)): -1 for epoch 0, -2 for
/// epoch 1, …. Token ids are positive, so a close naming it ends only those
/// connections, and only the ones vouched for before the logout that ended the epoch.
pub const fn proxy_credential(epoch: i64) -> i64 {
    -1 - epoch
}

impl Chat {
    /// The application logged `user` out (gateway mode): their connect-proxy epoch
    /// ends, so no node accepts an identity the connect proxy vouched for before (each
    /// checks the epoch on use), and the connections it authenticated close on every
    /// node: 3502 after `credentials.revoked {reason: "session_revoked"}`. The user's
    /// connections opened otherwise (an API token) stay, and so do those of a new
    /// sign-in, which carry the new epoch. Closed a second time later, as a revoked
    /// token's: a connection vouched for just before the logout can register after
    /// the first close. `false`: no such user.
    pub async fn close_proxy_sessions(&self, user: UserId) -> crate::error::Result<bool> {
        let close = events_only(move |ended: &i64| {
            vec![close_sessions_event(
                user,
                Some(proxy_credential(*ended)),
                "session_revoked",
            )]
        });
        let Some((ended, logged)) = self.store.end_proxy_epoch_logged(user, close).await? else {
            return Ok(false);
        };
        self.cache.credentials_changed();
        self.emit_logged(logged).await;
        self.close_sessions_again_later(user, Some(proxy_credential(ended)), "session_revoked");
        Ok(true)
    }

    /// How many logouts the application made so far (see
    /// [`UserStore::proxy_logouts`](crate::store::UserStore::proxy_logouts)).
    pub async fn proxy_logouts(&self) -> crate::error::Result<i64> {
        self.store.proxy_logouts().await
    }

    /// A logout of `name`, a subject no user has yet (see
    /// [`UserStore::note_unseen_proxy_logout`](crate::store::UserStore::note_unseen_proxy_logout)).
    pub async fn note_unseen_proxy_logout(&self, name: &str) -> crate::error::Result<()> {
        self.store.note_unseen_proxy_logout(name).await
    }

    /// The number of the latest logout of `name` while it had no user (0: none).
    pub async fn unseen_proxy_logout(&self, name: &str) -> crate::error::Result<i64> {
        self.store.unseen_proxy_logout(name).await
    }

    /// The user's connect-proxy epoch (`None`: no such user); see
    /// [`close_proxy_sessions`](Self::close_proxy_sessions).
    pub async fn proxy_epoch(
        &self,
        user: UserId,
    ) -> crate::error::Result<Option<crate::store::ProxyEpoch>> {
        self.store.proxy_epoch(user).await
    }
}

/// Closes the user's live connections on every node with 3502 (credentials no longer
/// valid): all of them, or only those opened with `credential` (a token's id, or
/// [`proxy_credential`]).
/// `credentials.revoked {reason, token_id?}` on the user's scope, which each connection
/// receives before it closes; logged with the change that revokes.
pub(crate) fn close_sessions_event(user: UserId, credential: Option<i64>, reason: &str) -> Publish {
    let effect = Effect {
        close: Some(CloseSessions { credential }),
        ..Effect::default()
    };
    let data = CredentialsRevoked {
        reason: reason.to_owned(),
        token_id: credential.filter(|&c| c > 0).map(TokenId),
    };
    Publish::new(user_scope(user), "credentials.revoked", &data).with_effect(effect)
}

/// The store's event log as the engine's brokers read it (see
/// `chorus_realtime::EventLog`).
pub struct StoreLog {
    store: Arc<dyn Store>,
    clock: Clock,
}

impl StoreLog {
    pub fn new(store: Arc<dyn Store>, clock: Clock) -> Arc<Self> {
        Arc::new(Self { store, clock })
    }
}

fn log_error(err: crate::error::ChatError) -> BrokerError {
    BrokerError::Unavailable(format!("event log: {err}"))
}

#[async_trait]
impl EventLog for StoreLog {
    async fn append(&self, events: Vec<Publish>) -> Result<Vec<Publish>, BrokerError> {
        self.store.append_events(events).await.map_err(log_error)
    }

    async fn head(&self, scope: &Scope) -> Result<u64, BrokerError> {
        self.store.scope_head(scope).await.map_err(log_error)
    }

    async fn heads(&self) -> Result<LogHeads, BrokerError> {
        let rows = self.store.scope_heads().await.map_err(log_error)?;
        let mut heads = LogHeads::default();
        for (scope, head) in rows {
            if scope.is_empty() {
                heads.base = head;
            } else if let Ok(scope) = Scope::parse(&scope) {
                heads.scopes.push((scope, head));
            }
        }
        Ok(heads)
    }

    async fn recent(&self, since: std::time::SystemTime) -> Result<Vec<(Scope, u64)>, BrokerError> {
        let ms = since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let rows = self
            .store
            .recent_scopes(crate::model::Timestamp(ms))
            .await
            .map_err(log_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, h)| Some((Scope::parse(&s).ok()?, h)))
            .collect())
    }

    async fn latest(
        &self,
        limit: usize,
        per_scope: usize,
    ) -> Result<Vec<Arc<chorus_realtime::Event>>, BrokerError> {
        let events = self
            .store
            .latest_events(limit, per_scope)
            .await
            .map_err(log_error)?;
        let now = self.clock.system_time();
        Ok(events
            .into_iter()
            .map(|p| Arc::new(logged_event(p, now)))
            .collect())
    }

    async fn read(&self, scope: &Scope, after: u64, limit: usize) -> Result<LogRead, BrokerError> {
        let (events, head) = self
            .store
            .scope_events(scope, after, limit)
            .await
            .map_err(log_error)?;
        let now = self.clock.system_time();
        Ok(LogRead {
            events: events
                .into_iter()
                .map(|p| Arc::new(logged_event(p, now)))
                .collect(),
            head,
        })
    }
}
