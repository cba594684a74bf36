//! Extractors whose rejections are [`ApiError`]s, so malformed JSON, queries and paths
//! get the same error body as everything else.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON request body. Like `axum::Json`, but it must be an object (serde alone would
/// read a struct from an array of its fields), and a whole number written with a
/// fraction (`7.0`) is taken where an integer is expected: the OpenAPI document (JSON
/// Schema 2020-12) calls it an integer, so clients and generators may write it so.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::bad_request(
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| ApiError::from(JsonRejection::from(rejection)))?;
        // serde would also read a struct from an array of its fields (`[null, null]`):
        // every request body is an object, as the document says.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            // The fast path failed; only a document with whole-number floats gets a
            // second try, and if that fails too the first error is the answer.
            Err(JsonRejection::JsonDataError(first)) => serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|mut doc| whole_floats_to_integers(&mut doc).then_some(doc))
                .and_then(|doc| serde_json::from_value::<T>(doc).ok())
                .map(Self)
                .ok_or_else(|| JsonRejection::JsonDataError(first).into()),
            Err(other) => Err(other.into()),
        }
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `application/json` or `application/…+json`, parameters allowed (as `axum::Json`).
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Replaces every float in `doc` that is a whole number small enough to be exact
/// (|x| < 2^53) by that integer; whether any was replaced.
fn whole_floats_to_integers(doc: &mut Value) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match doc {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < EXACT => {
                // In range by the check above: the cast is exact.
                *doc = Value::from(f as i64);
                true
            }
            _ => false,
        },
        // Every element is converted (no short circuit): `|`, not `||`.
        Value::Array(items) => items
            .iter_mut()
            .map(whole_floats_to_integers)
            .fold(false, |any, changed| any | changed),
        Value::Object(fields) => fields
            .values_mut()
            .map(whole_floats_to_integers)
            .fold(false, |any, changed| any | changed),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// A JSON body that may be left out: an empty body is `T::default()`. Otherwise it
/// must be JSON, as [`Json`] requires.
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        chorus_proto::ErrorCode::PayloadTooLarge,
                        "request body is too large",
                    )
                } else {
                    ApiError::bad_request(e.body_text())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}
