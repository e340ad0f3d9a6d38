//! The trail is the write-ahead log of every change the daemon makes to
//! a task or a setns policy: the intent (`PTAGS_INTENT`, with the state
//! the change gives) is written, as the flush policy makes records
//! durable, before the kernel changes; the record of the request that
//! follows names the intents it settles (`intents=`). A daemon killed
//! between the two leaves an intent with no outcome: at the next start,
//! `recover` reads what the kernel holds and records what really happened
//! (`res=success`, `res=failed`, or `res=unknown` for a task that is gone,
//! with `recovered=yes`).

use std::time::{SystemTime, UNIX_EPOCH};

use log::{info, warn};
use ptags_audit::chain::record_text;
use ptags_audit::field;
use ptags_audit::query::Entry;
use ptags_bpf::{Join, SetOp, TaskId, TaskState};
use ptags_core::Errno;

use super::Daemon;
use crate::error::Error;
use crate::pipeline::records;

/// The request a change belongs to, as its intent names it.
pub(super) struct Change<'a> {
    pub op: &'a str,
    pub opid: u32,
    pub text: Option<&'a str>,
}

/// Intents of this run: numbered after the run's start, so that IDs
/// never repeat across restarts.
pub(super) struct Intents {
    run: u128,
    next: u64,
    /// Written for the request at hand, not yet settled by its record.
    open: Vec<String>,
}

impl Intents {
    pub(super) fn new() -> Intents {
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Intents {
            run,
            next: 0,
            open: Vec::new(),
        }
    }

    /// The `intents=` field settling the open intents, if any.
    pub(super) fn settle(&mut self) -> Option<String> {
        (!self.open.is_empty())
            .then(|| format!("intents={}", std::mem::take(&mut self.open).join(",")))
    }

    pub(super) fn any_open(&self) -> bool {
        !self.open.is_empty()
    }
}

impl Daemon<'_> {
    /// Writes the intent of a change, durably as the flush policy says,
    /// before it is made. A trail that cannot be written stops the
    /// change.
    fn intend(
        &mut self,
        body: impl FnOnce(&str) -> String,
        contid: Option<u64>,
    ) -> Result<(), Error> {
        let id = format!("{}-{}", self.intents.run, self.intents.next);
        self.intents.next += 1;
        let copy_of = self.copy_of(contid);
        self.pipeline.record_with(
            "PTAGS_INTENT",
            body(&id),
            contid,
            copy_of,
            None,
            &self.registry,
        );
        self.pipeline.commit_written().map_err(|e| {
            Error::new(
                Errno::Eio,
                format!("the audit trail cannot be written, so nothing is changed: {e:#}"),
            )
        })?;
        self.intents.open.push(id);
        Ok(())
    }

    /// Changes a task's state in the kernel, its intent written first.
    pub(super) fn set_task(
        &mut self,
        change: &Change<'_>,
        task: TaskId,
        op: &SetOp,
    ) -> Result<Option<u64>, Error> {
        let contid = op
            .contid
            .map(|c| c.0)
            .or(op.pending.and_then(|p| p.2).map(|c| c.0));
        self.intend(
            |id| {
                records::intent(
                    id,
                    change.op,
                    change.opid,
                    change.text,
                    (task.tid, task.start_ticks),
                    op,
                )
            },
            contid,
        )?;
        let result = self.kernel.set(task, op);
        // What the enrichment learnt of the task's container is stale:
        // it has another, or will at its exec.
        if op.contid.is_some() || op.pending.is_some() {
            self.pipeline.containers_changed();
        }
        let set = result?;
        if set.namespaces.is_some() {
            self.entered = set.namespaces;
        }
        Ok(set.old_contid)
    }

    /// Switches on a setns policy, its intent written first.
    pub(super) fn set_join_policy(
        &mut self,
        opid: u32,
        mnt_ns: u64,
        join: &Join,
    ) -> Result<(), Error> {
        self.intend(
            |id| records::join_intent(id, opid, mnt_ns, join),
            Some(join.contid),
        )?;
        Ok(self.kernel.set_join(mnt_ns, join)?)
    }

    /// Settles the intents left without an outcome by a daemon that was
    /// killed: what the kernel holds says whether each change was made.
    pub(super) fn recover(&mut self) -> Result<(), Error> {
        let open = unsettled(&self.config.log_dir);
        if open.is_empty() {
            return Ok(());
        }
        warn!(
            "{} changes were intended and not settled before the daemon stopped; recovering",
            open.len()
        );
        for (kind_is_join, body) in open {
            let id = field(&body, "intent").unwrap_or("?").to_owned();
            let res = if kind_is_join {
                self.join_outcome(&body)
            } else {
                self.task_outcome(&body)
            };
            info!("intent {id}: {res} (recovered)");
            let record = records::recovered(&body, res);
            self.pipeline
                .record("PTAGS_OP", record, None, &self.registry);
        }
        self.pipeline
            .commit()
            .map_err(|e| Error::internal(format!("writing the recovered outcomes: {e:#}")))
    }

    fn task_outcome(&self, intent: &str) -> &'static str {
        let num = |k: &str| field(intent, k).and_then(|v| v.parse::<u64>().ok());
        let (Some(tid), Some(start)) = (num("tid"), num("start")) else {
            return "unknown";
        };
        let task = TaskId {
            tid: tid as u32,
            start_ticks: start,
        };
        if TaskId::of(task.tid).ok() != Some(task) {
            return "unknown";
        }
        match self.kernel.task_state(task) {
            Ok(state) if applied(&state.unwrap_or_default(), &num) => "success",
            Ok(_) => "failed",
            Err(_) => "unknown",
        }
    }

    fn join_outcome(&self, intent: &str) -> &'static str {
        let num = |k: &str| field(intent, k).and_then(|v| v.parse::<u64>().ok());
        let on = self.kernel.joins().into_iter().any(|(ns, j)| {
            Some(ns) == num("mntns-id")
                && Some(j.contid) == num("contid")
                && Some(j.set_id) == num("set")
        });
        if on {
            "success"
        } else {
            "failed"
        }
    }
}

