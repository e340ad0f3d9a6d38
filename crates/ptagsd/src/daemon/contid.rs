//! Container IDs: reading, the set decision with its facts gathered from
//! the live processes, and `ps`.

use crate::error::Error;
use log::info;
use ptags_bpf::{namespaces, ContainerEntry, ContidChange, SetOp, TaskId};
use ptags_core::contid::{format_contid, Style};
use ptags_core::{decide, Container, ContainerId, Decision, Errno, Limits, SetRequest, TaskRef};
use ptags_proto::{ContidAnswer, PsFilter, PsRow, Response};

use super::tree::Tree;
use super::wal::Change;
use super::{now_secs, Caller, Daemon};
use crate::host::CAP_AUDIT_CONTROL;
use crate::pipeline::records;
use crate::store::ContainerRecord;

/// A permitted container-ID change, ready for the kernel.
#[derive(Debug, Clone, Copy)]
pub(super) struct ContidPlan {
    pub decision: Decision,
    pub target: TaskId,
    pub change: ContidChange,
    pub old: Option<u64>,
}

fn container_of(record: &ContainerRecord) -> Option<Container> {
    Some(Container {
        id: ContainerId::new(record.id)?,
        owner: TaskRef {
            pid: record.owner_pid,
            start_time: record.owner_start,
        },
        parent: record.parent.and_then(ContainerId::new),
        depth: record.depth,
    })
}

pub(super) fn need_audit_control(caller: &Caller) -> Result<(), Error> {
    if caller.creds.has_cap(CAP_AUDIT_CONTROL) {
        return Ok(());
    }
    Err(Error::new(
        Errno::Eperm,
        "reading and setting container IDs needs CAP_AUDIT_CONTROL",
    ))
}

