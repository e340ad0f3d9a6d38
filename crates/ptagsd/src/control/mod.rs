//! The control path's front: the Unix socket ([`server`]), who wrote each
//! request ([`peer`]), and the limits no local user may exhaust. Requests
//! go one way, to the daemon's thread (`crate::daemon`), which alone
//! changes the kernel's state; answers come back on the same connection.

pub mod files;
pub mod peer;
mod quota;
pub mod server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters kept by the connection threads, shown in `ptags status`.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub requests_malformed: AtomicU64,
    /// Connections refused for a user's or the total limit.
    pub connections_refused: AtomicU64,
    /// Requests refused for the memory they would hold (a user's share
    /// or the total in flight).
    pub requests_busy: AtomicU64,
    /// Connections cut off for sending a request too slowly.
    pub connections_slow: AtomicU64,
    /// Changes refused for their user's rate.
    pub requests_limited: AtomicU64,
    /// The same refusals per user (real uid), since the daemon last
    /// recorded them (`PTAGS_REFUSED`, once a second at most).
    refused: Mutex<BTreeMap<u32, Refused>>,
}

/// What the socket refused one user.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub connections: u64,
    pub busy: u64,
    pub slow: u64,
    pub malformed: u64,
    pub limited: u64,
}

/// Why the socket refused a user something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A connection over the user's (or the total) limit.
    Connection,
    /// A request over the memory the user may hold.
    Busy,
    /// A request sent too slowly.
    Slow,
    /// A frame that is not a request.
    Malformed,
    /// A change over the user's rate.
    Rate,
}

impl Counters {
    /// Counts a refusal, in total and for `uid`.
    pub fn refused(&self, uid: u32, why: Refusal) {
        let total = match why {
            Refusal::Connection => &self.connections_refused,
            Refusal::Busy => &self.requests_busy,
            Refusal::Slow => &self.connections_slow,
            Refusal::Malformed => &self.requests_malformed,
            Refusal::Rate => &self.requests_limited,
        };
        total.fetch_add(1, Ordering::Relaxed);
        let mut by_uid = self.refused.lock().expect("the refusal counts");
        // A flood of distinct uids is bounded by the uids a machine has;
        // past that many the counts go to one entry, uid 4294967295.
        let uid = if by_uid.len() >= 4096 && !by_uid.contains_key(&uid) {
            u32::MAX
        } else {
            uid
        };
        let r = by_uid.entry(uid).or_default();
        match why {
            Refusal::Connection => r.connections += 1,
            Refusal::Busy => r.busy += 1,
            Refusal::Slow => r.slow += 1,
            Refusal::Malformed => r.malformed += 1,
            Refusal::Rate => r.limited += 1,
        }
    }

    /// The refusals per uid since the last call.
    pub fn take_refused(&self) -> BTreeMap<u32, Refused> {
        std::mem::take(&mut *self.refused.lock().expect("the refusal counts"))
    }
}
