//! Client → server frames and their decoder.
//!
//! Decoding is done in steps so every failure has its own code: not JSON or not an
//! object → `malformed_json`; no `op` or an unknown one → `unknown_op`; a known op with
//! missing or mistyped fields → `bad_request`. The frame `id`, when it can be read, is
//! returned with the error so the client can correlate it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ErrorCode;

/// A client-chosen correlation id: a string or an integer, echoed in `ack`/`error`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FrameId {
    Int(i64),
    Str(String),
}

/// One decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub id: Option<FrameId>,
    pub op: ClientOp,
}

/// The operations a client may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientOp {
    /// Subscribe to a scope; with `since`, first replay the events after that offset.
    Subscribe {
        scope: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    Unsubscribe {
        scope: String,
    },
    /// Replay, per scope, the events after the given offset, then continue live.
    Resume {
        positions: BTreeMap<String, u64>,
    },
    Typing {
        channel_id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<i64>,
    },
    Ping,
    /// Fresh credentials for the connection (a JWT about to expire): the connection
    /// then lives until the new token's expiry. Same user only.
    Refresh {
        token: String,
    },
    /// Add text to the end of one's own streaming message (acked once accepted; it
    /// reaches readers with the next roll-up, `message.deltas`).
    Append {
        message_id: i64,
        text: String,
    },
    /// End one's own stream; with `text`, that becomes the whole text.
    Complete {
        message_id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// End a stream without completing it.
    Abort {
        message_id: i64,
        #[serde(default)]
        reason: String,
    },
    /// Publish an event to a `topic:` scope whose namespace lets clients publish
    /// (acked with the event's offset; none when the namespace keeps no history).
    Publish {
        scope: String,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        data: Value,
    },
}

/// A client's `publish`, as the engine hands it to the application
/// (`SessionHooks::publish`).
#[derive(Debug, Clone, PartialEq)]
pub struct PublishOp {
    pub scope: String,
    pub kind: String,
    pub data: Value,
}

/// The ops about streaming messages, which the engine hands to the application
/// (`SessionHooks::stream`) as they are.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamOp {
    Append {
        message_id: i64,
        text: String,
    },
    Complete {
        message_id: i64,
        text: Option<String>,
    },
    Abort {
        message_id: i64,
        reason: String,
    },
}

impl ClientOp {
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Resume { .. } => "resume",
            Self::Typing { .. } => "typing",
            Self::Ping => "ping",
            Self::Refresh { .. } => "refresh",
            Self::Append { .. } => "append",
            Self::Complete { .. } => "complete",
            Self::Abort { .. } => "abort",
            Self::Publish { .. } => "publish",
        }
    }
}

const KNOWN_OPS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "resume",
    "typing",
    "ping",
    "refresh",
    "append",
    "complete",
    "abort",
    "publish",
];

/// Why a frame could not be decoded, with the frame id when one could be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub id: Option<FrameId>,
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    fn new(id: Option<FrameId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }
}

impl ClientFrame {
    /// Encodes the frame as JSON text (used by clients).
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.op).unwrap_or(Value::Null);
        if let (Some(id), Value::Object(map)) = (&self.id, &mut value) {
            map.insert(
                "id".to_owned(),
                serde_json::to_value(id).unwrap_or(Value::Null),
            );
        }
        value.to_string()
    }
}

/// Decodes one text frame.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, DecodeError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| DecodeError::new(None, ErrorCode::MalformedJson, e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(DecodeError::new(
            None,
            ErrorCode::MalformedJson,
            "a frame must be a JSON object",
        ));
    };
    let id = take_id(&mut map)?;
    let op = match map.get("op") {
        None => {
            return Err(DecodeError::new(id, ErrorCode::UnknownOp, "missing \"op\""));
        }
        Some(Value::String(op)) if KNOWN_OPS.contains(&op.as_str()) => op.clone(),
        Some(other) => {
            return Err(DecodeError::new(
                id,
                ErrorCode::UnknownOp,
                format!("unknown op {other}"),
            ));
        }
    };
    serde_json::from_value::<ClientOp>(Value::Object(map))
        .map(|op| ClientFrame { id: id.clone(), op })
        .map_err(|e| DecodeError::new(id, ErrorCode::BadRequest, format!("{op}: {e}")))
}

