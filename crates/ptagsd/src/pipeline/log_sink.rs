//! The first sink: the trail on disk, sealed lines appended to
//! `audit.log`, rotation by size and count, the flush policy, and what to
//! do when space runs out.
//! A batch is written with one write; a write that fails leaves no torn
//! line (the file is cut back) and no gap in the chain (the records are
//! sealed again when written later, or counted as lost).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use log::{error, info, warn};
use ptags_audit::chain::{record_time, Key, LineFormat, Link, Sealed, Sealer, KEY_LEN};
use ptags_audit::{index, json_members, Stamp};

use super::router::{Record, Sink, SinkStatus};
use crate::config::{Audit, DiskAction, Flush, LogFormat};

/// Daemon records' serials start here: the kernel's are 32-bit, so the
/// daemon's never name a kernel event.
pub const DAEMON_SERIAL_BASE: u64 = 1 << 32;

/// Whether records are being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    On,
    /// Suspended by a disk action until space is back.
    Suspended,
}

/// Lost for lack of space, not yet reported in the log.
#[derive(Debug, Default, Clone, Copy)]
struct DiskLoss {
    lost: u64,
    reason: &'static str,
}

pub struct LogFile {
    dir: PathBuf,
    path: PathBuf,
    tail_path: PathBuf,
    /// The tail file, kept open and written in place after each batch.
    tail: File,
    file: File,
    size: u64,
    format: LineFormat,
    sealer: Sealer,
    config: Audit,
    /// Records waiting to be written. A daemon record's serial is given
    /// when it is sealed: 2^32 + its sequence number, unique and telling
    /// its place.
    pending: Vec<Record>,
    since_sync: u64,
    writing: Writing,
    unreported: DiskLoss,
    /// The file has no opening record yet: it is written first (`op`).
    opening: Option<&'static str>,
    /// Files deleted and not yet said in the trail: when, and the body
    /// of their `PTAGS_ROTATE` record (written after the opening).
    removed: Vec<(Duration, String)>,
    low_on_space: bool,
    warned_full: bool,
    /// Lines written, and records lost for lack of space, since start.
    written: u64,
    lost_disk: u64,
    /// The serial of the last record sealed: a follower's too.
    last_serial: u64,
}

/// Reads the chain key, making one the first time.
pub fn load_key(path: &Path) -> Result<Key> {
    match fs::read(path) {
        Ok(bytes) => Key::from_slice(&bytes).with_context(|| format!("in {}", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let mut bytes = [0u8; KEY_LEN];
            // SAFETY: getrandom writes at most `len` bytes into the buffer.
            let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), KEY_LEN, 0) };
            if n != KEY_LEN as isize {
                bail!("getrandom: {}", std::io::Error::last_os_error());
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            info!("made a new audit chain key in {}", path.display());
            Ok(Key::new(bytes))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Now, since the epoch: the time of daemon records.
pub fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Free bytes for unprivileged writers on the file system of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c is NUL-terminated and st is written by statvfs on success.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so st is initialised.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail * st.f_frsize)
}

