//! The audit trail end to end, with the real kernel audit: events of
//! tasks in containers carry CONTAINER_ID, ausearch reads the log, the
//! chain finds tampering, and a fork storm loses nothing. The audit
//! state (rules, enabled, backlog) is restored when each test ends.

mod common;

use std::process::Command;
use std::sync::Mutex;

use common::trail::{has_tool, log_files, read_trail, wait_for_trail, AuditState};
use common::{can_run, stdout, Daemon};

/// The kernel's audit state is global: one test changes it at a time.
static AUDIT: Mutex<()> = Mutex::new(());

/// The stamp `audit(...)` of a line.
fn stamp(line: &str) -> &str {
    let start = line.find("msg=audit(").unwrap();
    let end = line[start..].find("):").unwrap();
    &line[start..start + end + 2]
}

#[test]
fn kernel_events_carry_their_container_and_ausearch_groups_them() {
    let test = "kernel_events_carry_their_container";
    if !can_run(test) || !has_tool(test, "auditctl") || !has_tool(test, "ausearch") {
        return;
    }
    let _lock = AUDIT.lock().unwrap_or_else(|e| e.into_inner());
    let d = Daemon::start("audit-kernel", "");
    let watched = d.dir.path().join("watched");
    std::fs::write(&watched, "secret\n").unwrap();
    let key = format!("ptags-test-watch-{}", std::process::id());
    let mut audit = AuditState::new();
    audit.rule(&["-w", watched.to_str().unwrap(), "-p", "r"], &key);
    let w = watched.display();
    d.sh(&format!(
        "ptags run --contid 4242 -- sh -c 'cat {w} >/dev/null; \
         ptags run --contid 4343 -- cat {w} >/dev/null'; \
         cat {w} >/dev/null"
    ));
    // Three reads: in 4242, in 4343 nested in 4242, and on the host.
    let needle = format!("key=\"{key}\"");
    let reads = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("type=SYSCALL") && l.contains(" syscall=257 "))
            .filter(|l| l.contains(&needle))
            .count()
    };
    wait_for_trail(&d, "three reads", |t| reads(t) >= 3);
    wait_for_trail(&d, "the nested chain", |t| t.contains("contid=4343,^4242"));
    let text = read_trail(&d.log_dir);
    let syscalls: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("type=SYSCALL") && l.contains(" syscall=257 "))
        .filter(|l| l.contains(&needle))
        .collect();
    assert_eq!(syscalls.len(), 3, "{text}");
    let contids: Vec<Option<&str>> = syscalls
        .iter()
        .map(|s| {
            let st = stamp(s);
            text.lines()
                .find(|l| l.starts_with("type=CONTAINER_ID") && stamp(l) == st)
                .map(|l| l.split(' ').nth(2).unwrap())
        })
        .collect();
    assert_eq!(
        contids,
        [Some("contid=4242"), Some("contid=4343,^4242"), None],
        "{text}"
    );
    // The CONTAINER_OP records, with the caller's identity.
    assert!(text.contains("type=CONTAINER_OP"), "{text}");
    assert!(text.contains("op=set opid="), "{text}");
    assert!(
        text.contains("op=nest opid=") && text.contains("contid=4343 old-contid=4242"),
        "{text}"
    );
    wait_for_trail(&d, "the drops", |t| {
        t.contains("op=drop contid=4343") && t.contains("op=drop contid=4242")
    });

    // ausearch groups each CONTAINER_ID with its event.
    let log = d.dir.path().join("log/audit.log");
    let out = Command::new("ausearch")
        .args(["-if", log.to_str().unwrap(), "-k", &key])
        .output()
        .unwrap();
    let found = stdout(&out);
    // The reads (openat), not the rule's own CONFIG_CHANGE event.
    let events: Vec<&str> = found
        .split("----")
        .filter(|e| e.contains(" syscall=257 "))
        .collect();
    assert_eq!(events.len(), 3, "ausearch:\n{found}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.contains("type=CONTAINER_ID"))
            .count(),
        2,
        "ausearch:\n{found}"
    );
    for e in events.iter().filter(|e| e.contains("type=CONTAINER_ID")) {
        let stamps: Vec<&str> = e
            .lines()
            .filter(|l| l.starts_with("type="))
            .map(stamp)
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] == w[1]), "{e}");
    }

    // ptags audit search: the container, nested ones on request.
    let dir = d.log_dir.display().to_string();
    let search = |extra: &[&str]| {
        let mut args = vec!["audit", "search", "--log-dir", &dir, "--type", "SYSCALL"];
        args.extend(extra);
        stdout(&d.ptags(&args))
    };
    let own = search(&["--contid", "4242"]);
    assert_eq!(own.matches(&key).count(), 1, "{own}");
    let nested = search(&["--contid", "4242", "--nested"]);
    assert_eq!(nested.matches(&key).count(), 2, "{nested}");
    let json = search(&["--contid", "4343", "--format", "json"]);
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["seq"].is_u64() && v["type"].is_string(), "{line}");
    }
    let report = stdout(&d.ptags(&["audit", "report", "--log-dir", &dir]));
    let row = report
        .lines()
        .find(|l| l.split_whitespace().next() == Some("4343"))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[1..3],
        ["4242", "nest"],
        "{report}"
    );
    let verify = d.ptags(&["audit", "verify", "--log-dir", &dir, "--key", &d.key_file()]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}

