//! The 2016 interface as files (issue 20), with real shells: a write to
//! `PID/attr/ptags` or `PID/audit_containerid` is a request of the
//! process that made it, judged and recorded as one through the socket,
//! and answered as the original's write() was.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::trail::{read_trail, wait_for_trail};
use common::{can_run, test_user, Daemon};

/// Whether the machine has FUSE; a loud skip (a failure in CI) if not.
fn has_fuse(test: &str) -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    assert!(
        !common::skips_fail(),
        "{test}: FUSE (/dev/fuse) is required"
    );
    eprintln!("SKIPPED {test}: no /dev/fuse (modprobe fuse)");
    false
}

fn mnt(d: &Daemon) -> PathBuf {
    d.dir.path().join("proc")
}

/// A bash script with `$M` the files' mount.
fn bash(d: &Daemon, script: &str) -> String {
    d.sh(&format!(
        "M={}; export M; bash -c '{}'",
        mnt(d).display(),
        script.replace('\'', "'\\''")
    ))
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

#[test]
fn writes_through_the_files_are_the_writers_requests() {
    if !can_run("files_writes") || !has_fuse("files_writes") {
        return;
    }
    let d = Daemon::start("files-writes", "");
    assert!(mounted(&mnt(&d)), "mounted at start");
    let u = test_user();

    // A shell holding the kept permission writes; one without is refused.
    let out = bash(
        &d,
        &format!(
            "ptags run --write +@ptags:UMCM:add --write +@ptags:UMCM:others -- setpriv --reuid {u} --regid {u} --clear-groups \
               bash -c 'sleep 600 & V=$!; echo +UMCM:A > $M/$V/attr/ptags && echo added; \
                        cat $M/$V/attr/ptags; printf \"+UMCM:B=1\\n\" > $M/$V/attr/ptags; kill $V'; \
             setpriv --reuid {u} --regid {u} --clear-groups \
               bash -c 'sleep 600 & V=$!; echo +UMCM:A > $M/$V/attr/ptags || echo refused; kill $V'"
        ),
    );
    assert!(out.contains("added\nUMCM:A\n"), "{out}");
    assert!(
        out.contains("write error: Invalid argument"),
        "+NAME=VALUE: {out}"
    );
    assert!(
        out.contains("write error: Operation not permitted") && out.contains("refused"),
        "{out}"
    );

    // One write of three lines whose third fails: the first two applied,
    // their bytes told.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let tags = mnt(&d).join(format!("{}/attr/ptags", sleeper.id()));
    let mut file = std::fs::OpenOptions::new().write(true).open(&tags).unwrap();
    assert_eq!(file.write(b"+A\n+B\n+C=1\n").unwrap(), 6);
    drop(file);
    assert_eq!(std::fs::read_to_string(&tags).unwrap(), "A\nB\n");
    // A failing first line is the write's error.
    let mut file = std::fs::OpenOptions::new().write(true).open(&tags).unwrap();
    let e = file.write(b"+D=1\n+E\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    // A whole 32,700-byte value in one write().
    let value = "v".repeat(32_700);
    let text = format!("+BIG\n!BIG={value}\n");
    let mut file = std::fs::OpenOptions::new().write(true).open(&tags).unwrap();
    assert_eq!(file.write(text.as_bytes()).unwrap(), text.len());
    let read = std::fs::read_to_string(&tags).unwrap();
    assert!(read.contains(&format!("BIG={value}\n")), "{}", read.len());
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // Per thread: a write to task/TID/attr/ptags changes that thread alone.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() } as u32).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let me = std::process::id();
    let thread_tags = mnt(&d).join(format!("{me}/task/{tid}/attr/ptags"));
    std::fs::write(&thread_tags, "+THREAD\n").unwrap();
    assert_eq!(std::fs::read_to_string(&thread_tags).unwrap(), "THREAD\n");
    let main_tags = mnt(&d).join(format!("{me}/task/{me}/attr/ptags"));
    assert_eq!(std::fs::read_to_string(&main_tags).unwrap(), "");
    stop_tx.send(()).unwrap();
    worker.join().unwrap();
    let listed: Vec<String> = std::fs::read_dir(mnt(&d).join(me.to_string()).join("task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(listed.contains(&me.to_string()), "{listed:?}");
    assert_eq!(
        std::fs::read_link(mnt(&d).join("self")).unwrap(),
        PathBuf::from(me.to_string())
    );

    // A thread that dropped its IDs alone (the raw system call changes
    // the calling thread's credentials only) is judged as itself, not as
    // its root process.
    let mut root_target = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let target_tags = mnt(&d).join(format!("{}/attr/ptags", root_target.id()));
    let target_contid = mnt(&d).join(format!("{}/audit_containerid", root_target.id()));
    let dropped = std::thread::spawn(move || {
        // SAFETY: a raw setresuid changes this thread's credentials alone.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, u, u, u) };
        assert_eq!(r, 0);
        let wrote = std::fs::write(&target_tags, "+DROPPED\n");
        let read = std::fs::read_to_string(&target_contid);
        (
            wrote.map_err(|e| e.raw_os_error()),
            read.map_err(|e| e.raw_os_error()),
        )
    })
    .join()
    .unwrap();
    assert_eq!(dropped, (Err(Some(libc::EPERM)), Err(Some(libc::EPERM))));
    let _ = root_target.kill();
    let _ = root_target.wait();

    // A user's changes are held to its rate, as through the socket.
    let out = bash(
        &d,
        &format!(
            "ptags run --write +@ptags:UMCM:add -- setpriv --reuid {u} --regid {u} --clear-groups \
               bash -c 'n=0; for i in $(seq 300); do echo +UMCM:r$i > $M/$$/attr/ptags 2>/dev/null || n=$((n+1)); done; echo refused=$n'"
        ),
    );
    let refused: u32 = out
        .split("refused=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(refused > 0, "300 changes at once, none held back: {out}");

    // A reader in a PID namespace of its own names processes by its
    // pids, and sees only its own.
    let out = bash(
        &d,
        "unshare --pid --fork --mount-proc bash -c 'sleep 600 & S=$!; echo sleep=$S; \
           ls $M | tr \"\\n\" \" \"; echo; echo +NS > $M/$S/attr/ptags && cat $M/$S/attr/ptags; kill $S'",
    );
    assert!(out.contains("sleep=2\n1 2 "), "{out}");
    assert!(
        !out.contains(&format!(" {me} ")),
        "the host's pids are not listed: {out}"
    );
    assert!(out.contains("\nNS\n"), "{out}");

    // Recorded as through the socket.
    wait_for_trail(&d, "the writes", |t| {
        t.lines().any(|l| {
            l.starts_with("type=PTAGS_OP")
                && l.contains("op=write")
                && l.contains(&format!("tid={tid} "))
                && l.contains("res=success")
        }) && t
            .lines()
            .any(|l| l.contains("op=write") && l.contains("errno=EPERM line=1"))
    });
}

#[test]
fn audit_containerid_takes_a_decimal_id_by_the_rules() {
    if !can_run("files_contid") || !has_fuse("files_contid") {
        return;
    }
    let d = Daemon::start("files-contid", "");
    let out = bash(
        &d,
        "sleep 600 & C=$!; echo 4242 > $M/$C/audit_containerid && echo set; \
         cat $M/$C/audit_containerid; echo; \
         echo -1 > $M/$C/audit_containerid; \
         bash -c \"echo 4343 > $M/self/audit_containerid\"; \
         cat $M/self/audit_containerid; echo; kill $C",
    );
    assert!(out.contains("set\n4242\n"), "{out}");
    assert!(out.contains("write error: Invalid argument"), "-1: {out}");
    assert!(
        out.contains("write error: Invalid cross-device link"),
        "itself: {out}"
    );
    assert!(out.contains("\n-1\n"), "unset reads -1: {out}");
    let u = test_user();
    let out = bash(
        &d,
        &format!(
            "setpriv --reuid {u} --regid {u} --clear-groups bash -c \
               'sleep 600 & C=$!; echo 5 > $M/$C/audit_containerid; cat $M/$C/audit_containerid; kill $C'"
        ),
    );
    assert_eq!(
        out.matches("Operation not permitted").count(),
        2,
        "unprivileged: {out}"
    );
    wait_for_trail(&d, "the change and the refusals", |t| {
        t.contains("op=set") && t.contains("contid=4242 ") && t.contains("errno=EXDEV")
    });
}

#[test]
fn the_files_survive_heavy_use_and_a_killed_daemon() {
    if !can_run("files_heavy") || !has_fuse("files_heavy") {
        return;
    }
    let mut d = Daemon::start("files-heavy", "");
    // 10,000 writes from four shells at once.
    let out = bash(
        &d,
        "sleep 600 & V=$!; \
         for k in 1 2 3 4; do \
           (for i in $(seq 2500); do echo +S$k > $M/$V/attr/ptags || echo FAILED; done) & \
         done; wait %2 %3 %4 %5; cat $M/$V/attr/ptags; kill $V",
    );
    assert!(!out.contains("FAILED"), "{out}");
    assert!(out.contains("S1\nS2\nS3\nS4\n"), "{out}");
    let writes = read_trail(&d.log_dir)
        .lines()
        .filter(|l| l.starts_with("type=PTAGS_OP") && l.contains("op=write"))
        .count();
    assert!(writes >= 10_000, "{writes} writes on record");

    // Killed, it leaves its mount behind, stale; the next start takes
    // its place; a stop unmounts.
    d.kill();
    assert!(mounted(&mnt(&d)));
    d.restart();
    let out = bash(
        &d,
        "sleep 600 & V=$!; echo +X > $M/$V/attr/ptags; cat $M/$V/attr/ptags; kill $V",
    );
    assert!(out.starts_with("X\n"), "{out}");
    d.stop();
    assert!(!mounted(&mnt(&d)), "unmounted at stop");
}
