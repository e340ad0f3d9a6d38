//! The index `ptags audit search` keeps of each rotated log file it
//! reads (its format is `ptags_audit::index`): where it is kept, which
//! may be trusted, and how it is written.

use std::fs::File;
use std::path::{Path, PathBuf};

use ptags_audit::index::{Block, FileId, Index};
use ptags_audit::scan::Split;

/// The live file, still being appended to: never indexed.
fn is_live(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "audit.log")
}

/// Whether an index of the closed file `path` is kept somewhere.
pub fn kept_for(path: &Path) -> bool {
    !is_live(path) && places(path).iter().any(|p| p.exists())
}

/// The blocks of the file `path`, opened as `file`, at `span` of `log`:
/// those of its index (read, or built and written) when it is a closed
/// file and `use_index`, else one block of unknown contents.
pub fn blocks(
    path: &Path,
    file: &File,
    log: &[u8],
    span: std::ops::Range<usize>,
    split: Split,
    use_index: bool,
) -> Vec<Block> {
    let unknown = vec![Block {
        start: span.start,
        end: span.end,
        summary: None,
    }];
    if !use_index || is_live(path) || span.is_empty() {
        return unknown;
    }
    let Ok(meta) = file.metadata() else {
        return unknown;
    };
    use std::os::unix::fs::MetadataExt;
    let id = FileId {
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ino: meta.ino(),
        dev: meta.dev(),
    };
    let Ok(len) = usize::try_from(id.len) else {
        return unknown;
    };
    // The file as read; changed since its metadata was read: no index.
    if !meta.is_file() || span.start + len > span.end || span.end - (span.start + len) > 1 {
        return unknown;
    }
    let file = &log[span.start..span.start + len];
    let places = places(path);
    let stored = places.iter().find_map(|p| read_trusted(p));
    let (index, refused) = Index::decode_or_build(stored.as_deref(), &id, file, split);
    if refused.is_some() {
        let bytes = index.encode(&id, file);
        // The first place that takes it; none may: no index kept.
        for place in &places {
            if write_index(place, &bytes).is_ok() {
                break;
            }
        }
    }
    let mut blocks: Vec<Block> = index
        .blocks
        .into_iter()
        .map(|b| Block {
            start: span.start + b.start,
            end: span.start + b.end,
            summary: b.summary,
        })
        .collect();
    // The newline added after the file's last line.
    match blocks.last_mut() {
        Some(last) => last.end = span.end,
        None => return unknown,
    }
    blocks
}

/// Where the index of `path` is looked for and written: beside it, then
/// in the user's cache directory.
fn places(path: &Path) -> Vec<PathBuf> {
    let mut places = Vec::new();
    places.push(ptags_audit::index::beside(path));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let (Some(cache), Ok(full)) = (cache, std::fs::canonicalize(path)) {
        use std::os::unix::ffi::OsStrExt;
        let name = ptags_audit::index::cache_name(full.as_os_str().as_bytes());
        places.push(cache.join("ptags/index").join(name));
    }
    places
}

/// The index at `place`, if the user searching may trust it: a regular
/// file (not through a symbolic link) of this user's that no one else may
/// write. Its hash is no secret: anyone else's index could hide blocks
/// from this search (another user's, planted beside a log in /tmp).
fn read_trusted(place: &Path) -> Option<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(place)
        .ok()?;
    let meta = file.metadata().ok()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return None;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Writes an index whole or not at all: to a new temporary file (never
/// through a link another user left there) renamed over it.
fn write_index(place: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = place.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut temp = place.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&temp, place));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}
