//! Gateway mode: the rules of declared `topic:` namespaces ([`crate::namespaces`]) —
//! who may read a topic (the one check behind `subscribe`, its live re-checks and the
//! HTTP catch-up: [`Chat::authorize_scope`]), who may publish to it from a client, and
//! the payload schema every publish must satisfy. Without namespaces, topics behave as
//! before: any user reads any topic, only the server publishes.
//!
//! Access `proxy` asks the application ([`AppProxy`], over HTTP at the edge) each time
//! the rule is applied, so subscribe, resume and the HTTP catch-up all ask it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chorus_api::Namespace;
use chorus_api::proxy::{ProxyAnswer, ProxyUser, PublishRequest, SubscribeRequest};
use chorus_proto::CloseCode;
use chorus_realtime::{ANONYMOUS, Publish, Scope};
use serde_json::Value;

use super::{Chat, canonical_id};
use crate::error::{ChatError, Result};
use crate::model::{User, WorkspaceId, check_no_nul};
use crate::namespaces::{Access, NamespaceRetention, Namespaces, RoleRule, rank};

/// Longest event type, as for `POST /api/v1/publish`.
const MAX_TYPE_BYTES: usize = 64;

/// The application's `subscribe` and `publish` proxies. An answer the application
/// could not give (down, slow, a bad answer) is `ChatError::Unavailable`, with why.
#[async_trait]
pub trait AppProxy: Send + Sync {
    /// May `request.user` read `request.scope`? (The implementation may cache answers.)
    async fn subscribe(&self, request: SubscribeRequest) -> Result<ProxyAnswer>;
    /// May `request.user` publish this event, and with which payload?
    async fn publish(&self, request: PublishRequest) -> Result<ProxyAnswer>;
}

impl Chat {
    /// Replaces the declared namespaces (at start, and on a reload). Each later
    /// subscribe and publish is judged by the new rules; live subscriptions are judged
    /// again by [`Chat::recheck_topics`]. Anonymous connections exist only while some
    /// namespace is readable by the public ([`Namespaces::any_public`], the upgrade's
    /// rule): under rules without one, every anonymous connection on this node closes
    /// with 3502 (each node reloads its own file, so each judges its own).
    pub fn set_namespaces(&self, namespaces: Namespaces) {
        let namespaces = Arc::new(namespaces);
        // Their retention windows, for the broker, the event log's history and the
        // HTTP catch-up alike (one rule: `Engine::retentions`).
        let retentions = &self.engine.retentions;
        retentions.set_rule(if namespaces.is_empty() {
            None
        } else {
            Some(Arc::new(NamespaceRetention {
                namespaces: namespaces.clone(),
                server: retentions.server(),
            }))
        });
        self.watch_topics(&namespaces);
        let public = namespaces.any_public();
        match self.namespaces.write() {
            Ok(mut current) => *current = namespaces,
            Err(poisoned) => *poisoned.into_inner() = namespaces,
        }
        if !public {
            // After the swap: an anonymous connection admitted under the old rules but
            // registered after this sweep finds the new ones when it opens
            // (`ChatHooks::initial_scopes`) and closes itself.
            self.close_anonymous();
        }
    }

