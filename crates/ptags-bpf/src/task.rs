//! Naming tasks safely, and their state as user space sees it.

use std::fs;

use crate::skel::types::{
    ptags_container, ptags_members, ptags_ns_slot, ptags_state, ptags_task_flags as F,
    ptags_task_row,
};
use crate::{procfs, Context, Error, Result};

/// A task (thread), named by its TID and start time, so that a reused TID
/// is never taken for the task it once named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub tid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
    pub start_ticks: u64,
}

impl TaskId {
    /// The task `tid` as it is now.
    pub fn of(tid: u32) -> Result<TaskId> {
        let start_ticks = procfs::start_ticks(tid).ok_or(Error::NoSuchTask(tid))?;
        Ok(TaskId { tid, start_ticks })
    }
}

/// `NS_GET_MNTNS_ID` (`_IOR(0xb7, 5, __u64)`, Linux 6.8).
const NS_GET_MNTNS_ID: libc::c_ulong = 0x8008_b705;

/// The 64-bit ID of the mount namespace of process `pid`: unlike its
/// inode number, never reused while the machine runs, so a policy keyed
/// by it can never apply to a namespace made after the one it was for.
pub fn mount_namespace_id(pid: u32) -> Result<u64> {
    use std::os::fd::AsRawFd;
    let ns = fs::File::open(format!("/proc/{pid}/ns/mnt")).map_err(|_| Error::NoSuchTask(pid))?;
    let mut id: u64 = 0;
    // SAFETY: NS_GET_MNTNS_ID writes one u64 through the pointer, which
    // points to `id`; the fd is a namespace file.
    let ret = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_MNTNS_ID, &mut id as *mut u64) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error())
            .context(|| format!("reading the mount namespace ID of process {pid}"));
    }
    Ok(id)
}

/// What the kernel holds for one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskState {
    pub set_id: u64,
    pub kept_id: u64,
    pub contid: Option<u64>,
    /// The state to take at the next exec: (set, kept subset, container ID
    /// if it changes).
    pub pending: Option<(u64, u64, Option<u64>)>,
    /// The task has exited (a main thread whose process lives on, or a
    /// zombie): its state is what it had, no longer counted.
    pub exited: bool,
}

impl TaskState {
    pub(crate) fn from_raw(raw: &ptags_state) -> TaskState {
        let has = |bit: F| raw.flags & bit.0 != 0;
        TaskState {
            set_id: raw.set_id,
            kept_id: raw.kept_id,
            contid: has(F::PTAGS_TASK_HAS_CONTID).then_some(raw.contid),
            pending: has(F::PTAGS_TASK_PENDING).then_some((
                raw.pending_set_id,
                raw.pending_kept_id,
                has(F::PTAGS_TASK_PENDING_CONTID).then_some(raw.pending_contid),
            )),
            exited: has(F::PTAGS_TASK_EXITED),
        }
    }
}

/// A task's `comm` as the kernel copies it: NUL-terminated, any bytes.
pub(crate) fn comm(raw: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One task as the task iterator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: TaskId,
    /// Thread-group ID (the process).
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// Its mount namespace's ID ([`mount_namespace_id`]); 0 once exited.
    pub mnt_ns: u64,
    pub state: TaskState,
    /// Its namespaces (none once exiting).
    pub namespaces: crate::Namespaces,
}

impl TaskRow {
    pub(crate) fn from_raw(raw: &ptags_task_row) -> TaskRow {
        TaskRow {
            id: TaskId {
                tid: raw.tid,
                start_ticks: raw.start_ticks,
            },
            pid: raw.pid,
            ppid: raw.ppid,
            comm: comm(&raw.comm),
            // The ID of its mount namespace, among those read.
            mnt_ns: raw.ns.id[ptags_ns_slot::PTAGS_NS_MNT.0 as usize],
            state: TaskState::from_raw(&raw.state),
            namespaces: crate::Namespaces::from_raw(&raw.ns),
        }
    }
}

/// A row of the kernel's container table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerEntry {
    pub parent: Option<u64>,
    pub owner_pid: u32,
    pub owner_start_ticks: u64,
    /// Tasks (threads) alive in the container now.
    pub live: i64,
    /// Tasks that will enter it at their next exec.
    pub pending: i64,
}

impl ContainerEntry {
    pub(crate) fn from_raw(raw: &ptags_container) -> ContainerEntry {
        // One word: live in the low 32 bits (signed), pending above.
        let live = i64::from(raw.members as i32);
        let shift = ptags_members::PTAGS_MEMBER_PENDING_SHIFT.0;
        ContainerEntry {
            parent: (raw.parent != u64::MAX).then_some(raw.parent),
            owner_pid: raw.owner_pid,
            owner_start_ticks: raw.owner_start,
            live,
            pending: (raw.members - live) >> shift,
        }
    }

    /// Whether any task is in the container or about to enter it.
    pub fn has_members(&self) -> bool {
        self.live > 0 || self.pending > 0
    }

    pub(crate) fn to_raw(self) -> ptags_container {
        ptags_container {
            parent: self.parent.unwrap_or(u64::MAX),
            owner_start: self.owner_start_ticks,
            owner_pid: self.owner_pid,
            flags: 0,
            members: 0,
        }
    }
}

/// A container ID to move a task to, with the row to create if the ID has
/// none yet (an existing row keeps its owner and parent).
pub type ContidChange = (u64, Option<ContainerEntry>);

/// One change to a task's state, done atomically in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOp {
    /// New tag set and its kept subset.
    pub tags: Option<(u64, u64)>,
    /// New container ID, with the container to create if it is new.
    pub contid: Option<ContidChange>,
    /// State to take at the next exec: set, kept subset, and a container
    /// ID (with its entry, if new) or none to keep the current one.
    pub pending: Option<(u64, u64, Option<ContidChange>)>,
    /// Refuse the change (EBUSY, [`Error::NotAlone`]) if the target has
    /// children or other threads, checked atomically against fork.
    pub alone: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_come_from_proc() {
        let me = TaskId::of(std::process::id()).unwrap();
        assert_eq!(me, TaskId::of(std::process::id()).unwrap());
        assert!(
            me.start_ticks > 0
                || std::fs::read_to_string("/proc/uptime")
                    .unwrap()
                    .starts_with('0')
        );
        assert!(matches!(TaskId::of(u32::MAX), Err(Error::NoSuchTask(_))));
    }

    #[test]
    fn container_rows_round_trip() {
        let row = ContainerEntry {
            parent: Some(4),
            owner_pid: 10,
            owner_start_ticks: 99,
            live: 0,
            pending: 0,
        };
        assert_eq!(ContainerEntry::from_raw(&row.to_raw()), row);
        let top = ContainerEntry {
            parent: None,
            ..row
        };
        assert_eq!(top.to_raw().parent, u64::MAX);
        assert_eq!(ContainerEntry::from_raw(&top.to_raw()), top);
    }
}
