//! Events the kernel numbered and never delivered. As the registered
//! audit daemon, ptagsd is handed every record the kernel keeps; one it
//! drops after numbering it (a record its queues had no room for, or one
//! it let go without counting when audit was not enabled at boot) leaves
//! a gap in the serials. A gap not filled within a grace time (the kernel
//! sends again what it kept, out of order) is counted lost, in events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a missing serial may take to arrive.
const GRACE: Duration = Duration::from_secs(2);
/// A jump this large is not a gap but the counter wrapping (it is 32-bit).
const WRAP: u64 = 1 << 31;

#[derive(Debug, Default)]
pub struct SerialGaps {
    highest: Option<u64>,
    /// Missing serials: start -> (end, exclusive; when the gap was seen).
    missing: BTreeMap<u64, (u64, Instant)>,
}

impl SerialGaps {
    pub fn seen(&mut self, serial: u64, now: Instant) {
        let Some(highest) = self.highest else {
            self.highest = Some(serial);
            return;
        };
        if serial > highest {
            if serial - highest >= WRAP {
                return;
            }
            if serial > highest + 1 {
                self.missing.insert(highest + 1, (serial, now));
            }
            self.highest = Some(serial);
        } else if highest - serial >= WRAP {
            // Wrapped: start again from here.
            self.highest = Some(serial);
        } else if let Some((&start, &(end, at))) = self.missing.range(..=serial).next_back() {
            if serial < end {
                self.missing.remove(&start);
                if start < serial {
                    self.missing.insert(start, (serial, at));
                }
                if serial + 1 < end {
                    self.missing.insert(serial + 1, (end, at));
                }
            }
        }
    }

    /// Events missing for longer than the grace time, now counted lost.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let due: Vec<u64> = self
            .missing
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= GRACE)
            .map(|(start, _)| *start)
            .collect();
        due.into_iter()
            .filter_map(|start| self.missing.remove(&start).map(|(end, _)| end - start))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_filled_late_are_not_lost_and_the_rest_are_counted_once() {
        let t0 = Instant::now();
        let mut g = SerialGaps::default();
        for s in [10, 10, 11, 15, 12, 16, 20] {
            g.seen(s, t0);
        }
        // Missing: 13, 14, 17, 18, 19.
        assert_eq!(g.expire(t0), 0, "within the grace time");
        g.seen(18, t0);
        assert_eq!(g.expire(t0 + GRACE), 4);
        assert_eq!(g.expire(t0 + GRACE * 2), 0, "counted once");
        // The 32-bit counter wrapping is no gap.
        g.seen(u64::from(u32::MAX), t0);
        g.seen(1, t0);
        g.seen(2, t0);
        assert_eq!(g.expire(t0 + GRACE * 3), 0);
    }
}
