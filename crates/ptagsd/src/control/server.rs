//! The Unix socket: one thread accepts, one thread per connection reads
//! frames, with the kernel's word on who wrote each one, and hands each
//! request to the daemon's thread.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use log::{debug, warn};
use ptags_core::Errno;
use ptags_proto::{limits, write_frame, Failure, Request, RequestFrame, Response, ResponseFrame};

use super::peer::{attest_writers, receive, Connector, Peer, Writer};
use super::{Counters, Refusal};
use crate::config::Config;
use crate::error::Error;
use crate::host::Creds;

/// A request on its way to the daemon's thread, with where to answer.
pub struct Job {
    pub peer: Peer,
    pub request: Request,
    pub reply: SyncSender<Result<Response, Error>>,
    /// It came through the root-only socket: the daemon answers it
    /// before the requests queued from the other.
    pub priority: bool,
}

/// Hands a job to the daemon's thread; false when it has stopped.
pub type Submit = Box<dyn Fn(Job) -> bool + Send + Sync>;

/// Whose share of a quota a caller uses: a user in a PID namespace, so
/// that the roots of two containers (uid 0 both, without capabilities)
/// do not share one, nor a container's root with the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Holder {
    uid: u32,
    pid_ns: u64,
}

/// A resource shared by every caller (request bytes in memory, open
/// connections), limited per holder and in total. Callers with
/// CAP_AUDIT_CONTROL or CAP_SYS_ADMIN may also use a reserve the others
/// cannot touch, and no per-holder limit applies to them: whatever local
/// users do, a runtime or an administrator is still served.
struct Quota {
    held: Mutex<(u64, HashMap<Holder, u64>)>,
    total: u64,
    reserve: u64,
    per_uid: u64,
}

impl Quota {
    /// Takes `n` for `holder`; `privileged` is asked only when the
    /// ordinary limits refuse.
    fn take(&self, holder: Holder, n: u64, privileged: impl FnOnce() -> bool) -> bool {
        let mut held = self.held.lock().expect("the quota lock");
        let (total, by_uid) = &mut *held;
        let mine = by_uid.get(&holder).copied().unwrap_or(0);
        let ordinary = *total + n <= self.total - self.reserve && mine + n <= self.per_uid;
        if !(ordinary || *total + n <= self.total && privileged()) {
            return false;
        }
        *total += n;
        *by_uid.entry(holder).or_default() += n;
        true
    }

    fn give_back(&self, holder: Holder, n: u64) {
        let mut held = self.held.lock().expect("the quota lock");
        let (total, by_uid) = &mut *held;
        *total -= n;
        if let Some(mine) = by_uid.get_mut(&holder) {
            *mine -= n;
            if *mine == 0 {
                by_uid.remove(&holder);
            }
        }
    }
}

/// What a holder has of a quota until this is dropped: the bytes of one
/// request until it is answered, or one connection.
struct Charge<'a> {
    quota: &'a Quota,
    holder: Holder,
    amount: u64,
}

