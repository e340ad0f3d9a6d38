//! The Unix socket: one thread accepts, one thread per connection reads
//! frames, with the kernel's word on who wrote each one, and hands each
//! request to the daemon's thread.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use log::{debug, warn};
use ptags_core::Errno;
use ptags_proto::{limits, write_frame, Failure, Request, RequestFrame, Response, ResponseFrame};

use super::peer::{attest_writers, receive, Connector, Peer, Writer};
use super::quota::{ChangeRate, Charge, Holder, Quota};
use super::{Counters, Refusal};
use crate::config::Config;
use crate::error::Error;
use crate::pipeline::copies::follow::{self, FollowStream};
use ptags_bpf::FactsReader;

/// The daemon's answer to a job, and the follower it started, if any
/// (the connection then streams its records).
pub type Answer = (Result<Response, Error>, Option<FollowStream>);

/// A request on its way to the daemon's thread, with where to answer.
pub struct Job {
    pub peer: Peer,
    pub request: Request,
    pub reply: SyncSender<Answer>,
    /// It came through the root-only socket: the daemon answers it
    /// before the requests queued from the other.
    pub priority: bool,
}

/// Hands a job to the daemon's thread; false when it has stopped.
pub type Submit = Box<dyn Fn(Job) -> bool + Send + Sync>;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("no request within the idle time")]
    Idle,
    #[error("the request was not sent within the frame time")]
    Slow,
    #[error("the frame ended after {got} of {len} bytes")]
    Truncated { got: usize, len: usize },
    #[error("the frame announces {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the daemon holds too much request data of this user now; try again")]
    Busy,
    #[error("one frame's bytes were written by two processes")]
    TwoWriters,
    #[error("the kernel named no writer for the data")]
    NoWriter,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ReadError {
    fn errno(&self) -> Errno {
        match self {
            ReadError::TooLarge { .. } => Errno::E2big,
            ReadError::Busy => Errno::Eagain,
            _ => Errno::Eproto,
        }
    }
}

/// Limits shared by the connection threads.
struct Shared {
    submit: Submit,
    facts: FactsReader,
    counters: Arc<Counters>,
    connections: Quota,
    memory: Quota,
    changes: ChangeRate,
    answer_timeout: Duration,
    idle_timeout: Duration,
    frame_timeout: Duration,
}

/// One connection and the frame being read from it.
struct Connection<'a> {
    stream: UnixStream,
    shared: &'a Shared,
    connector: Connector,
    /// Bytes read past the last request, and their writer.
    leftover: Option<(Vec<u8>, Writer)>,
    _slot: Charge<'a>,
}

/// A request frame read whole, its writer and the memory it holds.
struct Incoming<'a> {
    body: Vec<u8>,
    writer: Writer,
    charge: Charge<'a>,
}

/// Bytes the body grows by at least, per step, while it arrives.
const GROWTH: usize = 64 << 10;
/// Bytes asked for by the first read of a request: its header and, for
/// most requests, all of it.
const FIRST_READ: usize = 16 << 10;

