//! Device allow-lists per container (docs/devices.md): who may change a
//! container's list, the check that a nested list only narrows its
//! ancestors', the list stored with its container before the kernel
//! enforces it, the program attached at the cgroup v2 root while any
//! container has a list, and the lists restored at start.

use std::collections::HashSet;

use anyhow::Result;
use log::{info, warn};
use ptags_bpf::DeviceException;
use ptags_core::devices::{parse_write, DeviceList, DeviceType};
use ptags_core::{ContainerId, Errno};
use ptags_proto::{DeviceInfo, Response};

use super::{Caller, Daemon};
use crate::error::Error;
use crate::host::{self, CAP_SYS_ADMIN};
use crate::pipeline::records;

/// What a change of a container's list is decided on.
#[derive(Debug, Clone, Copy)]
struct Standing {
    /// CAP_SYS_ADMIN, outside any container.
    host_admin: bool,
    /// The container's owner (the orchestrator that set its ID).
    owner: bool,
}

/// Whether a caller of `standing` may take `contid`'s list from `old`
/// (`None`: not fenced) to `new` (`None`: cleared). An administrator may
/// make any change; the owner may only narrow.
fn may_change(
    standing: Standing,
    contid: u64,
    old: Option<&DeviceList>,
    new: Option<&DeviceList>,
) -> Result<(), Error> {
    if standing.host_admin {
        return Ok(());
    }
    if !standing.owner {
        return Err(not_permitted(contid));
    }
    let all = DeviceList::default();
    let narrowed = match new {
        Some(new) => new.narrows(old.unwrap_or(&all)),
        None if old.is_none() => Ok(()),
        None => Err("clearing it allows every device".to_owned()),
    };
    narrowed.map_err(|why| {
        Error::new(
            Errno::Eperm,
            format!("the owner may only narrow container {contid}'s device list: {why}"),
        )
    })
}

/// A list as the kernel program reads it: its default and exceptions,
/// with the access as BPF_DEVCG_ACC_* bits.
fn for_kernel(list: &DeviceList) -> (bool, Vec<DeviceException>) {
    let exceptions = list
        .exceptions
        .iter()
        .map(|e| {
            let bits = u32::from(e.access.bits());
            DeviceException {
                kind: match e.kind {
                    DeviceType::Block => 1,
                    DeviceType::Char => 2,
                    DeviceType::All => 3,
                },
                major: e.major,
                minor: e.minor,
                // rwm (1, 2, 4 here) to the kernel's mknod 1, read 2, write 4.
                access: (bits & 1) << 1 | (bits & 2) << 1 | (bits & 4) >> 2,
            }
        })
        .collect();
    (list.default_allow, exceptions)
}

