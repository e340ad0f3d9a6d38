//! A small index of a closed log file, kept beside it, that lets
//! [`crate::scan::search`] skip the blocks of the file that cannot hold
//! a matching event.
//!
//! The file is cut into blocks of whole events (about 2 MiB each: no
//! event crosses a cut). For each block the index records its byte
//! range, the times of its records (the earliest and latest), how many of
//! its lines hold no record, the container IDs its records name (up to
//! [`MAX_IDS`], else "any"), and whether it may hold a nesting record.
//!
//! The index is only an accelerator: a block it says may match is
//! scanned as if there were no index, and the search checks each cut
//! against the data before it skips anything. It is bound to the file it
//! describes (length, modification time, inode, device, a hash of each
//! block's first line and of the file's last 4 KiB) and sealed with a
//! hash of itself: an index that does not fit the file, or is damaged,
//! is refused with an [`IndexError`] and rebuilt.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use memchr::memmem::Finder;

use crate::query::{chain_ids, names_containers, Query};
use crate::scan::{chunk_bounds, in_order, line_at, line_stamp, needle_lines, stamp_before};
use crate::scan::{LogLine, Split};

/// More distinct container IDs than this in a block and the index says
/// only that the block may name any container.
pub const MAX_IDS: usize = 64;

const MAGIC: &[u8; 8] = b"PTAGSIDX";
const VERSION: u32 = 1;
/// How much of the file's end is hashed into the index.
const TAIL: usize = 4096;

/// What an index is bound to: the file as its metadata describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

/// What a block of the log holds, as far as skipping it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The earliest and latest record times, in milliseconds (`min >
    /// max` when the block holds no record).
    pub min_ms: u64,
    pub max_ms: u64,
    /// Lines that hold no record.
    pub unreadable: u64,
    /// Whether a line may be a nesting record (`CONTAINER_OP`, or JSON).
    pub nests: bool,
    /// Every container ID the block's records name (own or ancestor,
    /// `contid=` or `new-contid=`), sorted; `None`: too many to list.
    pub contids: Option<Vec<u64>>,
}

/// A range of whole lines of the log, with what it holds when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub start: usize,
    pub end: usize,
    pub summary: Option<Summary>,
}

impl Summary {
    /// Whether an event of the block may match `query`, given the
    /// containers `--nested` counts (`family`).
    pub fn may_match(&self, query: &Query, family: &dyn Fn(u64) -> bool) -> bool {
        if self.min_ms > self.max_ms {
            // No record, no event.
            return false;
        }
        if query.since_ms.is_some_and(|s| self.max_ms < s)
            || query.until_ms.is_some_and(|u| self.min_ms > u)
        {
            return false;
        }
        match (query.contid, &self.contids) {
            (Some(id), Some(ids)) => {
                if query.nested {
                    ids.iter().any(|&i| family(i))
                } else {
                    ids.binary_search(&id).is_ok()
                }
            }
            _ => true,
        }
    }
}

/// An index that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("not a ptags index (no PTAGSIDX header)")]
    Magic,
    #[error("index version {0}, this ptags reads version {VERSION}")]
    Version(u32),
    #[error("the index is cut short")]
    Short,
    #[error("the index's own hash does not match: it is damaged")]
    Damaged,
    #[error("the index describes another state of the file ({0})")]
    Stale(&'static str),
    #[error("the index's blocks do not tile the file: {0}")]
    BadBlocks(&'static str),
}

/// The seal an index's body carries: it finds damage, not forgery (it is
/// no secret: who may be trusted to write an index is the reader's to
/// decide).
pub fn seal(body: &[u8]) -> [u8; 32] {
    *blake3::hash(body).as_bytes()
}

/// The index of one file: its blocks, offsets from the file's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub blocks: Vec<Block>,
}

impl Index {
    /// Indexes `file` (the whole file's bytes), on `split.workers`
    /// threads, in blocks of about `split.chunk_bytes`.
    pub fn build(file: &[u8], split: Split) -> Index {
        let bounds = event_bounds(file, split.chunk_bytes);
        let mut blocks = Vec::with_capacity(bounds.len());
        in_order(
            &bounds,
            split.workers,
            |_, start, end| Block {
                start,
                end,
                summary: Some(summarize(file, start, end)),
            },
            |block| {
                blocks.push(block);
                ControlFlow::Continue(())
            },
        );
        Index { blocks }
    }

