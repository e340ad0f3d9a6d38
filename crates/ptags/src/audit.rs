//! `ptags audit`: reading the trail offline, rotated files included.
//! Needs no daemon: only the log files (and, to verify, the chain key).

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::audit_index;
use clap::{Args, Subcommand, ValueEnum};
use ptags_audit::chain::{Beginning, Broken, Key, Link, Verifier};
use ptags_audit::index::Block;
use ptags_audit::json_members;
use ptags_audit::query::{format_utc, interpret, parse_time, Entry, Query};
use ptags_audit::report::Report;
use ptags_audit::scan::{self, EventGrouper, LogLine, Print, Split};

use crate::commands::contid_arg;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print the events that match every filter given.
    #[command(after_help = "Examples:\n  ptags audit search --contid 7 --nested\n  \
        ptags audit search --type CONTAINER_OP --since 2026-11-22T08:00 --format interpreted\n  \
        ptags audit search -i /var/log/ptags/audit.log.1 --pid 1234 --format json\n  \
        ptags audit search --contid 7 audit.log.2 audit.log.1   (files as ausearch -if takes them)\n\
        \n\
        The index: a search keeps, beside each file it reads (FILE.ptags-idx), a small \
        index of the file's blocks of about 2 MiB: their times, the container IDs they \
        name, whether they may nest a container. It only lets later searches skip blocks \
        that cannot match: a block that may is read as without it, so the results are \
        the same. It is written when missing, and rebuilt when it no longer fits the \
        file (length, modification time, inode, a hash of each block's first line and of \
        the file's end) or is damaged. Where the file's directory is not writable it goes \
        to $XDG_CACHE_HOME/ptags/index (or ~/.cache/ptags/index); if that fails too, the \
        search goes on without writing one. The live file, audit.log, still being \
        appended to, is never indexed. An index is read only if the user searching \
        owns it and no one else may write it. --no-index neither reads nor writes one.\n\
        \n\
        Exit status: 0 when something matched, 1 when nothing did, 2 on error.")]
    Search(SearchArgs),
    /// Per container: its creation, processes, execs, tag changes, records; and losses.
    Report(ReportArgs),
    /// Check the keyed hash chain: any change, deletion, insertion or reordering is found and located.
    #[command(
        after_help = "Exit status: 0 when the trail is intact, 1 when it is not (the place \
        is printed as FILE:LINE), 2 on error."
    )]
    Verify(VerifyArgs),
    /// A container's own copy of its records: its policy (asks ptagsd).
    #[command(subcommand)]
    Policy(crate::audit_copy::PolicyCommand),
    /// Print a container's records as they are written (asks ptagsd).
    Follow(crate::audit_copy::FollowArgs),
}

#[derive(Args)]
pub struct Files {
    /// A log file to read (repeatable, oldest first). Default: every file
    /// of --log-dir, rotated ones first.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    inputs: Vec<PathBuf>,
    /// Log files, as with -i (after those of -i, in the order given).
    #[arg(value_name = "FILE")]
    named: Vec<PathBuf>,
    /// Where ptagsd writes the trail.
    #[arg(long, value_name = "DIR", default_value = "/var/log/ptags")]
    log_dir: PathBuf,
}

/// A log file, opened when the files were listed: a rotation while it is
/// read renames it, but what is read stays the file that was listed.
struct Opened {
    path: PathBuf,
    file: File,
}

impl Files {
    /// The files to read, oldest first, all opened at once.
    fn open(&self) -> Result<Vec<Opened>> {
        self.list()?
            .into_iter()
            .map(|path| {
                let file =
                    File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                Ok(Opened { path, file })
            })
            .collect()
    }

    /// The files named on the command line (-i and positional).
    fn chosen(&self) -> Vec<PathBuf> {
        self.inputs.iter().chain(&self.named).cloned().collect()
    }