impl<'a> Connection<'a> {
    /// Receives into `buf` before `deadline`, checking that the writer is
    /// `writer` (the frame's so far) when there is one.
    fn receive_by(
        &self,
        buf: &mut [std::mem::MaybeUninit<u8>],
        deadline: Instant,
        late: fn() -> ReadError,
    ) -> Result<(usize, Writer), ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        self.stream.set_read_timeout(Some(left))?;
        match receive(&self.stream, buf) {
            Ok(got) if got.len == 0 => Err(ReadError::Closed),
            Ok(got) => Ok((got.len, got.writer.ok_or(ReadError::NoWriter)?)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(late())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads one frame. Memory is charged to the writer's uid before it
    /// is allocated; the writer must be the same process for every byte.
    /// A small request comes whole with its header in one read; bytes of
    /// the next one read with it (a client that does not wait for its
    /// answers) wait for the next call.
    fn read_frame(&mut self) -> Result<Incoming<'a>, ReadError> {
        let idle = Instant::now() + self.shared.idle_timeout;
        let (mut head, writer) = match self.leftover.take() {
            Some(left) => left,
            None => {
                let mut first = Vec::with_capacity(FIRST_READ);
                let (n, w) =
                    self.receive_by(first.spare_capacity_mut(), idle, || ReadError::Idle)?;
                // SAFETY: the kernel initialised the first n bytes.
                unsafe { first.set_len(n) };
                (first, w)
            }
        };
        // A frame is whole within the frame time of its first byte: a
        // sender of a byte at a time is cut off as an idle one is.
        let deadline = Instant::now() + self.shared.frame_timeout;
        while head.len() < 4 {
            let got = head.len();
            let (n, w) = self
                .receive_by(&mut head.spare_capacity_mut()[..4 - got], deadline, || {
                    ReadError::Slow
                })
                .map_err(|e| truncated(e, got, 4))?;
            if w != writer {
                return Err(ReadError::TwoWriters);
            }
            // SAFETY: the kernel initialised n more bytes.
            unsafe { head.set_len(got + n) };
        }
        let len = u32::from_be_bytes(head[..4].try_into().expect("four bytes")) as usize;
        if len > limits::MAX_REQUEST {
            return Err(ReadError::TooLarge {
                len,
                max: limits::MAX_REQUEST,
            });
        }
        // Asked only when the ordinary limits refuse, and once a frame.
        let mut privileged = None;
        let mut is_privileged =
            |writer: &Writer| *privileged.get_or_insert_with(|| self.connector.privileged(writer));
        let mut charge = Charge::none(
            &self.shared.memory,
            Holder::of(writer.uid, self.connector.pid_ns),
        );
        // What of the body came with the header.
        let first = (head.len() - 4).min(len);
        if !charge.more(first as u64, || is_privileged(&writer)) {
            return Err(ReadError::Busy);
        }
        let mut body: Vec<u8> = Vec::new();
        body.try_reserve_exact(first)
            .map_err(|_| std::io::Error::from(ErrorKind::OutOfMemory))?;
        body.extend_from_slice(&head[4..4 + first]);
        if head.len() > 4 + len {
            self.leftover = Some((head[4 + len..].to_vec(), writer));
        }
        drop(head);
        while body.len() < len {
            if body.len() == body.capacity() {
                let grow = (len - body.capacity()).min(body.capacity().max(GROWTH));
                if !charge.more(grow as u64, || is_privileged(&writer)) {
                    return Err(ReadError::Busy);
                }
                body.try_reserve_exact(grow)
                    .map_err(|_| std::io::Error::from(ErrorKind::OutOfMemory))?;
            }
            let want = len - body.len();
            let spare = body.spare_capacity_mut();
            let room = spare.len().min(want);
            let (n, w) = self
                .receive_by(&mut spare[..room], deadline, || ReadError::Slow)
                .map_err(|e| truncated(e, body.len(), len))?;
            if w != writer {
                return Err(ReadError::TwoWriters);
            }
            // SAFETY: the kernel initialised n more bytes after len.
            unsafe { body.set_len(body.len() + n) };
        }
        // The decoded request is about as large as its frame.
        if !charge.more(len as u64, || is_privileged(&writer)) {
            return Err(ReadError::Busy);
        }
        Ok(Incoming {
            body,
            writer,
            charge,
        })
    }
}

impl Connection<'_> {
    /// Hands a request to the daemon and waits for its answer, unless it
    /// asks for a change over its user's rate.
    fn submit(
        &self,
        request: Request,
        writer: Writer,
        priority: bool,
    ) -> (Result<Response, Failure>, Option<FollowStream>) {
        let holder = Holder::of(writer.uid, self.connector.pid_ns);
        if request.changes()
            && !self.shared.changes.allow(holder, Instant::now())
            && !self.connector.privileged(&writer)
        {
            self.shared.counters.refused(writer.uid, Refusal::Rate);
            let refused = Failure::new(
                Errno::Eagain,
                format!(
                    "uid {} asked for more changes than limits.changes_per_sec_per_uid allows; try again",
                    writer.uid
                ),
            );
            return (Err(refused), None);
        }
        let (pidfd, connector_wrote) = match self.connector.identify(&writer) {
            Ok(known) => known,
            Err(e) => return (Err(Failure::from(e)), None),
        };
        let peer = Peer {
            writer: pidfd,
            ceiling: self.connector.ceiling,
            connector_wrote,
        };
        ask(self.shared, peer, request, priority)
    }
}

