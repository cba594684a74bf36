//! Rate limiters that read the time from a [`Clock`], so a test clock (following
//! tokio's paused time) moves their buckets too. Used by the chat's `typing` limit and
//! the server's HTTP limits.
// The engine's inbound limiter needs the same adapter: it belongs in
// `chorus_realtime::clock` once that crate takes it.

use std::hash::Hash;

use chorus_realtime::Clock;
use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// A keyed rate limiter on a [`LimiterClock`].
pub type KeyedLimiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, LimiterClock, NoOpMiddleware<Nanos>>;

/// A keyed limiter of `quota` on `clock`.
pub fn keyed<K: Hash + Eq + Clone>(quota: Quota, clock: Clock) -> KeyedLimiter<K> {
    RateLimiter::new(
        quota,
        DefaultKeyedStateStore::default(),
        LimiterClock::new(clock),
    )
}

/// [`Clock`]'s monotonic time as governor reads it: nanoseconds since the limiter was
/// made.
#[derive(Debug, Clone)]
pub struct LimiterClock {
    clock: Clock,
    start: Instant,
}

impl LimiterClock {
    pub fn new(clock: Clock) -> Self {
        Self {
            start: clock.instant(),
            clock,
        }
    }
}

impl GovernorClock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.clock.instant().saturating_duration_since(self.start))
    }
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
