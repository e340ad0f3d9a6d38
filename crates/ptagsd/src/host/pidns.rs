//! Callers in another PID namespace (a process in a container, a runtime
//! running in one) name processes by their pids in that namespace. Their
//! requests are translated to the daemon's pids before anything is
//! decided, and the pids of answers back, so that such a caller can
//! neither name nor see a process outside its namespace.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::error::Error;
use ptags_core::Errno;
use ptags_proto::{PsRow, Request, Response, Target};

use crate::host::namespace_inode;

/// `NS_GET_PARENT` of linux/nsfs.h: `_IO(0xb7, 0x2)`.
const NS_GET_PARENT: libc::c_ulong = 0xb702;

/// A PID namespace other than the daemon's, as its members see pids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidView {
    /// Its depth below the namespace of the daemon's /proc.
    level: usize,
    /// Its inode number.
    ns: u64,
}

/// A task's pids, from the namespace of the daemon's /proc down to its own.
fn nspids(tid: u32, status_path: &str) -> Option<Vec<u32>> {
    let pids = ptags_bpf::procfs::Status::read(status_path)?.nspid;
    (pids.first() == Some(&tid)).then_some(pids)
}

/// The inode of the PID namespace `up` levels above task `tid`'s own.
fn ancestor_namespace(tid: u32, up: usize) -> Option<u64> {
    let mut ns = OwnedFd::from(File::open(format!("/proc/{tid}/ns/pid")).ok()?);
    for _ in 0..up {
        // SAFETY: an nsfs fd; NS_GET_PARENT returns a new fd or -1.
        let parent = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT) };
        if parent < 0 {
            return None;
        }
        // SAFETY: a fresh fd that nothing else owns.
        ns = unsafe { OwnedFd::from_raw_fd(parent) };
    }
    Some(File::from(ns).metadata().ok()?.ino())
}

/// `NS_GET_USERNS` of linux/nsfs.h: `_IO(0xb7, 0x1)`.
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// The PID namespace a share of process `pid` is counted in: its own, or
/// the nearest enclosing one owned by the daemon's user namespace. Only
/// an owner of capabilities there (a runtime) can make those; anyone can
/// make PID namespaces inside user namespaces of its own, and they must
/// not be new shares. `None` when it cannot be read (the process is
/// gone).
pub fn share_namespace(pid: u32) -> Option<u64> {
    let host_users = File::open("/proc/self/ns/user")
        .ok()?
        .metadata()
        .ok()?
        .ino();
    let mut ns = OwnedFd::from(File::open(format!("/proc/{pid}/ns/pid")).ok()?);
    loop {
        // SAFETY: an nsfs fd; NS_GET_USERNS returns a new fd or -1.
        let owner = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
        if owner >= 0 {
            // SAFETY: a fresh fd that nothing else owns.
            let owner = File::from(unsafe { OwnedFd::from_raw_fd(owner) });
            if owner.metadata().ok()?.ino() == host_users {
                break;
            }
        }
        // SAFETY: an nsfs fd; NS_GET_PARENT returns a new fd or -1 (at
        // the daemon's own namespace, whose parent it cannot see).
        let parent = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT) };
        if parent < 0 {
            break;
        }
        // SAFETY: a fresh fd that nothing else owns.
        ns = unsafe { OwnedFd::from_raw_fd(parent) };
    }
    Some(File::from(ns).metadata().ok()?.ino())
}

fn invisible(what: &str, pid: u32) -> Error {
    Error::new(
        Errno::Esrch,
        format!("{what} {pid} does not exist in the caller's PID namespace"),
    )
}

/// The daemon's own PID namespace, read once: every request compares
/// its caller's with it.
fn own_namespace() -> Result<u64, Error> {
    static OWN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(ns) = OWN.get() {
        return Ok(*ns);
    }
    let ns = namespace_inode(std::process::id(), "pid")?;
    Ok(*OWN.get_or_init(|| ns))
}

