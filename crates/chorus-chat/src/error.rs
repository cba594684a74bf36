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
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ChatError {
    fn from(err: sqlx::Error) -> Self {
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
