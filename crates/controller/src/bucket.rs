//! The token bucket behind both of the controller's rate limits: the client-side limit on API
//! requests (`throttle`) and the per-client limit of `/v1/verify` and `/v1/rotate` (`http`).

use std::time::{Duration, Instant};

/// A sustained rate and the burst allowed above it.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    /// `per_second` tokens a second (0: none after the burst), at most `burst` (at least 1)
    /// saved up.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second: per_second.max(0.0),
            burst: f64::from(burst.max(1)),
        }
    }
}

/// Tokens left, and when they were counted.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate.per_second)
            .min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / rate.per_second;
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
        }
    }

    /// Whether the bucket is still refilling from a use in the last `within`: an idle, full
    /// bucket is the same as a new one and need not be kept.
    pub fn in_use(&self, rate: Rate, now: Instant, within: Duration) -> bool {
        self.tokens < rate.burst && now.duration_since(self.at) < within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_token_per_interval() {
        let rate = Rate::new(2.0, 3);
        let start = Instant::now();
        let mut bucket = TokenBucket::full(rate, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(rate, start), Ok(()));
        }
        let wait = bucket.take(rate, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(
            bucket
                .take(rate, start + Duration::from_millis(400))
                .is_err()
        );
        assert_eq!(
            bucket.take(rate, start + Duration::from_millis(500)),
            Ok(())
        );
        // Refilling stops at the burst.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(rate, later), Ok(()));
        }
        assert!(bucket.take(rate, later).is_err());
        assert!(bucket.in_use(rate, later, Duration::from_secs(60)));
        let idle = later + Duration::from_secs(120);
        assert!(!bucket.in_use(rate, idle, Duration::from_secs(60)));
    }

    #[test]
    fn a_zero_rate_allows_the_burst_only() {
        let rate = Rate::new(0.0, 1);
        let start = Instant::now();
        let mut bucket = TokenBucket::full(rate, start);
        assert_eq!(bucket.take(rate, start), Ok(()));
        let later = start + Duration::from_secs(3600);
        assert_eq!(bucket.take(rate, later), Err(Duration::MAX));
    }
}
