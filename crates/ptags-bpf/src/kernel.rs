//! The one owner of the loaded programs, their links, maps and pins.

use std::cell::RefCell;
use std::io::Read;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, RingBuffer, RingBufferBuilder};

use crate::facts::FactsReader;
use crate::namespaces::{Namespaces, NsChange};
use crate::pins;
use crate::procfs::{self, pidfd_open};
use crate::skel::types::{
    ptags_config, ptags_event, ptags_event_kind as K, ptags_event_mask as M, ptags_join,
    ptags_layout, ptags_lost_reason as L, ptags_set_args, ptags_set_ops as O, ptags_task,
    ptags_task_row,
};
use crate::skel::PtagsSkelBuilder;
use crate::task::{ContainerEntry, SetOp, TaskId, TaskRow, TaskState};
use crate::{Context, Error, Result};

// SAFETY: these are plain C structs of integers (no padding holes that
// matter for reading, no pointers), generated from intf.h.
unsafe impl plain::Plain for ptags_task {}
// SAFETY: as above.
unsafe impl plain::Plain for ptags_event {}
// SAFETY: as above.
unsafe impl plain::Plain for ptags_config {}
// SAFETY: as above.
unsafe impl plain::Plain for ptags_task_row {}
// SAFETY: as above.
unsafe impl plain::Plain for crate::skel::types::ptags_device_key {}
// SAFETY: as above.
unsafe impl plain::Plain for crate::skel::types::ptags_device_list {}
// SAFETY: as above.
unsafe impl plain::Plain for crate::skel::types::ptags_container {}
// SAFETY: as above.
unsafe impl plain::Plain for ptags_join {}

pub(crate) fn bytes_of<T: plain::Plain>(v: &T) -> &[u8] {
    // SAFETY: T is Plain: any byte of it may be read.
    unsafe { plain::as_bytes(v) }
}

fn from_bytes<T: plain::Plain + Default>(bytes: &[u8]) -> T {
    let mut v = T::default();
    // A short buffer (never from the kernel's own maps) leaves zeroes.
    let _ = plain::copy_from_bytes(&mut v, bytes);
    v
}

/// How to load.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pin maps, links and the setter under this bpffs directory, and
    /// reuse what is pinned there. `None`: nothing is pinned and dropping
    /// the [`Kernel`] detaches everything.
    pub pin_dir: Option<PathBuf>,
    /// Size of the container table (ignored when reusing pins).
    pub max_containers: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            pin_dir: None,
            max_containers: 65536,
        }
    }
}

/// A task's pids as its own PID namespace sees them, and how deep that
/// namespace is below the initial one. A parent outside it is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalPids {
    pub level: u32,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
}

/// An event from the kernel programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub pid: u32,
    pub tid: u32,
    /// The same, as the task's own PID namespace sees them.
    pub local: LocalPids,
    pub ppid: u32,
    pub uid: u32,
    pub loginuid: u32,
    pub sessionid: u32,
    /// CLOCK_BOOTTIME, in nanoseconds.
    pub time_ns: u64,
    pub contid: u64,
    pub set_id: u64,
    /// For joins: the task's container before.
    pub old_contid: Option<u64>,
    pub comm: String,
    /// For joins, the namespaces the task joined with; for namespace
    /// changes, those after.
    pub namespaces: Option<Namespaces>,
    /// For namespace changes: what changed, and where it was seen.
    pub ns_change: Option<NsChange>,
    /// For device denials: which device, what access, whose list.
    pub device: Option<DeviceDenial>,
}

/// A device access a container's list refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDenial {
    /// The container whose list refused (the task's, or an ancestor's).
    pub list: u64,
    /// `BPF_DEVCG_DEV_BLOCK` (1) or `BPF_DEVCG_DEV_CHAR` (2).
    pub kind: u32,
    pub major: u32,
    pub minor: u32,
    /// `BPF_DEVCG_ACC_*` bits: mknod 1, read 2, write 4.
    pub access: u32,
    /// Denials of the same list not sent before this one (over the
    /// kernel's rate of events).
    pub suppressed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A container's last task exited.
    Drop,
    Exec,
    Exit,
    /// A task entered a container's mount namespace and joined it.
    Join,
    /// A task of another container entered one and kept its own ID.
    JoinRefused,
    /// A watched task's namespaces changed. `contid` is its container,
    /// `u64::MAX` for none (a host task, when those are watched).
    Namespaces,
    /// A container's device list refused a task's open or mknod.
    Device,
}

/// Whose namespace changes the programs watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsWatch {
    Off,
    /// Tasks in containers (and those about to enter one).
    Containers,
    /// Every task: each gets task storage at its fork, or at the next
    /// task listing for those older than the watch.
    All,
}

/// What a change of a task's state found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Set {
    /// Its container before.
    pub old_contid: Option<u64>,
    /// Its namespaces as it entered a container (or a pending one): read
    /// by the setter, where it ran. `None` for other changes.
    pub namespaces: Option<Namespaces>,
}