impl Daemon<'_> {
    fn known_container(&self, id: u64) -> Option<Container> {
        if let Some(record) = self.registry.0.get(&id) {
            return container_of(record);
        }
        // A kernel row the registry lost (a database restored from an
        // older copy): in use, with an owner nobody can be.
        match self.kernel.container(id) {
            Ok(Some(row)) if row.has_members() => Some(Container {
                id: ContainerId::new(id)?,
                owner: TaskRef {
                    pid: 0,
                    start_time: 0,
                },
                parent: row.parent.and_then(ContainerId::new),
                depth: 1,
            }),
            _ => None,
        }
    }

    fn answer(&self, contid: Option<u64>) -> ContidAnswer {
        let id = contid.and_then(ContainerId::new);
        ContidAnswer {
            contid: id.map(ContainerId::get),
            chain: match id {
                Some(id) => self.chain(id).to_string(),
                None => format_contid(None, Style::Interpreted),
            },
        }
    }

    pub(super) fn contid_get(&self, caller: &Caller, pid: u32) -> Result<Response, Error> {
        need_audit_control(caller)?;
        let state = self.kernel.process_state(pid)?;
        Ok(Response::Contid(
            self.answer(state.unwrap_or_default().contid),
        ))
    }

    /// Gathers the facts of audit-container-id.md from one pass over the
    /// kernel's task list (`tree`) and decides; a new container is
    /// registered (durably) before the kernel can hold its ID.
    /// `at_exec`: the ID is taken at the target's next exec, which leaves
    /// it one thread, so its threads now do not count.
    pub(super) fn decide_contid(
        &mut self,
        caller: &Caller,
        tree: &Tree,
        pid: u32,
        id: u64,
        at_exec: bool,
    ) -> Result<ContidPlan, Error> {
        // Its last task exited and its end waits for the kernel's records
        // of it: the ID is free already (to those who may set IDs).
        if caller.creds.has_cap(CAP_AUDIT_CONTROL) && self.pipeline.is_dropping(id) {
            self.drop_container(id, "its last task exited", true);
        }
        let caller_row = tree
            .get(caller.pid())
            .ok_or_else(|| Error::gone(caller.pid()))?;
        let target_row = tree
            .get(pid)
            .filter(|r| r.pid == pid)
            .ok_or_else(|| Error::gone(pid))?;
        let unknown = TaskRef {
            pid: caller_row.ppid,
            start_time: 0,
        };
        let ancestors = tree.ancestors(pid);
        let limits = &self.config.limits;
        let request = SetRequest {
            id,
            caller: tree
                .task_ref(caller.pid())
                .ok_or_else(|| Error::gone(caller.pid()))?,
            caller_parent: tree.task_ref(caller_row.ppid).unwrap_or(unknown),
            caller_has_audit_control: caller.creds.has_cap(CAP_AUDIT_CONTROL),
            caller_contid: tree
                .process_state(caller.pid())
                .contid
                .and_then(ContainerId::new),
            target: tree.task_ref(pid).ok_or_else(|| Error::gone(pid))?,
            target_has_children: tree.has_children(pid),
            target_threads: if at_exec { 1 } else { tree.threads(pid) as u32 },
            target_ancestors: &ancestors,
            target_container: tree
                .process_state(pid)
                .contid
                .and_then(|c| self.known_container(c)),
            existing: self.known_container(id),
            container_count: self.registry.0.len(),
            limits: Limits {
                max_containers: limits.max_containers as usize,
                max_depth: limits.max_depth as usize,
            },
        };
        let decision =
            decide(&request).map_err(|errno| Error::new(errno, refusal(errno, pid, id)))?;
        let entry = match decision {
            Decision::Create(c) => {
                // A row left by a dropped container whose drop is not
                // handled yet must not lend its owner to the new one.
                self.drop_container(id, "its ID is being reused", true);
                let record = ContainerRecord {
                    id,
                    parent: c.parent.map(ContainerId::get),
                    depth: c.depth,
                    owner_pid: c.owner.pid,
                    owner_start: c.owner.start_time,
                    created: now_secs(),
                    userns: crate::host::namespace_inode(pid, "user").ok(),
                };
                self.add_container(record)?;
                Some(ContainerEntry {
                    parent: record.parent,
                    owner_pid: record.owner_pid,
                    owner_start_ticks: record.owner_start,
                    live: 0,
                    pending: 0,
                })
            }
            Decision::Inject(_) => None,
        };
        Ok(ContidPlan {
            decision,
            target: target_row.id,
            change: (id, entry),
            old: target_row.state.contid,
        })
    }

    /// After the kernel's answer: a container created for a change that
    /// failed is forgotten again; a change that happened is logged.
    pub(super) fn finish_contid(
        &mut self,
        caller: &Caller,
        pid: u32,
        plan: &ContidPlan,
        done: bool,
    ) {
        let id = plan.change.0;
        let entered = self.entered.take();
        if !done {
            if matches!(plan.decision, Decision::Create(_)) {
                self.drop_container(id, "the change that created it failed", false);
            }
            return;
        }
        let body = records::container_op(
            plan.decision.op(),
            pid,
            plan.decision.id().get(),
            plan.old,
            &caller.subject,
            None,
        );
        info!("CONTAINER_OP {body}");
        let contid = plan.decision.id().get();
        let info = entered.and_then(|ns| self.pipeline.ns_info(&ns, Some(contid)));
        self.outcome_with(
            "CONTAINER_OP",
            body,
            Some(contid),
            info.map(|b| ("NS_INFO", b)),
        );
    }

    pub(super) fn contid_set(
        &mut self,
        caller: &Caller,
        pid: u32,
        id: u64,
    ) -> Result<Response, Error> {
        let tree = Tree::new(self.kernel.tasks()?);
        let plan = self.decide_contid(caller, &tree, pid, id, false)?;
        let op = SetOp {
            contid: Some(plan.change),
            alone: true,
            ..Default::default()
        };
        let change = Change {
            op: plan.decision.op(),
            opid: pid,
            text: None,
        };
        let result = self.set_task(&change, plan.target, &op);
        self.finish_contid(caller, pid, &plan, result.is_ok());
        result?;
        Ok(Response::ContidSet {
            op: plan.decision.op().to_owned(),
            old: plan.old,
        })
    }

    /// Tasks with their container chains and tags. Chains are shown only
    /// to callers that may read container IDs.
    pub(super) fn ps(&self, caller: &Caller, filter: &PsFilter) -> Result<Response, Error> {
        let may_see_ids = caller.creds.has_cap(CAP_AUDIT_CONTROL);
        if filter.contid.is_some() {
            need_audit_control(caller)?;
        }
        let selector = filter.selector();
        let mut rows = Vec::new();
        let tree = Tree::new(self.kernel.tasks()?);
        for row in tree.rows() {
            let is_main = row.pid == row.id.tid;
            if !filter.threads && !is_main {
                continue;
            }
            // A process is listed with its state while any thread lives.
            let state = if is_main && !filter.threads {
                tree.process_state(row.pid)
            } else {
                row.state
            };
            let id = state.contid.and_then(ContainerId::new);
            let chain = id.map(|id| self.chain(id));
            if let Some(want) = filter.contid {
                let inside = match &chain {
                    Some(chain) if filter.nested => chain.0.iter().any(|c| c.get() == want),
                    Some(chain) => chain.0[0].get() == want,
                    None => false,
                };
                if !inside {
                    continue;
                }
            }
            let tags = self.set_of(state.set_id);
            if let Some(sel) = &selector {
                if !tags.iter().any(|t| sel.matches(t.name())) {
                    continue;
                }
            }
            if filter.labelled && tags.is_empty() && id.is_none() {
                continue;
            }
            let (contid, chain) = match (may_see_ids, chain) {
                (true, Some(chain)) => (id.map(ContainerId::get), chain.to_string()),
                (true, None) => (None, format_contid(None, Style::Interpreted)),
                (false, _) => (None, "hidden".to_owned()),
            };
            let namespaces =
                (filter.namespaces && may_see_ids && row.namespaces.known()).then(|| {
                    (0..namespaces::OWN_KINDS)
                        .map(|s| (namespaces::KINDS[s].to_owned(), row.namespaces.inum[s]))
                        .collect()
                });
            rows.push(PsRow {
                pid: row.pid,
                tid: row.id.tid,
                ppid: row.ppid,
                comm: row.comm.clone(),
                contid,
                chain,
                tags: tags.to_read_format(),
                namespaces,
            });
        }
        rows.sort_by_key(|r| (r.pid, r.tid));
        Ok(Response::Processes { rows })
    }
}

/// Why a container-ID change was refused, in words.
fn refusal(errno: Errno, pid: u32, id: u64) -> String {
    match errno {
        Errno::Einval => "the unset value (-1) cannot be set: container IDs are never unset".into(),
        Errno::Eperm => "setting container IDs needs CAP_AUDIT_CONTROL in the initial user namespace".into(),
        Errno::Ebusy => format!("process {pid} has children or several threads"),
        Errno::Exdev => format!("process {pid} is not a descendant of the caller or of the caller's parent (or is one of them)"),
        Errno::Eexist => format!("process {pid} already has a container ID and this is not nesting"),
        Errno::Enotuniq => format!("container ID {id} belongs to a container the caller does not own"),
        Errno::Enospc => "the configured number of containers is reached (limits.max_containers)".into(),
        Errno::Emlink => "the configured nesting depth is reached (limits.max_depth)".into(),
        other => format!("internal error: {}", other.name()),
    }
}
