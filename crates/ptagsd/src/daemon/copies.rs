//! Containers' own copies of their records: their policies (set, shown,
//! cleared, kept with the container and restored at start), who may
//! follow a copy, and the stop of a container whose copy could not keep
//! up ("panic for a container means killing that container, not the
//! machine").

use std::collections::HashSet;
use std::time::Instant;

use anyhow::Result;
use log::{info, warn};
use ptags_audit::policy::{Events, Policy};
use ptags_core::{ContainerId, Errno};
use ptags_proto::{PolicyInfo, Response};

use super::{Caller, Daemon};
use crate::error::Error;
use crate::host::{self, CAP_AUDIT_CONTROL, CAP_AUDIT_READ};
use crate::pipeline::copies::follow::{self, FollowStream};
use crate::pipeline::copies::{ContainerCopy, PanicReason};
use crate::pipeline::records;

/// How a container was stopped, for its `CONTAINER_OP op=panic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Killed {
    /// `cgroup.kill` (its cgroup held it alone) or `sigkill`.
    pub method: &'static str,
    /// Tasks found in it.
    pub tasks: usize,
    /// Rounds of killing until none was left.
    pub rounds: u32,
    /// Tasks still alive when the daemon gave up (0: stopped).
    pub left: usize,
    /// From the event that crossed the limit to the start of the kill,
    /// and the kill itself.
    pub detected_ms: u64,
    pub millis: u64,
}

/// Rounds of SIGKILL before giving up on a container whose tasks fork
/// faster than they die (each round lists the tasks again).
const KILL_ROUNDS: u32 = 200;

/// Followers of one copy at once.
const MAX_FOLLOWERS: u64 = 8;

