//! The pinned layout under a bpffs directory: what survives a restart of
//! user space, and the check that a new build may reuse it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::{Context, Result};

pub(crate) const MAPS: [&str; 10] = [
    "task_state",
    "containers",
    "joins",
    "ptags_config",
    "lost",
    "events",
    "drops",
    "copy_events",
    "device_lists",
    "device_rules",
];
pub(crate) const LINKS: [&str; 4] = ["link_fork", "link_exec", "link_exit", "link_cgroup_attach"];
pub(crate) const SET_PROG: &str = "prog_set";
pub(crate) const TASKS_PROG: &str = "prog_tasks";
pub(crate) const DEV_PROG: &str = "prog_dev";
pub(crate) const FACTS_PROG: &str = "prog_facts";
pub(crate) const PEER_PROG: &str = "prog_peer";
/// The device program's link at the cgroup v2 root: present only while a
/// container has a device list. Removing it detaches the program.
pub(crate) const DEV_LINK: &str = "link_dev";
/// Pins of layouts before 8, whose setns program ran at every system
/// call's exit: removed with the rest, so that a reset clears them too.
const OLD_SETNS_PINS: [&str; 2] = ["prog_setns", "link_setns"];

pub(crate) fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Whether `dir` holds a pinned ptags layout (of any version).
pub(crate) fn present(dir: &Path) -> bool {
    path(dir, "ptags_config").exists()
}

/// Mounts bpffs at /sys/fs/bpf when nothing is mounted there (a fresh
/// machine), so that pins under it work.
pub(crate) fn ensure_bpffs(dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .context(|| "reading /proc/self/mounts".into())?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .context(|| "running mount -t bpf".into())?;
    if !status.success() {
        return Err(crate::Error::Io {
            context: "mounting bpffs at /sys/fs/bpf".into(),
            source: std::io::Error::other(format!("mount exited with {status}")),
        });
    }
    Ok(())
}

/// Removes every ptags pin under `dir`, and `dir` itself when it is then
/// empty. Programs whose links were pinned detach when the last reference
/// goes.
pub(crate) fn remove_all(dir: &Path) -> Result<()> {
    for name in MAPS
        .iter()
        .chain(LINKS.iter())
        .chain(
            [
                SET_PROG, TASKS_PROG, FACTS_PROG, PEER_PROG, DEV_PROG, DEV_LINK,
            ]
            .iter(),
        )
        .chain(OLD_SETNS_PINS.iter())
    {
        unpin(dir, name)?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
        Err(e) => Err(e).context(|| format!("removing {}", dir.display())),
    }
}

fn c_path(dir: &Path, name: &str) -> CString {
    CString::new(path(dir, name).as_os_str().as_encoded_bytes()).expect("pin paths have no NUL")
}

/// Pins a program or a link by its fd.
pub(crate) fn pin_fd(prog: &OwnedFd, dir: &Path, name: &str) -> Result<()> {
    let path = c_path(dir, name);
    // SAFETY: a valid program fd and a NUL-terminated path.
    let ret = unsafe { libbpf_sys::bpf_obj_pin(prog.as_raw_fd(), path.as_ptr()) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error()).context(|| format!("pinning {name}"));
    }
    Ok(())
}

/// Removes the pin `name` (what it pinned lives on while referenced).
pub(crate) fn unpin(dir: &Path, name: &str) -> Result<()> {
    let p = path(dir, name);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(|| format!("removing {}", p.display())),
    }
}

/// Opens a program (or link) pinned by [`pin_fd`].
pub(crate) fn open_prog(dir: &Path, name: &str) -> Result<OwnedFd> {
    let path = c_path(dir, name);
    // SAFETY: a NUL-terminated path; returns a new fd or a negative errno.
    let fd = unsafe { libbpf_sys::bpf_obj_get(path.as_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd))
            .context(|| format!("opening the pinned {name}"));
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
