//! Stopping a container by its cgroup: `cgroup.kill` kills every task of
//! a cgroup v2 and its descendants at once, forks in flight included,
//! but only when the container's tasks have a cgroup to themselves.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

pub use ptags_bpf::procfs::cgroup_v2_root as v2_root;

/// A task's cgroup v2 path (`0::/path` of `/proc/PID/cgroup`).
fn cgroup_of(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The processes of a cgroup and its descendants.
fn procs_under(dir: &Path, out: &mut HashSet<u32>) -> Option<()> {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    for entry in fs::read_dir(dir).ok()?.flatten() {
        if entry.file_type().ok()?.is_dir() {
            procs_under(&entry.path(), out)?;
        }
    }
    Some(())
}

/// The cgroup holding `members` and nothing else (descendants included),
/// when there is one; `None` when they are spread out, share it with
/// others, or the machine has no cgroup v2 with `cgroup.kill`. A process
/// found there that is not in `members` (forked since they were listed)
/// must be one `belongs` accepts.
pub fn own_cgroup(members: &[u32], belongs: impl Fn(u32) -> bool) -> Option<PathBuf> {
    // Members gone since they were listed (a flood's short-lived
    // processes) are in no cgroup any more, and harmless.
    let cgroups: Vec<String> = members.iter().filter_map(|&p| cgroup_of(p)).collect();
    let first = cgroups.first()?;
    if first == "/" || cgroups.iter().any(|c| c != first) {
        return None;
    }
    let dir = v2_root()?.join(first.trim_start_matches('/'));
    if !dir.join("cgroup.kill").exists() {
        return None;
    }
    let mut inside = HashSet::new();
    procs_under(&dir, &mut inside)?;
    let members: HashSet<u32> = members.iter().copied().collect();
    inside
        .iter()
        .all(|p| members.contains(p) || belongs(*p))
        .then_some(dir)
}

/// Kills every task of a cgroup and its descendants.
pub fn kill(dir: &Path) -> std::io::Result<()> {
    fs::write(dir.join("cgroup.kill"), "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_shared_with_this_process_is_not_a_containers_own() {
        // This test's process is not alone in its cgroup (cargo runs it,
        // and its threads' process is the only member listed), or sits
        // at the root: either way not another container's.
        let me = std::process::id();
        if let Some(dir) = own_cgroup(&[me], |_| false) {
            let mut inside = HashSet::new();
            procs_under(&dir, &mut inside).unwrap();
            assert_eq!(inside, HashSet::from([me]));
        }
        assert_eq!(own_cgroup(&[], |_| true), None);
    }
}
