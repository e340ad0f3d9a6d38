//! Each container's own copy of its records (audit-container-id.md: "route
//! copies of the records of a container to an audit daemon running inside
//! that container, with the container's own rules and its own queue").
//!
//! A [`ContainerCopy`] is a sink the router hands the records of the
//! container and of the containers nested in it (their `scope`). It
//! groups them into events (the records of one stamp), keeps those its
//! policy takes, names pids as the container sees them, and offers each
//! event to its readers: its log's writer thread and its followers, each
//! through a bounded queue of its own. Nothing here waits: a reader that
//! is slow only fills its own queue, and what it cannot take is counted
//! and said (`PTAGS_LOST source=copy`), or stops the container when its
//! policy says `overflow kill`. A rate quota does the same for a
//! container that floods.

pub mod follow;
mod pids;
pub mod queue;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ptags_audit::policy::{Overflow, Policy};
use ptags_core::ContainerId;

use super::log_sink::DAEMON_SERIAL_BASE;
use super::records;
use super::router::{Record, Sink, SinkStatus};
use crate::config::Audit;
use pids::PidMap;
use queue::{Bounds, Queue};
use writer::LogWriter;

/// One event of a copy, shared by its readers' queues.
#[derive(Debug)]
pub struct CopyEvent {
    pub records: Vec<Record>,
    /// What it holds, against a queue's byte bound.
    pub bytes: u64,
}

/// Why a container is to be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicReason {
    /// A reader's queue was full and the policy says `overflow kill`.
    QueueFull,
    /// Over its `rate` quota with `action=kill`.
    Rate,
}

impl PanicReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PanicReason::QueueFull => "queue-full",
            PanicReason::Rate => "rate",
        }
    }
}

/// What a copy has to say to the host: records it could not deliver (for
/// the host trail) and the stop of its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Lost {
        contid: u64,
        reason: &'static str,
        lost: u64,
        total: u64,
    },
    Panic {
        contid: u64,
        reason: PanicReason,
        /// When the event that crossed the limit happened.
        at: Duration,
    },
}

/// Counts of a copy, for `ptags audit policy list` and `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyCounts {
    /// Records its policy took.
    pub taken: u64,
    /// Records its policy left out (not lost: the host trail has them).
    pub filtered: u64,
    /// Records over its rate quota.
    pub over_rate: u64,
    /// Records its readers' queues could not take (summed over readers).
    pub dropped: u64,
    /// Records its log's writer wrote.
    pub written: u64,
    pub followers: u64,
}

/// Records counted against the rate quota in the current window.
struct Window {
    start: Instant,
    records: u64,
}

pub struct ContainerCopy {
    contid: u64,
    own: ContainerId,
    policy: Policy,
    /// The event being gathered: records of one stamp come together.
    event: Vec<Record>,
    log: Option<LogWriter>,
    followers: Vec<Arc<Queue>>,
    window: Window,
    pids: PidMap,
    /// Serials of daemon records in this copy: from the time it opened,
    /// in microseconds, so that they do not repeat across restarts.
    next_serial: u64,
    counts: CopyCounts,
    /// Dropped by closed followers, kept in the counts.
    dropped_by_gone: u64,
    /// Drops already told the host, and over-rate records not yet.
    dropped_said: u64,
    over_rate_unsaid: u64,
    panicked: bool,
    reports: Vec<Report>,
}

/// Where copies keep their logs and keys, and the host's settings they
/// start from.
#[derive(Debug, Clone)]
pub struct CopyPlaces {
    pub log_root: PathBuf,
    pub state_root: PathBuf,
    pub audit: Audit,
}

impl ContainerCopy {
    /// Opens container `contid`'s copy under `policy`, with its log
    /// unless the policy says `log off`. `instance` names the container
    /// (see [`LogWriter::start`]).
    pub fn open(
        contid: u64,
        instance: &str,
        policy: Policy,
        places: &CopyPlaces,
    ) -> Result<ContainerCopy> {
        let log = match policy.log {
            Some(budget) => Some(LogWriter::start(
                contid,
                (&places.log_root, &places.state_root),
                instance,
                &places.audit,
                budget,
                bounds(&policy),
            )?),
            None => None,
        };
        let micros = super::log_sink::now().as_micros() as u64;
        let own = ContainerId::new(contid).context("the unset value names no container")?;
        Ok(ContainerCopy {
            contid,
            own,
            policy,
            event: Vec::new(),
            log,
            followers: Vec::new(),
            window: Window {
                start: Instant::now(),
                records: 0,
            },
            pids: PidMap::new(),
            next_serial: 2 * DAEMON_SERIAL_BASE + micros,
            counts: CopyCounts::default(),
            dropped_by_gone: 0,
            dropped_said: 0,
            over_rate_unsaid: 0,
            panicked: false,
            reports: Vec::new(),
        })
    }

