//! `ptags audit report`: what a trail says about each container.

use std::collections::{BTreeMap, BTreeSet};

use super::query::{chain_ids, own_contid, Entry};
use super::Stamp;

/// The kinds of namespace an `NS_INFO` names (as `KINDns=`).
const NS_KINDS: [&str; 8] = ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];

/// One container's part of a trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerReport {
    pub contid: u64,
    /// The container it was nested in, if its creation is in the trail.
    pub parent: Option<u64>,
    pub first: Option<Stamp>,
    pub last: Option<Stamp>,
    /// How it came to be: `set` or `nest`, and by which process.
    pub created: Option<(String, u32)>,
    /// Processes later injected into it.
    pub injected: u64,
    pub dropped: bool,
    /// Processes seen acting in it (kernel events, execs, exits).
    pub processes: BTreeSet<u32>,
    pub execs: u64,
    pub exits: u64,
    pub tag_changes: u64,
    /// Kernel events that carried its ID.
    pub kernel_events: u64,
    /// Records naming it, by type.
    pub records: BTreeMap<String, u64>,
    /// The namespaces its tasks were recorded in, by kind (`net`, ...):
    /// from NS_INFO, NS_CREATE and NS_CHANGE.
    pub namespaces: BTreeMap<String, BTreeSet<u64>>,
    /// Its namespace events: NS_CREATE, NS_CHANGE and NS_DESTROY, counted.
    pub ns_events: BTreeMap<String, u64>,
}

/// The whole trail's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub containers: BTreeMap<u64, ContainerReport>,
    /// Records lost, by `source/reason`, as the trail's PTAGS_LOST
    /// records count them.
    pub lost: BTreeMap<String, u64>,
    pub events: u64,
    pub records: u64,
}

