//! Tamper evidence: every line of the trail carries its sequence number
//! and a keyed hash (BLAKE3, keyed, cut to 128 bits) over its own text
//! and the hash of the line before. Without the key no one can change,
//! insert, delete or reorder a line and mend the hashes after it.
//!
//! A text line ends with ` ptags_seq=N ptags_mac=HEX`; a JSON line starts
//! with `{"seq":N,` and ends with `,"mac":"HEX"}`. The hash covers the
//! line up to (not including) the MAC part, whatever the format, so one
//! verifier reads both.
//!
//! Each file starts with a `PTAGS_LOG` record naming the sequence number
//! and hash it continues from (`prev-seq`, `prev-mac`) and the key it is
//! sealed with (`key-id`), so that one file can be verified alone and a
//! series of rotated files is checked to join without a gap.
//!
//! A file deleted by rotation is said in a `PTAGS_ROTATE` record (in the
//! file started after it): its first and last sequence numbers and the
//! last MAC, which the oldest remaining file must join. The verifier
//! collects them and tells records removed by rotation from records
//! deleted without a record ([`Verifier::beginning`]).

use std::fmt;

pub const KEY_LEN: usize = 32;
const MAC_LEN: usize = 16;
const TEXT_SEQ: &str = " ptags_seq=";
const TEXT_MAC: &str = " ptags_mac=";
const JSON_SEQ: &str = "{\"seq\":";
const JSON_MAC: &str = ",\"mac\":\"";

/// The daemon's secret. Kept outside the log, readable by root only.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

impl Key {
    pub fn new(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Key, ChainError> {
        let bytes: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| ChainError::KeyLength(bytes.len()))?;
        Ok(Key(bytes))
    }

    /// A public name for the key (a hash of it), so that a verifier can
    /// tell "wrong key" from "altered record".
    pub fn id(&self) -> String {
        hex(&blake3::hash(&self.0).as_bytes()[..8])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("a key is {KEY_LEN} bytes, not {0}")]
    KeyLength(usize),
}

/// A line's keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Mac(pub [u8; MAC_LEN]);

impl Mac {
    pub fn parse(text: &str) -> Option<Mac> {
        if text.len() != MAC_LEN * 2 {
            return None;
        }
        let mut out = [0u8; MAC_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(bytes, &mut out);
    String::from_utf8(out).expect("hex digits")
}

/// Lowercase hex, written where it goes: a line's seal is on the path
/// of every record.
fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]);
    }
}

/// Where a chain stands: the last line's sequence number and hash.
/// `Link::default()` is the start of a new trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link {
    pub seq: u64,
    pub mac: Mac,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.mac)
    }
}

impl Link {
    /// Parses the form `Display` writes (the daemon's tail file).
    pub fn parse(text: &str) -> Option<Link> {
        let (seq, mac) = text.trim().split_once(' ')?;
        Some(Link {
            seq: seq.parse().ok()?,
            mac: Mac::parse(mac)?,
        })
    }
}

fn mac_of(key: &Key, prev: &Mac, content: &[u8]) -> Mac {
    let mut hasher = blake3::Hasher::new_keyed(&key.0);
    hasher.update(&prev.0);
    hasher.update(content);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..MAC_LEN]);
    Mac(out)
}

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// The audit text format, as auditd writes it.
    Text,
    /// One JSON object per line.
    Json,
}

/// Seals lines one after the other.
#[derive(Debug, Clone)]
pub struct Sealer {
    key: Key,
    link: Link,
}

impl Sealer {
    pub fn new(key: Key, link: Link) -> Sealer {
        Sealer { key, link }
    }

    pub fn link(&self) -> Link {
        self.link
    }

    pub fn key_id(&self) -> String {
        self.key.id()
    }

    /// The sequence number the next line gets.
    pub fn next_seq(&self) -> u64 {
        self.link.seq + 1
    }

