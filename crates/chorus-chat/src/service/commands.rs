//! Slash commands: a message whose text starts with `/name` is run, not posted. The
//! built-ins call the same methods as their API routes (so the same permission rules);
//! a registered command is delivered as `command.invoked` to its agent or webhook. Only
//! the author hears the answer: `command.result`, ephemeral, on their own scope. This
//! module holds no permission rule of the built-ins' own.

pub use chorus_api::events::{CommandInvoked, CommandResult};
pub use chorus_api::requests::CreateCommand;
use chorus_proto::ErrorCode;
use chorus_realtime::{Mark, Marks, Publish};

use super::Chat;
use super::agents::{event_webhooks, webhook_config};
use super::channels::UpdateChannel;
use super::events::{channel_scope, user_scope};
use super::messages::{Posted, SendMessage, check_idempotency_key};
use crate::error::{ChatError, Result, bad, forbidden, not_found};
use crate::model::*;
use crate::store::{AgentMember, IdempotentAnswer, Invocation, Invoked, NewCommand, Outbox};

/// The built-in commands with their usage, as clients offer them.
pub const BUILT_INS: [(&str, &str); 5] = [
    ("topic", "<text>: set the channel's topic"),
    ("invite", "@name: add a member to the channel"),
    ("leave", "leave the channel"),
    ("me", "<action>: post an action (\"alice waves\")"),
    ("policy", "<name>: set the channel's agent delivery policy"),
];

/// How long a registered command's `Idempotency-Key` is remembered: a retry within it
/// is answered as the first invocation was; one after it (once
/// [`Chat::forget_command_keys`] has run) runs anew. A day, the usual window for such
/// keys: a client retries an ambiguous failure within minutes, and a row per keyed
/// invocation is not kept for good (a message's key costs nothing: it is kept on the
/// message).
pub const COMMAND_KEYS_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

const MAX_NAME: usize = 32;
const MAX_DESCRIPTION: usize = 200;

/// What a send did: posted a message, or ran a command.
#[derive(Debug)]
pub enum Sent {
    Message(Posted),
    /// `replayed`: an earlier send with the same idempotency key ran it; this one
    /// did nothing.
    Command {
        result: CommandResult,
        replayed: bool,
    },
}

/// Whether `name` may name a command: `[a-z][a-z0-9_-]{0,31}`.
pub fn valid_command_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && name.len() <= MAX_NAME
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// What a message's text asks for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed<'a> {
    /// Post this text (a plain message, or `//…` with one slash taken off).
    Post(Option<String>),
    /// Run `/name args`.
    Command { name: &'a str, args: &'a str },
}

/// `/name args` (a valid name, then whitespace or the end) is a command; `//text`
/// posts `/text`; anything else (`/tmp/x`, `/ hi`, `/Topic`) is a plain message.
fn parse(text: &str) -> Parsed<'_> {
    if let Some(rest) = text.strip_prefix("//") {
        return Parsed::Post(Some(format!("/{rest}")));
    }
    let Some(rest) = text.strip_prefix('/') else {
        return Parsed::Post(None);
    };
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (name, args) = rest.split_at(end);
    if valid_command_name(name) {
        Parsed::Command {
            name,
            args: args.trim(),
        }
    } else {
        Parsed::Post(None)
    }
}

/// The wire code of a refusal (the HTTP edge maps the same way).
fn code_of(err: &ChatError) -> ErrorCode {
    match err {
        ChatError::BadRequest(_) => ErrorCode::BadRequest,
        ChatError::Unauthorized(_) => ErrorCode::Unauthorized,
        ChatError::Forbidden(_) => ErrorCode::Forbidden,
        ChatError::NotFound(_) => ErrorCode::NotFound,
        ChatError::Conflict(_) => ErrorCode::Conflict,
        ChatError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
        ChatError::Unavailable(_) => ErrorCode::Unavailable,
        ChatError::Gone(_) => ErrorCode::Gone,
        ChatError::UnknownCommand(_) => ErrorCode::UnknownCommand,
        ChatError::Internal(_) => ErrorCode::Internal,
    }
}

/// What a command did, for its author.
struct Done {
    /// The answer's text.
    text: String,
    /// The message it posted (`/me`).
    message: Option<Message>,
    /// An earlier send with the same idempotency key did it.
    replayed: bool,
}

