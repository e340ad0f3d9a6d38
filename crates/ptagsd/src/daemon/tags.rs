//! Reading and writing tags, and preparing a process's exec.

use crate::error::Error;
use log::info;
use ptags_bpf::{SetOp, TaskId};
use ptags_core::{apply_write, Errno, SetId, TagSet, Target as Relation, Writer};
use ptags_proto::{Response, Target};

use super::tree::{each_thread, Tree};
use super::wal::Change;
use super::{Caller, Daemon, Payer};
use crate::host::{exe_of, thread_ids, Creds, Pidfd, CAP_MAC_ADMIN};
use ptags_bpf::FactsReader;

/// The threads a target names: one, or every thread of the process.
fn threads_of(facts: &FactsReader, target: Target) -> Result<Vec<u32>, Error> {
    match target.tid {
        Some(tid) => {
            if facts.read(tid)?.tgid != target.pid {
                return Err(Error::new(
                    Errno::Esrch,
                    format!("thread {tid} is not a thread of process {}", target.pid),
                ));
            }
            Ok(vec![tid])
        }
        None => thread_ids(target.pid),
    }
}

impl Daemon<'_> {
    /// Tags are public: anyone may read them.
    pub(super) fn read(&self, target: Target) -> Result<Response, Error> {
        let tid = target.tid.unwrap_or(target.pid);
        let facts = self.kernel.facts().read(tid)?;
        if facts.tgid != target.pid {
            return Err(Error::gone(tid));
        }
        let set = facts.state.unwrap_or_default().set_id;
        Ok(Response::Tags {
            tags: self.set_of(set).to_read_format(),
        })
    }

    /// A task's tags now.
    fn tags_of(&self, task: TaskId) -> Result<TagSet, Error> {
        let state = self.kernel.task_state(task)?;
        Ok(self.set_of(state.unwrap_or_default().set_id))
    }

    /// The writer: the caller's tags at the start of the write, its
    /// CAP_MAC_ADMIN, and its relation to the target process.
    pub(super) fn writer(&self, caller: &Caller, pid: u32) -> Result<Writer, Error> {
        let relation = if pid == caller.pid() {
            Relation::Itself
        } else {
            let target = Creds::read(self.kernel.facts(), pid)?;
            if !caller.creds.may_access(&target) {
                let whose = if target.dumpable {
                    "another user's"
                } else {
                    "not dumpable"
                };
                return Err(Error::new(
                    Errno::Eperm,
                    format!("may not act on process {pid}: {whose}, and the caller lacks CAP_SYS_PTRACE"),
                ));
            }
            Relation::Other { may_access: true }
        };
        Ok(Writer::new(
            &caller.tags,
            caller.creds.has_cap(CAP_MAC_ADMIN),
            relation,
        ))
    }

    /// Applies a write to each named thread. Each thread's lines up to a
    /// failing one stay applied; the first failure is reported. Also
    /// says whether any thread's tags changed (a failed write may have
    /// changed some, a successful one none).
    pub(super) fn write(
        &mut self,
        caller: &Caller,
        target: Target,
        text: &str,
    ) -> (Result<Response, Error>, bool) {
        let mut changed = false;
        let result = self.write_threads(caller, target, text, &mut changed);
        (result, changed)
    }

    fn write_threads(
        &mut self,
        caller: &Caller,
        target: Target,
        text: &str,
        changed: &mut bool,
    ) -> Result<Response, Error> {
        // Held across the write: each check that it is still alive proves
        // that the pid (and so the threads listed under it) was not reused.
        let process = Pidfd::open(target.pid)?;
        let writer = self.writer(caller, target.pid)?;
        process.check_alive()?;
        let mut failure = None;
        let done = each_thread(
            &process,
            || threads_of(self.kernel.facts(), target),
            |tid| match self.write_thread(target.pid, tid, text, &writer, caller.payer()) {
                Ok((failed, thread_changed)) => {
                    *changed |= thread_changed;
                    if let Some(f) = failed {
                        failure.get_or_insert(f);
                    }
                    Ok(true)
                }
                // It exited meanwhile: nothing to label.
                Err(f) if f.errno() == Errno::Esrch => Ok(false),
                Err(f) => Err(f),
            },
        )?;
        info!(
            "write by pid {} to {}{}: {} threads{}",
            caller.pid(),
            target.pid,
            target.tid.map(|t| format!("/{t}")).unwrap_or_default(),
            done.len(),
            failure
                .as_ref()
                .map(|f: &Error| format!(", failed at {f}"))
                .unwrap_or_default()
        );
        match failure {
            Some(f) => Err(f),
            None => Ok(Response::Written {
                threads: done.len(),
            }),
        }
    }

    /// The tags a prepared program starts with (not pruned by its exec):
    /// `text` applied to the task's tags, or without a text its kept
    /// tags, as a plain exec would leave. Interned: (set, kept subset).
    pub(super) fn tags_at_exec(
        &mut self,
        task: TaskId,
        text: Option<&str>,
        writer: &Writer,
        payer: Payer,
    ) -> Result<(SetId, SetId), Error> {
        let current = self.tags_of(task)?;
        let next: TagSet = match text {
            Some(text) => {
                let outcome = apply_write(&current, text.as_bytes(), writer);
                if let Some(f) = outcome.failure {
                    return Err(Error::new(f.errno(), f.reason.to_string()).at_line(f.line));
                }
                outcome.tags
            }
            None => current.kept(),
        };
        self.intern(&next, payer)
    }

    /// One thread: its current set, the write, the new set stored, then
    /// given to the kernel. Returns the line failure, if any, and whether
    /// the thread's tags changed.
    fn write_thread(
        &mut self,
        pid: u32,
        tid: u32,
        text: &str,
        writer: &Writer,
        payer: Payer,
    ) -> Result<(Option<Error>, bool), Error> {
        let facts = self.kernel.facts().read(tid)?;
        // A TID reused by another process's thread since it was listed.
        if facts.tgid != pid {
            return Err(Error::gone(tid));
        }
        let task = facts.id;
        let current = self.set_of(facts.state.unwrap_or_default().set_id);
        let outcome = apply_write(&current, text.as_bytes(), writer);
        let failure = outcome
            .failure
            .map(|f| Error::new(f.errno(), f.reason.to_string()).at_line(f.line));
        let changed = outcome.tags != current;
        if changed {
            let (set, kept) = self.intern(&outcome.tags, payer)?;
            let op = SetOp {
                tags: Some((set.0, kept.0)),
                ..Default::default()
            };
            let change = Change {
                op: "write",
                opid: pid,
                text: Some(text),
            };
            self.set_task(&change, task, &op)?;
        }
        Ok((failure, changed))
    }

    /// Prepares the caller's own child, forked and not yet exec'd, to
    /// start its program with these tags (not pruned) and this container
    /// ID: `ptags run`.
    pub(super) fn prepare_exec(
        &mut self,
        caller: &Caller,
        pid: u32,
        text: Option<&str>,
        contid: Option<u64>,
    ) -> Result<Response, Error> {
        let task = TaskId::of(pid)?;
        let tree = Tree::new(self.kernel.tasks()?);
        let parent = tree.get(pid).map(|r| r.ppid);
        let exe = exe_of(pid);
        if parent != Some(caller.pid()) || exe.is_none() || exe != exe_of(caller.pid()) {
            return Err(Error::new(
                Errno::Eperm,
                format!("process {pid} is not a child of the caller that still runs the caller's program"),
            ));
        }
        // The child is the caller's own fork: it writes to itself.
        let writer = Writer::new(
            &caller.tags,
            caller.creds.has_cap(CAP_MAC_ADMIN),
            Relation::Itself,
        );
        let (set, kept) = self.tags_at_exec(task, text, &writer, caller.payer())?;
        let change = match contid {
            Some(id) => Some(self.decide_contid(caller, &tree, pid, id, false)?),
            None => None,
        };
        let op = SetOp {
            pending: Some((set.0, kept.0, change.map(|c| c.change))),
            alone: change.is_some(),
            ..Default::default()
        };
        let what = Change {
            op: "prepare-exec",
            opid: pid,
            text,
        };
        let result = self.set_task(&what, task, &op);
        if let Some(plan) = &change {
            self.finish_contid(caller, pid, plan, result.is_ok());
        }
        result?;
        Ok(Response::Prepared)
    }
}
