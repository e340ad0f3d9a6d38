//! Containers whose last task exited, held until the kernel's audit
//! records of their last moments have been read: a container's end is
//! then the last record about it, in the host's trail and in its copy,
//! which ends with it.
//!
//! Why a later stamp suffices: a task's audit records are queued before
//! its exit event (`audit_free` runs before the `sched_process_exit`
//! tracepoint in `do_exit`), and kauditd hands records over in the order
//! they were queued. A record stamped after the exit was queued after it,
//! so once one has been read, so has every record of the container's
//! tasks. Stamps come from a coarse clock, never ahead of the fine one
//! the exit is timed with: a stamp a millisecond later is later. With
//! nothing later to read (a quiet system), a drop waits [`MAX_WAIT`].

use std::time::{Duration, Instant};

/// How long a drop waits for a later kernel record, at most.
pub const MAX_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
pub struct Drops {
    pending: Vec<Pending>,
    /// The latest stamp of a kernel record read, in ms since the epoch.
    latest_ms: u64,
}

#[derive(Debug)]
struct Pending {
    contid: u64,
    /// When its last task exited, in ms since the epoch.
    exited_ms: u64,
    seen: Instant,
}

impl Drops {
    pub fn push(&mut self, contid: u64, exited_ms: u64, now: Instant) {
        self.pending.push(Pending {
            contid,
            exited_ms,
            seen: now,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A kernel record was read.
    pub fn kernel_record(&mut self, stamp_ms: u64) {
        self.latest_ms = self.latest_ms.max(stamp_ms);
    }

    /// The drops that are due, in the order they came. `reading_kernel`:
    /// kernel records are read at all. `oldest_open_ms`: the stamp of
    /// the oldest event still being assembled, whose records may be the
    /// container's.
    pub fn take_due(
        &mut self,
        reading_kernel: bool,
        oldest_open_ms: Option<u64>,
        now: Instant,
    ) -> Vec<u64> {
        let latest = self.latest_ms;
        let due = |p: &Pending| {
            !reading_kernel
                || now.saturating_duration_since(p.seen) >= MAX_WAIT
                || (latest > p.exited_ms && oldest_open_ms.is_none_or(|o| o > p.exited_ms))
        };
        let (due, wait): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.pending).into_iter().partition(due);
        self.pending = wait;
        due.into_iter().map(|p| p.contid).collect()
    }

    pub fn has(&self, contid: u64) -> bool {
        self.pending.iter().any(|p| p.contid == contid)
    }

    /// Forgets the drop of `contid`, due or not (its ID is being set
    /// again, its runtime said it stopped).
    pub fn forget(&mut self, contid: u64) {
        self.pending.retain(|p| p.contid != contid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_MS: u64 = 1_000_000;

    fn one(now: Instant) -> Drops {
        let mut d = Drops::default();
        d.push(7, EXIT_MS, now);
        d
    }

    #[test]
    fn without_kernel_records_a_drop_is_due_at_once() {
        let now = Instant::now();
        assert_eq!(one(now).take_due(false, Some(0), now), [7]);
    }

    #[test]
    fn a_drop_waits_for_a_record_stamped_after_the_exit() {
        let now = Instant::now();
        let mut d = one(now);
        assert!(d.take_due(true, None, now).is_empty());
        // Stamped in the exit's millisecond: perhaps queued before it.
        d.kernel_record(EXIT_MS);
        assert!(d.take_due(true, None, now).is_empty());
        d.kernel_record(EXIT_MS + 1);
        assert_eq!(d.take_due(true, None, now), [7]);
        assert!(d.take_due(true, None, now).is_empty());
    }

    #[test]
    fn and_for_the_events_open_since_before_it() {
        let now = Instant::now();
        let mut d = one(now);
        d.kernel_record(EXIT_MS + 5);
        assert!(d.take_due(true, Some(EXIT_MS), now).is_empty());
        assert_eq!(d.take_due(true, Some(EXIT_MS + 1), now), [7]);
    }

    #[test]
    fn on_a_quiet_system_a_drop_waits_max_wait_at_most() {
        let now = Instant::now();
        let mut d = one(now);
        let almost = now + MAX_WAIT - Duration::from_millis(1);
        assert!(d.take_due(true, Some(0), almost).is_empty());
        assert_eq!(d.take_due(true, Some(0), now + MAX_WAIT), [7]);
    }

    #[test]
    fn drops_come_in_order_and_each_waits_for_its_own_exit() {
        let now = Instant::now();
        let mut d = Drops::default();
        d.push(1, EXIT_MS, now);
        d.push(2, EXIT_MS + 10, now);
        d.push(3, EXIT_MS + 2, now);
        d.kernel_record(EXIT_MS + 3);
        assert_eq!(d.take_due(true, None, now), [1, 3]);
        d.kernel_record(EXIT_MS + 11);
        assert_eq!(d.take_due(true, None, now), [2]);
    }

    #[test]
    fn a_drop_forgotten_is_not_due_again() {
        let now = Instant::now();
        let mut d = one(now);
        assert!(d.has(7));
        d.forget(7);
        assert!(!d.has(7));
        assert!(d.take_due(false, None, now).is_empty());
    }
}
