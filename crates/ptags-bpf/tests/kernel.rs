//! The kernel side with real processes, as root: inheritance on fork and
//! clone, pruning on exec, pending state, container accounting and drop
//! events, a fork storm against concurrent updates, and restarts.

mod common;

use std::io::{BufRead, Write};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    kernel_or_skip, owned_by_this_test, state, wait_for, wait_for_comm, PinDir, Shell, TestCgroup,
};
use ptags_bpf::{EventKind, Kernel, Options, SetOp, TaskId, TaskState};

#[test]
fn fork_copies_and_exec_prunes() {
    let Some(k) = kernel_or_skip("fork_copies_and_exec_prunes") else {
        return;
    };
    let mut sh = Shell::start();
    assert_eq!(
        k.task_state(sh.task()).unwrap(),
        None,
        "nothing before anyone sets it"
    );
    k.set(
        sh.task(),
        &SetOp {
            tags: Some((5, 3)),
            contid: Some((77, None)),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        state(&k, sh.child.id()),
        TaskState {
            set_id: 5,
            kept_id: 3,
            contid: Some(77),
            pending: None,
            exited: false,
        }
    );

    // fork without exec: a subshell keeps the whole set.
    let sub = sh.spawn_waiting("(read -r x < /dev/null; sleep 30)");
    wait_for(|| {
        std::fs::read_to_string(format!("/proc/{sub}/comm"))
            .is_ok_and(|c| c.trim() == "sh" || c.trim() == "sleep")
    });
    let forked = TaskId::of(sub).unwrap();
    let s = k.task_state(forked).unwrap().unwrap();
    assert_eq!((s.kept_id, s.contid), (3, Some(77)));
    assert!(
        s.set_id == 5 || s.set_id == 3,
        "a subshell that already exec'd sleep has its kept set"
    );

    // fork then exec: only the kept subset survives.
    let execd = sh.spawn_waiting("exec sleep 30");
    wait_for_comm(execd, "sleep");
    assert_eq!(
        state(&k, execd),
        TaskState {
            set_id: 3,
            kept_id: 3,
            contid: Some(77),
            pending: None,
            exited: false,
        }
    );
    let live = k.container(77).unwrap().unwrap().live;
    assert!(live >= 3, "shell, subshell and sleep are counted: {live}");
}

#[test]
fn pending_state_is_taken_at_exec() {
    let Some(k) = kernel_or_skip("pending_state_is_taken_at_exec") else {
        return;
    };
    let mut sh = Shell::start();
    let me = sh.task();
    k.set(
        me,
        &SetOp {
            tags: Some((9, 9)),
            pending: Some((40, 41, Some((500, None)))),
            ..Default::default()
        },
    )
    .unwrap();
    let s = state(&k, me.tid);
    assert_eq!(s.pending, Some((40, 41, Some(500))));
    // The shell is a pending member: the container cannot end before its
    // exec, whatever its other members do.
    let row = k.container(500).unwrap().unwrap();
    assert_eq!((row.live, row.pending), (0, 1));
    // A child forked now does not inherit the pending state.
    let child = sh.spawn_waiting("sleep 30");
    wait_for_comm(child, "sleep");
    assert_eq!(
        state(&k, child),
        TaskState {
            set_id: 9,
            kept_id: 9,
            contid: None,
            pending: None,
            exited: false,
        }
    );
    // The shell execs: the pending state becomes its state, before the
    // new program runs.
    writeln!(sh.stdin, "exec sleep 30").unwrap();
    wait_for_comm(me.tid, "sleep");
    assert_eq!(
        state(&k, me.tid),
        TaskState {
            set_id: 40,
            kept_id: 41,
            contid: Some(500),
            pending: None,
            exited: false,
        }
    );
    let row = k.container(500).unwrap().unwrap();
    assert_eq!((row.live, row.pending), (1, 0));
}

#[test]
fn a_pending_member_that_exits_before_its_exec_ends_the_container() {
    let Some(k) = kernel_or_skip("a_pending_member_that_exits") else {
        return;
    };
    let events = k.events().unwrap();
    let sh = Shell::start();
    k.set(
        sh.task(),
        &SetOp {
            pending: Some((0, 0, Some((501, Some(owned_by_this_test()))))),
            ..Default::default()
        },
    )
    .unwrap();
    let row = k.container(501).unwrap().unwrap();
    assert_eq!((row.live, row.pending), (0, 1));
    // A runtime's init that fails before its exec: its ID ends at once.
    drop(sh);
    let mut seen = Vec::new();
    wait_for(|| {
        seen.extend(events.poll(Duration::from_millis(20)).unwrap());
        seen.iter()
            .any(|e| e.kind == EventKind::Drop && e.contid == 501)
    });
    let row = k.container(501).unwrap().unwrap();
    assert_eq!((row.live, row.pending), (0, 0));
    // Setting another pending container gives the first one's claim back.
    let sh = Shell::start();
    for id in [502, 503] {
        k.set(
            sh.task(),
            &SetOp {
                pending: Some((0, 0, Some((id, Some(owned_by_this_test()))))),
                ..Default::default()
            },
        )
        .unwrap();
    }
    assert_eq!(k.container(502).unwrap().unwrap().pending, 0);
    assert_eq!(k.container(503).unwrap().unwrap().pending, 1);
    drop(sh);
    assert_eq!(k.lost().unwrap(), Default::default());
}

#[test]
fn threads_inherit_from_the_creating_thread() {
    let Some(k) = kernel_or_skip("threads_inherit_from_the_creating_thread") else {
        return;
    };
    // This test's own thread is the parent.
    let me = TaskId::of(gettid()).unwrap();
    k.set(
        me,
        &SetOp {
            tags: Some((12, 0)),
            ..Default::default()
        },
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        done_rx.recv().unwrap();
    });
    let tid = rx.recv().unwrap();
    assert_eq!(state(&k, tid).set_id, 12);
    // A write to one thread leaves the others alone.
    k.set(
        TaskId::of(tid).unwrap(),
        &SetOp {
            tags: Some((13, 0)),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(state(&k, tid).set_id, 13);
    assert_eq!(state(&k, me.tid).set_id, 12);
    done_tx.send(()).unwrap();
    t.join().unwrap();
    k.set(
        me,
        &SetOp {
            tags: Some((0, 0)),
            ..Default::default()
        },
    )
    .unwrap();
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

#[test]
fn last_task_out_drops_the_container() {
    let Some(k) = kernel_or_skip("last_task_out_drops_the_container") else {
        return;
    };
    let entry = owned_by_this_test();
    let mut members: Vec<Child> = (0..3)
        .map(|_| Command::new("sleep").arg("30").spawn().unwrap())
        .collect();
    for m in &members {
        k.set(
            TaskId::of(m.id()).unwrap(),
            &SetOp {
                contid: Some((4242, Some(entry))),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let row = k.container(4242).unwrap().unwrap();
    assert_eq!(
        (row.live, row.owner_pid, row.parent),
        (3, std::process::id(), None)
    );
    let events = k.events().unwrap();
    let mut drops = Vec::new();
    while let Some(mut m) = members.pop() {
        m.kill().unwrap();
        m.wait().unwrap();
        drops.extend(events.poll(Duration::from_millis(50)).unwrap());
        if members.is_empty() {
            break;
        }
        assert!(
            drops.is_empty(),
            "dropped with {} members left",
            members.len()
        );
        assert_eq!(
            k.container(4242).unwrap().unwrap().live,
            members.len() as i64
        );
    }
    wait_for(|| {
        drops.extend(events.poll(Duration::from_millis(50)).unwrap());
        !drops.is_empty()
    });
    assert_eq!(drops.len(), 1);
    assert_eq!((drops[0].kind, drops[0].contid), (EventKind::Drop, 4242));
    assert_eq!(k.container(4242).unwrap().unwrap().live, 0);
    assert!(k.reap_container(4242).unwrap());
    assert_eq!(k.container(4242).unwrap(), None);
    assert_eq!(k.lost().unwrap(), Default::default());
}

#[test]
fn fork_storm_against_concurrent_updates() {
    let Some(k) = kernel_or_skip("fork_storm_against_concurrent_updates") else {
        return;
    };
    const FORKS: usize = 10_000;
    k.set_events(false, true, ptags_bpf::NsWatch::Off).unwrap();
    let mut sh = Shell::start();
    let parent = sh.task();
    // Two consistent states; a torn copy would mix them.
    let a = SetOp {
        tags: Some((10, 11)),
        contid: Some((100, None)),
        ..Default::default()
    };
    let b = SetOp {
        tags: Some((20, 21)),
        contid: Some((200, None)),
        ..Default::default()
    };
    k.set(parent, &a).unwrap();
    let k = Arc::new(k);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (k, stop) = (Arc::clone(&k), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k.set(parent, if writes % 2 == 0 { &b } else { &a })
                    .unwrap();
                writes += 1;
            }
            writes
        })
    };
    // Each child execs /bin/true: its exit event shows the kept set and
    // container it copied at fork.
    writeln!(
        sh.stdin,
        "i=0; while [ $i -lt {FORKS} ]; do /bin/true; i=$((i+1)); done; echo done"
    )
    .unwrap();
    let events = k.events().unwrap();
    let mut exits = Vec::new();
    let mut line = String::new();
    let reader = std::thread::spawn(move || {
        sh.stdout.read_line(&mut line).unwrap();
        (sh, line)
    });
    while !reader.is_finished() {
        exits.extend(events.poll(Duration::from_millis(20)).unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let (sh, line) = reader.join().unwrap();
    assert_eq!(line.trim(), "done");
    exits.extend(events.poll(Duration::from_millis(100)).unwrap());
    let children: Vec<_> = exits
        .iter()
        .filter(|e| e.kind == EventKind::Exit && e.ppid == parent.tid)
        .collect();
    let lost = k.lost().unwrap();
    assert_eq!(lost.task_storage, 0);
    assert_eq!(lost.container_missing, 0);
    assert_eq!(
        children.len() as u64 + lost.exit_events,
        FORKS as u64,
        "every child is in a container"
    );
    for e in &children {
        assert!(
            (e.set_id, e.contid) == (11, 100) || (e.set_id, e.contid) == (21, 200),
            "torn state: set {} in container {}",
            e.set_id,
            e.contid
        );
    }
    let from_b = children.iter().filter(|e| e.contid == 200).count();
    eprintln!("{FORKS} forks, {writes} concurrent writes, {from_b} children saw the second state, {} exit events lost", lost.exit_events);
    assert!(writes > 100, "the writer ran concurrently");
    drop(sh);
}

#[test]
fn pinned_state_survives_a_restart() {
    let Some(_probe) = kernel_or_skip("pinned_state_survives_a_restart") else {
        return;
    };
    let pins = PinDir::new("restart");
    let options = Options {
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    };
    let mut sh = Shell::start();
    {
        let k = Kernel::open(&options).unwrap();
        k.set(
            sh.task(),
            &SetOp {
                tags: Some((31, 30)),
                contid: Some((3131, None)),
                ..Default::default()
            },
        )
        .unwrap();
    }
    // No user space now: inheritance must go on.
    let child = sh.spawn_waiting("exec sleep 30");
    wait_for_comm(child, "sleep");
    let k = Kernel::open(&options).unwrap();
    assert_eq!(k.pin_dir(), Some(pins.0.as_path()));
    assert_eq!(state(&k, sh.child.id()).set_id, 31);
    assert_eq!(
        state(&k, child),
        TaskState {
            set_id: 30,
            kept_id: 30,
            contid: Some(3131),
            pending: None,
            exited: false,
        }
    );
    assert_eq!(k.container(3131).unwrap().unwrap().live, 2);
    drop(k);
    drop(sh);
}

#[test]
fn pins_of_another_layout_are_refused() {
    let Some(k) = kernel_or_skip("pins_of_another_layout_are_refused") else {
        return;
    };
    drop(k);
    let pins = PinDir::new("layout");
    let options = Options {
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    };
    let k = Kernel::open(&options).unwrap();
    // Forge an older layout version in the pinned config.
    let cfg = libbpf_rs::MapHandle::from_pinned_path(pins.0.join("ptags_config")).unwrap();
    use libbpf_rs::MapCore;
    let mut v = cfg
        .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .unwrap()
        .unwrap();
    v[..4].copy_from_slice(&999u32.to_ne_bytes());
    cfg.update(&0u32.to_ne_bytes(), &v, libbpf_rs::MapFlags::ANY)
        .unwrap();
    drop(k);
    let err = Kernel::open(&options).err().expect("a layout mismatch");
    let msg = err.to_string();
    assert!(msg.contains("layout 999") && msg.contains("reset"), "{msg}");
}

#[test]
fn a_reused_pid_is_refused() {
    let Some(k) = kernel_or_skip("a_reused_pid_is_refused") else {
        return;
    };
    let mut c = Command::new("sleep").arg("30").spawn().unwrap();
    let task = TaskId::of(c.id()).unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let stale = TaskId {
        start_ticks: task.start_ticks + 1,
        ..task
    };
    assert!(matches!(
        k.set(
            stale,
            &SetOp {
                tags: Some((1, 1)),
                ..Default::default()
            }
        ),
        Err(ptags_bpf::Error::NoSuchTask(_))
    ));
    assert!(matches!(
        k.set(
            task,
            &SetOp {
                tags: Some((1, 1)),
                ..Default::default()
            }
        ),
        Err(ptags_bpf::Error::NoSuchTask(_))
    ));
}

#[test]
fn the_task_iterator_lists_every_task_with_its_state() {
    let Some(k) = kernel_or_skip("the_task_iterator_lists_every_task_with_its_state") else {
        return;
    };
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let task = TaskId::of(sleeper.id()).unwrap();
    k.set(
        task,
        &SetOp {
            tags: Some((77, 78)),
            ..Default::default()
        },
    )
    .unwrap();
    let rows = k.tasks().unwrap();
    let row = rows
        .iter()
        .find(|r| r.id == task)
        .expect("the sleeper is listed");
    assert_eq!((row.pid, row.ppid), (sleeper.id(), std::process::id()));
    assert_eq!(row.comm, "sleep");
    assert_eq!((row.state.set_id, row.state.kept_id), (77, 78));
    // Tasks without state are listed too: init, and this test's threads.
    let init = rows.iter().find(|r| r.pid == 1);
    assert!(
        init.is_some_and(|r| r.id.tid == 1 && r.ppid == 0),
        "{init:?}"
    );
    // Every thread of init, not only its main one.
    for entry in std::fs::read_dir("/proc/1/task").unwrap() {
        let tid: u32 = entry
            .unwrap()
            .file_name()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rows.iter().any(|r| r.id.tid == tid && r.pid == 1),
            "init's thread {tid} is listed"
        );
    }
    let procs = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .parse::<u32>()
                .is_ok()
        })
        .count();
    let leaders = rows.iter().filter(|r| r.pid == r.id.tid).count();
    assert!(
        leaders.abs_diff(procs) < 20,
        "{leaders} listed, {procs} in /proc"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn container_changes_refuse_a_task_that_is_not_alone() {
    let Some(k) = kernel_or_skip("container_changes_refuse_a_task_that_is_not_alone") else {
        return;
    };
    let mut shell = Shell::start();
    let entry = owned_by_this_test();
    let op = SetOp {
        contid: Some((9191, Some(entry))),
        alone: true,
        ..Default::default()
    };
    // Alone: accepted.
    let lone = shell.spawn_waiting("sleep 30");
    k.set(TaskId::of(lone).unwrap(), &op).unwrap();
    assert_eq!(state(&k, lone).contid, Some(9191));
    // With a child: refused, and the container's count is unchanged.
    let err = k.set(shell.task(), &op).unwrap_err();
    assert!(matches!(err, ptags_bpf::Error::NotAlone(_)), "{err}");
    assert_eq!(state(&k, shell.child.id()).contid, None);
    assert_eq!(k.container(9191).unwrap().unwrap().live, 1);
    // Without `alone`, the same change is allowed (the daemon decides).
    let free = SetOp { alone: false, ..op };
    k.set(shell.task(), &free).unwrap();
    assert_eq!(k.container(9191).unwrap().unwrap().live, 2);
    drop(shell);
    let events = k.events().unwrap();
    wait_for(|| {
        events
            .poll(Duration::from_millis(50))
            .unwrap()
            .iter()
            .any(|e| e.kind == EventKind::Drop && e.contid == 9191)
            || k.container(9191).unwrap().unwrap().live == 0
    });
    wait_for(|| k.reap_container(9191).unwrap());
}

#[test]
fn a_child_fork_has_not_finished_cannot_be_set() {
    let Some(k) = kernel_or_skip("a_child_fork_has_not_finished") else {
        return;
    };
    let entry = owned_by_this_test();
    // A labelled shell forking as fast as it can.
    let mut forker = Shell::start();
    k.set(
        forker.task(),
        &SetOp {
            contid: Some((5858, Some(entry))),
            ..Default::default()
        },
    )
    .unwrap();
    let storm = forker.spawn_waiting("while :; do /bin/true; done");
    wait_for(|| std::fs::read_to_string(format!("/proc/{storm}/stat")).is_ok());
    // Meanwhile, the setter is aimed, as a hostile caller of the pinned
    // program would aim it, at the next pids with the current clock tick
    // as their start time: a child is found by pid before the fork
    // program copied its parent's state into it.
    let end = std::time::Instant::now() + Duration::from_secs(2);
    let (mut tries, mut set) = (0u64, 0u64);
    let last_pid = || -> u32 {
        std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let ticks = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec for clock_gettime to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        ts.tv_sec as u64 * 100 + ts.tv_nsec as u64 / 10_000_000
    };
    let op = SetOp {
        contid: Some((5959, Some(entry))),
        ..Default::default()
    };
    while std::time::Instant::now() < end {
        let (last, now) = (last_pid(), ticks());
        for tid in last..last + 3 {
            for start_ticks in [now, now.saturating_sub(1)] {
                tries += 1;
                if k.set_unpinned(TaskId { tid, start_ticks }, &op).is_ok() {
                    set += 1;
                }
            }
        }
    }
    // SAFETY: killing the loop this test started.
    unsafe { libc::kill(storm as i32, libc::SIGKILL) };
    drop(forker);
    eprintln!("{tries} tries on fresh pids, {set} set");
    // Every task counted in 5959 is one that points there: once all have
    // exited, the count is back to zero, and never went below it.
    wait_for(|| {
        let live = |id| k.container(id).unwrap().map_or(0, |c| c.live);
        let members = |id| {
            k.tasks()
                .unwrap()
                .iter()
                .filter(|r| r.state.contid == Some(id) && !r.state.exited)
                .count() as i64
        };
        live(5959) == members(5959) && live(5858) == members(5858)
    });
    assert_eq!(k.lost().unwrap().container_underflow, 0);
}

/// This process's v1 memory cgroup directory, if the machine has one.
fn memory_cgroup_dir() -> Option<std::path::PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, c, p) = (f.next()?, f.next()?, f.next()?);
        (c == "memory").then(|| p.to_owned())
    })?;
    let dir = std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
    dir.join("memory.limit_in_bytes").exists().then_some(dir)
}

