//! Events: what a publisher hands the engine ([`Publish`]) and what the engine fans out
//! ([`Event`]). An event's frame text is built at most once per delivery variant
//! (plain, `wake:true`, `wake:false`) and then shared by reference with every recipient.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::outbox::Outgoing;
use crate::{Scope, UserKey};

/// How one recipient gets an event (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// Delivered without a `wake` field (every event that is not agent-aware).
    Plain,
    /// Delivered with `"wake": true`: the recipient should act.
    Wake,
    /// Delivered with `"wake": false`: record only.
    Observe,
    /// Not delivered to this user on any connection, live or on replay.
    Skip,
}

/// Per-recipient marks of one event: explicit entries, and a default for everyone else.
/// Serializable: a multi-node broker carries them with the event to every node.
///
/// A `BTreeMap`, not a `HashMap`: it is read once per recipient of a fanout and holds a
/// handful of entries (the author, the mentioned), where a few comparisons beat hashing
/// the key with SipHash (3.5 % of the server's CPU in a fanout to 1,000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    pub default: Mark,
    pub users: BTreeMap<UserKey, Mark>,
}

impl Marks {
    pub fn mark_for(&self, user: UserKey) -> Mark {
        self.users.get(&user).copied().unwrap_or(self.default)
    }
}

/// A change of subscriptions applied to every connection that receives the event, in
/// the same step as its delivery: `channel.joined` on `user:7` subscribes all of user
/// 7's connections to `channel:42` before any later event of that channel is fanned out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub subscribe: Vec<Scope>,
    /// With `subscribe`: the joined scopes start after this offset of theirs (the
    /// offset of the join in the scope, from the event log). Everything the scope
    /// published after it is replayed to the joining connection, nothing at or before
    /// it is delivered — wherever this node's reading of the scope stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    pub unsubscribe: Vec<Scope>,
    /// On an event of the scope itself (`member.left` on `channel:42`): this user's
    /// connections stop receiving the scope right after this event, at its place in the
    /// scope's order, so no later event of the scope reaches them on any node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_user: Option<crate::UserKey>,
    /// On an event of the scope itself (`member.joined` on `channel:42`): this user
    /// became a member here. With `drop_user`, it bounds what a replay or a catch-up of
    /// the scope gives them ([`Membership`]): nothing of the time they were out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_user: Option<crate::UserKey>,
    /// The user's access shrank: every other subscription of the receiving connection
    /// is held and authorized again (`SessionHooks::authorize_subscribe`); those no
    /// longer allowed end with `subscription.revoked {scope, reason}`. The text is the
    /// reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<String>,
    /// Limits the re-check to subscriptions of these scope kinds (`["thread"]` after
    /// leaving a channel); empty: every kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recheck_kinds: Vec<String>,
    /// The user's credentials stopped being valid: close the receiving connections with
    /// 3502 — all of them, or those opened with this credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close: Option<CloseSessions>,
}

impl Effect {
    /// `Some(true)`: `user` joins the scope at this event; `Some(false)`: they leave it.
    pub fn membership_of(&self, user: crate::UserKey) -> Option<bool> {
        if self.join_user == Some(user) {
            Some(true)
        } else if self.drop_user == Some(user) {
            Some(false)
        } else {
            None
        }
    }
}

/// A user's membership of a scope, followed through the scope's events in order: they
/// leave at an event that drops them ([`Effect::drop_user`]) and come back at one that
/// admits them ([`Effect::join_user`]). What the scope published while they were out is
/// not theirs — not live, not replayed, not caught up over HTTP — even when they are a
/// member again by the time they ask for it.
#[derive(Debug, Clone, Copy)]
pub struct Membership {
    user: crate::UserKey,
    out: bool,
}

impl Membership {
    /// Where `user` stands before a run of a scope's events (their effects, in order):
    /// out when the first of their joins and leaves in it is a join (one joins only
    /// from outside), else in — the run is read for a user allowed to read it now.
    pub fn before<'a>(
        user: crate::UserKey,
        effects: impl IntoIterator<Item = Option<&'a Effect>>,
    ) -> Self {
        let out = effects
            .into_iter()
            .flatten()
            .find_map(|e| e.membership_of(user))
            .unwrap_or(false);
        Self { user, out }
    }

    /// Steps over the run's next event: `true` when it is the user's to receive (their
    /// own join and leave are).
    pub fn admits(&mut self, effect: Option<&Effect>) -> bool {
        match effect.and_then(|e| e.membership_of(self.user)) {
            Some(true) => {
                self.out = false;
                true
            }
            // Their leave is theirs if they were in.
            Some(false) => !std::mem::replace(&mut self.out, true),
            None => !self.out,
        }
    }

    /// Whether the user is out of the scope after the events stepped over.
    pub fn is_out(&self) -> bool {
        self.out
    }
}

