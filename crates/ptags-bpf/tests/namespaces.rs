//! Namespace watching with real processes, as root: a clone with
//! CLONE_NEW* flags is seen exactly; an unshare or setns at the task's
//! next exec or fork, or at the next task listing (a sweep); the setter
//! and the task iterator read a task's namespaces as /proc shows them.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{kernel_or_skip, Shell};
use ptags_bpf::namespaces::{KINDS, OWN_KINDS};
use ptags_bpf::{Event, EventKind, Kernel, NsWatch, Seen, SetOp, TaskId};

fn inode(pid: u32, kind: &str) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .ino() as u32
}

fn slot(kind: &str) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap()
}

fn contained(k: &Kernel, task: TaskId, contid: u64) -> ptags_bpf::Set {
    k.set(
        task,
        &SetOp {
            contid: Some((contid, None)),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Namespace events of `pid` (as the acting task), waited for.
fn ns_events(k: &Kernel, reader: &ptags_bpf::EventReader<'_>, pid: u32) -> Vec<Event> {
    let mut found = Vec::new();
    for _ in 0..100 {
        found.extend(
            reader
                .poll(Duration::from_millis(50))
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == EventKind::Namespaces && e.pid == pid),
        );
        if !found.is_empty() {
            // What else the same moment sent.
            found.extend(
                reader
                    .drain()
                    .unwrap()
                    .into_iter()
                    .filter(|e| e.kind == EventKind::Namespaces && e.pid == pid),
            );
            return found;
        }
    }
    assert_eq!(k.lost().unwrap(), Default::default());
    panic!("no namespace event of {pid} in 5 s");
}

fn changed_kinds(e: &Event) -> Vec<&'static str> {
    let mut kinds: Vec<&str> = e
        .ns_change
        .as_ref()
        .unwrap()
        .slots()
        .map(|s| KINDS[s])
        .collect();
    kinds.sort_unstable();
    kinds
}

#[test]
fn the_setter_and_the_iterator_read_namespaces_as_proc_shows_them() {
    let Some(k) = kernel_or_skip("the_setter_and_the_iterator_read_namespaces") else {
        return;
    };
    k.set_events(false, false, NsWatch::Containers).unwrap();
    let sh = Shell::start();
    let pid = sh.child.id();
    let set = contained(&k, sh.task(), 7101);
    let ns = set.namespaces.expect("read as it entered");
    for kind in KINDS {
        assert_eq!(ns.inum_of(kind), Some(inode(pid, kind)), "{kind}");
    }
    assert!(ns.id.iter().all(|&id| id != 0), "{ns:?}");
    let rows = k.tasks().unwrap();
    let row = rows.iter().find(|r| r.id.tid == pid).unwrap();
    assert_eq!(row.namespaces, ns);
}

#[test]
fn a_clone_with_new_namespaces_is_seen_exactly() {
    let Some(k) = kernel_or_skip("a_clone_with_new_namespaces_is_seen_exactly") else {
        return;
    };
    k.set_events(false, false, NsWatch::Containers).unwrap();
    let reader = k.events().unwrap();
    // A child that clones with new namespaces once told to.
    let forked = Forked::start(|| {
        let flags = libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::SIGCHLD;
        // SAFETY: clone without a stack argument forks; the grandchild
        // leaves at once with _exit.
        unsafe {
            let grandchild = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
            if grandchild == 0 {
                libc::_exit(0);
            }
            libc::waitpid(grandchild as i32, std::ptr::null_mut(), 0);
        }
    });
    let child = forked.pid;
    contained(&k, TaskId::of(child).unwrap(), 7102);
    let (uts, ipc) = (inode(child, "uts"), inode(child, "ipc"));
    forked.go();
    let events = ns_events(&k, &reader, child);
    forked.finish();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    let change = e.ns_change.as_ref().unwrap();
    assert_eq!(change.seen, Seen::Clone);
    assert!(change.child_pid.is_some_and(|c| c != child));
    assert_eq!(e.contid, 7102);
    assert_eq!(changed_kinds(e), ["ipc", "uts"]);
    assert_eq!(change.old_inum[slot("uts")], uts);
    assert_eq!(change.old_inum[slot("ipc")], ipc);
    let after = e.namespaces.unwrap();
    assert_ne!(after.inum_of("uts").unwrap(), uts);
    assert_ne!(after.inum_of("ipc").unwrap(), ipc);
    assert_eq!(
        after.inum_of("net"),
        Some(inode(std::process::id(), "net")),
        "unchanged"
    );
}

#[test]
fn unshare_and_setns_are_found_at_the_next_exec() {
    let Some(k) = kernel_or_skip("unshare_and_setns_are_found_at_the_next_exec") else {
        return;
    };
    k.set_events(false, false, NsWatch::Containers).unwrap();
    let reader = k.events().unwrap();
    let mut sh = Shell::start();
    contained(&k, sh.task(), 7103);
    let host_net = inode(sh.child.id(), "net");
    // unshare(2) then exec: found at the exec, by the same process.
    let pid: u32 = sh.spawn_waiting("unshare -n -u sleep 60");
    let events = ns_events(&k, &reader, pid);
    let e = &events[0];
    assert_eq!(e.ns_change.as_ref().unwrap().seen, Seen::Exec, "{events:?}");
    assert_eq!(changed_kinds(e), ["net", "uts"]);
    assert_eq!(
        e.namespaces.unwrap().inum_of("net"),
        Some(inode(pid, "net"))
    );
    assert_eq!(
        e.ns_change.as_ref().unwrap().old_inum[slot("net")],
        host_net
    );
    // setns(2) into that network namespace, then exec.
    let entered: u32 = sh.spawn_waiting(&format!("nsenter -t {pid} -n sleep 60"));
    let events = ns_events(&k, &reader, entered);
    let e = &events[0];
    assert_eq!(e.ns_change.as_ref().unwrap().seen, Seen::Exec);
    assert_eq!(changed_kinds(e), ["net"]);
    assert_eq!(
        e.namespaces.unwrap().inum_of("net"),
        Some(inode(pid, "net"))
    );
    assert_eq!(
        e.ns_change.as_ref().unwrap().old_inum[slot("net")],
        host_net
    );
    sh.run(&format!("kill {pid} {entered}; echo done"));
}

#[test]
fn an_unshare_without_exec_is_found_by_a_sweep() {
    let Some(k) = kernel_or_skip("an_unshare_without_exec_is_found_by_a_sweep") else {
        return;
    };
    k.set_events(false, false, NsWatch::Containers).unwrap();
    let reader = k.events().unwrap();
    // A child that unshares once told to, and then waits.
    let forked = Forked::start(|| {
        // SAFETY: plain unshare(2).
        unsafe { libc::unshare(libc::CLONE_NEWUTS | libc::CLONE_NEWPID) };
    });
    let child = forked.pid;
    contained(&k, TaskId::of(child).unwrap(), 7104);
    let old_uts = inode(child, "uts");
    forked.go();
    assert!(
        reader.drain().unwrap().iter().all(|e| e.pid != child),
        "nothing before the sweep"
    );
    let rows = k.tasks().unwrap();
    let events = ns_events(&k, &reader, child);
    forked.finish();
    let e = &events[0];
    assert_eq!(e.ns_change.as_ref().unwrap().seen, Seen::Sweep);
    // unshare(CLONE_NEWPID) moves the namespace for children only.
    assert_eq!(changed_kinds(e), ["pid_for_children", "uts"]);
    assert_eq!(e.ns_change.as_ref().unwrap().old_inum[slot("uts")], old_uts);
    let row = rows.iter().find(|r| r.id.tid == child).unwrap();
    assert_eq!(row.namespaces, e.namespaces.unwrap());
    let ns = e.namespaces.unwrap();
    assert_eq!(
        ns.parent_pid,
        ns.inum_of("pid").unwrap(),
        "the new one's parent"
    );
    assert!(KINDS[..OWN_KINDS]
        .iter()
        .all(|k| ns.inum_of(k).unwrap() != 0));
}

#[test]
fn host_tasks_are_watched_when_asked() {
    let Some(k) = kernel_or_skip("host_tasks_are_watched_when_asked") else {
        return;
    };
    k.set_events(false, false, NsWatch::All).unwrap();
    let reader = k.events().unwrap();
    // An unlabelled shell: its children get storage at their fork.
    let mut sh = Shell::start();
    let pid: u32 = sh.spawn_waiting("unshare -u sleep 60");
    let events = ns_events(&k, &reader, pid);
    let e = &events[0];
    assert_eq!(e.ns_change.as_ref().unwrap().seen, Seen::Exec, "{events:?}");
    assert_eq!(changed_kinds(e), ["uts"]);
    assert_eq!(e.contid, u64::MAX, "in no container");
    sh.run(&format!("kill {pid}; echo done"));
    // Off again: nothing more is sent.
    k.set_events(false, false, NsWatch::Off).unwrap();
    let quiet: u32 = sh.spawn_waiting("unshare -u sleep 60");
    std::thread::sleep(Duration::from_millis(200));
    assert!(reader
        .drain()
        .unwrap()
        .iter()
        .all(|e| e.pid != quiet || e.kind != EventKind::Namespaces));
    sh.run(&format!("kill {quiet}; echo done"));
}

/// A forked child of this test that runs `body` when told to (`go`,
/// which returns once it has), then waits to be told to exit (`finish`).
struct Forked {
    pid: u32,
    go: i32,
    done: i32,
}

impl Forked {
    /// `body` runs in the child of a multi-threaded process: only
    /// async-signal-safe system calls.
    fn start(body: fn()) -> Forked {
        let (go_read, go) = pipe();
        let (done, done_write) = pipe();
        // SAFETY: the child makes only async-signal-safe system calls and
        // leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut b = [0u8; 1];
            // SAFETY: one byte to and from our pipes, then _exit.
            unsafe {
                libc::read(go_read, b.as_mut_ptr().cast(), 1);
                body();
                libc::write(done_write, b.as_ptr().cast(), 1);
                libc::read(go_read, b.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        Forked {
            pid: pid as u32,
            go,
            done,
        }
    }

    fn go(&self) {
        let mut b = [1u8; 1];
        // SAFETY: one byte to and from our pipes.
        unsafe {
            libc::write(self.go, b.as_ptr().cast(), 1);
            libc::read(self.done, b.as_mut_ptr().cast(), 1);
        }
    }

    fn finish(self) {
        // SAFETY: one byte to our pipe, then reaping our child.
        unsafe {
            libc::write(self.go, [1u8].as_ptr().cast(), 1);
            libc::waitpid(self.pid as i32, std::ptr::null_mut(), 0);
        }
    }
}

/// A pipe: (read end, write end), inherited across fork.
fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: pipe fills two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}