    /// The index as stored, bound to the file `id` whose bytes are `file`.
    pub fn encode(&self, id: &FileId, file: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&id.len.to_le_bytes());
        out.extend_from_slice(&id.mtime_ns.to_le_bytes());
        out.extend_from_slice(&id.ino.to_le_bytes());
        out.extend_from_slice(&id.dev.to_le_bytes());
        out.extend_from_slice(&tail_hash(file));
        out.extend_from_slice(&(self.blocks.len() as u64).to_le_bytes());
        for block in &self.blocks {
            let s = block.summary.as_ref().expect("an index's blocks are known");
            for n in [block.start as u64, block.end as u64, s.min_ms, s.max_ms] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(&s.unreadable.to_le_bytes());
            out.extend_from_slice(&first_line_hash(file, block.start));
            out.push(u8::from(s.nests));
            match &s.contids {
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
                Some(ids) => {
                    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                    for id in ids {
                        out.extend_from_slice(&id.to_le_bytes());
                    }
                }
            }
        }
        let seal = seal(&out);
        out.extend_from_slice(&seal);
        out
    }

    /// Reads a stored index of the file `id` whose bytes are `file`;
    /// refuses one that is damaged, of another version, or does not fit
    /// the file as it is now.
    pub fn decode(bytes: &[u8], id: &FileId, file: &[u8]) -> Result<Index, IndexError> {
        let body_len = bytes.len().checked_sub(32).ok_or(IndexError::Short)?;
        let (body, stored_seal) = bytes.split_at(body_len);
        if !body.starts_with(MAGIC) {
            return Err(IndexError::Magic);
        }
        if seal(body) != stored_seal {
            return Err(IndexError::Damaged);
        }
        let mut r = Reader {
            bytes: &body[MAGIC.len()..],
        };
        let version = r.u32()?;
        if version != VERSION {
            return Err(IndexError::Version(version));
        }
        let stored = FileId {
            len: r.u64()?,
            mtime_ns: i128::from_le_bytes(r.take()?),
            ino: r.u64()?,
            dev: r.u64()?,
        };
        if stored.len != id.len || file.len() as u64 != id.len {
            return Err(IndexError::Stale("length"));
        }
        if stored.mtime_ns != id.mtime_ns {
            return Err(IndexError::Stale("modification time"));
        }
        if (stored.ino, stored.dev) != (id.ino, id.dev) {
            return Err(IndexError::Stale("inode"));
        }
        if r.take::<32>()? != tail_hash(file) {
            return Err(IndexError::Stale("last bytes"));
        }
        let count = r.u64()?;
        // Each block takes at least 61 bytes: no allocation beyond what
        // the index holds.
        if count > (r.bytes.len() / 61) as u64 {
            return Err(IndexError::Short);
        }
        let mut blocks = Vec::with_capacity(count as usize);
        let mut at = 0usize;
        for _ in 0..count {
            let start = r.u64()?;
            let end = r.u64()?;
            let (min_ms, max_ms, unreadable) = (r.u64()?, r.u64()?, r.u64()?);
            let line_hash = r.take::<16>()?;
            let nests = match r.take::<1>()?[0] {
                0 => false,
                1 => true,
                _ => return Err(IndexError::BadBlocks("a flag is neither 0 nor 1")),
            };
            let n = r.u32()?;
            let contids = if n == u32::MAX {
                None
            } else {
                if n as usize > MAX_IDS {
                    return Err(IndexError::BadBlocks("too many container IDs"));
                }
                let ids = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
                if ids.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(IndexError::BadBlocks("container IDs out of order"));
                }
                Some(ids)
            };
            if start != at as u64 || end <= start || end > id.len {
                return Err(IndexError::BadBlocks("a gap, an overlap or past the end"));
            }
            let (start, end) = (start as usize, end as usize);
            if first_line_hash(file, start) != line_hash {
                return Err(IndexError::Stale("a block's first line"));
            }
            at = end;
            blocks.push(Block {
                start,
                end,
                summary: Some(Summary {
                    min_ms,
                    max_ms,
                    unreadable,
                    nests,
                    contids,
                }),
            });
        }
        if at != file.len() {
            return Err(IndexError::BadBlocks("the blocks end before the file"));
        }
        if !r.bytes.is_empty() {
            return Err(IndexError::BadBlocks("bytes after the last block"));
        }
        Ok(Index { blocks })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], IndexError> {
        let (head, rest) = self.bytes.split_first_chunk().ok_or(IndexError::Short)?;
        self.bytes = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, IndexError> {
        self.take().map(u64::from_le_bytes)
    }
}

