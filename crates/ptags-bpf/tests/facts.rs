//! The facts program against /proc, as root: for this process, a thread
//! of it, a process of another user without capabilities, one whose
//! credentials belong to a user namespace of its own and one in a PID
//! namespace of its own, every field the daemon decides on is what /proc
//! says; a process that made itself not dumpable is read so.

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
    let mine = k.facts().read(me).unwrap();
    assert!(mine.init_userns && mine.dumpable && !mine.exiting);
    // A process that made itself not dumpable (as one that drops its
    // privileges without exec is): out of others' reach, as ptrace has it.
    // SAFETY: the child makes system calls only, then waits to be killed.
    let undumpable = unsafe { libc::fork() };
    assert!(undumpable >= 0);
    if undumpable == 0 {
        // SAFETY: as above. Its copies of the test's descriptors are
        // closed first: one held open for writing (a file another test
        // is copying) would make that file's exec fail (ETXTBSY).
        unsafe {
            libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0);
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            libc::kill(libc::getpid(), libc::SIGSTOP);
            libc::_exit(0);
        }
    }
    // Stopped once its prctl is done.
    common::wait_for(|| {
        std::fs::read_to_string(format!("/proc/{undumpable}/stat")).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
    });
    assert!(!k.facts().read(undumpable as u32).unwrap().dumpable);
    // SAFETY: killing and reaping the child this test forked.
    unsafe {
        libc::kill(undumpable, libc::SIGKILL);
        libc::waitpid(undumpable, std::ptr::null_mut(), 0);
    }
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

/// A directory of this test's, readable by every user, removed on drop.
struct SharedDir(std::path::PathBuf);

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The peer program reads the credentials a connection's peer had when
/// it connected: a user without capabilities that connects and then
/// execs a program with file capabilities (before the connection is
/// accepted) is still, for the connection, the user without them.
#[test]
fn a_peer_is_judged_as_it_connected() {
    use std::os::unix::fs::PermissionsExt;
    let Some(k) = kernel_or_skip("a_peer_is_judged_as_it_connected") else {
        return;
    };
    let dir = SharedDir(std::env::temp_dir().join(format!("ptags-peer-{}", std::process::id())));
    std::fs::create_dir(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.0.join("s");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    // sleep with CAP_MAC_ADMIN as a file capability.
    let capsleep = dir.0.join("capsleep");
    std::fs::copy("/bin/sleep", &capsleep).unwrap();
    let status = Command::new("setcap")
        .args(["cap_mac_admin+ep", capsleep.to_str().unwrap()])
        .status()
        .expect("running setcap (libcap2-bin)");
    assert!(status.success());

    let path = std::ffi::CString::new(socket.to_str().unwrap()).unwrap();
    let prog = std::ffi::CString::new(capsleep.to_str().unwrap()).unwrap();
    let arg0 = std::ffi::CString::new("capsleep").unwrap();
    let arg1 = std::ffi::CString::new("30").unwrap();
    let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    // SAFETY: a zeroed sockaddr_un is valid; the path fits (checked).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes_with_nul();
    assert!(bytes.len() <= addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: the child makes only system calls (async-signal-safe) on
    // memory prepared before the fork, then execs or exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            let nobody = 65534;
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(nobody, nobody, nobody) != 0
                || libc::setresuid(nobody, nobody, nobody) != 0
            {
                libc::_exit(1);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if fd < 0 || libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                libc::_exit(2);
            }
            // The connection stays open across the exec (no CLOEXEC).
            libc::execv(prog.as_ptr(), argv.as_ptr());
            libc::_exit(3);
        }
    }
    let child = child as u32;
    // Accepted only once the program with capabilities runs.
    wait_for_comm(child, "capsleep");
    let (stream, _) = listener.accept().unwrap();
    let now = k.facts().read(child).unwrap();
    const CAP_MAC_ADMIN: u64 = 1 << 33;
    assert_ne!(now.cap_eff & CAP_MAC_ADMIN, 0, "the program has it now");
    let at_connect = k.facts().peer(&stream).unwrap();
    assert_eq!(at_connect.uids, [65534; 4]);
    assert_eq!(
        at_connect.cap_eff, 0,
        "it had no capability when it connected"
    );
    assert!(at_connect.init_userns);
    // SAFETY: killing and reaping the child this test forked.
    unsafe {
        libc::kill(child as i32, libc::SIGKILL);
        libc::waitpid(child as i32, std::ptr::null_mut(), 0);
    }
}