/// A frame that stopped in the middle is truncated, not closed.
fn truncated(e: ReadError, got: usize, len: usize) -> ReadError {
    match e {
        ReadError::Closed => ReadError::Truncated { got, len },
        e => e,
    }
}

/// Refuses a directory for the sockets that a user other than root could
/// write to: a user could put a socket of its own where the root-only one
/// goes (while the daemon is down), and be taken for the daemon.
fn check_socket_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if meta.uid() != 0 && meta.uid() != euid() {
        bail!(
            "{} belongs to uid {}: the socket's directory must be the daemon's (root's)",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} is writable by other users (mode {:o}): choose a directory only root may write to for the socket",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// The daemon's effective uid.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Binds a socket of mode `mode` (replacing a stale one, refusing if a
/// daemon answers on it).
fn listen(path: &Path, mode: u32) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        check_socket_dir(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another daemon is serving {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    attest_writers(&listener).context("asking the kernel to name the writer of each request")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Binds the socket, and its root-only twin
/// (`limits::privileged_socket`: a queue of connections no unprivileged
/// user can fill, for runtimes and the hook), and starts accepting on
/// both. Each request is handed to `submit`.
pub fn start(
    config: &Config,
    counters: Arc<Counters>,
    facts: FactsReader,
    submit: Submit,
) -> Result<()> {
    let listener = listen(&config.socket, config.socket_mode())?;
    let privileged = listen(&limits::privileged_socket(&config.socket), 0o600)?;
    let l = &config.limits;
    let shared = Arc::new(Shared {
        submit,
        facts,
        counters,
        connections: Quota::new(
            u64::from(l.max_connections),
            u64::from(l.privileged_connections),
            u64::from(l.max_connections_per_uid),
        ),
        memory: Quota::new(
            l.max_inflight_bytes,
            l.privileged_reserve_bytes,
            l.max_inflight_bytes_per_uid,
        ),
        changes: ChangeRate::new(l.changes_per_sec_per_uid, l.changes_burst_per_uid),
        answer_timeout: Duration::from_secs(l.request_timeout_secs),
        idle_timeout: Duration::from_millis(l.idle_timeout_ms),
        frame_timeout: Duration::from_millis(l.frame_timeout_ms),
    });
    let for_privileged = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept(listener, shared, false))?;
    std::thread::Builder::new()
        .name("accept-root".into())
        .spawn(move || accept(privileged, for_privileged, true))?;
    Ok(())
}

/// Removes the socket and its root-only twin.
pub fn remove_socket(path: &Path) {
    for path in [path.to_owned(), limits::privileged_socket(path)] {
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != ErrorKind::NotFound {
                warn!("removing {}: {e}", path.display());
            }
        }
    }
}

fn accept(listener: UnixListener, shared: Arc<Shared>, priority: bool) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => admit(stream, &shared, priority),
            Err(e) => warn!("accepting a connection: {e}"),
        }
    }
}

