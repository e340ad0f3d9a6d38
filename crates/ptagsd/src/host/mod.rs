//! Facts about the host: live processes as the kernel tells them
//! (credentials and capabilities through the facts program, namespaces
//! and threads through /proc, their PID namespaces in [`pidns`]), pidfds,
//! and the clocks.
//!
//! A fact read by pid is only trusted together with a check that the pid
//! still names the same task (its start time, or the caller's pidfd), so
//! that pid reuse cannot fool a decision.

pub mod cgroup;
pub mod pidns;

use std::os::fd::{AsRawFd, OwnedFd};

use ptags_bpf::{procfs, FactsReader, PeerCreds, TaskFacts};

use crate::error::Error;
use ptags_audit::Subject;

pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_AUDIT_CONTROL: u32 = 30;
pub const CAP_MAC_ADMIN: u32 = 33;
pub const CAP_AUDIT_READ: u32 = 37;

/// Sends SIGKILL to process `pid`, started at `start` (clock ticks since
/// boot), through a pidfd: a pid reused since it was listed is not hit.
/// Gone already is fine.
pub fn kill(pid: u32, start: u64) {
    let Some(fd) = procfs::pidfd_open(pid, 0) else {
        return;
    };
    // Held by the pidfd now: the start time read names the process the
    // signal goes to.
    if procfs::start_ticks(pid) != Some(start) {
        return;
    }
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// A process held by a pidfd. While [`Pidfd::check_alive`] succeeds,
/// the process has not been reaped, so its pid has not been reused:
/// whatever was read by pid before the check was read about it.
#[derive(Debug)]
pub struct Pidfd {
    pub pid: u32,
    fd: OwnedFd,
}

impl Pidfd {
    pub fn open(pid: u32) -> Result<Pidfd, Error> {
        let fd = procfs::pidfd_open(pid, 0).ok_or_else(|| Error::gone(pid))?;
        Ok(Pidfd::from_fd(pid, fd))
    }

    pub fn from_fd(pid: u32, fd: OwnedFd) -> Pidfd {
        Pidfd { pid, fd }
    }

    pub fn try_clone(&self) -> std::io::Result<Pidfd> {
        Ok(Pidfd {
            pid: self.pid,
            fd: self.fd.try_clone()?,
        })
    }

    pub fn check_alive(&self) -> Result<(), Error> {
        // SAFETY: pidfd_send_signal with signal 0 only checks; the fd is valid.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret != 0 {
            return Err(Error::gone(self.pid));
        }
        Ok(())
    }
}

/// A process's credentials, as `/proc/PID/status` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved and filesystem IDs.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub cap_eff: u64,
    /// Whether the process is in the initial user namespace, where its
    /// capabilities count for the whole machine.
    pub init_userns: bool,
    /// Whether others of its user may act on it (ptrace's dumpable check):
    /// not a process that dropped its privileges without exec.
    pub dumpable: bool,
}

impl Creds {
    /// Those process `pid` is judged with now ([`Creds::of_process`]).
    pub fn read(facts: &FactsReader, pid: u32) -> Result<Creds, Error> {
        Creds::of_process(facts, &facts.read(pid)?)
    }

    /// One task's.
    pub fn of(facts: &TaskFacts) -> Creds {
        Creds {
            uids: facts.uids,
            gids: facts.gids,
            cap_eff: facts.cap_eff,
            init_userns: facts.init_userns,
            dumpable: facts.dumpable,
        }
    }

    /// Those of the process whose main thread's facts are `main`: the
    /// main thread's; once it has exited (its other threads live on),
    /// what its live threads share, since its credentials are no longer
    /// any thread's: no capability one of them lacks, and no IDs
    /// (u32::MAX) where theirs differ.
    pub fn of_process(facts: &FactsReader, main: &TaskFacts) -> Result<Creds, Error> {
        if !main.exiting {
            return Ok(Creds::of(main));
        }
        let pid = main.tgid;
        let mut shared: Option<Creds> = None;
        for tid in thread_ids(pid)? {
            let Ok(thread) = facts.read(tid) else {
                continue;
            };
            if thread.tgid != pid || thread.exiting {
                continue;
            }
            let this = Creds::of(&thread);
            shared = Some(match shared {
                None => this,
                Some(s) => s.common(&this),
            });
        }
        shared.ok_or_else(|| Error::gone(pid))
    }

    fn common(self, other: &Creds) -> Creds {
        let ids = |a: [u32; 4], b: [u32; 4]| if a == b { a } else { [u32::MAX; 4] };
        Creds {
            uids: ids(self.uids, other.uids),
            gids: ids(self.gids, other.gids),
            cap_eff: self.cap_eff & other.cap_eff,
            init_userns: self.init_userns && other.init_userns,
            dumpable: self.dumpable && other.dumpable,
        }
    }

    /// The credentials a connection's peer had when it connected.
    pub fn of_peer(peer: &PeerCreds) -> Creds {
        Creds {
            uids: peer.uids,
            gids: peer.gids,
            cap_eff: peer.cap_eff,
            init_userns: peer.init_userns,
            dumpable: true,
        }
    }

    /// Whether the process is between the IDs of a set-ID program (its
    /// real, effective, saved and file-system IDs differ): a user's
    /// process running su at its password prompt, for example. Such a
    /// process is judged without capabilities: its effective IDs are a
    /// program's, its requests may still be its caller's.
    pub fn changing_ids(&self) -> bool {
        let differ = |ids: &[u32; 4]| ids.iter().any(|&i| i != ids[0]);
        differ(&self.uids) || differ(&self.gids)
    }

