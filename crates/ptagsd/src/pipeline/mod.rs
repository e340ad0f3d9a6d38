//! The data path. Records flow one way: from their sources, through one
//! enrichment step, to the router and the sinks behind it.
//!
//! - Sources: the kernel's audit records ([`kernel_audit`], grouped into
//!   events by `ptags_audit::assemble`), the BPF programs' events (exec,
//!   exit, join, read from the ring buffer here), and the daemon's own
//!   records ([`Pipeline::record`]).
//! - Enrichment ([`enrich`]): the container of the task an event
//!   concerns, when it happened, as a `CONTAINER_ID` record with its
//!   chain; a ptrace across containers gets a `PTAGS_PTRACE` record.
//! - The router ([`router`]) hands every record to every [`Sink`]; the
//!   sealed log ([`log_sink`]) is the first.
//!
//! What a source loses is counted where it is lost, and said in a
//! `PTAGS_LOST` record and in `ptags status`. Nothing here changes the
//! daemon's state: container drops seen in the ring buffer are handed
//! back ([`Pipeline::take_drops`]) once the kernel's records of their
//! last tasks are read ([`drops`]).

pub mod copies;
mod drops;
pub mod enrich;
pub mod kernel_audit;
mod limit;
pub mod log_sink;
pub mod namespaces;
mod nflog;
pub mod records;
pub mod router;
mod serials;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use log::warn;
use ptags_audit::assemble::{Assembler, KernelEvent, KernelRecord};
use ptags_audit::types::type_name;
use ptags_audit::{container_id_fields, format_fields, Stamp};
use ptags_bpf::{Event, EventKind, EventReader, Kernel, LostCounts, Namespaces, TaskRow};
use ptags_core::contid::{chain_of, Chain};
use ptags_core::ContainerId;
use ptags_proto::{AuditCounters, AuditStatus};

use crate::config::Config;
use crate::host::{self, pidns::PidView};
use copies::{ContainerCopy, PanicReason, Report};
use drops::Drops;
use enrich::Enricher;
use kernel_audit::{KernelInput, KernelStatus};
use limit::RefusalLimit;
pub use limit::Source;
use log_sink::{load_key, LogFile};
use namespaces::{NsRecord, NsTrail};
use nflog::{Nflog, Said};
use router::Router;
pub use router::{Record, Sink};
use serials::SerialGaps;

/// How long an event without EOE waits for more of its records.
const QUIET_MS: u64 = 50;
/// Events being assembled at once, at most.
const MAX_OPEN_EVENTS: usize = 65536;

/// What the pipeline asks of the daemon's state.
pub trait Containers {
    /// The parent of a known container (`Some(None)`: a top-level one);
    /// `None` for a container the daemon does not know.
    fn parent(&self, id: u64) -> Option<Option<u64>>;
}

/// Labels the BPF programs could not keep, newly counted: for the daemon
/// to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InheritanceFailed {
    pub tasks: u64,
    /// The failed tasks started at or after this (clock ticks since boot).
    pub since: u64,
}

pub struct Pipeline<'k> {
    kernel: &'k Kernel,
    events: EventReader<'k>,
    assembler: Assembler,
    enricher: Enricher,
    router: Router,
    kernel_status: Option<KernelStatus>,
    kernel_lost_base: Option<u32>,
    bpf_lost_base: Option<LostCounts>,
    /// When the BPF counters were last read, in clock ticks since boot.
    lost_read_at: u64,
    last_check: Instant,
    started: Instant,
    /// Records of requests that changed nothing, per user.
    refusals: RefusalLimit,
    process_records: bool,
    chain_depth: usize,
    /// Registered as the kernel's audit daemon (records by unicast).
    registered: bool,
    /// As the registered daemon: events numbered and not delivered.
    gaps: SerialGaps,
    /// Containers whose last task exited, for the daemon to forget.
    drops: Drops,
    /// The body of each container's CONTAINER_ID record: a chain does not
    /// change while its container lives; forgotten at every change.
    container_id_bodies: HashMap<u64, String>,
    counters: AuditCounters,
    /// The namespaces on record; `None` when namespace records are off.
    namespaces: Option<NsTrail>,
    /// Namespace changes recorded per user in each container: a task
    /// can make namespaces as fast as it can fork (an unprivileged one in
    /// a user namespace of its own), and must not rotate the trail away.
    ns_limit: RefusalLimit,
    /// Packets of containers' network namespaces; `None` unless
    /// `[namespaces] nflog_group` is set.
    nflog: Option<Nflog>,
    /// NFLOG socket overflows not yet said in a `PTAGS_LOST` record.
    nflog_overflows_unsaid: u64,
    /// The scope of the records of each container (see [`Record::scope`]),
    /// forgotten at every change of containers or copies.
    scopes: HashMap<u64, Option<Arc<[u64]>>>,
    /// Containers their copies asked to stop, for the daemon.
    panics: Vec<(u64, PanicReason, Duration)>,
}