/// A container's setns policy: who enters the mount namespace it is
/// keyed by joins container `contid` with these tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Join {
    pub contid: u64,
    pub set_id: u64,
    pub kept_id: u64,
}

impl Event {
    /// An event as the programs submit it; `None` for a record of another
    /// size or an unknown kind, which user space counts and refuses
    /// rather than read as zeroes.
    fn parse(data: &[u8]) -> Option<Event> {
        if data.len() != size_of::<ptags_event>() {
            return None;
        }
        let raw: ptags_event = from_bytes(data);
        let kind = match K(raw.kind) {
            K::PTAGS_EVENT_DROP => EventKind::Drop,
            K::PTAGS_EVENT_EXEC => EventKind::Exec,
            K::PTAGS_EVENT_EXIT => EventKind::Exit,
            K::PTAGS_EVENT_JOIN => EventKind::Join,
            K::PTAGS_EVENT_JOIN_REFUSED => EventKind::JoinRefused,
            K::PTAGS_EVENT_NS => EventKind::Namespaces,
            K::PTAGS_EVENT_DEVICE => EventKind::Device,
            _ => return None,
        };
        let namespaces = Namespaces::from_raw(&raw.ns);
        let ns_change = match kind {
            EventKind::Namespaces => Some(NsChange::from_raw(
                raw.ns_seen,
                raw.ns_changed,
                raw.old_ns_inum,
                raw.child_pid,
            )?),
            _ => None,
        };
        Some(Event {
            kind,
            pid: raw.pid,
            tid: raw.tid,
            local: LocalPids {
                level: raw.pid_level,
                pid: raw.ns_tgid,
                tid: raw.ns_pid,
                ppid: raw.ns_ppid,
            },
            ppid: raw.ppid,
            uid: raw.uid,
            loginuid: raw.loginuid,
            sessionid: raw.sessionid,
            time_ns: raw.time_ns,
            contid: raw.contid,
            set_id: raw.set_id,
            old_contid: (raw.old_contid != u64::MAX).then_some(raw.old_contid),
            comm: crate::task::comm(&raw.comm),
            namespaces: namespaces.known().then_some(namespaces),
            ns_change,
            device: (kind == EventKind::Device).then_some(DeviceDenial {
                list: raw.dev.list,
                kind: raw.dev.r#type,
                major: raw.dev.major,
                minor: raw.dev.minor,
                access: raw.dev.access,
                suppressed: raw.dev.suppressed,
            }),
        })
    }
}

/// The programs [`Kernel::open`] attaches (or finds attached through
/// their pins), by attach point.
pub const ATTACHED: [&str; 4] = [
    "tp_btf/sched_process_fork",
    "tp_btf/sched_process_exec",
    "tp_btf/sched_process_exit",
    "tp_btf/cgroup_attach_task",
];

/// What the kernel side could not do, per reason, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LostCounts {
    pub drop_events: u64,
    pub exec_events: u64,
    pub exit_events: u64,
    pub task_storage: u64,
    pub container_missing: u64,
    pub join_events: u64,
    /// A container's count went below zero (a task counted out twice).
    pub container_underflow: u64,
    /// Namespace changes the ring buffer had no room for.
    pub ns_events: u64,
    /// Device denials the ring buffer had no room for.
    pub device_events: u64,
}

impl LostCounts {
    /// Each counter by its field name, for reports that list them all.
    /// Those named `*_events` are events that never reached user space.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("drop_events", self.drop_events),
            ("exec_events", self.exec_events),
            ("exit_events", self.exit_events),
            ("join_events", self.join_events),
            ("ns_events", self.ns_events),
            ("device_events", self.device_events),
            ("task_storage", self.task_storage),
            ("container_missing", self.container_missing),
            ("container_underflow", self.container_underflow),
        ]
    }
}

/// The loaded kernel side. Dropping it detaches whatever is not pinned.
pub struct Kernel {
    task_state: MapHandle,
    containers: MapHandle,
    joins: MapHandle,
    config: MapHandle,
    lost: MapHandle,
    events: MapHandle,
    drops: MapHandle,
    copy_events: MapHandle,
    pub(crate) device_lists: MapHandle,
    pub(crate) device_rules: MapHandle,
    set_prog: OwnedFd,
    tasks_prog: OwnedFd,
    facts: FactsReader,
    pub(crate) dev_prog: OwnedFd,
    /// The device program's link at the cgroup root while it is
    /// attached and not pinned.
    pub(crate) dev_link: std::sync::Mutex<Option<OwnedFd>>,
    /// Held while not pinned: dropping them detaches the programs.
    _links: Vec<Link>,
    pub(crate) pin_dir: Option<PathBuf>,
}

/// Attaches the programs that always run, in the order of
/// [`pins::LINKS`] and [`ATTACHED`].
fn attach_tracepoints(progs: &crate::skel::PtagsProgs<'_>) -> Result<[Link; 4]> {
    let attach = |prog: &libbpf_rs::ProgramMut<'_>, point: &str| {
        prog.attach().context(|| format!("attaching to {point}"))
    };
    Ok([
        attach(&progs.ptags_fork, ATTACHED[0])?,
        attach(&progs.ptags_exec, ATTACHED[1])?,
        attach(&progs.ptags_exit, ATTACHED[2])?,
        attach(&progs.ptags_cgroup_attach, ATTACHED[3])?,
    ])
}