impl PidView {
    /// The namespace of process `pid`, whose inode number is `ns` (from
    /// its facts, or [`namespace_inode`]); `None` when it is the
    /// daemon's.
    pub fn of(pid: u32, ns: u64) -> Result<Option<PidView>, Error> {
        if ns == own_namespace()? {
            return Ok(None);
        }
        let pids = nspids(pid, &format!("/proc/{pid}/status")).ok_or_else(|| Error::gone(pid))?;
        Ok(Some(PidView {
            level: pids.len() - 1,
            ns,
        }))
    }

    /// What task `tid` (a daemon pid) is called in this namespace, if it
    /// is in it or below it.
    pub(crate) fn local(&self, tid: u32, status_path: &str) -> Option<u32> {
        let pids = nspids(tid, status_path)?;
        let local = *pids.get(self.level)?;
        let up = pids.len() - 1 - self.level;
        (ancestor_namespace(tid, up)? == self.ns).then_some(local)
    }

    /// The daemon's pid of the process this namespace calls `pid`.
    pub fn host_pid(&self, pid: u32) -> Result<u32, Error> {
        let dir = std::fs::read_dir("/proc")
            .map_err(|e| Error::new(Errno::Eio, format!("listing /proc: {e}")))?;
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&p| self.local(p, &format!("/proc/{p}/status")) == Some(pid))
            .ok_or_else(|| invisible("process", pid))
    }

    /// The daemon's tid of thread `tid` of process `host_pid`.
    fn host_tid(&self, host_pid: u32, tid: u32) -> Result<u32, Error> {
        let dir = std::fs::read_dir(format!("/proc/{host_pid}/task"))
            .map_err(|_| invisible("thread", tid))?;
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&t| self.local(t, &format!("/proc/{host_pid}/task/{t}/status")) == Some(tid))
            .ok_or_else(|| invisible("thread", tid))
    }

    fn target(&self, t: Target) -> Result<Target, Error> {
        let pid = self.host_pid(t.pid)?;
        let tid = match t.tid {
            Some(tid) => Some(self.host_tid(pid, tid)?),
            None => None,
        };
        Ok(Target { pid, tid })
    }

    /// The request with the daemon's pids in place of this namespace's.
    pub fn request(&self, req: &Request) -> Result<Request, Error> {
        let mut req = req.clone();
        match &mut req {
            Request::Read { target } | Request::Write { target, .. } => {
                *target = self.target(*target)?
            }
            Request::ContidGet { pid }
            | Request::ContidSet { pid, .. }
            | Request::PrepareExec { pid, .. }
            | Request::ContainerCreate { pid, .. } => *pid = self.host_pid(*pid)?,
            Request::Ps { .. }
            | Request::ContainerEnd { .. }
            | Request::Status {}
            | Request::AuditPolicySet { .. }
            | Request::AuditPolicyGet { .. }
            | Request::AuditPolicyList {}
            | Request::AuditPolicyClear { .. }
            | Request::AuditFollow { .. }
            | Request::DeviceWrite { .. }
            | Request::DeviceGet { .. }
            | Request::DeviceClear { .. } => {}
        }
        Ok(req)
    }

    /// The answer with this namespace's pids; tasks outside it are left out.
    pub fn response(&self, resp: Response) -> Response {
        match resp {
            Response::Processes { rows } => Response::Processes {
                rows: rows.into_iter().filter_map(|r| self.row(r)).collect(),
            },
            other => other,
        }
    }

    fn row(&self, r: PsRow) -> Option<PsRow> {
        let pid = self.local(r.pid, &format!("/proc/{}/status", r.pid))?;
        let tid = self.local(r.tid, &format!("/proc/{}/task/{}/status", r.pid, r.tid))?;
        // A parent outside the namespace shows as 0, as the kernel does.
        let ppid = self
            .local(r.ppid, &format!("/proc/{}/status", r.ppid))
            .unwrap_or(0);
        Some(PsRow {
            pid,
            tid,
            ppid,
            ..r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_in_the_daemons_namespace() {
        let me = std::process::id();
        let ns = namespace_inode(me, "pid").unwrap();
        assert_eq!(PidView::of(me, ns), Ok(None));
        assert_eq!(nspids(me, &format!("/proc/{me}/status")).unwrap()[0], me);
    }
}
