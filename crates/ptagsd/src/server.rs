//! The Unix socket: one thread accepts, one thread per connection reads
//! and validates frames and hands each request to the daemon's thread.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use log::{debug, warn};
use ptags_core::Errno;
use ptags_proto::{
    limits, read_frame, write_frame, Failure, FrameError, Request, RequestFrame, Response,
    ResponseFrame,
};

use crate::audit::netlink::KernelMessage;
use crate::config::Config;
use crate::daemon::Counters;
use crate::peer::peer_of;
use crate::process::Pidfd;

/// A request on its way to the daemon's thread, with where to answer.
pub struct Job {
    pub peer: Arc<Pidfd>,
    pub request: Request,
    pub reply: SyncSender<Result<Response, Failure>>,
}

/// Limits shared by the connection threads.
struct Shared {
    jobs: SyncSender<Input>,
    counters: Arc<Counters>,
    connections: AtomicUsize,
    max_connections: usize,
    inflight: AtomicU64,
    max_inflight: u64,
    timeout: Duration,
}

/// Bytes of one request, counted against the in-flight budget until the
/// request is answered.
struct Inflight<'a> {
    shared: &'a Shared,
    len: u64,
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.shared.inflight.fetch_sub(self.len, Ordering::AcqRel);
    }
}

impl Shared {
    fn reserve(&self, len: usize) -> Result<Inflight<'_>, FrameError> {
        let len = len as u64;
        let before = self.inflight.fetch_add(len, Ordering::AcqRel);
        let guard = Inflight { shared: self, len };
        if before + len > self.max_inflight {
            return Err(FrameError::Busy);
        }
        Ok(guard)
    }
}

/// What reaches the daemon's thread: requests from the socket, records
/// from the kernel's audit.
pub enum Input {
    Request(Job),
    Kernel(Vec<KernelMessage>),
    /// The netlink socket overflowed: records were lost before we read them.
    KernelOverflow,
}

/// Binds the socket (replacing a stale one, refusing if a daemon answers
/// on it) and starts accepting. Requests are sent to `inputs`.
pub fn start(config: &Config, counters: Arc<Counters>, inputs: SyncSender<Input>) -> Result<()> {
    let path = &config.socket;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
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
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode()))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    let shared = Arc::new(Shared {
        jobs: inputs,
        counters,
        connections: AtomicUsize::new(0),
        max_connections: config.limits.max_connections as usize,
        inflight: AtomicU64::new(0),
        max_inflight: config.limits.max_inflight_bytes,
        timeout: Duration::from_secs(config.limits.request_timeout_secs),
    });
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept(listener, shared))?;
    Ok(())
}

pub fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != ErrorKind::NotFound {
            warn!("removing {}: {e}", path.display());
        }
    }
}

fn accept(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("accepting a connection: {e}");
                continue;
            }
        };
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= shared.max_connections {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            let busy = Failure::new(Errno::Eagain, "too many connections; try again");
            let _ = write_frame(&mut stream, &ResponseFrame::encode(&Err(busy)));
            continue;
        }
        let conn = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                serve(&mut stream, &conn);
                conn.connections.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            warn!("starting a connection thread: {e}");
        }
    }
}

/// Serves one connection until the peer closes it or sends something
/// that ends it (a frame that cannot be read to its end).
fn serve(stream: &mut UnixStream, shared: &Shared) {
    let peer = match peer_of(stream) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            let failure = Failure::new(Errno::Eproto, format!("cannot identify the caller: {e}"));
            let _ = write_frame(stream, &ResponseFrame::encode(&Err(failure)));
            return;
        }
    };
    if stream.set_read_timeout(Some(shared.timeout)).is_err() {
        return;
    }
    loop {
        let (body, inflight) =
            match read_frame(stream, limits::MAX_REQUEST, |len| shared.reserve(len)) {
                Ok(frame) => frame,
                Err(FrameError::Closed) => return,
                Err(e) => {
                    // The rest of the stream cannot be trusted to start at
                    // a frame: answer and close.
                    debug!("pid {}: {e}", peer.pid);
                    let errno = match e {
                        FrameError::TooLarge { .. } => Errno::E2big,
                        FrameError::Busy => Errno::Eagain,
                        _ => Errno::Eproto,
                    };
                    shared
                        .counters
                        .requests_malformed
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = write_frame(
                        stream,
                        &ResponseFrame::encode(&Err(Failure::new(errno, e.to_string()))),
                    );
                    return;
                }
            };
        let result = match RequestFrame::decode(&body) {
            Ok(request) => {
                drop(body);
                ask(shared, &peer, request)
            }
            Err(failure) => {
                shared
                    .counters
                    .requests_malformed
                    .fetch_add(1, Ordering::Relaxed);
                Err(failure)
            }
        };
        drop(inflight);
        if write_frame(stream, &ResponseFrame::encode(&result)).is_err() {
            return;
        }
    }
}

fn ask(shared: &Shared, peer: &Arc<Pidfd>, request: Request) -> Result<Response, Failure> {
    let (reply, answer) = sync_channel(1);
    let job = Job {
        peer: Arc::clone(peer),
        request,
        reply,
    };
    let stopped = || Failure::new(Errno::Eagain, "the daemon is stopping");
    shared
        .jobs
        .send(Input::Request(job))
        .map_err(|_| stopped())?;
    answer.recv().map_err(|_| stopped())?
}