    /// Appends one sealed line (with its newline) to `out`. `content` is
    /// the record as `format` writes it before its seal: for text the
    /// record, for JSON the object's members after `seq` (without braces).
    pub fn seal(&mut self, format: LineFormat, content: &str, out: &mut Vec<u8>) {
        let seq = self.next_seq();
        let start = out.len();
        match format {
            LineFormat::Text => {
                out.extend_from_slice(content.as_bytes());
                out.extend_from_slice(TEXT_SEQ.as_bytes());
                crate::push_decimal(seq, out);
            }
            LineFormat::Json => {
                out.extend_from_slice(JSON_SEQ.as_bytes());
                crate::push_decimal(seq, out);
                out.push(b',');
                out.extend_from_slice(content.as_bytes());
            }
        }
        let mac = mac_of(&self.key, &self.link.mac, &out[start..]);
        let (before, after): (&str, &[u8]) = match format {
            LineFormat::Text => (TEXT_MAC, b"\n"),
            LineFormat::Json => (JSON_MAC, b"\"}\n"),
        };
        out.extend_from_slice(before.as_bytes());
        push_hex(&mac.0, out);
        out.extend_from_slice(after);
        self.link = Link { seq, mac };
    }
}

/// `text.rsplit_once(pat)` for a pattern that is not empty: the last
/// occurrence, found by looking for the pattern's first byte from the
/// end (the seal ends the line: its first candidate is most often it),
/// without building a string searcher for each line.
pub(crate) fn rsplit_last<'s>(text: &'s str, pat: &str) -> Option<(&'s str, &'s str)> {
    let first = *pat.as_bytes().first()?;
    split_at_first_of(text, pat, memchr::memrchr_iter(first, text.as_bytes()))
}

/// `text.split_once(pat)` for a pattern that is not empty: the first
/// occurrence, found as [`rsplit_last`] finds the last.
pub(crate) fn split_first<'s>(text: &'s str, pat: &str) -> Option<(&'s str, &'s str)> {
    let first = *pat.as_bytes().first()?;
    split_at_first_of(text, pat, memchr::memchr_iter(first, text.as_bytes()))
}

/// `text` split around the first of the `candidates` (offsets of the
/// pattern's first byte) where `pat` stands. An occurrence of a whole
/// `str` in a `str` starts and ends on character boundaries: the slices
/// cannot panic.
fn split_at_first_of<'s>(
    text: &'s str,
    pat: &str,
    mut candidates: impl Iterator<Item = usize>,
) -> Option<(&'s str, &'s str)> {
    let at = candidates.find(|&at| text.as_bytes()[at..].starts_with(pat.as_bytes()))?;
    Some((&text[..at], &text[at + pat.len()..]))
}

/// A sealed line taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed<'a> {
    pub format: LineFormat,
    /// What the hash covers.
    pub content: &'a str,
    pub seq: u64,
    pub mac: Mac,
}

impl<'a> Sealed<'a> {
    pub fn split(line: &'a str) -> Option<Sealed<'a>> {
        if line.starts_with('{') {
            let body = line.strip_suffix("\"}")?;
            let (content, mac) = rsplit_last(body, JSON_MAC)?;
            let rest = content.strip_prefix(JSON_SEQ)?;
            let digits = rest.split(',').next()?;
            Some(Sealed {
                format: LineFormat::Json,
                content,
                seq: digits.parse().ok()?,
                mac: Mac::parse(mac)?,
            })
        } else {
            let (content, mac) = rsplit_last(line, TEXT_MAC)?;
            let (_, seq) = rsplit_last(content, TEXT_SEQ)?;
            Some(Sealed {
                format: LineFormat::Text,
                content,
                seq: seq.parse().ok()?,
                mac: Mac::parse(mac)?,
            })
        }
    }

    /// The record without its seal, in text format: what a reader of the
    /// trail sees. `None` for a JSON line.
    pub fn text_record(&self) -> Option<&'a str> {
        match self.format {
            LineFormat::Text => rsplit_last(self.content, TEXT_SEQ).map(|(r, _)| r),
            LineFormat::Json => None,
        }
    }
}

/// The record a line of the trail holds, in the text format, whatever
/// the line's format (sealed text, sealed JSON, or auditd's own lines);
/// `None` for a line that holds none.
pub fn record_text(line: &str) -> Option<std::borrow::Cow<'_, str>> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        return Some(
            format!(
                "type={} msg=audit({}:{}): {}",
                v["type"].as_str()?,
                v["time"].as_str()?,
                v["serial"].as_u64()?,
                v["text"].as_str()?
            )
            .into(),
        );
    }
    Some(
        Sealed::split(line)
            .and_then(|s| s.text_record())
            .unwrap_or(line)
            .into(),
    )
}

