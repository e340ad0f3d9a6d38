//! The facts program against /proc, as root: for this process, a thread
//! of it, a process of another user without capabilities, one whose
//! credentials belong to a user namespace of its own and one in a PID
//! namespace of its own, every field the daemon decides on is what /proc
//! says.

mod common;

use std::process::Command;

use common::{kernel_or_skip, only_child, wait_for_comm};
use ptags_bpf::procfs::Status;
use ptags_bpf::{Kernel, TaskId};

/// Asserts that the kernel's facts of `tid` (of process `pid`) are what
/// /proc says of it.
fn matches_proc(k: &Kernel, pid: u32, tid: u32) {
    let facts = k.facts().read(tid).unwrap();
    let dir = format!("/proc/{pid}/task/{tid}");
    let status = Status::read(&format!("{dir}/status")).unwrap();
    let number = |file: &str| -> u32 {
        std::fs::read_to_string(format!("{dir}/{file}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let comm = std::fs::read_to_string(format!("{dir}/comm")).unwrap();
    let user_ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
    assert_eq!(facts.id, TaskId::of(tid).unwrap(), "start time of {tid}");
    assert_eq!(facts.state, k.task_state(facts.id).unwrap());
    assert_eq!(facts.tgid, pid);
    assert_eq!((facts.uids, facts.gids), (status.uids, status.gids));
    assert_eq!(facts.cap_eff, status.cap_eff);
    // This test runs in the initial user namespace (checked below).
    assert_eq!(
        facts.init_userns,
        user_ns(pid) == user_ns(std::process::id())
    );
    assert_eq!(facts.loginuid, number("loginuid"));
    assert_eq!(facts.sessionid, number("sessionid"));
    assert_eq!(facts.comm, comm.trim_end_matches('\n').as_bytes());
    let pid_ns = std::fs::metadata(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(
        u64::from(facts.pid_ns),
        std::os::unix::fs::MetadataExt::ino(&pid_ns)
    );
}

#[test]
fn facts_are_what_proc_says() {
    let Some(k) = kernel_or_skip("facts_are_what_proc_says") else {
        return;
    };
    let me = std::process::id();
    matches_proc(&k, me, me);
    assert!(k.facts().read(me).unwrap().init_userns);
    // A thread: its own ID, its process's tgid.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() } as u32).unwrap();
        done_rx.recv().unwrap();
    });
    let tid = rx.recv().unwrap();
    matches_proc(&k, me, tid);
    done_tx.send(()).unwrap();
    thread.join().unwrap();

    // nobody, no capabilities; and root of a user namespace of its own,
    // whose capabilities do not count outside it.
    let nobody = "65534";
    let mut others = [
        Command::new("setpriv")
            .args(["--reuid", nobody, "--regid", nobody, "--clear-groups"])
            .args(["sleep", "30"])
            .spawn()
            .unwrap(),
        Command::new("unshare")
            .args(["-Ur", "sleep", "30"])
            .spawn()
            .unwrap(),
        Command::new("unshare")
            .args(["-pf", "sleep", "30"])
            .spawn()
            .unwrap(),
    ];
    for c in &others[..2] {
        wait_for_comm(c.id(), "sleep");
        matches_proc(&k, c.id(), c.id());
    }
    // unshare -p forks its child into the new PID namespace.
    let in_pid_ns = only_child(others[2].id());
    wait_for_comm(in_pid_ns, "sleep");
    matches_proc(&k, in_pid_ns, in_pid_ns);
    assert_ne!(
        k.facts().read(in_pid_ns).unwrap().pid_ns,
        k.facts().read(me).unwrap().pid_ns
    );
    let user = k.facts().read(others[0].id()).unwrap();
    assert_eq!((user.uids, user.cap_eff), ([65534; 4], 0));
    // Its labels, as the state map has them.
    k.set(
        user.id,
        &ptags_bpf::SetOp {
            tags: Some((31, 32)),
            ..Default::default()
        },
    )
    .unwrap();
    let labelled = k.facts().read(user.id.tid).unwrap().state.unwrap();
    assert_eq!((labelled.set_id, labelled.kept_id), (31, 32));
    matches_proc(&k, user.id.tid, user.id.tid);
    assert!(!k.facts().read(others[1].id()).unwrap().init_userns);
    for c in &mut others {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    assert!(matches!(
        k.facts().read(others[0].id()),
        Err(ptags_bpf::Error::NoSuchTask(_))
    ));
}