impl Report {
    /// Takes one event (the records sharing a stamp) into account.
    pub fn add(&mut self, event: &[Entry<'_>]) {
        self.events += 1;
        self.records += event.len() as u64;
        let kernel_pid = event
            .iter()
            .find(|e| e.kind != "CONTAINER_ID")
            .and_then(|e| e.field("pid"))
            .and_then(|p| p.parse::<u32>().ok());
        let namespace_event = event.iter().any(|e| e.kind.starts_with("NS_"));
        if namespace_event {
            self.add_namespaces(event);
        }
        for e in event {
            if e.kind == "PTAGS_LOST" {
                let key = format!(
                    "{}/{}",
                    e.field("source").unwrap_or("?"),
                    e.field("reason").unwrap_or("?")
                );
                let n = e.field("lost").and_then(|v| v.parse().ok()).unwrap_or(0);
                *self.lost.entry(key).or_default() += n;
                continue;
            }
            let Some(id) = own_contid(e) else {
                continue;
            };
            let c = self.container(id);
            c.first.get_or_insert(e.stamp);
            c.last = Some(e.stamp);
            *c.records.entry(e.kind.to_owned()).or_default() += 1;
            let pid = e.field("pid").and_then(|p| p.parse().ok());
            match e.kind {
                "CONTAINER_OP" => match e.field("op") {
                    Some(op @ ("set" | "nest")) if e.field("res") != Some("failed") => {
                        c.created = Some((op.to_owned(), pid.unwrap_or(0)));
                        if op == "nest" {
                            c.parent = e.field("old-contid").and_then(|v| v.parse().ok());
                        }
                    }
                    Some("inject") if e.field("res") != Some("failed") => c.injected += 1,
                    Some("drop") => c.dropped = true,
                    _ => {}
                },
                // A namespace record's CONTAINER_ID names its containers,
                // not a kernel event.
                "CONTAINER_ID" if !namespace_event => {
                    c.kernel_events += 1;
                    c.processes.extend(kernel_pid);
                }
                "PTAGS_EXEC" => {
                    c.execs += 1;
                    c.processes.extend(pid);
                }
                "PTAGS_EXIT" => {
                    c.exits += 1;
                    c.processes.extend(pid);
                }
                "PTAGS_OP" => c.tag_changes += 1,
                _ => {}
            }
        }
    }

    /// The report of container `id`, begun if it is new.
    fn container(&mut self, id: u64) -> &mut ContainerReport {
        self.containers
            .entry(id)
            .or_insert_with(|| ContainerReport {
                contid: id,
                ..ContainerReport::default()
            })
    }

    /// The namespace records of an event, for each container it names
    /// (its CONTAINER_ID, or the CONTAINER_OP an NS_INFO follows; an
    /// NS_DESTROY's names every container that was in the namespace).
    fn add_namespaces(&mut self, event: &[Entry<'_>]) {
        let ids: BTreeSet<u64> = event
            .iter()
            .filter(|e| matches!(e.kind, "CONTAINER_ID" | "CONTAINER_OP"))
            .filter_map(|e| e.field("contid"))
            .flat_map(|v| chain_ids(v).filter(|(up, _)| !up).map(|(_, id)| id))
            .collect();
        for id in ids {
            let c = self.container(id);
            for e in event.iter().filter(|e| e.kind.starts_with("NS_")) {
                *c.records.entry(e.kind.to_owned()).or_default() += 1;
                let inum = e.field("inum").and_then(|v| v.parse().ok());
                match (e.kind, e.field("nstype"), inum) {
                    ("NS_INFO", _, _) => {
                        for kind in NS_KINDS {
                            let inum = e.field(&format!("{kind}ns")).and_then(|v| v.parse().ok());
                            if let Some(inum) = inum {
                                c.namespaces
                                    .entry(kind.to_owned())
                                    .or_default()
                                    .insert(inum);
                            }
                        }
                    }
                    (kind, Some(nstype), Some(inum)) => {
                        *c.ns_events.entry(kind.to_owned()).or_default() += 1;
                        if kind != "NS_DESTROY" {
                            c.namespaces
                                .entry(nstype.to_owned())
                                .or_default()
                                .insert(inum);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report of these records, taken an event (a stamp) at a time.
    fn report_of(lines: &[&str]) -> Report {
        let entries: Vec<Entry<'_>> = lines.iter().map(|l| Entry::parse(l).unwrap()).collect();
        let mut report = Report::default();
        for event in entries.chunk_by(|a, b| a.stamp == b.stamp) {
            report.add(event);
        }
        report
    }

    #[test]
    fn a_trail_is_summed_per_container() {
        let lines = [
            "type=CONTAINER_OP msg=audit(1.000:4294967297): op=set opid=10 contid=7 old-contid=-1 pid=5 res=success",
            "type=CONTAINER_OP msg=audit(1.100:4294967298): op=nest opid=12 contid=8 old-contid=7 pid=10 res=success",
            "type=PTAGS_EXEC msg=audit(1.200:4294967299): pid=12 contid=8,^7 comm=\"sh\"",
            "type=PTAGS_OP msg=audit(1.300:4294967300): op=write opid=12 contid=8,^7 text=\"+a\" res=success",
            "type=SYSCALL msg=audit(1.400:90): syscall=2 ppid=10 pid=12",
            "type=CONTAINER_ID msg=audit(1.400:90): contid=8,^7",
            "type=PTAGS_LOST msg=audit(1.500:4294967301): source=kernel reason=backlog lost=3 total=3",
            "type=PTAGS_EXIT msg=audit(1.600:4294967302): pid=12 contid=8,^7",
            "type=CONTAINER_OP msg=audit(1.700:4294967303): op=drop contid=8",
        ];
        let report = report_of(&lines);
        assert_eq!(report.events, 8);
        assert_eq!(report.records, 9);
        assert_eq!(report.lost["kernel/backlog"], 3);
        let outer = &report.containers[&7];
        assert_eq!(outer.created, Some(("set".into(), 5)));
        let inner = &report.containers[&8];
        assert_eq!(inner.parent, Some(7));
        assert_eq!(inner.created, Some(("nest".into(), 10)));
        assert_eq!(
            (
                inner.execs,
                inner.exits,
                inner.tag_changes,
                inner.kernel_events
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(inner.processes.iter().copied().collect::<Vec<_>>(), [12]);
        assert!(inner.dropped);
        assert_eq!(inner.records["CONTAINER_OP"], 2);
    }

    #[test]
    fn namespaces_are_reported_per_container() {
        let lines = [
            "type=CONTAINER_OP msg=audit(1.000:4294967297): op=set opid=10 contid=7 old-contid=-1 pid=5 res=success",
            "type=NS_INFO msg=audit(1.000:4294967297): dev=00:04 cgroupns=1 ipcns=2 mntns=3 netns=4 pidns=5 timens=6 userns=7 utsns=8",
            "type=NS_CREATE msg=audit(1.100:4294967299): op=unshare nstype=net inum=40 pid=10 detected=fork",
            "type=CONTAINER_ID msg=audit(1.100:4294967299): contid=7",
            "type=NS_CHANGE msg=audit(1.200:4294967301): op=setns nstype=net inum=40 old-inum=4 pid=11 detected=exec",
            "type=CONTAINER_ID msg=audit(1.200:4294967301): contid=9,^7",
            "type=NS_DESTROY msg=audit(1.300:4294967303): nstype=net inum=40 detected=sweep found=no-task",
            "type=CONTAINER_ID msg=audit(1.300:4294967303): contid=7,9,^7",
        ];
        let report = report_of(&lines);
        let outer = &report.containers[&7];
        assert_eq!(outer.created, Some(("set".into(), 5)));
        assert_eq!(outer.namespaces["net"], BTreeSet::from([4, 40]));
        assert_eq!(outer.namespaces["uts"], BTreeSet::from([8]));
        assert_eq!(outer.ns_events["NS_CREATE"], 1);
        assert_eq!(outer.ns_events["NS_DESTROY"], 1);
        assert_eq!(
            outer.kernel_events, 0,
            "a namespace record's CONTAINER_ID is not a kernel event"
        );
        let inner = &report.containers[&9];
        assert_eq!(inner.namespaces["net"], BTreeSet::from([40]));
        assert_eq!(inner.ns_events["NS_CHANGE"], 1);
        assert_eq!(inner.ns_events["NS_DESTROY"], 1);
    }
}