fn open_append(path: &Path) -> Result<File> {
    // Never through a link put in the file's place.
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

impl LogFile {
    /// Opens `dir/audit.log` and continues the chain from the tail file
    /// in `state_dir`, starting with an opening record.
    pub fn open(dir: &Path, state_dir: &Path, config: &Audit, key: Key) -> Result<LogFile> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("audit.log");
        let tail_path = state_dir.join("audit.tail");
        let link = match fs::read_to_string(&tail_path) {
            Ok(text) => Link::parse(&text)
                .with_context(|| format!("{} is not `SEQ MAC`", tail_path.display()))?,
            Err(e) if e.kind() == ErrorKind::NotFound => Link::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", tail_path.display())),
        };
        // The file is ahead of the tail when the daemon stopped between
        // writing a batch and recording where the chain stood.
        let link = match last_link(&path) {
            Some(l) if l.seq > link.seq => l,
            _ => link,
        };
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        // Root's alone, as the trail is.
        let tail = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&tail_path)
            .with_context(|| format!("opening {}", tail_path.display()))?;
        tail.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("securing {}", tail_path.display()))?;
        let mut log = LogFile {
            dir: dir.to_owned(),
            path,
            tail_path,
            tail,
            file,
            size,
            format: match config.format {
                LogFormat::Audit => LineFormat::Text,
                LogFormat::Json => LineFormat::Json,
            },
            sealer: Sealer::new(key, link),
            config: config.clone(),
            pending: Vec::new(),
            since_sync: 0,
            writing: Writing::On,
            unreported: DiskLoss::default(),
            opening: Some("open"),
            removed: Vec::new(),
            low_on_space: false,
            warned_full: false,
            written: 0,
            lost_disk: 0,
            last_serial: 0,
        };
        log.write_pending()?;
        Ok(log)
    }

    /// The record that opens a file: where the chain stood before it.
    fn opening_record(&self, op: &str) -> Record {
        let link = self.sealer.link();
        let body = format!(
            "op={op} file=\"{}\" prev-seq={} prev-mac={} key-id={} pid={}",
            self.path.file_name().unwrap_or_default().to_string_lossy(),
            link.seq,
            link.mac,
            self.sealer.key_id(),
            std::process::id()
        );
        Record::daemon("PTAGS_LOG", now(), body)
    }

    fn seal_all(&mut self, records: &[Record]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(records.len() * 320);
        let mut content = String::with_capacity(512);
        for r in records {
            let serial = match (r.serial, r.follows) {
                (Some(serial), _) => serial,
                (None, true) => self.last_serial,
                (None, false) => DAEMON_SERIAL_BASE + self.sealer.next_seq(),
            };
            self.last_serial = serial;
            let stamp = Stamp {
                secs: r.time.as_secs(),
                millis: r.time.subsec_millis() as u16,
                serial,
            };
            content.clear();
            match self.format {
                LineFormat::Text => ptags_audit::write_text(&mut content, &r.kind, &stamp, &r.body),
                LineFormat::Json => content.push_str(&json_members(&r.kind, &stamp, &r.body)),
            }
            self.sealer.seal(self.format, &content, &mut buf);
        }
        buf
    }

    /// Writes what is queued, after the file's opening record and the
    /// count of what the disk lost, if either is due. An error is
    /// returned only when the disk action is `stop`.
    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() && self.opening.is_none() {
            return Ok(());
        }
        if self.writing == Writing::Suspended {
            self.lose(self.pending.len() as u64, "suspended");
            self.pending.clear();
            return Ok(());
        }
        let mut records = Vec::with_capacity(self.pending.len() + 2 + self.removed.len());
        if let Some(op) = self.opening {
            records.push(self.opening_record(op));
        }
        for (at, body) in &self.removed {
            records.push(Record::daemon("PTAGS_ROTATE", *at, body.clone()));
        }
        if self.unreported.lost > 0 {
            records.push(self.loss_record());
        }
        // Those are made again from the state when the write fails.
        let made_here = records.len();
        records.append(&mut self.pending);
        let before = self.sealer.clone();
        let buf = self.seal_all(&records);
        let max = self.config.max_log_file_mib << 20;
        if self.size > 0 && self.size + buf.len() as u64 > max {
            self.sealer = before;
            self.pending = records.split_off(made_here);
            self.rotate("rotate")?;
            return self.write_pending();
        }
        // More than a file holds (a burst of kernel records): written in
        // halves, each file kept to its size. The records made here are
        // made again from the state, which only a write clears.
        if buf.len() as u64 > max && records.len() > made_here + 1 {
            self.sealer = before;
            let mut first = records.split_off(made_here);
            let second = first.split_off(first.len() / 2);
            self.pending = first;
            self.write_pending()?;
            self.pending = second;
            return self.write_pending();
        }
        match self.file.write_all(&buf) {
            Ok(()) => {
                self.opening = None;
                self.removed.clear();
                self.unreported.lost = 0;
                self.warned_full = false;
                self.size += buf.len() as u64;
                self.written += records.len() as u64;
                self.since_sync += records.len() as u64;
                self.sync()?;
                self.write_tail();
                Ok(())
            }
            Err(e) => {
                // No torn line, no hole in the chain.
                let _ = self.file.set_len(self.size);
                self.sealer = before;
                records.drain(..made_here);
                if !is_no_space(&e) {
                    error!("writing {}: {e}", self.path.display());
                    self.lose(records.len() as u64, "write-error");
                    return Ok(());
                }
                self.disk_full(records)
            }
        }
    }

    fn sync(&mut self) -> Result<()> {
        let due = match self.config.flush {
            Flush::None => false,
            Flush::Incremental => self.since_sync >= self.config.freq,
            Flush::Data | Flush::Sync => true,
        };
        if due {
            let r = match self.config.flush {
                Flush::Sync => self.file.sync_all(),
                _ => self.file.sync_data(),
            };
            r.with_context(|| format!("syncing {}", self.path.display()))?;
            self.since_sync = 0;
        }
        Ok(())
    }

    /// Where the chain stands, for `ptags audit verify` to detect a cut end.
    /// Records where the chain stands: one write in place, padded to a
    /// fixed size (the longest `SEQ MAC` is 53 bytes), so that the file's
    /// length never changes and a crash leaves the old line or the new
    /// one. A new file and a rename each batch cost the file system a
    /// metadata change per request (issue 21).
    fn write_tail(&self) {
        use std::os::unix::fs::FileExt as _;
        let line = format!("{:<63}\n", self.sealer.link().to_string());
        if let Err(e) = self.tail.write_all_at(line.as_bytes(), 0) {
            warn!("writing {}: {e}", self.tail_path.display());
        }
    }

    fn lose(&mut self, n: u64, reason: &'static str) {
        self.unreported.lost += n;
        self.unreported.reason = reason;
        self.lost_disk += n;
    }

    /// The record saying how many records could not be written, put
    /// before the batch; the count is cleared once it is written.
    fn loss_record(&self) -> Record {
        let body = format!(
            "source=disk reason={} unit=records lost={} total={}",
            self.unreported.reason, self.unreported.lost, self.lost_disk
        );
        Record::daemon("PTAGS_LOST", now(), body)
    }

    fn disk_full(&mut self, records: Vec<Record>) -> Result<()> {
        let action = self.config.disk_full_action;
        if action == DiskAction::Rotate && self.free_space()? {
            self.pending = records;
            return self.write_pending();
        }
        self.lose(records.len() as u64, "disk-full");
        match action {
            DiskAction::Ignore => {}
            DiskAction::Syslog | DiskAction::Rotate => {
                if !self.warned_full {
                    warn!(
                        "{}: the disk is full; records are lost (counted) until it is not",
                        self.path.display()
                    );
                }
            }
            DiskAction::Suspend => {
                warn!(
                    "{}: the disk is full; writing suspended until space is back",
                    self.path.display()
                );
                self.writing = Writing::Suspended;
            }
            DiskAction::Stop => {
                bail!(
                    "{}: the disk is full and disk_full_action is stop",
                    self.path.display()
                )
            }
        }
        self.warned_full = true;
        Ok(())
    }

    /// Frees space for the `rotate` actions: rotates a file that has
    /// records, else deletes the oldest rotated file. False when there
    /// is nothing left to delete.
    fn free_space(&mut self) -> Result<bool> {
        if self.size > 0 {
            warn!("{}: space is short; rotating", self.path.display());
            self.rotate("rotate")?;
            return Ok(true);
        }
        for i in (1..self.config.num_logs).rev() {
            let old = self.dir.join(format!("audit.log.{i}"));
            let held = removal_record(&old, "space");
            match fs::remove_file(&old) {
                Ok(()) => {
                    let _ = fs::remove_file(index::beside(&old));
                    self.removed.extend(held.map(|body| (now(), body)));
                    warn!(
                        "{}: space is short; deleted {}",
                        self.path.display(),
                        old.display()
                    );
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {}", old.display())),
            }
        }
        Ok(false)
    }

    /// Moves `audit.log` to `audit.log.1` (and so on, deleting the
    /// oldest first, which frees space before anything else) and starts
    /// a new file, whose first record (written by the next commit) is
    /// the opening that joins the chain.
    fn rotate(&mut self, op: &'static str) -> Result<()> {
        let _ = self.file.sync_all();
        let n = self.config.num_logs;
        let numbered = |i: u32| self.dir.join(format!("audit.log.{i}"));
        let gone = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        let oldest = if n <= 1 {
            self.path.clone()
        } else {
            numbered(n - 1)
        };
        let held = removal_record(&oldest, "rotate");
        gone(fs::remove_file(&oldest))?;
        // A search's index goes with its file: still bound to the same
        // inode and contents, it stays valid under the new name. Only an
        // accelerator, checked against the file when read: a failure to
        // move one is no failure to rotate.
        let _ = fs::remove_file(index::beside(&oldest));
        self.removed.extend(held.map(|body| (now(), body)));
        if n > 1 {
            for i in (1..n - 1).rev() {
                gone(fs::rename(numbered(i), numbered(i + 1)))?;
                let _ = fs::rename(index::beside(&numbered(i)), index::beside(&numbered(i + 1)));
            }
            fs::rename(&self.path, numbered(1))
                .with_context(|| format!("rotating {}", self.path.display()))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        self.since_sync = 0;
        self.opening = Some(op);
        info!("{}: rotated ({op})", self.path.display());
        Ok(())
    }

    /// Checks free space (every second or so): takes `space_left_action`
    /// when it runs low, and resumes suspended writing when it is back.
    fn check_space(&mut self) -> Result<()> {
        let Some(free) = free_bytes(&self.dir) else {
            return Ok(());
        };
        let threshold = self.config.space_left_mib << 20;
        let resume_at = threshold.max(1 << 20);
        if self.writing == Writing::Suspended && free >= resume_at {
            info!("{}: space is back; writing resumes", self.path.display());
            self.writing = Writing::On;
            self.warned_full = false;
        }
        if free >= threshold {
            self.low_on_space = false;
            return Ok(());
        }
        if self.low_on_space {
            return Ok(());
        }
        self.low_on_space = true;
        let free_mib = free >> 20;
        match self.config.space_left_action {
            DiskAction::Ignore => {}
            DiskAction::Syslog => warn!(
                "{}: {free_mib} MiB left, under space_left_mib ({})",
                self.path.display(),
                self.config.space_left_mib
            ),
            DiskAction::Suspend => {
                warn!(
                    "{}: {free_mib} MiB left; writing suspended",
                    self.path.display()
                );
                self.writing = Writing::Suspended;
            }
            DiskAction::Rotate => {
                self.free_space()?;
            }
            DiskAction::Stop => bail!(
                "{}: {free_mib} MiB left and space_left_action is stop",
                self.path.display()
            ),
        }
        Ok(())
    }
}

impl Sink for LogFile {
    fn push(&mut self, record: Record) {
        self.pending.push(record);
    }

    fn commit(&mut self) -> Result<()> {
        self.write_pending()
    }

    fn tick(&mut self) -> Result<()> {
        self.check_space()?;
        self.write_pending()
    }

    fn status(&self) -> SinkStatus {
        SinkStatus {
            name: "log",
            target: self.path.display().to_string(),
            written: self.written,
            lost: self.lost_disk,
            seq: Some(self.sealer.link().seq),
            writing: self.writing == Writing::On,
        }
    }
}

/// The last line of a file (within its last MiB), if any.
fn last_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(1 << 20);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().next_back().map(str::to_owned)
}