impl Daemon<'_> {
    /// Puts the stored lists of known containers in the kernel, removes
    /// the others, and attaches the program while any is left.
    pub(super) fn restore_device_lists(&mut self) -> Result<()> {
        let mut kept = HashSet::new();
        for (contid, listing) in self.store.load_device_lists()? {
            if !self.registry.0.contains_key(&contid) {
                let _ = self.store.put_device_list(contid, None);
                continue;
            }
            match DeviceList::parse_listing(&listing) {
                Ok(list) => {
                    let (default_allow, exceptions) = for_kernel(&list);
                    self.kernel
                        .set_device_list(contid, Some((default_allow, &exceptions)))?;
                    self.device_lists.insert(contid, list);
                    kept.insert(contid);
                }
                // Never left unfenced for a bad row: denied everything.
                Err(e) => {
                    warn!("container {contid}'s stored device list is unreadable ({e}); it is denied every device");
                    let list = DeviceList {
                        default_allow: false,
                        exceptions: Vec::new(),
                    };
                    self.kernel.set_device_list(contid, Some((false, &[])))?;
                    self.device_lists.insert(contid, list);
                    kept.insert(contid);
                }
            }
        }
        for contid in self.kernel.device_list_containers() {
            if !kept.contains(&contid) {
                self.kernel.set_device_list(contid, None)?;
            }
        }
        self.sync_fence().map_err(|e| anyhow::anyhow!("{e}"))?;
        if !kept.is_empty() {
            info!("restored the device lists of {} containers", kept.len());
        }
        Ok(())
    }

    /// Attaches the program at the cgroup v2 root while any container has
    /// a list, and detaches it when none has.
    fn sync_fence(&self) -> Result<(), Error> {
        if self.device_lists.is_empty() {
            return self
                .kernel
                .unfence_devices()
                .map_err(|e| Error::internal(format!("{e}")));
        }
        self.fence()
    }

    /// Attaches the program at the cgroup v2 root, unless it is.
    fn fence(&self) -> Result<(), Error> {
        let root = host::cgroup::v2_root().ok_or_else(|| {
            Error::new(
                Errno::Eopnotsupp,
                "this machine has no cgroup v2 hierarchy: device lists cannot be enforced",
            )
        })?;
        self.kernel
            .fence_devices(&root)
            .map_err(|e| Error::internal(format!("attaching the device program: {e}")))
    }

    /// The owner's standing goes to its helpers too (its children, as a
    /// runtime's hook, whom the container-ID rules let set the ID on the
    /// runtime's behalf): an owner may only narrow.
    fn standing(&self, caller: &Caller, contid: u64) -> Standing {
        let helper = parent_of(caller.pid()).is_some_and(|p| self.owned_by(p, contid));
        Standing {
            host_admin: caller.creds.has_cap(CAP_SYS_ADMIN)
                && self.contid_of(caller.pid()).is_none(),
            owner: helper || self.is_owner(caller, contid),
        }
    }

    pub(super) fn device_write(
        &mut self,
        caller: &Caller,
        contid: u64,
        writes: &[String],
    ) -> Result<Response, Error> {
        let result = self.change_devices(caller, contid, Some(writes));
        self.record_devices(caller, contid, Some(writes), &result);
        result
    }

    pub(super) fn device_clear(&mut self, caller: &Caller, contid: u64) -> Result<Response, Error> {
        let result = self.change_devices(caller, contid, None);
        self.record_devices(caller, contid, None, &result);
        result
    }

    /// Applies `writes` to the list (`None`: clears it): checked whole,
    /// stored, then enforced.
    fn change_devices(
        &mut self,
        caller: &Caller,
        contid: u64,
        writes: Option<&[String]>,
    ) -> Result<Response, Error> {
        let standing = self.standing(caller, contid);
        if !self.registry.0.contains_key(&contid) {
            // Whether a container exists is told only to those who may
            // change it (an unknown one has no owner).
            return Err(match standing.host_admin {
                true => unknown(contid),
                false => not_permitted(contid),
            });
        }
        let old = self.device_lists.get(&contid);
        let new = match writes {
            None => None,
            Some(writes) => {
                let mut list = old.cloned().unwrap_or_default();
                for (i, w) in writes.iter().enumerate() {
                    let (allow, rule) = parse_write(w)
                        .map_err(|e| Error::new(Errno::Einval, e.to_string()).at_line(i + 1))?;
                    list.write(allow, rule)
                        .map_err(|why| Error::new(Errno::Enospc, why).at_line(i + 1))?;
                }
                Some(list)
            }
        };
        may_change(standing, contid, old, new.as_ref())?;
        if let (Some(new), Some(id)) = (&new, ContainerId::new(contid)) {
            // Within every ancestor's list (enforced along the chain
            // anyway: this tells the writer now).
            for ancestor in self.chain(id).0.iter().skip(1) {
                if let Some(theirs) = self.device_lists.get(&ancestor.get()) {
                    new.narrows(theirs).map_err(|why| {
                        Error::new(
                            Errno::Eperm,
                            format!("a nested list only narrows container {ancestor}'s: {why}"),
                        )
                    })?;
                }
            }
        }
        // Enforceable, then durable, then enforced: a list is never
        // stored that the kernel cannot hold the container to.
        if new.is_some() {
            self.fence()?;
        }
        let listing = new.as_ref().map(|l| l.rules().join("\n"));
        self.store
            .put_device_list(contid, listing.as_deref())
            .map_err(|e| Error::internal(format!("storing the device list: {e:#}")))?;
        let kernel = new.as_ref().map(for_kernel);
        self.kernel
            .set_device_list(contid, kernel.as_ref().map(|(d, e)| (*d, &e[..])))
            .map_err(|e| Error::internal(format!("{e}")))?;
        match new {
            Some(list) => self.device_lists.insert(contid, list),
            None => self.device_lists.remove(&contid),
        };
        self.sync_fence()?;
        Ok(Response::Devices(self.device_info(contid)))
    }

    /// Records a change of a list, or a refusal (within the caller's rate
    /// of refusals, as any request that changed nothing).
    fn record_devices(
        &mut self,
        caller: &Caller,
        contid: u64,
        writes: Option<&[String]>,
        result: &Result<Response, Error>,
    ) {
        if result.is_err() && !self.admit_unchanged(caller) {
            return;
        }
        let after = self.device_lists.get(&contid);
        let body = records::devices(
            contid,
            writes,
            after,
            &caller.subject,
            result.as_ref().err(),
        );
        self.outcome("CONTAINER_OP", body, Some(contid));
    }

    /// A container's list: for host administrators, its owner, and the
    /// tasks of the container and of its ancestors.
    pub(super) fn device_get(&self, caller: &Caller, contid: u64) -> Result<Response, Error> {
        match self.contid_of(caller.pid()) {
            Some(own) => {
                let within = ContainerId::new(contid)
                    .filter(|_| self.registry.0.contains_key(&contid))
                    .is_some_and(|id| self.chain(id).0.contains(&own));
                if !within && !self.is_owner(caller, contid) {
                    return Err(unknown(contid));
                }
            }
            None if caller.creds.has_cap(CAP_SYS_ADMIN) || self.is_owner(caller, contid) => {
                if !self.registry.0.contains_key(&contid) {
                    return Err(unknown(contid));
                }
            }
            None => {
                return Err(Error::new(
                    Errno::Eperm,
                    "reading a container's device list from the host needs CAP_SYS_ADMIN",
                ))
            }
        }
        Ok(Response::Devices(self.device_info(contid)))
    }

    fn device_info(&self, contid: u64) -> DeviceInfo {
        DeviceInfo {
            contid,
            rules: self
                .device_lists
                .get(&contid)
                .map(DeviceList::rules)
                .unwrap_or_default(),
        }
    }

    /// Forgets the list of a container that has ended (its row went with
    /// the container's).
    pub(super) fn forget_device_list(&mut self, contid: u64) {
        if self.device_lists.remove(&contid).is_none() {
            return;
        }
        if let Err(e) = self.kernel.set_device_list(contid, None) {
            warn!("removing container {contid}'s device list: {e}");
        }
        if let Err(e) = self.sync_fence() {
            warn!("{e}");
        }
    }
}

