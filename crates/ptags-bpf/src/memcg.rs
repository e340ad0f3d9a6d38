//! Where the maps' memory is charged. The kernel charges a map, and every
//! task-storage element later made in it (at each fork of a labelled
//! task, whoever forks), to the memory cgroup of the process that created
//! the map. A daemon in a cgroup with a memory limit would let a tenant's
//! forks spend that limit, and past it children would run unlabelled: an
//! escape. So the maps are created while the process is in the root memory
//! cgroup, which has no limit, and it goes back afterwards.

use std::path::PathBuf;

/// The memory cgroup this process was in, to go back to.
pub(crate) struct AtRoot {
    back: Option<PathBuf>,
}

impl Drop for AtRoot {
    fn drop(&mut self) {
        if let Some(procs) = &self.back {
            if let Err(e) = std::fs::write(procs, std::process::id().to_string()) {
                log::warn!("going back to {}: {e}", procs.display());
            }
        }
    }
}

/// The memory controller's mount point and this process's cgroup under
/// it: the v1 `memory` hierarchy, or the v2 one when memory is there.
pub(crate) fn memory_cgroup() -> Option<(PathBuf, String)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // mountinfo: ... MOUNTPOINT ... - FSTYPE SOURCE OPTIONS
    let mount_of = |v1: bool| {
        mounts.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            let mut f = right.split_whitespace();
            let (fstype, options) = (f.next()?, f.nth(1)?);
            let wanted = if v1 {
                fstype == "cgroup" && options.split(',').any(|o| o == "memory")
            } else {
                fstype == "cgroup2"
            };
            wanted.then(|| PathBuf::from(point))
        })
    };
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some((mount_of(true)?, path.to_owned()));
        }
    }
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mount = mount_of(false)?;
    let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "memory")
        .then(|| (mount, path.to_owned()))
}

/// Moves this process to the root memory cgroup until the guard drops.
/// Where that is not possible (no memory controller, or not allowed) the
/// process stays where it is, and says so.
pub(crate) fn at_root() -> AtRoot {
    let Some((mount, path)) = memory_cgroup() else {
        return AtRoot { back: None };
    };
    if path == "/" {
        return AtRoot { back: None };
    }
    let here = mount
        .join(path.trim_start_matches('/'))
        .join("cgroup.procs");
    match std::fs::write(mount.join("cgroup.procs"), std::process::id().to_string()) {
        Ok(()) => AtRoot { back: Some(here) },
        Err(e) => {
            log::warn!(
                "cannot create the maps in the root memory cgroup ({e}): labels of forked tasks are charged to {path}, whose limit could leave children unlabelled"
            );
            AtRoot { back: None }
        }
    }
}