    fn list(&self) -> Result<Vec<PathBuf>> {
        let chosen = self.chosen();
        if !chosen.is_empty() {
            return Ok(chosen);
        }
        let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
        let entries = std::fs::read_dir(&self.log_dir)
            .with_context(|| format!("reading {}", self.log_dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if let Some(n) = name.strip_prefix("audit.log.").and_then(|n| n.parse().ok()) {
                rotated.push((n, path));
            }
        }
        rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
        let live = self.log_dir.join("audit.log");
        if live.exists() {
            files.push(live);
        }
        if files.is_empty() {
            bail!("no audit.log in {}", self.log_dir.display());
        }
        Ok(files)
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// The lines as written.
    Raw,
    /// Dates, unset values and decoded strings, like `ausearch -i`.
    Interpreted,
    /// One JSON object per record.
    Json,
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    files: Files,
    /// Events of this container (its CONTAINER_ID, CONTAINER_OP and ptags records).
    #[arg(long, value_parser = contid_arg)]
    contid: Option<u64>,
    /// With --contid: also the containers nested in it.
    #[arg(long, requires = "contid")]
    nested: bool,
    /// Tag changes whose lines touch a tag matching NAME or PREFIX:*.
    #[arg(long, value_name = "PATTERN")]
    tag: Option<String>,
    /// Events with a record of this type (repeatable).
    #[arg(long = "type", short = 'm', value_name = "TYPE")]
    kinds: Vec<String>,
    /// Events naming this process (pid= or opid=).
    #[arg(long)]
    pid: Option<u32>,
    /// Events whose namespace records (NS_INFO, NS_CREATE, NS_CHANGE,
    /// NS_DESTROY) name this namespace (its inode number, as
    /// `stat -L -c %i /proc/PID/ns/KIND` gives it).
    #[arg(long, value_name = "INUM")]
    ns: Option<u64>,
    /// From this time: seconds since the epoch, or YYYY-MM-DD[THH:MM[:SS]] in UTC.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Up to this time (inclusive).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    #[arg(long, value_enum, default_value = "raw")]
    format: Format,
    /// Neither read nor write the index of rotated files (see below).
    #[arg(long)]
    no_index: bool,
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    files: Files,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    files: Files,
    /// The daemon's chain key.
    #[arg(long, value_name = "FILE", default_value = "/var/lib/ptags/audit.key")]
    key: PathBuf,
    /// Where the daemon says the chain ends (detects a cut end). Default:
    /// audit.tail beside the key, when the live audit.log is verified.
    #[arg(long, value_name = "FILE")]
    tail: Option<PathBuf>,
}

/// Reads the lines of the files in order, calling `each` with the file
/// and line number.
fn read_lines(
    files: &[Opened],
    mut each: impl FnMut(&Path, u64, &str) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::with_capacity(4096);
    for Opened { path, file } in files {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut n = 0;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            n += 1;
            let text = String::from_utf8_lossy(&buf);
            each(path, n, text.trim_end_matches('\n'))?;
        }
    }
    Ok(())
}

/// Reads the files event by event (consecutive records sharing a stamp).
fn events(files: &[Opened], mut each: impl FnMut(&[LogLine<'_>], &[Entry<'_>])) -> Result<u64> {
    let mut grouper = EventGrouper::default();
    read_lines(files, |_, _, raw| {
        grouper.push(Cow::Owned(raw.to_owned()), &mut each);
        Ok(())
    })?;
    Ok(grouper.finish(&mut each))
}

/// The files' bytes one after the other, as `read_lines` reads them.
struct Loaded {
    bytes: LogBytes,
    /// Where each file's bytes are (the newline added after one
    /// included).
    spans: Vec<std::ops::Range<usize>>,
}

enum LogBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for LogBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            LogBytes::Mapped(map) => map,
            LogBytes::Read(bytes) => bytes,
        }
    }
}

impl LogBytes {
    /// One file is mapped: reading it into memory would cost more than
    /// the whole search (faulting in fresh pages, 300 ms for 300 MiB on
    /// a 2-core VM, against 30 ms to map it). Several are read, their
    /// bytes one after the other, with a newline ending a file's last
    /// line if it has none: a line does not run on into the next file.
    ///
    /// `populate`: the whole file is faulted in as it is mapped (what a
    /// full scan wants); without, only the pages read are (what a search
    /// that skips most blocks with an index wants).
    fn load(files: &[Opened], populate: bool) -> Result<Loaded> {
        if let [one] = files {
            if one
                .file
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() > 0)
            {
                // SAFETY: the map is only read, as bytes. ptagsd only
                // appends to the live audit.log (beyond the length mapped
                // here) and renames it to rotate it; it truncates it only
                // back over a write that failed, which would make the
                // bytes read be those of the torn line, or, past the end,
                // stop the process with SIGBUS (or fail the writev that
                // copies raw lines out of the map with EFAULT, reported as
                // a write error): no answer rather than a wrong one.
                let map = unsafe {
                    let mut options = memmap2::MmapOptions::new();
                    if populate {
                        options.populate();
                    }
                    options.map(&one.file)
                };
                if let Ok(map) = map {
                    let spans = std::iter::once(0..map.len()).collect();
                    return Ok(Loaded {
                        bytes: LogBytes::Mapped(map),
                        spans,
                    });
                }
            }
        }
        let mut bytes = Vec::new();
        let mut spans = Vec::new();
        for Opened { path, file } in files {
            let start = bytes.len();
            let mut reader = file;
            reader
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            if bytes.last().is_some_and(|&b| b != b'\n') {
                bytes.push(b'\n');
            }
            spans.push(start..bytes.len());
        }
        Ok(Loaded {
            bytes: LogBytes::Read(bytes),
            spans,
        })
    }
}

