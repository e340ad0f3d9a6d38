//! The rate limit of records of requests that changed nothing (refused,
//! or writes of only comments and queries), per user (real uid) in each
//! container: a token bucket each. Such a request costs its caller
//! nothing, so without a limit one unprivileged user could write records
//! until rotation deleted every older one. What is not recorded is
//! counted and said in `PTAGS_SUPPRESSED` records. Changes, and the
//! requests of callers with CAP_AUDIT_CONTROL, are never limited.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::bucket::{Rate, TokenBucket};

/// How often a summary is written while a user's refusals are suppressed.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// Whose requests share a bucket: one user in one container (or on the
/// host), so that one container's root cannot silence another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    pub uid: u32,
    pub contid: Option<u64>,
}

/// Refusals of one source that were not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub source: Source,
    pub count: u64,
    /// The first and last of them (since the epoch).
    pub since: Duration,
    pub until: Duration,
    /// The user's bucket is still empty: more may follow.
    pub ongoing: bool,
}

#[derive(Debug)]
struct Bucket {
    tokens: TokenBucket,
    /// Suppressed since the last summary, and when the first and last were.
    suppressed: u64,
    since: Duration,
    until: Duration,
    /// When the count started or was last summarised.
    counting_from: Instant,
}

#[derive(Debug)]
pub struct RefusalLimit {
    rate: Rate,
    buckets: HashMap<Source, Bucket>,
}

impl RefusalLimit {
    /// `burst` records at once, then `per_sec` a second.
    pub fn new(burst: u32, per_sec: u32) -> RefusalLimit {
        RefusalLimit {
            rate: Rate::new(burst, per_sec),
            buckets: HashMap::new(),
        }
    }

    /// Whether a refusal of `source` may be recorded now (`wall`: now
    /// since the epoch); if not, it is counted.
    pub fn admit(&mut self, source: Source, now: Instant, wall: Duration) -> bool {
        let rate = self.rate;
        let b = self.buckets.entry(source).or_insert(Bucket {
            tokens: TokenBucket::full(rate, now),
            suppressed: 0,
            since: wall,
            until: wall,
            counting_from: now,
        });
        if b.tokens.take(rate, now) {
            return true;
        }
        if b.suppressed == 0 {
            b.since = wall;
            b.counting_from = now;
        }
        b.suppressed += 1;
        b.until = wall;
        false
    }

    /// The summaries due: of users whose bucket is full again (their
    /// suppression is over), and of users suppressed for a second since
    /// their last summary; every count when `all` (at stop). Users with a
    /// full bucket and nothing to tell are forgotten, so the map holds
    /// only users refused lately.
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<Suppressed> {
        let rate = self.rate;
        let mut out = Vec::new();
        self.buckets.retain(|&source, b| {
            let full = b.tokens.is_full(rate, now);
            let a_second = now.saturating_duration_since(b.counting_from) >= SUMMARY_EVERY;
            if b.suppressed > 0 && (full || all || a_second) {
                out.push(Suppressed {
                    source,
                    count: b.suppressed,
                    since: b.since,
                    until: b.until,
                    ongoing: !full,
                });
                b.suppressed = 0;
                b.counting_from = now;
            }
            !full
        });
        out.sort_by_key(|s| s.source);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> Source {
        Source { uid, contid: None }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_passes_then_the_rate_and_the_rest_is_counted() {
        let t0 = Instant::now();
        let mut l = RefusalLimit::new(20, 5);
        let admitted = (0..100).filter(|_| l.admit(user(1000), t0, ms(0))).count();
        assert_eq!(admitted, 20);
        // Nothing is told before a second has passed.
        assert_eq!(l.due(t0 + ms(100), false), vec![]);
        // 5 a second: one token every 200 ms.
        assert!(!l.admit(user(1000), t0 + ms(150), ms(150)));
        assert!(l.admit(user(1000), t0 + ms(210), ms(210)));
        assert!(!l.admit(user(1000), t0 + ms(220), ms(220)));
        // Another user has a bucket of its own.
        assert!(l.admit(user(1001), t0 + ms(220), ms(220)));
        assert_eq!(
            l.due(t0 + ms(1000), false),
            vec![Suppressed {
                source: user(1000),
                count: 82,
                since: ms(0),
                until: ms(220),
                ongoing: true,
            }]
        );
        // Counted again from zero; said once the bucket is full again,
        // after which the user is forgotten.
        // (3.9 tokens came back since 220 ms, to the 0.1 left then.)
        let admitted = (0..10)
            .filter(|_| l.admit(user(1000), t0 + ms(1000), ms(1000)))
            .count();
        assert_eq!(admitted, 4);
        assert_eq!(l.due(t0 + ms(1100), false), vec![]);
        let done = l.due(t0 + ms(6000), false);
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(
            (done[0].source.uid, done[0].count, done[0].ongoing),
            (1000, 6, false)
        );
        assert!(l.buckets.is_empty(), "{:?}", l.buckets);
    }

    #[test]
    fn suppression_that_goes_on_is_told_once_a_second() {
        let t0 = Instant::now();
        let mut l = RefusalLimit::new(1, 1);
        let (mut admitted, mut told) = (0, Vec::new());
        // 4 refusals a second for 5 seconds, a summary check every 50 ms.
        for i in 0..100u64 {
            let now = t0 + ms(i * 50);
            if i % 5 == 0 && l.admit(user(7), now, ms(i * 50)) {
                admitted += 1;
            }
            told.extend(l.due(now, false));
        }
        // Two more, then the daemon stops: what is left is told.
        for t in [5000, 5001] {
            if l.admit(user(7), t0 + ms(t), ms(t)) {
                admitted += 1;
            }
        }
        told.extend(l.due(t0 + ms(5002), true));
        let counted: u64 = told.iter().map(|s| s.count).sum();
        assert_eq!(admitted + counted, 22, "{told:?}");
        assert!((5..=7).contains(&admitted), "{admitted}");
        assert!((4..=6).contains(&told.len()), "{told:?}");
        for s in &told {
            assert!(
                s.source.uid == 7 && s.ongoing && s.until - s.since <= ms(1000),
                "{s:?}"
            );
        }
    }
}