    /// These credentials judged no higher than `ceiling` (the
    /// connection's) allows, and without capabilities while the IDs
    /// change.
    pub fn capped(mut self, ceiling: &crate::control::peer::Ceiling) -> Creds {
        if self.changing_ids() {
            self.cap_eff = 0;
        }
        self.cap_eff &= ceiling.cap_eff;
        self.init_userns &= ceiling.init_userns;
        self
    }

    /// The capability, effective, counted only in the initial user
    /// namespace.
    pub fn has_cap(&self, cap: u32) -> bool {
        self.init_userns && self.cap_eff & (1 << cap) != 0
    }

    /// Whether these make a runtime or an administrator.
    pub fn privileged(&self) -> bool {
        privileged(self.cap_eff, self.init_userns)
    }

    /// Whether a process with these credentials may act on a process with
    /// `target`'s, as ptrace's access check decides it: the same user and
    /// group in every ID (real, effective, saved) of a target that may be
    /// dumped, or CAP_SYS_PTRACE.
    pub fn may_access(&self, target: &Creds) -> bool {
        let uid = self.uids[0];
        let gid = self.gids[0];
        // u32::MAX is no ID (threads that differ): it matches nothing.
        let same = uid != u32::MAX
            && gid != u32::MAX
            && target.uids[..3].iter().all(|&u| u == uid)
            && target.gids[..3].iter().all(|&g| g == gid);
        (same && target.dumpable) || self.has_cap(CAP_SYS_PTRACE)
    }
}

/// Whether effective capabilities make a runtime or an administrator
/// (CAP_AUDIT_CONTROL or CAP_SYS_ADMIN, in the initial user namespace),
/// whom quotas and reserves never lock out.
pub fn privileged(cap_eff: u64, init_userns: bool) -> bool {
    let caps = (1u64 << CAP_AUDIT_CONTROL) | (1u64 << CAP_SYS_ADMIN);
    init_userns && cap_eff & caps != 0
}

/// The inode number of a process's namespace of `kind` (`mnt`, `pid`,
/// ...), which names the namespace machine-wide while it exists.
pub fn namespace_inode(pid: u32, kind: &str) -> Result<u64, Error> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .map(|m| m.ino())
        .map_err(|_| Error::gone(pid))
}

/// A process as audit records name it: pid, uid, login uid, session and
/// comm.
pub fn audit_subject(facts: &TaskFacts) -> Subject {
    Subject {
        pid: facts.id.tid,
        uid: facts.uids[0],
        auid: facts.loginuid,
        ses: facts.sessionid,
        comm: facts.comm.clone(),
    }
}

/// Now, since the epoch: the time of the daemon's records.
pub fn now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

fn clock(id: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts
}

/// Clock ticks since boot, as task start times are counted.
pub fn boot_ticks() -> u64 {
    let ts = clock(libc::CLOCK_BOOTTIME);
    ts.tv_sec as u64 * 100 + ts.tv_nsec as u64 / 10_000_000
}

/// CLOCK_REALTIME minus CLOCK_BOOTTIME, in nanoseconds: turns the BPF
/// programs' boot times into wall-clock times.
pub fn boot_to_real_ns() -> i128 {
    let ns = |ts: libc::timespec| i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
    ns(clock(libc::CLOCK_REALTIME)) - ns(clock(libc::CLOCK_BOOTTIME))
}

/// The thread IDs of process `pid`, from /proc.
pub fn thread_ids(pid: u32) -> Result<Vec<u32>, Error> {
    procfs::thread_ids(pid).ok_or_else(|| Error::gone(pid))
}

/// The executable of `pid`, as (device, inode).
pub fn exe_of(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_share_only_what_each_has() {
        let root = Creds {
            uids: [0; 4],
            gids: [0; 4],
            cap_eff: u64::MAX,
            init_userns: true,
            dumpable: true,
        };
        let dropped = Creds {
            uids: [65534; 4],
            cap_eff: 0,
            ..root.clone()
        };
        let shared = root.clone().common(&dropped);
        assert_eq!((shared.uids, shared.gids), ([u32::MAX; 4], [0; 4]));
        assert_eq!(shared.cap_eff, 0);
        assert!(!shared.may_access(&root) && !shared.may_access(&dropped));
        assert!(!shared.may_access(&shared), "no ID matches no ID");
        assert_eq!(root.clone().common(&root), root);
    }

    #[test]
    fn access_needs_every_id_or_ptrace() {
        let user = Creds {
            uids: [1000; 4],
            gids: [1000; 4],
            cap_eff: 0,
            init_userns: true,
            dumpable: true,
        };
        let setuid = Creds {
            uids: [1000, 0, 0, 0],
            ..user.clone()
        };
        let root = Creds {
            uids: [0; 4],
            gids: [0; 4],
            cap_eff: 1 << CAP_SYS_PTRACE,
            init_userns: true,
            dumpable: true,
        };
        assert!(user.may_access(&user));
        let undumpable = Creds {
            dumpable: false,
            ..user.clone()
        };
        assert!(
            !user.may_access(&undumpable),
            "a process that dropped privileges without exec is out of reach"
        );
        assert!(root.may_access(&undumpable));
        assert!(
            !user.may_access(&setuid),
            "a set-uid program is out of reach"
        );
        assert!(!user.may_access(&root));
        assert!(root.may_access(&user));
        let ns_root = Creds {
            init_userns: false,
            ..root.clone()
        };
        assert!(
            !ns_root.may_access(&user),
            "capabilities of a user namespace do not count"
        );
    }

    #[test]
    fn threads_and_exe_of_this_process() {
        let me = std::process::id();
        assert!(thread_ids(me).unwrap().contains(&me));
        assert_eq!(exe_of(me), exe_of(me));
        assert!(exe_of(me).is_some());
    }
}
