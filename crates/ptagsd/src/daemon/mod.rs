//! The control path's end: the daemon's state (tag sets, the container
//! registry, the database) and its answer to each request, the only code
//! that changes what the kernel holds. One owner, on one thread:
//! requests reach it one at a time, so no check can race another
//! request. Its fields are its own; the rest of the daemon uses the
//! methods of [`Daemon`] (the request handlers, by concern, are in its
//! submodules).

mod contid;
mod copies;
mod devices;
mod repair;
mod runtime;
mod tags;
mod trail;
mod tree;
mod wal;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use log::{info, warn};
use ptags_audit::Subject;
use ptags_bpf::{Kernel, Namespaces, TaskFacts, TaskRow};
use ptags_core::contid::Chain;
use ptags_core::{ContainerId, Errno, Interner, SetId, TagSet};
use ptags_proto::{ContainerInfo, Request, Response, Status};

use crate::config::Config;
use crate::control::peer::{Ceiling, Peer};
use crate::control::Counters;
use crate::error::Error;
use crate::host::pidns::PidView;
use crate::host::{audit_subject, Creds, CAP_AUDIT_CONTROL};
use crate::pipeline::copies::follow::{self, FollowStream};
use crate::pipeline::copies::CopyPlaces;
use crate::pipeline::kernel_audit::KernelInput;
use crate::pipeline::records::{self, TagOp};
use crate::pipeline::{Containers, Pipeline};
use crate::store::{ContainerRecord, SaveError, Store};

pub use copies::Killed;

/// The containers the daemon knows, by ID.
#[derive(Default)]
struct Registry(HashMap<u64, ContainerRecord>);

impl Containers for Registry {
    fn parent(&self, id: u64) -> Option<Option<u64>> {
        self.0.get(&id).map(|r| r.parent)
    }
}

impl Caller {
    pub fn pid(&self) -> u32 {
        self.subject.pid
    }

    /// Who the tag data this caller's writes store is charged to: its
    /// real uid, within `limits.max_tag_bytes_per_uid` unless it is a
    /// runtime or an administrator (CAP_AUDIT_CONTROL or CAP_SYS_ADMIN),
    /// whom no user's use may lock out.
    pub(crate) fn payer(&self) -> Payer {
        Payer {
            uid: self.creds.uids[0],
            limited: !self.creds.privileged(),
        }
    }
}

/// Whom stored tag data is charged to, and whether the limit applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Payer {
    pub uid: u32,
    pub limited: bool,
}

/// The caller of a request, as read from the live process.
pub(crate) struct Caller {
    pub creds: Creds,
    pub tags: TagSet,
    /// How audit records name the caller.
    pub subject: Subject,
}

