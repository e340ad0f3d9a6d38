//! Reading a log as `ptags audit search` does: its lines grouped into
//! events ([`EventGrouper`], one line after the other), and [`search`],
//! which gives the same answer over a log held in memory, fast.
//!
//! [`search`] splits the log into chunks of whole lines, scanned by one
//! worker per core, their results written in the log's order. Most
//! queries name something every matching event has a record of (a
//! container, a task, a record type...), and that record's line contains
//! a known text, the needle (`contid=`, the pid's digits...): only events
//! with such a record are parsed. Every other line is only looked at for
//! its stamp, which is what groups lines into events and tells the lines
//! that hold no record.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::IoSlice;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use memchr::memmem::Finder;
use ptags_core::line::Selector;

use crate::chain::{record_text, Sealed};
use crate::index::{Block, Summary};
use crate::query::{names_namespace, names_pid, nest_link, touches_tags, Entry, Query};
use crate::Stamp;

/// One line of a log that holds a record: the line as written, the
/// record's text (without its seal), and its stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub raw: Cow<'a, str>,
    pub record: Cow<'a, str>,
    pub seq: Option<u64>,
    pub stamp: Stamp,
}

impl<'a> LogLine<'a> {
    /// The record in a line of either format (auditd's own logs too);
    /// `None` for a line that holds no record.
    pub fn parse(raw: Cow<'a, str>) -> Option<LogLine<'a>> {
        // A text line is split once, for its seq and its record alike
        // (what `record_text` makes of it).
        let text_line = |text: &str| {
            let sealed = Sealed::split(text);
            let record = sealed.and_then(|s| s.text_record());
            (
                sealed.map(|s| s.seq),
                record.map_or(0..text.len(), |r| 0..r.len()),
            )
        };
        let (seq, record) = match &raw {
            Cow::Borrowed(text) if !text.starts_with('{') => {
                let (seq, record) = text_line(text);
                (seq, Cow::Borrowed(&text[record]))
            }
            Cow::Owned(text) if !text.starts_with('{') => {
                let (seq, record) = text_line(text);
                (seq, Cow::Owned(text[record].to_owned()))
            }
            Cow::Borrowed(text) => (Sealed::split(text).map(|s| s.seq), record_text(text)?),
            Cow::Owned(text) => (
                Sealed::split(text).map(|s| s.seq),
                Cow::Owned(record_text(text)?.into_owned()),
            ),
        };
        let stamp = Entry::parse(&record).ok()?.stamp;
        Some(LogLine {
            raw,
            record,
            seq,
            stamp,
        })
    }

    pub fn entry(&self) -> Entry<'_> {
        Entry::parse(&self.record).expect("parsed in LogLine::parse")
    }
}

/// Groups the lines of a log into events: consecutive records sharing a
/// stamp. A line that holds no record is counted and skipped; it does
/// not end the event around it.
#[derive(Debug, Default)]
pub struct EventGrouper<'a> {
    group: Vec<LogLine<'a>>,
    unreadable: u64,
}

impl<'a> EventGrouper<'a> {
    /// Adds the next line (without its newline), calling `each` with the
    /// event it completes.
    pub fn push(&mut self, raw: Cow<'a, str>, each: &mut impl FnMut(&[LogLine<'a>], &[Entry<'_>])) {
        let Some(line) = LogLine::parse(raw) else {
            self.unreadable += 1;
            return;
        };
        if self.group.last().is_some_and(|l| l.stamp != line.stamp) {
            self.flush(each);
        }
        self.group.push(line);
    }

    /// Completes the last event; returns how many lines held no record.
    pub fn finish(mut self, each: &mut impl FnMut(&[LogLine<'a>], &[Entry<'_>])) -> u64 {
        self.flush(each);
        self.unreadable
    }

    fn flush(&mut self, each: &mut impl FnMut(&[LogLine<'a>], &[Entry<'_>])) {
        if !self.group.is_empty() {
            let entries: Vec<Entry<'_>> = self.group.iter().map(LogLine::entry).collect();
            each(&self.group, &entries);
            self.group.clear();
        }
    }
}

/// How [`search`] divides its work.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    /// About how many bytes of lines each piece of work has.
    pub chunk_bytes: usize,
    pub workers: usize,
}