impl Charge<'_> {
    /// Takes `n` more; `privileged` is asked only when the ordinary limits
    /// refuse. Whether it was granted.
    fn more(&mut self, n: u64, privileged: impl FnOnce() -> bool) -> bool {
        let granted = self.quota.take(self.holder, n, privileged);
        if granted {
            self.amount += n;
        }
        granted
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.quota.give_back(self.holder, self.amount);
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("no request within the idle time")]
    Idle,
    #[error("the request was not sent within the request time")]
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
    counters: Arc<Counters>,
    connections: Quota,
    memory: Quota,
    request_timeout: Duration,
    idle_timeout: Duration,
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
        let deadline = Instant::now() + self.shared.request_timeout;
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
        // Asked only when the ordinary limits refuse, and once a frame:
        // only the connector, with its capabilities now under the ceiling,
        // may use the reserve.
        let mut privileged = None;
        let connector = &self.connector;
        let mut is_privileged = |writer: &Writer| {
            *privileged.get_or_insert_with(|| match connector.identify(writer) {
                Ok((pidfd, true)) => Creds::read(pidfd.pid).is_ok_and(|creds| {
                    pidfd.check_alive().is_ok() && creds.capped(&connector.ceiling).privileged()
                }),
                _ => false,
            })
        };
        let mut charge = Charge {
            quota: &self.shared.memory,
            holder: Holder {
                uid: writer.uid,
                pid_ns: self.connector.pid_ns,
            },
            amount: 0,
        };
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
pub fn start(config: &Config, counters: Arc<Counters>, submit: Submit) -> Result<()> {
    let listener = listen(&config.socket, config.socket_mode())?;
    let privileged = listen(&limits::privileged_socket(&config.socket), 0o600)?;
    let l = &config.limits;
    let quota = |total, reserve, per_uid| Quota {
        held: Mutex::new((0, HashMap::new())),
        total,
        reserve,
        per_uid,
    };
    let shared = Arc::new(Shared {
        submit,
        counters,
        connections: quota(
            u64::from(l.max_connections),
            u64::from(l.privileged_connections),
            u64::from(l.max_connections_per_uid),
        ),
        memory: quota(
            l.max_inflight_bytes,
            l.privileged_reserve_bytes,
            l.max_inflight_bytes_per_uid,
        ),
        request_timeout: Duration::from_secs(l.request_timeout_secs),
        idle_timeout: Duration::from_millis(l.idle_timeout_ms),
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
    let connector = match Connector::of(&stream) {
        Ok(c) => c,
        Err(e) => return refuse(format!("cannot identify the caller: {e}")),
    };
    let holder = Holder {
        uid: connector.uid,
        pid_ns: connector.pid_ns,
    };
    if !shared
        .connections
        .take(holder, 1, || connector.ceiling.privileged())
    {
        shared.counters.refused(connector.uid, Refusal::Connection);
        return refuse(format!(
            "too many connections (of uid {} in its PID namespace, or in all); try again",
            connector.uid
        ));
    }
    let conn = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("conn".into())
        .spawn(move || {
            let slot = Charge {
                quota: &conn.connections,
                holder,
                amount: 1,
            };
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
        .set_write_timeout(Some(shared.request_timeout))
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
        let result = match RequestFrame::decode(&body) {
            Ok(request) => {
                drop(body);
                match conn.connector.identify(&writer) {
                    Ok((pidfd, connector_wrote)) => {
                        let peer = Peer {
                            writer: pidfd,
                            ceiling: conn.connector.ceiling,
                            connector_wrote,
                        };
                        ask(shared, peer, request, priority)
                    }
                    Err(gone) => Err(gone.into()),
                }
            }
            Err(failure) => {
                shared
                    .counters
                    .refused(conn.connector.uid, Refusal::Malformed);
                Err(failure)
            }
        };
        drop(charge);
        if write_frame(&mut &conn.stream, &ResponseFrame::encode(&result)).is_err() {
            return;
        }
    }
}

fn ask(shared: &Shared, peer: Peer, request: Request, priority: bool) -> Result<Response, Failure> {
    let (reply, answer) = sync_channel(1);
    let job = Job {
        peer,
        request,
        reply,
        priority,
    };
    let stopped = || Failure::new(Errno::Eagain, "the daemon is stopping");
    if !(shared.submit)(job) {
        return Err(stopped());
    }
    // The daemon's typed error becomes the wire's here, and only here.
    answer.recv().map_err(|_| stopped())?.map_err(Failure::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> Holder {
        Holder { uid, pid_ns: 1 }
    }

    fn quota() -> Quota {
        Quota {
            held: Mutex::new((0, HashMap::new())),
            total: 100,
            reserve: 20,
            per_uid: 50,
        }
    }

    #[test]
    fn a_user_cannot_take_more_than_its_share_and_the_reserve_is_kept() {
        let b = quota();
        assert!(b.take(user(1000), 50, || false));
        assert!(!b.take(user(1000), 1, || false), "per-uid limit");
        assert!(b.take(user(1001), 30, || false));
        assert!(!b.take(user(1002), 1, || false), "only the reserve is left");
        assert!(
            b.take(user(0), 20, || true),
            "a privileged caller uses the reserve"
        );
        assert!(!b.take(user(0), 1, || true), "the total holds for everyone");
        b.give_back(user(1000), 50);
        assert!(b.take(user(1002), 30, || false));
        assert!(
            !b.take(user(1002), 1, || false),
            "the reserve is in use, not lent"
        );
    }

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

    #[test]
    fn privilege_is_asked_only_when_needed() {
        let b = quota();
        assert!(b.take(user(5), 10, || panic!("not needed")));
    }
}
