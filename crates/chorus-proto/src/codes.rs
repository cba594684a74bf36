//! Error codes (in `error` frames and HTTP error bodies) and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// A machine-matchable error code. The same set serves HTTP bodies
/// (`{"error":{"code":…}}`) and WebSocket `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request or frame is well-formed JSON but its content is invalid.
    BadRequest,
    /// A WebSocket frame is not valid JSON, or not a JSON object.
    MalformedJson,
    /// A WebSocket frame's `op` is missing or names no known operation.
    UnknownOp,
    /// A WebSocket binary frame: the protocol is JSON text only.
    UnsupportedFrame,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    /// Frame, body or message text over the configured size.
    PayloadTooLarge,
    RateLimited,
    /// A per-connection limit other than a rate: e.g. the most subscriptions.
    LimitExceeded,
    /// What was asked for is no longer kept (events past the retention window).
    Gone,
    /// A message's `/name` names no built-in or registered slash command.
    UnknownCommand,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::MalformedJson => "malformed_json",
            Self::UnknownOp => "unknown_op",
            Self::UnsupportedFrame => "unsupported_frame",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::LimitExceeded => "limit_exceeded",
            Self::Gone => "gone",
            Self::UnknownCommand => "unknown_command",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes. 3000–3499: reconnect and resume. 3500–3999: do not retry
/// without changing something (token, client code). 1000–1015 are the RFC 6455 codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the client asked to close.
    Normal,
    /// 1009: a frame over the hard transport limit; the stream cannot be parsed further.
    MessageTooBig,
    /// 3001: the server is shutting down or restarting; reconnect (maybe elsewhere) and resume.
    ServerShutdown,
    /// 3002: no frame (not even a pong) for 1.4 × heartbeat; the peer is taken for dead.
    HeartbeatTimeout,
    /// 3008: the connection's outbound queue overflowed; reconnect and resume.
    SlowConsumer,
    /// 3501: inbound frame rate far over the limit (abuse); back off before reconnecting.
    Flood,
    /// 3502: the credentials of the connection are no longer valid (expired JWT, revoked token).
    Unauthorized,
}

impl CloseCode {
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::MessageTooBig => 1009,
            Self::ServerShutdown => 3001,
            Self::HeartbeatTimeout => 3002,
            Self::SlowConsumer => 3008,
            Self::Flood => 3501,
            Self::Unauthorized => 3502,
        }
    }

    /// Short reason sent in the close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Normal => "bye",
            Self::MessageTooBig => "message too big",
            Self::ServerShutdown => "server shutdown",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::SlowConsumer => "slow consumer",
            Self::Flood => "flood",
            Self::Unauthorized => "unauthorized",
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        [
            Self::Normal,
            Self::MessageTooBig,
            Self::ServerShutdown,
            Self::HeartbeatTimeout,
            Self::SlowConsumer,
            Self::Flood,
            Self::Unauthorized,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }

    /// Whether a client should reconnect (with backoff) and resume after this close.
    pub const fn should_reconnect(code: u16) -> bool {
        matches!(code, 1001 | 1006 | 1011 | 1012 | 1013 | 3000..=3499)
    }
}