/// The version of the programs this build carries (build.rs).
fn programs_version() -> u64 {
    u64::from_str_radix(env!("PTAGS_PROGRAMS"), 16).expect("build.rs writes hex")
}

impl Kernel {
    /// Loads and attaches the programs, or reuses those pinned under
    /// `options.pin_dir`.
    pub fn open(options: &Options) -> Result<Kernel> {
        if let Some(dir) = &options.pin_dir {
            pins::ensure_bpffs(dir)?;
            if pins::present(dir) {
                return Kernel::reuse(dir);
            }
        }
        Kernel::load(options)
    }

    /// Removes the pins under `dir`: the programs detach once no process
    /// holds them.
    pub fn reset(dir: &Path) -> Result<()> {
        pins::remove_all(dir)
    }

    fn load(options: &Options) -> Result<Kernel> {
        // The maps are charged to the memory cgroup they are made in.
        let at_root = crate::memcg::at_root();
        let mut storage = MaybeUninit::uninit();
        let mut open = PtagsSkelBuilder::default()
            .open(&mut storage)
            .context(|| "opening the BPF object".into())?;
        open.maps
            .containers
            .set_max_entries(options.max_containers)
            .context(|| "sizing the container table".into())?;
        // At most one policy per container.
        open.maps
            .joins
            .set_max_entries(options.max_containers)
            .context(|| "sizing the setns policy table".into())?;
        let skel = open.load().context(|| "loading the BPF programs".into())?;
        drop(at_root);
        let handle = |m: &libbpf_rs::Map, name: &str| {
            MapHandle::try_from(m).context(|| format!("duplicating map {name}"))
        };
        let mut kernel = Kernel {
            task_state: handle(&skel.maps.task_state, "task_state")?,
            containers: handle(&skel.maps.containers, "containers")?,
            joins: handle(&skel.maps.joins, "joins")?,
            config: handle(&skel.maps.ptags_config, "ptags_config")?,
            lost: handle(&skel.maps.lost, "lost")?,
            events: handle(&skel.maps.events, "events")?,
            drops: handle(&skel.maps.drops, "drops")?,
            copy_events: handle(&skel.maps.copy_events, "copy_events")?,
            device_lists: handle(&skel.maps.device_lists, "device_lists")?,
            device_rules: handle(&skel.maps.device_rules, "device_rules")?,
            set_prog: skel
                .progs
                .ptags_set
                .as_fd()
                .try_clone_to_owned()
                .context(|| "duplicating the setter program".into())?,
            tasks_prog: skel
                .progs
                .ptags_tasks
                .as_fd()
                .try_clone_to_owned()
                .context(|| "duplicating the task iterator".into())?,
            facts: FactsReader::new(
                skel.progs
                    .ptags_facts
                    .as_fd()
                    .try_clone_to_owned()
                    .context(|| "duplicating the facts program".into())?,
                skel.progs
                    .ptags_peer
                    .as_fd()
                    .try_clone_to_owned()
                    .context(|| "duplicating the peer program".into())?,
            ),
            dev_prog: skel
                .progs
                .ptags_dev
                .as_fd()
                .try_clone_to_owned()
                .context(|| "duplicating the device program".into())?,
            dev_link: std::sync::Mutex::new(None),
            _links: Vec::new(),
            pin_dir: options.pin_dir.clone(),
        };
        kernel.write_config(0)?;
        let mut links = attach_tracepoints(&skel.progs)?;
        if let Some(dir) = &options.pin_dir {
            kernel.pin_all(dir, &mut links).inspect_err(|_| {
                let _ = pins::remove_all(dir);
            })?;
        }
        kernel._links = links.into();
        Ok(kernel)
    }

    fn pin_all(&mut self, dir: &Path, links: &mut [Link]) -> Result<()> {
        std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        let maps = [
            &mut self.task_state,
            &mut self.containers,
            &mut self.joins,
            &mut self.config,
            &mut self.lost,
            &mut self.events,
            &mut self.drops,
            &mut self.copy_events,
            &mut self.device_lists,
            &mut self.device_rules,
        ];
        for (map, name) in maps.into_iter().zip(pins::MAPS) {
            map.pin(pins::path(dir, name))
                .context(|| format!("pinning map {name}"))?;
        }
        for (link, name) in links.iter_mut().zip(pins::LINKS) {
            link.pin(pins::path(dir, name))
                .context(|| format!("pinning {name}"))?;
        }
        pins::pin_fd(&self.set_prog, dir, pins::SET_PROG)?;
        pins::pin_fd(&self.tasks_prog, dir, pins::TASKS_PROG)?;
        let [facts, peer] = self.facts.progs();
        pins::pin_fd(facts, dir, pins::FACTS_PROG)?;
        pins::pin_fd(peer, dir, pins::PEER_PROG)?;
        pins::pin_fd(&self.dev_prog, dir, pins::DEV_PROG)?;
        Ok(())
    }