fn warn_unreadable(n: u64) {
    if n > 0 {
        eprintln!("ptags: {n} lines are not audit records and were not read");
    }
}

pub fn run(command: AuditCommand, out: crate::Output) -> Result<ExitCode> {
    match command {
        AuditCommand::Search(args) => search(args),
        AuditCommand::Report(args) => report(args, out),
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Policy(_) | AuditCommand::Follow(_) => {
            unreachable!("asked of the daemon by main")
        }
    }
}

fn search(args: SearchArgs) -> Result<ExitCode> {
    let time = |t: &Option<String>| {
        t.as_deref()
            .map(parse_time)
            .transpose()
            .map_err(anyhow::Error::msg)
    };
    let query = Query {
        contid: args.contid,
        nested: args.nested,
        tag: args.tag.clone(),
        kinds: args.kinds.clone(),
        pid: args.pid,
        ns: args.ns,
        since_ms: time(&args.since)?,
        until_ms: time(&args.until)?,
    };
    query.validate().map_err(anyhow::Error::msg)?;
    let files = args.files.open()?;
    // An index to skip with: only the pages of the blocks read are
    // worth faulting in.
    let indexed = !args.no_index && files.iter().any(|f| audit_index::kept_for(&f.path));
    let loaded = LogBytes::load(&files, !indexed)?;
    let log: &[u8] = &loaded.bytes;
    let split = Split::default();
    let blocks: Vec<Block> = files
        .iter()
        .zip(&loaded.spans)
        .flat_map(|(f, span)| {
            let use_index = !args.no_index;
            audit_index::blocks(&f.path, &f.file, log, span.clone(), split, use_index)
        })
        .collect();
    let format = args.format;
    let print_with = |lines: &[LogLine<'_>], entries: &[Entry<'_>], text: &mut Vec<u8>| {
        print_event(text, format, lines, entries).expect("writing to memory");
    };
    let print = match format {
        Format::Raw => Print::Raw,
        _ => Print::With(&print_with),
    };
    // Each chunk's text in one `writev` (or as few as the pipe takes),
    // from the mapped file itself for raw lines: through a copy of the
    // standard output's descriptor, not its line buffer.
    std::io::stdout().flush()?;
    let mut out = File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("opening the standard output")?,
    );
    let mut write_error = None;
    let found = scan::search(
        log,
        &query,
        split,
        Some(&blocks),
        print,
        |text| match write_all_slices(&mut out, text) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        },
    )
    .map_err(anyhow::Error::msg)?;
    match write_error {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Some(e) => return Err(e).context("writing the results"),
        None => {}
    }
    out.flush()?;
    warn_unreadable(found.unreadable);
    if found.matched == 0 {
        eprintln!("<no matches>");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `slices` one after the other, whole.
fn write_all_slices(out: &mut impl Write, slices: &[IoSlice<'_>]) -> std::io::Result<()> {
    let mut slices = slices.to_vec();
    let mut left = &mut slices[..];
    IoSlice::advance_slices(&mut left, 0);
    while !left.is_empty() {
        match out.write_vectored(left) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn print_event(
    out: &mut impl Write,
    format: Format,
    lines: &[LogLine<'_>],
    entries: &[Entry<'_>],
) -> std::io::Result<()> {
    match format {
        Format::Raw => {
            for l in lines {
                writeln!(out, "{}", l.raw)?;
            }
        }
        Format::Interpreted => {
            writeln!(out, "----")?;
            for e in entries {
                writeln!(out, "{}", interpret(e))?;
            }
        }
        Format::Json => {
            for (l, e) in lines.iter().zip(entries) {
                let seq = l.seq.map_or("null".to_owned(), |s| s.to_string());
                writeln!(
                    out,
                    "{{\"seq\":{seq},{}}}",
                    json_members(e.kind, &e.stamp, e.body)
                )?;
            }
        }
    }
    Ok(())
}

fn report(args: ReportArgs, out: crate::Output) -> Result<ExitCode> {
    let files = args.files.open()?;
    let mut report = Report::default();
    let unreadable = events(&files, |_, entries| report.add(entries))?;
    warn_unreadable(unreadable);
    print_report(&report, out);
    Ok(ExitCode::SUCCESS)
}

/// Prints a report as a table, or as JSON with `--json`.
fn print_report(report: &Report, out: crate::Output) {
    if out.json {
        let containers: Vec<serde_json::Value> = report
            .containers
            .values()
            .map(|c| {
                serde_json::json!({
                    "contid": c.contid,
                    "parent": c.parent,
                    "first": c.first.map(|s| s.epoch_millis()),
                    "last": c.last.map(|s| s.epoch_millis()),
                    "created": c.created.as_ref().map(|(op, pid)| serde_json::json!({"op": op, "by": pid})),
                    "injected": c.injected,
                    "dropped": c.dropped,
                    "processes": c.processes,
                    "execs": c.execs,
                    "exits": c.exits,
                    "tag_changes": c.tag_changes,
                    "kernel_events": c.kernel_events,
                    "records": c.records,
                    "namespaces": c.namespaces,
                    "namespace_events": c.ns_events,
                })
            })
            .collect();
        let v = serde_json::json!({
            "events": report.events,
            "records": report.records,
            "lost": report.lost,
            "containers": containers,
        });
        println!("{v}");
        return;
    }
    println!(
        "{} events, {} records, {} containers",
        report.events,
        report.records,
        report.containers.len()
    );
    if report.lost.is_empty() {
        println!("lost: none recorded");
    }
    for (what, n) in &report.lost {
        println!("lost: {n} ({what})");
    }
    println!(
        "{:>20} {:>20} {:>8} {:>9} {:>6} {:>6} {:>11} {:>13} {:>8} {:>7}",
        "CONTID",
        "PARENT",
        "CREATED",
        "PROCESSES",
        "EXECS",
        "EXITS",
        "TAG-CHANGES",
        "KERNEL-EVENTS",
        "RECORDS",
        "DROPPED"
    );
    for c in report.containers.values() {
        let parent = c.parent.map_or("-".to_owned(), |p| p.to_string());
        let created = c.created.as_ref().map_or("-", |(op, _)| op.as_str());
        let records: u64 = c.records.values().sum();
        println!(
            "{:>20} {:>20} {:>8} {:>9} {:>6} {:>6} {:>11} {:>13} {:>8} {:>7}",
            c.contid,
            parent,
            created,
            c.processes.len(),
            c.execs,
            c.exits,
            c.tag_changes,
            c.kernel_events,
            records,
            if c.dropped { "yes" } else { "no" }
        );
    }
    // Each container's namespaces and namespace events, under the table.
    for c in report
        .containers
        .values()
        .filter(|c| !c.namespaces.is_empty())
    {
        let kinds: Vec<String> = c
            .namespaces
            .iter()
            .map(|(kind, inums)| {
                let inums: Vec<String> = inums.iter().map(u64::to_string).collect();
                format!("{kind}:{}", inums.join(","))
            })
            .collect();
        let events: Vec<String> = c
            .ns_events
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("container {} namespaces: {}", c.contid, kinds.join(" "));
        if !events.is_empty() {
            println!(
                "container {} namespace events: {}",
                c.contid,
                events.join(", ")
            );
        }
    }
}

fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let files = args.files.open()?;
    let bytes = std::fs::read(&args.key)
        .with_context(|| format!("reading the key {}", args.key.display()))?;
    let key = Key::from_slice(&bytes).with_context(|| format!("in {}", args.key.display()))?;
    let live = files
        .last()
        .is_some_and(|f| f.path.file_name().is_some_and(|n| n == "audit.log"));
    let tail_path = match (&args.tail, live) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => Some(args.key.with_file_name("audit.tail")),
        (None, false) => None,
    };
    let tail = match &tail_path {
        Some(p) if p.exists() || args.tail.is_some() => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(Link::parse(&text).with_context(|| format!("{} is not `SEQ MAC`", p.display()))?)
        }
        _ => None,
    };
    let mut verifier = Verifier::new(key, None);
    let mut current: Option<PathBuf> = None;
    // Every break is reported, not only the first: an injected line must
    // not hide a deletion after it.
    let mut problems: Vec<String> = Vec::new();
    read_lines(&files, |path, n, line| {
        if current.as_deref() != Some(path) {
            current = Some(path.to_owned());
            verifier.start_file();
        }
        if let Err(e) = verifier.verify(line) {
            problems.push(format!("{}:{n}: {e}", path.display()));
            verifier.resync(line);
        }
        Ok(())
    })?;
    let mut broken = match problems.len() {
        0 => None,
        1 => problems.pop(),
        n => {
            const SHOWN: usize = 100;
            let more = n.saturating_sub(SHOWN);
            problems.truncate(SHOWN);
            if more > 0 {
                problems.push(format!("... and {more} more"));
            }
            problems.push(format!("{n} problems"));
            Some(problems.join("\n"))
        }
    };
    if broken.is_none() {
        if let Err(e) = verifier.finish(tail) {
            let last = files
                .last()
                .map(|f| f.path.display().to_string())
                .unwrap_or_default();
            broken = Some(format!("{last}: {e}"));
        }
    }
    let beginning = verifier.beginning();
    // All of the log directory is read, and it records its rotations:
    // records missing before it without such a record were deleted. (Files
    // chosen with -i may well start after an unrecorded rotation.)
    if let (
        None,
        true,
        Beginning::Unrecorded {
            from,
            to,
            recorded: true,
        },
    ) = (&broken, args.files.chosen().is_empty(), &beginning)
    {
        let first = files
            .first()
            .map(|f| f.path.display().to_string())
            .unwrap_or_default();
        let e = Broken::RemovedUnrecorded {
            from: *from,
            to: *to,
        };
        broken = Some(format!("{first}:1: {e}"));
    }
    if let Some(b) = broken {
        println!("{b}");
        return Ok(ExitCode::from(1));
    }
    let last = verifier.last().map_or(0, |l| l.seq);
    let before = match beginning {
        Beginning::Start => String::new(),
        Beginning::Rotated {
            first,
            last,
            first_time,
            last_time,
            recorded_at,
        } => {
            let older = if first > 1 {
                format!(" (records 1–{} went with older files)", first - 1)
            } else {
                String::new()
            };
            format!(
                "; records {first}–{last} ({} to {}) were removed by rotation, as recorded at {}{older}",
                utc(&first_time),
                utc(&last_time),
                utc(&recorded_at)
            )
        }
        Beginning::Unrecorded { from, to, .. } => format!(
            "; records {from}–{to} are not in these files (no rotation record in them accounts for them)"
        ),
    };
    println!(
        "intact: {} records in {} files, up to record {last}{}{before}",
        verifier.lines(),
        files.len(),
        if tail.is_some() {
            ", where the daemon stopped writing"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// A record's `SECS.MSEC` as a UTC date (as given when it is not one).
fn utc(secs_msec: &str) -> String {
    let parsed = secs_msec
        .split_once('.')
        .and_then(|(s, ms)| Some((s.parse::<u64>().ok()?, ms)));
    match parsed {
        Some((secs, ms)) => format!("{}.{ms} UTC", format_utc(secs)),
        None => secs_msec.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `max` bytes per call, as a pipe may.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.max);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.max - n);
                self.got.extend_from_slice(&buf[..take]);
                n += take;
                if n == self.max {
                    break;
                }
            }
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn slices_are_written_whole_and_in_order_however_little_each_write_takes() {
        let parts: [&[u8]; 5] = [b"type=A\n", b"", b"type=B msg\n", b"x", b"\n"];
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        for max in 1..8 {
            let mut out = Trickle {
                got: Vec::new(),
                max,
            };
            write_all_slices(&mut out, &slices).unwrap();
            assert_eq!(out.got, parts.concat());
        }
        let mut out = Trickle {
            got: Vec::new(),
            max: 3,
        };
        write_all_slices(&mut out, &[]).unwrap();
        assert!(out.got.is_empty());
    }
}