impl Default for Split {
    /// Pieces small enough that results stream and cores share the work
    /// evenly, large enough that handing them out costs nothing.
    fn default() -> Split {
        Split {
            chunk_bytes: 2 << 20,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// What [`search`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    pub matched: u64,
    /// Lines that hold no record.
    pub unreadable: u64,
}

/// How [`search`] writes a matching event.
#[derive(Clone, Copy)]
pub enum Print<'f> {
    /// Its lines as written (those that hold a record), each ending with
    /// a newline: copied, not parsed (bytes that are not UTF-8 are
    /// replaced as [`String::from_utf8_lossy`] does).
    Raw,
    /// Written by this function, given the event's lines and records (it
    /// runs on the workers).
    With(Format<'f>),
}

/// Finds the events of `log` (lines separated by `\n`, as the files
/// are read one after the other) that match `query`: the same events, in
/// the same order, as grouping the lines with [`EventGrouper`] and
/// matching them with a [`crate::query::Matcher`]. `print` writes a
/// matching event's text; `write` is given that text in the log's order
/// (a chunk's at a time, as slices to write one after the other: lines
/// printed raw are slices of `log` itself, not copied), and may stop the
/// search.
///
/// `blocks`, when given, cut the log into ranges of whole lines, some
/// with what an index says they hold ([`crate::index`]): a block whose
/// summary shows it cannot match is skipped (its lines without a record
/// counted from the summary), provided the data confirms that no event
/// crosses its ends. Blocks that do not tile the log are ignored.
pub fn search(
    log: &[u8],
    query: &Query,
    split: Split,
    blocks: Option<&[Block]>,
    print: Print<'_>,
    mut write: impl FnMut(&[IoSlice<'_>]) -> ControlFlow<()>,
) -> Result<Found, String> {
    query.validate()?;
    let plan = Plan::new(log, blocks, split.chunk_bytes);
    let family = if query.nested {
        family(log, query, &plan, split.workers)
    } else {
        HashMap::new()
    };
    let tag = query.tag.as_deref().map(ptags_core::line::parse_pattern);
    let anchor = Anchor::of(query, tag.and_then(Result::ok));
    let filters = filter_needles(query);
    let only_anchor = anchor.as_ref().is_some_and(|a| {
        let needles = |f: &[Finder<'_>]| f.iter().map(|n| n.needle().to_vec()).collect::<Vec<_>>();
        needles(&a.needles) == needles(&filters)
    });
    let scan = Scan {
        log,
        query,
        anchor,
        filters,
        only_anchor,
        family: &family,
        print,
    };
    let in_family = |id| family.contains_key(&id);
    let mut found = Found::default();
    in_order(
        &plan.bounds,
        split.workers,
        |i, start, end| match plan.known[i] {
            Some(summary) if !summary.may_match(query, &in_family) => ChunkFound {
                unreadable: summary.unreadable,
                ..ChunkFound::default()
            },
            _ => scan.chunk(start, end),
        },
        |chunk| {
            found.matched += chunk.matched;
            found.unreadable += chunk.unreadable;
            if chunk.text.is_empty() {
                ControlFlow::Continue(())
            } else {
                write(&chunk.text.slices(log))
            }
        },
    );
    Ok(found)
}

/// The chunks a search reads: where they start (and the last ends), and
/// for each, what an index says it holds, when the data confirms that
/// the chunk holds whole events.
struct Plan<'b> {
    bounds: Vec<usize>,
    known: Vec<Option<&'b Summary>>,
}

impl<'b> Plan<'b> {
    fn new(log: &[u8], blocks: Option<&'b [Block]>, chunk_bytes: usize) -> Plan<'b> {
        let tiles = |blocks: &[Block]| {
            let mut at = 0;
            for b in blocks {
                if b.start != at || b.end <= b.start || b.end > log.len() {
                    return false;
                }
                if b.start > 0 && log[b.start - 1] != b'\n' {
                    return false;
                }
                at = b.end;
            }
            at == log.len()
        };
        let blocks = match blocks {
            Some(blocks) if tiles(blocks) => blocks,
            _ => {
                let bounds = chunk_bounds(log, chunk_bytes);
                let known = vec![None; bounds.len().saturating_sub(1)];
                return Plan { bounds, known };
            }
        };
        let mut plan = Plan {
            bounds: vec![0],
            known: Vec::new(),
        };
        for b in blocks {
            let whole = || !cuts_event(log, b.start) && !cuts_event(log, b.end);
            match &b.summary {
                Some(summary) if whole() => {
                    plan.bounds.push(b.end);
                    plan.known.push(Some(summary));
                }
                _ => {
                    // Unknown: read as without an index, in chunks.
                    let inner = chunk_bounds(&log[b.start..b.end], chunk_bytes);
                    for end in inner.into_iter().skip(1) {
                        plan.bounds.push(b.start + end);
                        plan.known.push(None);
                    }
                }
            }
        }
        plan
    }
}

/// Whether the lines on both sides of `at` (a line start) belong to one
/// event.
fn cuts_event(log: &[u8], mut at: usize) -> bool {
    let Some(before) = stamp_before(log, at) else {
        return false;
    };
    while at < log.len() {
        let (end, next) = line_at(log, at);
        if let Some(stamp) = line_stamp(&log[at..end]) {
            return stamp == before;
        }
        at = next;
    }
    false
}

/// Every filter of the query needs a record of the event that passes
/// its test, and that record's line contains one of these (or is a JSON
/// line): the lines that can make an event match.
fn filter_needles(query: &Query) -> Vec<Finder<'static>> {
    let mut needles: Vec<String> = Vec::new();
    if query.contid.is_some() {
        needles.push("contid=".into());
    }
    if query.tag.is_some() {
        needles.extend(kind_needles(["PTAGS_OP"]));
    }
    if query.ns.is_some() {
        needles.push("type=NS_".into());
    }
    if let Some(pid) = query.pid {
        needles.push(pid.to_string());
    }
    needles.extend(kind_needles(&query.kinds));
    needles
        .iter()
        .map(|n| Finder::new(n.as_bytes()).into_owned())
        .collect()
}

/// The filter that picks the events worth parsing: every event that
/// matches has a record that passes its test, and a record's line
/// contains one of its needles (a JSON line, whose text may be escaped,
/// is tested whatever it contains).
struct Anchor<'q> {
    needles: Vec<Finder<'static>>,
    test: RecordTest<'q>,
}

enum RecordTest<'q> {
    Container,
    Tag(Selector<'q>),
    Namespace(u64),
    Pid(u32),
    Kind,
}

impl<'q> Anchor<'q> {
    /// The most selective filter of the query; `None` when it has none
    /// a record can be found by (times alone, or nothing).
    fn of(query: &'q Query, tag: Option<Selector<'q>>) -> Option<Anchor<'q>> {
        let (needles, test): (Vec<String>, _) = if query.contid.is_some() {
            // `contid=` and `new-contid=`.
            (vec!["contid=".into()], RecordTest::Container)
        } else if let Some(selector) = tag {
            (kind_needles(["PTAGS_OP"]), RecordTest::Tag(selector))
        } else if let Some(inum) = query.ns {
            (vec!["type=NS_".into()], RecordTest::Namespace(inum))
        } else if let Some(pid) = query.pid {
            // A value that parses as `pid` has its digits (after a `+`
            // or leading zeros).
            (vec![pid.to_string()], RecordTest::Pid(pid))
        } else if !query.kinds.is_empty() {
            (kind_needles(&query.kinds), RecordTest::Kind)
        } else {
            return None;
        };
        let needles = needles
            .iter()
            .map(|n| Finder::new(n.as_bytes()).into_owned())
            .collect();
        Some(Anchor { needles, test })
    }

    fn passes(&self, query: &Query, family: &HashMap<u64, usize>, e: &Entry<'_>) -> bool {
        match &self.test {
            RecordTest::Container => query.in_container(e, &|id| family.contains_key(&id)),
            RecordTest::Tag(selector) => touches_tags(e, selector),
            RecordTest::Namespace(inum) => names_namespace(e, *inum),
            RecordTest::Pid(pid) => names_pid(e, *pid),
            RecordTest::Kind => query.kinds.iter().any(|k| k == e.kind),
        }
    }

    /// The starts of the lines in `log[start..end]` (whole lines) that
    /// contain a needle, in order.
    fn lines_with_needles(&self, log: &[u8], start: usize, end: usize) -> Vec<usize> {
        needle_lines(&self.needles, log, start, end)
    }
}

/// What the line of a record of one of these types starts with, seal or
/// not.
fn kind_needles<S: AsRef<str>>(kinds: impl IntoIterator<Item = S>) -> Vec<String> {
    kinds
        .into_iter()
        .map(|k| format!("type={} msg=audit(", k.as_ref()))
        .collect()
}

/// The starts of the lines in `log[start..end]` (whole lines) that
/// contain one of `needles`, in order, once each.
pub(crate) fn needle_lines(
    needles: &[Finder<'_>],
    log: &[u8],
    start: usize,
    end: usize,
) -> Vec<usize> {
    let chunk = &log[start..end];
    let mut starts: Vec<usize> = needles
        .iter()
        .flat_map(|n| n.find_iter(chunk))
        .map(|at| start + memchr::memrchr(b'\n', &chunk[..at]).map_or(0, |nl| nl + 1))
        .collect();
    if needles.len() > 1 {
        starts.sort_unstable();
    }
    starts.dedup();
    starts
}

/// Where the chunks start (and the last ends): at line starts, about
/// `chunk_bytes` apart.
pub(crate) fn chunk_bounds(log: &[u8], chunk_bytes: usize) -> Vec<usize> {
    let mut bounds = vec![0];
    let mut at = 0;
    while at < log.len() {
        let cut = at.saturating_add(chunk_bytes.max(1)).min(log.len());
        at = match memchr::memchr(b'\n', &log[cut - 1..]) {
            Some(nl) if cut < log.len() => cut + nl,
            _ => log.len(),
        };
        bounds.push(at);
    }
    bounds
}

/// The line that starts at `start`: its end (the newline, or the end of
/// the log) and where the next line starts.
pub(crate) fn line_at(log: &[u8], start: usize) -> (usize, usize) {
    match memchr::memchr(b'\n', &log[start..]) {
        Some(nl) => (start + nl, start + nl + 1),
        None => (log.len(), log.len()),
    }
}

/// The stamp of the record a line holds, as [`LogLine::parse`] finds it,
/// read in place for the lines ptagsd and the kernel write; `None` for a
/// line that holds no record.
pub(crate) fn line_stamp(line: &[u8]) -> Option<Stamp> {
    let slow = || LogLine::parse(String::from_utf8_lossy(line)).map(|l| l.stamp);
    // A JSON line's record is rebuilt from its members.
    if line.first() == Some(&b'{') {
        return slow();
    }
    // Otherwise the record is the line or, sealed, a part of it that
    // starts it and holds all of `type=KIND msg=audit(STAMP):` (the seal
    // starts with a space, which the header has only before `msg=`).
    let rest = line.strip_prefix(b"type=")?;
    // The type has no white space: the first space is the one before
    // `msg=audit(`, or there is no header.
    let space = memchr::memchr(b' ', rest)?;
    let kind = &rest[..space];
    if !kind.is_ascii() {
        // Unicode white space, or bytes that are not UTF-8.
        return slow();
    }
    if kind.is_empty() || kind.iter().any(|&b| (b'\t'..=b'\r').contains(&b)) {
        return None;
    }
    stamp_in_place(rest[space + 1..].strip_prefix(b"msg=audit(")?)
}

/// The stamp at the start of `text`, what [`Stamp::parse_inner`] makes
/// of the text up to the first `):`: `SECS.MSEC:SERIAL):`, in digits
/// (any other byte before `):` makes it no stamp), read in one pass.
fn stamp_in_place(text: &[u8]) -> Option<Stamp> {
    let mut at = 0;
    let number = |at: &mut usize| -> Option<u64> {
        let start = *at;
        let mut n = 0u64;
        while let Some(digit) = text
            .get(*at)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|&d| d < 10)
        {
            n = n.checked_mul(10)?.checked_add(u64::from(digit))?;
            *at += 1;
        }
        (*at > start).then_some(n)
    };
    let secs = number(&mut at)?;
    let expect = |at: &mut usize, what: &[u8]| -> Option<()> {
        text[*at..].starts_with(what).then(|| *at += what.len())
    };
    expect(&mut at, b".")?;
    let millis_start = at;
    let millis = number(&mut at)?;
    if at - millis_start != 3 {
        return None;
    }
    expect(&mut at, b":")?;
    let serial = number(&mut at)?;
    expect(&mut at, b"):")?;
    Some(Stamp {
        secs,
        millis: millis as u16,
        serial,
    })
}

/// The stamp of the last record before `at` (a line start), if any.
pub(crate) fn stamp_before(log: &[u8], mut at: usize) -> Option<Stamp> {
    while at > 0 {
        let end = at - 1;
        let start = memchr::memrchr(b'\n', &log[..end]).map_or(0, |nl| nl + 1);
        if let Some(stamp) = line_stamp(&log[start..end]) {
            return Some(stamp);
        }
        at = start;
    }
    None
}

/// For `--nested`: each container nested in the one asked for (and that
/// one), with where the record that made it so starts (0 for that one).
/// An event is in the family of its end: a nest record in it counts.
fn family(log: &[u8], query: &Query, plan: &Plan<'_>, workers: usize) -> HashMap<u64, usize> {
    let nest = [Finder::new(b"type=CONTAINER_OP msg=audit(")];
    let json = Finder::new(b"\n{");
    let mut links: Vec<(usize, u64, u64)> = Vec::new();
    in_order(
        &plan.bounds,
        workers,
        |i, start, end| {
            if plan.known[i].is_some_and(|s| !s.nests) {
                return Vec::new();
            }
            let chunk = &log[start..end];
            // JSON lines, whose text may be escaped, are read whatever
            // they contain.
            let json_lines = json
                .find_iter(chunk)
                .map(|nl| start + nl + 1)
                .filter(|&at| at < end);
            let mut lines = needle_lines(&nest, log, start, end);
            lines.extend(json_lines);
            if chunk.first() == Some(&b'{') {
                lines.push(start);
            }
            lines.sort_unstable();
            lines.dedup();
            lines
                .into_iter()
                .filter_map(|at| {
                    let (end, _) = line_at(log, at);
                    let line = LogLine::parse(String::from_utf8_lossy(&log[at..end]))?;
                    let (parent, id) = nest_link(&line.entry())?;
                    Some((at, parent, id))
                })
                .collect::<Vec<_>>()
        },
        |found| {
            links.extend(found);
            ControlFlow::Continue(())
        },
    );
    let mut family: HashMap<u64, usize> = query.contid.into_iter().map(|id| (id, 0)).collect();
    for (at, parent, id) in links {
        if family.contains_key(&parent) {
            family.entry(id).or_insert(at);
        }
    }
    family
}

/// One chunk's share of the answer.
#[derive(Default)]
struct ChunkFound {
    text: ChunkText,
    matched: u64,
    unreadable: u64,
}

/// A chunk's text: ranges of the log (lines printed as they are) and of
/// text made for it, in order.
#[derive(Default)]
struct ChunkText {
    made: Vec<u8>,
    spans: Vec<Span>,
}

#[derive(Clone, Copy)]
enum Span {
    Log(usize, usize),
    Made(usize, usize),
}

impl ChunkText {
    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Adds `log[start..end]`, joined to the last span when it follows it.
    fn log(&mut self, start: usize, end: usize) {
        match self.spans.last_mut() {
            Some(Span::Log(_, last)) if *last == start => *last = end,
            _ => self.spans.push(Span::Log(start, end)),
        }
    }

    /// Adds what `make` writes.
    fn make(&mut self, make: impl FnOnce(&mut Vec<u8>)) {
        let start = self.made.len();
        make(&mut self.made);
        let end = self.made.len();
        match self.spans.last_mut() {
            _ if end == start => {}
            Some(Span::Made(_, last)) if *last == start => *last = end,
            _ => self.spans.push(Span::Made(start, end)),
        }
    }

    fn slices<'s>(&'s self, log: &'s [u8]) -> Vec<IoSlice<'s>> {
        self.spans
            .iter()
            .map(|&span| match span {
                Span::Log(start, end) => IoSlice::new(&log[start..end]),
                Span::Made(start, end) => IoSlice::new(&self.made[start..end]),
            })
            .collect()
    }
}

/// An event being read: its stamp, from the start of its first line to
/// the end of its last, whether it has a record of the anchor, and the
/// lines parsed to know it (where each starts), not to parse them again.
struct OpenEvent<'a> {
    stamp: Stamp,
    start: usize,
    end: usize,
    anchored: bool,
    parsed: Vec<(usize, LogLine<'a>)>,
}

pub type Format<'f> = &'f (dyn Fn(&[LogLine<'_>], &[Entry<'_>], &mut Vec<u8>) + Sync);

struct Scan<'a> {
    log: &'a [u8],
    query: &'a Query,
    anchor: Option<Anchor<'a>>,
    /// The needles of every filter: the lines that can make an event
    /// match.
    filters: Vec<Finder<'static>>,
    /// The filters' needles are the anchor's: the lines they pick are
    /// those an event's [`OpenEvent::parsed`] holds (or that do not
    /// parse).
    only_anchor: bool,
    family: &'a HashMap<u64, usize>,
    print: Print<'a>,
}

impl<'a> Scan<'a> {
    /// The events whose first line is in `log[start..end]` (whole lines),
    /// read to their ends, and the lines there that hold no record.
    fn chunk(&self, start: usize, end: usize) -> ChunkFound {
        let log = self.log;
        let mut found = ChunkFound::default();
        let needle_lines = match &self.anchor {
            Some(anchor) => anchor.lines_with_needles(log, start, end),
            None => Vec::new(),
        };
        let mut needle_lines = needle_lines.into_iter().peekable();
        // The lines that continue the event before the chunk are that
        // chunk's.
        let mut before = stamp_before(log, start);
        let mut event: Option<OpenEvent> = None;
        let mut at = start;
        while at < log.len() && (at < end || event.is_some()) {
            let (line_end, next) = line_at(log, at);
            let line = &log[at..line_end];
            let ours = at < end;
            let Some(stamp) = line_stamp(line) else {
                found.unreadable += u64::from(ours);
                at = next;
                continue;
            };
            if let Some(continued) = before {
                if continued == stamp {
                    at = next;
                    continue;
                }
                before = None;
            }
            let has_needle = if ours {
                while needle_lines.next_if(|&l| l < at).is_some() {}
                needle_lines.next_if_eq(&at).is_some()
            } else {
                self.anchor
                    .as_ref()
                    .is_some_and(|a| a.needles.iter().any(|n| n.find(line).is_some()))
            };
            let parsed = self.anchored(line, has_needle);
            let anchored = parsed
                .as_ref()
                .map_or(self.anchor.is_none(), |(passes, _)| *passes);
            let parsed = parsed.and_then(|(_, l)| l).map(|l| (at, l));
            match &mut event {
                Some(open) if open.stamp == stamp => {
                    open.end = line_end;
                    open.anchored |= anchored;
                    open.parsed.extend(parsed);
                }
                _ => {
                    if let Some(done) = event.take() {
                        self.finish(done, &mut found);
                    }
                    if ours {
                        event = Some(OpenEvent {
                            stamp,
                            start: at,
                            end: line_end,
                            anchored,
                            parsed: parsed.into_iter().collect(),
                        });
                    }
                }
            }
            at = next;
        }
        if let Some(done) = event {
            self.finish(done, &mut found);
        }
        found
    }

