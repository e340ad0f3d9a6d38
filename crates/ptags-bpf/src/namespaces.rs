//! Namespaces as the kernel programs read them (`src/bpf/namespaces.bpf.h`):
//! a task's, per kind, and the changes of a watched task's.

use crate::skel::types::{ptags_ns, ptags_ns_seen as S, ptags_ns_slot};

/// The kinds, by slot, as /proc/PID/ns names them.
pub const KINDS: [&str; SLOTS] = [
    "cgroup",
    "ipc",
    "mnt",
    "net",
    "pid",
    "time",
    "user",
    "uts",
    "pid_for_children",
    "time_for_children",
];

/// Slots a task's namespaces have.
pub const SLOTS: usize = ptags_ns_slot::PTAGS_NS_SLOTS.0 as usize;

/// The slot of a kind's namespaces for children: its changes are changes of
/// that kind (a new PID namespace is made by unshare there).
pub fn kind_of_slot(slot: usize) -> &'static str {
    match KINDS[slot] {
        "pid_for_children" => "pid",
        "time_for_children" => "time",
        kind => kind,
    }
}

/// The eight kinds /proc/PID/ns lists for a task itself.
pub const OWN_KINDS: usize = 8;

/// A task's namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Namespaces {
    /// The kernel's namespace IDs (ns_id), never reused, by slot.
    pub id: [u64; SLOTS],
    /// Inode numbers, as `stat /proc/PID/ns/KIND` gives them, by slot.
    pub inum: [u32; SLOTS],
    /// The inode number of the parent of its PID namespace for children
    /// and of its user namespace (0: it is at the top).
    pub parent_pid: u32,
    pub parent_user: u32,
}

impl Namespaces {
    pub(crate) fn from_raw(raw: &ptags_ns) -> Namespaces {
        Namespaces {
            id: raw.id,
            inum: raw.inum,
            parent_pid: raw.parent_pid,
            parent_user: raw.parent_user,
        }
    }

    /// Whether they were read (a task that is exiting has none).
    pub fn known(&self) -> bool {
        self.inum.iter().any(|&i| i != 0)
    }

    /// The inode number of the namespace of `kind` (a name of [`KINDS`]).
    pub fn inum_of(&self, kind: &str) -> Option<u32> {
        KINDS.iter().position(|k| *k == kind).map(|s| self.inum[s])
    }

    /// The parent of the namespace in `slot`, for the hierarchical kinds
    /// whose parent the programs read (PID, user).
    pub fn parent_of(&self, slot: usize) -> Option<u32> {
        match kind_of_slot(slot) {
            "pid" => Some(self.parent_pid),
            "user" => Some(self.parent_user),
            _ => None,
        }
    }
}

/// Where a change of a task's namespaces was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Made by a clone with CLONE_NEW* flags: exact.
    Clone,
    /// Found at the task's next fork, exec or exit, or by a sweep of all
    /// tasks: an unshare or setns since it was last seen.
    Fork,
    Exec,
    Exit,
    Sweep,
    /// When the daemon set its container.
    Set,
}

impl Seen {
    fn from_raw(raw: u32) -> Option<Seen> {
        Some(match S(raw) {
            S::PTAGS_NS_SEEN_CLONE => Seen::Clone,
            S::PTAGS_NS_SEEN_FORK => Seen::Fork,
            S::PTAGS_NS_SEEN_EXEC => Seen::Exec,
            S::PTAGS_NS_SEEN_EXIT => Seen::Exit,
            S::PTAGS_NS_SEEN_SWEEP => Seen::Sweep,
            S::PTAGS_NS_SEEN_SET => Seen::Set,
            _ => return None,
        })
    }

    /// As records name it (`detected=`).
    pub fn name(self) -> &'static str {
        match self {
            Seen::Clone => "clone",
            Seen::Fork => "fork",
            Seen::Exec => "exec",
            Seen::Exit => "exit",
            Seen::Sweep => "sweep",
            Seen::Set => "set",
        }
    }
}

/// A change of a watched task's namespaces: the event's `namespaces` are
/// those after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsChange {
    pub seen: Seen,
    /// A bit per slot that changed.
    pub changed: u32,
    /// The inode numbers before, by slot (for a clone: the parent's that
    /// the child would have had).
    pub old_inum: [u32; SLOTS],
    /// For a clone: the new task's pid (the event names its parent).
    pub child_pid: Option<u32>,
}

impl NsChange {
    pub(crate) fn from_raw(
        seen: u32,
        changed: u32,
        old_inum: [u32; SLOTS],
        child: u32,
    ) -> Option<NsChange> {
        Some(NsChange {
            seen: Seen::from_raw(seen)?,
            changed,
            old_inum,
            child_pid: (child != 0).then_some(child),
        })
    }

    /// The slots that changed.
    pub fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..SLOTS).filter(|s| self.changed & (1 << s) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kinds_are_those_of_proc() {
        let mut listed: Vec<String> = std::fs::read_dir("/proc/self/ns")
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        listed.sort();
        let mut ours: Vec<String> = KINDS.iter().map(|k| k.to_string()).collect();
        ours.sort();
        assert_eq!(listed, ours);
        assert_eq!(kind_of_slot(8), "pid");
        assert_eq!(kind_of_slot(9), "time");
        assert!(KINDS[..OWN_KINDS].iter().all(|k| !k.ends_with("children")));
    }
}
