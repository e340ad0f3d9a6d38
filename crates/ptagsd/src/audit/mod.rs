//! The audit trail. Data flows one way: kernel records (netlink) and
//! kernel events (ring buffer) are assembled and enriched with the
//! container of their task, the daemon's own operations are recorded,
//! and everything is sealed into the log file.

mod limit;
pub mod logfile;
pub mod netlink;
mod records;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use log::warn;
use ptags_bpf::{Event, EventKind, LostCounts};
use ptags_audit::assemble::{Assembler, KernelEvent, KernelRecord};
use ptags_audit::container_id_fields;
use ptags_audit::types::type_name;
use ptags_core::contid::Chain;
use ptags_core::ContainerId;

use crate::config::Config;
use crate::daemon::{Caller, Daemon};
use crate::pidns::PidView;
use crate::process::CAP_AUDIT_CONTROL;
use limit::{RefusalLimit, Source};
use logfile::{load_key, LogFile};
use netlink::{KernelMessage, KernelStatus};
use ptags_proto::{AuditCounters, AuditStatus, Failure, Response};

pub use records::{container_op, TagOp};

/// How long an event without EOE waits for more of its records.
const QUIET_MS: u64 = 50;
/// Events being assembled at once, at most.
const MAX_OPEN_EVENTS: usize = 65536;
/// How long the exit of a task is remembered, to name the container of
/// its last events after it is gone.
const EXIT_MEMORY: Duration = Duration::from_secs(30);

/// A task that exited in a container, and when (ms since the epoch).
#[derive(Debug, Clone, Copy)]
struct Exit {
    contid: u64,
    at_ms: u64,
    seen: Instant,
}

pub struct Trail {
    pub(crate) log: LogFile,
    /// Containers dropped a moment ago, and their parents.
    dropped: HashMap<u64, (Option<u64>, Instant)>,
    assembler: Assembler,
    exits: HashMap<u32, Exit>,
    kernel_status: Option<KernelStatus>,
    kernel_lost_base: Option<u32>,
    bpf_lost_base: Option<LostCounts>,
    /// When the counters were last read, in clock ticks since boot: a
    /// failed inheritance counted since happened to a task started since.
    lost_read_at: u64,
    last_check: Instant,
    /// After an overflow: the serial seen last before it.
    overflowed_after: Option<u64>,
    last_serial: u64,
    process_records: bool,
    /// Registered as the kernel's audit daemon (records by unicast).
    pub(crate) registered: bool,
    /// Records of refused requests, per user.
    refusals: RefusalLimit,
    pub(crate) counters: AuditCounters,
}

/// CLOCK_REALTIME minus CLOCK_BOOTTIME, in nanoseconds: turns the BPF
/// programs' boot times into wall-clock times.
fn boot_to_real_ns() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec for clock_gettime to fill.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_BOOTTIME)
}

impl Trail {
    pub fn open(config: &Config) -> Result<Trail> {
        let key = load_key(&config.state_dir.join("audit.key"))?;
        let log = LogFile::open(&config.log_dir, &config.state_dir, &config.audit, key)?;
        let kernel_status = if config.audit.kernel {
            Some(KernelStatus::open()?)
        } else {
            None
        };
        Ok(Trail {
            log,
            assembler: Assembler::new(MAX_OPEN_EVENTS, QUIET_MS),
            exits: HashMap::new(),
            dropped: HashMap::new(),
            kernel_status,
            kernel_lost_base: None,
            bpf_lost_base: None,
            lost_read_at: crate::repair::boot_ticks(),
            last_check: Instant::now() - Duration::from_secs(10),
            overflowed_after: None,
            last_serial: 0,
            process_records: config.audit.process_records,
            registered: false,
            refusals: RefusalLimit::new(config.audit.refusal_burst, config.audit.refusal_rate),
            counters: AuditCounters::default(),
        })
    }

    fn lost_record(&mut self, source: &str, reason: &str, lost: u64, total: u64) {
        self.log.push_daemon(
            "PTAGS_LOST",
            format!("source={source} reason={reason} lost={lost} total={total}"),
        );
    }

    /// Whether a record of a request that changed nothing from `source`
    /// may be written now; if not, it is counted.
    fn admit_unchanged(&mut self, source: Source) -> bool {
        let admitted = self.refusals.admit(source, Instant::now(), logfile::now());
        if !admitted {
            self.counters.suppressed_refusals += 1;
        }
        admitted
    }