    /// Whether a line holding a record may be what makes its event match,
    /// with the line parsed to know it; `None` when that is known without
    /// parsing it (true without an anchor, false for a line without the
    /// anchor's needle).
    fn anchored(&self, line: &'a [u8], has_needle: bool) -> Option<(bool, Option<LogLine<'a>>)> {
        let anchor = self.anchor.as_ref()?;
        if !has_needle && line.first() != Some(&b'{') {
            return None;
        }
        let parsed = LogLine::parse(String::from_utf8_lossy(line));
        let passes = parsed
            .as_ref()
            .is_some_and(|l| anchor.passes(self.query, self.family, &l.entry()));
        Some((passes, parsed))
    }

    fn finish(&self, event: OpenEvent<'a>, found: &mut ChunkFound) {
        // The time is the first record's: known without parsing.
        if !event.anchored || !self.query.in_time(&event.stamp) {
            return;
        }
        let log = self.log;
        // Only the records whose lines can make the event match are
        // parsed to match it; every record of the event shares its stamp.
        let mut records = Vec::new();
        let mut relevant = Vec::new();
        let mut parsed = event.parsed.into_iter().peekable();
        let mut at = event.start;
        // The last line is not empty: it holds a record.
        while at < event.end {
            let (end, next) = line_at(log, at);
            let line = &log[at..end];
            if line_stamp(line).is_some() {
                records.push((at, end));
                if self.only_anchor {
                    relevant.extend(parsed.next_if(|&(start, _)| start == at));
                } else if line.first() == Some(&b'{')
                    || self.filters.iter().any(|f| f.find(line).is_some())
                {
                    // The anchor's lines were parsed (the anchor's
                    // needles are among the filters').
                    while parsed.next_if(|&(start, _)| start < at).is_some() {}
                    match parsed.next_if(|&(start, _)| start == at) {
                        Some((_, line)) => relevant.push((at, line)),
                        None => relevant
                            .extend(LogLine::parse(String::from_utf8_lossy(line)).map(|l| (at, l))),
                    }
                }
            }
            at = next;
        }
        let matched = self.filters.is_empty() || {
            let entries: Vec<Entry<'_>> = relevant.iter().map(|(_, l)| l.entry()).collect();
            let in_family = |id| self.family.get(&id).is_some_and(|&at| at < event.end);
            self.query.matches_event(&entries, &in_family)
        };
        if !matched {
            return;
        }
        found.matched += 1;
        match self.print {
            Print::Raw => {
                for (start, end) in records {
                    let line = &log[start..end];
                    match std::str::from_utf8(line) {
                        // With the newline that ends it in the log.
                        Ok(_) if end < log.len() => found.text.log(start, end + 1),
                        Ok(_) => {
                            found.text.log(start, end);
                            found.text.make(|text| text.push(b'\n'));
                        }
                        Err(_) => found.text.make(|text| {
                            text.extend_from_slice(String::from_utf8_lossy(line).as_bytes());
                            text.push(b'\n');
                        }),
                    }
                }
            }
            Print::With(format) => {
                let mut relevant = relevant.into_iter().peekable();
                let lines: Vec<LogLine<'_>> = records
                    .into_iter()
                    .filter_map(
                        |(start, end)| match relevant.next_if(|&(at, _)| at == start) {
                            Some((_, line)) => Some(line),
                            None => LogLine::parse(String::from_utf8_lossy(&log[start..end])),
                        },
                    )
                    .collect();
                let entries: Vec<Entry<'_>> = lines.iter().map(LogLine::entry).collect();
                found.text.make(|text| format(&lines, &entries, text));
            }
        }
    }
}

/// Runs `work` on each chunk (`i`, `bounds[i]..bounds[i + 1]`) on `workers`
/// threads, giving `take` the results in the chunks' order until it
/// breaks.
pub(crate) fn in_order<T: Send>(
    bounds: &[usize],
    workers: usize,
    work: impl Fn(usize, usize, usize) -> T + Sync,
    mut take: impl FnMut(T) -> ControlFlow<()>,
) {
    let chunks = bounds.len().saturating_sub(1);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Bounded: the workers wait while the results are written.
        let (send, results) = mpsc::sync_channel(workers.max(1) * 2);
        for _ in 0..workers.clamp(1, chunks.max(1)) {
            let send = send.clone();
            let (next, stop, work) = (&next, &stop, &work);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks || send.send((i, work(i, bounds[i], bounds[i + 1]))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(send);
        let mut early = BTreeMap::new();
        let mut due = 0;
        for (i, result) in results {
            early.insert(i, result);
            while let Some(result) = early.remove(&due) {
                due += 1;
                if take(result).is_break() {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_untrusted;
    use crate::index::{FileId, Index};
    use crate::query::Matcher;
    use proptest::prelude::*;

    /// Matching events as raw lines and their parsed records, one event
    /// after the other.
    fn print(lines: &[LogLine<'_>], entries: &[Entry<'_>], out: &mut Vec<u8>) {
        for (line, entry) in lines.iter().zip(entries) {
            out.extend_from_slice(format!("{}\n  {entry:?}\n", line.raw).as_bytes());
        }
        out.extend_from_slice(b"--\n");
    }

    /// Matching events as `ptags audit search --format raw` prints them.
    fn print_raw(lines: &[LogLine<'_>], _: &[Entry<'_>], out: &mut Vec<u8>) {
        for line in lines {
            out.extend_from_slice(format!("{}\n", line.raw).as_bytes());
        }
    }

    /// The straightforward way: each line in turn, as `ptags audit`
    /// reads its files, grouped and matched one event after the other.
    fn line_by_line(log: &[u8], query: &Query) -> (Vec<u8>, Found) {
        line_by_line_with(log, query, print)
    }

    fn line_by_line_with(
        log: &[u8],
        query: &Query,
        print: fn(&[LogLine<'_>], &[Entry<'_>], &mut Vec<u8>),
    ) -> (Vec<u8>, Found) {
        let mut matcher = Matcher::new(query.clone()).unwrap();
        let (mut out, mut matched) = (Vec::new(), 0);
        let mut each = |lines: &[LogLine<'_>], entries: &[Entry<'_>]| {
            if matcher.matches(entries) {
                matched += 1;
                print(lines, entries, &mut out);
            }
        };
        let mut grouper = EventGrouper::default();
        let text = log.strip_suffix(b"\n").unwrap_or(log);
        if !log.is_empty() {
            for line in text.split(|&b| b == b'\n') {
                grouper.push(String::from_utf8_lossy(line), &mut each);
            }
        }
        let unreadable = grouper.finish(&mut each);
        (
            out,
            Found {
                matched,
                unreadable,
            },
        )
    }

    fn fast(log: &[u8], query: &Query, split: Split) -> (Vec<u8>, Found) {
        fast_with(log, query, split, None, Print::With(&print))
    }

    fn fast_with(
        log: &[u8],
        query: &Query,
        split: Split,
        blocks: Option<&[Block]>,
        print: Print<'_>,
    ) -> (Vec<u8>, Found) {
        let mut out = Vec::new();
        let found = search(log, query, split, blocks, print, |text| {
            for slice in text {
                out.extend_from_slice(slice);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        (out, found)
    }

    /// One line of a generated log: few serials, containers and pids, so
    /// that events interleave, repeat and nest; some lines hold no
    /// record, some are sealed, JSON, or not UTF-8.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        let body = prop_oneof![
            (1..4u32).prop_map(|pid| format!("SYSCALL: syscall=2 ppid=1 pid={pid} comm=\"cat\"")),
            Just("CWD: cwd=\"/srv\"".to_owned()),
            (1..6u64, 1..6u64).prop_map(|(c, p)| format!("CONTAINER_ID: contid={c},^{p}")),
            (1..6u64).prop_map(|c| format!("CONTAINER_ID: contid={c}")),
            (1..6u64, 1..6u64, 1..4u32).prop_map(|(c, p, pid)| format!(
                "CONTAINER_OP: op=nest opid={pid} contid={c} old-contid={p} pid=9"
            )),
            (1..6u64, 1..4u32).prop_map(|(c, pid)| format!(
                "PTAGS_OP: op=write opid={pid} contid={c} text={} res=success",
                encode_untrusted(b"+web:role\n")
            )),
            (1..4u64).prop_map(|n| format!("NS_INFO: dev=00:04 netns={n} pid=00{n}")),
            (1..6u64).prop_map(|c| format!("USER_AVC: pid=3 msg='contid={c} op=nest'")),
        ];
        let record = (1..7u64, body, any::<bool>()).prop_map(|(serial, body, sealed)| {
            let (kind, rest) = body.split_once(": ").unwrap();
            let mut line = format!(
                "type={kind} msg=audit({}.{:03}:{serial}): {rest}",
                1_700_000_000 + serial / 3,
                serial * 7 % 1000
            );
            if sealed {
                line.push_str(&format!(
                    " ptags_seq={serial} ptags_mac=0123456789abcdef0123456789abcdef"
                ));
            }
            line.into_bytes()
        });
        prop_oneof![
            8 => record,
            1 => prop_oneof![
                Just(b"".to_vec()),
                Just(b"garbage contid=3 pid=2".to_vec()),
                Just(b"type= msg=audit(1700000000.000:1): pid=2".to_vec()),
                Just(b"type=SYSCALL msg=audit(1700000000.00:1): pid=2".to_vec()),
                Just(b"type=SY\xffSCALL msg=audit(1700000000.000:1): pid=2".to_vec()),
                Just(b"type=SYSCALL msg=audit(1700000000.333:1): pid=2 comm=\xc3".to_vec()),
                Just("type=NS\u{a0}INFO msg=audit(1700000000.000:1): netns=1".as_bytes().to_vec()),
                (1..6u64).prop_map(|c| format!(
                    "{{\"type\":\"CONTAINER_ID\",\"time\":\"1700000000.000\",\"serial\":2,\"text\":\"contid\\u003d{c}\"}}"
                ).into_bytes()),
            ],
        ]
    }

    fn query() -> impl Strategy<Value = Query> {
        let kinds = prop::collection::vec(
            prop::sample::select(vec!["SYSCALL", "CONTAINER_OP", "NS_INFO", "USER_AVC"]),
            0..2,
        );
        let time = prop::option::of(1_700_000_000_000..1_700_000_002_999u64);
        (
            prop::option::of(1..6u64),
            any::<bool>(),
            prop::option::of(Just("web:*".to_owned())),
            kinds,
            prop::option::of(1..4u32),
            prop::option::of(1..4u64),
            (time.clone(), time),
        )
            .prop_map(
                |(contid, nested, tag, kinds, pid, ns, (since_ms, until_ms))| Query {
                    contid,
                    nested: nested && contid.is_some(),
                    tag,
                    kinds: kinds.into_iter().map(str::to_owned).collect(),
                    pid,
                    ns,
                    since_ms,
                    until_ms,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Chunks of any size, down to every line (and every byte) its
        /// own, cut events anywhere; the answer is the same.
        #[test]
        fn the_parallel_search_answers_as_reading_line_by_line(
            lines in prop::collection::vec(line(), 0..40),
            end_newline in any::<bool>(),
            query in query(),
            chunk_bytes in 1..400usize,
            workers in 1..4usize,
        ) {
            let mut log = lines.join(&b'\n');
            if end_newline {
                log.push(b'\n');
            }
            let split = Split { chunk_bytes, workers };
            let (want_text, want) = line_by_line(&log, &query);
            let (text, found) = fast(&log, &query, split);
            prop_assert_eq!(String::from_utf8_lossy(&text), String::from_utf8_lossy(&want_text));
            prop_assert_eq!(found, want);
            // Raw lines, copied rather than parsed.
            let (want_raw, _) = line_by_line_with(&log, &query, print_raw);
            let (raw, found) = fast_with(&log, &query, split, None, Print::Raw);
            prop_assert_eq!(raw, want_raw);
            prop_assert_eq!(found, want);
        }

        /// An index built, stored and read back skips only blocks that
        /// cannot match: the answer is the same. One that no longer fits
        /// the file (lines appended, a line changed) or is damaged is
        /// refused, and the one built instead answers the same.
        #[test]
        fn searching_with_an_index_answers_as_reading_line_by_line(
            lines in prop::collection::vec(line(), 0..40),
            more in prop::collection::vec(line(), 1..5),
            query in query(),
            block_bytes in 1..400usize,
            chunk_bytes in 1..400usize,
            workers in 1..4usize,
            damage in any::<prop::sample::Index>(),
            noise in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut log = lines.join(&b'\n');
            log.push(b'\n');
            let id = FileId { len: log.len() as u64, mtime_ns: 1, ino: 2, dev: 3 };
            let split = Split { chunk_bytes, workers };
            let index = Index::build(&log, Split { chunk_bytes: block_bytes, workers });
            let stored = index.encode(&id, &log);
            let (read, refused) = Index::decode_or_build(Some(&stored), &id, &log, split);
            prop_assert_eq!(&read, &index);
            prop_assert_eq!(refused, None);
            let want = line_by_line(&log, &query);
            prop_assert_eq!(fast_with(&log, &query, split, Some(&index.blocks), Print::With(&print)), want.clone());
            let (want_raw, _) = line_by_line_with(&log, &query, print_raw);
            prop_assert_eq!(fast_with(&log, &query, split, Some(&index.blocks), Print::Raw), (want_raw, want.1));

            // Appended to: refused; and blocks that do not tile the log
            // are not used.
            let mut longer = log.clone();
            longer.extend_from_slice(&more.join(&b'\n'));
            longer.push(b'\n');
            let longer_id = FileId { len: longer.len() as u64, ..id };
            prop_assert!(Index::decode(&stored, &longer_id, &longer).is_err());
            let want = line_by_line(&longer, &query);
            prop_assert_eq!(fast_with(&longer, &query, split, Some(&index.blocks), Print::With(&print)), want.clone());
            let (rebuilt, refused) = Index::decode_or_build(Some(&stored), &longer_id, &longer, split);
            prop_assert!(refused.is_some());
            prop_assert_eq!(fast_with(&longer, &query, split, Some(&rebuilt.blocks), Print::With(&print)), want);

            // Rewritten in place, same length: another mtime is refused,
            // and a changed first line of a block even with the same
            // metadata.
            let touched = FileId { mtime_ns: 9, ..id };
            prop_assert!(Index::decode(&stored, &touched, &log).is_err());
            if let Some(b) = index.blocks.iter().find(|b| b.end - b.start > 1 && log[b.start] != b'\n') {
                let mut changed = log.clone();
                changed[b.start] ^= 0x20;
                prop_assert!(Index::decode(&stored, &id, &changed).is_err());
            }

            // Damaged: one byte changed, or noise: refused, never a panic;
            // what is built instead answers the same.
            if !stored.is_empty() {
                let mut bad = stored.clone();
                bad[damage.index(stored.len())] ^= 0x5a;
                prop_assert!(Index::decode(&bad, &id, &log).is_err());
            }
            let want = line_by_line(&log, &query);
            let (built, refused) = Index::decode_or_build(Some(&noise), &id, &log, split);
            prop_assert!(refused.is_some());
            prop_assert_eq!(fast_with(&log, &query, split, Some(&built.blocks), Print::With(&print)), want);
            // Noise that carries a valid seal reaches the parser: it is
            // refused with an error, not a panic.
            let mut sealed = b"PTAGSIDX".to_vec();
            sealed.extend_from_slice(&noise);
            let seal = *blake3::hash(&sealed).as_bytes();
            sealed.extend_from_slice(&seal);
            let _ = Index::decode(&sealed, &id, &log);
            // And so does a valid index cut short anywhere, resealed.
            let cut = damage.index(stored.len() - 32);
            let mut short = stored[..cut].to_vec();
            let seal = *blake3::hash(&short).as_bytes();
            short.extend_from_slice(&seal);
            prop_assert!(Index::decode(&short, &id, &log).is_err());
        }

        /// The stamp read in place is the one a full parse finds.
        #[test]
        fn stamps_read_in_place_are_those_of_the_parsed_line(
            kind in prop::collection::vec(prop::sample::select(
                b"AZ_ \t\x0b\x0c\r\x1c\x1f\x85\xa0\xc2\xff{".to_vec()), 0..4usize),
            stamp in prop::sample::select(vec![
                "1700000000.123:5", "1.000:1", "1.00:1", "1.0000:1", "x.000:1",
                "1.000:", "1.000:1)", "99999999999999999999.000:1", "1.000:1 ptags_seq=2",
                "1.000:1:2", "1:2.000", "1..000:1", "", "1.000:1)x", ".000:1", "1.000:18446744073709551616",
                "1.000:18446744073709551615", "0001.999:0",
            ]),
            tail in prop::sample::select(vec![
                "", " pid=1", " a=1 ptags_seq=3 ptags_mac=0123456789abcdef0123456789abcdef",
                " ptags_seq=x ptags_mac=00", " comm=\u{85}",
            ]),
            json in any::<bool>(),
        ) {
            let mut line = b"type=".to_vec();
            line.extend_from_slice(&kind);
            line.extend_from_slice(format!(" msg=audit({stamp}): x=1{tail}").as_bytes());
            if tail.is_empty() {
                // Not UTF-8 after the header.
                line.push(0xff);
            }
            if json {
                line = format!(
                    "{{\"type\":\"A\",\"time\":\"1.000\",\"serial\":{},\"text\":\"x\"}}",
                    kind.len()
                ).into_bytes();
            }
            let parsed = LogLine::parse(String::from_utf8_lossy(&line)).map(|l| l.stamp);
            prop_assert_eq!(line_stamp(&line), parsed);
        }
    }

    #[test]
    fn nesting_learnt_later_in_an_event_and_events_cut_by_chunks() {
        let log = b"\
type=SYSCALL msg=audit(1700000000.000:1): pid=5
type=CONTAINER_ID msg=audit(1700000000.000:1): contid=7
garbage
type=CONTAINER_OP msg=audit(1700000000.000:1): op=nest opid=5 contid=7 old-contid=2
type=SYSCALL msg=audit(1700000000.000:2): pid=5
type=CONTAINER_ID msg=audit(1700000000.000:2): contid=7
type=CONTAINER_ID msg=audit(1700000000.000:1): contid=9
";
        let query = Query {
            contid: Some(2),
            nested: true,
            ..Query::default()
        };
        let (want, found) = line_by_line(log, &query);
        assert_eq!(
            found,
            Found {
                matched: 2,
                unreadable: 1
            }
        );
        for chunk_bytes in 1..log.len() + 1 {
            let split = Split {
                chunk_bytes,
                workers: 2,
            };
            assert_eq!(
                fast(log, &query, split),
                (want.clone(), found),
                "{chunk_bytes}"
            );
        }
    }
}
