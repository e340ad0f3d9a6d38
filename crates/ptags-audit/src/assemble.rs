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
    /// Everything after `audit(...): `, as the kernel wrote it, except
    /// that whatever could end a line is a space: the kernel passes the
    /// text of user messages (AUDIT_USER_*, which CAP_AUDIT_WRITE
    /// suffices to send, and runc's containers have it) through
    /// unescaped, and a newline in it would start a line of the sender's
    /// choosing in a trail.
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
        // The kernel hex-encodes untrusted bytes: the payload is nearly
        // always printable ASCII up to its end (a NUL or a newline, if
        // anything), which one scan tells.
        let printable = printable_prefix(payload);
        let text = if payload[printable..].iter().all(|&b| b == 0 || b == b'\n') {
            // SAFETY: printable ASCII is UTF-8.
            std::borrow::Cow::Borrowed(unsafe {
                std::str::from_utf8_unchecked(&payload[..printable])
            })
        } else {
            let end = payload
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(payload.len());
            let mut bytes = &payload[..end];
            while let [rest @ .., b'\n'] = bytes {
                bytes = rest;
            }
            std::borrow::Cow::Owned(one_line(&String::from_utf8_lossy(bytes)))
        };
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

/// The length of the run of printable ASCII (0x20 to 0x7e) that `bytes`
/// starts with, found eight bytes at a time: every kernel record passes
/// here.
fn printable_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // A byte under 0x20; a byte of 0x7f or more. A borrow or carry
        // into the next byte happens only after a byte that is one.
        let below = w.wrapping_sub(0x20 * ONES) & !w & HIGH;
        let above = (w.wrapping_add(ONES) | w) & HIGH;
        if below | above != 0 {
            break;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| b.wrapping_sub(0x20) >= 0x5f)
        .unwrap_or(bytes.len() - at)
}

/// `text` with every character that could end a line a space: control
/// characters (C0, DEL, C1 such as NEL) and the Unicode line and
/// paragraph separators.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect()
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
        let f = |key| field(&syscall.body, key);
        // Every kernel event passes here: most are not ptrace, told by
        // the second field.
        if !matches!(f("syscall")?, "101" | "26") {
            return None;
        }
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

    /// The stamp of the oldest event still open, in ms since the epoch.
    pub fn oldest_open_ms(&self) -> Option<u64> {
        self.order.iter().map(Stamp::epoch_millis).min()
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

    #[test]
    fn the_printable_scan_stops_at_every_other_byte_wherever_it_is() {
        for len in [0, 1, 7, 8, 9, 16, 23, 40] {
            let clean = vec![b'a'; len];
            assert_eq!(printable_prefix(&clean), len);
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = clean.clone();
                    bytes[at] = b;
                    let want = if (0x20..0x7f).contains(&b) { len } else { at };
                    assert_eq!(
                        printable_prefix(&bytes),
                        want,
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_payload_with_control_characters_is_one_line() {
        let r = KernelRecord::parse(1107, b"audit(1.000:2): msg='a\nb\tc\xc2\x85d'\n\0").unwrap();
        assert_eq!(r.body, "msg='a b c d'");
        let r = KernelRecord::parse(1300, b"audit(1.000:2): a=1\n").unwrap();
        assert_eq!(r.body, "a=1");
    }

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