pub struct Daemon<'k> {
    kernel: &'k Kernel,
    pipeline: Pipeline<'k>,
    /// Changes written ahead in the trail.
    intents: wal::Intents,
    /// The namespaces of the task last put in a container (or a pending
    /// one), read by the kernel as it did: for the `NS_INFO` record
    /// that follows its `CONTAINER_OP`.
    entered: Option<Namespaces>,
    last_sweep: Instant,
    store: Store,
    interner: Interner,
    registry: Registry,
    config: Config,
    counters: &'k Counters,
    started: Instant,
    last_collect: Instant,
    last_refusals: Instant,
    new_sets: u64,
    sets_collected: u64,
    containers_dropped: u64,
    /// Where containers' copies are kept.
    copy_places: CopyPlaces,
    /// The follower the request being answered started, for its
    /// connection.
    follow: Option<FollowStream>,
    /// While a request is answered: its caller's container.
    request_container: Option<Option<u64>>,
    /// The containers' device lists, as stored and as the kernel holds them.
    device_lists: HashMap<u64, ptags_core::devices::DeviceList>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl<'k> Daemon<'k> {
    /// Restores the tag sets and the registry, and reconciles them with
    /// what the kernel holds.
    pub fn open(kernel: &'k Kernel, config: Config, counters: &'k Counters) -> Result<Daemon<'k>> {
        let (store, stored) = Store::open(&config.state_dir, config.limits.max_tag_bytes_per_uid)?;
        let mut interner = Interner::new();
        let restored = stored.sets.len();
        for (id, set) in stored.sets {
            interner
                .restore(id, set)
                .context("the stored tag sets are inconsistent")?;
        }
        interner.skip_to(stored.next_set_id);
        let registry = Registry(
            store
                .load_containers()
                .context("loading the container registry")?
                .into_iter()
                .map(|r| (r.id, r))
                .collect(),
        );
        info!(
            "restored {restored} tag sets and {} containers from {}",
            registry.0.len(),
            config.state_dir.display()
        );
        let audit = &config.audit;
        kernel
            .set_events(
                audit.process_records,
                audit.kernel || audit.process_records,
                config.ns_watch(),
            )
            .context("switching exec and exit events")?;
        let pipeline = Pipeline::open(kernel, &config).context("opening the audit trail")?;
        let copy_places = CopyPlaces {
            log_root: config.log_dir.clone(),
            state_root: config.state_dir.clone(),
            audit: config.audit.clone(),
        };
        let mut daemon = Daemon {
            kernel,
            pipeline,
            intents: wal::Intents::new(),
            entered: None,
            last_sweep: Instant::now(),
            store,
            interner,
            registry,
            config,
            counters,
            started: Instant::now(),
            last_collect: Instant::now(),
            last_refusals: Instant::now(),
            new_sets: 0,
            sets_collected: 0,
            containers_dropped: 0,
            copy_places,
            follow: None,
            request_container: None,
            device_lists: HashMap::new(),
        };
        let rows = kernel.tasks().context("listing tasks")?;
        daemon.pipeline.namespaces_seen(&rows);
        let unknown: HashSet<u64> = rows
            .iter()
            .flat_map(set_ids_in_use)
            .filter(|&id| daemon.interner.get(SetId(id)).is_none())
            .collect();
        if !unknown.is_empty() {
            warn!("tasks hold tag-set IDs that the database does not know: {unknown:?}; their tags read as empty");
        }
        daemon
            .recover()
            .context("settling the changes a killed daemon left unsettled")?;
        daemon.collect(rows).context("collecting at start-up")?;
        daemon
            .restore_copies()
            .context("restoring containers' audit copies")?;
        daemon
            .restore_device_lists()
            .context("restoring containers' device lists")?;
        Ok(daemon)
    }

    /// Answers one request. `peer` is the process that wrote it, as the
    /// kernel named it, and what its connection allows.
    pub fn handle(&mut self, peer: &Peer, req: &Request) -> Result<Response, Error> {
        // Whose copy takes the request's records; asked of the kernel only
        // while some container has a copy.
        let caller_container = self
            .pipeline
            .has_copies()
            .then(|| self.contid_of(peer.pid()))
            .flatten()
            .map(ContainerId::get);
        self.request_container = Some(caller_container);
        let result = self.handle_as(peer, req);
        self.request_container = None;
        result
    }

    /// The container whose copy takes a record about `contid`: while a
    /// request is answered, its caller's (a container is not told who
    /// asked about it, and no outsider spends its quota).
    pub(super) fn copy_of(&self, contid: Option<u64>) -> Option<u64> {
        self.request_container.unwrap_or(contid)
    }

    fn handle_as(&mut self, peer: &Peer, req: &Request) -> Result<Response, Error> {
        // The writer's facts, read once: its PID namespace here (a caller
        // in a container names processes as its namespace does), its
        // credentials and labels for the requests that need them.
        let pid = peer.pid();
        let facts = self.kernel.facts().read(pid).map_err(Error::from);
        let result = facts.and_then(|facts| match PidView::of(pid, facts.pid_ns.into())? {
            None => self.decide(peer, &facts, req),
            Some(view) => view
                .request(req)
                .and_then(|req| self.decide(peer, &facts, &req))
                .map(|resp| view.response(resp)),
        });
        // Every change written ahead is settled by the request's record;
        // a path that wrote none settles them here.
        if self.intents.any_open() {
            let res = if result.is_ok() { "success" } else { "failed" };
            self.outcome("PTAGS_OP", format!("op={} res={res}", req.name()), None);
        }
        let counter = match &result {
            Ok(_) => &self.counters.requests_ok,
            Err(_) => &self.counters.requests_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Decides a request whose pids are the daemon's.
    fn decide(&mut self, peer: &Peer, facts: &TaskFacts, req: &Request) -> Result<Response, Error> {
        match req {
            Request::Read { target } => self.read(*target),
            Request::Write { target, text } => {
                let caller = self.caller(peer, facts)?;
                let (result, changed) = self.write(&caller, *target, text);
                let op = TagOp {
                    op: "write",
                    pid: target.pid,
                    tid: target.tid,
                    text: Some(text),
                    new_contid: None,
                };
                self.record_tag_op(&caller, &op, &result, changed);
                result
            }
            Request::ContidGet { pid } => {
                let caller = self.caller(peer, facts)?;
                self.contid_get(&caller, *pid)
            }
            Request::ContidSet { pid, contid } => {
                let caller = self.caller(peer, facts)?;
                let result = self.contid_set(&caller, *pid, *contid);
                if let Err(f) = &result {
                    self.record_refused_contid(&caller, *pid, *contid, f);
                }
                result
            }
            Request::Ps { filter } => {
                let caller = self.caller(peer, facts)?;
                self.ps(&caller, filter)
            }
            Request::PrepareExec { pid, text, contid } => {
                let caller = self.caller(peer, facts)?;
                let result = self.prepare_exec(&caller, *pid, text.as_deref(), *contid);
                let op = TagOp {
                    op: "prepare-exec",
                    pid: *pid,
                    tid: None,
                    text: text.as_deref(),
                    new_contid: *contid,
                };
                self.record_tag_op(&caller, &op, &result, result.is_ok());
                result
            }
            Request::ContainerCreate {
                pid,
                contid,
                text,
                join,
            } => {
                let caller = self.caller(peer, facts)?;
                let result = self.container_create(&caller, *pid, *contid, text.as_deref(), *join);
                if let Err(f) = &result {
                    self.record_refused_contid(&caller, *pid, *contid, f);
                }
                let op = TagOp {
                    op: "prepare-container",
                    pid: *pid,
                    tid: None,
                    text: text.as_deref(),
                    new_contid: Some(*contid),
                };
                self.record_tag_op(&caller, &op, &result, result.is_ok());
                if let Ok(Response::ContainerCreated {
                    mnt_ns: Some(inode),
                    mnt_ns_id: Some(id),
                    ..
                }) = &result
                {
                    self.record_join_policy(&caller, *pid, *contid, (*inode, *id));
                }
                result
            }
            Request::ContainerEnd { contid } => {
                let caller = self.caller(peer, facts)?;
                let result = self.container_end(&caller, *contid);
                if let Err(f) = &result {
                    self.record_refused_end(&caller, *contid, f);
                }
                result
            }
            Request::Status {} => {
                let caller = self.caller(peer, facts)?;
                self.status(&caller)
            }
            Request::AuditPolicySet { contid, text } => {
                let caller = self.caller(peer, facts)?;
                self.audit_policy_set(&caller, *contid, text)
            }
            Request::AuditPolicyGet { contid } => {
                let caller = self.caller(peer, facts)?;
                self.audit_policy_get(&caller, *contid)
            }
            Request::AuditPolicyList {} => {
                let caller = self.caller(peer, facts)?;
                self.audit_policy_list(&caller)
            }
            Request::AuditPolicyClear { contid } => {
                let caller = self.caller(peer, facts)?;
                self.audit_policy_clear(&caller, *contid)
            }
            Request::DeviceWrite { contid, writes } => {
                let caller = self.caller(peer, facts)?;
                self.device_write(&caller, *contid, writes)
            }
            Request::DeviceGet { contid } => {
                let caller = self.caller(peer, facts)?;
                self.device_get(&caller, *contid)
            }
            Request::DeviceClear { contid } => {
                let caller = self.caller(peer, facts)?;
                self.device_clear(&caller, *contid)
            }
            Request::AuditFollow {
                contid,
                after_serial,
                since_ms,
            } => {
                let caller = self.caller(peer, facts)?;
                let from = match (after_serial, since_ms) {
                    (Some(s), _) => follow::From::AfterSerial(*s),
                    (None, Some(ms)) => follow::From::SinceMs(*ms),
                    (None, None) => follow::From::Now,
                };
                self.audit_follow(&caller, *contid, from)
            }
        }
    }

    /// The caller's credentials and tags, from the facts of the live
    /// process that wrote the request (`facts`), checked to still be that
    /// process afterwards; its capabilities no more than its connection
    /// allows.
    fn caller(&self, peer: &Peer, facts: &TaskFacts) -> Result<Caller, Error> {
        let pid = peer.pid();
        let ceiling = if peer.connector_wrote {
            peer.ceiling
        } else {
            Ceiling::NOTHING
        };
        let creds = Creds::of_process(self.kernel.facts(), facts)?.capped(&ceiling);
        let subject = audit_subject(facts);
        // A main thread that has exited leaves its process's labels to
        // a live thread's.
        let state = match facts.state {
            Some(s) if s.exited => self.kernel.process_state(pid)?,
            state => state,
        };
        peer.writer.check_alive()?;
        let tags = if peer.connector_wrote {
            self.set_of(state.unwrap_or_default().set_id)
        } else {
            TagSet::empty()
        };
        Ok(Caller {
            subject,
            creds,
            tags,
        })
    }

    /// The set with this ID; unknown IDs (a lost database) read as empty.
    pub(crate) fn set_of(&self, id: u64) -> TagSet {
        self.interner.get(SetId(id)).cloned().unwrap_or_default()
    }

    /// Interns a set and its kept subset, storing new ones durably before
    /// their IDs can reach the kernel. The tag data this stores is
    /// charged to `payer`.
    pub(crate) fn intern(&mut self, set: &TagSet, payer: Payer) -> Result<(SetId, SetId), Error> {
        let kept = set.kept();
        let (id, new) = self.interner.intern(set);
        let (kept_id, kept_new) = self.interner.intern(&kept);
        let mut fresh = Vec::new();
        if new {
            fresh.push((id, set));
        }
        if kept_new {
            fresh.push((kept_id, &kept));
        }
        if !fresh.is_empty() {
            if let Err(e) =
                self.store
                    .save_sets(&fresh, self.interner.next_id(), payer.uid, payer.limited)
            {
                let ids: Vec<SetId> = fresh.iter().map(|(id, _)| *id).collect();
                self.interner.collect(|id| !ids.contains(&id));
                return Err(match e {
                    SaveError::OverLimit(e) => Error::new(Errno::Enomem, e.to_string()),
                    SaveError::Database(e) => Error::internal(format!("storing a tag set: {e:#}")),
                });
            }
            self.new_sets += fresh.len() as u64;
        }
        Ok((id, kept_id))
    }

    fn chain(&self, id: ContainerId) -> Chain {
        self.pipeline.chain(id, &self.registry)
    }

    pub(crate) fn add_container(&mut self, record: ContainerRecord) -> Result<(), Error> {
        self.store
            .put_container(&record)
            .map_err(|e| Error::internal(format!("storing container {}: {e:#}", record.id)))?;
        self.registry.0.insert(record.id, record);
        self.pipeline.container_added();
        // A nested container's tasks are its ancestors' too.
        if record.parent.is_some() && self.pipeline.has_copies() {
            self.ask_copy_events(record.id);
        }
        Ok(())
    }

    /// Forgets a container whose last task has gone, and reaps its row.
    /// `record`: the container existed (its creation was recorded), so
    /// its end is recorded too.
    pub(crate) fn drop_container(&mut self, id: u64, why: &str, record: bool) {
        // Due or not, a drop seen of it is this one (stale if it has
        // tasks again).
        self.pipeline.forget_drop(id);
        match self.kernel.container(id) {
            // Taken again (a task set to enter it at its exec) since
            // the drop was queued: not over.
            Ok(Some(row)) if row.has_members() => return,
            Ok(Some(_)) => {
                if let Err(e) = self.kernel.reap_container(id) {
                    warn!("reaping container {id}: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => warn!("reading container {id}: {e}"),
        }
        self.forget_joins(id);
        if let Some(removed) = self.registry.0.remove(&id) {
            self.pipeline.dropped(id, removed.parent);
            if let Err(e) = self.store.delete_container(id) {
                warn!("deleting container {id} from the registry: {e:#}");
            }
            self.containers_dropped += 1;
            info!("container {id} dropped: {why}");
            if record {
                self.outcome("CONTAINER_OP", records::drop(id), Some(id));
            }
        }
        self.forget_device_list(id);
        // After its end is on record: the copy's last record.
        self.end_copy(id);
    }

    /// Reads what the kernel programs reported, and forgets the
    /// containers whose last task exited.
    fn poll_events(&mut self) {
        self.pipeline.poll_events(&self.registry);
        self.forget_exited_containers();
    }

    fn forget_exited_containers(&mut self) {
        for id in self.pipeline.take_drops() {
            self.drop_container(id, "its last task exited", true);
        }
    }

    /// Records from the kernel's audit.
    pub fn on_kernel(&mut self, input: KernelInput) {
        self.pipeline.on_kernel(input, &self.registry);
        self.forget_exited_containers();
    }

    pub fn set_registered(&mut self, registered: bool) {
        self.pipeline.set_registered(registered);
    }

    /// Writes what is queued: before a request is answered, so that no
    /// change is seen before its record is written.
    pub fn commit(&mut self) -> Result<()> {
        self.pipeline.commit()
    }

    /// Writes everything still queued (at stop).
    pub fn flush(&mut self) -> Result<()> {
        self.pipeline.flush(&self.registry)
    }

    /// The periodic work: events, the trail's upkeep, repairs, and the
    /// collection of unused state. An error stops the daemon (a disk
    /// action of `stop`).
    pub fn tick(&mut self) -> Result<()> {
        self.poll_events();
        if let Some(failed) = self.pipeline.tick(&self.registry)? {
            let repaired = self.repair_inheritance(failed.since);
            warn!(
                "inheritance failed for {} tasks; {repaired} repaired",
                failed.tasks
            );
        }
        self.forget_exited_containers();
        self.handle_panics();
        self.sweep();
        self.record_socket_refusals();
        if let Err(e) = self.maintain() {
            warn!("collecting unused state: {e:#}");
        }
        Ok(())
    }

    /// Lists every task once a sweep interval when namespace records are
    /// on or a container has a setns policy: the listing joins the tasks
    /// that entered a container's namespaces and did not fork, exec or
    /// move since (joins.bpf.h), finds the unshares and setns of watched
    /// tasks, and tells which namespaces no task uses.
    fn sweep(&mut self) {
        let every = std::time::Duration::from_millis(self.config.namespaces.sweep_ms);
        if self.last_sweep.elapsed() < every
            || (self.config.ns_watch() == ptags_bpf::NsWatch::Off && self.kernel.joins().is_empty())
        {
            return;
        }
        self.last_sweep = Instant::now();
        match self.kernel.tasks() {
            Ok(rows) if self.config.ns_watch() != ptags_bpf::NsWatch::Off => {
                self.pipeline.swept(&rows, &self.registry)
            }
            Ok(_) => {}
            Err(e) => warn!("sweeping the tasks: {e}"),
        }
    }

    /// Records what the socket refused each user since the last time, a
    /// record per user a second at most: a flood costs the trail no more.
    fn record_socket_refusals(&mut self) {
        if self.last_refusals.elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        self.last_refusals = Instant::now();
        for (uid, r) in self.counters.take_refused() {
            let counts = [r.connections, r.busy, r.slow, r.malformed, r.limited];
            let body = records::socket_refusals(uid, counts);
            self.pipeline
                .record("PTAGS_REFUSED", body, None, &self.registry);
        }
    }

    /// Collects unused tag sets and containers when it is time to.
    fn maintain(&mut self) -> Result<()> {
        let due = self.last_collect.elapsed().as_secs() >= self.config.collect.interval_secs
            || self.new_sets >= self.config.collect.after_new_sets;
        if due {
            let rows = self.kernel.tasks().context("listing tasks")?;
            self.collect(rows)?;
        }
        Ok(())
    }

    /// Forgets the tag sets and containers no task refers to.
    fn collect(&mut self, rows: Vec<TaskRow>) -> Result<()> {
        self.last_collect = Instant::now();
        self.new_sets = 0;
        let mut in_use: HashSet<u64> = rows.iter().flat_map(set_ids_in_use).collect();
        in_use.extend(self.join_set_ids());
        let dropped = self.interner.collect(|id| in_use.contains(&id.0));
        if !dropped.is_empty() {
            self.store.delete_sets(&dropped)?;
            self.sets_collected += dropped.len() as u64;
            info!("collected {} unused tag sets", dropped.len());
            // The sets are deleted whatever happens here: a file that
            // could not shrink is tried again at the next collection.
            match self.store.compact_if_sparse() {
                Ok(Some((before, after))) => {
                    info!("compacted the tag-set database from {before} to {after} bytes")
                }
                Ok(None) => {}
                Err(e) => warn!("compacting the tag-set database: {e:#}"),
            }
        }
        // A container whose count is zero and that no pending exec will
        // enter is over, whether or not its drop event was seen (it may
        // have come while the daemon was down, or never: `ptags run`
        // killed before its exec). One whose drop was seen ends when due.
        let pending: HashSet<u64> = rows
            .iter()
            .filter_map(|r| r.state.pending.and_then(|(_, _, c)| c))
            .collect();
        let namespaces: HashSet<u64> = rows.iter().map(|r| r.mnt_ns).collect();
        self.forget_joins_of_gone_namespaces(&namespaces);
        let mut ids: Vec<u64> = self.kernel.container_ids();
        ids.extend(self.registry.0.keys());
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if !pending.contains(&id) && !self.pipeline.is_dropping(id) {
                self.drop_container(id, "no task is in it any more", true);
            }
        }
        Ok(())
    }

    /// The daemon's state and counters; container IDs only for callers
    /// that may read them.
    fn status(&self, caller: &Caller) -> Result<Response, Error> {
        let lost = self.kernel.lost()?;
        let may_see_ids = caller.creds.has_cap(CAP_AUDIT_CONTROL);
        let mut containers: Vec<ContainerInfo> = self
            .registry
            .0
            .values()
            .filter(|_| may_see_ids)
            .map(|r| ContainerInfo {
                contid: r.id,
                parent: r.parent,
                depth: r.depth,
                owner_pid: r.owner_pid,
                created: r.created,
                live: self
                    .kernel
                    .container(r.id)
                    .ok()
                    .flatten()
                    .map_or(0, |row| row.live),
            })
            .collect();
        containers.sort_by_key(|c| c.contid);
        let c = self.counters;
        Ok(Response::Status(Box::new(Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: ptags_proto::PROTOCOL_VERSION,
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            pin_dir: self.config.pin_dir.display().to_string(),
            attached: ptags_bpf::ATTACHED
                .iter()
                .chain(
                    self.kernel
                        .devices_fenced()
                        .then_some(&ptags_bpf::DEVICES_ATTACH),
                )
                .map(|s| s.to_string())
                .collect(),
            tag_sets: self.interner.count(),
            container_count: self.registry.0.len(),
            join_policies: self.kernel.joins().len(),
            containers,
            requests_ok: c.requests_ok.load(Ordering::Relaxed),
            requests_failed: c.requests_failed.load(Ordering::Relaxed),
            requests_malformed: c.requests_malformed.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            requests_busy: c.requests_busy.load(Ordering::Relaxed),
            connections_slow: c.connections_slow.load(Ordering::Relaxed),
            requests_limited: c.requests_limited.load(Ordering::Relaxed),
            sets_collected: self.sets_collected,
            containers_dropped: self.containers_dropped,
            lost: lost
                .named()
                .into_iter()
                .chain([("malformed_events", self.pipeline.malformed_events())])
                .map(|(name, n)| (name.to_owned(), n))
                .collect(),
            audit: self.pipeline.status(),
        })))
    }
}

/// The tag-set IDs a task refers to, pending ones included.
fn set_ids_in_use(row: &TaskRow) -> Vec<u64> {
    let s = &row.state;
    let mut ids = vec![s.set_id, s.kept_id];
    if let Some((set, kept, _)) = s.pending {
        ids.extend([set, kept]);
    }
    ids
}