impl Done {
    fn said(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            message: None,
            replayed: false,
        }
    }
}

/// A command retried with its idempotency key, first sent in `first` and answered
/// `answer`: the same answer in the same channel; `Conflict` in another.
fn replayed(ch: ChannelId, first: ChannelId, answer: String) -> Result<Done> {
    if first != ch {
        return Err(ChatError::Conflict(
            "this Idempotency-Key was used for a command in another channel".into(),
        ));
    }
    Ok(Done {
        replayed: true,
        ..Done::said(answer)
    })
}

impl Chat {
    /// Sends a message, or runs it when it is a slash command (see [`parse`]).
    pub async fn send(
        &self,
        caller: &User,
        channel_id: ChannelId,
        mut req: SendMessage,
        idempotency_key: Option<String>,
    ) -> Result<Sent> {
        check_idempotency_key(idempotency_key.as_deref())?;
        if !req.streaming {
            match parse(&req.text) {
                Parsed::Command { name, args } => {
                    let (name, args) = (name.to_owned(), args.to_owned());
                    let (result, replayed) = self
                        .run_command(caller, channel_id, &name, &args, &req, idempotency_key)
                        .await?;
                    return Ok(Sent::Command { result, replayed });
                }
                Parsed::Post(Some(text)) => req.text = text,
                Parsed::Post(None) => {}
            }
        }
        let posted = self
            .post_message(caller, channel_id, req, idempotency_key, MessageKind::Text)
            .await?;
        Ok(Sent::Message(posted))
    }

    /// Runs `/name args` typed by `caller` in `channel_id`; tells the caller's
    /// connections the outcome (`command.result`, ephemeral) and returns it, or the
    /// refusal. A replay (an idempotency key used before) tells nobody again: it
    /// returns the first outcome, and `true`.
    async fn run_command(
        &self,
        caller: &User,
        channel_id: ChannelId,
        name: &str,
        args: &str,
        req: &SendMessage,
        idempotency_key: Option<String>,
    ) -> Result<(CommandResult, bool)> {
        let outcome = self
            .command_outcome(caller, channel_id, name, args, req, idempotency_key)
            .await;
        let result = match &outcome {
            Ok(done) => CommandResult {
                channel_id,
                command: name.to_owned(),
                ok: true,
                text: done.text.clone(),
                code: None,
                message: done.message.clone(),
            },
            Err(err) => CommandResult {
                channel_id,
                command: name.to_owned(),
                ok: false,
                text: match err {
                    ChatError::Internal(_) => "internal error".to_owned(),
                    other => other.to_string(),
                },
                code: Some(code_of(err).as_str().to_owned()),
                message: None,
            },
        };
        let replayed = outcome.as_ref().is_ok_and(|done| done.replayed);
        if !replayed {
            let answer = Publish::new(user_scope(caller.id), "command.result", &result).ephemeral();
            self.emit(answer).await;
        }
        outcome.map(|_| (result, replayed))
    }