impl Daemon<'_> {
    /// Opens the copies of the policies stored with their containers, and
    /// clears the kernel's event requests no policy makes any more.
    pub(super) fn restore_copies(&mut self) -> Result<()> {
        let stored = self.store.load_policies()?;
        let mut kept = HashSet::new();
        for (contid, text) in stored {
            if !self.registry.0.contains_key(&contid) {
                let _ = self.store.put_policy(contid, None);
                continue;
            }
            let opened = Policy::parse(&text)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|p| {
                    ContainerCopy::open(contid, &self.instance(contid), p, &self.copy_places)
                });
            match opened {
                Ok(copy) => {
                    self.pipeline.set_copy(contid, Some(copy));
                    kept.insert(contid);
                }
                Err(e) => {
                    warn!("container {contid}'s audit copy could not be opened: {e:#}");
                    let body = format!(
                        "op=audit-policy action=restore contid={contid} res=failed reason={}",
                        ptags_audit::encode_untrusted(format!("{e:#}").as_bytes())
                    );
                    self.outcome("CONTAINER_OP", body, None);
                }
            }
        }
        self.sync_copy_events();
        if !kept.is_empty() {
            info!("restored the audit copies of {} containers", kept.len());
        }
        Ok(())
    }

    /// What tells this container from an earlier one with its ID.
    fn instance(&self, contid: u64) -> String {
        self.registry.0.get(&contid).map_or_else(String::new, |r| {
            format!("{} {} {}\n", r.created, r.owner_pid, r.owner_start)
        })
    }

    /// Asks the kernel for the exec and exit events of every container
    /// whose copy, or an ancestor's, wants them (a nested container's
    /// tasks are its ancestors' too), and for none of the others'.
    pub(super) fn sync_copy_events(&self) {
        let mut asked: HashSet<u64> = self.kernel.copy_event_containers().into_iter().collect();
        for &id in self.registry.0.keys() {
            let e = self.copy_events_wanted(id);
            if e.exec || e.exit || asked.contains(&id) {
                if let Err(err) = self.kernel.set_copy_events(id, e.exec, e.exit) {
                    warn!("{err}");
                }
            }
            asked.remove(&id);
        }
        // Entries of containers gone (a daemon killed before it cleared them).
        for id in asked {
            let _ = self.kernel.set_copy_events(id, false, false);
        }
    }

    /// The exec and exit events the copies of container `id` and of its
    /// ancestors want.
    fn copy_events_wanted(&self, id: u64) -> Events {
        let Some(cid) = ContainerId::new(id) else {
            return Events::default();
        };
        self.chain(cid)
            .0
            .iter()
            .filter_map(|c| self.pipeline.copy(c.get()))
            .fold(Events::default(), |acc, copy| Events {
                exec: acc.exec || copy.policy().events.exec,
                exit: acc.exit || copy.policy().events.exit,
            })
    }

    /// Asks the kernel for the events a new container's ancestors' copies
    /// want of its tasks.
    pub(super) fn ask_copy_events(&self, id: u64) {
        let e = self.copy_events_wanted(id);
        if e.exec || e.exit {
            if let Err(err) = self.kernel.set_copy_events(id, e.exec, e.exit) {
                warn!("{err}");
            }
        }
    }

    /// Whether the caller may set or clear `contid`'s policy:
    /// CAP_AUDIT_CONTROL on the host, or being the container's owner
    /// (the orchestrator that set its ID).
    /// Whether a container exists is told only to those who may manage it.
    fn may_manage(&self, caller: &Caller, contid: u64) -> Result<(), Error> {
        let record = self.registry.0.get(&contid);
        if caller.creds.has_cap(CAP_AUDIT_CONTROL) {
            return record.map(|_| ()).ok_or_else(|| unknown(contid));
        }
        if self.is_owner(caller, contid) {
            return Ok(());
        }
        Err(Error::new(
            Errno::Eperm,
            format!("container {contid}'s audit policy may be changed by its owner or with CAP_AUDIT_CONTROL"),
        ))
    }

    /// Whether the caller may read `contid`'s copy: on the host with
    /// CAP_AUDIT_READ or CAP_AUDIT_CONTROL, or as its owner; in a
    /// container, only its own container or one nested in it, and with
    /// CAP_AUDIT_READ in the user namespace its own container was made in.
    fn may_read(&self, caller: &Caller, contid: u64) -> Result<(), Error> {
        let inside = self.contid_of(caller.pid());
        let Some(own) = inside else {
            if caller.creds.has_cap(CAP_AUDIT_READ) || self.may_manage(caller, contid).is_ok() {
                return Ok(());
            }
            return Err(Error::new(
                Errno::Eperm,
                "reading a container's audit copy from the host needs CAP_AUDIT_READ",
            ));
        };
        let within = ContainerId::new(contid).is_some_and(|id| self.chain(id).0.contains(&own));
        if !within {
            // As if it did not exist: a container learns nothing of others.
            return Err(unknown(contid));
        }
        // In the user namespace the container was made in: not one a
        // process inside made to have capabilities in.
        let cap = caller.creds.cap_eff & (1 << CAP_AUDIT_READ) != 0;
        let made_in = self.registry.0.get(&own.get()).and_then(|r| r.userns);
        let userns = host::namespace_inode(caller.pid(), "user").ok();
        if cap && made_in.is_some() && userns == made_in {
            return Ok(());
        }
        Err(Error::new(
            Errno::Eperm,
            "reading the container's audit copy needs CAP_AUDIT_READ in the container",
        ))
    }

    pub(super) fn audit_policy_set(
        &mut self,
        caller: &Caller,
        contid: u64,
        text: &str,
    ) -> Result<Response, Error> {
        let result = self.set_policy(caller, contid, text);
        self.record_policy_op(caller, contid, Some(text), &result);
        result
    }

    /// Records a policy set or cleared, or refused (within the caller's
    /// rate of refusals, as any request that changed nothing).
    fn record_policy_op(
        &mut self,
        caller: &Caller,
        contid: u64,
        text: Option<&str>,
        result: &Result<Response, Error>,
    ) {
        if result.is_err() && !self.admit_unchanged(caller) {
            return;
        }
        let body = records::audit_policy(contid, text, &caller.subject, result.as_ref().err());
        self.outcome("CONTAINER_OP", body, Some(contid));
    }

    fn set_policy(&mut self, caller: &Caller, contid: u64, text: &str) -> Result<Response, Error> {
        self.may_manage(caller, contid)?;
        let policy = Policy::parse(text).map_err(|e| {
            let refused = Error::new(Errno::Einval, format!("the policy: {}", e.message));
            // Line 0: the whole text (over the size limit).
            match e.line {
                0 => refused,
                line => refused.at_line(line),
            }
        })?;
        let canonical = policy.to_text();
        // The copy it replaces ends first (its writer done with the log,
        // which the new one continues); it comes back if the new one
        // cannot be opened, and nothing is stored.
        let old = self.pipeline.take_copy(contid);
        let copy =
            match ContainerCopy::open(contid, &self.instance(contid), policy, &self.copy_places) {
                Ok(copy) => copy,
                Err(e) => {
                    if let Some(old) = old {
                        let policy = old.policy().clone();
                        drop(old);
                        if let Ok(again) = ContainerCopy::open(
                            contid,
                            &self.instance(contid),
                            policy,
                            &self.copy_places,
                        ) {
                            self.pipeline.set_copy(contid, Some(again));
                        }
                    }
                    return Err(Error::new(Errno::Eio, format!("opening the copy: {e:#}")));
                }
            };
        drop(old);
        self.store
            .put_policy(contid, Some(&canonical))
            .map_err(|e| Error::internal(format!("storing the policy: {e:#}")))?;
        self.pipeline.set_copy(contid, Some(copy));
        self.sync_copy_events();
        self.policy_info(contid).map(Response::AuditPolicy)
    }

    pub(super) fn audit_policy_clear(
        &mut self,
        caller: &Caller,
        contid: u64,
    ) -> Result<Response, Error> {
        let result = self.may_manage(caller, contid).and_then(|()| {
            if self.pipeline.copy(contid).is_none() {
                return Err(no_policy(contid));
            }
            self.end_copy(contid);
            Ok(Response::Ended { dropped: false })
        });
        self.record_policy_op(caller, contid, None, &result);
        result
    }

    /// Ends a container's copy and forgets its policy (its log stays).
    pub(super) fn end_copy(&mut self, contid: u64) {
        if self.pipeline.copy(contid).is_none() {
            return;
        }
        if let Err(e) = self.store.put_policy(contid, None) {
            warn!("forgetting container {contid}'s audit policy: {e:#}");
        }
        self.pipeline.set_copy(contid, None);
        self.sync_copy_events();
    }

    pub(super) fn audit_policy_get(&self, caller: &Caller, contid: u64) -> Result<Response, Error> {
        self.may_read(caller, contid)?;
        self.policy_info(contid).map(Response::AuditPolicy)
    }

    pub(super) fn audit_policy_list(&self, caller: &Caller) -> Result<Response, Error> {
        let mut ids: Vec<u64> = self.pipeline.copies().map(|c| c.contid()).collect();
        ids.sort_unstable();
        let policies = ids
            .into_iter()
            .filter(|&id| self.may_read(caller, id).is_ok())
            .filter_map(|id| self.policy_info(id).ok())
            .collect();
        Ok(Response::AuditPolicies { policies })
    }

    fn policy_info(&self, contid: u64) -> Result<PolicyInfo, Error> {
        let copy = self
            .pipeline
            .copy(contid)
            .ok_or_else(|| no_policy(contid))?;
        let c = copy.counts();
        Ok(PolicyInfo {
            contid,
            text: copy.policy().to_text(),
            log: copy.log_dir().map(|d| d.display().to_string()),
            taken: c.taken,
            filtered: c.filtered,
            over_rate: c.over_rate,
            dropped: c.dropped,
            written: c.written,
            followers: c.followers,
        })
    }

    /// Starts a follower of a copy: the caller's own container's unless
    /// it names one.
    pub(super) fn audit_follow(
        &mut self,
        caller: &Caller,
        contid: Option<u64>,
        from: follow::From,
    ) -> Result<Response, Error> {
        let contid = match (contid, self.contid_of(caller.pid())) {
            (Some(c), _) => c,
            (None, Some(own)) => own.get(),
            (None, None) => {
                return Err(Error::new(
                    Errno::Einval,
                    "the caller is in no container: name the container to follow",
                ))
            }
        };
        self.may_read(caller, contid)?;
        let copy = self
            .pipeline
            .copy_mut(contid)
            .ok_or_else(|| no_policy(contid))?;
        // Each follower may hold the policy's queue: their number is
        // bounded so that the memory a copy holds is.
        if copy.counts().followers >= MAX_FOLLOWERS {
            return Err(Error::new(
                Errno::Eagain,
                format!("container {contid}'s copy has {MAX_FOLLOWERS} followers already"),
            ));
        }
        let queue = copy.follow();
        self.follow = Some(FollowStream {
            contid,
            queue,
            log_dir: copy.log_dir().map(|d| d.to_owned()),
            from,
            started_ms: host::now().as_millis() as u64,
        });
        Ok(Response::Following { contid })
    }

    /// The follower a request started, for its connection to serve.
    pub fn take_follow(&mut self) -> Option<FollowStream> {
        self.follow.take()
    }

    /// Stops the containers whose copy asked it.
    pub(super) fn handle_panics(&mut self) {
        for (contid, reason, at) in self.pipeline.take_panics() {
            let detected_ms = host::now().saturating_sub(at).as_millis() as u64;
            self.panic_container(contid, reason, detected_ms);
        }
    }

    /// Kills every task of container `contid` and of those nested in it,
    /// and records it (`CONTAINER_OP op=panic`).
    fn panic_container(&mut self, contid: u64, reason: PanicReason, detected_ms: u64) {
        let Some(id) = ContainerId::new(contid) else {
            return;
        };
        let subtree: HashSet<u64> = self
            .registry
            .0
            .keys()
            .copied()
            .filter(|&c| ContainerId::new(c).is_some_and(|c| self.chain(c).0.contains(&id)))
            .chain([contid])
            .collect();
        let killed = Killed {
            detected_ms,
            ..self.kill_subtree(&subtree)
        };
        warn!(
            "container {contid} stopped ({}): {} tasks by {} in {} ms",
            reason.as_str(),
            killed.tasks,
            killed.method,
            killed.millis
        );
        let body = records::panic(contid, reason.as_str(), &killed);
        self.outcome("CONTAINER_OP", body, Some(contid));
    }

    /// The live processes of the containers in `subtree`: pid and start
    /// time, from their threads (a process whose main thread has ended
    /// is named by its pid and that thread's start, which it keeps).
    fn members(&self, subtree: &HashSet<u64>) -> Vec<(u32, u64)> {
        let Ok(rows) = self.kernel.tasks() else {
            return Vec::new();
        };
        let mut found: std::collections::BTreeMap<u32, Option<u64>> = Default::default();
        for r in rows {
            if r.state.exited || !r.state.contid.is_some_and(|c| subtree.contains(&c)) {
                continue;
            }
            // The main thread's start, as the kernel listed it, is the
            // process's.
            let main = (r.id.tid == r.pid).then_some(r.id.start_ticks);
            let start = found.entry(r.pid).or_insert(main);
            *start = start.or(main);
        }
        found
            .into_iter()
            .filter_map(|(pid, start)| {
                Some((pid, start.or_else(|| ptags_bpf::procfs::start_ticks(pid))?))
            })
            .collect()
    }

    fn kill_subtree(&self, subtree: &HashSet<u64>) -> Killed {
        let started = Instant::now();
        let first = self.members(subtree);
        let mut method = "sigkill";
        let pids: Vec<u32> = first.iter().map(|&(pid, _)| pid).collect();
        // A process forked since the listing is the container's if the
        // kernel says so; one gone since harms nothing.
        let in_subtree = |pid: u32| {
            self.kernel
                .process_state(pid)
                .map(|s| s.map(|s| s.contid.is_some_and(|c| subtree.contains(&c))))
        };
        let belongs = |pid: u32| match in_subtree(pid) {
            Ok(Some(is)) => is,
            // Nothing yet: a child between its fork and the fork program
            // (which gives it its parent's state) is its parent's.
            Ok(None) => ptags_bpf::procfs::parent_of(pid)
                .is_some_and(|parent| matches!(in_subtree(parent), Ok(Some(true)))),
            Err(_) => true,
        };
        if let Some(cgroup) = host::cgroup::own_cgroup(&pids, belongs) {
            match host::cgroup::kill(&cgroup) {
                Ok(()) => method = "cgroup.kill",
                Err(e) => warn!("cgroup.kill of {}: {e}", cgroup.display()),
            }
        }
        let mut rounds = 0;
        let mut members = first.clone();
        while !members.is_empty() && rounds < KILL_ROUNDS {
            rounds += 1;
            for &(pid, start) in &members {
                host::kill(pid, start);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            members = self.members(subtree);
        }
        Killed {
            method,
            tasks: first.len(),
            rounds,
            left: members.len(),
            detected_ms: 0,
            millis: started.elapsed().as_millis() as u64,
        }
    }
}

fn unknown(contid: u64) -> Error {
    Error::new(Errno::Enoent, format!("no container {contid}"))
}

fn no_policy(contid: u64) -> Error {
    Error::new(
        Errno::Enoent,
        format!("container {contid} has no audit policy"),
    )
}
