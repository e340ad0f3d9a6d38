//! The trail's namespaces (docs/records.md: `NS_INFO`, `NS_CREATE`,
//! `NS_CHANGE`, `NS_DESTROY`). Which namespaces are on record, whether a
//! namespace a task moved to is new or was there before, and which no
//! task uses any more. Pure: the pipeline hands it the kernel's events
//! and task listings, and writes what it returns.

use std::collections::{BTreeSet, HashMap, HashSet};

use ptags_audit::{encode_untrusted, format_fields};
use ptags_bpf::namespaces::{kind_of_slot, KINDS, OWN_KINDS};
use ptags_bpf::{Event, Namespaces, Seen, TaskRow};

/// A namespace on record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OnRecord {
    kind: &'static str,
    inum: u32,
    /// The containers whose tasks were recorded in it.
    containers: BTreeSet<u64>,
}

/// A record to write: its type and body, and the containers its
/// `CONTAINER_ID` names (the acting task's, or a namespace's users').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsRecord {
    pub kind: &'static str,
    pub body: String,
    pub containers: Vec<u64>,
    /// For a change: the namespace it names (ID, slot, inode number),
    /// put on record ([`NsTrail::written`]) only if the record is
    /// written, so that a flood the rate limit holds back does not come
    /// back as NS_DESTROY records.
    pub names: Option<(u64, usize, u32)>,
}

pub struct NsTrail {
    /// The nsfs device, as `dev=` gives it.
    dev: String,
    /// Namespaces on record, by the kernel's never-reused ID.
    on_record: HashMap<u64, OnRecord>,
    /// The namespaces some task was in at the last sweep. (The kernel
    /// hands out namespace IDs in batches per CPU: they tell namespaces
    /// apart, not which is newer.)
    in_use: HashSet<u64>,
    /// Namespaces told destroyed (no task in them), the last `FORGOTTEN`:
    /// one kept alive by a descriptor and entered again is entered, not
    /// made. IDs are never reused, so a match is that namespace.
    destroyed: HashSet<u64>,
    destroyed_order: std::collections::VecDeque<u64>,
}

/// Destroyed namespaces remembered.
const FORGOTTEN: usize = 65536;

/// The slot of a task's own namespace of the kind of `slot` (its "for
/// children" slots count as the PID and time kinds).
fn own_slot(slot: usize) -> usize {
    KINDS
        .iter()
        .position(|k| *k == kind_of_slot(slot))
        .expect("a kind")
}

/// The nsfs device of this machine, as `stat /proc/self/ns/net` gives it.
pub fn nsfs_device() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").map_or_else(
        |_| "unset".to_owned(),
        |m| {
            let dev = m.dev();
            format!("{:02x}:{:02x}", libc::major(dev), libc::minor(dev))
        },
    )
}

/// The inode numbers of the namespaces mounted in the daemon's mount
/// namespace (nsfs mounts: `ip netns add` makes one): held by no task,
/// they were there before any task entered them.
pub fn nsfs_mounts() -> HashSet<u32> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(" - nsfs "))
        .filter_map(|l| {
            let root = l.split(' ').nth(3)?;
            let inum = root.split_once(":[")?.1.strip_suffix(']')?;
            inum.parse().ok()
        })
        .collect()
}

/// The acting task's fields, as process records give them.
fn actor(e: &Event, exe: Option<&[u8]>) -> Vec<(String, String)> {
    let mut fields = vec![("pid".to_owned(), e.pid.to_string())];
    // The event's own numbers are the acting thread's: its own PID
    // namespace's number is the process's only for the main thread.
    if e.tid != e.pid {
        fields.push(("tid".to_owned(), e.tid.to_string()));
    } else if e.local.tid != e.pid {
        fields.push(("ns-pid".to_owned(), e.local.tid.to_string()));
    }
    fields.extend([
        ("ppid".to_owned(), e.ppid.to_string()),
        ("uid".to_owned(), e.uid.to_string()),
        ("auid".to_owned(), e.loginuid.to_string()),
        ("ses".to_owned(), e.sessionid.to_string()),
        ("comm".to_owned(), encode_untrusted(e.comm.as_bytes())),
    ]);
    if let Some(exe) = exe {
        fields.push(("exe".to_owned(), encode_untrusted(exe)));
    }
    fields
}

impl NsTrail {
    pub fn new(dev: String) -> NsTrail {
        NsTrail {
            dev,
            on_record: HashMap::new(),
            in_use: HashSet::new(),
            destroyed: HashSet::new(),
            destroyed_order: std::collections::VecDeque::new(),
        }
    }