    pub fn contid(&self) -> u64 {
        self.contid
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Where its log is, if it has one.
    pub fn log_dir(&self) -> Option<&Path> {
        self.log.as_ref().map(|l| l.dir.as_path())
    }

    /// A new reader of its records from now on.
    pub fn follow(&mut self) -> Arc<Queue> {
        let q = Queue::new(bounds(&self.policy));
        self.followers.push(Arc::clone(&q));
        q
    }

    pub fn counts(&self) -> CopyCounts {
        let mut c = self.counts;
        c.dropped = self.dropped_total();
        c.written = self
            .log
            .as_ref()
            .map_or(0, |l| l.written.load(Ordering::Relaxed));
        c.followers = self.followers.len() as u64;
        c
    }

    fn dropped_total(&self) -> u64 {
        let readers = self.log.iter().map(|l| &l.queue).chain(&self.followers);
        self.dropped_by_gone + readers.map(|q| q.dropped()).sum::<u64>()
    }

    /// What it has to tell the host since the last call.
    pub fn take_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    /// Ends the copy: what it lost is said, its readers take what is
    /// queued, then end.
    pub fn close(&mut self) {
        self.finish_event();
        self.say_losses();
        for f in &self.followers {
            f.close();
        }
        // The log's writer is joined when the copy is dropped.
    }

    fn panic(&mut self, reason: PanicReason, at: Duration) {
        if !self.panicked {
            self.panicked = true;
            self.reports.push(Report::Panic {
                contid: self.contid,
                reason,
                at,
            });
        }
    }

    /// Whether the rate quota admits `n` more records now.
    fn within_rate(&mut self, n: u64) -> bool {
        let Some(rate) = self.policy.rate else {
            return true;
        };
        let now = Instant::now();
        if now.duration_since(self.window.start) >= Duration::from_secs(rate.per_secs.into()) {
            self.window = Window {
                start: now,
                records: 0,
            };
        }
        self.window.records += n;
        self.window.records <= rate.records
    }

    /// Decides the gathered event and hands it to the readers.
    fn finish_event(&mut self) {
        if self.event.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.event);
        let n = records.len() as u64;
        if !self.within_rate(n) {
            self.counts.over_rate += n;
            self.over_rate_unsaid += n;
            if self.policy.rate.map(|r| r.action) == Some(Overflow::Kill) {
                self.panic(PanicReason::Rate, records[0].time);
            }
            return;
        }
        let takes = {
            let pairs: Vec<(&str, &str)> = records
                .iter()
                .map(|r| (r.kind.as_ref(), r.body.as_str()))
                .collect();
            self.policy.takes(&pairs)
        };
        if !takes {
            self.counts.filtered += n;
            return;
        }
        if let Some(own) = records.iter().find(|r| r.contid == Some(self.contid)) {
            if let Some(pid) = own.pid {
                self.pids.learn(pid, own.local);
            }
        }
        self.counts.taken += n;
        self.deliver(records);
    }

    /// Offers an event to every reader, its pids as the container sees
    /// them and its daemon records numbered.
    fn deliver(&mut self, mut records: Vec<Record>) {
        let serial = records[0].serial.unwrap_or_else(|| {
            self.next_serial += 1;
            self.next_serial
        });
        let mut bytes = 0;
        for r in &mut records {
            r.serial = Some(serial);
            let told = (r.pid.unwrap_or(0), r.local);
            let (pids, own) = (&mut self.pids, self.own);
            let seen = pids::rewrite(&r.body, |key, value| {
                pids::pid_field(key, value, |host| pids.field(key, host, told))
                    .or_else(|| pids::chain_field(key, value, own))
            });
            if let Some(body) = seen {
                r.body = body;
            }
            bytes += (r.body.len() + r.kind.len() + 48) as u64;
        }
        let at = records[0].time;
        let event = Arc::new(CopyEvent { records, bytes });
        let mut refused = false;
        if let Some(log) = &self.log {
            refused |= !log.queue.offer(&event);
        }
        for f in &self.followers {
            refused |= !f.offer(&event) && !f.is_closed();
        }
        if refused && self.policy.overflow == Overflow::Kill {
            self.panic(PanicReason::QueueFull, at);
        }
    }
}

