//! Kernel audit records as they arrive from NETLINK_AUDIT, and their
//! assembly into events: the records of one event share a stamp, and a
//! multi-record event ends with an EOE record. An event without EOE (a
//! record the kernel logged outside a syscall) is complete when no record
//! has joined it for a while.

use std::collections::{HashMap, VecDeque};

use super::types::{type_name, EOE, OBJ_PID, SYSCALL};
use super::{field, Stamp};

/// One record from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRecord {
    pub kind: u16,
    pub stamp: Stamp,
    /// Everything after `audit(...): `, as the kernel wrote it.
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelRecordError {
    #[error("a kernel audit record starts with audit(SEC.MSEC:SERIAL):")]
    NoStamp,
}

impl KernelRecord {
    /// Parses a netlink payload: `audit(1606404280.226:174542): body`.
    pub fn parse(kind: u16, payload: &[u8]) -> Result<KernelRecord, KernelRecordError> {
        let end = payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(payload.len());
        // The kernel hex-encodes untrusted bytes: the payload is ASCII,
        // checked at SIMD speed before the slow lossy path is needed.
        let text = match std::str::from_utf8(&payload[..end]) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(&payload[..end]),
        };
        let text = text.trim_end_matches('\n');
        let rest = text
            .strip_prefix("audit(")
            .ok_or(KernelRecordError::NoStamp)?;
        let (stamp, body) = rest.split_once("):").ok_or(KernelRecordError::NoStamp)?;
        let stamp = Stamp::parse_inner(stamp).ok_or(KernelRecordError::NoStamp)?;
        Ok(KernelRecord {
            kind,
            stamp,
            body: body.strip_prefix(' ').unwrap_or(body).to_owned(),
        })
    }

    /// The record as the log writes it.
    pub fn text(&self) -> String {
        format!(
            "type={} msg={}: {}",
            type_name(self.kind),
            self.stamp,
            self.body
        )
    }
}

/// The records of one event, in the order the kernel sent them (EOE
/// left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEvent {
    pub stamp: Stamp,
    pub records: Vec<KernelRecord>,
}

impl KernelEvent {
    /// The process the event is about: the first `pid=` any record names.
    pub fn pid(&self) -> Option<u32> {
        self.records
            .iter()
            .find_map(|r| field(&r.body, "pid").and_then(|p| p.parse().ok()))
    }

    /// For a successful `ptrace` that attaches (PTRACE_ATTACH or
    /// PTRACE_SEIZE, x86_64 or i386): the traced pid, and whether it is
    /// the initial PID namespace's (from the kernel's OBJ_PID record) or,
    /// without that record, the tracer's (its argument `a1`).
    pub fn ptrace_attach_target(&self) -> Option<(u32, bool)> {
        let syscall = self.records.iter().find(|r| r.kind == SYSCALL)?;
        // Every kernel event passes here: most are not ptrace, told by a
        // substring search before any field is parsed.
        if !syscall.body.contains(" syscall=101 ") && !syscall.body.contains(" syscall=26 ") {
            return None;
        }
        let f = |key| field(&syscall.body, key);
        let ptrace = matches!(
            (f("arch")?, f("syscall")?),
            ("c000003e", "101") | ("40000003", "26")
        );
        // a0: PTRACE_ATTACH (0x10) or PTRACE_SEIZE (0x4206), in hex.
        if !ptrace || f("success")? != "yes" || !matches!(f("a0")?, "10" | "4206") {
            return None;
        }
        let host = self
            .records
            .iter()
            .filter(|r| r.kind == OBJ_PID)
            .find_map(|r| field(&r.body, "opid")?.parse().ok());
        match host {
            Some(pid) => Some((pid, true)),
            None => Some((u32::from_str_radix(f("a1")?, 16).ok()?, false)),
        }
    }
}

struct Pending {
    records: Vec<KernelRecord>,
    since_ms: u64,
}

/// Groups records into events. Bounded: past `max_pending` open events,
/// the oldest is completed as it is.
pub struct Assembler {
    pending: HashMap<Stamp, Pending>,
    order: VecDeque<Stamp>,
    max_pending: usize,
    quiet_ms: u64,
}

impl Assembler {
    /// `quiet_ms`: how long an event without EOE stays open.
    pub fn new(max_pending: usize, quiet_ms: u64) -> Assembler {
        Assembler {
            pending: HashMap::new(),
            order: VecDeque::new(),
            max_pending: max_pending.max(1),
            quiet_ms,
        }
    }

    pub fn open_events(&self) -> usize {
        self.pending.len()
    }

    /// Adds a record; returns the events it completed.
    pub fn push(&mut self, record: KernelRecord, now_ms: u64, done: &mut Vec<KernelEvent>) {
        let stamp = record.stamp;
        if record.kind == EOE {
            if let Some(p) = self.pending.remove(&stamp) {
                self.order.retain(|s| *s != stamp);
                done.push(KernelEvent {
                    stamp,
                    records: p.records,
                });
            }
            return;
        }
        match self.pending.get_mut(&stamp) {
            Some(p) => p.records.push(record),
            None => {
                if self.pending.len() >= self.max_pending {
                    self.complete_oldest(done);
                }
                self.pending.insert(
                    stamp,
                    Pending {
                        records: vec![record],
                        since_ms: now_ms,
                    },
                );
                self.order.push_back(stamp);
            }
        }
    }

