//! The ptags audit trail, shared by the daemon that writes it and the CLI
//! that reads it: the Linux audit text format (`type=NAME
//! msg=audit(SEC.MSEC:SERIAL): key=value ...`) here, the message-type
//! table ([`types`]), the grouping of kernel records into events
//! ([`assemble`]), the sealed chain ([`chain`]), and the readers
//! ([`query`], [`report`]).
//!
//! Values from untrusted sources (comm, paths, tags) are written the way
//! the kernel and auditd write them, so that `ausearch` reads ptags' log:
//! quoted when every byte is printable and not a quote or space, else
//! hex-encoded (uppercase, unquoted). Parsing reverses both.

use std::fmt;

pub mod assemble;
pub mod chain;
pub mod index;
pub mod policy;
pub mod query;
pub mod report;
pub mod scan;
pub mod syscalls;
pub mod types;

use ptags_core::contid::{format_chains, format_contid, Chain, ContainerId, Style};

/// Whether the kernel would hex-encode this string
/// (`audit_string_contains_control`).
fn needs_hex(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .any(|&b| b == b'"' || !(0x21..=0x7e).contains(&b))
}

/// An untrusted value as the audit format writes it.
pub fn encode_untrusted(bytes: &[u8]) -> String {
    if needs_hex(bytes) {
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    } else {
        // Printable ASCII without quotes: valid UTF-8.
        format!(
            "\"{}\"",
            std::str::from_utf8(bytes).expect("printable ASCII")
        )
    }
}

/// Decodes a value known to be an untrusted string: quoted, or hex.
pub fn decode_untrusted(value: &str) -> Option<Vec<u8>> {
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        return (!inner.contains('"')).then(|| inner.as_bytes().to_vec());
    }
    if value.is_empty() || value.len() % 2 != 0 {
        return None;
    }
    (0..value.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(value.get(i..i + 2)?, 16).ok())
        .collect()
}

/// When a record was made and its serial: the key that groups the
/// records of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub secs: u64,
    pub millis: u16,
    pub serial: u64,
}

impl Stamp {
    /// Parses `SEC.MSEC:SERIAL`, the inside of `audit(...)`.
    pub fn parse_inner(text: &str) -> Option<Stamp> {
        let (time, serial) = text.split_once(':')?;
        let (secs, millis) = time.split_once('.')?;
        if millis.len() != 3 {
            return None;
        }
        Some(Stamp {
            secs: decimal(secs)?,
            millis: decimal(millis)? as u16,
            serial: decimal(serial)?,
        })
    }

    /// Milliseconds since the epoch.
    pub fn epoch_millis(&self) -> u64 {
        self.secs
            .saturating_mul(1000)
            .saturating_add(u64::from(self.millis))
    }
}

/// A non-empty run of ASCII digits that fits a u64.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.bytes().try_fold(0u64, |n, b| {
        let digit = b.wrapping_sub(b'0');
        (digit < 10).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// `n` in decimal, appended without the formatting machinery.
pub fn push_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends a record in the text format: `type=KIND msg=audit(...): BODY`.
pub fn write_text(out: &mut String, kind: &str, stamp: &Stamp, body: &str) {
    // SAFETY: only ASCII digits and punctuation are appended as bytes
    // besides whole `str`s, so the string stays UTF-8.
    let bytes = unsafe { out.as_mut_vec() };
    bytes.extend_from_slice(b"type=");
    bytes.extend_from_slice(kind.as_bytes());
    bytes.extend_from_slice(b" msg=audit(");
    push_decimal(stamp.secs, bytes);
    bytes.push(b'.');
    let ms = stamp.millis.min(999);
    bytes.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ]);
    bytes.push(b':');
    push_decimal(stamp.serial, bytes);
    bytes.extend_from_slice(b"): ");
    bytes.extend_from_slice(body.as_bytes());
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit({}.{:03}:{})", self.secs, self.millis, self.serial)
    }
}

/// One record: its type, stamp and fields (values already encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    pub stamp: Stamp,
    pub fields: Vec<(String, String)>,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type={} msg={}: {}",
            self.kind,
            self.stamp,
            format_fields(&self.fields)
        )
    }
}

/// Fields as a record's body writes them: `key=value` separated by spaces.
pub fn format_fields(fields: &[(String, String)]) -> String {
    let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(" ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("a record starts with `type=NAME msg=audit(`")]
    NoHeader,
    #[error("the stamp is not `audit(SEC.MSEC:SERIAL):`")]
    BadStamp,
    #[error("field {0:?} is not key=value")]
    BadField(String),
}

impl Record {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses one line of the audit text format.
    pub fn parse(line: &str) -> Result<Record, RecordError> {
        let entry = query::Entry::parse(line)?;
        let (kind, stamp, rest) = (entry.kind, entry.stamp, entry.body);
        let mut fields = Vec::new();
        for token in split_fields(rest) {
            let (key, value) = token
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| RecordError::BadField(token.to_owned()))?;
            fields.push((key.to_owned(), value.to_owned()));
        }
        Ok(Record {
            kind: kind.to_owned(),
            stamp,
            fields,
        })
    }
}

