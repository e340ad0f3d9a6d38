//! The error numbers of the reference semantics.
//!
//! Both specs describe failures with Linux errno values, and callers (the
//! daemon, the CLI, scripts) report them by name, so they are kept as a
//! closed enum carrying the Linux number rather than as free-form errors.

use std::fmt;

/// An errno that a ptags operation can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Errno {
    /// Operation not permitted: a permission is missing.
    Eperm,
    /// No such tag (`!` on a missing tag), or no match (`?`).
    Enoent,
    /// Out of memory, or a resource limit of the daemon.
    Enomem,
    /// The target has children or several threads (container ID).
    Ebusy,
    /// The ID is already set and this is not nesting (container ID).
    Eexist,
    /// The target is not a descendant of the caller (container ID).
    Exdev,
    /// Syntax or validity error.
    Einval,
    /// The container-ID registry is full (configured limit).
    Enospc,
    /// The nesting depth limit would be exceeded (configured limit).
    Emlink,
    /// The container ID is in use by a container the caller does not own.
    Enotuniq,
    /// The tag-count limit of a task would be exceeded.
    Ecanceled,
    /// No such process or thread (it exited, or its pid was reused).
    Esrch,
    /// A malformed request (socket protocol).
    Eproto,
    /// A request or answer over the size limit (socket protocol).
    E2big,
    /// The daemon refuses for now (too many connections or too much data
    /// in flight); try again.
    Eagain,
    /// The daemon failed internally (its database, the kernel side).
    Eio,
    /// Not supported here (a device list on a machine without cgroup v2).
    Eopnotsupp,
}

impl Errno {
    /// Every errno, for exhaustive tests and for parsing names.
    pub const ALL: [Errno; 17] = [
        Errno::Eperm,
        Errno::Enoent,
        Errno::Enomem,
        Errno::Ebusy,
        Errno::Eexist,
        Errno::Exdev,
        Errno::Einval,
        Errno::Enospc,
        Errno::Emlink,
        Errno::Enotuniq,
        Errno::Ecanceled,
        Errno::Esrch,
        Errno::Eproto,
        Errno::E2big,
        Errno::Eagain,
        Errno::Eio,
        Errno::Eopnotsupp,
    ];

    /// The Linux (x86_64, generic) errno number.
    pub const fn number(self) -> i32 {
        match self {
            Errno::Eperm => 1,
            Errno::Enoent => 2,
            Errno::Enomem => 12,
            Errno::Ebusy => 16,
            Errno::Eexist => 17,
            Errno::Exdev => 18,
            Errno::Einval => 22,
            Errno::Enospc => 28,
            Errno::Emlink => 31,
            Errno::Enotuniq => 76,
            Errno::Ecanceled => 125,
            Errno::Esrch => 3,
            Errno::Eproto => 71,
            Errno::E2big => 7,
            Errno::Eagain => 11,
            Errno::Eio => 5,
            Errno::Eopnotsupp => 95,
        }
    }

    /// The symbolic name, as `errno(3)` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Eperm => "EPERM",
            Errno::Enoent => "ENOENT",
            Errno::Enomem => "ENOMEM",
            Errno::Ebusy => "EBUSY",
            Errno::Eexist => "EEXIST",
            Errno::Exdev => "EXDEV",
            Errno::Einval => "EINVAL",
            Errno::Enospc => "ENOSPC",
            Errno::Emlink => "EMLINK",
            Errno::Enotuniq => "ENOTUNIQ",
            Errno::Ecanceled => "ECANCELED",
            Errno::Esrch => "ESRCH",
            Errno::Eproto => "EPROTO",
            Errno::E2big => "E2BIG",
            Errno::Eagain => "EAGAIN",
            Errno::Eio => "EIO",
            Errno::Eopnotsupp => "EOPNOTSUPP",
        }
    }

    /// The errno whose Linux number is `number`, if ptags uses it.
    pub fn from_number(number: i32) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.number() == number)
    }

    /// The errno called `name` (`"EPERM"`), if ptags uses it.
    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for e in Errno::ALL {
            assert_eq!(Errno::from_number(e.number()), Some(e));
            assert_eq!(Errno::from_name(e.name()), Some(e));
            assert_eq!(e.to_string(), e.name());
        }
        assert_eq!(Errno::from_number(0), None);
        assert_eq!(Errno::from_name("EWOULDBLOCK"), None);
    }

    #[test]
    fn numbers_match_linux() {
        assert_eq!(Errno::Einval.number(), 22);
        assert_eq!(Errno::Enotuniq.number(), 76);
        assert_eq!(Errno::Ecanceled.number(), 125);
    }
}