/// What is wrong with a trail, at the line `verify` was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("the line carries no ptags_seq/ptags_mac seal (cut, or not written by ptagsd)")]
    Unsealed,
    #[error(
        "the file does not start with its PTAGS_LOG opening record (its beginning was removed)"
    )]
    NoOpening,
    #[error("the file is sealed with key {found}, not with this key ({expected})")]
    WrongKey { expected: String, found: String },
    #[error("the file continues the trail from record {found}, but the file before ends at record {expected}")]
    FileGap { expected: u64, found: u64 },
    #[error("records {from} to {to} are missing before this one (deleted)")]
    Missing { from: u64, to: u64 },
    #[error("record {seq} comes after record {last}: reordered or duplicated")]
    Reordered { seq: u64, last: u64 },
    #[error("record {seq} was altered (or inserted): its hash does not match")]
    Altered { seq: u64 },
    #[error("the trail ends at record {last}, but the daemon wrote up to record {expected}: the end was cut off")]
    Truncated { last: u64, expected: u64 },
    #[error("the last record {seq} is not the one the daemon wrote last")]
    TailMismatch { seq: u64 },
    #[error("records {from} to {to} are missing before this file, and no rotation record says they were removed (deleted)")]
    RemovedUnrecorded { from: u64, to: u64 },
}

/// A file deleted by rotation, as its `PTAGS_ROTATE` record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub first: u64,
    pub last: u64,
    pub last_mac: Mac,
    /// Its first and last records' times (`SECS.MSEC`).
    pub first_time: String,
    pub last_time: String,
    /// The time of the record saying so.
    pub recorded_at: String,
}

impl Removal {
    /// From a sealed line, if it is a `PTAGS_ROTATE` record.
    fn parse(content: &str) -> Option<Removal> {
        // The type leads the record, before any untrusted text.
        let json_type = content.split_once(',').map(|(_, members)| members);
        if !content.starts_with("type=PTAGS_ROTATE ")
            && !json_type.is_some_and(|m| m.starts_with("\"type\":\"PTAGS_ROTATE\""))
        {
            return None;
        }
        let time = |key| log_field(content, key).unwrap_or("?").to_owned();
        Some(Removal {
            first: log_field(content, "first-seq")?.parse().ok()?,
            last: log_field(content, "last-seq")?.parse().ok()?,
            last_mac: Mac::parse(log_field(content, "last-mac")?)?,
            first_time: time("first-time"),
            last_time: time("last-time"),
            recorded_at: record_time(content).unwrap_or("?").to_owned(),
        })
    }
}

/// What comes before the first file verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beginning {
    /// Nothing: it starts the trail.
    Start,
    /// Records `first` to `last` were deleted by rotation, as the
    /// trail's `PTAGS_ROTATE` records say (the last of them recorded at
    /// `recorded_at`); the records before `first`, if any, went with
    /// older files, the record of it too.
    Rotated {
        first: u64,
        last: u64,
        first_time: String,
        last_time: String,
        recorded_at: String,
    },
    /// Records `from` to `to` are not in these files and no rotation
    /// record in them accounts for them. `recorded`: the files do hold
    /// rotation records (of earlier files), so a daemon that rotates
    /// would have recorded this one too.
    Unrecorded { from: u64, to: u64, recorded: bool },
}

/// The time (`SECS.MSEC`) of a sealed line's record, in either format.
pub fn record_time(content: &str) -> Option<&str> {
    let (rest, end) = match content.split_once("msg=audit(") {
        Some((_, rest)) => (rest, ':'),
        None => (content.split_once("\"time\":\"")?.1, '"'),
    };
    rest.split(end).next()
}

/// Checks lines in the order they were written, file after file.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: Key,
    last: Option<Link>,
    at_file_start: bool,
    lines: u64,
    /// Where the first file continues the trail from.
    start: Option<Link>,
    removals: Vec<Removal>,
}

/// A field of our own `PTAGS_LOG` record, in text or JSON content.
fn log_field<'a>(content: &'a str, key: &str) -> Option<&'a str> {
    let start = content.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &content[start..];
    let end = rest.find([' ', '"', ',']).unwrap_or(rest.len());
    Some(&rest[..end])
}