    fn put_on_record(&mut self, id: u64, slot: usize, inum: u32, contid: Option<u64>) {
        let entry = self.on_record.entry(id).or_insert_with(|| OnRecord {
            kind: kind_of_slot(slot),
            inum,
            containers: BTreeSet::new(),
        });
        entry.containers.extend(contid);
    }

    /// `NS_INFO`: a task's namespaces as it was put in container
    /// `contid`, which puts them on record.
    pub fn info(&mut self, ns: &Namespaces, contid: Option<u64>) -> String {
        let mut fields = vec![("dev".to_owned(), self.dev.clone())];
        for (slot, kind) in KINDS.iter().enumerate().take(OWN_KINDS) {
            fields.push((format!("{kind}ns"), ns.inum[slot].to_string()));
            self.put_on_record(ns.id[slot], slot, ns.inum[slot], contid);
        }
        format_fields(&fields)
    }

    /// The records of a change of a task's namespaces (an event of kind
    /// `Namespaces`): `NS_CREATE` for a namespace made by a clone, or one
    /// that was neither on record, nor a task's at the last sweep, nor
    /// mounted (`mounted`: the inode numbers of nsfs mounts, `ip netns`,
    /// read only when a change was found late and nothing else knew the
    /// namespace) (an unshare); `NS_CHANGE` for one that was there before
    /// (a setns). `exe`: the acting task's program, where it could be read.
    pub fn change(
        &mut self,
        e: &Event,
        exe: Option<&[u8]>,
        mounted: impl FnOnce() -> HashSet<u32>,
    ) -> Vec<NsRecord> {
        let mut mounted = Some(mounted);
        let mut mounts: Option<HashSet<u32>> = None;
        let (Some(change), Some(after)) = (&e.ns_change, &e.namespaces) else {
            return Vec::new();
        };
        let contid = (e.contid != u64::MAX).then_some(e.contid);
        let mut out = Vec::new();
        for slot in change.slots() {
            let own = own_slot(slot);
            // One namespace, seen twice (setns to a time namespace moves
            // both the task's and its children's): told once.
            if own != slot && change.changed & (1 << own) != 0 && after.id[own] == after.id[slot] {
                continue;
            }
            let (id, inum) = (after.id[slot], after.inum[slot]);
            let created = change.seen == Seen::Clone
                || !(self.on_record.contains_key(&id)
                    || self.in_use.contains(&id)
                    || self.destroyed.contains(&id)
                    || mounts
                        .get_or_insert_with(|| mounted.take().map(|f| f()).unwrap_or_default())
                        .contains(&inum));
            let mut fields = vec![];
            if created {
                let op = if change.seen == Seen::Clone {
                    "clone"
                } else {
                    "unshare"
                };
                fields.push(("op".to_owned(), op.to_owned()));
            } else {
                fields.push(("op".to_owned(), "setns".to_owned()));
            }
            fields.push(("nstype".to_owned(), kind_of_slot(slot).to_owned()));
            fields.push(("inum".to_owned(), inum.to_string()));
            if created {
                if let Some(parent) = after.parent_of(slot).filter(|&p| p != 0) {
                    fields.push(("parent".to_owned(), parent.to_string()));
                }
            } else {
                fields.push(("old-inum".to_owned(), change.old_inum[slot].to_string()));
            }
            fields.extend(actor(e, exe));
            if let Some(child) = change.child_pid {
                fields.push(("new-pid".to_owned(), child.to_string()));
            }
            fields.push(("detected".to_owned(), change.seen.name().to_owned()));
            out.push(NsRecord {
                kind: if created { "NS_CREATE" } else { "NS_CHANGE" },
                body: format_fields(&fields),
                containers: contid.into_iter().collect(),
                names: Some((id, slot, inum)),
            });
        }
        out
    }

    /// Remembers the namespaces in use in a listing of every task: one a
    /// task is found in later that was none of these nor on record was
    /// made since.
    pub fn learn(&mut self, rows: &[TaskRow]) {
        self.in_use = rows
            .iter()
            .filter(|r| r.namespaces.known())
            .flat_map(|r| r.namespaces.id)
            .collect();
    }

    /// A change record of [`NsTrail::change`] was written: its namespace
    /// is on record.
    pub fn written(&mut self, record: &NsRecord) {
        if let Some((id, slot, inum)) = record.names {
            self.put_on_record(id, slot, inum, record.containers.first().copied());
        }
    }