/// Whether a task's state shows the change an intent describes.
fn applied(state: &TaskState, num: &impl Fn(&str) -> Option<u64>) -> bool {
    let tags = match (num("set"), num("kept")) {
        (Some(set), Some(kept)) => state.set_id == set && state.kept_id == kept,
        _ => true,
    };
    let contid = num("new-contid").is_none_or(|c| state.contid == Some(c));
    let pending = match (num("pending-set"), num("pending-kept")) {
        // Still waiting for the exec, or taken at one since: then the
        // task has the set, and the container, it was to take.
        (Some(set), Some(kept)) => {
            let to_enter = num("pending-contid");
            let waiting = state.pending == Some((set, kept, to_enter));
            let taken = state.pending.is_none()
                && state.set_id == set
                && to_enter.is_none_or(|c| state.contid == Some(c));
            waiting || taken
        }
        _ => true,
    };
    tags && contid && pending
}

/// The intents of the last two files of the trail that no later record
/// settles, in order: (whether it is a setns policy's, its body).
fn unsettled(log_dir: &std::path::Path) -> Vec<(bool, String)> {
    let mut open: Vec<(String, bool, String)> = Vec::new();
    for name in ["audit.log.1", "audit.log"] {
        let Ok(text) = std::fs::read_to_string(log_dir.join(name)) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains("intent")) {
            let Some(record) = record_text(line) else {
                continue;
            };
            let Ok(entry) = Entry::parse(&record) else {
                continue;
            };
            if entry.kind == "PTAGS_INTENT" {
                if let Some(id) = field(entry.body, "intent") {
                    let join = field(entry.body, "op") == Some("join-policy");
                    open.push((id.to_owned(), join, entry.body.to_owned()));
                }
                continue;
            }
            let settled: Vec<&str> = field(entry.body, "intents")
                .map(|ids| ids.split(',').collect())
                .or_else(|| field(entry.body, "intent").map(|id| vec![id]))
                .unwrap_or_default();
            open.retain(|(id, _, _)| !settled.contains(&id.as_str()));
        }
    }
    open.into_iter()
        .map(|(_, join, body)| (join, body))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(intent: &str) -> impl Fn(&str) -> Option<u64> + '_ {
        move |k| field(intent, k).and_then(|v| v.parse().ok())
    }

    #[test]
    fn a_pending_change_is_applied_only_if_waiting_or_taken_whole() {
        let intent = "intent=1-0 op=prepare-exec opid=5 tid=5 start=9 pending-set=0 pending-kept=0 pending-contid=9191";
        let unlabelled = TaskState::default();
        assert!(
            !applied(&unlabelled, &fields(intent)),
            "never reached the kernel"
        );
        let waiting = TaskState {
            pending: Some((0, 0, Some(9191))),
            ..Default::default()
        };
        assert!(applied(&waiting, &fields(intent)));
        let taken = TaskState {
            contid: Some(9191),
            ..Default::default()
        };
        assert!(applied(&taken, &fields(intent)), "taken at an exec since");
        let write = "intent=1-1 op=write opid=5 tid=5 start=9 set=7 kept=3";
        assert!(!applied(&unlabelled, &fields(write)));
        let written = TaskState {
            set_id: 7,
            kept_id: 3,
            ..Default::default()
        };
        assert!(applied(&written, &fields(write)));
    }
}
