//! The bounded queue between a container's copy and one of its readers
//! (its log writer, a follower). The pipeline's thread only ever adds
//! without waiting: a reader that is slow or stopped fills its own queue
//! and nothing else.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::CopyEvent;
use crate::pipeline::records::lost;
use crate::pipeline::Record;

/// What a queue may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub records: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    events: VecDeque<Arc<CopyEvent>>,
    records: u64,
    bytes: u64,
    /// Records refused since the reader last took a batch: said to it
    /// before the next one.
    dropped_unsaid: u64,
    dropped_total: u64,
    /// The copy ended (its container dropped, its policy cleared, the
    /// daemon stopping) or the reader went away.
    closed: bool,
}

pub struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    bounds: Bounds,
}

/// What a reader takes at once: the records refused before them, then
/// the events.
pub struct Batch {
    pub dropped: u64,
    pub dropped_total: u64,
    pub events: Vec<Arc<CopyEvent>>,
}

impl Batch {
    /// The `PTAGS_LOST` record that tells the reader (`source`: `copy`
    /// for the log, `follower`) what its queue could not take since its
    /// last batch; `None` when nothing was lost.
    pub fn lost_record(&self, source: &str) -> Option<Record> {
        (self.dropped > 0).then(|| {
            let body = lost(
                source,
                "queue-full",
                "records",
                self.dropped,
                self.dropped_total,
            );
            Record::daemon("PTAGS_LOST", crate::host::now(), body)
        })
    }
}

impl Queue {
    pub fn new(bounds: Bounds) -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            bounds,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A reader that panicked holding the lock left consistent
        // counts: every change under it is a few additions.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an event unless it would take the queue over its bounds;
    /// false when it was refused (and counted) or the queue is closed.
    pub fn offer(&self, event: &Arc<CopyEvent>) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        let records = event.records.len() as u64;
        if s.records + records > self.bounds.records || s.bytes + event.bytes > self.bounds.bytes {
            s.dropped_unsaid += records;
            s.dropped_total += records;
            return false;
        }
        s.records += records;
        s.bytes += event.bytes;
        s.events.push_back(Arc::clone(event));
        drop(s);
        self.ready.notify_one();
        true
    }

    /// Waits up to `wait` for events; `None` once the queue is closed and
    /// empty.
    pub fn take(&self, wait: Duration) -> Option<Batch> {
        let mut s = self.lock();
        if s.events.is_empty() && s.dropped_unsaid == 0 && !s.closed {
            s = self
                .ready
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if s.closed && s.events.is_empty() && s.dropped_unsaid == 0 {
            return None;
        }
        s.records = 0;
        s.bytes = 0;
        Some(Batch {
            dropped: std::mem::take(&mut s.dropped_unsaid),
            dropped_total: s.dropped_total,
            events: s.events.drain(..).collect(),
        })
    }

    /// No more events will come, or none is wanted any more.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Records refused so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize, bytes: u64) -> Arc<CopyEvent> {
        let r = Record::daemon("PTAGS_OP", Duration::from_secs(1), "op=write".into());
        Arc::new(CopyEvent {
            records: vec![r; n],
            bytes,
        })
    }

    #[test]
    fn a_full_queue_refuses_and_counts_and_says_so_to_its_reader() {
        let q = Queue::new(Bounds {
            records: 4,
            bytes: 1000,
        });
        assert!(q.offer(&event(3, 10)));
        assert!(!q.offer(&event(2, 10)), "5 records over 4");
        assert!(q.offer(&event(1, 10)));
        assert!(!q.offer(&event(1, 10)));
        let b = q.take(Duration::ZERO).unwrap();
        assert_eq!((b.dropped, b.dropped_total, b.events.len()), (3, 3, 2));
        // Room again once taken; bytes bound too.
        assert!(!q.offer(&event(1, 1001)));
        assert!(q.offer(&event(1, 1000)));
        q.close();
        let b = q.take(Duration::ZERO).unwrap();
        assert_eq!((b.dropped, b.events.len()), (1, 1));
        assert!(q.take(Duration::ZERO).is_none());
        assert!(!q.offer(&event(1, 1)), "closed");
        assert_eq!(q.dropped(), 4);
    }
}
