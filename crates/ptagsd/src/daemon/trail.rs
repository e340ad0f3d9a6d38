//! What the daemon records of the requests it answers.

use ptags_core::ContainerId;
use ptags_proto::Response;

use super::repair::Repair;
use super::{Caller, Daemon};
use crate::error::Error;
use crate::host::CAP_AUDIT_CONTROL;
use crate::pipeline::records::{self, TagOp};
use crate::pipeline::Source;

impl Daemon<'_> {
    /// Records the outcome of a request; the first names the intents it
    /// settles.
    pub(super) fn outcome(&mut self, kind: &'static str, body: String, contid: Option<u64>) {
        self.outcome_with(kind, body, contid, None);
    }

    /// As [`Daemon::outcome`], followed by an auxiliary record with the
    /// same stamp (a `CONTAINER_OP`'s `NS_INFO`).
    pub(super) fn outcome_with(
        &mut self,
        kind: &'static str,
        body: String,
        contid: Option<u64>,
        follower: Option<(&'static str, String)>,
    ) {
        let body = match self.intents.settle() {
            Some(intents) => format!("{body} {intents}"),
            None => body,
        };
        let copy_of = self.copy_of(contid);
        self.pipeline
            .record_with(kind, body, contid, copy_of, follower, &self.registry);
    }

    /// Records a tag operation, done, or refused within the caller's
    /// rate limit.
    /// `changed`: whether the operation changed anything. Records of
    /// operations that changed nothing (refused, or a write of comments
    /// and queries) cost their caller nothing, and are rate-limited like
    /// refusals; a change is always recorded.
    pub(super) fn record_tag_op(
        &mut self,
        caller: &Caller,
        op: &TagOp<'_>,
        result: &Result<Response, Error>,
        changed: bool,
    ) {
        if !changed && !self.admit_unchanged(caller) {
            return;
        }
        let chain = self.contid_of(op.pid).map(|id| self.chain(id));
        let threads = match result {
            Ok(Response::Written { threads }) => Some(*threads),
            _ => None,
        };
        let body = records::tag_op(
            op,
            chain.as_ref(),
            &caller.subject,
            threads,
            result.as_ref().err(),
        );
        let contid = chain.as_ref().and_then(|c| c.0.first()).map(|id| id.get());
        self.outcome("PTAGS_OP", body, contid);
    }

    /// Whether the caller is container `contid`'s owner: the process
    /// (the same one, by its start time) that set its ID.
    pub(super) fn is_owner(&self, caller: &Caller, contid: u64) -> bool {
        self.owned_by(caller.pid(), contid)
    }

    /// Whether process `pid` (the same one, by its start time) set
    /// container `contid`'s ID.
    pub(super) fn owned_by(&self, pid: u32, contid: u64) -> bool {
        self.registry.0.get(&contid).is_some_and(|r| {
            r.owner_pid == pid && ptags_bpf::procfs::start_ticks(pid) == Some(r.owner_start)
        })
    }

    /// A live process's container, for records of requests about it.
    pub(super) fn contid_of(&self, pid: u32) -> Option<ContainerId> {
        let state = self.kernel.process_state(pid).ok().flatten()?;
        state.contid.and_then(ContainerId::new)
    }

    /// Whether the record of a request of `caller` that changed nothing
    /// may be written: always for callers with CAP_AUDIT_CONTROL; for the
    /// others, within the rate of their user in their container (all of a
    /// machine's root containers do not share one bucket).
    pub(super) fn admit_unchanged(&mut self, caller: &Caller) -> bool {
        // An outcome that settles intents is always written.
        if caller.creds.has_cap(CAP_AUDIT_CONTROL) || self.intents.any_open() {
            return true;
        }
        let source = Source {
            uid: caller.creds.uids[0],
            contid: self.contid_of(caller.pid()).map(ContainerId::get),
        };
        self.pipeline.admit_unchanged(source)
    }

    /// Records the setns policy of a container switched on.
    pub(super) fn record_join_policy(
        &mut self,
        caller: &Caller,
        pid: u32,
        contid: u64,
        mnt_ns: (u64, u64),
    ) {
        let body = records::join_policy(pid, contid, mnt_ns, &caller.subject);
        self.outcome("CONTAINER_OP", body, Some(contid));
    }

    /// Records a refused container-ID change, within the caller's rate
    /// limit.
    pub(super) fn record_refused_contid(
        &mut self,
        caller: &Caller,
        pid: u32,
        id: u64,
        failure: &Error,
    ) {
        if !self.admit_unchanged(caller) {
            return;
        }
        let old = self.contid_of(pid).map(ContainerId::get);
        let body = records::container_op("set", pid, id, old, &caller.subject, Some(failure));
        self.outcome("CONTAINER_OP", body, old);
    }

    /// Records a task given the state it failed to inherit.
    pub(super) fn record_repair(&mut self, r: &Repair, done: bool) {
        let contid = r.op.contid.map(|(c, _)| c);
        let chain = contid.and_then(ContainerId::new).map(|id| self.chain(id));
        let body = records::repair(
            (r.pid, r.task.tid),
            r.parent,
            r.op.tags,
            chain.as_ref(),
            done,
        );
        self.outcome("PTAGS_REPAIR", body, contid);
    }

    /// Records a refused end of a container (`ptags oci-hook` poststop).
    pub(super) fn record_refused_end(&mut self, caller: &Caller, id: u64, failure: &Error) {
        if !self.admit_unchanged(caller) {
            return;
        }
        let body = records::refused_end(id, &caller.subject, failure);
        self.outcome("CONTAINER_OP", body, Some(id));
    }
}
