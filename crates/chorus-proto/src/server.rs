//! Server → client frames. Events are built once per event by the realtime engine (see
//! `chorus_realtime::Event`); the structs here describe the same shape for clients and docs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ErrorCode, FrameId};

/// The first frame on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloFrame {
    pub v: u32,
    pub session_id: String,
    pub user_id: i64,
    pub heartbeat_ms: u64,
    /// The scopes the connection was subscribed to on connect.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Each of those scopes' offset at subscription: the position to resume from if
    /// no event of the scope arrives before a disconnect.
    #[serde(default)]
    pub offsets: BTreeMap<String, u64>,
}

/// The answer to a client frame that carried an `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckFrame {
    pub id: FrameId,
    /// For `subscribe`: the scope and whether the requested history was replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// For `subscribe`: the scope's latest offset at subscription time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// For `resume`: the outcome per scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<BTreeMap<String, ScopeResume>>,
}

/// Outcome of resuming one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeResume {
    /// `true`: every event after the given offset was replayed. `false`: the retention
    /// window has passed (or the scope was not readable); catch up over HTTP.
    pub recovered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<FrameId>,
    pub code: ErrorCode,
    pub message: String,
}

/// `{"op":"event","scope":…,"offset":…,"type":…,"data":…,"wake"?:…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFrame {
    pub scope: String,
    /// Absent on ephemeral events (typing, presence), which are never replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    /// Agent-aware delivery (`message.created` only): `true` = act, `false` = record only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake: Option<bool>,
}

/// Any server frame: the server encodes its replies with it, clients decode with it.
/// Events are the exception on the encoding side: the engine writes their text itself,
/// once per event (same shape as [`EventFrame`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    Hello(HelloFrame),
    Ack(AckFrame),
    Error(ErrorFrame),
    Event(EventFrame),
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
    },
}

impl ServerFrame {
    /// Encodes the frame as JSON text: `{"op": …, …the frame's fields}`.
    pub fn to_json(&self) -> String {
        // Cannot fail: every map of these frames has string keys.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"op":"error","code":"internal","message":"unencodable frame"}"#.to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server sent before frames were encoded through [`ServerFrame`]: the
    /// body struct as a JSON object with `"op"` patched in.
    fn patched(op: &str, body: &impl Serialize) -> Value {
        let mut value = serde_json::to_value(body).expect("serializable");
        if let Value::Object(map) = &mut value {
            map.insert("op".to_owned(), Value::String(op.to_owned()));
        }
        value
    }

    fn encoded(frame: &ServerFrame) -> Value {
        serde_json::from_str(&frame.to_json()).expect("valid JSON")
    }

    /// Same fields, same omissions as the patched encoding, for every reply the engine
    /// sends; only the key order differs (`op` first), which JSON does not see.
    #[test]
    fn typed_frames_encode_like_the_patched_bodies() {
        let hello = HelloFrame {
            v: 1,
            session_id: "ab".into(),
            user_id: 7,
            heartbeat_ms: 25_000,
            scopes: vec!["user:7".into()],
            offsets: BTreeMap::from([("user:7".into(), 12)]),
        };
        assert_eq!(
            encoded(&ServerFrame::Hello(hello.clone())),
            patched("hello", &hello)
        );
        let bare = AckFrame {
            id: FrameId::Int(3),
            scope: None,
            recovered: None,
            offset: None,
            scopes: None,
        };
        let json = ServerFrame::Ack(bare.clone()).to_json();
        assert_eq!(
            json, r#"{"op":"ack","id":3}"#,
            "omitted fields stay omitted"
        );
        let full = AckFrame {
            id: FrameId::Str("s".into()),
            scope: Some("channel:1".into()),
            recovered: Some(false),
            offset: Some(9),
            scopes: Some(BTreeMap::from([(
                "channel:2".into(),
                ScopeResume {
                    recovered: true,
                    offset: None,
                    error: Some(ErrorCode::Forbidden),
                },
            )])),
        };
        for ack in [bare, full] {
            assert_eq!(
                encoded(&ServerFrame::Ack(ack.clone())),
                patched("ack", &ack)
            );
        }
        for id in [None, Some(FrameId::Int(4))] {
            let error = ErrorFrame {
                id,
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
            };
            assert_eq!(
                encoded(&ServerFrame::Error(error.clone())),
                patched("error", &error)
            );
        }
        let event = EventFrame {
            scope: "channel:1".into(),
            offset: None,
            kind: "subscription.revoked".into(),
            data: serde_json::json!({"scope": "channel:1", "reason": "left"}),
            wake: None,
        };
        assert_eq!(
            encoded(&ServerFrame::Event(event.clone())),
            patched("event", &event)
        );
        assert_eq!(ServerFrame::Pong { id: None }.to_json(), r#"{"op":"pong"}"#);
    }
}
