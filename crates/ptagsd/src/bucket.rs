//! A token bucket: `burst` at once, then `per_sec` a second. The one
//! every rate of the daemon uses: changes per user, records per user in
//! a container, packets per network namespace and per container.

use std::time::Instant;

/// A bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: f64,
    pub per_sec: f64,
}

impl Rate {
    pub fn new(burst: u32, per_sec: u32) -> Rate {
        Rate {
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            refilled: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.refilled = now;
    }

    /// Whether a token is there at `now` (none is taken).
    pub fn has(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= 1.0
    }

    /// Takes a token that [`TokenBucket::has`] said is there.
    pub fn spend(&mut self) {
        self.tokens -= 1.0;
    }

    /// Takes a token if there is one at `now`.
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let has = self.has(rate, now);
        if has {
            self.spend();
        }
        has
    }

    /// Whether it has refilled to its burst by `now`: nothing to
    /// remember it for.
    pub fn is_full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_and_never_more_than_the_burst() {
        let rate = Rate::new(5, 10);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        assert_eq!((0..20).filter(|_| b.take(rate, t0)).count(), 5);
        let later = t0 + Duration::from_millis(500);
        assert_eq!((0..20).filter(|_| b.take(rate, later)).count(), 5);
        assert!(!b.is_full(rate, later));
        let much_later = later + Duration::from_secs(60);
        assert!(b.is_full(rate, much_later));
        assert_eq!((0..20).filter(|_| b.take(rate, much_later)).count(), 5);
    }
}
