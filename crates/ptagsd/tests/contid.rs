//! The audit-container-ID spec, end to end: every rule in its order,
//! inject, nesting, limits and drop, through the CLI (as root).

mod common;

use common::{can_run, stdout, Daemon};

/// A background sleeper whose pid is in $NAME, its output detached so
/// that the script's output ends when the script does.
fn sleeper(name: &str) -> String {
    format!("sleep 60 >/dev/null 2>&1 & {name}=$!;")
}

#[test]
fn every_rule_in_its_order() {
    if !can_run("every_rule_in_its_order") {
        return;
    }
    let d = Daemon::start("contid-rules", "");
    let script = [
        sleeper("A"),
        "ptags contid set $A -1; echo unset=$?;".into(),
        "ptags contid set $A 18446744073709551615; echo unset2=$?;".into(),
        "ptags --json contid set $A 10;".into(),
        "ptags contid get $A;".into(),
        "ptags contid set $A 11; echo again=$?;".into(),
        sleeper("B"),
        "ptags --json contid set $B 10;".into(),
        // The shell has children (this command, at least): rule 3 first.
        "ptags contid set $$ 12; echo parent=$?;".into(),
        "ptags contid set $U 12; echo unrelated=$?;".into(),
        // A client speaking the protocol itself, alone, on itself.
        format!("python3 -c '{SELF_SET}'; echo self=$?;"),
        "sh -c 'sleep 60 >/dev/null 2>&1 & wait' & C=$!; sleep 0.3;".into(),
        "ptags contid set $C 12; echo busy=$?;".into(),
        "sh -c 'sleep 60 >/dev/null 2>&1 & ptags contid set $! 10; echo notuniq=$?; kill $!';"
            .into(),
        "ptags contid get $C;".into(),
        "ptags ps --contid 10 | wc -l;".into(),
        "kill $A $B; pkill -P $C; wait;".into(),
    ]
    .concat();
    let unrelated = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let out = d.sh(&format!("U={}; {script}", unrelated.id()));
    let (stdout, stderr) = out.split_once("--stderr--\n").unwrap();
    assert_eq!(
        stdout,
        "unset=1\nunset2=1\n\
         {\"kind\":\"contid_set\",\"op\":\"set\",\"old\":null}\n\
         10\nagain=1\n\
         {\"kind\":\"contid_set\",\"op\":\"inject\",\"old\":null}\n\
         parent=1\nunrelated=1\nEXDEV\nself=1\nbusy=1\nnotuniq=1\nunset\n3\n",
        "{stderr}\n{}",
        d.log()
    );
    let errnos: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ptags: ")?.split(':').next())
        .collect();
    assert_eq!(
        errnos,
        ["EINVAL", "EINVAL", "EEXIST", "EBUSY", "EXDEV", "EBUSY", "ENOTUNIQ"],
        "{stderr}"
    );
    // Each change is logged as the body of its CONTAINER_OP record.
    let log = d.log();
    assert!(log.contains("CONTAINER_OP op=set opid="), "{log}");
    assert!(log.contains(" contid=10 old-contid=-1 pid="), "{log}");
    assert!(log.contains("CONTAINER_OP op=inject"), "{log}");
    assert!(log.contains("comm=\"ptags\""), "{log}");
    let mut unrelated = unrelated;
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
    // The last task out drops the container, and its ID is free again.
    common::wait_until(|| d.log().contains("container 10 dropped"));
    let out = d.sh(&format!(
        "{}ptags --json contid set $A 10; kill $A",
        sleeper("A")
    ));
    assert!(
        out.starts_with("{\"kind\":\"contid_set\",\"op\":\"set\""),
        "{out}"
    );
}

