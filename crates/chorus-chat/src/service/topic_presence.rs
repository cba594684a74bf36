//! Presence and join/leave of gateway topics (namespaces with `presence = true` /
//! `join_leave = true`; docs/protocol.md, "Namespaces"). The registry tells a
//! [`TopicWatch`] each time a connection starts or stops being subscribed to a watched
//! topic — subscribe, unsubscribe, revocation, disconnect — in the order it happens on
//! this node; one task per chat takes the changes in that order — those queued
//! meanwhile together, in one round trip to the presence tracker (shared through Redis
//! across nodes), so a slow Redis costs the queue one timeout, not one per change — then
//! publishes `subscriber.joined` / `subscriber.left` (ephemeral) to the topic.

use std::sync::Arc;

use chorus_api::{TopicPresence, TopicSubscriber};
use chorus_realtime::{ANONYMOUS, ConnId, Engine, Publish, Scope, SubscriptionWatch, UserKey};
use tokio::sync::mpsc;

use super::presence::{PresenceTracker, TopicMove};
use super::{Background, Chat};
use crate::error::{ChatError, Result, bad, not_found};
use crate::model::User;
use crate::namespaces::Namespaces;

/// A connection that started or stopped being subscribed to a watched topic.
pub(crate) struct TopicChange {
    scope: Scope,
    subscriber: TopicSubscriber,
    joined: bool,
    presence: bool,
    join_leave: bool,
}

/// The registry's [`SubscriptionWatch`] for the namespaces of the moment (replaced
/// with them on a reload; every one hands changes to the same task, in order).
pub(crate) struct TopicWatch {
    namespaces: Arc<Namespaces>,
    changes: mpsc::UnboundedSender<TopicChange>,
}

impl SubscriptionWatch for TopicWatch {
    fn watches(&self, scope: &Scope) -> bool {
        scope.kind() == "topic" && self.namespaces.watched(scope).is_some()
    }

    fn changed(&self, scope: &Scope, _conn: ConnId, user: UserKey, session: &str, joined: bool) {
        let Some((presence, join_leave)) = self.namespaces.watched(scope) else {
            return;
        };
        let _ = self.changes.send(TopicChange {
            scope: scope.clone(),
            subscriber: subscriber(user, session),
            joined,
            presence,
            join_leave,
        });
    }
}

fn subscriber(user: UserKey, session: &str) -> TopicSubscriber {
    TopicSubscriber {
        user_id: user,
        session_id: session.to_owned(),
        anonymous: user == ANONYMOUS,
    }
}

/// The most changes taken at once: recorded in the presence tracker in one round trip.
/// While Redis does not answer (2 s a try), that drains ~256 changes a second: a node
/// with more subscription churn than that still queues the rest until Redis is back.
const BATCH: usize = 512;

/// Takes the changes in order until the chat shuts down: those queued meanwhile at once,
/// recorded together, then their events published in the same order.
async fn run(
    mut changes: mpsc::UnboundedReceiver<TopicChange>,
    engine: Arc<Engine>,
    presence: Arc<dyn PresenceTracker>,
    background: Background,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let taken = tokio::select! {
            taken = changes.recv_many(&mut batch, BATCH) => taken,
            () = background.stop().cancelled() => 0,
        };
        if taken == 0 {
            return;
        }
        let moves: Vec<TopicMove<'_>> = batch
            .iter()
            .filter(|change| change.presence)
            .map(|change| TopicMove {
                scope: &change.scope,
                subscriber: &change.subscriber,
                joined: change.joined,
            })
            .collect();
        presence.topics_changed(&moves).await;
        drop(moves);
        for change in batch.drain(..) {
            tracing::trace!(scope = %change.scope, joined = change.joined, session = %change.subscriber.session_id, "topic subscription changed");
            if !change.join_leave {
                continue;
            }
            let kind = if change.joined {
                "subscriber.joined"
            } else {
                "subscriber.left"
            };
            let event = Publish::new(change.scope.clone(), kind, &change.subscriber).ephemeral();
            if let Err(err) = engine.publish(event).await {
                tracing::warn!(scope = %change.scope, cause = %err, "{kind} not published");
            }
            tracing::trace!(scope = %change.scope, "{kind} published");
        }
    }
}

impl Chat {
    /// A subscriber of `scope` that left with its node (found dead by the presence
    /// sweep): `subscriber.left`, where the topic's namespace sends join/leave events.
    pub(crate) async fn topic_subscriber_left(&self, scope: Scope, subscriber: TopicSubscriber) {
        if !matches!(self.namespaces().watched(&scope), Some((_, true))) {
            return;
        }
        let event = Publish::new(scope, "subscriber.left", &subscriber).ephemeral();
        if let Err(err) = self.engine.publish(event).await {
            tracing::warn!(cause = %err, "subscriber.left of a dead node not published");
        }
    }

    /// Watches the topics of `namespaces` that keep presence or send join/leave events
    /// (none: the registry watches nothing).
    pub(crate) fn watch_topics(&self, namespaces: &Arc<Namespaces>) {
        if !namespaces.any_watched() {
            self.engine.registry.set_watch(None);
            return;
        }
        let changes = self
            .topic_changes
            .get_or_init(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                self.background.spawn(run(
                    rx,
                    self.engine.clone(),
                    self.presence.clone(),
                    self.background.clone(),
                ));
                tx
            })
            .clone();
        self.engine.registry.set_watch(Some(Arc::new(TopicWatch {
            namespaces: namespaces.clone(),
            changes,
        })));
    }

    /// `GET /api/v1/scopes/{scope}/presence`: who is subscribed to a topic whose
    /// namespace keeps presence, on every node. Authorized like a subscription.
    pub async fn topic_presence(
        &self,
        caller: &User,
        roles: &[String],
        scope: &str,
    ) -> Result<TopicPresence> {
        let scope = Scope::parse(scope).map_err(|e| bad(e.to_string()))?;
        if scope.kind() != "topic" {
            return Err(not_found(
                "presence is kept for topics of namespaces with presence = true only",
            ));
        }
        self.authorize_topic(Some(caller), roles, &scope).await?;
        if !matches!(self.namespaces().watched(&scope), Some((true, _))) {
            return Err(ChatError::NotFound(format!(
                "the namespace of {scope} keeps no presence (presence = true)"
            )));
        }
        let mut subscribers = match self.presence.topic_subscribers(&scope).await {
            Some(shared) => shared,
            None => self
                .engine
                .registry
                .subscribers(&scope)
                .into_iter()
                .map(|(_, user, session)| subscriber(user, &session))
                .collect(),
        };
        subscribers.sort();
        subscribers.dedup();
        Ok(TopicPresence {
            scope: scope.to_string(),
            subscribers,
        })
    }
}
