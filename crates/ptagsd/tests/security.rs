//! The attacks of issue 13 against a real daemon, by a real unprivileged
//! user with real set-uid programs (the hostile clients are the
//! `hostile_client` example): each is refused, changes nothing, and is on
//! record; and whatever the user does to the socket, root is served.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::trail::read_trail;
use common::{can_run, hostile_client, skips_fail, stdout, test_user, wait_until, Daemon};

/// Whether `su` is here and set-uid root, as the attacks need.
fn has_setuid_su(test: &str) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ok = std::fs::metadata("/usr/bin/su")
        .is_ok_and(|m| m.uid() == 0 && m.permissions().mode() & 0o4000 != 0);
    if !ok {
        assert!(
            !skips_fail(),
            "{test}: a set-uid root /usr/bin/su is required"
        );
        eprintln!("SKIPPED {test}: no set-uid root /usr/bin/su");
    }
    ok
}

/// A hostile client run as the test user, without capabilities.
fn as_user(args: &[&str]) -> Command {
    let uid = test_user().to_string();
    let mut c = Command::new("setpriv");
    c.args(["--reuid", &uid, "--regid", &uid, "--clear-groups"])
        .arg(hostile_client())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

/// Kills every `su` this test's clients started (they wait at their
/// password prompts, as root).
fn kill_su_of(uid: u32) {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
        if comm.trim() == "su" && real_uid == Some(uid) {
            // SAFETY: signalling a process this test's client started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn tags_of(d: &Daemon, pid: u32) -> String {
    stdout(&d.ptags(&["read", &pid.to_string()]))
}

#[test]
fn a_connection_handed_to_a_setuid_program_gains_nothing() {
    let test = "a_connection_handed_to_a_setuid_program";
    if !can_run(test) || !has_setuid_su(test) {
        return;
    }
    // The child writes once su runs: well within an idle time this long.
    let d = Daemon::start("handoff", "[limits]\nidle_timeout_ms = 10000\n");
    let uid = test_user();
    let socket = d.socket();
    let socket = socket.to_str().unwrap();

    // The process that connected becomes su (effective root, every
    // capability) at its password prompt; its child sends on the
    // inherited connection a second later.
    let out = as_user(&["handoff", socket])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let answers = read_lines_within(out, 2, Duration::from_secs(15));
    kill_su_of(uid);
    let lines: Vec<serde_json::Value> = answers
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{answers}");
    assert_eq!(lines[0]["error"]["errno"], "EPERM", "{answers}");
    // The status answered on that connection is an unprivileged one.
    let status = &lines[1]["ok"];
    assert_eq!(status["kind"], "status", "{answers}");
    assert_eq!(status["containers"], serde_json::json!([]), "{answers}");

    // The same with the request sent first and su exec'd at once: the
    // daemon may read the writer's credentials after the exec.
    let mut child = as_user(&["send-then-su", socket])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = common::printed_id(&mut child);
    wait_until(|| {
        read_trail(&d.log_dir)
            .lines()
            .any(|l| l.contains(&format!("op=write opid={pid} ")))
    });
    assert_eq!(tags_of(&d, pid), "", "nothing changed");
    kill_su_of(uid);
    let _ = child.wait();

    // Both refusals are on record, naming the unprivileged user.
    let trail = read_trail(&d.log_dir);
    let refused: Vec<&str> = trail
        .lines()
        .filter(|l| l.starts_with("type=PTAGS_OP") && l.contains("res=failed errno=EPERM"))
        .filter(|l| l.contains(&format!(" uid={uid} ")))
        .collect();
    assert_eq!(refused.len(), 2, "{trail}");
    assert!(!trail.contains("res=success"), "{trail}");
}

#[test]
fn a_process_that_is_not_dumpable_is_out_of_its_users_reach() {
    let test = "a_process_that_is_not_dumpable";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start("undumpable", "");
    let u = test_user();
    // Two processes of the test user: one dumpable, one not.
    let mut plain = Command::new("setpriv")
        .args(["--reuid", &u.to_string(), "--regid", &u.to_string()])
        .args(["--clear-groups", "sleep", "60"])
        .spawn()
        .unwrap();
    let mut hidden = as_user(&["undumpable", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let hidden_pid = common::printed_id(&mut hidden);
    // A manager of the same user, allowed to change others' UMCM tags:
    // the dumpable one only, as ptrace would allow.
    let out = d.sh(&format!(
        "ptags run --write +@ptags:UMCM:add --write +@ptags:UMCM:others -- \
         setpriv --reuid {u} --regid {u} --clear-groups sh -c \
         'ptags write {plain} +UMCM:x; echo rc=$?; ptags write {hidden_pid} +UMCM:x; echo rc=$?' 2>&1",
        plain = plain.id()
    ));
    assert!(out.starts_with("rc=0\n"), "{out}");
    assert!(out.contains("\nrc=1\n--stderr--"), "{out}");
    assert!(out.contains("may not act on process"), "{out}");
    assert!(out.contains("not dumpable"), "{out}");
    assert_eq!(tags_of(&d, plain.id()), "UMCM:x\n");
    assert_eq!(tags_of(&d, hidden_pid), "");
    for child in [&mut plain, &mut hidden] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// A child's standard output, read until it has `lines` lines, exits or
/// `limit` passes; then the child is killed.
fn read_lines_within(mut child: Child, lines: usize, limit: Duration) -> String {
    use std::io::BufRead;
    let out = child.stdout.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let end = std::time::Instant::now() + limit;
    let mut text = String::new();
    for _ in 0..lines {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match receive.recv_timeout(left) {
            Ok(line) => text += &(line + "\n"),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn a_user_flooding_the_socket_does_not_lock_root_out() {
    let test = "a_user_flooding_the_socket";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start("flood", "");
    let socket = d.socket();
    // More connections than one user may hold, each announcing 128 MiB
    // and sending one byte, reopened as the daemon closes them; from a
    // PID namespace of its own, as a container's would be.
    let uid = test_user().to_string();
    let flooder = Command::new("unshare")
        .args([
            "--pid", "--fork", "setpriv", "--reuid", &uid, "--regid", &uid,
        ])
        .args(["--clear-groups"])
        .arg(hostile_client())
        .args(["announce", socket.to_str().unwrap(), "64", "6"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // Another user keeps its own share. (The flooder's PID namespace gives
    // it no second share of its own user's: only root's processes are
    // counted per PID namespace, for containers without user namespaces.)
    for i in 0..5 {
        let out = d.sh_as("ptags status >/dev/null && echo ok", Some(65534));
        assert!(out.starts_with("ok"), "another user, try {i}: {out}");
    }
    let sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id().to_string();
    for i in 0..10 {
        let status = d.ptags(&["status"]);
        assert!(
            status.status.success(),
            "try {i}: {}",
            common::stderr(&status)
        );
        let write = d.ptags(&["write", &pid, &format!("+try{i}")]);
        assert!(
            write.status.success(),
            "try {i}: {}",
            common::stderr(&write)
        );
    }
    let summary = read_lines_within(flooder, 1, Duration::from_secs(15));
    assert!(summary.contains("opened"), "{summary}");
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    assert!(
        status["connections_refused"].as_u64().unwrap() > 0,
        "the flooder's connections over its limit are counted: {status}"
    );
    let mut sleeper = sleeper;
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// A container's root without capabilities that makes PID namespaces in
/// user namespaces of its own (which needs no capability) still has one
/// share of connections: another container's root is served meanwhile.
#[test]
fn a_container_root_gets_one_share_however_many_pid_namespaces_it_makes() {
    let test = "a_container_root_gets_one_share";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start("root-shares", "");
    let socket = d.socket();
    let client = hostile_client();
    // Eight PID namespaces, each in a user namespace of its own (kuid 0
    // stays, unmapped), each holding 32 connections: 256, more than all
    // the ordinary connections (224).
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8; do unshare -U -p -f {} announce {} 32 8 >/dev/null & done; wait",
        client.display(),
        socket.display()
    );
    let capless_root = |script: &str| {
        let mut c = Command::new("unshare");
        c.args([
            "--pid",
            "--fork",
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .args(["sh", "-c", script])
        .env("PTAGS_SOCKET", &socket)
        .env(
            "PATH",
            format!(
                "{}:{}",
                common::cli_path().parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::null());
        c
    };
    let mut attacker = capless_root(&script).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..5 {
        let out = capless_root("ptags status >/dev/null && echo ok")
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("ok"),
            "another container's root, try {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    assert!(
        status["connections_refused"].as_u64().unwrap() > 0,
        "the attacker's connections past its one share are refused: {status}"
    );
    let _ = attacker.kill();
    let _ = attacker.wait();
}

/// A user's changes past its burst come at its rate, every one it was
/// refused is counted and on record; root's are not limited.
#[test]
fn a_users_changes_are_held_to_its_rate_and_roots_are_not() {
    let test = "a_users_changes_are_held_to_its_rate";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start(
        "change-rate",
        "[limits]\nchanges_per_sec_per_uid = 5\nchanges_burst_per_uid = 10\n",
    );
    let uid = test_user();
    // 40 writes of a comment to itself (a change request, whatever its
    // outcome), as fast as the CLI goes.
    let out = d.sh_as(
        "limited=0; other=0; t0=$(date +%s%N); \
         for i in $(seq 40); do \
           case $(ptags write $$ '#n' 2>&1) in *EAGAIN*) limited=$((limited+1));; *) other=$((other+1));; esac; \
         done; echo $limited $other $(( ($(date +%s%N) - t0) / 1000000 ))",
        Some(uid),
    );
    let nums: Vec<u64> = out
        .split_whitespace()
        .take(3)
        .map(|n| n.parse().unwrap())
        .collect();
    let (limited, served, ms) = (nums[0], nums[1], nums[2]);
    eprintln!("{test}: {served} served and {limited} refused in {ms} ms");
    assert_eq!(limited + served, 40, "{out}");
    assert!(
        limited > 0 && served <= 10 + 5 * ms.div_ceil(1000) + 1,
        "burst 10, then 5 a second: {served} served in {ms} ms"
    );
    // Root (CAP_AUDIT_CONTROL) is served past any rate.
    let sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id().to_string();
    for i in 0..40 {
        let w = d.ptags(&["write", &pid, &format!("+r{i}")]);
        assert!(
            w.status.success(),
            "root's write {i}: {}",
            common::stderr(&w)
        );
    }
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    assert_eq!(status["requests_limited"], limited, "{status}");
    let recorded = |t: &str| -> u64 {
        t.lines()
            .filter(|l| l.starts_with("type=PTAGS_REFUSED") && l.contains(&format!(" uid={uid} ")))
            .map(|l| {
                let n = l.split(" limited=").nth(1).unwrap();
                n.split(' ').next().unwrap().trim().parse::<u64>().unwrap()
            })
            .sum()
    };
    wait_until(|| recorded(&read_trail(&d.log_dir)) == limited);
    let mut sleeper = sleeper;
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn container_ids_are_shown_only_to_those_who_may_read_them() {
    let test = "container_ids_are_shown_only";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start("status-ids", "");
    let mut member = Command::new(common::cli_path())
        .args(["run", "--contid", "4242", "--", "sleep", "30"])
        .env("PTAGS_SOCKET", d.socket())
        .spawn()
        .unwrap();
    let status = || -> serde_json::Value {
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap()
    };
    wait_until(|| status()["containers"][0]["live"] == 1);
    let root = status();
    assert_eq!(root["container_count"], 1, "{root}");
    assert_eq!(root["containers"][0]["contid"], 4242, "{root}");
    let out = d.sh_as("ptags --json status", Some(test_user()));
    let user: serde_json::Value =
        serde_json::from_str(out.split("--stderr--").next().unwrap()).unwrap();
    assert_eq!(user["container_count"], 1, "{user}");
    assert_eq!(user["containers"], serde_json::json!([]), "{user}");
    let text = d.sh_as("ptags status", Some(test_user()));
    assert!(
        text.contains("containers: 1 ") && text.contains("needs CAP_AUDIT_CONTROL"),
        "{text}"
    );
    assert!(!text.contains("4242"), "{text}");
    member.kill().unwrap();
    member.wait().unwrap();
}

#[test]
fn a_ptrace_attach_across_containers_is_on_record() {
    let test = "a_ptrace_attach_across_containers";
    if !can_run(test) || !common::trail::has_tool(test, "auditctl") {
        return;
    }
    let d = Daemon::start("ptrace", "");
    let key = format!("ptags-test-ptrace-{}", std::process::id());
    let mut audit = common::trail::AuditState::new();
    audit.rule(
        &["-a", "always,exit", "-F", "arch=b64", "-S", "ptrace"],
        &key,
    );
    let mut host = Command::new("sleep").arg("60").spawn().unwrap();
    let mut neighbour = Command::new(common::cli_path())
        .args(["run", "--contid", "5656", "--", "sleep", "60"])
        .env("PTAGS_SOCKET", d.socket())
        .spawn()
        .unwrap();
    let tracer = hostile_client();
    // A process in container 5555 seizes a host process, then a process
    // of its own container, then one of container 5656.
    let out = d.sh(&format!(
        "ptags run --contid 5555 -- sh -c '{t} ptrace {h}; sleep 60 & {t} ptrace $!; kill $!; \
         {t} ptrace $(pgrep -P {n} -x sleep)'",
        t = tracer.display(),
        h = host.id(),
        n = neighbour.id(),
    ));
    assert_eq!(out.matches("seized").count(), 3, "{out}");
    let records = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("type=PTAGS_PTRACE"))
            .map(str::to_owned)
            .collect()
    };
    common::trail::wait_for_trail(&d, "two PTAGS_PTRACE records", |t| records(t).len() >= 2);
    let found = records(&read_trail(&d.log_dir));
    assert_eq!(
        found.len(),
        2,
        "the attach inside its own container is not one: {found:?}"
    );
    assert!(
        found[0].contains(&format!(" contid=5555 opid={} ocontid=-1", host.id())),
        "{found:?}"
    );
    assert!(
        found[1].contains(" contid=5555 ") && found[1].contains(" ocontid=5656"),
        "{found:?}"
    );
    // Each follows the kernel's SYSCALL record of the attach, same stamp.
    let trail = read_trail(&d.log_dir);
    for record in &found {
        let stamp = record
            .split("msg=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert!(
            trail
                .lines()
                .any(|l| l.starts_with("type=SYSCALL") && l.contains(stamp) && l.contains(&key)),
            "{stamp}"
        );
    }
    assert_eq!(d.audit_counter("cross_container_ptrace"), 2);
    drop(audit);
    // `ptags run`'s child first: it runs the container's sleep.
    let _ = Command::new("pkill")
        .args(["-P", &neighbour.id().to_string()])
        .status();
    for child in [&mut host, &mut neighbour] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn descriptors_sent_to_the_daemon_are_closed() {
    let test = "descriptors_sent_to_the_daemon";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start("send-fds", "");
    let daemon_pid = d.pid();
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{daemon_pid}/fd"))
            .unwrap()
            .count()
    };
    let before = open_fds();
    let out = as_user(&["send-fds", d.socket().to_str().unwrap(), "200"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(stdout(&out).contains("\"sent\":200"), "{}", stdout(&out));
    // 1,600 descriptors were sent; none stays in the daemon.
    let after = open_fds();
    assert!(
        after <= before + 2,
        "{before} descriptors before, {after} after"
    );
}

#[test]
fn requests_sent_together_are_each_answered() {
    if !can_run("requests_sent_together") {
        return;
    }
    use std::io::{Read, Write};
    let d = Daemon::start("pipelined", "");
    let frame = |body: &str| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body.as_bytes());
        f
    };
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    // Three requests in one write: the first read takes more than one.
    let mut all = frame(r#"{"v":1,"req":{"op":"status"}}"#);
    all.extend(frame(&format!(
        r#"{{"v":1,"req":{{"op":"read","target":{{"pid":{}}}}}}}"#,
        std::process::id()
    )));
    all.extend(frame(r#"{"v":1,"req":{"op":"status"}}"#));
    s.write_all(&all).unwrap();
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        kinds.push(v["ok"]["kind"].as_str().unwrap_or("error").to_owned());
    }
    assert_eq!(kinds, ["status", "tags", "status"]);
}

#[test]
fn a_write_typed_slowly_still_arrives() {
    if !can_run("a_write_typed_slowly") {
        return;
    }
    // The daemon closes a connection idle for a second; the CLI, which
    // connects before it reads standard input, opens a new one.
    let d = Daemon::start("slow-stdin", "");
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let out = d.sh(&format!(
        "(sleep 1.5; echo +typed) | ptags write {}; echo rc=$?",
        sleeper.id()
    ));
    assert!(out.starts_with("rc=0"), "{out}");
    assert_eq!(tags_of(&d, sleeper.id()), "typed\n");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// Issue 21's attack: a process whose main thread has exited is judged by
/// what its live threads share, not by the dead main thread's
/// credentials. Root's process whose one live thread dropped to nobody
/// (that thread alone) may not read container IDs (CAP_AUDIT_CONTROL);
/// one whose live thread stayed root still may.
#[test]
fn a_process_whose_main_thread_exited_is_judged_by_its_live_threads() {
    let test = "a_process_whose_main_thread_exited";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start("exited-main", "");
    let socket = d.socket();
    let answer = |how: &str| {
        let out = Command::new(hostile_client())
            .args(["exited-main", socket.to_str().unwrap(), how])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: serde_json::Value =
            serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{how}: {e}: {text:?}"));
        v
    };
    let kept = answer("keep");
    assert_eq!(
        kept["ok"]["kind"], "contid",
        "the live thread is root: {kept}"
    );
    let dropped = answer("drop");
    assert_eq!(dropped["error"]["errno"], "EPERM", "{dropped}");
}