impl Verifier {
    /// `from`: where the trail must continue from, if known.
    pub fn new(key: Key, from: Option<Link>) -> Verifier {
        Verifier {
            key,
            last: from,
            at_file_start: true,
            lines: 0,
            start: from,
            removals: Vec::new(),
        }
    }

    /// The next line comes from a new file.
    pub fn start_file(&mut self) {
        self.at_file_start = true;
    }

    pub fn last(&self) -> Option<Link> {
        self.last
    }

    /// Lines verified so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Goes on after a line `verify` refused, so that one bad line (an
    /// injected one, say) cannot hide what follows: an unsealed line is
    /// passed over, and the chain goes on from a sealed one as if it were
    /// right (what it broke is already reported).
    pub fn resync(&mut self, line: &str) {
        if let Some(sealed) = Sealed::split(line) {
            self.at_file_start = false;
            self.last = Some(Link {
                seq: sealed.seq,
                mac: sealed.mac,
            });
        }
    }

    pub fn verify(&mut self, line: &str) -> Result<(), Broken> {
        let sealed = Sealed::split(line).ok_or(Broken::Unsealed)?;
        if self.at_file_start {
            self.opening(&sealed)?;
        }
        let last = self.last.unwrap_or_default();
        if sealed.seq <= last.seq {
            return Err(Broken::Reordered {
                seq: sealed.seq,
                last: last.seq,
            });
        }
        if sealed.seq > last.seq + 1 {
            return Err(Broken::Missing {
                from: last.seq + 1,
                to: sealed.seq - 1,
            });
        }
        if mac_of(&self.key, &last.mac, sealed.content.as_bytes()) != sealed.mac {
            return Err(Broken::Altered { seq: sealed.seq });
        }
        self.last = Some(Link {
            seq: sealed.seq,
            mac: sealed.mac,
        });
        self.lines += 1;
        // Authentic now: its hash matched.
        self.removals.extend(Removal::parse(sealed.content));
        Ok(())
    }

    fn opening(&mut self, sealed: &Sealed<'_>) -> Result<(), Broken> {
        let is_opening = sealed.content.contains("type=PTAGS_LOG ")
            || sealed.content.contains("\"type\":\"PTAGS_LOG\"");
        let prev = log_field(sealed.content, "prev-seq")
            .and_then(|s| s.parse::<u64>().ok())
            .zip(log_field(sealed.content, "prev-mac").and_then(Mac::parse));
        let (Some((seq, mac)), true) = (prev, is_opening) else {
            return Err(Broken::NoOpening);
        };
        let found = log_field(sealed.content, "key-id").unwrap_or("?");
        if found != self.key.id() {
            return Err(Broken::WrongKey {
                expected: self.key.id(),
                found: found.to_owned(),
            });
        }
        let prev = Link { seq, mac };
        if let Some(last) = self.last {
            if last != prev {
                return Err(Broken::FileGap {
                    expected: last.seq,
                    found: prev.seq,
                });
            }
        }
        self.last = Some(prev);
        self.start.get_or_insert(prev);
        self.at_file_start = false;
        Ok(())
    }

    /// What comes before the first file, after the last line: the
    /// records removed by rotation (walking back from the first file
    /// through the rotation records, each file joining the one after it),
    /// or records missing with no record of their removal.
    pub fn beginning(&self) -> Beginning {
        let start = match self.start {
            Some(s) if s.seq > 0 => s,
            _ => return Beginning::Start,
        };
        let joined = self
            .removals
            .iter()
            .rev()
            .find(|r| r.last == start.seq && r.last_mac == start.mac);
        let Some(joined) = joined else {
            let from = self
                .removals
                .iter()
                .map(|r| r.last)
                .filter(|&l| l < start.seq)
                .max()
                .map_or(1, |l| l + 1);
            return Beginning::Unrecorded {
                from,
                to: start.seq,
                recorded: !self.removals.is_empty(),
            };
        };
        let mut earliest = joined;
        while let Some(r) = self
            .removals
            .iter()
            .find(|r| r.last + 1 == earliest.first && r.first <= r.last)
        {
            earliest = r;
        }
        Beginning::Rotated {
            first: earliest.first,
            last: start.seq,
            first_time: earliest.first_time.clone(),
            last_time: joined.last_time.clone(),
            recorded_at: joined.recorded_at.clone(),
        }
    }