/// See [`Effect::close`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseSessions {
    /// Only connections opened with this credential; `None`: every connection.
    pub credential: Option<i64>,
}

/// An event as a publisher hands it to the broker.
#[derive(Debug, Clone)]
pub struct Publish {
    pub scope: Scope,
    pub kind: String,
    /// The event's `data`, already serialized to JSON text (once, for everyone).
    pub data: String,
    pub marks: Option<Arc<Marks>>,
    pub effect: Option<Arc<Effect>>,
    /// Ephemeral events (typing, presence) get no offset and are never retained.
    pub ephemeral: bool,
    /// Already given its offset by the event log (written in the transaction of the
    /// change it describes): the broker delivers it at that offset, once, however many
    /// times it is published.
    pub offset: Option<u64>,
    /// When the event log recorded it (with `offset`).
    pub logged_at: Option<SystemTime>,
}

impl Publish {
    /// A durable event on `scope`.
    pub fn new(scope: Scope, kind: impl Into<String>, data: &impl Serialize) -> Self {
        Self {
            scope,
            kind: kind.into(),
            data: serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned()),
            marks: None,
            effect: None,
            ephemeral: false,
            offset: None,
            logged_at: None,
        }
    }

    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }

    pub fn with_marks(mut self, marks: Marks) -> Self {
        self.marks = Some(Arc::new(marks));
        self
    }

    pub fn with_effect(mut self, effect: Effect) -> Self {
        self.effect = Some(Arc::new(effect));
        self
    }
}

/// An event with its place in its scope. Shared (`Arc`) between the retention window
/// and every recipient's queue.
#[derive(Debug)]
pub struct Event {
    pub scope: Scope,
    /// `None` for ephemeral events.
    pub offset: Option<u64>,
    pub kind: Arc<str>,
    pub data: Box<str>,
    pub marks: Option<Arc<Marks>>,
    pub effect: Option<Arc<Effect>>,
    pub published_at: SystemTime,
    /// The frame per mark, made on first use, as every recipient's queue holds it: one
    /// pointer a queued frame (see [`crate::outbox`]).
    frames: [OnceLock<Arc<Outgoing>>; 3],
    /// The frames for `permessage-deflate` connections, per slot: the payload
    /// compressed, or the text frame itself when not worth it. Boxed and made on first
    /// use: only a server with compressing clients pays for it, 8 bytes per event
    /// otherwise.
    deflated: OnceLock<Box<[OnceLock<Arc<Outgoing>>; 3]>>,
}

/// An event of `kind` (data `{"text": text}`, with `effect`) of `scope` at `offset`, as
/// a broker hands it to the registry. For tests.
#[cfg(test)]
pub(crate) fn logged_event(
    scope: &Scope,
    offset: u64,
    kind: &str,
    text: &str,
    effect: Option<Effect>,
) -> Arc<Event> {
    let data = serde_json::json!({ "text": text });
    let mut publish = Publish::new(scope.clone(), kind, &data);
    if let Some(effect) = effect {
        publish = publish.with_effect(effect);
    }
    Arc::new(Event::published_at(
        publish,
        Some(offset),
        SystemTime::now(),
    ))
}

impl Event {
    /// The event of `publish` at `offset`, published at `at` (the broker's clock, or the
    /// time a broker's log recorded).
    pub fn published_at(publish: Publish, offset: Option<u64>, at: SystemTime) -> Self {
        Self {
            scope: publish.scope,
            offset,
            kind: Arc::from(publish.kind),
            data: publish.data.into_boxed_str(),
            marks: publish.marks,
            effect: publish.effect,
            published_at: at,
            frames: Default::default(),
            deflated: OnceLock::new(),
        }
    }

    pub fn mark_for(&self, user: UserKey) -> Mark {
        self.marks
            .as_ref()
            .map_or(Mark::Plain, |m| m.mark_for(user))
    }

    /// The frame text for a recipient with this mark; `None` for [`Mark::Skip`].
    #[cfg(test)]
    pub(crate) fn frame(&self, mark: Mark) -> Option<Utf8Bytes> {
        match &*self.outgoing(mark)? {
            Outgoing::Text(text) => Some(text.clone()),
            Outgoing::Deflated(_) | Outgoing::Frames(_) => {
                unreachable!("an event's frames are text")
            }
        }
    }

    /// The frame for a recipient with this mark, as queued: made once and shared by
    /// every recipient; `None` for [`Mark::Skip`].
    pub fn outgoing(&self, mark: Mark) -> Option<Arc<Outgoing>> {
        let (slot, wake) = Self::slot(mark)?;
        Some(self.rendered(slot, wake).clone())
    }

