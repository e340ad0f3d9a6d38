//! The device fence's kernel state: each container's list in the
//! `device_lists` and `device_rules` maps, and the program's link at the
//! root of the cgroup v2 hierarchy, held (pinned, when the kernel side
//! is) while any container has a list.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags};

use crate::kernel::{bytes_of, Kernel};
use crate::pins;
use crate::skel::types::{ptags_device_key, ptags_device_list};
use crate::{Context, Result};

/// The device program's attach point, while any container has a list.
pub const DEVICES_ATTACH: &str = "cgroup/dev (cgroup v2 root)";

/// `PTAGS_DEV_ANY`: a `*` major or minor.
const ANY: u32 = u32::MAX;

/// One exception of a list, as the program reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceException {
    /// `BPF_DEVCG_DEV_BLOCK` (1), `BPF_DEVCG_DEV_CHAR` (2), or 3 for `a`.
    pub kind: u32,
    /// `None`: `*`.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `BPF_DEVCG_ACC_*` bits: mknod 1, read 2, write 4.
    pub access: u32,
}

impl Kernel {
    /// Attaches the device program to the cgroup v2 directory `cgroup`,
    /// beside what else is attached there: it runs for every task below
    /// it. Dropping the link detaches it.
    pub fn attach_devices(&self, cgroup: &Path) -> Result<OwnedFd> {
        let dir =
            std::fs::File::open(cgroup).context(|| format!("opening {}", cgroup.display()))?;
        // SAFETY: valid program and cgroup fds; no options.
        let fd = unsafe {
            libbpf_sys::bpf_link_create(
                self.dev_prog.as_raw_fd(),
                dir.as_raw_fd(),
                libbpf_sys::BPF_CGROUP_DEVICE,
                std::ptr::null(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::from_raw_os_error(-fd))
                .context(|| format!("attaching the device program to {}", cgroup.display()));
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Whether the device program is attached at the cgroup root.
    pub fn devices_fenced(&self) -> bool {
        self.link_present(&self.dev_link, pins::DEV_LINK)
    }

    /// Attaches the device program at `root`, the root of the cgroup v2
    /// hierarchy, unless it is already. Pinned, it stays attached across
    /// restarts of the daemon, and a fence is never down while the daemon
    /// is.
    pub fn fence_devices(&self, root: &Path) -> Result<()> {
        if self.devices_fenced() {
            return Ok(());
        }
        let link = self.attach_devices(root)?;
        match &self.pin_dir {
            Some(dir) => pins::pin_fd(&link, dir, pins::DEV_LINK)?,
            None => *self.dev_link.lock().unwrap_or_else(|e| e.into_inner()) = Some(link),
        }
        Ok(())
    }

    /// Detaches the device program from the cgroup root.
    pub fn unfence_devices(&self) -> Result<()> {
        self.dev_link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match &self.pin_dir {
            Some(dir) => pins::unpin(dir, pins::DEV_LINK),
            None => Ok(()),
        }
    }

    /// Puts container `contid`'s device list in place (its default, and
    /// its exceptions), or removes it (`None`). While the exceptions are
    /// rewritten, the default alone is in force, which for a list of
    /// grants is the narrower.
    pub fn set_device_list(
        &self,
        contid: u64,
        list: Option<(bool, &[DeviceException])>,
    ) -> Result<()> {
        let old: Vec<Vec<u8>> = self
            .device_rules
            .keys()
            .filter(|k| k.get(..8) == Some(&contid.to_ne_bytes()[..]))
            .collect();
        let key = contid.to_ne_bytes();
        match list {
            None => match self.device_lists.delete(&key) {
                Err(e) if e.kind() != libbpf_rs::ErrorKind::NotFound => {
                    return Err(e).context(|| format!("removing container {contid}'s device list"))
                }
                _ => {}
            },
            Some((default_allow, exceptions)) => {
                let value = ptags_device_list {
                    default_allow: default_allow.into(),
                    exceptions: exceptions.len() as u32,
                    ..Default::default()
                };
                self.device_lists
                    .update(&key, bytes_of(&value), MapFlags::ANY)
                    .context(|| format!("writing container {contid}'s device list"))?;
            }
        }
        for k in old {
            let _ = self.device_rules.delete(&k);
        }
        for e in list.map_or(&[][..], |(_, e)| e) {
            let k = ptags_device_key {
                contid,
                r#type: e.kind,
                major: e.major.unwrap_or(ANY),
                minor: e.minor.unwrap_or(ANY),
                reserved: 0,
            };
            self.device_rules
                .update(bytes_of(&k), &e.access.to_ne_bytes(), MapFlags::ANY)
                .context(|| format!("writing container {contid}'s device rules"))?;
        }
        Ok(())
    }

    /// The containers that have a device list in the kernel.
    pub fn device_list_containers(&self) -> Vec<u64> {
        self.device_lists
            .keys()
            .filter_map(|k| Some(u64::from_ne_bytes(k.try_into().ok()?)))
            .collect()
    }
}
