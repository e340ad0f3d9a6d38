//! Lines in a log held as bytes: where they are, their stamps read in
//! place, and those holding a needle.

use memchr::memmem::Finder;

use super::LogLine;
use crate::Stamp;

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
