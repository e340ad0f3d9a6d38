//! The setns policy, with real processes, as root: a task that enters a
//! container's mount namespace joins it where programs already run (its
//! next fork or exec, a move into a cgroup, a listing of all tasks),
//! never by a program on every system call; a task of another container
//! keeps its ID, reported once; a namespace made later with a reused
//! inode number is not the container's.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    kernel_or_skip, only_child, owned_by_this_test, state, wait_for, wait_for_comm, Shell,
    TestCgroup,
};
use ptags_bpf::{EventKind, Join, Kernel, SetOp, TaskId};

/// The ID the setns policy is keyed by.
fn mount_namespace(pid: u32) -> u64 {
    ptags_bpf::mount_namespace_id(pid).unwrap()
}

fn mount_namespace_inode(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .unwrap()
        .ino()
}

#[test]
fn entering_a_mount_namespace_with_a_policy_joins_its_container() {
    let Some(k) = kernel_or_skip("entering_a_mount_namespace_joins") else {
        return;
    };
    let entry = owned_by_this_test();
    let spawn = |args: &[&str]| {
        let child = Command::new(args[0]).args(&args[1..]).spawn().unwrap();
        wait_for_comm(child.id(), "sleep");
        child
    };
    let mut children = vec![spawn(&["unshare", "-m", "sleep", "30"])];
    let member = children[0].id();
    k.set(
        TaskId::of(member).unwrap(),
        &SetOp {
            tags: Some((11, 12)),
            contid: Some((5353, Some(entry))),
            ..Default::default()
        },
    )
    .unwrap();
    let ns = mount_namespace(member);
    let join = Join {
        contid: 5353,
        set_id: 11,
        kept_id: 12,
    };
    k.set_join(ns, &join).unwrap();
    assert_eq!(k.joins(), [(ns, join)]);
    let events = k.events().unwrap();
    let target = member.to_string();

    // A task without an ID joins at the exec that follows its setns, and
    // the exec prunes as usual.
    children.push(spawn(&["nsenter", "-t", &target, "-m", "sleep", "30"]));
    let entered = state(&k, children[1].id());
    assert_eq!(
        (entered.contid, entered.set_id, entered.kept_id),
        (Some(5353), 12, 12)
    );
    assert_eq!(k.container(5353).unwrap().unwrap().live, 2);

    // A task of another container keeps its ID, and the kernel says so
    // once: not again when it forks and its child execs.
    let mut other = Shell::start();
    k.set(
        other.task(),
        &SetOp {
            contid: Some((6464, Some(entry))),
            ..Default::default()
        },
    )
    .unwrap();
    let stayed = other.spawn_waiting(&format!(
        "nsenter -t {target} -m sh -c 'sleep 30 & exec sleep 30'"
    ));
    wait_for_comm(stayed, "sleep");
    let stayed_child = only_child(stayed);
    wait_for_comm(stayed_child, "sleep");
    for pid in [stayed, stayed_child] {
        assert_eq!(state(&k, pid).contid, Some(6464));
    }
    assert_eq!(k.container(5353).unwrap().unwrap().live, 2);

    // Without the policy, entering changes nothing.
    assert!(k.remove_join(ns).unwrap());
    children.push(spawn(&["nsenter", "-t", &target, "-m", "sleep", "30"]));
    assert_eq!(state(&k, children[2].id()).contid, None);

    let mut seen = Vec::new();
    wait_for(|| {
        seen.extend(events.poll(Duration::from_millis(20)).unwrap());
        seen.len() >= 2
    });
    // Nothing more comes: no second refusal.
    seen.extend(events.poll(Duration::from_millis(200)).unwrap());
    let joins: Vec<_> = seen
        .iter()
        .map(|e| (e.kind, e.contid, e.old_contid))
        .collect();
    assert_eq!(
        joins,
        [
            (EventKind::Join, 5353, None),
            (EventKind::JoinRefused, 5353, Some(6464))
        ]
    );
    for mut c in children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    for pid in [stayed, stayed_child] {
        // SAFETY: killing pids this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert_eq!(k.lost().unwrap(), Default::default());
}

/// A child that enters the mount namespace of `target` by setns(2) and
/// then neither forks nor execs, and with `fork_after`, its child made
/// after the setns (which waits too). Returns their pids. One thread, as
/// setns of a mount namespace requires.
fn enter_and_wait(target: u32, fork_after: bool) -> (u32, Option<u32>) {
    let path = std::ffi::CString::new(format!("/proc/{target}/ns/mnt")).unwrap();
    let mut pipe = [0i32; 2];
    // SAFETY: pipe fills two fds.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes system calls (async-signal-safe)
    // before it waits to be killed.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: plain system calls on fds and a path this process owns.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            let entered = fd >= 0 && libc::setns(fd, libc::CLONE_NEWNS) == 0;
            let mut answer = [i32::from(entered), 0];
            if entered && fork_after {
                answer[1] = libc::fork();
                if answer[1] == 0 {
                    loop {
                        libc::pause();
                    }
                }
            }
            libc::write(pipe[1], answer.as_ptr().cast(), 8);
            loop {
                libc::pause();
            }
        }
    }
    let mut answer = [0i32; 2];
    // SAFETY: reading 8 bytes into two i32s from the pipe's read end.
    let n = unsafe { libc::read(pipe[0], answer.as_mut_ptr().cast(), 8) };
    // SAFETY: closing the fds this process made.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    assert_eq!(n, 8);
    assert_eq!(answer[0], 1, "setns into {target}'s mount namespace failed");
    (pid as u32, (answer[1] > 0).then_some(answer[1] as u32))
}

