//! A connection to ptagsd.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use ptags_proto::{
    limits, read_frame, write_frame, Failure, FrameError, Request, RequestFrame, Response,
    ResponseFrame,
};

/// How long a connection may sit unused before a request opens a new
/// one: the daemon closes connections that send nothing for its idle
/// time (`limits.idle_timeout_ms`, a second by default), and a command
/// may spend longer than that on its own work (reading a write typed on
/// standard input, say).
const REUSE_WITHIN: Duration = Duration::from_millis(500);

pub struct Client {
    socket: PathBuf,
    stream: UnixStream,
    used: Instant,
}

/// Connects to the daemon: through the root-only twin of `socket` when
/// this process may (its queue no unprivileged user can fill), else
/// through `socket`.
fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    UnixStream::connect(limits::privileged_socket(socket)).or_else(|_| UnixStream::connect(socket))
}

fn open(socket: &Path) -> Result<UnixStream> {
    connect(socket).with_context(|| unreachable(socket))
}

fn unreachable(socket: &Path) -> String {
    format!(
        "cannot reach ptagsd at {} (is it running? --socket or PTAGS_SOCKET name another socket)",
        socket.display()
    )
}

/// Whether a failed connect looks like a daemon restarting: its socket
/// gone for a moment, or not yet accepting.
fn restarting(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client> {
        Client::connect_by(socket, Instant::now())
    }

    /// Connects, waiting until `deadline` for a daemon that is restarting
    /// (its socket missing or refusing connections), trying again at
    /// growing intervals.
    pub fn connect_by(socket: &Path, deadline: Instant) -> Result<Client> {
        let mut pause = Duration::from_millis(20);
        loop {
            match connect(socket) {
                Err(e) if restarting(&e) && Instant::now() + pause < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                result => {
                    return Ok(Client {
                        socket: socket.to_owned(),
                        stream: result.with_context(|| unreachable(socket))?,
                        used: Instant::now(),
                    })
                }
            }
        }
    }

    /// Sends one request. The outer error is a broken exchange; the inner
    /// one is the daemon's refusal. A connection the daemon has closed as
    /// idle before reading the request (it says so with ECONNRESET or a
    /// broken pipe) is opened again, and the request sent once more: it
    /// was never read, so it was never applied.
    pub fn request(&mut self, req: Request) -> Result<Result<Response, Failure>> {
        if self.used.elapsed() > REUSE_WITHIN {
            self.stream = open(&self.socket)?;
        }
        let frame = RequestFrame::new(req).encode();
        let answer = match self.exchange(&frame) {
            Err(e) if never_read(&e) => {
                self.stream = open(&self.socket)?;
                self.exchange(&frame)
            }
            other => other,
        };
        self.used = Instant::now();
        let body = answer.context("reading ptagsd's answer")?;
        ResponseFrame::decode(&body).map_err(|e| anyhow!("ptagsd answered oddly: {e}"))
    }

    /// The connection itself, for a stream of answers (`audit follow`).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    fn exchange(&mut self, frame: &[u8]) -> Result<Vec<u8>, FrameError> {
        write_frame(&mut self.stream, frame)?;
        read_frame(&mut self.stream, limits::MAX_RESPONSE, |_| Ok(())).map(|(body, ())| body)
    }
}

/// Whether the daemon closed the connection with the request unread.
fn never_read(e: &FrameError) -> bool {
    matches!(e, FrameError::Io(io) if matches!(io.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe))
}
