//! Containers made by runtimes (`ptags oci-hook`): the first process
//! labelled at createRuntime, the setns policy of audit-container-id.md
//! (carried out by the kernel programs, joins.bpf.h), and the end recorded
//! at poststop.

use crate::error::Error;
use log::{info, warn};
use ptags_bpf::{mount_namespace_id, Join, SetOp, TaskId};
use ptags_core::Errno;
use ptags_proto::Response;

use super::contid::need_audit_control;
use super::tree::{each_thread, Tree};
use super::wal::Change;
use super::{Caller, Daemon};
use crate::host::{namespace_inode, thread_ids, Pidfd};

impl Daemon<'_> {
    /// Labels a container's first process for its exec: every thread
    /// gets the container ID and tags as pending state (threads it makes
    /// meanwhile copy it), and with `join` the setns policy is switched
    /// on for its mount namespace. The container-ID rules apply as for `contid_set`
    /// (the runtime, the hook's parent, becomes the owner), except that
    /// threads do not count: the exec leaves one.
    pub(super) fn container_create(
        &mut self,
        caller: &Caller,
        pid: u32,
        id: u64,
        text: Option<&str>,
        join: bool,
    ) -> Result<Response, Error> {
        need_audit_control(caller)?;
        let process = Pidfd::open(pid)?;
        let ns = mount_namespace_id(pid)?;
        let ns_inode = namespace_inode(pid, "mnt")?;
        // The daemon's own namespace, and init's where it may be read.
        let host = [std::process::id(), 1].map(|p| mount_namespace_id(p).ok());
        if host.contains(&Some(ns)) {
            return Err(Error::new(
                Errno::Einval,
                format!("process {pid} is in the host's mount namespace: it is not a container's"),
            ));
        }
        let writer = self.writer(caller, pid)?;
        let task = TaskId::of(pid)?;
        let (set, kept) = self.tags_at_exec(task, text, &writer, caller.payer())?;
        let tree = Tree::new(self.kernel.tasks()?);
        let plan = self.decide_contid(caller, &tree, pid, id, true)?;
        let op = SetOp {
            pending: Some((set.0, kept.0, Some(plan.change))),
            ..Default::default()
        };
        let change = Change {
            op: "prepare-container",
            opid: pid,
            text,
        };
        let result = self.set_every_thread(&process, &change, &op);
        let result = result.and_then(|()| {
            if !join {
                return Ok(());
            }
            let policy = Join {
                contid: id,
                set_id: set.0,
                kept_id: kept.0,
            };
            self.set_join_policy(pid, ns, &policy)
        });
        self.finish_contid(caller, pid, &plan, result.is_ok());
        result?;
        info!("container {id}: process {pid} labelled (setns policy: {join})");
        Ok(Response::ContainerCreated {
            op: plan.decision.op().to_owned(),
            mnt_ns: join.then_some(ns_inode),
            mnt_ns_id: join.then_some(ns),
        })
    }

    /// Gives `op` to every thread of `pid`, and to threads made meanwhile
    /// from a thread not yet done.
    fn set_every_thread(
        &mut self,
        process: &Pidfd,
        change: &Change<'_>,
        op: &SetOp,
    ) -> Result<(), Error> {
        let pid = process.pid;
        each_thread(
            process,
            || thread_ids(pid),
            |tid| {
                let Ok(task) = TaskId::of(tid) else {
                    return Ok(false);
                };
                match self.set_task(change, task, op) {
                    Ok(_) => Ok(true),
                    Err(e) if e.errno() == Errno::Esrch => Ok(false),
                    Err(e) => Err(e),
                }
            },
        )
        .map(drop)
    }

    /// A runtime says a container stopped: its end is recorded now if
    /// its last task has gone (or was, when the drop was seen), and its
    /// setns policy goes with it. EBUSY while tasks remain, and nothing
    /// changes: the policy stays until the last one's exit drops it.
    pub(super) fn container_end(
        &mut self,
        caller: &Caller,
        contid: u64,
    ) -> Result<Response, Error> {
        need_audit_control(caller)?;
        let known = self.registry.0.contains_key(&contid);
        // A runtime reaps its container's processes after they exit:
        // their exit events are in the ring buffer now.
        self.poll_events();
        match self.kernel.container(contid)? {
            Some(row) if row.has_members() => Err(Error::new(
                    Errno::Ebusy,
                    format!(
                        "container {contid} still has {} tasks (and {} about to enter it); its end is recorded when the last one exits",
                    row.live, row.pending
                ),
            )),
            // The drop switches the policy off too.
            row => {
                self.drop_container(contid, "its runtime says it stopped", true);
                Ok(Response::Ended {
                    dropped: known || row.is_some(),
                })
            }
        }
    }

    /// Switches the setns policy off for every namespace joining `contid`.
    pub(super) fn forget_joins(&self, contid: u64) {
        for (ns, join) in self.kernel.joins() {
            if join.contid == contid {
                if let Err(e) = self.kernel.remove_join(ns) {
                    warn!("switching off the setns policy of {ns}: {e}");
                }
            }
        }
    }

    /// Switches off the policies of mount namespaces no task is in any
    /// more: a namespace with no task is gone, and its ID never returns.
    pub(super) fn forget_joins_of_gone_namespaces(&self, live: &std::collections::HashSet<u64>) {
        for (ns, join) in self.kernel.joins() {
            if live.contains(&ns) {
                continue;
            }
            match self.kernel.remove_join(ns) {
                Ok(_) => info!(
                    "container {}: setns policy off, its mount namespace {ns} is gone",
                    join.contid
                ),
                Err(e) => warn!("switching off the setns policy of {ns}: {e}"),
            }
        }
    }

    /// Tag sets the policies hand out, which must not be collected.
    pub(super) fn join_set_ids(&self) -> Vec<u64> {
        self.kernel
            .joins()
            .into_iter()
            .flat_map(|(_, j)| [j.set_id, j.kept_id])
            .collect()
    }
}
