//! What /proc and pidfds say about a task: the one place ptags reads
//! them. `ptagsd`'s facts about callers (credentials, PID namespaces)
//! are built on these.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};

/// `pidfd_open` flag: the pidfd names one thread, not the thread group.
pub const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// `pidfd_open(2)`: `flags` 0 names the process, [`PIDFD_THREAD`] one
/// thread. `None` when there is no such task.
pub fn pidfd_open(pid: u32, flags: libc::c_uint) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, flags) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The fields of `/proc/PID/status` that ptags uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub tgid: u32,
    /// Real, effective, saved and file-system IDs.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub cap_eff: u64,
    /// The task's pids, from the namespace of this /proc down to its own.
    pub nspid: Vec<u32>,
}

impl Status {
    /// Reads a status file (`/proc/PID/status`, `/proc/PID/task/TID/status`).
    pub fn read(path: &str) -> Option<Status> {
        Status::parse(&fs::read_to_string(path).ok()?)
    }

    pub fn parse(text: &str) -> Option<Status> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let ids = |name: &str| -> Option<[u32; 4]> {
            let mut out = [0; 4];
            let mut values = field(name)?.split_whitespace();
            for slot in &mut out {
                *slot = values.next()?.parse().ok()?;
            }
            Some(out)
        };
        Some(Status {
            tgid: field("Tgid:")?.parse().ok()?,
            uids: ids("Uid:")?,
            gids: ids("Gid:")?,
            cap_eff: u64::from_str_radix(field("CapEff:")?, 16).ok()?,
            nspid: field("NSpid:")?
                .split_whitespace()
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u32>>>()?,
        })
    }
}

/// Task `tid`'s start time, in clock ticks since boot.
pub fn start_ticks(tid: u32) -> Option<u64> {
    stat_field(tid, 22)
}

/// The parent of process `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_field(pid, 4)
}

/// Field `n` of task `tid`'s `stat`, numbered as in proc(5) (from 3).
fn stat_field<T: std::str::FromStr>(tid: u32, n: usize) -> Option<T> {
    let stat = fs::read_to_string(format!("/proc/{tid}/task/{tid}/stat")).ok()?;
    // comm may hold spaces and parentheses: fields start after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

/// The thread IDs of process `pid`, in order; `None` once it is gone.
pub fn thread_ids(pid: u32) -> Option<Vec<u32>> {
    let mut tids: Vec<u32> = fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Some(tids)
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on a
/// unified machine, `/sys/fs/cgroup/unified` on a hybrid one), from
/// `/proc/self/mountinfo`; `None` without one.
pub fn cgroup_v2_root() -> Option<std::path::PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_as_proc_tells_it() {
        let me = std::process::id();
        let status = Status::read(&format!("/proc/{me}/status")).unwrap();
        assert_eq!(status.tgid, me);
        assert_eq!(status.nspid.first(), Some(&me));
        // SAFETY: getuid has no preconditions.
        assert_eq!(status.uids[0], unsafe { libc::getuid() });
        let thread = Status::read(&format!("/proc/{me}/task/{me}/status"));
        assert_eq!(thread.map(|s| s.tgid), Some(me));
        assert!(thread_ids(me).unwrap().contains(&me));
        assert!(start_ticks(me).is_some());
        // SAFETY: getppid has no preconditions.
        assert_eq!(parent_of(me), Some(unsafe { libc::getppid() } as u32));
        assert!(pidfd_open(me, 0).is_some());
        assert!(Status::read("/proc/0/status").is_none());
    }

    #[test]
    fn a_status_missing_a_field_is_refused() {
        let full = "Name:\tx\nTgid:\t5\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nCapEff:\t00000000a80425fb\nNSpid:\t5\t1\n";
        let s = Status::parse(full).unwrap();
        assert_eq!(
            (s.uids, s.gids, s.nspid),
            ([1, 2, 3, 4], [5, 6, 7, 8], vec![5, 1])
        );
        assert_eq!(s.cap_eff, 0xa80425fb);
        for drop in ["Tgid:", "Uid:", "CapEff:", "NSpid:"] {
            let partial: String = full
                .lines()
                .filter(|l| !l.starts_with(drop))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(Status::parse(&partial), None, "{drop}");
        }
        assert_eq!(
            Status::parse(&full.replace("Uid:\t1\t2\t3\t4", "Uid:\t1\t2")),
            None
        );
    }
}