    /// Closes every anonymous connection on this node with 3502 (`unauthorized`): no
    /// namespace is public any more, and a new one would be refused at the upgrade.
    /// No event of its own announces it (they have no `user:` scope; a re-check's
    /// `subscription.revoked` may still come first); their subscriptions end with the
    /// socket. Answers how many were told to close.
    fn close_anonymous(&self) -> usize {
        let mut closed = 0;
        for conn in self.engine.registry.connections_of(ANONYMOUS) {
            if conn.control.fire(CloseCode::Unauthorized) {
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::info!(
                connections = closed,
                "anonymous connections closed: no namespace is public any more"
            );
        }
        closed
    }

    /// After a reload of the namespaces: every live `topic:` subscription on this node
    /// is authorized again by the new rules, as after a demotion — those refused end
    /// with `subscription.revoked {scope, reason: "namespaces_changed"}`, the others
    /// continue with nothing lost; no socket closes here (anonymous ones were closed by
    /// [`Chat::set_namespaces`] if no namespace is public). (Each node reloads its own
    /// file.)
    /// Answers how many subscriptions are being re-checked.
    pub fn recheck_topics(&self) -> usize {
        self.engine
            .registry
            .recheck_all("namespaces_changed", &["topic".to_owned()])
    }

    /// The declared namespaces now.
    pub fn namespaces(&self) -> Arc<Namespaces> {
        match self.namespaces.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `GET /api/v1/namespaces`: for server admins.
    pub fn list_namespaces(&self, caller: &User) -> Result<Vec<Namespace>> {
        if !caller.is_admin {
            return Err(ChatError::Forbidden(
                "only server admins list namespaces".into(),
            ));
        }
        Ok(self.namespaces().configs())
    }

    /// May `caller` (`None`: an anonymous connection), whose credential carries
    /// `roles`, read the topic `scope`?
    pub(crate) async fn authorize_topic(
        &self,
        caller: Option<&User>,
        roles: &[String],
        scope: &Scope,
    ) -> Result<()> {
        let namespaces = self.namespaces();
        if namespaces.is_empty() {
            return match caller {
                Some(_) => Ok(()),
                None => Err(ChatError::Forbidden(
                    "anonymous connections may read public namespaces only".into(),
                )),
            };
        }
        let found = namespaces
            .find(scope)
            .ok_or_else(|| outside_namespaces(scope))?;
        let namespace = found.namespace;
        if namespace.read == Access::Proxy {
            let answer = self
                .proxy("subscribe")?
                .subscribe(SubscribeRequest {
                    user: caller.map(proxy_user),
                    roles: roles.to_vec(),
                    scope: scope.to_string(),
                    namespace: namespace.config.name.clone(),
                })
                .await?;
            return match answer.allow {
                true => Ok(()),
                false => Err(refused_by_application(answer.reason)),
            };
        }
        if self
            .allows(&namespace.read, caller, roles, &found.vars)
            .await?
        {
            Ok(())
        } else {
            Err(ChatError::Forbidden(format!(
                "namespace {:?} lets {} read {scope}",
                namespace.config.name,
                describe(&namespace.read)
            )))
        }
    }

    /// Since when `user`'s present read access to the topic `scope` holds, where its
    /// namespace's `read` rests on a workspace role (`role:admin` in workspace
    /// `{workspace_id}`): since they were given their present role there, or joined
    /// (the access rule: nothing logged before is replayed). `None`: not bounded — any
    /// other rule, a topic in no namespace, or not a member (a credential's role reads
    /// it then: credentials' roles carry no time).
    pub(crate) async fn topic_access_since(
        &self,
        user: crate::model::UserId,
        roles: &[String],
        scope: &Scope,
    ) -> Result<Option<crate::model::Timestamp>> {
        let (workspace, by_credential) = {
            let namespaces = self.namespaces();
            let Some(found) = namespaces.find(scope) else {
                return Ok(None);
            };
            match &found.namespace.read {
                Access::Role(
                    rule @ RoleRule {
                        workspace: Some(_), ..
                    },
                ) => (
                    found.vars.get("workspace_id").and_then(|v| canonical_id(v)),
                    roles.iter().any(|r| **r == *rule.name),
                ),
                _ => (None, false),
            }
        };
        let Some(ws) = workspace else {
            return Ok(None);
        };
        match self.store.role_since(WorkspaceId(ws), user).await? {
            Some(since) => Ok(Some(since)),
            // No member: read by the credential's role, or as the server's
            // administrator; anyone else's access ended since it was authorized.
            None if by_credential => Ok(None),
            None => self.read_as_administrator(user).await.map(|()| None),
        }
    }

    /// Whether `user`, who is no member of the workspace, reads it as the server's
    /// administrator; otherwise `forbidden`: the access an authorization found a moment
    /// ago has ended (a removal committed in between).
    pub(crate) async fn read_as_administrator(&self, user: crate::model::UserId) -> Result<()> {
        match self.store.user(user).await? {
            Some(u) if u.is_admin => Ok(()),
            _ => Err(ChatError::Forbidden(
                "no longer a member of the workspace".into(),
            )),
        }
    }

    /// The configured proxy, for a namespace whose access is `proxy` (the start and a
    /// reload refuse such a namespace without one: this is only a safeguard).
    fn proxy(&self, which: &str) -> Result<&Arc<dyn AppProxy>> {
        self.app_proxy
            .as_ref()
            .ok_or_else(|| ChatError::Unavailable(format!("no [proxy.{which}] is configured")))
    }

    /// A server publish (`POST /api/v1/publish`) to `scope`: refused when the scope is a
    /// topic outside every namespace or `data` breaks its namespace's schema. Answers
    /// whether the event is to be kept for replay (`false`: published ephemeral).
    pub fn check_server_publish(&self, scope: &Scope, data: &Value) -> Result<bool> {
        let namespaces = self.namespaces();
        if namespaces.is_empty() || scope.kind() != "topic" {
            return Ok(true);
        }
        let found = namespaces
            .find(scope)
            .ok_or_else(|| outside_namespaces(scope))?;
        found
            .namespace
            .validate(data)
            .map_err(ChatError::BadRequest)?;
        Ok(found.namespace.history)
    }

    /// A client's `publish` (`None`: an anonymous connection): where the topic's
    /// namespace lets the caller publish, with `data` valid for its schema. Answers the
    /// event's offset (`None` in a namespace that keeps no history).
    pub async fn publish_from_client(
        &self,
        caller: Option<&User>,
        roles: &[String],
        op: chorus_proto::PublishOp,
    ) -> Result<Option<u64>> {
        let scope = Scope::parse(&op.scope).map_err(|e| ChatError::BadRequest(e.to_string()))?;
        check_publish_type(&op.kind)?;
        if scope.kind() != "topic" {
            return Err(ChatError::Forbidden(
                "clients publish to topic: scopes only".into(),
            ));
        }
        let namespaces = self.namespaces();
        let found = namespaces
            .find(&scope)
            .ok_or_else(|| outside_namespaces(&scope))?;
        let namespace = found.namespace;
        let mut data = op.data;
        if namespace.publish == Access::Proxy {
            let answer = self
                .proxy("publish")?
                .publish(PublishRequest {
                    user: caller.map(proxy_user),
                    roles: roles.to_vec(),
                    scope: scope.to_string(),
                    namespace: namespace.config.name.clone(),
                    kind: op.kind.clone(),
                    data: data.clone(),
                })
                .await?;
            if !answer.allow {
                return Err(refused_by_application(answer.reason));
            }
            // The application's payload replaces the client's; the schema judges it.
            if let Some(transformed) = answer.data {
                data = transformed;
            }
        } else if !self
            .allows(&namespace.publish, caller, roles, &found.vars)
            .await?
        {
            return Err(ChatError::Forbidden(format!(
                "namespace {:?} lets {} publish to {scope}",
                namespace.config.name,
                describe(&namespace.publish)
            )));
        }
        namespace.validate(&data).map_err(ChatError::BadRequest)?;
        let mut event = Publish::new(scope, op.kind, &data);
        if !namespace.history {
            event = event.ephemeral();
        }
        self.engine
            .publish(event)
            .await
            .map_err(|e| ChatError::Unavailable(e.to_string()))
    }

    async fn allows(
        &self,
        access: &Access,
        caller: Option<&User>,
        roles: &[String],
        vars: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let Some(caller) = caller else {
            return Ok(*access == Access::Public);
        };
        Ok(match access {
            Access::Public | Access::Authenticated => true,
            // Asked by the callers, which know what to ask.
            Access::Server | Access::Proxy => false,
            Access::User => vars
                .get("user_id")
                .is_some_and(|id| *id == caller.id.0.to_string()),
            Access::Role(rule) => {
                // The credential's roles first: exact names, no ranks, no workspace.
                if roles.iter().any(|r| **r == *rule.name) {
                    return Ok(true);
                }
                let Some(least) = rule.workspace else {
                    return Ok(false);
                };
                // `ws.07.alerts` is a topic of its own, not workspace 7's.
                let Some(ws) = vars.get("workspace_id").and_then(|v| canonical_id(v)) else {
                    return Ok(false);
                };
                match self.role_in(caller, WorkspaceId(ws)).await {
                    Ok(role) => rank(role) >= rank(least),
                    Err(ChatError::NotFound(_)) => false,
                    Err(err) => return Err(err),
                }
            }
        })
    }
}

/// Who a proxy request is about.
fn proxy_user(user: &User) -> ProxyUser {
    ProxyUser {
        id: user.id.0,
        name: user.name.clone(),
    }
}

/// The application said no: `forbidden`, with its reason when it gave one.
fn refused_by_application(reason: Option<String>) -> ChatError {
    let reason = reason.filter(|r| !r.trim().is_empty());
    ChatError::Forbidden(match reason {
        Some(reason) => format!("refused by the application: {reason}"),
        None => "refused by the application".to_owned(),
    })
}

/// A published event's type (a client's `publish`, `POST /api/v1/publish`): 1 to 64
/// bytes, and none of the server's own ([`chorus_api::events::Event::is_servers`]).
pub fn check_publish_type(kind: &str) -> Result<()> {
    if kind.is_empty() || kind.len() > MAX_TYPE_BYTES {
        return Err(ChatError::BadRequest("type must be 1 to 64 bytes".into()));
    }
    check_no_nul("type", kind)?;
    if chorus_api::events::Event::is_servers(kind) {
        return Err(ChatError::BadRequest(format!(
            "type {kind:?} is the server's: types of the families {} are published by \
             Chorus only",
            chorus_api::events::SERVER_TYPE_FAMILIES.join(", ")
        )));
    }
    Ok(())
}

fn outside_namespaces(scope: &Scope) -> ChatError {
    ChatError::NotFound(format!("{scope} is in no declared namespace"))
}

fn describe(access: &Access) -> String {
    match access {
        Access::Public => "anyone".into(),
        Access::Authenticated => "signed-in users only".into(),
        Access::Role(RoleRule {
            name,
            workspace: Some(role),
        }) => format!("workspace {role}s (or higher) and credentials with role {name:?} only"),
        Access::Role(RoleRule {
            name,
            workspace: None,
        }) => format!("credentials with role {name:?} only"),
        Access::User => "the user it names only".into(),
        Access::Proxy => "whom the application allows only".into(),
        Access::Server => "the server only".into(),
    }
}
