//! The chat's answers to the realtime engine: which scopes a connection starts with,
//! who may subscribe to what, what `typing` does, and the connection counts that drive
//! presence (see `presence.rs`).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use async_trait::async_trait;
use chorus_api::events::Typing;
use chorus_realtime::{ANONYMOUS, HookError, Mark, Marks, Publish, Scope, SessionHooks, UserKey};
use governor::Quota;

use super::Chat;
use super::events::{channel_scope, workspace_scope};
use crate::error::ChatError;
use crate::model::{ChannelId, MessageId, User, UserId};
use crate::rate::{KeyedLimiter, keyed};

/// [`SessionHooks`] backed by the chat domain.
///
/// A connection opened without credentials ([`ANONYMOUS`], where a public namespace
/// allows it) starts with no scopes, may read public namespaces only, and counts for
/// nobody's presence.
pub struct ChatHooks {
    chat: Arc<Chat>,
    typing: KeyedLimiter<UserKey>,
    publishes: KeyedLimiter<UserKey>,
}

impl ChatHooks {
    pub fn new(chat: Arc<Chat>) -> Self {
        let per_minute = NonZeroU32::new(chat.config.typing_per_minute).unwrap_or(NonZeroU32::MIN);
        let per_sec =
            NonZeroU32::new(chat.config.client_publish_per_sec).unwrap_or(NonZeroU32::MIN);
        Self {
            typing: keyed(Quota::per_minute(per_minute), chat.config.clock),
            publishes: keyed(Quota::per_second(per_sec), chat.config.clock),
            chat,
        }
    }

    /// The connection's user, read afresh: a deactivated one is refused, as their
    /// credentials are (their sockets close when the deactivation is delivered; until
    /// then — a broker outage, an operation already under way — nothing they ask of the
    /// socket is granted).
    async fn user(&self, id: UserKey) -> Result<User, HookError> {
        let user = self
            .chat
            .store
            .user(UserId(id))
            .await
            .map_err(to_hook)?
            .ok_or_else(|| HookError::Forbidden("unknown user".into()))?;
        if user.deactivated_at.is_some() {
            return Err(HookError::Forbidden("the user is deactivated".into()));
        }
        Ok(user)
    }
}

fn to_hook(err: ChatError) -> HookError {
    match err {
        ChatError::Forbidden(m) | ChatError::Unauthorized(m) => HookError::Forbidden(m),
        ChatError::NotFound(m) | ChatError::Gone(m) => HookError::NotFound(m),
        ChatError::BadRequest(m)
        | ChatError::PayloadTooLarge(m)
        | ChatError::Conflict(m)
        | ChatError::UnknownCommand(m) => HookError::BadRequest(m),
        // E.g. the application's subscribe proxy down or slow: the client may retry.
        ChatError::Unavailable(m) => HookError::Coded(chorus_proto::ErrorCode::Unavailable, m),
        ChatError::Internal(e) => {
            tracing::error!(cause = %e, "realtime hook failed");
            HookError::Internal("internal error".into())
        }
    }
}

/// A stream op's refusal, with its precise wire code.
fn to_stream_hook(err: ChatError) -> HookError {
    use chorus_proto::ErrorCode;
    match err {
        ChatError::Conflict(m) => HookError::Coded(ErrorCode::Conflict, m),
        ChatError::PayloadTooLarge(m) => HookError::Coded(ErrorCode::PayloadTooLarge, m),
        ChatError::Unavailable(m) => HookError::Coded(ErrorCode::Unavailable, m),
        other => to_hook(other),
    }
}

#[async_trait]
impl SessionHooks for ChatHooks {
    async fn initial_scopes(&self, user: UserKey) -> Result<Vec<Scope>, HookError> {
        if user == ANONYMOUS {
            // Admitted at the upgrade while some namespace was public; a reload that
            // left none public since then closed the others before this one registered.
            if !self.chat.namespaces().any_public() {
                return Err(HookError::Coded(
                    chorus_proto::ErrorCode::Unauthorized,
                    "no namespace is public any more: connect with credentials".into(),
                ));
            }
            return Ok(Vec::new());
        }
        // Coalesced with the other connections' lookups (a connect storm).
        let (workspaces, channels) = self
            .chat
            .lookups
            .memberships
            .get(UserId(user))
            .await
            .map_err(to_hook)?
            .unwrap_or_default();
        Ok(workspaces
            .into_iter()
            .map(workspace_scope)
            .chain(channels.into_iter().map(channel_scope))
            .collect())
    }

    async fn credential_stands(&self, user: UserKey, credential: i64) -> Result<bool, HookError> {
        self.chat
            .credential_stands(UserId(user), credential)
            .await
            .map_err(to_hook)
    }