    /// Replaces pinned programs of another version (a fixed build) with
    /// this build's, keeping the maps and so every task's state. The new
    /// programs attach before the old ones detach: for that instant both
    /// run, the old first, and the new fork program leaves alone a child
    /// the old one labelled; exec and exit are idempotent (a pending state
    /// is taken once, a task is counted out once).
    fn replace_programs(dir: &Path, config: &MapHandle, cfg: ptags_config) -> Result<()> {
        // The old links stay attached while these fds are held.
        let old: Vec<OwnedFd> = pins::LINKS
            .iter()
            .filter(|name| pins::path(dir, name).exists())
            .map(|name| pins::open_prog(dir, name))
            .collect::<Result<_>>()?;
        let mut storage = MaybeUninit::uninit();
        let mut open = PtagsSkelBuilder::default()
            .open(&mut storage)
            .context(|| "opening the BPF object".into())?;
        let maps = &mut open.maps;
        for (map, name) in [
            &mut maps.task_state,
            &mut maps.containers,
            &mut maps.joins,
            &mut maps.ptags_config,
            &mut maps.lost,
            &mut maps.events,
            &mut maps.drops,
            &mut maps.copy_events,
            &mut maps.device_lists,
            &mut maps.device_rules,
        ]
        .into_iter()
        .zip(pins::MAPS)
        {
            map.reuse_pinned_map(pins::path(dir, name))
                .context(|| format!("reusing the pinned map {name}"))?;
        }
        let skel = open.load().context(|| "loading the BPF programs".into())?;
        let progs = &skel.progs;
        let mut links = attach_tracepoints(progs)?;
        for (link, name) in links.iter_mut().zip(pins::LINKS) {
            pins::unpin(dir, name)?;
            link.pin(pins::path(dir, name))
                .context(|| format!("pinning {name}"))?;
        }
        for (prog, name) in [
            (progs.ptags_set.as_fd(), pins::SET_PROG),
            (progs.ptags_tasks.as_fd(), pins::TASKS_PROG),
            (progs.ptags_facts.as_fd(), pins::FACTS_PROG),
            (progs.ptags_peer.as_fd(), pins::PEER_PROG),
            (progs.ptags_dev.as_fd(), pins::DEV_PROG),
        ] {
            pins::unpin(dir, name)?;
            pins::pin_fd(
                &prog
                    .try_clone_to_owned()
                    .context(|| format!("duplicating {name}"))?,
                dir,
                name,
            )?;
        }
        // The device fence swaps its program in place: no instant without one.
        if pins::path(dir, pins::DEV_LINK).exists() {
            let link = pins::open_prog(dir, pins::DEV_LINK)?;
            // SAFETY: valid link and program fds; no options.
            let ret = unsafe {
                libbpf_sys::bpf_link_update(
                    link.as_raw_fd(),
                    progs.ptags_dev.as_fd().as_raw_fd(),
                    std::ptr::null(),
                )
            };
            if ret < 0 {
                return Err(std::io::Error::from_raw_os_error(-ret))
                    .context(|| "replacing the device program".into());
            }
        }
        let cfg = ptags_config {
            programs: programs_version(),
            ..cfg
        };
        config
            .update(&0u32.to_ne_bytes(), bytes_of(&cfg), MapFlags::ANY)
            .context(|| "writing the config map".into())?;
        // The old programs detach here.
        drop(old);
        Ok(())
    }

    fn reuse(dir: &Path) -> Result<Kernel> {
        let open_map = |name: &str| {
            MapHandle::from_pinned_path(pins::path(dir, name))
                .context(|| format!("opening pinned map {name} under {}", dir.display()))
        };
        let config = open_map("ptags_config")?;
        let mismatch = |found: String| Error::LayoutMismatch {
            dir: dir.display().to_string(),
            found,
            expected: ptags_layout::PTAGS_LAYOUT_VERSION.0,
        };
        let cfg: ptags_config = match config.lookup(&0u32.to_ne_bytes(), MapFlags::ANY) {
            Ok(Some(v)) if v.len() == size_of::<ptags_config>() => from_bytes(&v),
            _ => return Err(mismatch("an unreadable config".into())),
        };
        if cfg.layout_version != ptags_layout::PTAGS_LAYOUT_VERSION.0 {
            return Err(mismatch(format!("layout {}", cfg.layout_version)));
        }
        let task_state = open_map("task_state")?;
        if task_state.value_size() as usize != size_of::<ptags_task>() {
            return Err(mismatch(format!(
                "task state of {} bytes",
                task_state.value_size()
            )));
        }
        if cfg.programs != programs_version() {
            Kernel::replace_programs(dir, &config, cfg)?;
        }
        let set_prog = pins::open_prog(dir, pins::SET_PROG)
            .map_err(|_| mismatch(format!("no pinned {}", pins::SET_PROG)))?;
        let tasks_prog = pins::open_prog(dir, pins::TASKS_PROG)
            .map_err(|_| mismatch(format!("no pinned {}", pins::TASKS_PROG)))?;
        let facts_prog = pins::open_prog(dir, pins::FACTS_PROG)
            .map_err(|_| mismatch(format!("no pinned {}", pins::FACTS_PROG)))?;
        let peer_prog = pins::open_prog(dir, pins::PEER_PROG)
            .map_err(|_| mismatch(format!("no pinned {}", pins::PEER_PROG)))?;
        let dev_prog = pins::open_prog(dir, pins::DEV_PROG)
            .map_err(|_| mismatch(format!("no pinned {}", pins::DEV_PROG)))?;
        for name in pins::LINKS {
            if !pins::path(dir, name).exists() {
                return Err(mismatch(format!("no pinned {name}")));
            }
        }
        Ok(Kernel {
            task_state,
            containers: open_map("containers")?,
            joins: open_map("joins")?,
            config,
            lost: open_map("lost")?,
            events: open_map("events")?,
            drops: open_map("drops")?,
            copy_events: open_map("copy_events")?,
            device_lists: open_map("device_lists")?,
            device_rules: open_map("device_rules")?,
            set_prog,
            tasks_prog,
            facts: FactsReader::new(facts_prog, peer_prog),
            dev_prog,
            dev_link: std::sync::Mutex::new(None),
            _links: Vec::new(),
            pin_dir: Some(dir.to_owned()),
        })
    }