fn tail_hash(file: &[u8]) -> [u8; 32] {
    *blake3::hash(&file[file.len().saturating_sub(TAIL)..]).as_bytes()
}

/// A hash of the line that starts at `at`, with its offset.
fn first_line_hash(file: &[u8], at: usize) -> [u8; 16] {
    let (end, _) = line_at(file, at.min(file.len()));
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(at as u64).to_le_bytes());
    hasher.update(&file[at.min(file.len())..end]);
    let mut out = [0; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

/// Where the blocks start (and the last ends): line starts about
/// `block_bytes` apart, each moved on past the lines of the event it
/// would cut (and the lines without a record among them).
fn event_bounds(log: &[u8], block_bytes: usize) -> Vec<usize> {
    let mut bounds: Vec<usize> = chunk_bounds(log, block_bytes)
        .into_iter()
        .map(|at| next_event(log, at))
        .collect();
    bounds.dedup();
    bounds
}

/// The first line at or after `at` (a line start) that starts an event
/// (or the end of the log).
pub(crate) fn next_event(log: &[u8], mut at: usize) -> usize {
    let Some(before) = stamp_before(log, at) else {
        return at;
    };
    while at < log.len() {
        let (end, next) = line_at(log, at);
        match line_stamp(&log[at..end]) {
            Some(stamp) if stamp != before => return at,
            _ => at = next,
        }
    }
    log.len()
}

/// What the lines of `log[start..end]` hold.
fn summarize(log: &[u8], start: usize, end: usize) -> Summary {
    let contid = [Finder::new(b"contid=")];
    let nest = Finder::new(b"type=CONTAINER_OP msg=audit(");
    let mut with_ids = needle_lines(&contid, log, start, end)
        .into_iter()
        .peekable();
    let mut ids = BTreeSet::new();
    let mut overflow = false;
    let mut summary = Summary {
        min_ms: u64::MAX,
        max_ms: 0,
        unreadable: 0,
        nests: nest.find(&log[start..end]).is_some(),
        contids: None,
    };
    let mut at = start;
    while at < end {
        let (line_end, next) = line_at(log, at);
        let line = &log[at..line_end];
        match line_stamp(line) {
            None => summary.unreadable += 1,
            Some(stamp) => {
                let ms = stamp.epoch_millis();
                summary.min_ms = summary.min_ms.min(ms);
                summary.max_ms = summary.max_ms.max(ms);
                while with_ids.next_if(|&l| l < at).is_some() {}
                let json = line.first() == Some(&b'{');
                summary.nests |= json;
                if (with_ids.next_if_eq(&at).is_some() || json) && !overflow {
                    let parsed = LogLine::parse(String::from_utf8_lossy(line));
                    if let Some(l) = parsed {
                        let e = l.entry();
                        if names_containers(&e) {
                            for value in ["contid", "new-contid"].iter().filter_map(|k| e.field(k))
                            {
                                ids.extend(chain_ids(value).map(|(_, id)| id));
                            }
                            overflow = ids.len() > MAX_IDS;
                        }
                    }
                }
            }
        }
        at = next;
    }
    if !overflow {
        summary.contids = Some(ids.into_iter().collect());
    }
    summary
}

/// What the name of a log file takes to name its index beside it.
pub const SUFFIX: &str = ".ptags-idx";

/// The index kept beside the log file `path`.
pub fn beside(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SUFFIX);
    name.into()
}

/// The name of the file an index of `path` is kept in when it cannot be
/// beside it: a hash of the path.
pub fn cache_name(path: &[u8]) -> String {
    let hash = blake3::hash(path);
    format!("{}{SUFFIX}", &hash.to_hex()[..32])
}

impl Index {
    /// The stored index of the file if it is usable, else one built from
    /// the file; and why the stored one was not used (`None` when it
    /// was).
    pub fn decode_or_build(
        stored: Option<&[u8]>,
        id: &FileId,
        file: &[u8],
        split: Split,
    ) -> (Index, Option<IndexError>) {
        match stored.map(|bytes| Index::decode(bytes, id, file)) {
            Some(Ok(index)) => (index, None),
            Some(Err(e)) => (Index::build(file, split), Some(e)),
            None => (Index::build(file, split), Some(IndexError::Short)),
        }
    }
}
