//! Containers' own copies of their records (issue 18): each copy holds
//! exactly its container's records and its nested containers', verifies
//! on its own and survives a restart; a follower sees its container and
//! nothing else; a stopped reader costs the host and the other
//! containers nothing and its copy says exactly what it missed; `kill`
//! stops the container and only it; bad policies change nothing.

mod common;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::runc::{has_runc, Runc};
use common::trail::{has_tool, read_trail, wait_for_trail, AuditState};
use common::{can_run, cli_path, stderr, stdout, test_user, wait_until, Daemon};
use ptags_proto::{read_frame, write_frame, Request, RequestFrame, Response, ResponseFrame};

/// The kernel's audit rules are the machine's: one test at a time.
static AUDIT: Mutex<()> = Mutex::new(());

/// Starts a shell script in the background, with the CLI on its PATH.
fn spawn_sh(d: &Daemon, script: &str) -> Child {
    let bin = cli_path().parent().unwrap().to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("PTAGS_SOCKET", d.socket())
        .current_dir(d.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Sets a container's policy, waiting for the container to exist.
fn set_policy(d: &Daemon, contid: u64, text: &str) {
    let file = d.dir.path().join(format!("policy-{contid}"));
    std::fs::write(&file, text).unwrap();
    let id = contid.to_string();
    let args = ["audit", "policy", "set", &id, file.to_str().unwrap()];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = d.ptags(&args);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline && stderr(&out).contains("ENOENT"),
            "policy set {contid}: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_dir(d: &Daemon, contid: u64) -> PathBuf {
    d.log_dir.join("containers").join(contid.to_string())
}

/// `ptags audit verify` of a copy, with its own key.
fn verify_copy(d: &Daemon, contid: u64) -> (bool, String) {
    let key = d
        .dir
        .path()
        .join(format!("state/containers/{contid}/audit.key"));
    let out = d.ptags(&[
        "audit",
        "verify",
        "--log-dir",
        copy_dir(d, contid).to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

/// `ptags --json audit policy get`: the copy's counts.
fn counts(d: &Daemon, contid: u64) -> serde_json::Value {
    let out = d.ptags(&["--json", "audit", "policy", "get", &contid.to_string()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// The chain a record's event names: the `contid=` of the
/// `CONTAINER_ID` record with its stamp, or of its own body.
fn stamp(line: &str) -> &str {
    let start = line.find("msg=audit(").unwrap();
    let end = start + line[start..].find(')').unwrap();
    &line[start..end]
}

/// The lines of `text` of type `kind` whose body has `needle`.
fn count(text: &str, kind: &str, needle: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(&format!("type={kind} ")) && l.contains(needle))
        .count()
}

/// The sum of `lost=` over the `PTAGS_LOST` lines with `needle`.
fn lost(text: &str, needle: &str) -> u64 {
    text.lines()
        .filter(|l| l.contains("type=PTAGS_LOST") && l.contains(needle))
        .map(|l| {
            let v = l.split(" lost=").nth(1).unwrap();
            v.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum()
}

#[test]
fn each_copy_holds_exactly_its_containers_records_and_verifies_alone() {
    let test = "each_copy_holds_exactly";
    if !can_run(test) || !has_tool(test, "auditctl") {
        return;
    }
    let _lock = AUDIT.lock().unwrap_or_else(|e| e.into_inner());
    let mut d = Daemon::start("copies-exact", "");
    let watched = d.dir.path().join("watched");
    std::fs::write(&watched, "secret\n").unwrap();
    let key = format!("ptags-test-copies-{}", std::process::id());
    let mut audit = AuditState::new();
    audit.rule(&["-w", watched.to_str().unwrap(), "-p", "r"], &key);
    let w = watched.display();
    // Container 501 with 502 nested in it, container 503, and the host:
    // each reads the watched file once, after the policies are set.
    let go = d.dir.path().join("go");
    let g = go.display();
    let wait = format!("while [ ! -e {g} ]; do sleep 0.02; done");
    let mut a = spawn_sh(
        &d,
        &format!(
            "ptags run --contid 501 -- sh -c '{wait}; cat {w} >/dev/null; \
             ptags run --contid 502 -- cat {w} >/dev/null'"
        ),
    );
    let mut b = spawn_sh(
        &d,
        &format!("ptags run --contid 503 -- sh -c '{wait}; cat {w} >/dev/null'"),
    );
    set_policy(&d, 501, "events exec exit\n");
    set_policy(&d, 503, "events exec\ninclude type=SYSCALL,CONTAINER_ID,PATH,CWD,PROCTITLE,PTAGS_EXEC,CONTAINER_OP,NS_INFO\nexclude\n");
    std::fs::write(&go, "").unwrap();
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    d.sh(&format!("cat {w} >/dev/null"));
    let needle = format!("key=\"{key}\"");
    wait_for_trail(&d, "the four reads", |t| count(t, "SYSCALL", &needle) >= 4);
    wait_for_trail(&d, "both ends", |t| {
        count(t, "CONTAINER_OP", "op=drop contid=501") == 1
            && count(t, "CONTAINER_OP", "op=drop contid=503") == 1
    });
    // The reads: the host has all four, each copy its own.
    let chains = |text: &str| -> Vec<String> {
        let mut c: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("type=SYSCALL") && l.contains(&needle))
            .map(|s| chain_of(text, s))
            .collect();
        c.sort();
        c
    };
    // A copy is written by a thread of its own, a moment later; it ends
    // with its container's end.
    let ended = |id: u64| {
        let text = read_trail(&copy_dir(&d, id));
        text.contains(&format!("op=drop contid={id} "))
            .then_some(text)
    };
    wait_until(|| ended(501).is_some() && ended(503).is_some());
    let host = read_trail(&d.log_dir);
    let (copy_a, copy_b) = (ended(501).unwrap(), ended(503).unwrap());
    assert_eq!(
        chains(&host),
        ["contid=501", "contid=502,^501", "contid=503", "host"],
        "{host}"
    );
    assert_eq!(
        chains(&copy_a),
        ["contid=501", "contid=502,^501"],
        "{copy_a}"
    );
    assert_eq!(chains(&copy_b), ["contid=503"], "{copy_b}");
    // Every exec of a container is in its copy (and its nested one's in
    // its parent's), as many as the host has, and none of the other's.
    let execs = |text: &str, chain: &str| count(text, "PTAGS_EXEC", &format!(" contid={chain} "));
    for chain in ["501", "502,^501"] {
        assert!(execs(&host, chain) >= 1, "{chain}: {host}");
        assert_eq!(
            execs(&copy_a, chain),
            execs(&host, chain),
            "{chain}: {copy_a}"
        );
        assert_eq!(execs(&copy_b, chain), 0, "{copy_b}");
    }
    assert_eq!(execs(&copy_b, "503"), execs(&host, "503"));
    assert_eq!(execs(&copy_a, "503"), 0, "{copy_a}");
    // 503 asked for no exits and its rules leave other records out.
    assert_eq!(count(&copy_b, "PTAGS_EXIT", ""), 0, "{copy_b}");
    assert!(count(&copy_a, "PTAGS_EXIT", "contid=501") >= 1, "{copy_a}");
    // Pids are the container's (no PID namespace here: the host's), the
    // host's kept beside them.
    assert!(copy_a.contains(" host-pid="), "{copy_a}");
    // Its end is in the copy; the host's requests about it (its policy
    // set by root) are the host's.
    assert_eq!(count(&copy_a, "CONTAINER_OP", "op=audit-policy"), 0);
    // (Tries while the container was being made were refused: ENOENT.)
    let set = host
        .lines()
        .filter(|l| l.contains("op=audit-policy action=set contid=501 "))
        .filter(|l| l.contains(" res=success"))
        .count();
    assert_eq!(set, 1, "{host}");
    assert_eq!(count(&copy_a, "CONTAINER_OP", "op=drop contid=501"), 1);
    assert!(!copy_a.contains("type=PTAGS_REFUSED"));
    for id in [501, 503] {
        let (ok, said) = verify_copy(&d, id);
        assert!(ok, "copy {id}: {said}");
    }
    let (ok, said) = d.verify_dir(&d.log_dir);
    assert!(ok, "host: {said}");
    // A copy ends with its container; the host's trail said so.
    let out = d.ptags(&["audit", "policy", "get", "501"]);
    assert!(stderr(&out).contains("ENOENT"), "{}", stderr(&out));
    // A new container with the same ID starts a copy of its own: the
    // earlier one's is set aside, and nothing of it is replayed.
    let mut again = spawn_sh(&d, "exec ptags run --contid 501 -- sleep 60");
    set_policy(&d, 501, "events exec\n");
    let replayed = d.sh("timeout 1 ptags audit follow --contid 501 --since 2000-01-01");
    assert!(!replayed.contains("key="), "{replayed}");
    assert_eq!(count(&replayed, "PTAGS_LOG", "op=open"), 1, "{replayed}");
    let aside: Vec<_> = std::fs::read_dir(d.log_dir.join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("501.ended-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    stop(&d, 501, &mut again);

    // A policy lives with its container across a restart, and its copy
    // goes on with the same chain.
    let mut c = spawn_sh(&d, "exec ptags run --contid 504 -- sleep 60");
    set_policy(&d, 504, "log size-mib=1 files=2\n");
    d.restart();
    let out = d.ptags(&["audit", "policy", "get", "504"]);
    assert!(
        stdout(&out).contains("log size-mib=1 files=2"),
        "{}",
        stdout(&out)
    );
    // Following from a point of its log: after its first record (the
    // first opening), the log's next record (the opening after the
    // restart) comes first; a serial not in the log is refused.
    let copy = read_trail(&copy_dir(&d, 504));
    let first = copy.lines().next().unwrap();
    let serial = stamp(first).split(':').nth(1).unwrap().to_owned();
    let next = copy.lines().nth(1).unwrap();
    assert!(next.contains("op=open"), "{copy}");
    let next = next.split(" ptags_seq=").next().unwrap();
    let out = d.sh(&format!(
        "timeout 2 ptags audit follow --contid 504 --after {serial}"
    ));
    assert_eq!(out.lines().next(), Some(next), "{out}");
    let out = d.sh("ptags audit follow --contid 504 --after 12345");
    assert!(
        out.contains("ENOENT") && out.contains("serial 12345"),
        "{out}"
    );
    stop(&d, 504, &mut c);
    wait_for_trail(&d, "504's end", |t| t.contains("op=drop contid=504"));
    let (ok, said) = verify_copy(&d, 504);
    assert!(ok, "copy 504 across a restart: {said}");
    let copy = read_trail(&copy_dir(&d, 504));
    assert_eq!(count(&copy, "PTAGS_LOG", "op=open"), 2, "{copy}");
}

/// The chain of the event `line` is part of, as its `CONTAINER_ID`
/// record in `text` names it (`contid=…`), or `host`.
fn chain_of(text: &str, line: &str) -> String {
    let st = stamp(line);
    text.lines()
        .find(|l| l.starts_with("type=CONTAINER_ID") && stamp(l) == st)
        .map_or("host".to_owned(), |l| {
            l.split(' ').nth(2).unwrap().to_owned()
        })
}

/// Where in `text` the read of container `id` (its `SYSCALL` with
/// `needle`) and its end are.
fn read_and_end(text: &str, id: u64, needle: &str) -> (Option<usize>, Option<usize>) {
    let chain = format!("contid={id}");
    let read = text.lines().position(|l| {
        l.starts_with("type=SYSCALL") && l.contains(needle) && chain_of(text, l) == chain
    });
    let end = text.lines().position(|l| {
        l.starts_with("type=CONTAINER_OP") && l.contains(&format!("op=drop {chain} "))
    });
    (read, end)
}

/// A container's end is the last record about it: the kernel's records
/// of its last task, often read after that task's exit event, come
/// before it, in the host's trail and in the container's copy (which
/// ends with it). Twelve containers at once, each reading a watched file
/// as its last act.
#[test]
fn a_containers_end_follows_the_kernels_records_of_its_last_task() {
    let test = "end_follows_last_records";
    if !can_run(test) || !has_tool(test, "auditctl") {
        return;
    }
    let _lock = AUDIT.lock().unwrap_or_else(|e| e.into_inner());
    let d = Daemon::start("copies-end", "");
    let watched = d.dir.path().join("watched");
    std::fs::write(&watched, "secret\n").unwrap();
    let key = format!("ptags-test-copies-end-{}", std::process::id());
    let mut audit = AuditState::new();
    audit.rule(&["-w", watched.to_str().unwrap(), "-p", "r"], &key);
    let needle = format!("key=\"{key}\"");
    let go = d.dir.path().join("go");
    let wait = format!("while [ ! -e {} ]; do sleep 0.02; done", go.display());
    let ids: Vec<u64> = (511..523).collect();
    let runs: Vec<Child> = ids
        .iter()
        .map(|id| {
            let script = format!("sh -c '{wait}; exec cat {}' >/dev/null", watched.display());
            spawn_sh(&d, &format!("exec ptags run --contid {id} -- {script}"))
        })
        .collect();
    for &id in &ids {
        set_policy(&d, id, "events exit\n");
    }
    std::fs::write(&go, "").unwrap();
    for mut run in runs {
        assert!(run.wait().unwrap().success());
    }
    wait_for_trail(&d, "every end", |t| {
        ids.iter()
            .all(|&id| read_and_end(t, id, &needle).1.is_some())
    });
    let host = read_trail(&d.log_dir);
    for &id in &ids {
        let (read, end) = read_and_end(&host, id, &needle);
        assert!(
            read.is_some() && read < end,
            "container {id}: {read:?} {end:?}\n{host}"
        );
        let ended = || {
            let text = read_trail(&copy_dir(&d, id));
            read_and_end(&text, id, &needle).1.map(|_| text)
        };
        wait_until(|| ended().is_some());
        let copy = ended().unwrap();
        let (read, end) = read_and_end(&copy, id, &needle);
        assert!(
            read.is_some() && read < end,
            "copy {id}: {read:?} {end:?}\n{copy}"
        );
    }
}

/// A follower that asked and stopped reading: its connection.
fn stalled_follower(d: &Daemon, contid: u64) -> UnixStream {
    let mut s = UnixStream::connect(d.socket()).unwrap();
    let req = Request::AuditFollow {
        contid: Some(contid),
        after_serial: None,
        since_ms: None,
    };
    write_frame(&mut s, &RequestFrame::new(req).encode()).unwrap();
    let (body, ()) = read_frame(&mut s, 1 << 30, |_| Ok(())).unwrap();
    assert_eq!(
        ResponseFrame::decode(&body).unwrap(),
        Ok(Response::Following { contid })
    );
    s
}

/// Reads a follower's frames until `done` says so (or 20 s pass); the
/// lines.
fn read_lines(s: &mut UnixStream, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut lines = Vec::new();
    while !done(&lines) {
        let Ok((body, ())) = read_frame(s, 1 << 30, |_| Ok(())) else {
            break;
        };
        match ResponseFrame::decode(&body).unwrap() {
            Ok(Response::Records { lines: more }) => lines.extend(more),
            other => panic!("a follower got {other:?}"),
        }
    }
    lines
}

#[test]
fn a_stalled_follower_costs_the_host_and_other_containers_nothing() {
    let test = "a_stalled_follower";
    if !can_run(test) {
        return;
    }
    const FLOOD: usize = 2000;
    const OTHER: usize = 200;
    // The stalled follower is cut off only after a minute.
    let d = Daemon::start("copies-stall", "[limits]\nrequest_timeout_secs = 60\n");
    let go = d.dir.path().join("go");
    let g = go.display();
    // Waiting without an exec: the copy takes nothing meanwhile.
    let wait = format!("while [ ! -e {g} ]; do :; done");
    let loop_of = |n: usize| format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done");
    // Each floods, says it is done, and lives on quietly (one exec of
    // tail) until the test ends.
    let flood = |id: u64, n: usize| {
        let done = d.dir.path().join(format!("done-{id}"));
        let script = format!(
            "ptags run --contid {id} -- sh -c '{wait}; {}; touch {}; exec tail -f /dev/null'",
            loop_of(n),
            done.display()
        );
        (spawn_sh(&d, &script), done)
    };
    let (mut a, a_done) = flood(701, FLOOD);
    let (mut b, b_done) = flood(702, OTHER);
    set_policy(&d, 701, "events exec\nqueue records=100\n");
    set_policy(&d, 702, "events exec\n");
    let mut stalled = stalled_follower(&d, 701);
    // What the copy took before the follower came.
    let before = counts(&d, 701)["taken"].as_u64().unwrap();
    let mut reader = stalled_follower(&d, 702);
    let reading = std::thread::spawn(move || {
        read_lines(&mut reader, |l| {
            l.iter()
                .filter(|l| l.starts_with("type=PTAGS_EXEC"))
                .count()
                >= OTHER
        })
    });
    std::fs::write(&go, "").unwrap();
    // The host writes its own records meanwhile.
    let host_writes = d.sh("for i in $(seq 50); do ptags write $$ +host-$i || echo failed; done");
    assert!(!host_writes.contains("failed"), "{host_writes}");
    wait_until(|| a_done.exists() && b_done.exists());
    let quiet = |id: u64| format!("comm=\"tail\" contid={id} ");
    wait_for_trail(&d, "both quiet", |t| {
        count(t, "PTAGS_EXEC", &quiet(701)) == 1 && count(t, "PTAGS_EXEC", &quiet(702)) == 1
    });

    // Nothing lost on the host, nor in the other container.
    let execs = |t: &str, id: &str| count(t, "PTAGS_EXEC", &format!(" comm=\"true\" contid={id} "));
    wait_for_trail(&d, "every exec", |t| {
        execs(t, "701") == FLOOD && execs(t, "702") == OTHER
    });
    let host = read_trail(&d.log_dir);
    assert_eq!(count(&host, "PTAGS_OP", "op=write"), 50, "{host}");
    let b_lines = reading.join().unwrap();
    let b_execs = b_lines
        .iter()
        .filter(|l| l.contains(" comm=\"true\" "))
        .count();
    assert_eq!(b_execs, OTHER, "the other container's follower");
    wait_until(|| execs(&read_trail(&copy_dir(&d, 702)), "702") == OTHER);
    assert_eq!(counts(&d, 702)["dropped"], 0);

    // The stalled follower now reads: what it gets and what it is told
    // it missed add up to what the copy took, exactly.
    let taken = counts(&d, 701)["taken"].as_u64().unwrap() - before;
    let records = |l: &[String]| {
        l.iter()
            .filter(|l| !l.starts_with("type=PTAGS_LOST "))
            .count() as u64
    };
    let lines = read_lines(&mut stalled, |l| {
        records(l) + lost(&l.join("\n"), "source=follower") >= taken
    });
    let got = records(&lines);
    let missed = lost(&lines.join("\n"), "source=follower");
    assert!(missed > 0, "a queue of 100 took a flood of {FLOOD}");
    assert_eq!(got + missed, taken, "received {got}, told {missed} missed");
    for l in &lines {
        assert!(!l.contains("contid=702"), "{l}");
    }
    // The log's writer kept up, or says what it missed; the copy counts
    // both readers' losses and the host trail says them.
    let log_records = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("type=PTAGS_LOG ") && !l.starts_with("type=PTAGS_LOST "))
            .count() as u64
    };
    wait_until(|| {
        let t = read_trail(&copy_dir(&d, 701));
        log_records(&t) + lost(&t, "source=copy") == before + taken
    });
    let log_missed = lost(&read_trail(&copy_dir(&d, 701)), "source=copy");
    let c = counts(&d, 701);
    assert_eq!(c["dropped"].as_u64().unwrap(), missed + log_missed, "{c}");
    wait_for_trail(&d, "the losses said", |t| {
        lost(t, "source=copy reason=queue-full") == missed + log_missed
    });
    drop(stalled);
    stop(&d, 701, &mut a);
    stop(&d, 702, &mut b);
}

/// Whether process `pid` is alive (and not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
}

/// The pids of a container's processes.
fn members(d: &Daemon, contid: u64) -> Vec<u32> {
    let out = d.ptags(&["--json", "ps", "--contid", &contid.to_string()]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
    rows["rows"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| r["pid"].as_u64().unwrap() as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// A new cgroup under the cgroup v2 hierarchy, for a container of the
/// test's; `None` (said) on a machine without one.
fn own_cgroup() -> Option<PathBuf> {
    let Some(root) = ptags_bpf::procfs::cgroup_v2_root() else {
        eprintln!("NOTE: no cgroup v2 here: the kill by cgroup.kill is not tested");
        return None;
    };
    let cg = root.join(format!("ptags-test-kill-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    Some(cg)
}

#[test]
fn kill_stops_that_container_alone_on_quota_and_on_overflow() {
    let test = "kill_stops_that_container";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start("copies-kill", "");
    // A bystander container and a host process, which live on.
    let mut bystander = spawn_sh(&d, "exec ptags run --contid 803 -- sleep 120");
    let mut host = Command::new("sleep").arg("120").spawn().unwrap();
    set_policy(&d, 803, "events exec exit\n");
    for (contid, policy, reason) in [
        (
            801,
            "events exec\nrate records=100 per=1s action=kill\n",
            "rate",
        ),
        (
            802,
            "events exec\nqueue records=20\noverflow kill\n",
            "queue-full",
        ),
    ] {
        // A flood from two processes, one of them in the background.
        let flood = "(while :; do /bin/true; done) & while :; do /bin/true; done";
        let g = d.dir.path().join(format!("go-{contid}"));
        // The first has a cgroup (v2) of its own, which the kill uses.
        let cgroup = (contid == 801).then(own_cgroup).flatten();
        let enter = cgroup.as_ref().map_or(String::new(), |cg| {
            format!("echo $$ > {}/cgroup.procs; ", cg.display())
        });
        let mut child = spawn_sh(
            &d,
            &format!(
                "ptags run --contid {contid} -- sh -c '{enter}while [ ! -e {} ]; do sleep 0.02; done; {flood}'",
                g.display()
            ),
        );
        set_policy(&d, contid, policy);
        let _stalled = (reason == "queue-full").then(|| stalled_follower(&d, contid));
        let tasks = members(&d, contid);
        assert!(!tasks.is_empty());
        std::fs::write(&g, "").unwrap();
        wait_for_trail(&d, "the panic", |t| {
            count(
                t,
                "CONTAINER_OP",
                &format!("op=panic contid={contid} reason={reason} "),
            ) == 1
        });
        let _ = child.wait();
        let text = read_trail(&d.log_dir);
        let panic = text
            .lines()
            .find(|l| l.contains(&format!("op=panic contid={contid}")))
            .unwrap();
        assert!(panic.contains(" res=success"), "{panic}");
        if let Some(cg) = cgroup {
            assert!(panic.contains(" method=cgroup.kill "), "{panic}");
            wait_until(|| std::fs::remove_dir(&cg).is_ok());
        }
        for pid in tasks {
            assert!(!alive(pid), "{contid}: {pid} lives on after {panic}");
        }
        // Gone once their parents (or init) reaped them.
        wait_until(|| members(&d, contid).is_empty());
        wait_for_trail(&d, "its end", |t| {
            t.contains(&format!("op=drop contid={contid}"))
        });
    }
    assert!(bystander.try_wait().unwrap().is_none(), "the bystander");
    assert!(host.try_wait().unwrap().is_none(), "the host process");
    assert_eq!(members(&d, 803).len(), 1);
    let _ = host.kill();
    let _ = bystander.kill();
    let _ = host.wait();
    let _ = bystander.wait();
}

#[test]
fn bad_policies_and_callers_are_refused_and_change_nothing() {
    let test = "bad_policies_and_callers";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start("copies-refused", "");
    let user = test_user();
    let mut c = spawn_sh(&d, "exec ptags run --contid 901 -- sleep 60");
    set_policy(&d, 901, "events exec\n");
    let policy = || {
        let out = stdout(&d.ptags(&["audit", "policy", "get", "901"]));
        out.lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    let before = policy();
    assert_eq!(before, "events exec");
    let bad = d.dir.path().join("bad");
    for (text, errno, said) in [
        ("include type=SYSCALL\nbogus x\n", "EINVAL", "line 2"),
        ("include exe2=/bin/sh\n", "EINVAL", "unknown field \"exe2\""),
        ("queue records=0\n", "EINVAL", "line 1"),
        ("overflow block\n", "EINVAL", "line 1"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let out = d.ptags(&["audit", "policy", "set", "901", bad.to_str().unwrap()]);
        assert!(!out.status.success(), "{text:?}");
        let e = stderr(&out);
        assert!(e.contains(errno) && e.contains(said), "{text:?}: {e}");
        // Checked offline the same way.
        let out = d.ptags(&["audit", "policy", "check", bad.to_str().unwrap()]);
        assert!(!out.status.success() && stderr(&out).contains(said));
    }
    std::fs::write(&bad, "events exit\n").unwrap();
    let b = bad.to_str().unwrap();
    let out = d.ptags(&["audit", "policy", "set", "4040", b]);
    assert!(stderr(&out).contains("ENOENT"), "{}", stderr(&out));
    // Another user: not the owner, no CAP_AUDIT_CONTROL.
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    // It is not told which containers exist (4040 does not).
    let said = d.sh_as(
        &format!(
            "ptags audit policy set 901 {b}; ptags audit policy clear 901; \
             ptags audit policy get 901; ptags audit follow --contid 901; \
             ptags audit policy set 4040 {b}"
        ),
        Some(user),
    );
    assert_eq!(said.matches("EPERM").count(), 5, "{said}");
    assert!(!said.contains("ENOENT"), "{said}");
    assert_eq!(policy(), before);
    let text = read_trail(&d.log_dir);
    // Every refused change is on record: four texts, an unknown
    // container, the other user's set and clear (after the policy was
    // set: `set_policy` tried while the container was being made).
    let refused = text
        .lines()
        .skip_while(|l| !(l.contains("op=audit-policy") && l.contains(" res=success")))
        .filter(|l| l.contains("op=audit-policy") && l.contains(" res=failed "))
        .count();
    assert_eq!(refused, 8, "{text}");
    // An outsider's requests are the outsider's: none reaches the
    // container's copy (they would tell it who asked, and spend its
    // quota).
    let copy = read_trail(&copy_dir(&d, 901));
    assert!(!copy.contains("op=audit-policy"), "{copy}");
    // The container's owner may, without capabilities: a process that
    // labelled itself and dropped to the test user.
    let id = user.to_string();
    // The owner of a container whose ID `ptags contid set` gives a
    // child of this shell is the shell, which then becomes the test user.
    let owner = d.sh(&format!(
        "sleep 5 & ptags contid set $! 902 && \
         exec setpriv --reuid {id} --regid {id} --clear-groups --inh-caps=-all \
         ptags audit policy set 902 {b}"
    ));
    assert!(owner.contains("container 902: log"), "{owner}");
    stop(&d, 901, &mut c);
}

/// Kills a container's processes and the `ptags run` that waits for them.
fn stop(d: &Daemon, contid: u64, run: &mut Child) {
    for pid in members(d, contid) {
        // SAFETY: signalling a process of the test's.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let _ = run.wait();
}

/// The `PTAGS_EXEC` lines of a follower's output: (pid, host pid, line).
fn execs_seen(text: &str) -> Vec<(u32, u32, String)> {
    let field = |l: &str, k: &str| -> u32 {
        let v = l.split(&format!(" {k}=")).nth(1).unwrap();
        v.split(' ').next().unwrap().parse().unwrap()
    };
    text.lines()
        .filter(|l| l.starts_with("type=PTAGS_EXEC "))
        .map(|l| (field(l, "pid"), field(l, "host-pid"), l.to_owned()))
        .collect()
}

#[test]
fn a_follower_inside_a_runc_container_sees_its_own_records_and_nothing_else() {
    let test = "a_follower_inside_a_runc_container";
    if !can_run(test) || !has_runc(test) {
        return;
    }
    let d = Daemon::start("copies-runc", "");
    let mut runc = Runc::new();
    // The agent follows its container's copy (its policy from the hook's
    // annotation) through the socket mounted in, then starts programs.
    let agent =
        "/ptags --socket /run/ptagsd.sock audit follow >/tmp/follow.out 2>/tmp/follow.err & \
                 sleep 1; for i in 1 2 3 4 5; do /bin/true; done; sleep 300";
    let bundle = runc.bundle(
        &d,
        "agent",
        &["sh", "-c", agent],
        &[
            ("io.ptags.contid", "611"),
            ("io.ptags.audit", "events exec\n"),
        ],
    );
    let config = bundle.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for set in ["bounding", "effective", "permitted"] {
        c["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push("CAP_AUDIT_READ".into());
    }
    // It writes what it follows to a file of its rootfs.
    c["root"]["readonly"] = false.into();
    std::fs::write(&config, c.to_string()).unwrap();
    runc.names.push("agent".into());
    runc.run(&["run", "-d", "--bundle", bundle.to_str().unwrap(), "agent"]);
    runc.start(
        &d,
        "other",
        &[
            "sh",
            "-c",
            "sleep 1; for i in 1 2 3; do /bin/true; done; sleep 300",
        ],
        &[
            ("io.ptags.contid", "612"),
            ("io.ptags.audit", "events exec\n"),
        ],
    );
    // A follower on the host, of the other container, from its start.
    let host_out = d.dir.path().join("host-follow.out");
    let mut host = Command::new(cli_path())
        .args([
            "audit",
            "follow",
            "--contid",
            "612",
            "--since",
            "2000-01-01",
        ])
        .env("PTAGS_SOCKET", d.socket())
        .stdout(std::fs::File::create(&host_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let inside = runc.rootfs("agent").join("tmp/follow.out");
    let trues = |p: &PathBuf| {
        let t = std::fs::read_to_string(p).unwrap_or_default();
        execs_seen(&t)
            .into_iter()
            .filter(|(_, _, l)| l.contains("comm=\"true\""))
            .count()
    };
    for _ in 0..500 {
        if trues(&inside) == 5 && trues(&host_out) == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = runc.rootfs("agent").join("tmp/follow.err");
    assert_eq!(
        (trues(&inside), trues(&host_out)),
        (5, 3),
        "inside: {}{}\nhost: {}",
        std::fs::read_to_string(&inside).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
        std::fs::read_to_string(&host_out).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&inside).unwrap();
    let seen = execs_seen(&text);
    let names = |l: &str, id: &str| l.split(' ').any(|f| f == format!("contid={id}"));
    assert!(seen.iter().all(|(_, _, l)| names(l, "611")), "{text}");
    // Pids as the container's PID namespace sees them, the host's beside.
    for (pid, host_pid, l) in &seen {
        assert!(pid != host_pid && *pid < 100, "{l}");
    }
    let host_text = std::fs::read_to_string(&host_out).unwrap();
    assert!(!host_text.lines().any(|l| names(l, "611")), "{host_text}");
    // The runtime's request (its hook setting the policy) is the host's.
    assert!(!host_text.contains("op=audit-policy"), "{host_text}");
    // The agent cannot follow with capabilities of a user namespace it
    // made.
    let out = runc
        .cmd()
        .args([
            "exec",
            "agent",
            "unshare",
            "-U",
            "/ptags",
            "--socket",
            "/run/ptagsd.sock",
        ])
        .args(["audit", "follow", "--since", "2000-01-01"])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("EPERM"), "{}", stderr(&out));
    // The other container cannot follow the agent's copy (it does not
    // know it), nor its own without CAP_AUDIT_READ.
    for (args, said) in [(vec!["--contid", "611"], "ENOENT"), (vec![], "EPERM")] {
        let out = runc
            .cmd()
            .args([
                "exec",
                "other",
                "/ptags",
                "--socket",
                "/run/ptagsd.sock",
                "audit",
                "follow",
            ])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(said), "{args:?}: {}", stderr(&out));
    }
    // A flood in the other container over its quota stops it, and only it.
    let policy = d.dir.path().join("kill");
    std::fs::write(&policy, "events exec\nrate records=50 per=1s action=kill\n").unwrap();
    let out = d.ptags(&["audit", "policy", "set", "612", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    runc.run(&[
        "exec",
        "-d",
        "other",
        "sh",
        "-c",
        "while :; do /bin/true; done",
    ]);
    wait_for_trail(&d, "the panic", |t| {
        t.contains("op=panic contid=612 reason=rate")
    });
    wait_until(|| members(&d, 612).is_empty());
    assert!(!members(&d, 611).is_empty(), "the agent lives on");
    let _ = host.wait();
    let text = read_trail(&d.log_dir);
    let panic = text
        .lines()
        .find(|l| l.contains("op=panic contid=612"))
        .unwrap();
    assert!(panic.contains(" res=success"), "{panic}");
    eprintln!("{panic}");
}
