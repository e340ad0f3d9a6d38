//! The ptagsd socket protocol (docs/protocol.md).
//!
//! Every message is one frame: a 4-byte big-endian length, then that many
//! bytes of JSON. A client sends a [`RequestFrame`] and reads one
//! [`ResponseFrame`]; a connection may carry any number of such exchanges.
//! Everything that arrives is validated here before the daemon acts on
//! it; who the caller is never comes from a message (the daemon asks the
//! kernel).

mod frame;
mod message;

pub use frame::{read_frame, write_frame, FrameError};
pub use message::{
    AuditCounters, AuditStatus, ContainerInfo, ContidAnswer, DeviceInfo, Failure, PolicyInfo,
    PsFilter, PsRow, Request, RequestFrame, Response, ResponseFrame, Status, Target,
    MAX_POLICY_TEXT, PROTOCOL_VERSION,
};

/// Size limits of the protocol.
pub mod limits {
    /// The largest request frame the daemon accepts: enough for a write of
    /// the largest tag set (4000 tags with 4000-byte names and
    /// 32700-byte values, JSON-escaped).
    pub const MAX_REQUEST: usize = 160 << 20;
    /// The largest answer a client accepts (a `ps` of a busy machine can
    /// exceed one full tag set).
    pub const MAX_RESPONSE: usize = 1 << 30;
    /// The default socket path.
    pub const DEFAULT_SOCKET: &str = "/run/ptags/ptagsd.sock";

    /// The socket beside `socket` that only root may connect to (mode
    /// 0600): the same protocol, its own queue of connections, which no
    /// unprivileged user can fill. Runtimes and the OCI hook use it.
    pub fn privileged_socket(socket: &std::path::Path) -> std::path::PathBuf {
        let mut path = socket.as_os_str().to_owned();
        path.push(".priv");
        path.into()
    }
}