    /// After the last line: compares with where the daemon says it
    /// stopped (its tail file), when known.
    pub fn finish(&self, tail: Option<Link>) -> Result<(), Broken> {
        let (Some(tail), Some(last)) = (tail, self.last) else {
            return Ok(());
        };
        if last.seq < tail.seq {
            return Err(Broken::Truncated {
                last: last.seq,
                expected: tail.seq,
            });
        }
        if last.seq == tail.seq && last.mac != tail.mac {
            return Err(Broken::TailMismatch { seq: last.seq });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::new([b; KEY_LEN])
    }

    fn opening(sealer: &Sealer) -> String {
        let prev = sealer.link();
        format!(
            "type=PTAGS_LOG msg=audit(1.000:{}): op=open prev-seq={} prev-mac={} key-id={}",
            (1u64 << 32) + sealer.next_seq(),
            prev.seq,
            prev.mac,
            sealer.key_id()
        )
    }

    /// A trail of `n` records after its opening, as lines.
    fn trail(format: LineFormat, n: usize) -> (Vec<String>, Link) {
        let mut sealer = Sealer::new(key(7), Link::default());
        let mut out = Vec::new();
        let open = opening(&sealer);
        match format {
            LineFormat::Text => sealer.seal(format, &open, &mut out),
            LineFormat::Json => sealer.seal(
                format,
                &format!("\"type\":\"PTAGS_LOG\",\"text\":\"{}\"", &open[38..]),
                &mut out,
            ),
        }
        for i in 0..n {
            let rec = format!("type=SYSCALL msg=audit(2.000:{i}): pid={i} comm=\"x\"");
            match format {
                LineFormat::Text => sealer.seal(format, &rec, &mut out),
                LineFormat::Json => sealer.seal(format, &format!("\"text\":\"pid={i}\""), &mut out),
            }
        }
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(str::to_owned).collect(), sealer.link())
    }

    fn check(lines: &[String], tail: Option<Link>) -> Result<(), (usize, Broken)> {
        let mut v = Verifier::new(key(7), None);
        for (i, l) in lines.iter().enumerate() {
            v.verify(l).map_err(|e| (i, e))?;
        }
        v.finish(tail).map_err(|e| (lines.len(), e))
    }

    #[test]
    fn a_clean_trail_verifies_in_both_formats() {
        for format in [LineFormat::Text, LineFormat::Json] {
            let (lines, tail) = trail(format, 20);
            assert_eq!(check(&lines, Some(tail)), Ok(()), "{format:?}");
            let sealed = Sealed::split(&lines[3]).unwrap();
            assert_eq!(sealed.seq, 4);
            assert_eq!(sealed.format, format);
        }
        let (lines, _) = trail(LineFormat::Text, 1);
        assert_eq!(
            Sealed::split(&lines[1]).unwrap().text_record(),
            Some("type=SYSCALL msg=audit(2.000:0): pid=0 comm=\"x\"")
        );
    }