    /// Writes the counts of suppressed refusals that are due (every one
    /// when `all`).
    fn record_suppressed(&mut self, all: bool) {
        for s in self.refusals.due(Instant::now(), all) {
            self.log
                .push_daemon("PTAGS_SUPPRESSED", records::suppressed(&s));
        }
    }

    pub(crate) fn remember_dropped(&mut self, id: u64, parent: Option<u64>) {
        self.dropped.insert(id, (parent, Instant::now()));
    }

    pub(crate) fn dropped_parent(&self, id: u64) -> Option<Option<u64>> {
        self.dropped.get(&id).map(|(p, _)| *p)
    }

    /// The container of a task that exited at or after `at_ms`.
    fn exited(&self, pid: u32, at_ms: Option<u64>) -> Option<u64> {
        let exit = self.exits.get(&pid)?;
        at_ms.is_none_or(|t| exit.at_ms >= t).then_some(exit.contid)
    }
}

impl Daemon<'_> {
    /// Kernel audit records from the netlink reader.
    pub fn on_kernel_records(&mut self, messages: Vec<KernelMessage>) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let mut done = Vec::new();
        for m in messages {
            let record = match KernelRecord::parse(m.kind, &m.payload) {
                Ok(r) => r,
                Err(e) => {
                    warn!("a kernel audit record of type {}: {e}", m.kind);
                    continue;
                }
            };
            let trail = &mut self.trail;
            trail.counters.kernel_records += 1;
            if let Some(before) = trail.overflowed_after.take() {
                let skipped = record.stamp.serial.saturating_sub(before + 1);
                trail.counters.lost_netlink += skipped;
                let total = trail.counters.lost_netlink;
                trail.lost_record("netlink", "overflow", skipped, total);
            }
            trail.last_serial = trail.last_serial.max(record.stamp.serial);
            trail.assembler.push(record, now_ms, &mut done);
        }
        for event in done {
            self.write_kernel_event(event);
        }
    }

    /// The netlink socket overflowed: how much was lost shows in the
    /// serials of the next record.
    pub fn on_kernel_overflow(&mut self) {
        let trail = &mut self.trail;
        trail.counters.netlink_overflows += 1;
        trail.overflowed_after.get_or_insert(trail.last_serial);
        warn!("the kernel audit socket overflowed: records were lost");
    }

    fn write_kernel_event(&mut self, event: KernelEvent) {
        let at_ms = event.stamp.epoch_millis();
        let pid = event.pid();
        let contid = pid.and_then(|pid| self.contid_at(pid, at_ms));
        let chain = contid.and_then(ContainerId::new).map(|id| self.chain(id));
        let ptrace = pid
            .zip(event.ptrace_attach_target())
            .and_then(|(tracer, target)| {
                self.cross_container_ptrace(tracer, target, contid, at_ms)
            });
        let trail = &mut self.trail;
        trail.counters.kernel_events += 1;
        for r in event.records {
            trail.log.push_kernel(type_name(r.kind), r.stamp, r.body);
        }
        if let Some(chain) = chain {
            trail.counters.contained_events += 1;
            let fields = container_id_fields(&[chain]);
            trail.log.push_kernel(
                "CONTAINER_ID",
                event.stamp,
                ptags_audit::format_fields(&fields),
            );
        }
        if let Some(body) = ptrace {
            trail.counters.cross_container_ptrace += 1;
            trail.log.push_kernel("PTAGS_PTRACE", event.stamp, body);
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
    ) -> Option<String> {
        // Without the kernel's OBJ_PID, the target is named as the
        // tracer's PID namespace names it; a tracer gone since is taken
        // to be in the daemon's.
        let target = match (host, PidView::of(tracer)) {
            (false, Ok(Some(view))) => view.host_pid(target).ok()?,
            _ => target,
        };
        let target_contid = self.contid_at(target, at_ms);
        if target_contid == tracer_contid {
            return None;
        }
        let chain = |c: Option<u64>| c.and_then(ContainerId::new).map(|id| self.chain(id));
        Some(records::ptrace(
            (tracer, chain(tracer_contid).as_ref()),
            (target, chain(target_contid).as_ref()),
        ))
    }

    /// The container process `pid` was in at `at_ms`: a task that has
    /// exited since is known from its exit event; a live one is asked.
    fn contid_at(&mut self, pid: u32, at_ms: u64) -> Option<u64> {
        if let Some(id) = self.trail.exited(pid, Some(at_ms)) {
            return Some(id);
        }
        match self.kernel.process_state(pid) {
            Ok(Some(state)) if state.contid.is_some() => state.contid,
            // Not in a container now. It may have exited since the event:
            // its ID is cleared at exit, its storage freed before it is
            // reaped, and it is gone once reaped, all after its exit event
            // was queued. Reading the queue costs no system call.
            _ => {
                self.poll_events();
                self.trail.exited(pid, Some(at_ms))
            }
        }
    }

    /// Exec and exit events: remembered to name the container of late
    /// kernel records, and written when process records are on.
    pub(crate) fn trail_events(&mut self, events: &[Event]) {
        let offset_ns = boot_to_real_ns();
        for e in events {
            let at_ms = ((i128::from(e.time_ns) + offset_ns) / 1_000_000).max(0) as u64;
            let record = match e.kind {
                // Recorded where the container is forgotten.
                EventKind::Drop => continue,
                // Always recorded: a change of a task's container.
                EventKind::Join | EventKind::JoinRefused => {
                    let at = std::time::Duration::from_millis(at_ms);
                    self.trail
                        .log
                        .push_daemon_at("CONTAINER_OP", at, records::join(e));
                    continue;
                }
                EventKind::Exit => {
                    self.trail.exits.insert(
                        e.tid,
                        Exit {
                            contid: e.contid,
                            at_ms,
                            seen: Instant::now(),
                        },
                    );
                    "PTAGS_EXIT"
                }
                EventKind::Exec => "PTAGS_EXEC",
            };
            if self.trail.process_records {
                let chain = ContainerId::new(e.contid).map(|id| self.chain(id));
                let body = records::process_record(e, chain.as_ref());
                let at = std::time::Duration::from_millis(at_ms);
                self.trail.log.push_daemon_at(record, at, body);
            }
        }
    }

    /// Completes quiet events, counts losses once a second, checks the
    /// disk, and writes what is queued. An error stops the daemon (a
    /// disk action of `stop`).
    pub fn audit_tick(&mut self) -> Result<()> {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let mut done = Vec::new();
        self.trail.assembler.expire(now_ms, false, &mut done);
        for event in done {
            self.write_kernel_event(event);
        }
        self.trail.record_suppressed(false);
        if self.trail.last_check.elapsed() >= Duration::from_secs(1) {
            self.trail.last_check = Instant::now();
            self.count_losses();
            self.trail
                .exits
                .retain(|_, e| e.seen.elapsed() < EXIT_MEMORY);
            self.trail
                .dropped
                .retain(|_, (_, at)| at.elapsed() < EXIT_MEMORY);
            self.trail.log.check_space()?;
        }
        self.trail.log.commit()
    }

    pub(crate) fn audit_status(&self) -> AuditStatus {
        let t = &self.trail;
        AuditStatus {
            log: t.log.path().display().to_string(),
            writing: t.log.writing() == logfile::Writing::On,
            seq: t.log.link().seq,
            records_written: t.log.written,
            lost_disk: t.log.lost_disk,
            registered: t.registered,
            counters: t.counters,
        }
    }

    /// Records a tag operation, done, or refused within the caller's
    /// rate limit.
    /// `changed`: whether the operation changed anything. Records of
    /// operations that changed nothing (refused, or a write of comments
    /// and queries) cost their caller nothing, and are rate-limited like
    /// refusals; a change is always recorded.
    pub(crate) fn record_tag_op(
        &mut self,
        caller: &Caller,
        op: &TagOp<'_>,
        result: &Result<Response, Failure>,
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
        self.trail.log.push_daemon("PTAGS_OP", body);
    }

    /// A live process's container, for records of requests about it.
    fn contid_of(&self, pid: u32) -> Option<ContainerId> {
        let state = self.kernel.process_state(pid).ok().flatten()?;
        state.contid.and_then(ContainerId::new)
    }

    /// Whether the record of a request of `caller` that changed nothing
    /// may be written: always for callers with CAP_AUDIT_CONTROL; for the
    /// others, within the rate of their user in their container (all of a
    /// machine's root containers do not share one bucket).
    fn admit_unchanged(&mut self, caller: &Caller) -> bool {
        if caller.creds.has_cap(CAP_AUDIT_CONTROL) {
            return true;
        }
        let source = Source {
            uid: caller.creds.uids[0],
            contid: self.contid_of(caller.pid()).map(ContainerId::get),
        };
        self.trail.admit_unchanged(source)
    }

    /// Records the setns policy of a container switched on.
    pub(crate) fn record_join_policy(
        &mut self,
        caller: &Caller,
        pid: u32,
        contid: u64,
        mnt_ns: (u64, u64),
    ) {
        let body = records::join_policy(pid, contid, mnt_ns, &caller.subject);
        self.trail.log.push_daemon("CONTAINER_OP", body);
    }

    /// Records a refused container-ID change, within the caller's rate
    /// limit.
    pub(crate) fn record_refused_contid(
        &mut self,
        caller: &Caller,
        pid: u32,
        id: u64,
        failure: &Failure,
    ) {
        if !self.admit_unchanged(caller) {
            return;
        }
        let old = self.contid_of(pid).map(ContainerId::get);
        let body = container_op("set", pid, id, old, &caller.subject, Some(failure));
        self.trail.log.push_daemon("CONTAINER_OP", body);
    }

    /// Records a task given the state it failed to inherit.
    pub(crate) fn record_repair(&mut self, r: &crate::repair::Repair, done: bool) {
        let chain =
            r.op.contid
                .and_then(|(c, _)| ContainerId::new(c))
                .map(|id| self.chain(id));
        let body = records::repair(r, chain.as_ref(), done);
        self.trail.log.push_daemon("PTAGS_REPAIR", body);
    }

    /// Records a refused end of a container (`ptags oci-hook` poststop).
    pub(crate) fn record_refused_end(&mut self, caller: &Caller, id: u64, failure: &Failure) {
        if !self.admit_unchanged(caller) {
            return;
        }
        let body = records::refused_end(id, &caller.subject, failure);
        self.trail.log.push_daemon("CONTAINER_OP", body);
    }

    /// Writes what is queued: before a request is answered, so that no
    /// change is seen before its record is written.
    pub fn audit_commit(&mut self) -> Result<()> {
        self.trail.log.commit()
    }

    /// Writes everything still queued (at stop).
    pub fn audit_flush(&mut self) -> Result<()> {
        let mut done = Vec::new();
        self.trail.assembler.expire(0, true, &mut done);
        for event in done {
            self.write_kernel_event(event);
        }
        self.trail.record_suppressed(true);
        self.trail.log.commit()
    }

    fn count_losses(&mut self) {
        let trail = &mut self.trail;
        if let Some(status) = trail.kernel_status.as_mut() {
            match status.lost() {
                Ok(lost) => {
                    let base = *trail.kernel_lost_base.get_or_insert(lost);
                    if lost > base {
                        let new = u64::from(lost - base);
                        trail.kernel_lost_base = Some(lost);
                        trail.counters.lost_kernel += new;
                        let total = trail.counters.lost_kernel;
                        trail.lost_record("kernel", "backlog-or-rate-limit", new, total);
                    }
                }
                Err(e) => warn!("reading the kernel's audit status: {e:#}"),
            }
        }
        // Read before the counters: every task counted since started after.
        let window = std::mem::replace(&mut self.trail.lost_read_at, crate::repair::boot_ticks());
        if let Ok(lost) = self.kernel.lost() {
            let base = *self.trail.bpf_lost_base.get_or_insert(lost);
            if lost.task_storage > base.task_storage {
                // Started at or after the previous read, less a tick for
                // the rounding of start times.
                let repaired = self.repair_inheritance(window.saturating_sub(1));
                warn!(
                    "inheritance failed for {} tasks; {repaired} repaired",
                    lost.task_storage - base.task_storage
                );
            }
            for ((name, now), (_, before)) in lost.named().into_iter().zip(base.named()) {
                if now <= before {
                    continue;
                }
                let reason = name.replace('_', "-");
                if name.ends_with("_events") {
                    // Events the ring buffer had no room for: records lost.
                    self.trail.counters.lost_ringbuf += now - before;
                    let total = self.trail.counters.lost_ringbuf;
                    self.trail.lost_record("bpf", &reason, now - before, total);
                } else {
                    // Not records but labels: tasks that run without the
                    // state they should have inherited (no memory for
                    // their storage), or container counts gone wrong. An
                    // alarm in the trail, the daemon's log and `status`.
                    warn!(
                        "the kernel side could not keep labels: {name} rose by {}",
                        now - before
                    );
                    self.trail.lost_record("bpf", &reason, now - before, now);
                }
            }
            self.trail.bpf_lost_base = Some(lost);
        }
    }
}

/// The chain printed for a task's container, for records naming it.
pub fn chain_text(chain: Option<&Chain>) -> String {
    ptags_core::contid::format_chains(
        chain.map(std::slice::from_ref).unwrap_or_default(),
        ptags_core::contid::Style::Raw,
    )
}