/// Runs verify on a copy of the log changed by `edit`; returns its output.
fn verify_edited(d: &Daemon, edit: impl FnOnce(&mut Vec<String>), tail: bool) -> (bool, String) {
    let text = std::fs::read_to_string(d.dir.path().join("log/audit.log")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    edit(&mut lines);
    let copy = d.dir.path().join("edited.log");
    std::fs::write(&copy, lines.join("\n") + "\n").unwrap();
    let tail_file = d.dir.path().join("state/audit.tail").display().to_string();
    let copy = copy.display().to_string();
    let key = d.key_file();
    let mut args = vec!["audit", "verify", "-i", &copy, "--key", &key];
    if tail {
        args.extend(["--tail", &tail_file]);
    }
    let out = d.ptags(&args);
    (out.status.success(), stdout(&out))
}

#[test]
fn verify_finds_every_change_and_says_where() {
    if !can_run("verify_finds_every_change") {
        return;
    }
    let mut d = Daemon::start("audit-verify", "[audit]\nkernel = false\n");
    d.sh("sleep 30 & for i in 1 2 3 4 5 6 7 8; do ptags write $! +n:$i >/dev/null; done; kill $!");
    d.stop();
    let (ok, out) = verify_edited(&d, |_| {}, true);
    assert!(ok, "{out}");
    let n = std::fs::read_to_string(d.dir.path().join("log/audit.log"))
        .unwrap()
        .lines()
        .count();
    assert!(
        n >= 9,
        "an opening and 8 tag changes at least:\n{}",
        d.log()
    );

    // The first outcome (each change's intent comes before it).
    let log = std::fs::read_to_string(d.dir.path().join("log/audit.log")).unwrap();
    let outcome = log.lines().position(|l| l.contains("res=success")).unwrap();
    let (ok, out) = verify_edited(
        &d,
        |l| l[outcome] = l[outcome].replace("res=success", "res=failed"),
        false,
    );
    assert!(
        !ok && out.contains(&format!("edited.log:{}:", outcome + 1)) && out.contains("altered"),
        "{out}"
    );
    let (ok, out) = verify_edited(&d, |l| drop(l.remove(5)), false);
    assert!(
        !ok && out.contains("edited.log:6:") && out.contains("missing"),
        "{out}"
    );
    let (ok, out) = verify_edited(&d, |l| l.swap(2, 3), false);
    assert!(!ok && out.contains("edited.log:3:"), "{out}");
    let (ok, out) = verify_edited(&d, |l| l.truncate(l.len() - 2), true);
    assert!(!ok && out.contains("cut off"), "{out}");
    let (ok, out) = verify_edited(&d, |l| drop(l.remove(0)), false);
    assert!(
        !ok && out.contains("edited.log:1:") && out.contains("opening"),
        "{out}"
    );

    // A restart continues the chain in the same file.
    d.restart();
    d.sh("sleep 30 & ptags write $! +after:restart >/dev/null; kill $!");
    d.stop();
    let (ok, out) = verify_edited(&d, |_| {}, true);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(d.dir.path().join("log/audit.log"))
            .unwrap()
            .matches("type=PTAGS_LOG")
            .count(),
        2
    );
}

#[test]
fn a_fork_storm_loses_no_record() {
    let test = "a_fork_storm_loses_no_record";
    if !can_run(test) || !has_tool(test, "auditctl") {
        return;
    }
    let _lock = AUDIT.lock().unwrap_or_else(|e| e.into_inner());
    let mut d = Daemon::start(
        "audit-storm",
        "[audit]\nprocess_records = true\nmax_log_file_mib = 1\nnum_logs = 50\n",
    );
    let key = format!("ptags-test-storm-{}", std::process::id());
    let mut audit = AuditState::new();
    audit.rule(
        &["-a", "always,exit", "-F", "arch=b64", "-S", "execve"],
        &key,
    );
    const EXECS: usize = 2000;
    d.sh(&format!(
        "ptags run --contid 7171 -- sh -c 'i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done'"
    ));
    // sh itself, then every /bin/true.
    let expected = EXECS + 1;
    let count = |text: &str| {
        let stamps: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("type=CONTAINER_ID") && l.contains("contid=7171 "))
            .map(stamp)
            .collect();
        text.lines()
            .filter(|l| l.starts_with("type=SYSCALL") && l.contains(&format!("key=\"{key}\"")))
            // Not the failed attempts of a PATH search.
            .filter(|l| l.contains(" success=yes "))
            .filter(|l| stamps.contains(stamp(l)))
            .count()
    };
    wait_for_trail(&d, "the drop", |t| t.contains("op=drop contid=7171"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = read_trail(&d.log_dir);
    let lost = d.audit_counter("lost_kernel")
        + d.audit_counter("lost_netlink")
        + d.audit_counter("lost_ringbuf");
    assert_eq!(lost, 0, "records were lost (and counted)");
    assert_eq!(
        count(&text),
        expected,
        "execve events with CONTAINER_ID 7171"
    );
    let execs = text
        .lines()
        .filter(|l| l.starts_with("type=PTAGS_EXEC") && l.contains("contid=7171 "))
        .count();
    assert_eq!(execs, expected, "PTAGS_EXEC records");
    // The log rotated on the way; the files verify as one trail. The
    // rule sees every exec of the machine, so the daemon stops first:
    // the trail must not rotate while it is verified.
    d.stop();
    let files = log_files(&d.log_dir);
    assert!(files.len() > 2, "rotated: {files:?}");
    let dir = d.log_dir.display().to_string();
    let verify = d.ptags(&["audit", "verify", "--log-dir", &dir, "--key", &d.key_file()]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}
