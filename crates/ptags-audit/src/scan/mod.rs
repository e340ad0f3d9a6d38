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

use crate::chain::{record_text, Sealed};
use crate::index::{Block, Summary};
use crate::query::{nest_link, Entry, Query};
use crate::Stamp;

mod lines;
mod needles;

pub(crate) use self::lines::{chunk_bounds, line_at, line_stamp, needle_lines, stamp_before};
use self::needles::{filter_needles, Anchor};

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
mod tests;