/// The chain position of the last sealed line of a file, if any: the
/// file is ahead of the tail file when the daemon stopped between the
/// two writes.
fn last_link(path: &Path) -> Option<Link> {
    let line = last_line(path)?;
    let sealed = Sealed::split(&line)?;
    Some(Link {
        seq: sealed.seq,
        mac: sealed.mac,
    })
}

/// The body of the `PTAGS_ROTATE` record of a file about to be deleted:
/// the records it holds (first and last sequence numbers and times) and
/// the link the next file joins (the last MAC), so that `ptags audit
/// verify` can tell their absence from a deletion no one recorded.
/// `None` when the file is missing or holds no sealed line.
fn removal_record(path: &Path, reason: &str) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let mut first = String::new();
    BufReader::new(File::open(path).ok()?)
        .read_line(&mut first)
        .ok()?;
    let last = last_line(path)?;
    let (first, last) = (Sealed::split(first.trim_end())?, Sealed::split(&last)?);
    Some(format!(
        "op=delete file=\"{}\" reason={reason} first-seq={} last-seq={} last-mac={} first-time={} last-time={}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        first.seq,
        last.seq,
        last.mac,
        record_time(first.content).unwrap_or("?"),
        record_time(last.content).unwrap_or("?"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use ptags_audit::chain::{Beginning, Broken, Verifier};

    fn kernel(kind: &'static str, stamp: Stamp, body: String) -> Record {
        Record {
            kind: kind.into(),
            time: Duration::from_millis(stamp.epoch_millis()),
            serial: Some(stamp.serial),
            body,
            pid: None,
            contid: None,
            follows: false,
            scope: None,
            local: None,
        }
    }

    /// A log of 1 MiB files, `num_logs` of them, and its key.
    fn small_log(dir: &Path, format: LogFormat, num_logs: u32) -> (LogFile, Key) {
        let mut config = Config::defaults().audit;
        config.format = format;
        config.max_log_file_mib = 1;
        config.num_logs = num_logs;
        config.flush = Flush::None;
        config.space_left_mib = 0;
        let key = Key::new([9; KEY_LEN]);
        let log = LogFile::open(&dir.join("log"), dir, &config, key.clone()).unwrap();
        (log, key)
    }

    #[test]
    fn a_burst_larger_than_a_file_keeps_every_file_to_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, key) = small_log(dir.path(), LogFormat::Audit, 9);
        let body = "x".repeat(8000);
        for serial in 0..400 {
            let stamp = Stamp {
                secs: 1,
                millis: 0,
                serial,
            };
            log.push(kernel("USER_AVC", stamp, body.clone()));
        }
        log.commit().unwrap();
        let dir = log.path.as_path().parent().unwrap().to_owned();
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("audit.log")
            {
                files += 1;
                let size = std::fs::metadata(&path).unwrap().len();
                assert!(size <= 1 << 20, "{}: {size} bytes", path.display());
            }
        }
        assert!(files >= 4, "3.2 MB in 1 MiB files: {files}");
        assert_eq!(verify(&dir, &key).0, Ok(()));
    }

    #[test]
    fn a_search_index_moves_with_its_file_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = small_log(dir.path(), LogFormat::Audit, 3);
        let logs = log.dir.clone();
        let index_of = |i: u32| index::beside(&logs.join(format!("audit.log.{i}")));
        log.rotate("rotate").unwrap();
        std::fs::write(index_of(1), "the index of file 1").unwrap();
        log.rotate("rotate").unwrap();
        assert!(!index_of(1).exists());
        assert_eq!(
            std::fs::read_to_string(index_of(2)).unwrap(),
            "the index of file 1",
            "renamed with its file"
        );
        // File 2 is the oldest kept (3 logs): the next rotation deletes
        // it, and its index with it.
        log.rotate("rotate").unwrap();
        assert!(!index_of(2).exists() && !index_of(3).exists());
    }

    #[test]
    fn a_kernel_record_cannot_start_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, key) = small_log(dir.path(), LogFormat::Audit, 2);
        // As the kernel passes a user message's text on: unescaped.
        let forged = "audit(1.000:7): msg='hello\ntype=CONTAINER_OP msg=audit(1.000:4294999999): op=drop contid=5151\x1b[2J\u{85}x\u{2028}y'";
        let record = ptags_audit::assemble::KernelRecord::parse(1107, forged.as_bytes()).unwrap();
        log.push(kernel("USER_AVC", record.stamp, record.body));
        log.commit().unwrap();
        let text = std::fs::read_to_string(log.path.as_path()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("type=CONTAINER_OP")),
            "{text}"
        );
        assert!(!text.contains('\x1b') && !text.contains('\u{85}') && !text.contains('\u{2028}'));
        assert_eq!(verify(log.path.as_path().parent().unwrap(), &key).0, Ok(()));
    }

    /// Verifies the files in `dir`, oldest first, as `ptags audit verify` does.
    fn verify(dir: &Path, key: &Key) -> (Result<(), Broken>, Beginning) {
        let mut files: Vec<PathBuf> = (1..10)
            .rev()
            .map(|i| dir.join(format!("audit.log.{i}")))
            .filter(|p| p.exists())
            .collect();
        files.push(dir.join("audit.log"));
        let mut v = Verifier::new(key.clone(), None);
        for f in files {
            v.start_file();
            for line in fs::read_to_string(f).unwrap().lines() {
                if let Err(e) = v.verify(line) {
                    return (Err(e), v.beginning());
                }
            }
        }
        (Ok(()), v.beginning())
    }

    #[test]
    fn a_file_deleted_by_rotation_is_recorded_and_verify_tells_it() {
        for format in [LogFormat::Audit, LogFormat::Json] {
            let tmp = tempfile::tempdir().unwrap();
            let (mut log, key) = small_log(tmp.path(), format, 3);
            let dir = tmp.path().join("log");
            // Nothing deleted yet: the trail starts at its beginning.
            log.push(Record::daemon("PTAGS_OP", now(), "op=write".into()));
            log.commit().unwrap();
            assert_eq!(verify(&dir, &key), (Ok(()), Beginning::Start));
            // About 8 MiB through 1 MiB files, 3 kept.
            for i in 0..800 {
                for j in 0..10 {
                    let body = format!("n={i}.{j} pad={}", "x".repeat(1000));
                    log.push(Record::daemon("PTAGS_OP", now(), body));
                }
                log.commit().unwrap();
            }
            let (ok, beginning) = verify(&dir, &key);
            assert_eq!(ok, Ok(()), "{format:?}");
            let first_file = fs::read_to_string(dir.join("audit.log.2")).unwrap();
            let start = Sealed::split(first_file.lines().next().unwrap())
                .unwrap()
                .seq
                - 1;
            let Beginning::Rotated { first, last, .. } = beginning else {
                panic!("{format:?}: {beginning:?}");
            };
            assert_eq!(last, start, "{format:?}");
            // Each kept file holds the record of one deleted file; the
            // records of older ones went with them.
            assert!(first > 1 && first < last, "{first} {last}");
            let live = fs::read_to_string(dir.join("audit.log")).unwrap();
            let second = live.lines().nth(1).unwrap();
            assert!(
                second.contains("PTAGS_ROTATE")
                    && second.contains("reason=rotate")
                    && second.contains(&format!("last-seq={last}")),
                "{second}"
            );

            // Deleting the oldest file without a record leaves records
            // no rotation record accounts for.
            fs::remove_file(dir.join("audit.log.2")).unwrap();
            let (ok, beginning) = verify(&dir, &key);
            assert_eq!(ok, Ok(()));
            assert!(
                matches!(beginning, Beginning::Unrecorded { from, recorded: true, .. } if from == last + 1),
                "{beginning:?}"
            );
        }
    }
}