fn bounds(policy: &Policy) -> Bounds {
    Bounds {
        records: policy.queue.records.into(),
        bytes: policy.queue.bytes,
    }
}

impl Sink for ContainerCopy {
    /// Records of one event come one after another: a kernel event's
    /// share its serial, a daemon record's auxiliaries follow it.
    fn push(&mut self, record: Record) {
        let same_event = record.follows
            || (record.serial.is_some()
                && self.event.first().map(|r| r.serial) == Some(record.serial));
        if !same_event {
            self.finish_event();
        }
        self.event.push(record);
    }

    fn commit(&mut self) -> Result<()> {
        self.finish_event();
        Ok(())
    }

    /// Says what was lost since the last tick, forgets readers that went
    /// away and the pids it read.
    fn tick(&mut self) -> Result<()> {
        self.finish_event();
        self.pids.expire();
        let (gone, live): (Vec<_>, Vec<_>) = self.followers.drain(..).partition(|q| q.is_closed());
        self.followers = live;
        self.dropped_by_gone += gone.iter().map(|q| q.dropped()).sum::<u64>();
        self.say_losses();
        Ok(())
    }

    fn status(&self) -> SinkStatus {
        let c = self.counts();
        SinkStatus {
            name: "copy",
            target: self.log_dir().map_or_else(
                || format!("container {}", self.contid),
                |d| d.display().to_string(),
            ),
            written: c.written,
            lost: c.dropped,
            seq: None,
            writing: true,
        }
    }
}