    async fn command_outcome(
        &self,
        caller: &User,
        ch: ChannelId,
        name: &str,
        args: &str,
        req: &SendMessage,
        idempotency_key: Option<String>,
    ) -> Result<Done> {
        // A command's text goes on in its event (`args`) and its webhook delivery: the
        // same limits as a message's, before anything else.
        self.check_text(&req.text)?;
        match name {
            "topic" => {
                let update = UpdateChannel {
                    topic: Some(args.to_owned()),
                    ..UpdateChannel::default()
                };
                self.update_channel(caller, ch, update).await?;
                Ok(Done::said(if args.is_empty() {
                    "topic cleared".to_owned()
                } else {
                    format!("topic set to \"{args}\"")
                }))
            }
            "invite" => {
                let who = args.strip_prefix('@').unwrap_or(args);
                if who.is_empty() || who.contains(char::is_whitespace) {
                    return Err(bad("usage: /invite @name"));
                }
                // The name is looked up among the workspace's members only, which the
                // caller may list: one outside it is answered as one nobody has (the
                // route's answer to a `user_id` that is not a member), naming no id.
                let channel = self.readable_channel(caller, ch).await?;
                let member = match self.store.user_by_name(who).await? {
                    Some(user) => self
                        .store
                        .member_role(channel.workspace_id, user.id)
                        .await?
                        .map(|_| user.id),
                    None => None,
                };
                let user = member
                    .ok_or_else(|| bad(format!("@{who} is not a member of this workspace")))?;
                self.add_channel_member(caller, ch, user).await?;
                Ok(Done::said(format!("@{who} added to the channel")))
            }
            "leave" => {
                self.leave_channel(caller, ch).await?;
                Ok(Done::said("you left the channel"))
            }
            "me" => {
                if args.is_empty() {
                    return Err(bad("usage: /me <action>, e.g. /me waves"));
                }
                let action = SendMessage {
                    text: args.to_owned(),
                    thread_id: req.thread_id,
                    streaming: false,
                };
                let posted = self
                    .post_message(caller, ch, action, idempotency_key, MessageKind::Action)
                    .await?;
                Ok(Done {
                    text: "action posted".to_owned(),
                    replayed: !posted.created,
                    message: Some(posted.message),
                })
            }
            "policy" => {
                let policy: Policy = args.parse().map_err(|e: String| bad(e))?;
                let update = UpdateChannel {
                    policy: Some(policy),
                    ..UpdateChannel::default()
                };
                self.update_channel(caller, ch, update).await?;
                Ok(Done::said(format!("policy set to {policy}")))
            }
            _ => {
                let key = idempotency_key.as_deref();
                self.invoke(caller, ch, (name, args), req.thread_id, key)
                    .await
            }
        }
    }

    /// Delivers a registered command to its target: `command.invoked`, waking the
    /// agent on its scope (by its webhook when it has one and no connection), or
    /// POSTed to the command's webhook. Only a member of the channel may invoke, as
    /// only a member may post there. Whom the command acts for — its agent, or a
    /// `webhook_url` command's registrant — must still be active and a member of the
    /// workspace (`NotFound` otherwise: nothing is delivered), which the store asks in
    /// the delivery's transaction, ordered with removals
    /// ([`CommandStore::invoke_command_logged`](crate::store::CommandStore::invoke_command_logged)).
    ///
    /// With an idempotency key, a retry is answered as the first invocation was and
    /// delivers nothing (`Conflict` when the key was used in another channel).
    async fn invoke(
        &self,
        caller: &User,
        ch: ChannelId,
        (name, args): (&str, &str),
        thread_id: Option<MessageId>,
        key: Option<&str>,
    ) -> Result<Done> {
        let channel = self.readable_channel(caller, ch).await?;
        if !self.store.is_channel_member(ch, caller.id).await? {
            return Err(forbidden("join the channel to post in it"));
        }
        if let Some(root) = thread_id {
            self.check_thread_root(ch, root).await?;
        }
        // A retry is answered first, whatever became of the command since, and counts
        // for nothing (the loop guard included). Two retries at once both pass here:
        // the store then delivers one (`Invoked::Replayed`).
        if let Some(key) = key
            && let Some((channel_id, answer)) =
                self.store.command_invocation(caller.id, key).await?
        {
            return replayed(ch, channel_id, answer);
        }
        let Some(command) = self.store.command_named(channel.workspace_id, name).await? else {
            return Err(ChatError::UnknownCommand(format!(
                "/{name} is not a command here (built-ins: /topic, /invite, /leave, /me, /policy; \
                 GET /api/v1/workspaces/{}/commands lists the others); start with // to post a \
                 message beginning with /",
                channel.workspace_id
            )));
        };
        let nonce: u64 = rand::random();
        let event = CommandInvoked {
            id: format!("command.invoked:{}:{nonce:016x}", command.id),
            command_id: command.id,
            command: command.name.clone(),
            args: args.to_owned(),
            workspace_id: channel.workspace_id,
            channel_id: ch,
            thread_id,
            user_id: caller.id,
        };
        // A command is a message to whom it acts for: it counts for the channel's loop
        // guard as one (an agent's, or a person's, which releases the channel), and
        // while the guard holds the channel it wakes nobody — its agent observes it
        // (`wake: false`, no webhook), a `webhook_url` command is not sent.
        let (quiet, guard_change) = self.count_for_loop_guard(&channel, caller.kind);
        let delivered = self
            .deliver_command(caller, &channel, &command, (event, key), quiet)
            .await;
        // Recorded whatever became of the delivery: this node's count changed.
        if let Some(change) = guard_change {
            self.loop_guard_changed(&channel, change).await;
        }
        delivered
    }