    /// A pidfd for this one thread, checked to still be the same task:
    /// the pidfd pins it, so if it is the one named now, it is for as
    /// long as the fd is held.
    fn hold(&self, task: TaskId) -> Result<OwnedFd> {
        let fd = pidfd_open(task.tid, procfs::PIDFD_THREAD).ok_or(Error::NoSuchTask(task.tid))?;
        // The kernel's lookup by pid misses PID 1's threads on the VMs
        // seen here, as the task iterator does (see `tasks`): a task
        // /proc shows but the facts program cannot find is named by /proc.
        let now = match self.facts.read(task.tid) {
            Ok(facts) => facts.id,
            Err(Error::NoSuchTask(_)) => TaskId::of(task.tid)?,
            Err(e) => return Err(e),
        };
        if now != task {
            return Err(Error::NoSuchTask(task.tid));
        }
        Ok(fd)
    }

    /// The reader of tasks' facts, for any thread.
    pub fn facts(&self) -> &FactsReader {
        &self.facts
    }

    /// Where this instance is pinned, if it is.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    fn write_config(&self, event_mask: u32) -> Result<()> {
        let cfg = ptags_config {
            layout_version: ptags_layout::PTAGS_LAYOUT_VERSION.0,
            event_mask,
            programs: programs_version(),
        };
        self.config
            .update(&0u32.to_ne_bytes(), bytes_of(&cfg), MapFlags::ANY)
            .context(|| "writing the config map".into())
    }

    /// Switches exec and exit events of tasks in containers on or off,
    /// and says whose namespace changes are watched. Drop events are
    /// always on.
    pub fn set_events(&self, exec: bool, exit: bool, namespaces: NsWatch) -> Result<()> {
        let mut mask = 0;
        if exec {
            mask |= M::PTAGS_EVENTS_EXEC.0;
        }
        if exit {
            mask |= M::PTAGS_EVENTS_EXIT.0;
        }
        mask |= match namespaces {
            NsWatch::Off => 0,
            NsWatch::Containers => M::PTAGS_EVENTS_NS.0,
            NsWatch::All => M::PTAGS_EVENTS_NS.0 | M::PTAGS_EVENTS_NS_HOST.0,
        };
        self.write_config(mask)
    }

    /// The exec and exit events wanted of the tasks of container
    /// `contid` whatever `set_events` says (a container's audit copy
    /// asked for them); none clears the entry.
    pub fn set_copy_events(&self, contid: u64, exec: bool, exit: bool) -> Result<()> {
        let mut mask = 0u32;
        if exec {
            mask |= M::PTAGS_EVENTS_EXEC.0;
        }
        if exit {
            mask |= M::PTAGS_EVENTS_EXIT.0;
        }
        let key = contid.to_ne_bytes();
        if mask == 0 {
            return match self.copy_events.delete(&key) {
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
                r => r.context(|| format!("clearing the events of container {contid}")),
            };
        }
        self.copy_events
            .update(&key, &mask.to_ne_bytes(), MapFlags::ANY)
            .context(|| format!("asking for the events of container {contid}"))
    }

    /// The containers whose events `set_copy_events` asked for (a
    /// daemon starting again clears those it has no policy for).
    pub fn copy_event_containers(&self) -> Vec<u64> {
        self.copy_events
            .keys()
            .filter_map(|k| Some(u64::from_ne_bytes(k.as_slice().try_into().ok()?)))
            .collect()
    }

    /// The state of one task (thread), read through a pidfd. `None` when
    /// the kernel holds nothing for it (no tags, no container).
    pub fn task_state(&self, task: TaskId) -> Result<Option<TaskState>> {
        self.state_through(&self.hold(task)?, task.tid)
    }

    /// The state of process `pid`: its main thread's, or, when the main
    /// thread has exited and others live on, a live thread's (a process
    /// cannot leave its container by ending its main thread). `None` for
    /// a process the kernel holds nothing for. `Err(NoSuchTask)` once the
    /// process is gone; no start-time check: the caller tells a reused
    /// pid by the exit events it has seen, or holds a pidfd.
    pub fn process_state(&self, pid: u32) -> Result<Option<TaskState>> {
        let process = pidfd_open(pid, 0).ok_or(Error::NoSuchTask(pid))?;
        let main = self.state_through(&process, pid)?;
        if !main.is_some_and(|s| s.exited) {
            return Ok(main);
        }
        for tid in procfs::thread_ids(pid).ok_or(Error::NoSuchTask(pid))? {
            // Gone since the listing, or a TID reused by another process.
            let Ok(thread) = self.facts.read(tid) else {
                continue;
            };
            match thread.state {
                Some(state) if thread.tgid == pid && !state.exited => return Ok(Some(state)),
                _ => {}
            }
        }
        Ok(main)
    }

    fn state_through(&self, pidfd: &OwnedFd, tid: u32) -> Result<Option<TaskState>> {
        match self
            .task_state
            .lookup(&pidfd.as_raw_fd().to_ne_bytes(), MapFlags::LOCK)
        {
            Ok(Some(bytes)) => {
                let task: ptags_task = from_bytes(&bytes);
                Ok(Some(TaskState::from_raw(&task.state)))
            }
            Ok(None) => Ok(None),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context(|| format!("reading the state of task {tid}")),
        }
    }

    /// Changes a task's state atomically in the kernel, with container
    /// accounting. Refuses a task that exited or whose TID was reused.
    /// Returns the state's container ID before the change, and the
    /// task's namespaces when it enters a container.
    pub fn set(&self, task: TaskId, op: &SetOp) -> Result<Set> {
        let _pin = self.hold(task)?;
        self.set_unpinned(task, op)
    }

    /// As [`Kernel::set`], without first holding a pidfd of the task and
    /// checking it: only the kernel's own checks (start time, exiting,
    /// not yet made by fork) stand between the call and the task. For
    /// tests that race the kernel, as a hostile caller of the pinned setter
    /// would; the daemon always uses `set`.
    #[doc(hidden)]
    pub fn set_unpinned(&self, task: TaskId, op: &SetOp) -> Result<Set> {
        let mut args = ptags_set_args {
            tid: task.tid,
            start_ticks: task.start_ticks,
            pending_contid: u64::MAX,
            ..Default::default()
        };
        if let Some((set, kept)) = op.tags {
            args.ops |= O::PTAGS_SET_TAGS.0;
            args.set_id = set;
            args.kept_id = kept;
        }
        if let Some((id, entry)) = op.contid {
            args.ops |= O::PTAGS_SET_CONTID.0;
            args.contid = id;
            args.container = entry.unwrap_or(ContainerEntry::top_level()).to_raw();
        }
        if op.alone {
            args.ops |= O::PTAGS_SET_ALONE.0;
        }
        if let Some((set, kept, contid)) = op.pending {
            args.ops |= O::PTAGS_SET_PENDING.0;
            args.pending_set_id = set;
            args.pending_kept_id = kept;
            if let Some((id, entry)) = contid {
                args.pending_contid = id;
                args.container = entry.unwrap_or(ContainerEntry::top_level()).to_raw();
            }
        }
        self.run_setter(&mut args)?;
        if args.result != 0 {
            return Err(match -args.result {
                libc::ESRCH => Error::NoSuchTask(task.tid),
                libc::EBUSY => Error::NotAlone(task.tid),
                errno => Error::SetFailed {
                    tid: task.tid,
                    errno,
                },
            });
        }
        let had =
            args.old_flags & crate::skel::types::ptags_task_flags::PTAGS_TASK_HAS_CONTID.0 != 0;
        let namespaces = Namespaces::from_raw(&args.ns);
        Ok(Set {
            old_contid: had.then_some(args.old_contid),
            namespaces: namespaces.known().then_some(namespaces),
        })
    }

    fn run_setter(&self, args: &mut ptags_set_args) -> Result<()> {
        let ctx = args as *mut ptags_set_args;
        // Syscall programs take no ctx_out: the kernel writes the context
        // back into ctx_in.
        let mut opts = libbpf_sys::bpf_test_run_opts {
            sz: size_of::<libbpf_sys::bpf_test_run_opts>() as _,
            ctx_in: ctx.cast(),
            ctx_size_in: size_of::<ptags_set_args>() as u32,
            ..Default::default()
        };
        // SAFETY: opts points at `args`, which lives across the call and is
        // exactly the size the program's context declares.
        let ret =
            unsafe { libbpf_sys::bpf_prog_test_run_opts(self.set_prog.as_raw_fd(), &mut opts) };
        if ret != 0 {
            return Err(std::io::Error::from_raw_os_error(-ret))
                .context(|| "running the setter program".into());
        }
        Ok(())
    }

    /// The IDs of every row of the container table.
    pub fn container_ids(&self) -> Vec<u64> {
        self.containers
            .keys()
            .filter_map(|k| Some(u64::from_ne_bytes(k.try_into().ok()?)))
            .collect()
    }

    /// A row of the container table.
    pub fn container(&self, id: u64) -> Result<Option<ContainerEntry>> {
        let v = self
            .containers
            .lookup(&id.to_ne_bytes(), MapFlags::ANY)
            .context(|| format!("reading container {id}"))?;
        Ok(v.map(|b| ContainerEntry::from_raw(&from_bytes(&b))))
    }

    /// Deletes the row of a dropped container (no live or pending task:
    /// nothing in the kernel can then count a task into it). Rows are
    /// never deleted in the kernel, so that no task can enter a row being
    /// deleted; user space reaps them after handling the drop event.
    /// Returns whether the row was deleted.
    pub fn reap_container(&self, id: u64) -> Result<bool> {
        match self.container(id)? {
            Some(row) if !row.has_members() => {
                self.containers
                    .delete(&id.to_ne_bytes())
                    .context(|| format!("deleting container {id}"))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Switches the setns policy on for the mount namespace whose ID
    /// ([`crate::mount_namespace_id`]) is `mnt_ns` (or changes it).
    pub fn set_join(&self, mnt_ns: u64, join: &Join) -> Result<()> {
        let raw = ptags_join {
            contid: join.contid,
            set_id: join.set_id,
            kept_id: join.kept_id,
        };
        self.joins
            .update(&mnt_ns.to_ne_bytes(), bytes_of(&raw), MapFlags::ANY)
            .context(|| format!("setting the setns policy of mount namespace {mnt_ns}"))
    }

    /// Switches it off; whether it was on.
    pub fn remove_join(&self, mnt_ns: u64) -> Result<bool> {
        let removed = match self.joins.delete(&mnt_ns.to_ne_bytes()) {
            Ok(()) => true,
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => false,
            Err(e) => return Err(e).context(|| format!("removing the setns policy of {mnt_ns}")),
        };
        Ok(removed)
    }

    /// Whether a link attached on demand is: held, or pinned as `name`.
    pub(crate) fn link_present(
        &self,
        held: &std::sync::Mutex<Option<OwnedFd>>,
        name: &str,
    ) -> bool {
        held.lock().unwrap_or_else(|e| e.into_inner()).is_some()
            || self
                .pin_dir
                .as_ref()
                .is_some_and(|d| pins::path(d, name).exists())
    }

    /// Every mount namespace with a setns policy, and the policy.
    pub fn joins(&self) -> Vec<(u64, Join)> {
        self.joins
            .keys()
            .filter_map(|k| {
                let v = self.joins.lookup(&k, MapFlags::ANY).ok()??;
                let raw: ptags_join = from_bytes(&v);
                let ns = u64::from_ne_bytes(k.try_into().ok()?);
                Some((
                    ns,
                    Join {
                        contid: raw.contid,
                        set_id: raw.set_id,
                        kept_id: raw.kept_id,
                    },
                ))
            })
            .collect()
    }

    /// What the kernel could not do, per reason.
    pub fn lost(&self) -> Result<LostCounts> {
        let read = |reason: L| -> Result<u64> {
            let per_cpu = self
                .lost
                .lookup_percpu(&reason.0.to_ne_bytes(), MapFlags::ANY)
                .context(|| "reading the lost counters".into())?
                .unwrap_or_default();
            Ok(per_cpu
                .iter()
                .map(|b| u64::from_ne_bytes(b[..8].try_into().unwrap_or_default()))
                .sum())
        };
        Ok(LostCounts {
            drop_events: read(L::PTAGS_LOST_RINGBUF_DROP)?,
            exec_events: read(L::PTAGS_LOST_RINGBUF_EXEC)?,
            exit_events: read(L::PTAGS_LOST_RINGBUF_EXIT)?,
            task_storage: read(L::PTAGS_LOST_TASK_STORAGE)?,
            container_missing: read(L::PTAGS_LOST_CONTAINER)?,
            join_events: read(L::PTAGS_LOST_RINGBUF_JOIN)?,
            container_underflow: read(L::PTAGS_LOST_UNDERFLOW)?,
            ns_events: read(L::PTAGS_LOST_RINGBUF_NS)?,
            device_events: read(L::PTAGS_LOST_RINGBUF_DEVICE)?,
        })
    }

    /// Every task of the machine with its state, walked by the task
    /// iterator in one pass.
    pub fn tasks(&self) -> Result<Vec<TaskRow>> {
        // SAFETY: a valid iterator program fd; no target fd or options.
        let link = unsafe {
            libbpf_sys::bpf_link_create(
                self.tasks_prog.as_raw_fd(),
                0,
                libbpf_sys::BPF_TRACE_ITER,
                std::ptr::null(),
            )
        };
        if link < 0 {
            return Err(std::io::Error::from_raw_os_error(-link))
                .context(|| "attaching the task iterator".into());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let link = unsafe { OwnedFd::from_raw_fd(link) };
        // SAFETY: a valid iterator link fd.
        let iter = unsafe { libbpf_sys::bpf_iter_create(link.as_raw_fd()) };
        if iter < 0 {
            return Err(std::io::Error::from_raw_os_error(-iter))
                .context(|| "starting the task iterator".into());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let mut iter = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(iter) });
        let mut bytes = Vec::new();
        iter.read_to_end(&mut bytes)
            .context(|| "reading the task iterator".into())?;
        let size = size_of::<ptags_task_row>();
        let mut rows: Vec<TaskRow> = bytes
            .chunks_exact(size)
            .map(|row| TaskRow::from_raw(&from_bytes(row)))
            .collect();
        // The task iterator of the kernels seen here (6.18) never visits
        // PID 1's threads: read their state directly so that the list is
        // complete.
        let mut missing = Vec::new();
        for tid in procfs::thread_ids(1).unwrap_or_default() {
            if rows.iter().any(|r| r.id.tid == tid) {
                continue;
            }
            let Ok(task) = TaskId::of(tid) else {
                continue;
            };
            let comm =
                std::fs::read_to_string(format!("/proc/1/task/{tid}/comm")).unwrap_or_default();
            missing.push(TaskRow {
                id: task,
                pid: 1,
                ppid: 0,
                comm: comm.trim_end().to_owned(),
                mnt_ns: crate::task::mount_namespace_id(1).unwrap_or(0),
                state: self.task_state(task)?.unwrap_or_default(),
                // Not read for these: PID 1 is in the host's namespaces,
                // which other tasks name.
                namespaces: Namespaces::default(),
            });
        }
        rows.splice(0..0, missing);
        Ok(rows)
    }

    /// A reader of the event ring buffer, set up once and polled many
    /// times (the epoll set and the ring's mapping live as long as it).
    pub fn events(&self) -> Result<EventReader<'_>> {
        let queue = Rc::new(RefCell::new(Vec::new()));
        let malformed = Rc::new(std::cell::Cell::new(0u64));
        let mut builder = RingBufferBuilder::new();
        // Both rings feed one queue. A drop is consumed before the exits
        // queued with it (the drop ring is added first): harmless, since
        // exit events only name the container of late records.
        for (ring, name) in [(&self.drops, "drop"), (&self.events, "event")] {
            let (sink, bad) = (Rc::clone(&queue), Rc::clone(&malformed));
            builder
                .add(ring, move |data: &[u8]| {
                    match Event::parse(data) {
                        Some(e) => sink.borrow_mut().push(e),
                        None => bad.set(bad.get() + 1),
                    }
                    0
                })
                .context(|| format!("opening the {name} ring buffer"))?;
        }
        let ring = builder
            .build()
            .context(|| "opening the event ring buffer".into())?;
        Ok(EventReader {
            ring,
            queue,
            malformed,
        })
    }
}

/// Events from the kernel programs, in the order they were queued.
pub struct EventReader<'k> {
    ring: RingBuffer<'k>,
    queue: Rc<RefCell<Vec<Event>>>,
    malformed: Rc<std::cell::Cell<u64>>,
}