impl ContainerCopy {
    /// Tells the host what its readers could not take and what its rate
    /// refused since last said; the latter is said in the copy too.
    fn say_losses(&mut self) {
        let dropped = self.dropped_total();
        if dropped > self.dropped_said {
            self.reports.push(Report::Lost {
                contid: self.contid,
                reason: "queue-full",
                lost: dropped - self.dropped_said,
                total: dropped,
            });
            self.dropped_said = dropped;
        }
        if self.over_rate_unsaid > 0 {
            let lost = std::mem::take(&mut self.over_rate_unsaid);
            let total = self.counts.over_rate;
            self.reports.push(Report::Lost {
                contid: self.contid,
                reason: "rate",
                lost,
                total,
            });
            // Said in the copy too, past the quota that refused them.
            let body = records::lost("copy", "rate", "records", lost, total);
            let mut record = Record::daemon("PTAGS_LOST", super::log_sink::now(), body);
            record.contid = Some(self.contid);
            self.deliver(vec![record]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn places() -> CopyPlaces {
        CopyPlaces {
            log_root: "/nonexistent".into(),
            state_root: "/nonexistent".into(),
            audit: Config::defaults().audit,
        }
    }

    /// A copy of container 7 with no log, under `policy`, and a follower.
    fn copy(policy: &str) -> (ContainerCopy, Arc<Queue>) {
        let policy = Policy::parse(&format!("log off\n{policy}")).unwrap();
        let mut c = ContainerCopy::open(7, "test", policy, &places()).unwrap();
        let q = c.follow();
        (c, q)
    }

    fn kernel(kind: &'static str, serial: u64, body: &str) -> Record {
        Record {
            serial: Some(serial),
            contid: Some(7),
            ..Record::daemon(kind, Duration::from_secs(1), body.into())
        }
    }

    fn kinds(q: &Queue) -> Vec<Vec<String>> {
        let batch = q.take(Duration::ZERO).unwrap();
        batch
            .events
            .iter()
            .map(|e| e.records.iter().map(|r| r.kind.to_string()).collect())
            .collect()
    }

    #[test]
    fn records_of_one_stamp_are_one_event_that_the_policy_takes_or_leaves() {
        let (mut c, q) = copy("include syscall=59\nexclude\n");
        // An execve event: SYSCALL, EXECVE, CONTAINER_ID with one serial.
        c.push(kernel(
            "SYSCALL",
            10,
            "arch=c000003e syscall=59 success=yes pid=1",
        ));
        c.push(kernel("EXECVE", 10, "argc=1 a0=\"x\""));
        c.push(kernel("CONTAINER_ID", 10, "contid=7"));
        // An openat event: left out, whole.
        c.push(kernel(
            "SYSCALL",
            11,
            "arch=c000003e syscall=257 success=yes pid=1",
        ));
        c.push(kernel("CONTAINER_ID", 11, "contid=7"));
        // A daemon record and its follower.
        let op = Record::daemon("CONTAINER_OP", Duration::from_secs(2), "op=set".into());
        let info = Record::follower(&op, "NS_INFO", "mnt=1".into());
        c.push(op);
        c.push(info);
        c.commit().unwrap();
        assert_eq!(
            kinds(&q),
            [vec!["SYSCALL", "EXECVE", "CONTAINER_ID"]],
            "the openat and the daemon event are left out"
        );
        let counts = c.counts();
        assert_eq!((counts.taken, counts.filtered), (3, 4));
    }

    #[test]
    fn daemon_events_get_one_serial_of_the_copys_own() {
        let (mut c, q) = copy("");
        for body in ["op=a", "op=b"] {
            let op = Record::daemon("CONTAINER_OP", Duration::from_secs(2), body.into());
            let info = Record::follower(&op, "NS_INFO", "mnt=1".into());
            c.push(op);
            c.push(info);
        }
        c.commit().unwrap();
        let batch = q.take(Duration::ZERO).unwrap();
        let serials: Vec<Vec<u64>> = batch
            .events
            .iter()
            .map(|e| e.records.iter().map(|r| r.serial.unwrap()).collect())
            .collect();
        assert_eq!(serials.len(), 2);
        assert_eq!(serials[0][0], serials[0][1], "an event shares its serial");
        assert_eq!(serials[1][0], serials[0][0] + 1);
        assert!(
            serials[0][0] > 2 * DAEMON_SERIAL_BASE,
            "never a host serial"
        );
    }

    #[test]
    fn over_its_rate_a_copy_drops_and_says_so_or_asks_to_stop() {
        let (mut c, q) = copy("rate records=3 per=60s action=drop\n");
        for serial in 0..5 {
            c.push(kernel("SYSCALL", serial, "syscall=1"));
        }
        c.tick().unwrap();
        let batch = q.take(Duration::ZERO).unwrap();
        let bodies: Vec<&str> = batch
            .events
            .iter()
            .flat_map(|e| e.records.iter().map(|r| r.body.as_str()))
            .collect();
        assert_eq!(bodies.len(), 4, "{bodies:?}");
        assert!(bodies[3].contains("source=copy reason=rate unit=records lost=2 total=2"));
        assert_eq!(
            c.take_reports(),
            [Report::Lost {
                contid: 7,
                reason: "rate",
                lost: 2,
                total: 2
            }]
        );
        let (mut c, _q) = copy("rate records=3 per=60s action=kill\n");
        for serial in 0..10 {
            c.push(kernel("SYSCALL", serial, "syscall=1"));
        }
        c.commit().unwrap();
        let reports = c.take_reports();
        assert!(
            matches!(
                reports[..],
                [Report::Panic {
                    contid: 7,
                    reason: PanicReason::Rate,
                    ..
                }]
            ),
            "once: {reports:?}"
        );
    }

    #[test]
    fn a_full_queue_drops_or_asks_to_stop_as_the_policy_says() {
        let (mut c, q) = copy("queue records=2\n");
        for serial in 0..5 {
            c.push(kernel("SYSCALL", serial, "syscall=1"));
        }
        c.tick().unwrap();
        assert_eq!(
            c.take_reports(),
            [Report::Lost {
                contid: 7,
                reason: "queue-full",
                lost: 3,
                total: 3
            }]
        );
        let batch = q.take(Duration::ZERO).unwrap();
        assert_eq!((batch.events.len(), batch.dropped), (2, 3));
        // A follower gone is forgotten; its losses stay counted.
        q.close();
        c.tick().unwrap();
        assert_eq!(c.counts().followers, 0);
        assert_eq!(c.counts().dropped, 3);

        let (mut c, _q) = copy("queue records=2\noverflow kill\n");
        for serial in 0..5 {
            c.push(kernel("SYSCALL", serial, "syscall=1"));
        }
        c.commit().unwrap();
        assert!(matches!(
            c.take_reports()[..],
            [Report::Panic {
                reason: PanicReason::QueueFull,
                ..
            }]
        ));
    }
}
