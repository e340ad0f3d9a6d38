//! Inheritance that failed: a task forked while the kernel had no memory
//! for its storage runs without the labels its parent had, outside its
//! container. The kernel counts each such fork (`task_storage`); when the
//! count rises, the daemon finds those tasks with the task iterator and
//! gives them their parent's state at once.

use std::collections::HashMap;

use log::warn;
use ptags_bpf::{SetOp, TaskId, TaskRow};

use super::wal::Change;
use super::Daemon;
use crate::host::exe_of;

/// A task to repair, and what to give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Repair {
    pub task: TaskId,
    pub pid: u32,
    pub parent: u32,
    pub op: SetOp,
}

/// The tasks started at or after `since` (clock ticks since boot) that
/// have no state while the task they were forked from has some: a thread
/// from its process's main thread, a process from its parent. A task
/// whose program differs from its parent's (`exe`) exec'd since its fork:
/// it gets the kept subset only, as its exec would have left it.
///
/// A task forked before its parent was labelled has no state either, by
/// design (a write labels the threads that exist): the window keeps such
/// tasks out, since the daemon looks only at tasks started since the last
/// time it read the counters, a second ago at most.
pub(super) fn repairs(
    rows: &[TaskRow],
    since: u64,
    exe: impl Fn(u32) -> Option<(u64, u64)>,
) -> Vec<Repair> {
    let by_tid: HashMap<u32, &TaskRow> = rows.iter().map(|r| (r.id.tid, r)).collect();
    let mut out = Vec::new();
    for row in rows {
        if row.state != Default::default() || row.id.start_ticks < since {
            continue;
        }
        let from = if row.pid != row.id.tid {
            row.pid
        } else {
            row.ppid
        };
        let Some(parent) = by_tid.get(&from) else {
            continue;
        };
        let p = parent.state;
        if p.exited || (p.contid.is_none() && p.set_id == 0) {
            continue;
        }
        let execd = row.pid != parent.pid && exe(row.pid) != exe(parent.pid);
        let set = if execd { p.kept_id } else { p.set_id };
        out.push(Repair {
            task: row.id,
            pid: row.pid,
            parent: parent.pid,
            op: SetOp {
                tags: Some((set, p.kept_id)),
                contid: p.contid.map(|c| (c, None)),
                ..Default::default()
            },
        });
    }
    out
}

impl Daemon<'_> {
    /// Gives the tasks that failed to inherit (started since `since`)
    /// their parent's state, each on record (`PTAGS_REPAIR`). Returns how
    /// many were repaired.
    pub(super) fn repair_inheritance(&mut self, since: u64) -> usize {
        let rows = match self.kernel.tasks() {
            Ok(rows) => rows,
            Err(e) => {
                warn!("listing tasks to repair inheritance: {e}");
                return 0;
            }
        };
        let mut done = 0;
        for r in repairs(&rows, since, exe_of) {
            let change = Change {
                op: "repair",
                opid: r.pid,
                text: None,
            };
            let result = self.set_task(&change, r.task, &r.op);
            if let Err(e) = &result {
                warn!("repairing the labels of task {}: {e}", r.task.tid);
            }
            done += usize::from(result.is_ok());
            self.record_repair(&r, result.is_ok());
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptags_bpf::TaskState;

    fn row(tid: u32, pid: u32, ppid: u32, start: u64, state: TaskState) -> TaskRow {
        TaskRow {
            id: TaskId {
                tid,
                start_ticks: start,
            },
            pid,
            ppid,
            comm: "x".into(),
            mnt_ns: 1,
            state,
            namespaces: Default::default(),
        }
    }

    fn labelled(set: u64, kept: u64, contid: Option<u64>) -> TaskState {
        TaskState {
            set_id: set,
            kept_id: kept,
            contid,
            ..Default::default()
        }
    }

    #[test]
    fn unlabelled_children_of_labelled_parents_since_the_window() {
        let rows = vec![
            row(10, 10, 1, 100, labelled(5, 4, Some(77))),
            // A child forked in the window, same program: the whole set.
            row(11, 11, 10, 200, TaskState::default()),
            // One that exec'd another program: the kept subset.
            row(12, 12, 10, 200, TaskState::default()),
            // A thread of the parent: from its main thread.
            row(13, 10, 1, 200, TaskState::default()),
            // Forked before the window (before its parent was labelled,
            // perhaps): left alone.
            row(14, 14, 10, 50, TaskState::default()),
            // Labelled already, or with an unlabelled parent: nothing.
            row(15, 15, 10, 200, labelled(5, 4, Some(77))),
            row(16, 16, 1, 200, TaskState::default()),
        ];
        let exe = |pid: u32| Some((1, if pid == 12 { 9 } else { 8 }));
        type Given = (u32, Option<(u64, u64)>, Option<u64>);
        let got: Vec<Given> = repairs(&rows, 150, exe)
            .iter()
            .map(|r| (r.task.tid, r.op.tags, r.op.contid.map(|c| c.0)))
            .collect();
        assert_eq!(
            got,
            [
                (11, Some((5, 4)), Some(77)),
                (12, Some((4, 4)), Some(77)),
                (13, Some((5, 4)), Some(77)),
            ]
        );
        // An exited parent (its process gone) is no source.
        let mut gone = rows.clone();
        gone[0].state.exited = true;
        assert!(repairs(&gone, 150, exe).is_empty());
    }
}
