//! The one enrichment step: which container the task a record concerns
//! was in when the record was made. A live task is asked of the kernel
//! (and remembered while it lives, so that a busy task costs one lookup,
//! not one per record); a task that has exited since is known from its
//! exit event; a container dropped a moment ago still names its parent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ptags_bpf::{Kernel, LocalPids};

/// How long the exit of a task is remembered, to name the container of
/// its last events after it is gone.
const EXIT_MEMORY: Duration = Duration::from_secs(30);
/// How long a live task's container is remembered without being asked
/// again. Every change the daemon makes or sees (a request, a join) and
/// every exit forgets it sooner; this bounds what a lost exit event could
/// cost (a pid reused within it, which takes pid_max forks).
const LIVE_MEMORY: Duration = Duration::from_secs(1);
/// Live tasks remembered at once, at most.
const MAX_LIVE: usize = 65536;

/// A task that exited in a container, and when (ms since the epoch).
#[derive(Debug, Clone, Copy)]
struct Exit {
    contid: u64,
    local: LocalPids,
    at_ms: u64,
    seen: Instant,
}

pub struct Enricher {
    exits: HashMap<u32, Exit>,
    /// Containers dropped a moment ago, and their parents.
    dropped: HashMap<u64, (Option<u64>, Instant)>,
    /// Live processes found in a container, and when they were asked.
    live: HashMap<u32, (u64, Instant)>,
}

impl Enricher {
    pub fn new() -> Enricher {
        Enricher {
            exits: HashMap::new(),
            dropped: HashMap::new(),
            live: HashMap::new(),
        }
    }

    pub fn exited(&mut self, tid: u32, contid: u64, at_ms: u64, local: LocalPids) {
        self.live.remove(&tid);
        self.exits.insert(
            tid,
            Exit {
                contid,
                local,
                at_ms,
                seen: Instant::now(),
            },
        );
    }

    /// Forgets what was learnt of live tasks: their containers changed.
    pub fn forget_live(&mut self) {
        self.live.clear();
    }

    pub fn dropped(&mut self, id: u64, parent: Option<u64>) {
        self.dropped.insert(id, (parent, Instant::now()));
    }

    pub fn dropped_parent(&self, id: u64) -> Option<Option<u64>> {
        self.dropped.get(&id).map(|(p, _)| *p)
    }

    /// The container of a task that exited at or after `at_ms`.
    /// The pids of a task that exited, as its namespace saw them.
    pub fn local_of(&self, pid: u32) -> Option<LocalPids> {
        self.exits.get(&pid).map(|e| e.local)
    }

    pub fn exit_of(&self, pid: u32, at_ms: u64) -> Option<u64> {
        let exit = self.exits.get(&pid)?;
        (exit.at_ms >= at_ms).then_some(exit.contid)
    }

    /// The container live process `pid` is in, if any: remembered, or
    /// asked of the kernel.
    pub fn live_contid(&mut self, kernel: &Kernel, pid: u32) -> Option<u64> {
        if let Some((contid, at)) = self.live.get(&pid) {
            if at.elapsed() < LIVE_MEMORY {
                return Some(*contid);
            }
        }
        let state = kernel.process_state(pid).ok().flatten()?;
        let contid = state.contid?;
        // A task about to take another container at its exec is asked
        // again until it has.
        if state.pending.is_none() {
            if self.live.len() >= MAX_LIVE {
                self.live.clear();
            }
            self.live.insert(pid, (contid, Instant::now()));
        }
        Some(contid)
    }

    /// Forgets exits and drops that no late record will ask about.
    pub fn expire(&mut self) {
        self.exits.retain(|_, e| e.seen.elapsed() < EXIT_MEMORY);
        self.dropped.retain(|_, (_, at)| at.elapsed() < EXIT_MEMORY);
        self.live.retain(|_, (_, at)| at.elapsed() < LIVE_MEMORY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_names_the_container_of_earlier_records_only() {
        let mut e = Enricher::new();
        e.exited(10, 77, 5_000, LocalPids::default());
        assert_eq!(e.exit_of(10, 4_999), Some(77));
        assert_eq!(e.exit_of(10, 5_000), Some(77));
        assert_eq!(e.exit_of(10, 5_001), None, "a later task with the pid");
        assert_eq!(e.exit_of(11, 1), None);
        e.dropped(77, Some(5));
        assert_eq!(e.dropped_parent(77), Some(Some(5)));
        assert_eq!(e.dropped_parent(78), None);
    }
}