impl EventReader<'_> {
    /// Ring-buffer records refused since the reader was made: of another
    /// size than an event, or of an unknown kind (a program of another
    /// version).
    pub fn malformed(&self) -> u64 {
        self.malformed.get()
    }

    /// Waits up to `timeout` for events and returns all that are queued.
    pub fn poll(&self, timeout: Duration) -> Result<Vec<Event>> {
        self.ring
            .poll(timeout)
            .context(|| "polling the event ring buffer".into())?;
        self.drain()
    }

    /// Returns the events queued now, without waiting. No system call:
    /// the ring buffer is read from shared memory, so this is cheap
    /// enough to call for every audit event.
    pub fn drain(&self) -> Result<Vec<Event>> {
        self.ring
            .consume()
            .context(|| "reading the event ring buffer".into())?;
        Ok(std::mem::take(&mut *self.queue.borrow_mut()))
    }
}

impl ContainerEntry {
    fn top_level() -> ContainerEntry {
        ContainerEntry {
            parent: None,
            owner_pid: 0,
            owner_start_ticks: 0,
            live: 0,
            pending: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_records_of_another_size_or_kind_are_refused() {
        let event = ptags_event {
            kind: K::PTAGS_EVENT_EXIT.0,
            pid: 7,
            ..Default::default()
        };
        let bytes = bytes_of(&event);
        assert!(Event::parse(bytes).is_some_and(|e| e.kind == EventKind::Exit && e.pid == 7));
        assert!(Event::parse(&bytes[..bytes.len() - 1]).is_none(), "short");
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(Event::parse(&longer).is_none(), "long");
        let unknown = ptags_event { kind: 99, ..event };
        assert!(Event::parse(bytes_of(&unknown)).is_none(), "unknown kind");
    }
}