/// A single-threaded client without children asking to set its own ID
/// over the raw protocol; prints the errno of the answer.
const SELF_SET: &str = "import json, os, socket, struct
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ[\"PTAGS_SOCKET\"])
req = json.dumps({\"v\": 1, \"req\": {\"op\": \"contid_set\", \"pid\": os.getpid(), \"contid\": 99}}).encode()
s.sendall(struct.pack(\">I\", len(req)) + req)
n = struct.unpack(\">I\", s.recv(4, socket.MSG_WAITALL))[0]
print(json.loads(s.recv(n, socket.MSG_WAITALL))[\"error\"][\"errno\"])
exit(1)";

/// A nested orchestrator: B is put in container 10 by the outer shell,
/// then gives its own child C a container of its own.
const NESTED: &str = "mkfifo go; \
    sh -c 'read x < go; sleep 60 >/dev/null 2>&1 & C=$!; \
           ptags --json contid set $C 20; \
           ptags contid set $$ 30; echo own=$?; \
           ptags ps --contid 10 --nested | grep sleep | grep -c \"20,^10\"; \
           kill $C' & B=$!; \
    ptags contid set $B 10; echo outer=$?; echo > go; wait $B";

#[test]
fn nesting_gives_a_chain() {
    if !can_run("nesting_gives_a_chain") {
        return;
    }
    let d = Daemon::start("contid-nesting", "");
    let out = d.sh(NESTED);
    assert!(
        out.starts_with(
            "outer=0\n{\"kind\":\"contid_set\",\"op\":\"nest\",\"old\":10}\nown=1\n1\n--stderr--\n"
        ),
        "{out}\n{}",
        d.log()
    );
    // B's own ID: B has a child (the CLI at least), so rule 3 refuses.
    assert!(out.contains("EBUSY"), "{out}");
}

#[test]
fn limits_on_count_and_depth() {
    if !can_run("limits_on_count_and_depth") {
        return;
    }
    let d = Daemon::start(
        "contid-limits",
        "[limits]\nmax_containers = 2\nmax_depth = 1\n",
    );
    let out = d.sh(&format!(
        "{}{}{}ptags contid set $A 1; ptags contid set $B 2; ptags contid set $C 3; echo full=$?; kill $A $B $C",
        sleeper("A"),
        sleeper("B"),
        sleeper("C")
    ));
    assert!(
        out.starts_with("full=1\n") && out.contains("ENOSPC"),
        "{out}"
    );
    common::wait_until(|| d.log().contains("container 2 dropped"));
    let out = d.sh(NESTED);
    assert!(
        out.starts_with("outer=0\n") && out.contains("EMLINK"),
        "{out}"
    );
}

#[test]
fn a_stale_drop_does_not_end_a_container_taken_again() {
    if !can_run("a_stale_drop_does_not_end_a_container_taken_again") {
        return;
    }
    let d = Daemon::start("stale-drop", "");
    // The daemon reads A's drop within 50 ms: when it has read it before
    // B is labelled, B makes a new container (`op=set`) and the stale
    // path did not happen; then the test tries again, with a new ID.
    for contid in 4242..4250u64 {
        if stale_drop_once(&d, contid) {
            return;
        }
    }
    panic!("B was never labelled before A's drop was read, in 8 tries");
}

/// One try of [`a_stale_drop_does_not_end_a_container_taken_again`]:
/// false when B made a new container (A's drop was read first).
fn stale_drop_once(d: &Daemon, contid: u64) -> bool {
    // A runtime (this shell, the hooks' parent) labels A for its exec; A
    // execs and exits (its drop is queued); at once the runtime labels B
    // with the same ID (inject), B to take it at its exec when the script
    // ends. Each waits on a FIFO, without a child (a process with children
    // cannot be labelled).
    // The hook runs once the process has its own mount namespace (the
    // shell starts `unshare` in the background: it may not have yet).
    let hook = |pid: &str| {
        format!(
            "while [ \"$(readlink /proc/{pid}/ns/mnt)\" = \"$(readlink /proc/self/ns/mnt)\" ]; do sleep 0.01; done; \
             echo '{{\"ociVersion\":\"1.0.2\",\"id\":\"c{pid}\",\"status\":\"creating\",\"pid\":'{pid}',\"bundle\":\"/tmp\",\
             \"annotations\":{{\"io.ptags.contid\":\"{contid}\",\"io.ptags.join\":\"false\",\"io.ptags.devices\":\"off\"}}}}' | ptags oci-hook --stage createRuntime"
        )
    };
    let out = d.sh(&format!(
        "rm -f fa fb; mkfifo fa fb; unshare -m sh -c 'read x; exec true' <fa >/dev/null 2>&1 & A=$!; \
         exec 3>fa; {a}; echo go >&3; exec 3>&-; wait $A; \
         unshare -m sh -c 'read x; exec sleep 5' <fb >/dev/null 2>&1 & B=$!; exec 4>fb; {b}; \
         echo B=$B",
        a = hook("$A"),
        b = hook("$B"),
    ));
    let b: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("B="))
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    common::wait_until(|| {
        std::fs::read_to_string(format!("/proc/{b}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    let labelled = |op: &str| format!("op={op} opid={b} contid={contid} ");
    let mut trail = String::new();
    common::wait_until(|| {
        trail = common::trail::read_trail(&d.log_dir);
        trail.contains(&labelled("inject")) || trail.contains(&labelled("set"))
    });
    if !trail.contains(&labelled("inject")) {
        // SAFETY: killing the process the test's shell started.
        unsafe { libc::kill(b as i32, libc::SIGKILL) };
        return false;
    }
    // B has exec'd and is in the container; the drop queued by A's exit
    // ended nothing.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        stdout(&d.ptags(&["contid", "get", &b.to_string()])).trim(),
        contid.to_string()
    );
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    let row = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["contid"] == contid)
        .unwrap_or_else(|| {
            panic!(
                "container {contid} is gone: {status}\n{}\n{}",
                common::trail::read_trail(&d.log_dir),
                d.log()
            )
        });
    assert_eq!(row["live"], 1, "{status}");
    assert_eq!(status["lost"]["container_missing"], 0, "{status}");
    let trail = common::trail::read_trail(&d.log_dir);
    let inject = trail.find(&labelled("inject")).unwrap();
    assert!(
        !trail[inject..].contains(&format!("op=drop contid={contid} ")),
        "the container was dropped after B took it: {trail}"
    );
    // SAFETY: killing the process the test's shell started.
    unsafe { libc::kill(b as i32, libc::SIGKILL) };
    true
}
