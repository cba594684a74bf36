//! The domain's error type. The HTTP edge maps each variant to a status and code;
//! `Internal` never reaches a client with its cause.

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// No longer kept (events past the retention window).
    #[error("{0}")]
    Gone(String),
    /// A message's `/name` is no slash command (HTTP 400, `unknown_command`).
    #[error("{0}")]
    UnknownCommand(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ChatError {
    /// A database that cannot be reached (or is shutting down) is `Unavailable`, so
    /// clients see 503 and retry; anything else is a bug or corruption: `Internal`.
    fn from(err: sqlx::Error) -> Self {
        let unreachable = match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
            // A TLS handshake that failed, or a link that closed before the server
            // answered the SSLRequest sqlx sends first when TLS may be used (sqlx reports
            // the byte it never read, 0x00): the database cannot be reached securely.
            sqlx::Error::Tls(_) => true,
            sqlx::Error::Protocol(msg) => {
                msg.starts_with("unexpected response from SSLRequest: 0x00")
            }
            // PostgreSQL: class 08 connection exceptions, 57P0x shutdown / cannot connect.
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
            _ => false,
        };
        if unreachable {
            tracing::warn!(cause = %err, "database unavailable");
            return Self::Unavailable("the database is unavailable".into());
        }
        Self::Internal(err.into())
    }
}

pub type Result<T, E = ChatError> = std::result::Result<T, E>;

pub(crate) fn bad(msg: impl Into<String>) -> ChatError {
    ChatError::BadRequest(msg.into())
}

pub(crate) fn forbidden(msg: impl Into<String>) -> ChatError {
    ChatError::Forbidden(msg.into())
}

pub(crate) fn not_found(msg: impl Into<String>) -> ChatError {
    ChatError::NotFound(msg.into())
}

/// A channel can have only members of its workspace (and server admins); observers
/// are members too.
pub(crate) fn not_in_workspace(user: crate::model::UserId) -> ChatError {
    bad(format!("user {user} is not a member of this workspace"))
}

/// A channel's delivery lists name its members only.
pub(crate) fn not_in_channel(user: crate::model::UserId) -> ChatError {
    bad(format!("user {user} is not a member of this channel"))
}
