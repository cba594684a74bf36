//! The HTTP error type: one `IntoResponse` enum that renders the SPEC's error body
//! `{"error":{"code":…,"message":…}}` and never shows internal causes to clients.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chorus_chat::ChatError;
use chorus_proto::ErrorCode;

pub use chorus_api::{ErrorBody, ErrorDetail};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For 429: seconds until a retry may succeed.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::BadRequest
            | ErrorCode::MalformedJson
            | ErrorCode::UnknownOp
            | ErrorCode::UnsupportedFrame
            | ErrorCode::UnknownCommand => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::LimitExceeded => StatusCode::BAD_REQUEST,
            ErrorCode::Gone => StatusCode::GONE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<ChatError> for ApiError {
    fn from(err: ChatError) -> Self {
        match err {
            ChatError::BadRequest(m) => Self::new(ErrorCode::BadRequest, m),
            ChatError::Unauthorized(m) => Self::new(ErrorCode::Unauthorized, m),
            ChatError::Forbidden(m) => Self::new(ErrorCode::Forbidden, m),
            ChatError::NotFound(m) => Self::new(ErrorCode::NotFound, m),
            ChatError::Conflict(m) => Self::new(ErrorCode::Conflict, m),
            ChatError::PayloadTooLarge(m) => Self::new(ErrorCode::PayloadTooLarge, m),
            ChatError::Unavailable(m) => Self::new(ErrorCode::Unavailable, m),
            ChatError::Gone(m) => Self::new(ErrorCode::Gone, m),
            ChatError::UnknownCommand(m) => Self::new(ErrorCode::UnknownCommand, m),
            ChatError::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                Self::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(ErrorCode::PayloadTooLarge, "request body is too large");
        }
        Self::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
