//! The process-tags spec, end to end: the real daemon, the real CLI, real
//! processes (as root).

mod common;

use std::process::{Child, Command};

use common::{can_run, stderr, stdout, test_user, Daemon};

struct Sleeper(Child);

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(Command::new("sleep").arg("60").spawn().unwrap())
    }
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes lines to `pid`; returns the exit code and stderr.
fn write(d: &Daemon, pid: &str, lines: &[&str]) -> (i32, String) {
    let mut args = vec!["write", pid];
    args.extend(lines);
    let out = d.ptags(&args);
    (out.status.code().unwrap(), stderr(&out))
}

/// Writes standard input to `pid`; returns the exit code and stderr.
fn write_stdin(d: &Daemon, pid: &str, input: &[u8]) -> (i32, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(common::cli_path())
        .args(["write", pid])
        .env("PTAGS_SOCKET", d.socket())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap(), stderr(&out))
}

fn read(d: &Daemon, pid: &str) -> String {
    let out = d.ptags(&["read", pid]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn every_row_of_the_write_table() {
    if !can_run("every_row_of_the_write_table") {
        return;
    }
    let d = Daemon::start("write-table", "");
    let s = Sleeper::new();
    let p = &s.pid();
    let ok = |lines: &[&str], expect: &str| {
        let (code, err) = write(&d, p, lines);
        assert_eq!(code, 0, "{lines:?}: {err}");
        assert_eq!(read(&d, p), expect, "after {lines:?}");
    };
    let fails = |lines: &[&str], line: usize, errno: &str| {
        let (code, err) = write(&d, p, lines);
        assert_eq!(code, 1, "{lines:?} should fail");
        assert!(
            err.contains(&format!("line {line}: {errno}")),
            "{lines:?}: {err}"
        );
    };
    ok(
        &["+S:X", "+S:A:B.c", "!S:A:B.c=v", "+S"],
        "S\nS:A:B.c=v\nS:X\n",
    );
    ok(&["+S:A:B.c"], "S\nS:A:B.c=v\nS:X\n"); // add keeps a value
                                              // `+` never gives a value (the 2016 module's EINVAL): nothing changes.
    fails(&["+S:X=other"], 1, "EINVAL");
    fails(&["+@K=1"], 1, "EINVAL");
    ok(&["+@K", "!K=1"], "@K=1\nS\nS:A:B.c=v\nS:X\n");
    ok(&["+@S:*"], "@K=1\nS\n@S:A:B.c=v\n@S:X\n"); // not `S` itself
    ok(&["-@"], "K=1\nS\nS:A:B.c=v\nS:X\n");
    ok(&["+@"], "@K=1\n@S\n@S:A:B.c=v\n@S:X\n");
    ok(&["-@S:*", "-@K"], "K=1\n@S\nS:A:B.c=v\nS:X\n");
    fails(&["+S:*"], 1, "EINVAL");
    fails(&["?S", "+"], 2, "EINVAL");
    ok(&["-absent"], "K=1\n@S\nS:A:B.c=v\nS:X\n");
    ok(&["!K=2", "!S:X=a b"], "K=2\n@S\nS:A:B.c=v\nS:X=a b\n");
    ok(&["!K=", "!S:X"], "K\n@S\nS:A:B.c=v\nS:X\n");
    fails(&["!nope=1"], 1, "ENOENT");
    ok(
        &["?S:*", "?@S", "?", "?@", "?K", "# comment", ""],
        "K\n@S\nS:A:B.c=v\nS:X\n",
    );
    fails(&["?S:B:*"], 1, "ENOENT");
    fails(&["?@K"], 1, "ENOENT");
    ok(&["-S:*"], "K\n@S\n");
    // Lines before a failure stay applied.
    fails(&["+a", "+b", "!c=1", "+d"], 3, "ENOENT");
    assert_eq!(read(&d, p), "K\n@S\na\nb\n");
    ok(&["-"], "");
    ok(&["-@", "-x"], ""); // no-ops on an empty set
    ok(&["+कंटेनर", "!कंटेनर=値", "+:x::a"], ":x::a\nकंटेनर=値\n");
    fails(&["+a", "!a=b\tc"], 2, "EINVAL");
    ok(&["-"], "");
    fails(&["+@x:"], 1, "EINVAL");
    fails(&["+ptags:x"], 1, "EINVAL");
    // A full-size value in one write.
    let big = format!("!big={}", "v".repeat(32700));
    ok(
        &["-", "+big", &big],
        &format!("big={}\n", "v".repeat(32700)),
    );
    fails(
        &["+big2", &format!("!big2={}", "v".repeat(32701))],
        2,
        "EINVAL",
    );
    // A final line without its newline, and invalid UTF-8, from stdin.
    let via_stdin = |input: &[u8]| write_stdin(&d, p, input);
    let (code, err) = via_stdin(b"-\n+a\n+b");
    assert_eq!(code, 1);
    assert!(err.contains("line 3: EINVAL"), "{err}");
    assert_eq!(read(&d, p), "a\n");
    let (code, err) = via_stdin(b"+c\n+\xff\n");
    assert_eq!(code, 1);
    assert!(err.contains("line 2: EINVAL"), "{err}");
    assert_eq!(read(&d, p), "a\nc\n");
}

#[test]
fn the_tag_count_limit() {
    if !can_run("the_tag_count_limit") {
        return;
    }
    let d = Daemon::start("count-limit", "");
    let s = Sleeper::new();
    let text: String = (0..4000).map(|i| format!("+t{i}\n")).collect();
    assert_eq!(write_stdin(&d, &s.pid(), text.as_bytes()).0, 0);
    assert_eq!(read(&d, &s.pid()).lines().count(), 4000);
    let (code, err) = write(&d, &s.pid(), &["+t0", "+one-more"]);
    assert_eq!(code, 1);
    assert!(err.contains("line 2: ECANCELED"), "{err}");
}

#[test]
fn fork_inherits_exec_prunes_and_run_starts_labelled() {
    if !can_run("fork_inherits_exec_prunes_and_run_starts_labelled") {
        return;
    }
    let d = Daemon::start("life-cycle", "");
    // The shell gets its tags at exec from `ptags run`; its subshell
    // (a fork) has them all; an exec'd child only the kept ones.
    let out = d.sh(
        "ptags run --write +@kept --write '!kept=1' --write +gone -- sh -c '\
            ptags read $$; echo ---; \
            (while :; do sleep 1; done) >/dev/null & F=$!; ptags read $F; kill $F; echo ---; \
            sh -c \"ptags read \\$\\$\"'",
    );
    assert_eq!(
        out,
        "gone\n@kept=1\n---\ngone\n@kept=1\n---\n@kept=1\n--stderr--\n",
        "{}",
        d.log()
    );
    // A refused write kills the command before it runs.
    let out = d.sh("ptags run --write '+a*' -- sh -c 'echo ran'; echo rc=$?");
    assert!(
        out.starts_with("rc=1\n") && out.contains("line 1: EINVAL"),
        "{out}"
    );
    let out = d.sh("ptags run -- /nonexistent; echo rc=$?");
    assert!(
        out.contains("rc=2") && out.contains("cannot run /nonexistent"),
        "{out}"
    );
}

#[test]
fn threads_have_their_own_tags() {
    if !can_run("threads_have_their_own_tags") {
        return;
    }
    let d = Daemon::start("threads", "");
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let pid = std::process::id();
    let one = format!("{pid}/{tid}");
    assert_eq!(write(&d, &one, &["+only-thread"]).0, 0);
    assert_eq!(read(&d, &one), "only-thread\n");
    assert_eq!(read(&d, &pid.to_string()), "");
    let (code, _) = write(&d, &pid.to_string(), &["+all"]);
    assert_eq!(code, 0);
    assert_eq!(read(&d, &one), "all\nonly-thread\n");
    assert_eq!(read(&d, &pid.to_string()), "all\n");
    let out = d.ptags(&["read", &format!("{pid}/1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ESRCH"), "{}", stderr(&out));
    // Clean up this test process's tags.
    assert_eq!(write(&d, &pid.to_string(), &["-"]).0, 0);
    stop_tx.send(()).unwrap();
    thread.join().unwrap();
}

#[test]
fn permissions_of_users_and_container_managers() {
    if !can_run("permissions_of_users_and_container_managers") {
        return;
    }
    let d = Daemon::start("permissions", "");
    let uid = test_user();
    let u = &uid.to_string();
    // A process of the test user, which it may act on (same user).
    let out = d.sh(&format!(
        "setpriv --reuid {u} --regid {u} --clear-groups sleep 60 >/dev/null 2>&1 & echo $!"
    ));
    let victim = out.lines().next().unwrap().to_owned();
    let root_sleeper = Sleeper::new();
    // An unprivileged user without permissions is refused.
    let out = d.sh_as(&format!("ptags write {victim} +a; echo rc=$?"), Some(uid));
    assert!(
        out.contains("rc=1") && out.contains("line 1: EPERM"),
        "{out}"
    );
    let out = d.sh_as(
        &format!("ptags contid set {victim} 5; echo rc=$?; ptags contid get {victim}; echo rc=$?"),
        Some(uid),
    );
    assert_eq!(out.matches("rc=1").count(), 2, "{out}");
    assert_eq!(out.matches("EPERM").count(), 2, "{out}");
    // Reading tags is open to anyone.
    let out = d.sh_as(
        &format!("ptags read {}; echo rc=$?", root_sleeper.pid()),
        Some(uid),
    );
    assert!(out.starts_with("rc=0"), "{out}");
    // A container manager: root hands the kept permissions to a shell
    // that then runs as the test user (no capabilities left).
    let manager = |script: &str| {
        d.sh(&format!(
            "ptags run --write +@ptags:UMCM:add --write +@ptags:UMCM:sub --write +@ptags:UMCM:others \
             -- setpriv --reuid {u} --regid {u} --clear-groups sh -c '{script}'"
        ))
    };
    let out = manager(&format!(
        "ptags write {victim} +UMCM:CONTAINER_ID; echo rc=$?; \
         ptags write {victim} +OTHER:x; echo rc=$?; \
         ptags write {victim} \"!UMCM:CONTAINER_ID=bar\"; echo rc=$?; \
         ptags write {root} +UMCM:x; echo rc=$?; \
         ptags write {victim} +UMCM:gone \"-UMCM:*\" \"-OTHER:*\"; echo rc=$?",
        root = root_sleeper.pid()
    ));
    assert!(
        out.starts_with("rc=0\nrc=1\nrc=1\nrc=1\nrc=0\n"),
        "{out}\n{}",
        d.log()
    );
    assert!(out.contains("line 1: EPERM"), "{out}");
    assert!(out.contains("may not act on process"), "{out}");
    assert_eq!(read(&d, &victim), "");
    assert_eq!(read(&d, &root_sleeper.pid()), "");
    // Without `others`, the manager's permissions are its own only.
    let out = d.sh(&format!(
        "ptags run --write +@ptags:UMCM:add -- setpriv --reuid {u} --regid {u} --clear-groups \
         sh -c 'ptags write {victim} +UMCM:x; echo rc=$?'"
    ));
    assert!(out.starts_with("rc=1") && out.contains("EPERM"), "{out}");
    d.sh(&format!("kill {victim}"));
}