fn take_id(map: &mut Map<String, Value>) -> Result<Option<FrameId>, DecodeError> {
    match map.remove("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(FrameId::Str(s))),
        Some(Value::Number(n)) => n.as_i64().map(|n| Some(FrameId::Int(n))).ok_or_else(|| {
            DecodeError::new(
                None,
                ErrorCode::BadRequest,
                "\"id\" must be an integer or a string",
            )
        }),
        Some(_) => Err(DecodeError::new(
            None,
            ErrorCode::BadRequest,
            "\"id\" must be an integer or a string",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_every_op() {
        let f = decode_client_frame(r#"{"op":"subscribe","scope":"channel:1","since":5,"id":1}"#)
            .expect("valid");
        assert_eq!(f.id, Some(FrameId::Int(1)));
        assert_eq!(
            f.op,
            ClientOp::Subscribe {
                scope: "channel:1".into(),
                since: Some(5)
            }
        );
        let f = decode_client_frame(r#"{"op":"ping","id":"a"}"#).expect("valid");
        assert_eq!(f.op, ClientOp::Ping);
        let f = decode_client_frame(r#"{"op":"resume","positions":{"user:1":3}}"#).expect("valid");
        assert!(matches!(f.op, ClientOp::Resume { .. }));
        let f = decode_client_frame(r#"{"op":"typing","channel_id":3}"#).expect("valid");
        assert!(matches!(f.op, ClientOp::Typing { .. }));
        let f = decode_client_frame(r#"{"op":"unsubscribe","scope":"x:1"}"#).expect("valid");
        assert!(matches!(f.op, ClientOp::Unsubscribe { .. }));
        let f = decode_client_frame(r#"{"op":"append","message_id":4,"text":"a"}"#).expect("valid");
        assert!(matches!(f.op, ClientOp::Append { message_id: 4, .. }));
        let f = decode_client_frame(r#"{"op":"complete","message_id":4}"#).expect("valid");
        assert!(matches!(f.op, ClientOp::Complete { text: None, .. }));
        let f = decode_client_frame(r#"{"op":"abort","message_id":4}"#).expect("valid");
        assert!(matches!(f.op, ClientOp::Abort { .. }));
        let f =
            decode_client_frame(r#"{"op":"publish","scope":"topic:a","type":"t","data":{"x":1}}"#)
                .expect("valid");
        assert!(matches!(f.op, ClientOp::Publish { ref kind, .. } if kind == "t"));
    }

    #[test]
    fn each_failure_has_its_code() {
        let code = |s: &str| decode_client_frame(s).expect_err("must fail").code;
        assert_eq!(code("{not json"), ErrorCode::MalformedJson);
        assert_eq!(code("[1,2]"), ErrorCode::MalformedJson);
        assert_eq!(code(r#"{"id":1}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"op":"launch"}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"op":7}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"op":"subscribe"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"op":"subscribe","scope":3}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(r#"{"op":"ping","id":[1]}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn the_id_survives_a_bad_frame() {
        let err = decode_client_frame(r#"{"op":"subscribe","id":"x9"}"#).expect_err("must fail");
        assert_eq!(err.id, Some(FrameId::Str("x9".into())));
    }

    #[test]
    fn frames_round_trip() {
        let frame = ClientFrame {
            id: Some(FrameId::Int(4)),
            op: ClientOp::Subscribe {
                scope: "channel:9".into(),
                since: Some(77),
            },
        };
        assert_eq!(decode_client_frame(&frame.to_json()), Ok(frame));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = decode_client_frame(&s);
        }

        #[test]
        fn arbitrary_json_objects_never_panic(
            op in prop_oneof![Just("subscribe".to_owned()), Just("resume".to_owned()), Just("typing".to_owned()), Just("ping".to_owned()), ".{0,8}"],
            key in "[a-z_]{1,10}",
            val in prop_oneof![Just("1".to_owned()), Just("\"s\"".to_owned()), Just("null".to_owned()), Just("{}".to_owned()), Just("[1]".to_owned()), Just("-9223372036854775809".to_owned())],
        ) {
            let text = format!(r#"{{"op":{},"{}":{}}}"#, serde_json::Value::String(op), key, val);
            let _ = decode_client_frame(&text);
        }
    }
}
