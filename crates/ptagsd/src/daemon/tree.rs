//! The process tree as the kernel's task iterator saw it, and changes
//! made to every thread of a process.

use std::collections::HashMap;

use ptags_bpf::{TaskRow, TaskState};
use ptags_core::TaskRef;

use crate::error::Error;
use crate::host::Pidfd;

/// The process tree as one pass of the kernel's task iterator saw it.
pub struct Tree {
    by_tid: HashMap<u32, TaskRow>,
}

impl Tree {
    pub fn new(rows: Vec<TaskRow>) -> Tree {
        Tree {
            by_tid: rows.into_iter().map(|r| (r.id.tid, r)).collect(),
        }
    }

    pub fn get(&self, tid: u32) -> Option<&TaskRow> {
        self.by_tid.get(&tid)
    }

    pub fn rows(&self) -> impl Iterator<Item = &TaskRow> {
        self.by_tid.values()
    }

    /// The state of process `pid`: its main thread's, or a live thread's
    /// once the main thread has exited (as `Kernel::process_state`).
    pub fn process_state(&self, pid: u32) -> TaskState {
        let main = self.get(pid).map(|r| r.state).unwrap_or_default();
        if !main.exited {
            return main;
        }
        self.by_tid
            .values()
            .filter(|r| r.pid == pid && r.id.tid != pid && !r.state.exited)
            .min_by_key(|r| r.id.tid)
            .map_or(main, |r| r.state)
    }

    /// A process (its main thread), named with its start time.
    pub fn task_ref(&self, pid: u32) -> Option<TaskRef> {
        self.get(pid).map(|r| TaskRef {
            pid,
            start_time: r.id.start_ticks,
        })
    }

    /// The threads of process `pid`.
    pub fn threads(&self, pid: u32) -> usize {
        self.by_tid.values().filter(|r| r.pid == pid).count()
    }

    /// Whether process `pid` has a child (zombies included).
    pub fn has_children(&self, pid: u32) -> bool {
        self.by_tid.values().any(|r| r.ppid == pid && r.pid != pid)
    }

    /// The ancestors of process `pid`, its parent first, up to the root.
    pub fn ancestors(&self, pid: u32) -> Vec<TaskRef> {
        let mut out = Vec::new();
        let mut current = pid;
        while let Some(row) = self.get(current) {
            if row.ppid == 0 || out.len() > self.by_tid.len() {
                break;
            }
            match self.task_ref(row.ppid) {
                Some(parent) => out.push(parent),
                None => break,
            }
            current = row.ppid;
        }
        out
    }
}

/// How many times a change to every thread of a process looks again for
/// threads created while it ran (they copied a thread's state from before).
const THREAD_ROUNDS: usize = 8;

/// Calls `each` once for every thread `threads` lists, listing again for
/// threads made meanwhile, and checks after each round that `process` is
/// still the process named (so the threads listed were its). `each` says
/// whether it did the thread (false: the thread had exited). Returns the
/// threads done; ESRCH when none was.
pub(super) fn each_thread(
    process: &Pidfd,
    threads: impl Fn() -> Result<Vec<u32>, Error>,
    mut each: impl FnMut(u32) -> Result<bool, Error>,
) -> Result<Vec<u32>, Error> {
    let mut seen: Vec<u32> = Vec::new();
    let mut done = Vec::new();
    for _ in 0..THREAD_ROUNDS {
        let todo: Vec<u32> = threads()?
            .into_iter()
            .filter(|t| !seen.contains(t))
            .collect();
        if todo.is_empty() {
            break;
        }
        for tid in todo {
            seen.push(tid);
            if each(tid)? {
                done.push(tid);
            }
        }
        process.check_alive()?;
    }
    if done.is_empty() {
        return Err(Error::gone(process.pid));
    }
    Ok(done)
}
