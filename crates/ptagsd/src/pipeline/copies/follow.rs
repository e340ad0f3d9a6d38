//! `ptags audit follow`: a connection that receives a container's copy
//! as it is written. Its thread replays the copy's log from the point
//! asked, then sends what the copy's queue gives it; it ends when the
//! copy ends (its container dropped, its policy cleared) or the follower
//! goes away. It never holds the pipeline: a follower that stops
//! reading fills its own queue, and is told what it missed.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ptags_audit::chain::record_text;
use ptags_audit::{write_text, Stamp};
use ptags_core::Errno;
use ptags_proto::{write_frame, Failure, Response, ResponseFrame};

use super::queue::{Batch, Queue};

/// Where a follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// Now.
    Now,
    /// After the last record of the event with this serial, in the log.
    AfterSerial(u64),
    /// At the records of this time or later (ms since the epoch), in the log.
    SinceMs(u64),
}

/// A follower's end, handed from the daemon's thread to its connection.
pub struct FollowStream {
    pub contid: u64,
    pub queue: Arc<Queue>,
    /// The copy's log, for a start in the past.
    pub log_dir: Option<PathBuf>,
    pub from: From,
    /// When it started following (ms since the epoch): what the replay
    /// sends from then on may come again from the queue.
    pub started_ms: u64,
}

/// Lines per frame at most.
const LINES_PER_FRAME: usize = 1024;

/// Sends the stream until it ends; the queue is closed on the way out.
pub fn serve(stream: &UnixStream, follow: FollowStream) {
    let queue = Arc::clone(&follow.queue);
    if let Err(Some(f)) = run(stream, follow) {
        let _ = write_frame(&mut &*stream, &ResponseFrame::encode(&Err(f)));
    }
    queue.close();
}

/// `Err(None)`: the follower went away.
fn run(stream: &UnixStream, follow: FollowStream) -> Result<(), Option<Failure>> {
    let replayed = match (follow.from, &follow.log_dir) {
        (From::Now, _) => HashSet::new(),
        (_, None) => {
            return Err(Some(Failure::new(
                Errno::Enoent,
                format!(
                    "container {}'s copy has no log to start in the past from (its policy says `log off`)",
                    follow.contid
                ),
            )))
        }
        (from, Some(dir)) => replay(stream, dir, from, follow.started_ms)?,
    };
    loop {
        let Some(batch) = follow.queue.take(Duration::from_secs(1)) else {
            return Ok(());
        };
        if batch.events.is_empty() && batch.dropped == 0 {
            if peer_closed(stream) {
                return Err(None);
            }
            continue;
        }
        send(stream, live_lines(&batch, &replayed))?;
    }
}

/// The lines of a batch, after a `PTAGS_LOST` line for what the queue
/// could not take; events the replay sent are skipped.
fn live_lines(batch: &Batch, replayed: &HashSet<u64>) -> Vec<String> {
    let lost = batch.lost_record("follower");
    let records = lost
        .iter()
        .chain(batch.events.iter().flat_map(|e| &e.records));
    records
        .filter(|r| !r.serial.is_some_and(|s| replayed.contains(&s)))
        .map(|r| {
            let stamp = Stamp {
                secs: r.time.as_secs(),
                millis: r.time.subsec_millis() as u16,
                serial: r.serial.unwrap_or(0),
            };
            let mut line = String::new();
            write_text(&mut line, &r.kind, &stamp, &r.body);
            line
        })
        .collect()
}

fn send(stream: &UnixStream, lines: Vec<String>) -> Result<(), Option<Failure>> {
    for chunk in lines.chunks(LINES_PER_FRAME) {
        let frame = ResponseFrame::encode(&Ok(Response::Records {
            lines: chunk.to_vec(),
        }));
        write_frame(&mut &*stream, &frame).map_err(|_| None)?;
    }
    Ok(())
}

/// Whether the follower closed its end (nothing it may send is read).
fn peer_closed(stream: &UnixStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: a valid socket and a one-byte buffer; MSG_PEEK leaves it.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

/// The files of a log, oldest first.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("audit.log.")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(dir.join("audit.log"));
    files
}

/// Sends the log's records from the point asked; returns the serials it
/// sent of records since the follow started, which the queue may hold
/// too.
fn replay(
    stream: &UnixStream,
    dir: &Path,
    from: From,
    started_ms: u64,
) -> Result<HashSet<u64>, Option<Failure>> {
    let mut sent_recent = HashSet::new();
    let mut started = matches!(from, From::SinceMs(_));
    let mut lines = Vec::new();
    for file in log_files(dir) {
        let Ok(f) = fs::File::open(&file) else {
            continue;
        };
        for line in BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            let Some(text) = record_text(&line) else {
                continue;
            };
            let Some(stamp) = stamp_of(&text) else {
                continue;
            };
            match from {
                From::AfterSerial(s) if stamp.serial == s => {
                    started = true;
                    lines.clear();
                    continue;
                }
                From::SinceMs(ms) if stamp.epoch_millis() < ms => continue,
                _ => {}
            }
            if !started {
                continue;
            }
            if stamp.epoch_millis() + 2000 >= started_ms {
                sent_recent.insert(stamp.serial);
            }
            lines.push(text.into_owned());
            if lines.len() >= LINES_PER_FRAME {
                send(stream, std::mem::take(&mut lines))?;
            }
        }
    }
    if let From::AfterSerial(s) = from {
        if !started {
            return Err(Some(Failure::new(
                Errno::Enoent,
                format!("serial {s} is not in the copy's log"),
            )));
        }
    }
    send(stream, lines)?;
    Ok(sent_recent)
}

/// The stamp of a text record (`type=X msg=audit(T.ms:SERIAL): ...`).
fn stamp_of(text: &str) -> Option<Stamp> {
    let start = text.find("msg=audit(")? + "msg=audit(".len();
    let end = start + text[start..].find(')')?;
    Stamp::parse_inner(&text[start..end])
}
