//! The per-token HTTP rate limit: a keyed token bucket in front of every route.
//! Over the limit → 429 `rate_limited` with `Retry-After` (whole seconds, at least 1).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chorus_proto::ErrorCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::bearer;
use crate::error::ApiError;
use crate::state::AppState;

pub struct HttpLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// Requests refused, for `/metrics`.
    pub rejected: AtomicU64,
}

impl HttpLimiter {
    /// `None` when `per_sec` is 0 (no limit).
    pub fn new(per_sec: u32, burst: u32) -> Option<Self> {
        let per_sec = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(burst.max(per_sec.get())).unwrap_or(per_sec);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)),
            clock: DefaultClock::default(),
            rejected: AtomicU64::new(0),
        })
    }

    /// How long the holder of `token` must wait, if it is over its limit.
    fn check(&self, token: &str) -> Option<Duration> {
        // Keyed by the token's hash: the map never holds a usable secret.
        let key = chorus_chat::token::hash(token);
        self.limiter
            .check_key(&key)
            .err()
            .map(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets idle keys so the map does not grow with every token ever seen.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Token of a request: the bearer header, or `?token=` (WebSocket upgrades from browsers).
fn request_token(req: &Request) -> Option<String> {
    if let Some(t) = bearer(req.headers()) {
        return Some(t.to_owned());
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(str::to_owned)
    })
}

pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let (Some(limiter), Some(token)) = (state.http_limiter.as_deref(), request_token(&req))
        && let Some(wait) = limiter.check(&token)
    {
        limiter.rejected.fetch_add(1, Ordering::Relaxed);
        let mut error = ApiError::new(
            ErrorCode::RateLimited,
            "too many requests for this token; retry later",
        );
        error.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        return error.into_response();
    }
    next.run(req).await
}