    /// Completes the events that have waited `quiet_ms` (all of them
    /// when `all`).
    pub fn expire(&mut self, now_ms: u64, all: bool, done: &mut Vec<KernelEvent>) {
        while let Some(stamp) = self.order.front() {
            let old = self.pending[stamp].since_ms + self.quiet_ms <= now_ms;
            if !(all || old) {
                break;
            }
            self.complete_oldest(done);
        }
    }

    fn complete_oldest(&mut self, done: &mut Vec<KernelEvent>) {
        if let Some(stamp) = self.order.pop_front() {
            let p = self
                .pending
                .remove(&stamp)
                .expect("order and pending agree");
            done.push(KernelEvent {
                stamp,
                records: p.records,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u16, serial: u64, body: &str) -> KernelRecord {
        KernelRecord::parse(
            kind,
            format!("audit(1700000000.123:{serial}): {body}").as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn payloads_parse_like_the_kernel_writes_them() {
        let r =
            KernelRecord::parse(1300, b"audit(1700000000.123:45): arch=c000003e pid=7\0").unwrap();
        assert_eq!(r.stamp.serial, 45);
        assert_eq!(r.body, "arch=c000003e pid=7");
        assert_eq!(
            r.text(),
            "type=SYSCALL msg=audit(1700000000.123:45): arch=c000003e pid=7"
        );
        assert!(KernelRecord::parse(1300, b"arch=x").is_err());
        assert!(KernelRecord::parse(1300, b"audit(1.2:3): x").is_err());
        let empty = KernelRecord::parse(EOE, b"audit(1700000000.123:45): ").unwrap();
        assert_eq!(empty.body, "");
    }

    #[test]
    fn events_end_at_eoe_and_interleave() {
        let mut a = Assembler::new(100, 50);
        let mut done = Vec::new();
        a.push(rec(1300, 1, "ppid=1 pid=10 comm=\"a\""), 0, &mut done);
        a.push(rec(1300, 2, "ppid=1 pid=20"), 0, &mut done);
        a.push(rec(1307, 1, "cwd=\"/\""), 1, &mut done);
        a.push(rec(EOE, 1, ""), 1, &mut done);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].records.len(), 2);
        assert_eq!(done[0].pid(), Some(10));
        a.push(rec(EOE, 2, ""), 2, &mut done);
        assert_eq!(done[1].pid(), Some(20));
        assert_eq!(a.open_events(), 0);
        // A stray EOE completes nothing.
        a.push(rec(EOE, 3, ""), 2, &mut done);
        assert_eq!(done.len(), 2);
    }

    #[test]
    fn events_without_eoe_complete_when_quiet_or_crowded() {
        let mut a = Assembler::new(2, 50);
        let mut done = Vec::new();
        a.push(rec(1305, 1, "op=x"), 0, &mut done);
        a.push(rec(1305, 2, "op=y"), 30, &mut done);
        a.expire(49, false, &mut done);
        assert!(done.is_empty());
        a.expire(50, false, &mut done);
        assert_eq!(done.len(), 1);
        a.push(rec(1305, 3, "op=z"), 60, &mut done);
        a.push(rec(1305, 4, "op=w"), 60, &mut done);
        assert_eq!(done.len(), 2, "the oldest was pushed out");
        a.expire(0, true, &mut done);
        assert_eq!(done.len(), 4);
        assert_eq!(done[1].pid(), None);
    }

    #[test]
    fn ptrace_attaches_name_their_target() {
        let event = |body: &str| {
            let record = rec(SYSCALL, 9, body);
            KernelEvent {
                stamp: record.stamp,
                records: vec![record],
            }
        };
        let seize = "arch=c000003e syscall=101 success=yes exit=0 a0=4206 a1=3e8 a2=0 a3=0 pid=7";
        assert_eq!(event(seize).ptrace_attach_target(), Some((1000, false)));
        let attach32 = "arch=40000003 syscall=26 success=yes exit=0 a0=10 a1=2a pid=7";
        assert_eq!(event(attach32).ptrace_attach_target(), Some((42, false)));
        // The kernel's OBJ_PID names the target in the initial namespace.
        let mut with_obj = event(seize);
        with_obj.records.push(rec(
            OBJ_PID,
            9,
            "opid=5000 oauid=-1 ouid=0 oses=-1 ocomm=\"sleep\"",
        ));
        assert_eq!(with_obj.ptrace_attach_target(), Some((5000, true)));
        for other in [
            "arch=c000003e syscall=101 success=no exit=-1 a0=4206 a1=3e8 pid=7",
            "arch=c000003e syscall=101 success=yes exit=0 a0=11 a1=3e8 pid=7",
            "arch=c000003e syscall=26 success=yes exit=0 a0=10 a1=3e8 pid=7",
            "arch=c000003e syscall=101 success=yes exit=0 a0=10 a1=zz pid=7",
        ] {
            assert_eq!(event(other).ptrace_attach_target(), None, "{other}");
        }
    }
}