/// Gives a new connection a thread of its own if its user has a slot
/// left; answers EAGAIN otherwise.
fn admit(stream: UnixStream, shared: &Arc<Shared>, priority: bool) {
    let refuse = |message: String| {
        let _ = write_frame(
            &mut &stream,
            &ResponseFrame::encode(&Err(Failure::new(Errno::Eagain, message))),
        );
    };
    let connector = match Connector::of(&stream, &shared.facts) {
        Ok(c) => c,
        Err(e) => return refuse(format!("cannot identify the caller: {e}")),
    };
    let holder = Holder::of(connector.uid, connector.pid_ns);
    if !shared
        .connections
        .take(holder, 1, || connector.ceiling.privileged())
    {
        shared.counters.refused(connector.uid, Refusal::Connection);
        return refuse(format!(
            "too many connections (of uid {}, or in all); try again",
            connector.uid
        ));
    }
    let conn = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("conn".into())
        .spawn(move || {
            let slot = Charge::taken(&conn.connections, holder, 1);
            serve(stream, &conn, connector, slot, priority);
        });
    if let Err(e) = spawned {
        shared.connections.give_back(holder, 1);
        warn!("starting a connection thread: {e}");
    }
}

/// Serves one connection until the peer closes it, stays idle, or sends
/// something that ends it (a frame that cannot be read to its end).
fn serve<'a>(
    stream: UnixStream,
    shared: &'a Shared,
    connector: Connector,
    slot: Charge<'a>,
    priority: bool,
) {
    // A client that sends requests and never reads the answers must not
    // hold its thread (and its slot) forever.
    if stream
        .set_write_timeout(Some(shared.answer_timeout))
        .is_err()
    {
        return;
    }
    let mut conn = Connection {
        stream,
        shared,
        connector,
        leftover: None,
        _slot: slot,
    };
    loop {
        let incoming = match conn.read_frame() {
            Ok(frame) => frame,
            Err(ReadError::Closed | ReadError::Idle) => return,
            Err(e) => {
                // The rest of the stream cannot be trusted to start at
                // a frame: answer and close.
                debug!("a connection: {e}");
                let why = match e {
                    ReadError::Busy => Refusal::Busy,
                    ReadError::Slow => Refusal::Slow,
                    _ => Refusal::Malformed,
                };
                shared.counters.refused(conn.connector.uid, why);
                let failure = Failure::new(e.errno(), e.to_string());
                let _ = write_frame(&mut &conn.stream, &ResponseFrame::encode(&Err(failure)));
                return;
            }
        };
        let Incoming {
            body,
            writer,
            charge,
        } = incoming;
        let (result, follower) = match RequestFrame::decode(&body) {
            Ok(request) => {
                drop(body);
                conn.submit(request, writer, priority)
            }
            Err(failure) => {
                shared
                    .counters
                    .refused(conn.connector.uid, Refusal::Malformed);
                (Err(failure), None)
            }
        };
        drop(charge);
        if write_frame(&mut &conn.stream, &ResponseFrame::encode(&result)).is_err() {
            if let Some(f) = follower {
                f.queue.close();
            }
            return;
        }
        // A follower's connection carries its records from now on, and
        // ends with them.
        if let Some(f) = follower {
            follow::serve(&conn.stream, f);
            return;
        }
    }
}

fn ask(
    shared: &Shared,
    peer: Peer,
    request: Request,
    priority: bool,
) -> (Result<Response, Failure>, Option<FollowStream>) {
    let (reply, answer) = sync_channel(1);
    let job = Job {
        peer,
        request,
        reply,
        priority,
    };
    let stopped = || Failure::new(Errno::Eagain, "the daemon is stopping");
    if !(shared.submit)(job) {
        return (Err(stopped()), None);
    }
    // The daemon's typed error becomes the wire's here, and only here.
    match answer.recv() {
        Ok((result, follower)) => (result.map_err(Failure::from), follower),
        Err(_) => (Err(stopped()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_directory_others_may_write_to_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, ok) in [
            (0o755, true),
            (0o700, true),
            (0o777, false),
            (0o1777, false),
            (0o775, false),
        ] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(check_socket_dir(dir.path()).is_ok(), ok, "mode {mode:o}");
        }
    }
}