    /// The frame for a recipient with this mark on a `permessage-deflate` connection:
    /// the payload compressed once for all such recipients, or the text frame itself
    /// when it is better sent uncompressed (see [`crate::deflate::compress`]); `None`
    /// for [`Mark::Skip`].
    pub fn frame_deflated(&self, mark: Mark) -> Option<Arc<Outgoing>> {
        let (slot, wake) = Self::slot(mark)?;
        let deflated = self.deflated.get_or_init(Default::default)[slot].get_or_init(|| {
            let text = self.rendered(slot, wake);
            let compressed = text
                .as_text()
                .and_then(|t| crate::deflate::compress(t.as_bytes()));
            match compressed {
                Some(bytes) => Arc::new(Outgoing::Deflated(bytes)),
                None => text.clone(),
            }
        });
        Some(deflated.clone())
    }

    /// The text frame of `slot`, rendered on first use.
    fn rendered(&self, slot: usize, wake: Option<bool>) -> &Arc<Outgoing> {
        self.frames[slot].get_or_init(|| Arc::new(Outgoing::Text(self.render(wake))))
    }

    fn slot(mark: Mark) -> Option<(usize, Option<bool>)> {
        Some(match mark {
            Mark::Skip => return None,
            Mark::Plain => (0, None),
            Mark::Wake => (1, Some(true)),
            Mark::Observe => (2, Some(false)),
        })
    }

    fn render(&self, wake: Option<bool>) -> Utf8Bytes {
        use std::fmt::Write;
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        let mut out = String::with_capacity(self.data.len() + self.scope.as_str().len() + 96);
        out.push_str(r#"{"op":"event","scope":"#);
        out.push_str(&quote(self.scope.as_str()));
        if let Some(offset) = self.offset {
            let _ = write!(out, r#","offset":{offset}"#);
        }
        out.push_str(r#","type":"#);
        out.push_str(&quote(&self.kind));
        if let Some(wake) = wake {
            let _ = write!(out, r#","wake":{wake}"#);
        }
        out.push_str(r#","data":"#);
        out.push_str(&self.data);
        out.push('}');
        Utf8Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_valid_json_and_built_once() {
        let scope = Scope::parse("channel:4").expect("valid");
        let marks = Marks {
            default: Mark::Observe,
            users: BTreeMap::from([(1, Mark::Wake), (2, Mark::Skip)]),
        };
        let event = Event::published_at(
            Publish::new(
                scope,
                "message.created",
                &serde_json::json!({"text":"hi \"x\""}),
            )
            .with_marks(marks),
            Some(9),
            SystemTime::UNIX_EPOCH,
        );
        let wake = event.frame(event.mark_for(1)).expect("delivered");
        let v: serde_json::Value = serde_json::from_str(wake.as_str()).expect("json");
        assert_eq!(v["wake"], true);
        assert_eq!(v["offset"], 9);
        assert_eq!(v["data"]["text"], "hi \"x\"");
        assert!(event.frame(event.mark_for(2)).is_none());
        let observe = event.frame(event.mark_for(3)).expect("delivered");
        assert!(observe.as_str().contains(r#""wake":false"#));
        // Same allocation handed out twice.
        let again = event.frame(Mark::Wake).expect("delivered");
        assert_eq!(wake.as_str().as_ptr(), again.as_str().as_ptr());
    }

    /// A `permessage-deflate` connection's variant: compressed once and shared, or the
    /// text itself when too small to be worth compressing.
    #[test]
    fn deflated_frames_are_built_once_and_only_when_worth_it() {
        let scope = Scope::parse("channel:4").expect("valid");
        let long = serde_json::json!({"text": "words ".repeat(60)});
        let event = Event::published_at(
            Publish::new(scope.clone(), "message.created", &long),
            Some(1),
            SystemTime::UNIX_EPOCH,
        );
        let (first, second) = (
            event.frame_deflated(Mark::Plain),
            event.frame_deflated(Mark::Plain),
        );
        let (Some(Outgoing::Deflated(a)), Some(Outgoing::Deflated(b))) =
            (first.as_deref(), second.as_deref())
        else {
            panic!("a long event goes out compressed");
        };
        assert_eq!(a.as_ptr(), b.as_ptr(), "compressed once");
        let text = event.frame(Mark::Plain).expect("delivered");
        assert!(a.len() < text.len() / 2);
        assert!(event.frame_deflated(Mark::Skip).is_none());
        let small = Event::published_at(
            Publish::new(scope, "typing", &serde_json::json!({})),
            None,
            SystemTime::UNIX_EPOCH,
        );
        let (sent, text) = (
            small.frame_deflated(Mark::Plain).expect("delivered"),
            small.outgoing(Mark::Plain).expect("delivered"),
        );
        assert!(matches!(*sent, Outgoing::Text(_)));
        assert!(Arc::ptr_eq(&sent, &text), "the text frame itself, shared");
    }
}