/// Process `pid`'s parent (`/proc/PID/stat`, after the name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn not_permitted(contid: u64) -> Error {
    Error::new(
        Errno::Eperm,
        format!("container {contid}'s device list may be changed by its owner or with CAP_SYS_ADMIN on the host"),
    )
}

fn unknown(contid: u64) -> Error {
    Error::new(Errno::Enoent, format!("no container {contid}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptags_core::devices::DeviceRule;

    fn list(writes: &[&str]) -> DeviceList {
        let mut l = DeviceList::default();
        for w in writes {
            let (allow, rule) = parse_write(w).unwrap();
            l.write(allow, rule).unwrap();
        }
        l
    }

    const ADMIN: Standing = Standing {
        host_admin: true,
        owner: false,
    };
    const OWNER: Standing = Standing {
        host_admin: false,
        owner: true,
    };
    const NOBODY: Standing = Standing {
        host_admin: false,
        owner: false,
    };

    #[test]
    fn an_administrator_may_do_anything_an_owner_only_narrow() {
        let runtime = list(&["deny a", "allow c 1:3 rwm", "allow c 1:5 rwm"]);
        let narrower = list(&["deny a", "allow c 1:3 rwm"]);
        let wider = list(&["deny a", "allow c 1:3 rwm", "allow b 8:0 r"]);
        for (old, new) in [
            (None, Some(&runtime)),
            (Some(&runtime), Some(&wider)),
            (Some(&runtime), None),
            (None, None),
        ] {
            assert!(may_change(ADMIN, 5, old, new).is_ok());
        }
        // An owner may fence a container not fenced yet, and narrow it.
        assert!(may_change(OWNER, 5, None, Some(&runtime)).is_ok());
        assert!(may_change(OWNER, 5, Some(&runtime), Some(&narrower)).is_ok());
        // ... but not widen it or lift it.
        let e = may_change(OWNER, 5, Some(&runtime), Some(&wider)).unwrap_err();
        assert_eq!(e.errno(), Errno::Eperm);
        assert!(e.to_string().contains("b 8:0 r"), "{e}");
        let e = may_change(OWNER, 5, Some(&runtime), None).unwrap_err();
        assert!(e.to_string().contains("every device"), "{e}");
        // Anyone else may do nothing.
        for (old, new) in [(None, Some(&runtime)), (Some(&runtime), Some(&narrower))] {
            assert_eq!(
                may_change(NOBODY, 5, old, new).unwrap_err().errno(),
                Errno::Eperm
            );
        }
    }

    #[test]
    fn the_kernel_gets_its_own_access_bits() {
        let l = list(&["deny a", "allow c 1:3 r", "allow c 1:5 w", "allow b *:* m"]);
        let (default_allow, e) = for_kernel(&l);
        assert!(!default_allow);
        let bits: Vec<(u32, Option<u32>, u32)> =
            e.iter().map(|e| (e.kind, e.minor, e.access)).collect();
        // BPF_DEVCG_ACC_READ 2, _WRITE 4, _MKNOD 1.
        assert_eq!(bits, [(2, Some(3), 2), (2, Some(5), 4), (1, None, 1)]);
        let all = DeviceRule::parse("c 1:3 rwm").unwrap();
        let (_, e) = for_kernel(&DeviceList {
            default_allow: true,
            exceptions: vec![all],
        });
        assert_eq!(e[0].access, 7);
    }
}