    /// After a listing of every task (a sweep): `NS_DESTROY` for each
    /// namespace on record that no task uses any more, and the newest
    /// namespaces in use remembered.
    pub fn swept(&mut self, rows: &[TaskRow]) -> Vec<NsRecord> {
        self.learn(rows);
        let in_use = &self.in_use;
        let mut gone: Vec<(u64, OnRecord)> = Vec::new();
        self.on_record.retain(|id, r| {
            let used = in_use.contains(id);
            if !used {
                gone.push((*id, r.clone()));
            }
            used
        });
        gone.sort_unstable_by_key(|(id, _)| *id);
        for (id, _) in &gone {
            if self.destroyed_order.len() >= FORGOTTEN {
                if let Some(old) = self.destroyed_order.pop_front() {
                    self.destroyed.remove(&old);
                }
            }
            self.destroyed.insert(*id);
            self.destroyed_order.push_back(*id);
        }
        gone.into_iter()
            .map(|(_, r)| NsRecord {
                kind: "NS_DESTROY",
                body: format_fields(&[
                    ("nstype".to_owned(), r.kind.to_owned()),
                    ("inum".to_owned(), r.inum.to_string()),
                    ("detected".to_owned(), "sweep".to_owned()),
                    ("found".to_owned(), "no-task".to_owned()),
                ]),
                containers: r.containers.into_iter().collect(),
                names: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptags_bpf::namespaces::SLOTS;
    use ptags_bpf::{EventKind, NsChange, TaskId, TaskState};

    fn ns(base: u64) -> Namespaces {
        let mut n = Namespaces::default();
        for s in 0..SLOTS {
            n.id[s] = base + s as u64;
            n.inum[s] = 4_026_531_000 + (base + s as u64) as u32;
        }
        n.id[8] = n.id[4];
        n.inum[8] = n.inum[4];
        n.id[9] = n.id[5];
        n.inum[9] = n.inum[5];
        n
    }

    fn event(seen: Seen, changed: &[usize], before: &Namespaces, after: Namespaces) -> Event {
        Event {
            kind: EventKind::Namespaces,
            pid: 50,
            tid: 50,
            local: ptags_bpf::LocalPids {
                level: 1,
                pid: 1,
                tid: 1,
                ppid: 0,
            },
            ppid: 49,
            uid: 0,
            loginuid: u32::MAX,
            sessionid: u32::MAX,
            time_ns: 0,
            contid: 7,
            set_id: 0,
            old_contid: None,
            comm: "sh".into(),
            namespaces: Some(after),
            ns_change: Some(NsChange {
                seen,
                changed: changed.iter().map(|s| 1 << s).sum(),
                old_inum: before.inum,
                child_pid: (seen == Seen::Clone).then_some(51),
            }),
            device: None,
        }
    }

    fn row(n: Namespaces) -> TaskRow {
        TaskRow {
            id: TaskId {
                tid: 1,
                start_ticks: 1,
            },
            pid: 1,
            ppid: 0,
            comm: "x".into(),
            mnt_ns: 0,
            state: TaskState::default(),
            namespaces: n,
        }
    }

    #[test]
    fn info_names_every_kind_of_a_task() {
        let mut t = NsTrail::new("00:04".into());
        let body = t.info(&ns(100), Some(7));
        assert_eq!(
            body,
            "dev=00:04 cgroupns=4026531100 ipcns=4026531101 mntns=4026531102 netns=4026531103 pidns=4026531104 timens=4026531105 userns=4026531106 utsns=4026531107"
        );
        assert_eq!(t.on_record.len(), 8);
    }

    #[test]
    fn new_namespaces_are_created_and_known_ones_entered() {
        let mut t = NsTrail::new("00:04".into());
        let host = ns(100);
        t.swept(&[row(host)]);
        // A clone: created, whatever is known.
        let mut cloned = host;
        cloned.id[3] = 200;
        cloned.inum[3] = 4_026_532_200;
        let none = HashSet::new();
        let r = t.change(
            &event(Seen::Clone, &[3], &host, cloned),
            Some(b"/bin/sh"),
            || none.clone(),
        );
        t.written(&r[0]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, "NS_CREATE");
        assert!(
            r[0].body
                .starts_with("op=clone nstype=net inum=4026532200 pid=50 ns-pid=1 ppid=49"),
            "{}",
            r[0].body
        );
        assert!(
            r[0].body
                .ends_with("exe=\"/bin/sh\" new-pid=51 detected=clone"),
            "{}",
            r[0].body
        );
        assert_eq!(r[0].containers, [7]);
        // Found at an exec: newer than the sweep and not on record, so
        // an unshare; the PID namespace for children is the pid kind,
        // with its parent.
        let mut unshared = host;
        unshared.id[8] = 300;
        unshared.inum[8] = 4_026_532_300;
        unshared.parent_pid = host.inum[4];
        let r = t.change(&event(Seen::Exec, &[8], &host, unshared), None, || {
            none.clone()
        });
        assert_eq!(r[0].kind, "NS_CREATE");
        assert!(
            r[0].body.starts_with(&format!(
                "op=unshare nstype=pid inum=4026532300 parent={}",
                host.inum[4]
            )),
            "{}",
            r[0].body
        );
        // Entering the clone's namespace, on record: a change.
        let r = t.change(&event(Seen::Sweep, &[3], &host, cloned), None, || {
            none.clone()
        });
        assert_eq!(r[0].kind, "NS_CHANGE");
        assert!(
            r[0].body.starts_with(&format!(
                "op=setns nstype=net inum=4026532200 old-inum={}",
                host.inum[3]
            )),
            "{}",
            r[0].body
        );
        assert!(r[0].body.ends_with("detected=sweep"));
        // Entering one never on record and no task's at the last sweep:
        // made since, unless mounted (`ip netns add`), which was there.
        let mut other = host;
        other.id[7] = 50;
        other.inum[7] = 4_026_532_050;
        let r = t.change(&event(Seen::Fork, &[7], &host, other), None, || {
            none.clone()
        });
        assert_eq!(r[0].kind, "NS_CREATE");
        let mounted = HashSet::from([4_026_532_050]);
        let r = t.change(&event(Seen::Fork, &[7], &host, other), None, || {
            mounted.clone()
        });
        assert_eq!(r[0].kind, "NS_CHANGE");
        // Namespace IDs are not in order of making: one with a smaller
        // ID than those in use, not in use itself, is still new.
        let mut lower = host;
        lower.id[6] = 1;
        lower.inum[6] = 4_026_532_001;
        let r = t.change(&event(Seen::Exec, &[6], &host, lower), None, || {
            none.clone()
        });
        assert_eq!(r[0].kind, "NS_CREATE");
    }

    #[test]
    fn a_time_namespace_entered_is_told_once() {
        let mut t = NsTrail::new("00:04".into());
        let host = ns(100);
        let mut after = host;
        for s in [5, 9] {
            after.id[s] = 400;
            after.inum[s] = 4_026_532_400;
        }
        let r = t.change(
            &event(Seen::Exec, &[5, 9], &host, after),
            None,
            HashSet::new,
        );
        assert_eq!(r.len(), 1, "{r:?}");
    }

    #[test]
    fn namespaces_no_task_uses_are_destroyed_once() {
        let mut t = NsTrail::new("00:04".into());
        let host = ns(100);
        t.info(&host, Some(7));
        let mut cloned = host;
        cloned.id[3] = 200;
        cloned.inum[3] = 4_026_532_200;
        let r = t.change(&event(Seen::Clone, &[3], &host, cloned), None, HashSet::new);
        // Not written (the rate limit held it back): not on record, and
        // so never destroyed either.
        let mut held_back = host;
        held_back.id[1] = 300;
        held_back.inum[1] = 4_026_532_300;
        t.change(
            &event(Seen::Clone, &[1], &host, held_back),
            None,
            HashSet::new,
        );
        t.written(&r[0]);
        assert!(t.swept(&[row(host), row(cloned)]).is_empty());
        let gone = t.swept(&[row(host)]);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].kind, "NS_DESTROY");
        assert_eq!(
            gone[0].body,
            "nstype=net inum=4026532200 detected=sweep found=no-task"
        );
        assert_eq!(gone[0].containers, [7]);
        assert!(t.swept(&[row(host)]).is_empty(), "once");
        // Kept alive by a descriptor and entered again: entered, not made.
        let r = t.change(&event(Seen::Sweep, &[3], &host, cloned), None, HashSet::new);
        assert_eq!(r[0].kind, "NS_CHANGE");
        // An exiting task's row (no namespaces) uses none.
        assert_eq!(t.swept(&[row(Namespaces::default())]).len(), 8);
    }
}
