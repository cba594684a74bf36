//! The time the server asks for.
//!
//! Every part of Chorus that needs the time (the engine's heartbeats and publish times,
//! presence, rate limits, retention, webhook backoff, caches, the stores' timestamps)
//! asks a [`Clock`] it was given, never `SystemTime::now()` or `Instant::now()` itself.
//! In production the clock is the system's; in tests it is one that stands still while
//! tokio's time is paused (`tokio::time::pause`) and moves only when the test advances
//! it, so a test that waits for an expiry or a retry does not sleep, and a test that
//! checks that something did *not* happen can move time past the deadline and know.
//!
//! Monotonic time is tokio's [`Instant`], which already follows paused time; the clock
//! makes wall time follow it too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A source of wall time (Unix milliseconds) and monotonic time. Cheap to clone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    test: Option<TestEpoch>,
}

/// A test clock's wall time at a monotonic instant.
#[derive(Debug, Clone, Copy)]
struct TestEpoch {
    unix_ms: i64,
    at: Instant,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self { test: None }
    }

    /// A clock for tests whose wall time starts at `unix_ms` now and then moves exactly
    /// as tokio's clock does: paused with it, advanced with it.
    pub fn following_tokio(unix_ms: i64) -> Self {
        Self {
            test: Some(TestEpoch {
                unix_ms,
                at: Instant::now(),
            }),
        }
    }

    /// Wall time, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self.test {
            None => {
                let since = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO);
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            }
            Some(epoch) => {
                let elapsed = i64::try_from(epoch.at.elapsed().as_millis()).unwrap_or(i64::MAX);
                epoch.unix_ms.saturating_add(elapsed)
            }
        }
    }

    /// Wall time as a [`SystemTime`].
    pub fn system_time(&self) -> SystemTime {
        match self.test {
            None => SystemTime::now(),
            Some(_) => {
                let ms = u64::try_from(self.now_ms()).unwrap_or(0);
                UNIX_EPOCH + Duration::from_millis(ms)
            }
        }
    }

    /// Monotonic time, for deadlines and intervals.
    pub fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// Rate limiters (`governor`) read the same monotonic time, so a paused test clock
/// pauses them too.
impl governor::clock::Clock for Clock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        self.instant().into_std()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_test_clock_moves_only_with_tokio_time() {
        let clock = Clock::following_tokio(1_000_000);
        let start = clock.instant();
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now_ms(), 1_001_500);
        assert_eq!(clock.instant() - start, Duration::from_millis(1_500));
        assert_eq!(
            clock.system_time(),
            UNIX_EPOCH + Duration::from_millis(1_001_500)
        );
    }

    #[test]
    fn the_system_clock_is_the_system_time() {
        let before = SystemTime::now();
        let now = Clock::system().system_time();
        assert!(now >= before);
        let ms = Clock::system().now_ms();
        assert!(
            ms >= before
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_millis() as i64
        );
    }
}
