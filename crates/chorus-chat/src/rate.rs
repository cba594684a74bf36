//! Keyed rate limiters on a [`Clock`] (which is governor's clock too), so a test clock
//! (following tokio's paused time) moves their buckets. Used by the chat's `typing`
//! limit and the server's HTTP limits; the engine's inbound limiter is a direct one on
//! the same clock.

use std::hash::Hash;

use chorus_realtime::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// A keyed rate limiter on a [`Clock`].
pub type KeyedLimiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, Clock, NoOpMiddleware<std::time::Instant>>;

/// A keyed limiter of `quota` on `clock`.
pub fn keyed<K: Hash + Eq + Clone>(quota: Quota, clock: Clock) -> KeyedLimiter<K> {
    RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_only_as_the_clock_moves() {
        let quota = Quota::per_second(NonZeroU32::MIN);
        let limiter: KeyedLimiter<u8> = keyed(quota, Clock::following_tokio(0));
        assert!(limiter.check_key(&1).is_ok());
        assert!(limiter.check_key(&1).is_err(), "the burst of one is spent");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(limiter.check_key(&1).is_err(), "not yet refilled");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.check_key(&1).is_ok(), "refilled after a second");
    }
}