/// The `key=value` tokens of a record's body, read leniently: tokens
/// without `=` are skipped, and the fields inside a user-space record's
/// `msg='...'` are read too (its quotes stripped), as ausearch does.
pub fn fields(body: &str) -> impl Iterator<Item = (&str, &str)> {
    split_fields(body).filter_map(|token| {
        let token = token.strip_prefix("msg='").unwrap_or(token);
        let (key, value) = token.split_once('=')?;
        Some((key, value.strip_suffix('\'').unwrap_or(value)))
    })
}

/// The first value of `key` in a record's body.
pub fn field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    fields(body).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Splits fields on spaces outside double quotes.
fn split_fields(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while bytes.get(at) == Some(&b' ') {
            at += 1;
        }
        if at >= bytes.len() {
            return None;
        }
        let start = at;
        let mut quoted = false;
        while let Some(&b) = bytes.get(at) {
            match b {
                b'"' => quoted = !quoted,
                b' ' if !quoted => break,
                _ => {}
            }
            at += 1;
        }
        // Spaces and quotes are ASCII: the cuts fall on char boundaries.
        Some(&text[start..at])
    })
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A record as the members of a JSON object (without braces), for the
/// JSON-lines trail: `type`, `time` (`SEC.MSEC`), `serial`, the record's
/// exact `text`, and its `fields` (the first value of each key, quotes
/// removed, hex left as it is).
pub fn json_members(kind: &str, stamp: &Stamp, body: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let members: Vec<String> = fields(body)
        .filter(|(k, _)| seen.insert(*k))
        .map(|(k, v)| {
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            format!("{}:{}", json_string(k), json_string(v))
        })
        .collect();
    format!(
        "\"type\":{},\"time\":\"{}.{:03}\",\"serial\":{},\"text\":{},\"fields\":{{{}}}",
        json_string(kind),
        stamp.secs,
        stamp.millis,
        stamp.serial,
        json_string(body),
        members.join(",")
    )
}

/// Who asked for a change, as records name a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub pid: u32,
    pub uid: u32,
    /// The login uid; `u32::MAX` (unset) prints as 4294967295, as auditd.
    pub auid: u32,
    pub ses: u32,
    pub comm: Vec<u8>,
}

impl Subject {
    pub fn push_fields(&self, fields: &mut Vec<(String, String)>) {
        fields.push(("pid".into(), self.pid.to_string()));
        fields.push(("uid".into(), self.uid.to_string()));
        fields.push(("auid".into(), self.auid.to_string()));
        fields.push(("ses".into(), self.ses.to_string()));
        fields.push(("comm".into(), encode_untrusted(&self.comm)));
    }
}

/// The fields of a `CONTAINER_OP` record: the spec's `op opid contid
/// old-contid`, then the caller.
pub fn container_op_fields(
    op: &str,
    opid: u32,
    contid: ContainerId,
    old: Option<ContainerId>,
    caller: &Subject,
) -> Vec<(String, String)> {
    let mut fields = vec![
        ("op".to_owned(), op.to_owned()),
        ("opid".to_owned(), opid.to_string()),
        ("contid".to_owned(), contid.to_string()),
        ("old-contid".to_owned(), format_contid(old, Style::Raw)),
    ];
    caller.push_fields(&mut fields);
    fields
}