    /// Delivers a registered command's invocation (see [`Chat::invoke`]); `quiet`: the
    /// channel's loop guard holds its agents.
    async fn deliver_command(
        &self,
        caller: &User,
        channel: &Channel,
        command: &Command,
        (event, key): (CommandInvoked, Option<&str>),
        quiet: bool,
    ) -> Result<Done> {
        let (ch, name) = (channel.id, command.name.as_str());
        let due = self.now();
        let scope = channel_scope(ch);
        let (invocation, answer) = if quiet && command.webhook_url.is_some() {
            (
                Invocation::default(),
                format!(
                    "/{name} not sent: the channel's loop guard holds its agents until a person writes"
                ),
            )
        } else if let Some(url) = &command.webhook_url {
            let deliveries = event_webhooks(
                "command.invoked",
                &event.id,
                &scope,
                &event,
                &[(command.created_by, url.clone())],
                due,
            );
            let invocation = Invocation {
                command_webhooks: deliveries,
                ..Invocation::default()
            };
            (invocation, format!("/{name} sent to its webhook"))
        } else {
            let target = match command.target_user_id {
                Some(id) => self.store.user(id).await?,
                None => None,
            };
            let target = target.ok_or_else(|| not_found(format!("/{name} has no agent")))?;
            let mark = if quiet { Mark::Observe } else { Mark::Wake };
            let marks = Marks {
                default: Mark::Observe,
                users: [(target.id.0, mark)].into_iter().collect(),
            };
            let publish =
                Publish::new(user_scope(target.id), "command.invoked", &event).with_marks(marks);
            let agent = AgentMember {
                id: target.id,
                webhook_url: target.webhook_url.clone(),
            };
            let targets = if quiet {
                Vec::new()
            } else {
                self.unconnected_webhooks(std::iter::once(&agent)).await
            };
            let invocation = Invocation {
                outbox: Outbox {
                    events: vec![publish],
                    webhooks: event_webhooks(
                        "command.invoked",
                        &event.id,
                        &scope,
                        &event,
                        &targets,
                        due,
                    ),
                    then: None,
                },
                command_webhooks: Vec::new(),
            };
            (invocation, format!("/{name} sent to @{}", target.name))
        };
        let queues_webhooks =
            !invocation.command_webhooks.is_empty() || !invocation.outbox.webhooks.is_empty();
        // Remembered only with a delivery: a command the loop guard kept from its
        // webhook may be retried once the guard lets go.
        let delivers = !(quiet && command.webhook_url.is_some());
        let key = key.filter(|_| delivers).map(|key| IdempotentAnswer {
            key,
            answer: &answer,
        });
        let logged = match self
            .store
            .invoke_command_logged(command.id, (ch, caller.id), invocation, key)
            .await?
        {
            Invoked::Logged(logged) => logged,
            Invoked::Replayed { channel_id, answer } => {
                return replayed(ch, channel_id, answer);
            }
            Invoked::Refused => {
                // The store's rule refused it; only the answer's wording is chosen here.
                // The invoker left the channel meanwhile: as a send would be refused.
                if !self.store.is_channel_member(ch, caller.id).await? {
                    return Err(forbidden("join the channel to post in it"));
                }
                let (who, acting) = match command.target_user_id {
                    Some(agent) => ("agent", agent),
                    None => ("registrant", command.created_by),
                };
                let deactivated = self
                    .store
                    .user(acting)
                    .await?
                    .is_none_or(|u| u.deactivated_at.is_some());
                return Err(not_found(if deactivated {
                    format!("/{name}'s {who} is no longer active")
                } else {
                    format!("/{name}'s {who} is no longer a member of the workspace")
                }));
            }
        };
        self.emit_logged(logged).await;
        if queues_webhooks {
            self.webhooks.notify_one();
        }
        Ok(Done::said(answer))
    }

    // ---- Registration -------------------------------------------------------------

