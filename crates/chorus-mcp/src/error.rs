//! [`ToolError`]: how a tool call fails for the agent. Chorus's own refusals keep their
//! error code (`forbidden`, `not_found`, …) so an agent can match on them; the tool result
//! is marked `isError` and its text is `{"error":{"code","message"}}`, which a model reads.
//! Arguments that do not fit a tool's schema never get here: the SDK answers them with
//! the protocol's `invalid params` error.

use chorus_client::ErrorCode;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::json;

/// A failed tool call: a machine-matchable `code` and a message for the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ToolError {
    pub code: String,
    pub message: String,
}

impl ToolError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// An argument the schema allows but the tool cannot use.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest.as_str(), message)
    }

    /// A `cursor` this server did not issue, or that was altered.
    pub fn bad_cursor(message: impl Into<String>) -> Self {
        Self::new("bad_cursor", message)
    }

    /// The Chorus server cannot be reached (or the agent's connection to it is gone).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable.as_str(), message)
    }
}

impl From<chorus_client::Error> for ToolError {
    fn from(err: chorus_client::Error) -> Self {
        use chorus_client::Error;
        match err {
            Error::Api { code, message, .. } | Error::Ws { code, message } => {
                Self::new(code.as_str(), message)
            }
            Error::Http(err) => {
                Self::unavailable(format!("the Chorus server is unreachable: {err}"))
            }
            Error::Closed(why) | Error::Reconnecting(why) => {
                Self::unavailable(format!("the connection to Chorus is down: {why}"))
            }
            Error::Timeout(after) => {
                Self::unavailable(format!("Chorus did not answer within {after:?}"))
            }
            other => Self::new(ErrorCode::Internal.as_str(), other.to_string()),
        }
    }
}

impl From<ToolError> for CallToolResult {
    fn from(err: ToolError) -> Self {
        let body = json!({"error": {"code": err.code, "message": err.message}});
        CallToolResult::error(vec![ContentBlock::text(body.to_string())])
    }
}
