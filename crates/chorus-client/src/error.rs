//! The client's one error type. Server refusals keep their machine-matchable
//! [`ErrorCode`]: `Api` for HTTP (and a refused WebSocket upgrade), `Ws` for `error` frames.

use std::time::Duration;

use chorus_api::ErrorBody;
use chorus_proto::ErrorCode;
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite;

use crate::realtime::Disconnect;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base URL cannot be used.
    #[error("invalid URL: {0}")]
    Url(String),
    /// A CA file (`CHORUS_CA_FILE`) cannot be read or holds no usable certificate.
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP request did not complete (connect, transport, time limit — see
    /// `reqwest::Error::is_timeout` — or an undecodable body).
    #[error("HTTP transport: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error body `{"error":{"code","message"}}`.
    #[error("HTTP {status}: {code}: {message}")]
    Api {
        status: StatusCode,
        code: ErrorCode,
        message: String,
    },
    /// The server answered with an error that is not a Chorus error body (a proxy, say).
    #[error("HTTP {status}: unexpected response: {body}")]
    UnexpectedResponse { status: StatusCode, body: String },
    /// The WebSocket could not be opened or failed underneath.
    #[error("WebSocket transport: {0}")]
    WebSocket(Box<tungstenite::Error>),
    /// The server answered a realtime request with an `error` frame.
    #[error("{code}: {message}")]
    Ws { code: ErrorCode, message: String },
    /// The server sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The realtime connection is closed; the request was not (or not surely) answered.
    #[error("connection closed: {0}")]
    Closed(Disconnect),
    /// No answer arrived in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The realtime connection was lost (for the given reason) and is being
    /// re-established; the request got no answer within the request timeout. It may
    /// still have been applied if it was sent before the connection was lost.
    #[error("not connected (reconnecting after {0}); no answer in time")]
    Reconnecting(Disconnect),
}

/// `Result` with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<tungstenite::Error> for Error {
    fn from(err: tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(err))
    }
}

/// Longest body kept in [`Error::UnexpectedResponse`].
const MAX_BODY_IN_ERROR: usize = 512;

impl Error {
    /// Decodes a failed response's body: the Chorus error body when it is one.
    pub(crate) fn from_response(status: StatusCode, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => Self::Api {
                status,
                code: error.code,
                message: error.message,
            },
            Err(_) => {
                let mut body = String::from_utf8_lossy(body).into_owned();
                if body.len() > MAX_BODY_IN_ERROR {
                    let cut = (0..=MAX_BODY_IN_ERROR)
                        .rev()
                        .find(|&i| body.is_char_boundary(i))
                        .unwrap_or(0);
                    body.truncate(cut);
                }
                Self::UnexpectedResponse { status, body }
            }
        }
    }

    /// The server's error code, for `Api` and `Ws` errors.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } | Self::Ws { code, .. } => Some(*code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_decode() {
        let err = Error::from_response(
            StatusCode::FORBIDDEN,
            br#"{"error":{"code":"forbidden","message":"no"}}"#,
        );
        assert!(matches!(
            err,
            Error::Api { status: StatusCode::FORBIDDEN, code: ErrorCode::Forbidden, ref message } if message == "no"
        ));
        let err = Error::from_response(StatusCode::BAD_GATEWAY, "é".repeat(400).as_bytes());
        let Error::UnexpectedResponse { body, .. } = err else {
            panic!("expected UnexpectedResponse, got {err:?}");
        };
        assert!(body.len() <= MAX_BODY_IN_ERROR);
    }
}
