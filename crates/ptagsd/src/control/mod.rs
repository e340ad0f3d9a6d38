//! The control path's front: the Unix socket ([`server`]), who wrote each
//! request ([`peer`]), and the limits no local user may exhaust. Requests
//! go one way, to the daemon's thread (`crate::daemon`), which alone
//! changes the kernel's state; answers come back on the same connection.

pub mod peer;
pub mod server;

use std::sync::atomic::AtomicU64;

/// Counters kept by the connection threads, shown in `ptags status`.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub requests_malformed: AtomicU64,
    /// Connections refused for a user's or the total limit.
    pub connections_refused: AtomicU64,
}