#[test]
fn labels_are_not_charged_to_a_limited_loader() {
    let test = "labels_are_not_charged_to_a_limited_loader";
    if kernel_or_skip(test).is_none() {
        return;
    }
    let Some(ours) = memory_cgroup_dir() else {
        assert!(
            !common::skips_fail(),
            "{test}: a v1 memory cgroup is required"
        );
        eprintln!("SKIPPED {test}: no v1 memory cgroup");
        return;
    };
    // The loader (this process) in a cgroup of its own, as a daemon in a
    // unit with MemoryMax would be; its limit set just above its use once
    // the programs are loaded.
    let limited = ours.join(format!("ptags-test-memcg-{}", std::process::id()));
    std::fs::create_dir(&limited).unwrap();
    let me = std::process::id().to_string();
    std::fs::write(limited.join("cgroup.procs"), &me).unwrap();
    let loaded = Kernel::open(&Options::default());
    std::fs::write(ours.join("cgroup.procs"), &me).unwrap();
    let k = loaded.unwrap();
    let used: u64 = std::fs::read_to_string(limited.join("memory.usage_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(
        limited.join("memory.limit_in_bytes"),
        (used + (1 << 20)).to_string(),
    )
    .unwrap();
    // A labelled shell elsewhere makes 5,000 children that live at once:
    // about 1.9 MB of task storage, more than the loader's cgroup has left.
    let mut sh = Shell::start();
    k.set(
        sh.task(),
        &SetOp {
            tags: Some((3, 3)),
            contid: Some((6060, Some(owned_by_this_test()))),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        sh.run("for i in $(seq 5000); do sleep 60 & done; echo started"),
        "started"
    );
    // The shell's children, whether or not each has exec'd sleep yet.
    let shell = sh.child.id();
    let labelled = k
        .tasks()
        .unwrap()
        .iter()
        .filter(|r| r.ppid == shell && r.pid == r.id.tid && r.state.contid == Some(6060))
        .count();
    sh.run("pkill -P $$; wait; echo gone");
    drop(sh);
    let lost = k.lost().unwrap();
    drop(k);
    let _ = std::fs::remove_dir(&limited);
    assert_eq!(lost.task_storage, 0, "children without storage");
    assert_eq!(labelled, 5000);
}

#[test]
fn pinned_programs_of_another_version_are_replaced_keeping_the_state() {
    let Some(k) = kernel_or_skip("pinned_programs_of_another_version") else {
        return;
    };
    drop(k);
    use libbpf_rs::MapCore;
    use std::os::unix::fs::MetadataExt;
    let pins = PinDir::new("programs");
    let options = Options {
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    };
    let mut sh = Shell::start();
    let k = Kernel::open(&options).unwrap();
    k.set(
        sh.task(),
        &SetOp {
            tags: Some((41, 40)),
            contid: Some((4141, Some(owned_by_this_test()))),
            ..Default::default()
        },
    )
    .unwrap();
    // The pinned programs are "of another build": their version in the
    // config (bytes 8..16) is not this one's.
    let cfg = libbpf_rs::MapHandle::from_pinned_path(pins.0.join("ptags_config")).unwrap();
    let mut v = cfg
        .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .unwrap()
        .unwrap();
    let ours = v[8..16].to_vec();
    v[8..16].copy_from_slice(&7u64.to_ne_bytes());
    cfg.update(&0u32.to_ne_bytes(), &v, libbpf_rs::MapFlags::ANY)
        .unwrap();
    drop(k);
    let pin_inode = |name: &str| std::fs::metadata(pins.0.join(name)).unwrap().ino();
    let before = pin_inode("link_fork");
    let k = Kernel::open(&options).unwrap();
    assert_ne!(
        pin_inode("link_fork"),
        before,
        "the fork program was replaced"
    );
    let v = cfg
        .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .unwrap()
        .unwrap();
    assert_eq!(v[8..16], ours[..]);
    // The state is the maps': kept; the new programs go on with it, and
    // a child is counted once.
    assert_eq!(state(&k, sh.child.id()).set_id, 41);
    let child = sh.spawn_waiting("exec sleep 30");
    wait_for_comm(child, "sleep");
    assert_eq!(state(&k, child).contid, Some(4141));
    assert_eq!(state(&k, child).set_id, 40);
    assert_eq!(k.container(4141).unwrap().unwrap().live, 2);
    // SAFETY: killing a child of this test's shell.
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
    drop(sh);
    wait_for(|| k.container(4141).unwrap().is_some_and(|c| c.live == 0));
    assert_eq!(k.lost().unwrap(), Default::default());
}

#[test]
fn exec_events_a_containers_copy_asks_for_come_for_it_alone() {
    let Some(k) = kernel_or_skip("exec_events_a_containers_copy_asks_for") else {
        return;
    };
    // The host asks for no exec events; container 7301's copy does,
    // 7302's does not.
    k.set_events(false, false, ptags_bpf::NsWatch::Off).unwrap();
    let reader = k.events().unwrap();
    let mut asked = Shell::start();
    let mut quiet = Shell::start();
    for (sh, id) in [(&asked, 7301u64), (&quiet, 7302)] {
        k.set(
            sh.task(),
            &SetOp {
                contid: Some((id, None)),
                ..Default::default()
            },
        )
        .unwrap();
    }
    k.set_copy_events(7301, true, false).unwrap();
    assert_eq!(k.copy_event_containers(), [7301]);
    let _ = reader.drain().unwrap();
    let pid_in = |sh: &mut Shell| -> u32 { sh.run("/bin/sh -c 'echo $$'").parse().unwrap() };
    let (a, q) = (pid_in(&mut asked), pid_in(&mut quiet));
    let mut execs = Vec::new();
    for _ in 0..40 {
        execs.extend(
            reader
                .poll(Duration::from_millis(50))
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == ptags_bpf::EventKind::Exec),
        );
        if execs.iter().any(|e| e.pid == a) {
            break;
        }
    }
    let of = |pid: u32| execs.iter().filter(|e| e.pid == pid).count();
    assert_eq!((of(a), of(q)), (1, 0), "{execs:?}");
    let e = execs.iter().find(|e| e.pid == a).unwrap();
    assert_eq!(e.contid, 7301);
    // No PID namespace of its own: its pids are the host's.
    assert_eq!(
        e.local,
        ptags_bpf::LocalPids {
            level: 0,
            pid: a,
            tid: a,
            ppid: asked.child.id()
        }
    );
    // Cleared: nothing more, and no entry left.
    k.set_copy_events(7301, false, false).unwrap();
    k.set_copy_events(7301, false, false).unwrap();
    assert!(k.copy_event_containers().is_empty());
    let again = pid_in(&mut asked);
    std::thread::sleep(Duration::from_millis(100));
    let later = reader.drain().unwrap();
    assert!(!later
        .iter()
        .any(|e| e.pid == again && e.kind == ptags_bpf::EventKind::Exec));
}

#[test]
fn a_device_list_fences_the_container_not_the_cgroup() {
    let Some(k) = kernel_or_skip("a_device_list_fences_the_container") else {
        return;
    };
    let root = ptags_bpf::procfs::cgroup_v2_root().expect("a cgroup v2 hierarchy");
    // Tried on a child cgroup: a program at the root fences the machine.
    let cg = TestCgroup(root.join(format!("ptags-test-dev-{}", std::process::id())));
    std::fs::create_dir(&cg.0).unwrap();
    let link = k.attach_devices(&cg.0).unwrap();
    let mut fenced = Shell::start();
    let mut free = Shell::start();
    for sh in [&fenced, &free] {
        std::fs::write(cg.0.join("cgroup.procs"), sh.child.id().to_string()).unwrap();
    }
    k.set(
        fenced.task(),
        &SetOp {
            contid: Some((7401, None)),
            ..Default::default()
        },
    )
    .unwrap();
    let reader = k.events().unwrap();
    // Deny all but char 1:3 (/dev/null), as a runtime's default list.
    let rule = |major, minor, access| ptags_bpf::DeviceException {
        kind: 2, // char
        major,
        minor,
        access,
    };
    let null = rule(Some(1), Some(3), 7);
    k.set_device_list(7401, Some((false, &[null]))).unwrap();
    let open = |sh: &mut Shell, dev: &str| -> String {
        sh.run(&format!("(head -c1 {dev} >/dev/null) 2>/dev/null; echo $?"))
    };
    assert_eq!(open(&mut fenced, "/dev/null"), "0");
    assert_ne!(open(&mut fenced, "/dev/zero"), "0", "char 1:5 denied");
    assert_eq!(open(&mut free, "/dev/zero"), "0", "no container: untouched");
    // The denial is told, naming the device, the access and the list.
    let denials = |reader: &ptags_bpf::EventReader<'_>| -> Vec<ptags_bpf::Event> {
        std::thread::sleep(Duration::from_millis(20));
        reader
            .drain()
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == ptags_bpf::EventKind::Device)
            .collect()
    };
    let told = denials(&reader);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].contid, 7401);
    assert_eq!(
        told[0].device,
        Some(ptags_bpf::DeviceDenial {
            list: 7401,
            kind: 2,
            major: 1,
            minor: 5,
            access: 2, // read
            suppressed: 0,
        })
    );
    // A rule added takes effect at once for the running task; removed,
    // it denies again.
    k.set_device_list(7401, Some((false, &[null, rule(Some(1), None, 2)])))
        .unwrap();
    assert_eq!(open(&mut fenced, "/dev/zero"), "0", "char 1:* r granted");
    k.set_device_list(7401, Some((false, &[null]))).unwrap();
    assert_ne!(open(&mut fenced, "/dev/zero"), "0", "denied again");
    // Through io_uring too, inline and by a worker thread (which the fork
    // tracepoint never saw: judged by its process's leader).
    let bin = std::env::temp_dir().join(format!("ptags-uring-open-{}", std::process::id()));
    let built = std::process::Command::new("cc")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/uring_open.c"))
        .arg("-o")
        .arg(&bin)
        .status()
        .expect("cc, to build the io_uring helper");
    assert!(built.success(), "building tests/uring_open.c");
    for mode in ["0", "1"] {
        let said = fenced.run(&format!("{} /dev/zero {mode}", bin.display()));
        assert_eq!(said, "Operation not permitted", "io_uring, async={mode}");
        let said = free.run(&format!("{} /dev/zero {mode}", bin.display()));
        assert_eq!(
            said, "opened",
            "io_uring from an unlabelled task, async={mode}"
        );
    }
    let _ = std::fs::remove_file(&bin);
    // A flood of denials: at most the kernel's rate is sent, the rest
    // counted and told with the next one sent.
    let _ = denials(&reader);
    fenced.run("for i in $(seq 100); do head -c1 /dev/zero 2>/dev/null; done; echo");
    let flood = denials(&reader);
    assert!(
        (1..=20).contains(&flood.len()),
        "{} events for 100 denials",
        flood.len()
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_ne!(open(&mut fenced, "/dev/zero"), "0");
    let next = denials(&reader);
    let suppressed = next[0].device.unwrap().suppressed as usize;
    assert_eq!(
        flood.len() + suppressed,
        100,
        "every denial sent or counted"
    );
    k.set_device_list(7401, None).unwrap();
    assert_eq!(open(&mut fenced, "/dev/zero"), "0", "no list: untouched");
    k.set_device_list(7401, Some((false, &[]))).unwrap();
    assert_ne!(open(&mut fenced, "/dev/null"), "0", "deny all");
    k.set_device_list(7401, None).unwrap();
    drop(link);
    // Detached: nothing fences it any more.
    k.set_device_list(7401, Some((false, &[]))).unwrap();
    assert_eq!(open(&mut fenced, "/dev/null"), "0", "detached");
    k.set_device_list(7401, None).unwrap();
    assert!(k.device_list_containers().is_empty());
    drop((fenced, free));
    // The shells' cgroup empties once they are reaped.
    std::thread::sleep(Duration::from_millis(100));
}
