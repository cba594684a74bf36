//! Typed events: an [`EventFrame`] with its `data` parsed into `chorus-api`'s
//! [`Event`] when its type is one the server publishes, and kept raw otherwise (types
//! published through `POST /api/v1/publish`, or ones newer than this client).

use chorus_api::Event;
use chorus_proto::EventFrame;
use serde_json::{Value, json};

/// An event as [`Realtime::next_typed_event`](crate::Realtime::next_typed_event) hands
/// it out: where it came from, and its payload, typed when known.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedEvent {
    pub scope: String,
    /// Absent on ephemeral events (typing, presence).
    pub offset: Option<u64>,
    /// Agent-aware delivery: `true` = act, `false` = record only.
    pub wake: Option<bool>,
    pub payload: Payload,
}

/// An event's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A type the server publishes, with its `data` typed.
    Known(Box<Event>),
    /// Any other type (or data not of its type's shape), as it arrived.
    Raw { kind: String, data: Value },
}

impl TypedEvent {
    /// The event's type, as on the wire (`message.created`).
    pub fn kind(&self) -> String {
        match &self.payload {
            Payload::Known(event) => serde_json::to_value(event)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            Payload::Raw { kind, .. } => kind.clone(),
        }
    }

    /// The typed event, when its type is known.
    pub fn known(&self) -> Option<&Event> {
        match &self.payload {
            Payload::Known(event) => Some(event),
            Payload::Raw { .. } => None,
        }
    }
}

impl From<EventFrame> for TypedEvent {
    fn from(frame: EventFrame) -> Self {
        let EventFrame {
            scope,
            offset,
            kind,
            data,
            wake,
        } = frame;
        let tagged = json!({ "type": kind, "data": data });
        let payload = match serde_json::from_value::<Event>(tagged) {
            Ok(event) => Payload::Known(Box::new(event)),
            Err(_) => Payload::Raw { kind, data },
        };
        Self {
            scope,
            offset,
            wake,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &str, data: Value) -> EventFrame {
        EventFrame {
            scope: "channel:1".into(),
            offset: Some(3),
            kind: kind.into(),
            data,
            wake: None,
        }
    }

    #[test]
    fn known_types_are_typed_and_others_kept_raw() {
        let typing = frame(
            "typing",
            json!({ "user_id": 2, "channel_id": 1, "expires_in_ms": 6000 }),
        );
        let event = TypedEvent::from(typing.clone());
        match event.known() {
            Some(Event::Typing(_)) => {}
            other => panic!("not typed: {other:?} from {typing:?}"),
        }
        assert_eq!(event.kind(), "typing");
        assert_eq!(event.offset, Some(3));

        let custom = TypedEvent::from(frame("deploy.finished", json!({ "ok": true })));
        assert_eq!(
            custom.payload,
            Payload::Raw {
                kind: "deploy.finished".into(),
                data: json!({ "ok": true })
            }
        );
        assert_eq!(custom.kind(), "deploy.finished");
    }
}
