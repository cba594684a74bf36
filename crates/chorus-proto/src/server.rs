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

/// Any server frame, for clients to decode.
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
