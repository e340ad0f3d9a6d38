//! The daemon's error: what went wrong and the errno the reference
//! semantics give it. It becomes the wire's `Failure` once, where an
//! answer leaves the socket (`control::server`).

use std::fmt;

use ptags_core::Errno;
use ptags_proto::Failure;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    errno: Errno,
    message: String,
    /// The line of a write's text that failed.
    line: Option<usize>,
}

impl Error {
    pub fn new(errno: Errno, message: impl Into<String>) -> Error {
        Error {
            errno,
            message: message.into(),
            line: None,
        }
    }

    pub fn at_line(mut self, line: usize) -> Error {
        self.line = Some(line);
        self
    }

    pub fn errno(&self) -> Errno {
        self.errno
    }

    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// A process that does not exist, or no longer.
    pub fn gone(pid: u32) -> Error {
        Error::new(
            Errno::Esrch,
            format!("process {pid} does not exist (or exited)"),
        )
    }

    /// Something the caller did not cause (a database or kernel error).
    pub fn internal(e: impl fmt::Display) -> Error {
        Error::new(Errno::Eio, format!("internal error: {e}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: {}", self.errno.name(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<ptags_bpf::Error> for Error {
    fn from(e: ptags_bpf::Error) -> Error {
        match e {
            ptags_bpf::Error::NoSuchTask(tid) => Error::gone(tid),
            ptags_bpf::Error::NotAlone(tid) => Error::new(
                Errno::Ebusy,
                format!("process {tid} has children or several threads"),
            ),
            e => Error::internal(e),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let failure = Failure::new(e.errno, e.message);
        match e.line {
            Some(line) => failure.at_line(line),
            None => failure,
        }
    }
}