    /// Every break, going on after each as the CLI does.
    fn all_breaks(lines: &[String]) -> Vec<(usize, Broken)> {
        let mut v = Verifier::new(key(7), None);
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if let Err(e) = v.verify(l) {
                out.push((i, e));
                v.resync(l);
            }
        }
        out
    }

    #[test]
    fn an_injected_line_does_not_hide_a_later_deletion() {
        let (lines, _) = trail(LineFormat::Text, 20);
        let mut tampered = lines.clone();
        tampered.insert(5, "type=CONTAINER_OP msg=audit(1.000:4294999999): op=drop contid=5151 ptags_seq=1 ptags_mac=00".into());
        tampered.remove(12);
        tampered[15] = tampered[15].replace("pid=14", "pid=99");
        assert_eq!(
            all_breaks(&tampered),
            [
                (5, Broken::Unsealed),
                (12, Broken::Missing { from: 12, to: 12 }),
                (15, Broken::Altered { seq: 16 }),
            ]
        );
        assert_eq!(all_breaks(&lines), []);
    }

    #[test]
    fn every_kind_of_tampering_is_found_where_it_is() {
        let (lines, tail) = trail(LineFormat::Text, 10);
        let mut edited = lines.clone();
        edited[4] = edited[4].replace("pid=3", "pid=4");
        assert_eq!(check(&edited, None), Err((4, Broken::Altered { seq: 5 })));

        let mut deleted = lines.clone();
        deleted.remove(6);
        assert_eq!(
            check(&deleted, None),
            Err((6, Broken::Missing { from: 7, to: 7 }))
        );

        let mut swapped = lines.clone();
        swapped.swap(3, 4);
        assert_eq!(
            check(&swapped, None),
            Err((3, Broken::Missing { from: 4, to: 4 }))
        );

        let mut duplicated = lines.clone();
        duplicated.insert(5, lines[4].clone());
        assert_eq!(
            check(&duplicated, None),
            Err((5, Broken::Reordered { seq: 5, last: 5 }))
        );

        let truncated = &lines[..8];
        assert_eq!(
            check(truncated, Some(tail)),
            Err((
                8,
                Broken::Truncated {
                    last: 8,
                    expected: 11
                }
            ))
        );

        let headless = &lines[2..];
        assert_eq!(check(headless, None), Err((0, Broken::NoOpening)));

        let mut unsealed = lines.clone();
        unsealed[2] = "type=SYSCALL msg=audit(2.000:1): pid=1".into();
        assert_eq!(check(&unsealed, None), Err((2, Broken::Unsealed)));

        let mut wrong = Verifier::new(key(8), None);
        assert!(matches!(
            wrong.verify(&lines[0]),
            Err(Broken::WrongKey { .. })
        ));
    }

    #[test]
    fn files_must_join_without_a_gap() {
        let mut sealer = Sealer::new(key(1), Link::default());
        let mut first = Vec::new();
        sealer.seal(LineFormat::Text, &opening(&sealer), &mut first);
        sealer.seal(
            LineFormat::Text,
            "type=X msg=audit(1.000:1): a=1",
            &mut first,
        );
        let joint = sealer.link();
        sealer.seal(
            LineFormat::Text,
            "type=X msg=audit(1.000:2): a=2",
            &mut first,
        );
        let mut second = Vec::new();
        sealer.seal(LineFormat::Text, &opening(&sealer), &mut second);

        let mut v = Verifier::new(key(1), None);
        for l in String::from_utf8(first.clone()).unwrap().lines() {
            v.verify(l).unwrap();
        }
        v.start_file();
        v.verify(String::from_utf8(second.clone()).unwrap().trim_end())
            .unwrap();

        // The first file lost its last line: the second no longer joins.
        let mut v = Verifier::new(key(1), None);
        for l in String::from_utf8(first).unwrap().lines().take(2) {
            v.verify(l).unwrap();
        }
        assert_eq!(v.last().unwrap(), joint);
        v.start_file();
        assert_eq!(
            v.verify(String::from_utf8(second).unwrap().trim_end()),
            Err(Broken::FileGap {
                expected: 2,
                found: 3
            })
        );
    }

    #[test]
    fn links_and_macs_parse_what_they_print() {
        let (_, tail) = trail(LineFormat::Text, 3);
        assert_eq!(Link::parse(&tail.to_string()), Some(tail));
        assert_eq!(Link::parse("3"), None);
        assert_eq!(Mac::parse("zz"), None);
        assert!(Key::from_slice(&[0; 31]).is_err());
    }

    proptest::proptest! {
        /// The splits found with memchr are those of `str`'s own, for
        /// the patterns a line is split at, in text made of their pieces
        /// (and of bytes that are not ASCII).
        #[test]
        fn splits_found_with_memchr_are_those_of_str(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    " ptags_seq=", " ptags_mac=", ",\"mac\":\"", " msg=audit(", "):", " ", ")",
                    ",", "ptags_", "p", "12", "é", "\u{1F600}", "=", ":",
                ]),
                0..24,
            ),
            pat in proptest::sample::select(vec![
                TEXT_SEQ, TEXT_MAC, JSON_MAC, " msg=audit(", "):", "é",
            ]),
        ) {
            let text = pieces.concat();
            proptest::prop_assert_eq!(rsplit_last(&text, pat), text.rsplit_once(pat));
            proptest::prop_assert_eq!(split_first(&text, pat), text.split_once(pat));
        }
    }
}