    /// Registers a command in `ws`: workspace owners and admins, for any agent of the
    /// workspace or a webhook; an agent, for itself.
    pub async fn create_command(
        &self,
        caller: &User,
        ws: WorkspaceId,
        req: CreateCommand,
    ) -> Result<Command> {
        let role = self.role_in(caller, ws).await?;
        let manages = matches!(role, Role::Owner | Role::Admin);
        let for_itself = caller.kind == UserKind::Agent && req.target_user_id == Some(caller.id);
        if !manages && !for_itself {
            return Err(forbidden(
                "commands are registered by workspace owners and admins (an agent may register its own)",
            ));
        }
        if !valid_command_name(&req.name) {
            return Err(bad("command name must match [a-z][a-z0-9_-]{0,31}"));
        }
        if BUILT_INS.iter().any(|(n, _)| *n == req.name) {
            return Err(bad(format!("/{} is a built-in command", req.name)));
        }
        if req.description.len() > MAX_DESCRIPTION {
            return Err(bad("description is at most 200 bytes"));
        }
        check_text_field("description", &req.description)?;
        let (webhook_url, webhook_secret) = match (req.target_user_id, req.webhook_url) {
            (Some(target), None) => {
                if req.webhook_secret.is_some() {
                    return Err(bad("webhook_secret goes with webhook_url"));
                }
                let user = self
                    .store
                    .user(target)
                    .await?
                    .filter(|u| u.kind == UserKind::Agent);
                let member = self.store.member_role(ws, target).await?.is_some();
                if user.is_none() || !member {
                    return Err(bad("target_user_id must be an agent of the workspace"));
                }
                (None, None)
            }
            (None, Some(url)) => {
                let (url, secret) = webhook_config(&url, req.webhook_secret)?;
                (Some(url), Some(secret))
            }
            _ => {
                return Err(bad("give exactly one of target_user_id and webhook_url"));
            }
        };
        let created = self
            .store
            .create_command(NewCommand {
                workspace_id: ws,
                name: req.name.clone(),
                description: req.description,
                target_user_id: req.target_user_id,
                webhook_url,
                webhook_secret: webhook_secret.clone(),
                created_by: caller.id,
            })
            .await?
            .ok_or_else(|| {
                ChatError::Conflict(format!("the workspace has a /{} command", req.name))
            })?;
        Ok(Command {
            webhook_secret,
            ..created
        })
    }

    /// The commands registered in `ws` that can be invoked now (any member): not one
    /// whose agent, or `webhook_url` command's registrant, is deactivated or no longer
    /// a member of the workspace (the store's one rule, which invoking asks too). A
    /// command's `webhook_url` (which may carry a secret, as a user's may) only to the
    /// workspace's managers and its registrant.
    pub async fn list_commands(&self, caller: &User, ws: WorkspaceId) -> Result<Vec<Command>> {
        let role = self.role_in(caller, ws).await?;
        let manager = matches!(role, Role::Owner | Role::Admin);
        let mut commands = self.store.commands(ws).await?;
        for command in &mut commands {
            if !manager && command.created_by != caller.id {
                command.webhook_url = None;
            }
        }
        Ok(commands)
    }

    /// Removes a command: workspace owners and admins, or whoever registered it.
    pub async fn delete_command(
        &self,
        caller: &User,
        ws: WorkspaceId,
        id: CommandId,
    ) -> Result<()> {
        let role = self.role_in(caller, ws).await?;
        let command = self
            .store
            .command(id)
            .await?
            .filter(|c| c.workspace_id == ws)
            .ok_or_else(|| not_found("no such command"))?;
        if !matches!(role, Role::Owner | Role::Admin) && command.created_by != caller.id {
            return Err(forbidden(
                "only workspace owners and admins, or its registrant, remove a command",
            ));
        }
        self.store.delete_command(id).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Parsed, parse, valid_command_name};

    #[test]
    fn commands_and_plain_text() {
        assert_eq!(
            parse("/topic  hello world "),
            Parsed::Command {
                name: "topic",
                args: "hello world"
            }
        );
        assert_eq!(
            parse("/leave"),
            Parsed::Command {
                name: "leave",
                args: ""
            }
        );
        assert_eq!(parse("//topic x"), Parsed::Post(Some("/topic x".into())));
        for plain in ["/tmp/x is full", "/ hi", "/Topic x", "hello /me", "", "/"] {
            assert_eq!(parse(plain), Parsed::Post(None), "{plain:?}");
        }
        assert!(valid_command_name("deploy-prod_2"));
        assert!(!valid_command_name("2fa"));
        assert!(!valid_command_name(&"a".repeat(33)));
    }
}