impl<'k> Pipeline<'k> {
    pub fn open(kernel: &'k Kernel, config: &Config) -> Result<Pipeline<'k>> {
        let audit = &config.audit;
        let key = load_key(&config.state_dir.join("audit.key"))?;
        let log = LogFile::open(&config.log_dir, &config.state_dir, audit, key)
            .context("opening the audit log")?;
        let kernel_status = if audit.kernel {
            Some(KernelStatus::open()?)
        } else {
            None
        };
        Ok(Pipeline {
            kernel,
            events: kernel.events()?,
            assembler: Assembler::new(MAX_OPEN_EVENTS, QUIET_MS),
            enricher: Enricher::new(),
            router: Router::new(vec![Box::new(log)]),
            kernel_status,
            kernel_lost_base: None,
            bpf_lost_base: None,
            lost_read_at: host::boot_ticks(),
            last_check: Instant::now() - Duration::from_secs(10),
            started: Instant::now(),
            refusals: RefusalLimit::new(audit.refusal_burst, audit.refusal_rate),
            process_records: audit.process_records,
            chain_depth: config.limits.max_depth as usize + 1,
            registered: false,
            gaps: SerialGaps::default(),
            drops: Drops::default(),
            container_id_bodies: HashMap::new(),
            counters: AuditCounters::default(),
            namespaces: (config.namespaces.records != crate::config::NsRecords::Off)
                .then(|| NsTrail::new(namespaces::nsfs_device())),
            ns_limit: RefusalLimit::new(
                config.namespaces.record_burst,
                config.namespaces.record_rate,
            ),
            nflog: (config.namespaces.nflog_group != 0).then(|| {
                let ns = &config.namespaces;
                Nflog::new(nflog::Limits {
                    group: ns.nflog_group,
                    max_namespaces: ns.nflog_max_namespaces as usize,
                    max_per_container: ns.nflog_max_namespaces_per_container as usize,
                    burst: ns.packet_burst,
                    per_sec: ns.packet_rate,
                })
            }),
            nflog_overflows_unsaid: 0,
            scopes: HashMap::new(),
            panics: Vec::new(),
        })
    }

    pub fn set_registered(&mut self, registered: bool) {
        self.registered = registered;
    }

    /// A record of the daemon's own, made now, about a task in `contid`.
    pub fn record(
        &mut self,
        kind: &'static str,
        body: String,
        contid: Option<u64>,
        containers: &impl Containers,
    ) {
        self.record_with(kind, body, contid, contid, None, containers);
    }

    /// As [`Pipeline::record`], followed by an auxiliary record (type,
    /// body) with the same stamp; the copies of `copy_of` (and its
    /// ancestors) take them, which for a request's records is the
    /// caller's container, not necessarily `contid`'s.
    pub fn record_with(
        &mut self,
        kind: &'static str,
        body: String,
        contid: Option<u64>,
        copy_of: Option<u64>,
        follower: Option<(&'static str, String)>,
        containers: &impl Containers,
    ) {
        let mut record = Record::daemon(kind, host::now(), body);
        record.contid = contid;
        record.scope = self.scope(copy_of.as_slice(), containers);
        let follower = follower.map(|(kind, body)| Record::follower(&record, kind, body));
        self.router.route(record);
        if let Some(f) = follower {
            self.router.route(f);
        }
    }

    /// The containers with a copy that take a record about tasks in
    /// `contids`: each one's and its ancestors'. `None` while no
    /// container has a copy, which costs nothing.
    fn scope(&mut self, contids: &[u64], containers: &impl Containers) -> Option<Arc<[u64]>> {
        if !self.router.has_copies() || contids.is_empty() {
            return None;
        }
        if let [one] = contids {
            if let Some(known) = self.scopes.get(one) {
                return known.clone();
            }
        }
        let mut scope: Vec<u64> = Vec::new();
        for id in contids.iter().filter_map(|&c| ContainerId::new(c)) {
            for c in self.chain(id, containers).0 {
                if self.router.copy(c.get()).is_some() && !scope.contains(&c.get()) {
                    scope.push(c.get());
                }
            }
        }
        let scope: Option<Arc<[u64]>> = (!scope.is_empty()).then(|| scope.into());
        if let [one] = contids {
            if self.scopes.len() >= MAX_OPEN_EVENTS {
                self.scopes.clear();
            }
            self.scopes.insert(*one, scope.clone());
        }
        scope
    }

    /// Whether a copy in `scope` asked for process records of `kind`.
    fn copies_want(&self, kind: EventKind, scope: Option<&Arc<[u64]>>) -> bool {
        scope.is_some_and(|scope| {
            scope.iter().filter_map(|&c| self.router.copy(c)).any(|c| {
                let events = c.policy().events;
                match kind {
                    EventKind::Exec => events.exec,
                    EventKind::Exit => events.exit,
                    _ => false,
                }
            })
        })
    }

    /// Puts a container's copy in place, or ends it (`None`).
    pub fn set_copy(&mut self, contid: u64, copy: Option<ContainerCopy>) {
        match copy {
            Some(copy) => {
                self.router.set_copy(copy);
                self.scopes.clear();
            }
            None => drop(self.take_copy(contid)),
        }
    }

    /// Takes a container's copy out (its readers end with it), to replace
    /// it.
    pub fn take_copy(&mut self, contid: u64) -> Option<ContainerCopy> {
        let mut taken = self.router.remove_copy(contid);
        if let Some(said) = taken.as_mut().map(ContainerCopy::take_reports) {
            self.copy_reports(said);
        }
        self.scopes.clear();
        taken
    }

    pub fn copy(&self, contid: u64) -> Option<&ContainerCopy> {
        self.router.copy(contid)
    }

    pub fn copy_mut(&mut self, contid: u64) -> Option<&mut ContainerCopy> {
        self.router.copy_mut(contid)
    }

    pub fn has_copies(&self) -> bool {
        self.router.has_copies()
    }

    pub fn copies(&self) -> impl Iterator<Item = &ContainerCopy> {
        self.router.copies()
    }

    /// Containers whose copy asked that they be stopped, since the last
    /// call.
    pub fn take_panics(&mut self) -> Vec<(u64, PanicReason, Duration)> {
        std::mem::take(&mut self.panics)
    }

    /// What the copies said: their losses in the host trail, their
    /// panics for the daemon.
    fn copy_reports(&mut self, reports: Vec<Report>) {
        for report in reports {
            match report {
                Report::Lost {
                    contid,
                    reason,
                    lost,
                    total,
                } => {
                    let body = format!(
                        "{} contid={contid}",
                        records::lost("copy", reason, "records", lost, total)
                    );
                    self.route_host(Record::daemon("PTAGS_LOST", host::now(), body));
                }
                Report::Panic { contid, reason, at } => self.panics.push((contid, reason, at)),
            }
        }
    }

    /// Routes a record to the host's sinks alone.
    fn route_host(&mut self, record: Record) {
        self.router.route(record);
    }

    /// The body of an `NS_INFO` record for the namespaces a task entered
    /// container `contid` with; `None` when namespace records are off.
    pub fn ns_info(&mut self, ns: &Namespaces, contid: Option<u64>) -> Option<String> {
        let body = self.namespaces.as_mut()?.info(ns, contid);
        self.counters.ns_records += 1;
        Some(body)
    }

    /// After a listing of every task (which also found the unshares and
    /// setns since the last one, as events): those events are written,
    /// then `NS_DESTROY` for the namespaces no task uses any more.
    pub fn swept(&mut self, rows: &[TaskRow], containers: &impl Containers) {
        self.poll_events(containers);
        if let Some(nflog) = self.nflog.as_mut() {
            let said = nflog.swept(rows);
            self.nflog_said(said, containers);
        }
        let Some(trail) = self.namespaces.as_mut() else {
            return;
        };
        let gone = trail.swept(rows);
        self.ns_records(host::now(), None, gone, containers);
    }

    /// Packets logged to the NFLOG group in containers' network
    /// namespaces.
    fn nflog_packets(&mut self, containers: &impl Containers) {
        if let Some(nflog) = self.nflog.as_mut() {
            let said = nflog.drain();
            self.nflog_said(said, containers);
        }
    }

    /// Writes what the packet source said: each packet a `NETFILTER_PKT`
    /// record, each a `CONTAINER_ID` naming every container of its
    /// namespace after it; packets past a namespace's rate in
    /// `PTAGS_SUPPRESSED of=packets`; listening started, stopped or
    /// refused in `PTAGS_NFLOG`. Overflows are counted, and said once a
    /// second in `PTAGS_LOST`.
    fn nflog_said(&mut self, said: Vec<Said>, containers: &impl Containers) {
        let Some(nflog) = self.nflog.as_ref() else {
            return;
        };
        let group = nflog.group();
        let said: Vec<(Said, Vec<u64>)> = said
            .into_iter()
            .map(|s| {
                let of = nflog.containers_of(s.netns());
                (s, of)
            })
            .collect();
        for (s, contids) in said {
            // Listeners start and stop as a container makes namespaces:
            // their records count against its namespace records' rate
            // (as user 4294967295, "any of its users").
            let listener = matches!(
                s,
                Said::Listening { .. } | Said::Stopped { .. } | Said::Refused { .. }
            );
            if listener {
                let source = Source {
                    uid: u32::MAX,
                    contid: contids.first().copied(),
                };
                if !self.ns_limit.admit(source, Instant::now(), host::now()) {
                    continue;
                }
            }
            let (kind, body) = match s {
                Said::Packet { body, .. } => {
                    self.counters.nflog_packets += 1;
                    ("NETFILTER_PKT", body)
                }
                Said::Suppressed { netns, count } => {
                    self.counters.nflog_suppressed += count;
                    let body = format!("netns={netns} suppressed={count} of=packets");
                    ("PTAGS_SUPPRESSED", body)
                }
                Said::Overflow { .. } => {
                    self.counters.nflog_overflows += 1;
                    self.nflog_overflows_unsaid += 1;
                    continue;
                }
                Said::Listening { netns } => (
                    "PTAGS_NFLOG",
                    format!("op=listen netns={netns} nflog-group={group} res=success"),
                ),
                Said::Stopped { netns } => (
                    "PTAGS_NFLOG",
                    format!("op=stop netns={netns} nflog-group={group}"),
                ),
                Said::Refused { netns, why } => (
                    "PTAGS_NFLOG",
                    format!(
                        "op=listen netns={netns} nflog-group={group} res=failed reason={}",
                        ptags_audit::encode_untrusted(why.as_bytes())
                    ),
                ),
            };
            let mut record = Record::daemon(kind, host::now(), body);
            record.contid = contids.first().copied();
            self.route_event(record, &contids, containers);
        }
    }

    /// The namespaces in use at start, before any event is read: changes
    /// found later are told new or entered against them.
    pub fn namespaces_seen(&mut self, rows: &[TaskRow]) {
        if let Some(trail) = self.namespaces.as_mut() {
            trail.learn(rows);
        }
    }

    /// Routes a record, followed (same stamp) by a `CONTAINER_ID` record
    /// naming the chains of `contids`, when there are any.
    fn route_event(&mut self, record: Record, contids: &[u64], containers: &impl Containers) {
        let chains: Vec<Chain> = contids
            .iter()
            .filter_map(|&c| ContainerId::new(c))
            .map(|id| self.chain(id, containers))
            .collect();
        let mut record = record;
        record.scope = self.scope(contids, containers);
        let follower = (!chains.is_empty()).then(|| {
            let body = format_fields(&container_id_fields(&chains));
            Record::follower(&record, "CONTAINER_ID", body)
        });
        self.router.route(record);
        if let Some(f) = follower {
            self.router.route(f);
        }
    }

    fn ns_records(
        &mut self,
        at: Duration,
        pid: Option<u32>,
        records: Vec<NsRecord>,
        containers: &impl Containers,
    ) {
        for r in records {
            self.counters.ns_records += 1;
            let mut record = Record::daemon(r.kind, at, r.body);
            record.pid = pid;
            record.contid = r.containers.first().copied();
            self.route_event(record, &r.containers, containers);
        }
    }

    /// The chain of container `id`, as records print it. A container
    /// dropped a moment ago still names its parent, for the kernel
    /// records of its last tasks, enriched after the drop.
    pub fn chain(&self, id: ContainerId, containers: &impl Containers) -> Chain {
        chain_of(id, self.chain_depth, |c| {
            let parent = containers
                .parent(c.get())
                .or_else(|| self.enricher.dropped_parent(c.get()));
            parent.map(|p| p.and_then(ContainerId::new))
        })
    }

    /// Whether a record of a request that changed nothing from `source`
    /// may be written now; if not, it is counted.
    pub fn admit_unchanged(&mut self, source: Source) -> bool {
        let admitted = self.refusals.admit(source, Instant::now(), host::now());
        if !admitted {
            self.counters.suppressed_refusals += 1;
        }
        admitted
    }

    /// A container was dropped: its parent is remembered a while.
    pub fn dropped(&mut self, id: u64, parent: Option<u64>) {
        self.enricher.dropped(id, parent);
        self.container_id_bodies.clear();
        self.scopes.clear();
    }

    /// A container was registered: the scope of its records (cached,
    /// perhaps before its parent was known) is made again.
    pub fn container_added(&mut self) {
        self.scopes.clear();
    }

    /// The daemon changed a task's container: what was learnt of live
    /// tasks is stale.
    pub fn containers_changed(&mut self) {
        self.enricher.forget_live();
        self.container_id_bodies.clear();
        self.scopes.clear();
    }

    /// The body of the CONTAINER_ID record of a task in container `id`.
    fn container_id_body(&mut self, id: ContainerId, containers: &impl Containers) -> String {
        if let Some(body) = self.container_id_bodies.get(&id.get()) {
            return body.clone();
        }
        let body = format_fields(&container_id_fields(&[self.chain(id, containers)]));
        if self.container_id_bodies.len() >= MAX_OPEN_EVENTS {
            self.container_id_bodies.clear();
        }
        self.container_id_bodies.insert(id.get(), body.clone());
        body
    }

    /// Containers whose last task exited, once the kernel's records of
    /// their tasks have been read (or could not be told apart in time).
    pub fn take_drops(&mut self) -> Vec<u64> {
        if self.drops.is_empty() {
            return Vec::new();
        }
        let reading_kernel = self.kernel_status.is_some();
        let oldest_open = self.assembler.oldest_open_ms();
        self.drops
            .take_due(reading_kernel, oldest_open, Instant::now())
    }

    /// Whether a container's drop was seen and is not due yet.
    pub fn is_dropping(&self, contid: u64) -> bool {
        self.drops.has(contid)
    }

    /// Forgets a container's drop, due or not: the daemon is handling it.
    pub fn forget_drop(&mut self, contid: u64) {
        self.drops.forget(contid);
    }

    /// Input from the kernel-audit source.
    pub fn on_kernel(&mut self, input: KernelInput, containers: &impl Containers) {
        match input {
            KernelInput::Records(batch) => {
                let now_ms = self.started.elapsed().as_millis() as u64;
                let now = Instant::now();
                let mut done = Vec::new();
                for (kind, payload) in batch.iter() {
                    match KernelRecord::parse(kind, payload) {
                        Ok(record) => {
                            self.counters.kernel_records += 1;
                            self.drops.kernel_record(record.stamp.epoch_millis());
                            if self.registered {
                                self.gaps.seen(record.stamp.serial, now);
                            }
                            self.assembler.push(record, now_ms, &mut done);
                        }
                        Err(e) => warn!("a kernel audit record of type {kind}: {e}"),
                    }
                }
                for event in done {
                    self.kernel_event(event, containers);
                }
            }
            KernelInput::Dropped(lost) => {
                self.counters.netlink_overflows += 1;
                self.counters.lost_netlink += lost;
                let total = self.counters.lost_netlink;
                warn!("the kernel audit socket overflowed: {lost} records lost");
                self.lost_record("netlink", "overflow", "records", lost, total);
            }
        }
    }

    fn lost_record(&mut self, source: &str, reason: &str, unit: &str, lost: u64, total: u64) {
        let body = records::lost(source, reason, unit, lost, total);
        self.route_host(Record::daemon("PTAGS_LOST", host::now(), body));
    }

    fn kernel_event(&mut self, event: KernelEvent, containers: &impl Containers) {
        let at_ms = event.stamp.epoch_millis();
        let pid = event.pid();
        let contid = pid.and_then(|pid| self.contid_at(pid, at_ms, containers));
        let container_id = contid
            .and_then(ContainerId::new)
            .map(|id| self.container_id_body(id, containers));
        let ptrace = pid
            .zip(event.ptrace_attach_target())
            .and_then(|(tracer, target)| {
                self.cross_container_ptrace(tracer, target, contid, at_ms, containers)
            });
        self.counters.kernel_events += 1;
        let scope = self.scope(contid.as_slice(), containers);
        // Only a copy names pids as a namespace sees them.
        let local = scope
            .as_ref()
            .and(pid)
            .and_then(|p| self.enricher.local_of(p));
        let kernel = |kind, stamp: Stamp, body| Record {
            kind,
            time: Duration::from_millis(stamp.epoch_millis()),
            serial: Some(stamp.serial),
            body,
            pid,
            contid,
            follows: false,
            scope: scope.clone(),
            local,
        };
        let stamp = event.stamp;
        for r in event.records {
            self.router
                .route(kernel(type_name(r.kind), r.stamp, r.body));
        }
        if let Some(body) = container_id {
            self.counters.contained_events += 1;
            self.router
                .route(kernel("CONTAINER_ID".into(), stamp, body));
        }
        if let Some(body) = ptrace {
            self.counters.cross_container_ptrace += 1;
            self.router
                .route(kernel("PTAGS_PTRACE".into(), stamp, body));
        }
    }

    /// A ptrace attach whose tracer and target are in different
    /// containers (or one on the host): the body of its `PTAGS_PTRACE`
    /// record, which follows the kernel's records of the attach.
    fn cross_container_ptrace(
        &mut self,
        tracer: u32,
        (target, host): (u32, bool),
        tracer_contid: Option<u64>,
        at_ms: u64,
        containers: &impl Containers,
    ) -> Option<String> {
        // Without the kernel's OBJ_PID, the target is named as the
        // tracer's PID namespace names it; a tracer gone since is taken
        // to be in the daemon's.
        let view =
            crate::host::namespace_inode(tracer, "pid").and_then(|ns| PidView::of(tracer, ns));
        let target = match (host, view) {
            (false, Ok(Some(view))) => view.host_pid(target).ok()?,
            _ => target,
        };
        let target_contid = self.contid_at(target, at_ms, containers);
        if target_contid == tracer_contid {
            return None;
        }
        let chain = |c: Option<u64>| {
            c.and_then(ContainerId::new)
                .map(|id| self.chain(id, containers))
        };
        Some(records::ptrace(
            (tracer, chain(tracer_contid).as_ref()),
            (target, chain(target_contid).as_ref()),
        ))
    }

    /// The container process `pid` was in at `at_ms`: a task that has
    /// exited since is known from its exit event; a live one is asked.
    fn contid_at(&mut self, pid: u32, at_ms: u64, containers: &impl Containers) -> Option<u64> {
        if let Some(id) = self.enricher.exit_of(pid, at_ms) {
            return Some(id);
        }
        // Not in a container now, it may have exited since the event: its
        // ID is cleared at exit, its storage freed before it is reaped,
        // and it is gone once reaped, all after its exit event was
        // queued. Reading the queue costs no system call.
        self.enricher.live_contid(self.kernel, pid).or_else(|| {
            self.poll_events(containers);
            self.enricher.exit_of(pid, at_ms)
        })
    }

    /// Reads the BPF programs' events.
    pub fn poll_events(&mut self, containers: &impl Containers) {
        match self.events.drain() {
            Ok(batch) => self.bpf_events(&batch, containers),
            Err(e) => warn!("reading kernel events: {e}"),
        }
    }

    /// Exec and exit events: remembered to name the container of late
    /// kernel records, and written when process records are on.
    fn bpf_events(&mut self, events: &[Event], containers: &impl Containers) {
        let offset_ns = host::boot_to_real_ns();
        for e in events {
            let at_ms = ((i128::from(e.time_ns) + offset_ns) / 1_000_000).max(0) as u64;
            let at = Duration::from_millis(at_ms);
            let contid = ContainerId::new(e.contid).map(ContainerId::get);
            let kind = match e.kind {
                EventKind::Drop => {
                    self.drops.push(e.contid, at_ms, Instant::now());
                    continue;
                }
                // Always recorded: a change of a task's container, and
                // the namespaces it joined with.
                EventKind::Join | EventKind::JoinRefused => {
                    self.enricher.forget_live();
                    let mut record = Record::daemon("CONTAINER_OP", at, records::join(e));
                    record.pid = Some(e.pid);
                    record.contid = contid;
                    record.scope = self.scope(contid.as_slice(), containers);
                    record.local = Some(e.local);
                    let info = match (e.kind, &e.namespaces) {
                        (EventKind::Join, Some(ns)) => self.ns_info(ns, contid),
                        _ => None,
                    };
                    let info = info.map(|body| Record::follower(&record, "NS_INFO", body));
                    self.router.route(record);
                    if let Some(info) = info {
                        self.router.route(info);
                    }
                    continue;
                }
                EventKind::Namespaces => {
                    if let Some(trail) = self.namespaces.as_mut() {
                        let exe = std::fs::read_link(format!("/proc/{}/exe", e.pid)).ok();
                        let exe = exe.as_ref().map(|p| p.as_os_str().as_encoded_bytes());
                        let mut records = trail.change(e, exe, namespaces::nsfs_mounts);
                        let source = Source {
                            uid: e.uid,
                            contid: contid.filter(|&c| c != u64::MAX),
                        };
                        let (now, wall) = (Instant::now(), host::now());
                        records.retain(|_| self.ns_limit.admit(source, now, wall));
                        for r in &records {
                            trail.written(r);
                        }
                        self.ns_records(at, Some(e.pid), records, containers);
                    }
                    continue;
                }
                // Always recorded: the kernel bounds their rate.
                EventKind::Device => {
                    let Some(denial) = &e.device else {
                        continue;
                    };
                    let chain = ContainerId::new(e.contid).map(|id| self.chain(id, containers));
                    let body = records::device_denial(e, denial, chain.as_ref());
                    let mut record = Record::daemon("PTAGS_DEVICE", at, body);
                    record.pid = Some(e.pid);
                    record.contid = contid;
                    record.scope = self.scope(contid.as_slice(), containers);
                    record.local = Some(e.local);
                    self.router.route(record);
                    continue;
                }
                EventKind::Exit => {
                    self.enricher.exited(e.tid, e.contid, at_ms, e.local);
                    "PTAGS_EXIT"
                }
                EventKind::Exec => "PTAGS_EXEC",
            };
            // Written when the host asked for them, or a container's
            // copy did (and the kernel sent them for it alone).
            let scope = self.scope(contid.as_slice(), containers);
            if self.process_records || self.copies_want(e.kind, scope.as_ref()) {
                let chain = ContainerId::new(e.contid).map(|id| self.chain(id, containers));
                let mut record =
                    Record::daemon(kind, at, records::process_record(e, chain.as_ref()));
                record.pid = Some(e.pid);
                record.contid = contid;
                record.scope = scope;
                record.local = Some(e.local);
                self.router.route(record);
            }
        }
    }

    /// Completes quiet events, counts losses and checks the sinks once a
    /// second, and writes what is queued. An error stops the daemon (a
    /// disk action of `stop`). Labels the kernel could not keep are
    /// returned, for the daemon to repair.
    pub fn tick(&mut self, containers: &impl Containers) -> Result<Option<InheritanceFailed>> {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let mut done = Vec::new();
        self.assembler.expire(now_ms, false, &mut done);
        for event in done {
            self.kernel_event(event, containers);
        }
        self.record_suppressed(false, containers);
        self.nflog_packets(containers);
        let mut failed = None;
        if self.last_check.elapsed() >= Duration::from_secs(1) {
            self.last_check = Instant::now();
            self.count_kernel_losses();
            let missing = self.gaps.expire(Instant::now());
            if missing > 0 {
                self.counters.lost_serials += missing;
                let total = self.counters.lost_serials;
                self.lost_record("kernel", "serial-gap", "events", missing, total);
            }
            failed = self.count_bpf_losses();
            if self.nflog_overflows_unsaid > 0 {
                let new = std::mem::take(&mut self.nflog_overflows_unsaid);
                let total = self.counters.nflog_overflows;
                self.lost_record("nflog", "socket-overflow", "overflows", new, total);
            }
            self.enricher.expire();
            self.router.tick()?;
        }
        self.router.commit()?;
        let reports = self.router.take_reports();
        self.copy_reports(reports);
        Ok(failed)
    }

    /// Writes what is queued: before a request is answered, so that no
    /// change is seen before its record is written.
    pub fn commit(&mut self) -> Result<()> {
        self.router.commit()
    }

    /// Writes what is queued and says whether every sink wrote it: a
    /// sink that is suspended, or lost records for want of space or to a
    /// write error, did not. An intent must be written before its change.
    pub fn commit_written(&mut self) -> Result<()> {
        let lost = |r: &Router| r.statuses().iter().map(|s| s.lost).sum::<u64>();
        let before = lost(&self.router);
        self.router.commit()?;
        let statuses = self.router.statuses();
        if let Some(s) = statuses.iter().find(|s| !s.writing) {
            anyhow::bail!("{} is suspended (its disk is full)", s.target);
        }
        anyhow::ensure!(
            lost(&self.router) == before,
            "records could not be written (disk full or write error)"
        );
        Ok(())
    }

    /// Writes everything still queued (at stop).
    pub fn flush(&mut self, containers: &impl Containers) -> Result<()> {
        let mut done = Vec::new();
        self.assembler.expire(0, true, &mut done);
        for event in done {
            self.kernel_event(event, containers);
        }
        self.record_suppressed(true, containers);
        self.router.commit()
    }

    /// Writes the counts of suppressed refusals that are due (every one
    /// when `all`).
    fn record_suppressed(&mut self, all: bool, containers: &impl Containers) {
        for s in self.refusals.due(Instant::now(), all) {
            let body = records::suppressed(&s, None);
            self.record("PTAGS_SUPPRESSED", body, s.source.contid, containers);
        }
        for s in self.ns_limit.due(Instant::now(), all) {
            self.counters.ns_suppressed += s.count;
            let body = records::suppressed(&s, Some("namespace-changes"));
            self.record("PTAGS_SUPPRESSED", body, s.source.contid, containers);
        }
    }

    /// Records the kernel dropped before any reader saw them: over its
    /// backlog limit, its rate limit, or out of memory (`auditctl -s`'s
    /// `lost`).
    fn count_kernel_losses(&mut self) {
        let Some(status) = self.kernel_status.as_mut() else {
            return;
        };
        match status.lost() {
            Ok(lost) => {
                let base = *self.kernel_lost_base.get_or_insert(lost);
                if lost != base {
                    let new = u64::from(lost.wrapping_sub(base));
                    self.kernel_lost_base = Some(lost);
                    self.counters.lost_kernel += new;
                    let total = self.counters.lost_kernel;
                    self.lost_record("kernel", "backlog-or-rate-limit", "records", new, total);
                }
            }
            Err(e) => warn!("reading the kernel's audit status: {e:#}"),
        }
    }

    /// The BPF programs' counters: events the ring buffer had no room
    /// for are lost records; labels they could not keep are an alarm,
    /// and the inheritance failures among them are handed back.
    fn count_bpf_losses(&mut self) -> Option<InheritanceFailed> {
        // Read before the counters: every task counted since started after.
        let window = std::mem::replace(&mut self.lost_read_at, host::boot_ticks());
        let lost = match self.kernel.lost() {
            Ok(lost) => lost,
            Err(e) => {
                warn!("reading the kernel side's loss counters: {e}");
                return None;
            }
        };
        let base = *self.bpf_lost_base.get_or_insert(lost);
        self.bpf_lost_base = Some(lost);
        for ((name, now), (_, before)) in lost.named().into_iter().zip(base.named()) {
            if now <= before {
                continue;
            }
            let reason = name.replace('_', "-");
            if name.ends_with("_events") {
                self.counters.lost_ringbuf += now - before;
                let total = self.counters.lost_ringbuf;
                self.lost_record("bpf", &reason, "events", now - before, total);
            } else {
                // Not records but labels: tasks that run without the
                // state they should have inherited (no memory for their
                // storage), or container counts gone wrong.
                warn!(
                    "the kernel side could not keep labels: {name} rose by {}",
                    now - before
                );
                self.lost_record("bpf", &reason, "tasks", now - before, now);
            }
        }
        (lost.task_storage > base.task_storage).then(|| InheritanceFailed {
            tasks: lost.task_storage - base.task_storage,
            // Started at or after the previous read, less a tick for the
            // rounding of start times.
            since: window.saturating_sub(1),
        })
    }

    /// Events the ring buffer held that could not be read.
    pub fn malformed_events(&self) -> u64 {
        self.events.malformed()
    }

    pub fn status(&self) -> AuditStatus {
        let log = self
            .router
            .statuses()
            .into_iter()
            .next()
            .expect("the log is the first sink");
        AuditStatus {
            log: log.target,
            writing: log.writing,
            seq: log.seq.unwrap_or(0),
            records_written: log.written,
            lost_disk: log.lost,
            registered: self.registered,
            counters: self.counters,
        }
    }
}