    async fn authorize_subscribe(
        &self,
        user: UserKey,
        roles: &[String],
        scope: &Scope,
    ) -> Result<(), HookError> {
        if user == ANONYMOUS {
            if scope.kind() != "topic" {
                return Err(HookError::Forbidden(
                    "anonymous connections may read public namespaces only".into(),
                ));
            }
            return self
                .chat
                .authorize_topic(None, &[], scope)
                .await
                .map_err(to_hook);
        }
        let caller = self.user(user).await?;
        self.chat
            .authorize_scope(&caller, roles, scope)
            .await
            .map_err(to_hook)
    }

    async fn access_since(
        &self,
        user: UserKey,
        roles: &[String],
        scope: &Scope,
    ) -> Result<Option<std::time::SystemTime>, HookError> {
        if user == ANONYMOUS {
            return Ok(None);
        }
        self.chat
            .access_since(UserId(user), roles, scope)
            .await
            .map_err(to_hook)
    }

    async fn typing(
        &self,
        user: UserKey,
        channel_id: i64,
        thread_id: Option<i64>,
    ) -> Result<(), HookError> {
        if user == ANONYMOUS {
            return Err(HookError::Forbidden(
                "anonymous connections cannot type".into(),
            ));
        }
        if self.typing.check_key(&user).is_err() {
            return Err(HookError::RateLimited(format!(
                "at most {} typing signals a minute",
                self.chat.config.typing_per_minute
            )));
        }
        // A deactivated user keeps their memberships: refused here as elsewhere.
        self.user(user).await?;
        let channel = ChannelId(channel_id);
        let is_member = self
            .chat
            .store
            .is_channel_member(channel, UserId(user))
            .await
            .map_err(to_hook)?;
        if !is_member {
            return Err(HookError::Forbidden("not a member of this channel".into()));
        }
        if let Some(root) = thread_id {
            self.chat
                .check_thread_root(channel, MessageId(root))
                .await
                .map_err(to_hook)?;
        }
        let data = Typing {
            channel_id: channel,
            thread_id: thread_id.map(MessageId),
            user_id: UserId(user),
            expires_in_ms: self.chat.config.typing_expires.as_millis() as u64,
        };
        // The typist's own connections never see their typing.
        let marks = Marks {
            default: Mark::Plain,
            users: BTreeMap::from([(user, Mark::Skip)]),
        };
        self.chat
            .emit(
                Publish::new(channel_scope(channel), "typing", &data)
                    .ephemeral()
                    .with_marks(marks),
            )
            .await;
        Ok(())
    }

    // Presence counts connections itself rather than trusting `first` / `last`: the
    // hooks of concurrent connections may run in another order than the registry
    // counted them, and the tracker must see every open and close exactly once.
    async fn stream(&self, user: UserKey, op: chorus_proto::StreamOp) -> Result<(), HookError> {
        use chorus_proto::StreamOp;
        if user == ANONYMOUS {
            return Err(HookError::Forbidden(
                "anonymous connections have no messages".into(),
            ));
        }
        match op {
            StreamOp::Append { message_id, text } => self
                .chat
                .append_by(UserId(user), MessageId(message_id), &text)
                .await
                .map(drop),
            StreamOp::Complete { message_id, text } => {
                let caller = self.user(user).await?;
                self.chat
                    .complete_message(&caller, MessageId(message_id), text)
                    .await
                    .map(drop)
            }
            StreamOp::Abort { message_id, reason } => {
                let caller = self.user(user).await?;
                self.chat
                    .abort_message(&caller, MessageId(message_id), reason)
                    .await
                    .map(drop)
            }
        }
        .map_err(to_stream_hook)
    }

    async fn publish(
        &self,
        user: UserKey,
        roles: &[String],
        op: chorus_proto::PublishOp,
    ) -> Result<Option<u64>, HookError> {
        if self.publishes.check_key(&user).is_err() {
            return Err(HookError::RateLimited(format!(
                "at most {} publishes a second",
                self.chat.config.client_publish_per_sec
            )));
        }
        let caller = match user {
            ANONYMOUS => None,
            user => Some(self.user(user).await?),
        };
        self.chat
            .publish_from_client(caller.as_ref(), roles, op)
            .await
            .map_err(to_stream_hook)
    }

    async fn connected(&self, user: UserKey, _first: bool) {
        if user != ANONYMOUS {
            self.chat.presence_opened(UserId(user)).await;
        }
    }

    async fn disconnected(&self, user: UserKey, _last: bool) {
        if user != ANONYMOUS {
            self.chat.presence_closed(UserId(user)).await;
        }
    }
}