/// Processes [`enter_and_wait`] made, killed when dropped.
struct Started(Vec<u32>);

impl Drop for Started {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: killing processes this test made; those it forked
            // are reaped here, a grandchild by init.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
    }
}

#[test]
fn a_task_that_entered_joins_at_its_next_fork_cgroup_move_or_listing() {
    let Some(k) = kernel_or_skip("a_task_that_entered_joins") else {
        return;
    };
    let mut member = Command::new("unshare")
        .args(["-m", "sleep", "30"])
        .spawn()
        .unwrap();
    wait_for_comm(member.id(), "sleep");
    k.set(
        TaskId::of(member.id()).unwrap(),
        &SetOp {
            tags: Some((21, 22)),
            contid: Some((5454, Some(owned_by_this_test()))),
            ..Default::default()
        },
    )
    .unwrap();
    let ns = mount_namespace(member.id());
    k.set_join(
        ns,
        &Join {
            contid: 5454,
            set_id: 21,
            kept_id: 22,
        },
    )
    .unwrap();
    // Joined with the policy's tags, unpruned: no exec happened.
    let joined = |pid: u32| {
        let s = state(&k, pid);
        (s.contid, s.set_id) == (Some(5454), 21)
    };
    // Killed even when an assertion fails: they hold the test's output.
    let mut started = Started(Vec::new());

    // At its next fork: it and its child are in the container.
    let (forker, child) = enter_and_wait(member.id(), true);
    let child = child.expect("the entered task forked");
    started.0.extend([forker, child]);
    assert!(joined(forker) && joined(child), "joined at the fork");

    // Moved into a cgroup, as a runtime moves what it starts.
    let root = ptags_bpf::procfs::cgroup_v2_root().expect("a cgroup v2 hierarchy");
    let cg = TestCgroup(root.join(format!("ptags-test-join-{}", std::process::id())));
    std::fs::create_dir(&cg.0).unwrap();
    let (moved, _) = enter_and_wait(member.id(), false);
    started.0.push(moved);
    // No program runs at setns: until it is next seen, it is unlabelled.
    assert_eq!(state(&k, moved).contid, None);
    std::fs::write(cg.0.join("cgroup.procs"), moved.to_string()).unwrap();
    assert!(joined(moved), "joined when moved into a cgroup");

    // Found by the next listing of all tasks (the daemon's sweep).
    let (idle, _) = enter_and_wait(member.id(), false);
    started.0.push(idle);
    assert_eq!(state(&k, idle).contid, None);
    let listed = k.tasks().unwrap();
    assert!(listed.iter().any(|t| t.pid == idle), "the listing has it");
    assert!(joined(idle), "joined by the listing");

    assert_eq!(k.container(5454).unwrap().unwrap().live, 5);
    assert!(k.remove_join(ns).unwrap());
    drop(started);
    member.kill().unwrap();
    member.wait().unwrap();
    drop(cg);
    assert_eq!(k.lost().unwrap(), Default::default());
}

#[test]
fn a_new_namespace_with_a_reused_number_is_not_the_container_s() {
    let Some(k) = kernel_or_skip("a_new_namespace_with_a_reused_number") else {
        return;
    };
    let start = |cmd: &mut Command| {
        let child = cmd.spawn().unwrap();
        wait_for_comm(child.id(), "sleep");
        child
    };
    // The container: one task in a mount namespace of its own, with the
    // policy, and one on the host that keeps the container alive.
    let mut member = start(Command::new("unshare").args(["-m", "sleep", "30"]));
    let keeper = Shell::start();
    let entry = owned_by_this_test();
    for task in [TaskId::of(member.id()).unwrap(), keeper.task()] {
        k.set(
            task,
            &SetOp {
                contid: Some((5757, Some(entry))),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let old_inode = mount_namespace_inode(member.id());
    let policy = Join {
        contid: 5757,
        set_id: 31,
        kept_id: 31,
    };
    k.set_join(mount_namespace(member.id()), &policy).unwrap();
    // Its namespace goes with its last task; the next new ones (as root,
    // and as an unprivileged user in a user namespace of its own) may get
    // its inode number.
    member.kill().unwrap();
    member.wait().unwrap();
    // nobody: an unprivileged user every Debian machine has.
    let uid = 65534;
    let mut fresh = vec![
        start(Command::new("unshare").args(["-m", "sleep", "30"])),
        start(Command::new("setpriv").args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
            "unshare",
            "-Ur",
            "-m",
            "sleep",
            "30",
        ])),
    ];
    let reused = fresh
        .iter()
        .any(|c| mount_namespace_inode(c.id()) == old_inode);
    eprintln!("inode number {old_inode} reused by a new namespace: {reused}");
    let mut entered = Vec::new();
    for c in &fresh {
        let t = c.id().to_string();
        entered.push(start(
            Command::new("nsenter").args(["-t", &t, "-m", "sleep", "30"]),
        ));
    }
    for c in &entered {
        assert_eq!(
            state(&k, c.id()).contid,
            None,
            "a task entering a namespace made after the container's joined it"
        );
    }
    assert_eq!(k.container(5757).unwrap().unwrap().live, 1);
    assert!(k.remove_join(mount_namespace_id_of_policy(&k)).unwrap());
    for c in fresh.iter_mut().chain(entered.iter_mut()) {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    drop(keeper);
    assert_eq!(k.lost().unwrap(), Default::default());
}

/// The one namespace ID a policy is set for.
fn mount_namespace_id_of_policy(k: &Kernel) -> u64 {
    let joins = k.joins();
    assert_eq!(joins.len(), 1, "{joins:?}");
    joins[0].0
}