/// The fields of a `CONTAINER_ID` record: the task's chain(s).
pub fn container_id_fields(chains: &[Chain]) -> Vec<(String, String)> {
    vec![("contid".to_owned(), format_chains(chains, Style::Raw))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_text_writer_writes_what_display_writes() {
        for (secs, millis, serial) in [
            (0, 0, 0),
            (1700000000, 7, 4294967296),
            (u64::MAX, 999, u64::MAX),
        ] {
            let stamp = Stamp {
                secs,
                millis,
                serial,
            };
            let mut out = String::from("x");
            write_text(&mut out, "SYSCALL", &stamp, "a=1 b=\"c\"");
            assert_eq!(out, format!("xtype=SYSCALL msg={stamp}: a=1 b=\"c\""));
        }
    }

    fn id(n: u64) -> ContainerId {
        ContainerId::new(n).unwrap()
    }

    #[test]
    fn the_spec_examples_print_exactly() {
        let op = Record {
            kind: "CONTAINER_OP".into(),
            stamp: Stamp {
                secs: 1606404267,
                millis: 551,
                serial: 174524,
            },
            fields: container_op_fields(
                "set",
                8730,
                id(4515122123205246976),
                None,
                &Subject {
                    pid: 8700,
                    uid: 0,
                    auid: u32::MAX,
                    ses: u32::MAX,
                    comm: b"runc".to_vec(),
                },
            ),
        };
        assert_eq!(
            op.to_string(),
            "type=CONTAINER_OP msg=audit(1606404267.551:174524): op=set opid=8730 \
             contid=4515122123205246976 old-contid=-1 pid=8700 uid=0 auid=4294967295 \
             ses=4294967295 comm=\"runc\""
        );
        let cid = Record {
            kind: "CONTAINER_ID".into(),
            stamp: Stamp {
                secs: 1606404280,
                millis: 226,
                serial: 174542,
            },
            fields: container_id_fields(&[Chain(vec![id(527940429489930240)])]),
        };
        assert_eq!(
            cid.to_string(),
            "type=CONTAINER_ID msg=audit(1606404280.226:174542): contid=527940429489930240"
        );
        let nested = container_id_fields(&[Chain(vec![id(4), id(2), id(1)])]);
        assert_eq!(nested[0].1, "4,^2,^1");
        let shared = container_id_fields(&[Chain(vec![id(2), id(1)]), Chain(vec![id(3), id(1)])]);
        assert_eq!(shared[0].1, "2,^1,3,^1");
    }

    #[test]
    fn untrusted_values_are_quoted_or_hex_like_the_kernel() {
        assert_eq!(encode_untrusted(b"sleep"), "\"sleep\"");
        assert_eq!(encode_untrusted(b"a b"), "612062");
        assert_eq!(encode_untrusted(b"say\"hi"), "736179226869");
        assert_eq!(encode_untrusted(b"\xff"), "FF");
        assert_eq!(encode_untrusted("é".as_bytes()), "C3A9");
        assert_eq!(encode_untrusted(b""), "\"\"");
        assert_eq!(decode_untrusted("612062").unwrap(), b"a b");
        assert_eq!(decode_untrusted("\"sleep\"").unwrap(), b"sleep");
        assert_eq!(decode_untrusted("61206"), None);
        assert_eq!(decode_untrusted("zz"), None);
    }

    #[test]
    fn json_members_are_valid_json_with_the_exact_text() {
        let stamp = Stamp {
            secs: 5,
            millis: 7,
            serial: 9,
        };
        let body = "pid=1 comm=\"a\\b\" x=\"\u{1}\" pid=2";
        let json = format!("{{{}}}", json_members("SYSCALL", &stamp, body));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["type"], "SYSCALL");
        assert_eq!(v["time"], "5.007");
        assert_eq!(v["serial"], 9);
        assert_eq!(v["text"], body);
        assert_eq!(v["fields"]["comm"], "a\\b");
        assert_eq!(v["fields"]["x"], "\u{1}");
        assert_eq!(v["fields"]["pid"], "1", "the first value of a key");
    }

    #[test]
    fn kernel_records_parse() {
        let line = "type=SYSCALL msg=audit(1700000000.123:4567): arch=c000003e syscall=257 \
                    success=yes exit=3 a0=ffffff9c items=1 ppid=1 pid=42 auid=4294967295 \
                    uid=0 comm=\"cat\" exe=\"/usr/bin/cat\" key=\"ptags-test\"";
        let r = Record::parse(line).unwrap();
        assert_eq!(r.kind, "SYSCALL");
        assert_eq!(
            r.stamp,
            Stamp {
                secs: 1700000000,
                millis: 123,
                serial: 4567
            }
        );
        assert_eq!(r.field("comm"), Some("\"cat\""));
        assert_eq!(r.field("pid"), Some("42"));
        assert_eq!(r.to_string(), line);
        let quoted = "type=PATH msg=audit(1.000:2): name=\"a b\" nametype=NORMAL";
        assert_eq!(
            Record::parse(quoted).unwrap().field("name"),
            Some("\"a b\"")
        );
    }

    #[test]
    fn bad_records_are_refused() {
        for (line, err) in [
            ("", RecordError::NoHeader),
            ("type= msg=audit(1.000:2): a=b", RecordError::NoHeader),
            ("type=X msg=audit(1.00:2): a=b", RecordError::BadStamp),
            ("type=X msg=audit(1.000:): a=b", RecordError::BadStamp),
            ("type=X msg=audit(x.000:2): a=b", RecordError::BadStamp),
            ("type=X msg=audit(1.000:2) a=b", RecordError::BadStamp),
            (
                "type=X msg=audit(1.000:2): ab",
                RecordError::BadField("ab".into()),
            ),
            (
                "type=X msg=audit(1.000:2): =b",
                RecordError::BadField("=b".into()),
            ),
        ] {
            assert_eq!(Record::parse(line), Err(err), "{line:?}");
        }
    }
}
