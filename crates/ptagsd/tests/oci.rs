//! Real runc containers labelled by `ptags oci-hook` (createRuntime and
//! poststop in their config.json): every process inside, including ones
//! entering later with `runc exec`, has the container's ID and tags; a
//! process inside cannot change them; kernel audit events from inside
//! carry CONTAINER_ID; deleting a container records its end; two
//! containers are told apart; a container started inside a container
//! nests. Each test uses its own runc state directory and deletes its
//! containers when it ends.

mod common;

use std::process::Command;

use common::runc::{has_runc, Runc};
use common::trail::{has_tool, read_trail, wait_for_trail, AuditState};
use common::{can_run, stdout, Daemon};
use ptags_core::oci::derived_contid;

/// `ptags ps --contid ID` rows: (pid, comm, tags).
/// `msg=audit(...)` of a record.
fn stamp_of(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or_default()
}

fn members(d: &Daemon, contid: u64) -> Vec<(u32, String, String)> {
    let out = stdout(&d.ptags(&["ps", "--contid", &contid.to_string()]));
    out.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].parse().unwrap(), f[3].to_owned(), f[4..].join(" "))
        })
        .collect()
}

#[test]
fn runc_containers_are_labelled_joined_told_apart_and_ended() {
    let test = "runc_containers_are_labelled";
    if !can_run(test) || !has_runc(test) || !has_tool(test, "auditctl") {
        return;
    }
    let d = Daemon::start("oci-runc", "");
    let mut runc = Runc::new();
    let web = 5151u64;
    let tags = "+@app:web\n+tier:front";
    // The first program starts with every tag; a later exec keeps the
    // kept ones only, as anywhere.
    let sleep = ["sleep", "1000"];
    runc.start(
        &d,
        "web",
        &sleep,
        &[("io.ptags.contid", "5151"), ("io.ptags.tags", tags)],
    );
    // No annotation: the ID is derived from the container's name.
    let db = derived_contid("db").get();
    runc.start(&d, "db", &sleep, &[]);

    let init = runc.pid("web");
    // The container's namespaces are on record from its start: NS_INFO
    // follows its CONTAINER_OP, with the same stamp, and names those of
    // its first process.
    let text = read_trail(&d.log_dir);
    let lines: Vec<&str> = text.lines().collect();
    let op = lines
        .iter()
        .position(|l| {
            l.starts_with("type=CONTAINER_OP")
                && l.contains(&format!("opid={init} "))
                && l.contains(&format!(" contid={web} "))
        })
        .unwrap_or_else(|| panic!("{text}"));
    let info = lines[op + 1];
    assert!(info.starts_with("type=NS_INFO"), "{info}");
    assert_eq!(stamp_of(lines[op]), stamp_of(info));
    for kind in ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"] {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(format!("/proc/{init}/ns/{kind}"))
            .unwrap()
            .ino();
        assert!(
            info.contains(&format!(" {kind}ns={inode} ")),
            "{kind}: {inode} in {info}"
        );
    }
    assert_eq!(
        members(&d, web),
        [(init, "sleep".into(), "@app:web tier:front".into())]
    );
    assert_eq!(members(&d, db).len(), 1, "{:?}", members(&d, db));

    // A process entering later joins, with the tags that survive an exec.
    runc.run(&["exec", "-d", "web", "sleep", "999"]);
    // `runc exec -d` may return before its process has exec'd sleep
    // (the exec prunes the tags that are not kept): wait for it.
    common::wait_until(|| {
        members(&d, web)
            .iter()
            .any(|r| r.0 != init && r.1 == "sleep")
    });
    let rows = members(&d, web);
    let joined = rows
        .iter()
        .find(|r| r.0 != init)
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(joined.2, "@app:web", "{rows:?}");
    let text = read_trail(&d.log_dir);
    assert!(
        text.contains("op=set opid=") && text.contains("op=join-policy"),
        "{text}"
    );
    wait_for_trail(&d, "the join", |t| {
        t.lines().any(|l| {
            l.contains("op=join ")
                && l.contains(&format!("contid={web} old-contid=-1 "))
                && l.contains("res=success")
        })
    });

    // A container without the setns policy: who enters keeps their labels.
    runc.start(
        &d,
        "batch",
        &sleep,
        &[("io.ptags.contid", "5252"), ("io.ptags.join", "false")],
    );
    runc.run(&["exec", "-d", "batch", "sleep", "999"]);
    assert_eq!(members(&d, 5252).len(), 1, "{:?}", members(&d, 5252));
    runc.delete("batch");

    // Inside, pids are the container's, and nothing can change the
    // labels: the permission model refuses (no `others` permission, no
    // CAP_AUDIT_CONTROL in a container's capability set).
    let inside = |args: &[&str]| {
        let mut all = vec!["exec", "web", "/ptags", "--socket", "/run/ptagsd.sock"];
        all.extend(args);
        let out = runc.cmd().args(&all).output().unwrap();
        (
            out.status.success(),
            stdout(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for attempt in [
        &["write", "1", "-app:web"][..],
        &["contid", "set", "1", "99"],
    ] {
        let (ok, _, said) = inside(attempt);
        assert!(!ok && said.contains("EPERM"), "{attempt:?}: {said}");
    }
    let (ok, tags, said) = inside(&["read", "1"]);
    assert!(ok, "{said}");
    assert_eq!(tags, "@app:web\ntier:front\n");
    let (ok, ps, said) = inside(&["ps"]);
    assert!(ok, "{said}");
    let pids: Vec<u32> = ps
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(pids.contains(&1) && pids.iter().all(|&p| p < 100), "{ps}");
    assert_eq!(members(&d, web)[0].2, "@app:web tier:front");
    assert!(members(&d, web)
        .iter()
        .all(|r| r.0 == init || r.0 == joined.0));

    // Kernel audit: each container's reads carry its own ID.
    let key = format!("ptags-test-oci-{}", std::process::id());
    let mut audit = AuditState::new();
    for name in ["web", "db"] {
        let watched = runc.rootfs(name).join("watched");
        audit.rule(&["-w", watched.to_str().unwrap(), "-p", "r"], &key);
    }
    for name in ["web", "db"] {
        runc.run(&["exec", name, "cat", "/watched"]);
    }
    let contid_of_reads = |t: &str| -> Vec<String> {
        let stamps: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("type=SYSCALL") && l.contains(&format!("key=\"{key}\"")))
            .filter_map(|l| l.split("msg=").nth(1)?.split(' ').next())
            .collect();
        t.lines()
            .filter(|l| l.starts_with("type=CONTAINER_ID"))
            .filter(|l| stamps.iter().any(|s| l.contains(s)))
            .filter_map(|l| l.split(' ').nth(2).map(str::to_owned))
            .collect()
    };
    wait_for_trail(&d, "CONTAINER_ID on both reads", |t| {
        contid_of_reads(t).len() >= 2
    });
    let found = contid_of_reads(&read_trail(&d.log_dir));
    assert!(found.contains(&format!("contid={web}")), "{found:?}");
    assert!(found.contains(&format!("contid={db}")), "{found:?}");
    drop(audit);

    // Deleting a container: when runc returns, its end is on record.
    runc.delete("web");
    let text = read_trail(&d.log_dir);
    assert!(
        text.contains(&format!("op=drop contid={web} ")),
        "{}",
        &text[text.len().saturating_sub(3000)..]
    );
    assert!(!text.contains(&format!("op=drop contid={db} ")));
    runc.delete("db");
    assert!(read_trail(&d.log_dir).contains(&format!("op=drop contid={db} ")));
    assert_eq!(
        join_policies(&d),
        0,
        "the policies went with their containers"
    );
}

/// How many setns policies `ptags status` counts.
fn join_policies(d: &Daemon) -> usize {
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["status", "--json"]))).unwrap();
    status["join_policies"].as_u64().unwrap() as usize
}

#[test]
fn a_container_started_in_a_container_nests() {
    let test = "a_container_started_in_a_container_nests";
    if !can_run(test) || !has_runc(test) {
        return;
    }
    let d = Daemon::start("oci-nest", "");
    let mut runc = Runc::new();
    let bundle = runc.bundle(
        &d,
        "inner",
        &["sleep", "1000"],
        &[("io.ptags.contid", "6262")],
    );
    runc.names.push("inner".into());
    // runc itself runs in container 6161: its hook is inside it.
    let state = runc.dir.path().join("state");
    let out = d.sh(&format!(
        "ptags run --contid 6161 -- runc --root {} run -d --bundle {} inner >runc.out 2>&1 </dev/null; echo rc=$?; cat runc.out",
        state.display(),
        bundle.display()
    ));
    assert!(out.starts_with("rc=0"), "{out}");
    let init = runc.pid("inner");
    assert_eq!(
        members(&d, 6262).iter().map(|r| r.0).collect::<Vec<_>>(),
        [init]
    );
    let ps = stdout(&d.ptags(&["ps", "--contid", "6161", "--nested"]));
    assert!(
        ps.lines()
            .any(|l| l.contains(&init.to_string()) && l.contains("6262,^6161")),
        "{ps}"
    );
    // Entering from the host joins the nested container.
    runc.run(&["exec", "-d", "inner", "sleep", "999"]);
    assert_eq!(members(&d, 6262).len(), 2, "{:?}", members(&d, 6262));
    let text = read_trail(&d.log_dir);
    assert!(
        text.contains("op=nest opid=") && text.contains("contid=6262 old-contid=6161 "),
        "{text}"
    );
    runc.delete("inner");
    assert!(read_trail(&d.log_dir).contains("op=drop contid=6262 "));
}

/// A program whose main thread ends (SYS_exit, not exit_group) while a
/// worker lives on and reads /watched every 100 ms: the process is a
/// zombie leader with a live thread.
const MAIN_EXIT_C: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        int fd = open("/watched", O_RDONLY);
        if (fd >= 0) {
            char b[16];
            read(fd, b, sizeof b);
            close(fd);
        }
        usleep(100000);
    }
}
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, worker, 0);
    syscall(SYS_exit, 0);
}
"#;

/// The host pid of the process running `comm` in the mount namespace of
/// process `member` (a container's), once there is one.
fn host_pid_of(comm: &str, member: u32) -> u32 {
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let want = ns(member).expect("the container's first process");
    for _ in 0..500 {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if !std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            {
                continue;
            }
            // Any live thread tells: an ended main thread has no namespaces.
            let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten();
            if threads.flatten().any(|t| {
                let tid = t.file_name().to_string_lossy().into_owned();
                std::fs::read_link(format!("/proc/{pid}/task/{tid}/ns/mnt"))
                    .ok()
                    .as_ref()
                    == Some(&want)
            }) {
                return pid;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no process runs {comm}");
}

#[test]
fn a_process_that_ends_its_main_thread_stays_in_its_container() {
    let test = "a_process_that_ends_its_main_thread";
    if !can_run(test) || !has_runc(test) || !has_tool(test, "auditctl") {
        return;
    }
    let d = Daemon::start("oci-mainexit", "");
    let mut runc = Runc::new();
    let contid = 7171u64;
    runc.start(
        &d,
        "hide",
        &["sleep", "1000"],
        &[("io.ptags.contid", "7171")],
    );
    let rootfs = runc.rootfs("hide");
    let source = runc.dir.path().join("mainexit.c");
    std::fs::write(&source, MAIN_EXIT_C).unwrap();
    let out = Command::new("cc")
        .args(["-static", "-pthread", "-O2", "-o"])
        .arg(rootfs.join("mainexit"))
        .arg(&source)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Root inside the container runs it.
    runc.run(&["exec", "-d", "hide", "sh", "-c", "/mainexit"]);
    let pid = host_pid_of("mainexit", runc.pid("hide"));
    let main_state = || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().chars().next())
            })
            .flatten()
    };
    for _ in 0..500 {
        if main_state() == Some('Z') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(main_state(), Some('Z'), "the main thread ended");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(threads >= 2, "a worker lives on");

    // Every view still puts the process in its container.
    let got = stdout(&d.ptags(&["contid", "get", &pid.to_string()]));
    assert_eq!(got.trim(), contid.to_string());
    assert!(
        members(&d, contid).iter().any(|r| r.0 == pid),
        "{:?}",
        members(&d, contid)
    );
    let status = stdout(&d.ptags(&["status"]));
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{contid} ")) && !l.contains("live 0")),
        "{status}"
    );

    // The worker's kernel audit events carry the container's ID.
    let key = format!("ptags-test-mainexit-{}", std::process::id());
    let mut audit = AuditState::new();
    let watched = rootfs.join("watched");
    audit.rule(&["-w", watched.to_str().unwrap(), "-p", "r"], &key);
    let reads = |t: &str| -> Vec<String> {
        let stamps: Vec<&str> = t
            .lines()
            .filter(|l| {
                l.starts_with("type=SYSCALL")
                    && l.contains(&format!("key=\"{key}\""))
                    && l.contains(&format!(" pid={pid} "))
            })
            .filter_map(|l| l.split("msg=").nth(1)?.split(' ').next())
            .collect();
        stamps
            .iter()
            .map(|s| {
                t.lines()
                    .find(|l| l.starts_with("type=CONTAINER_ID") && l.contains(s))
                    .unwrap_or("none")
                    .to_owned()
            })
            .collect()
    };
    wait_for_trail(&d, "the worker's reads", |t| reads(t).len() >= 3);
    let found = reads(&read_trail(&d.log_dir));
    assert!(
        found
            .iter()
            .all(|l| l.contains(&format!("contid={contid}"))),
        "{found:?}"
    );
    drop(audit);
    runc.delete("hide");
}

/// A container started while its daemon restarts (`systemctl restart`):
/// the hook waits for the daemon to be back, and the container starts
/// labelled. The daemon is down when runc starts, and comes back a
/// little later each time.
#[test]
fn a_container_started_during_a_daemon_restart_is_labelled() {
    let test = "a_container_started_during_a_daemon_restart_is_labelled";
    if !can_run(test) || !has_runc(test) {
        return;
    }
    let mut d = Daemon::start("oci-restart", "");
    let mut runc = Runc::new();
    for (i, down_ms) in [100u64, 700, 1500].into_iter().enumerate() {
        let name = format!("restart{i}");
        let contid = 7070 + i as u64;
        let bundle = runc.bundle(
            &d,
            &name,
            &["sleep", "1000"],
            &[("io.ptags.contid", &contid.to_string())],
        );
        // The socket is not there to bind-mount while the daemon is down.
        let path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != "/run/ptagsd.sock");
        std::fs::write(&path, config.to_string()).unwrap();
        runc.names.push(name.clone());
        d.stop();
        let out = runc.dir.path().join(format!("{name}.out"));
        let mut started = runc
            .cmd()
            .args(["run", "-d", "--bundle", bundle.to_str().unwrap(), &name])
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&out).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(down_ms));
        d.restart();
        let status = started.wait().unwrap();
        assert!(
            status.success(),
            "runc run during a restart ({down_ms} ms down): {status}: {}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        // runc returns once it has told its init to exec; the
        // container's ID is taken at that exec.
        let init = runc.pid(&name);
        let in_it = || members(&d, contid).iter().map(|r| r.0).collect::<Vec<_>>();
        common::wait_until(|| in_it() == [init]);
    }
}

/// p50, p99 and max of `ns`, in milliseconds.
fn percentiles(mut ns: Vec<u64>) -> (f64, f64, f64) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize] as f64 / 1e6;
    (at(0.5), at(0.99), at(1.0))
}

/// Containers start labelled while an unprivileged user floods the
/// socket with everything it can (idle connections, slow senders,
/// malformed and oversized frames, status requests), from a PID
/// namespace of its own. 50 containers are started and deleted before
/// the flood and 50 during it; each start is timed.
#[test]
fn containers_start_labelled_while_a_user_floods_the_socket() {
    let test = "containers_start_labelled_while_a_user_floods_the_socket";
    if !can_run(test) || !has_runc(test) {
        return;
    }
    let d = Daemon::start("oci-flood", "");
    let mut runc = Runc::new();
    // Each container's start (`runc run -d`, the hook included), timed.
    let batch = |label: &str, first: u64, runc: &mut Runc| -> Vec<u64> {
        let mut ns = Vec::new();
        for i in 0..50 {
            let name = format!("{label}{i}");
            let contid = first + i;
            let bundle = runc.bundle(
                &d,
                &name,
                &["sleep", "1000"],
                &[("io.ptags.contid", &contid.to_string())],
            );
            runc.names.push(name.clone());
            let t0 = std::time::Instant::now();
            runc.run(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &name]);
            ns.push(t0.elapsed().as_nanos() as u64);
            // runc returns once it has told its init to exec; the
            // container's ID is taken at that exec.
            let init = runc.pid(&name);
            let in_it = || members(&d, contid).iter().map(|r| r.0).collect::<Vec<_>>();
            common::wait_until(|| in_it() == [init]);
            runc.delete(&name);
        }
        ns
    };
    // The hook alone, timed: a shell stands for the runtime, with a
    // process in a mount namespace of its own as the container's first.
    let hooks = |first: u64| -> Vec<u64> {
        let out = d.sh(&format!(
            "for i in $(seq 0 49); do rm -f fifo; mkfifo fifo; \
               unshare -m sh -c 'read x; exec sleep 1000' <fifo >/dev/null 2>&1 & P=$!; exec 3>fifo; \
               while [ \"$(readlink /proc/$P/ns/mnt)\" = \"$(readlink /proc/self/ns/mnt)\" ]; do sleep 0.01; done; \
               state='{{\"ociVersion\":\"1.0.2\",\"id\":\"h'$i'\",\"status\":\"creating\",\"pid\":'$P',\"bundle\":\"/tmp\",\"annotations\":{{\"io.ptags.contid\":\"'$(({first} + i))'\",\"io.ptags.join\":\"false\",\"io.ptags.devices\":\"off\"}}}}'; \
               t0=$(date +%s%N); echo \"$state\" | ptags oci-hook --stage createRuntime || echo FAILED; t1=$(date +%s%N); \
               echo ns=$((t1 - t0)); kill $P; exec 3>&-; wait $P 2>/dev/null; done"
        ));
        assert!(!out.contains("FAILED"), "{out}");
        let ns: Vec<u64> = out
            .lines()
            .filter_map(|l| l.strip_prefix("ns="))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(ns.len(), 50, "{out}");
        ns
    };
    let hooks_quiet = hooks(9300);
    let quiet = batch("quiet", 9100, &mut runc);
    let uid = common::test_user();
    let mut flooder = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "setpriv"])
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
        ])
        .arg(common::hostile_client())
        .args(["flood", d.socket().to_str().unwrap(), "600"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let started = std::time::Instant::now();
    let hooks_flooded = hooks(9400);
    let flooded = batch("flooded", 9200, &mut runc);
    let seconds = started.elapsed().as_secs();
    // unshare --kill-child takes the flooder with it.
    let _ = flooder.kill();
    let _ = flooder.wait();
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", &uid.to_string(), "hostile_client"])
        .status();
    let mut slowest = flooded.clone();
    slowest.sort_unstable();
    eprintln!(
        "{test}: slowest starts under the flood, ms: {:?}",
        slowest
            .iter()
            .rev()
            .take(5)
            .map(|n| n / 1_000_000)
            .collect::<Vec<_>>()
    );
    let (q, f) = (percentiles(hooks_quiet), percentiles(hooks_flooded));
    eprintln!(
        "{test}: the hook alone, ms p50/p99/max: {:.1}/{:.1}/{:.1} quiet, {:.1}/{:.1}/{:.1} under the flood",
        q.0, q.1, q.2, f.0, f.1, f.2
    );
    let (q, f) = (percentiles(quiet), percentiles(flooded));
    eprintln!(
        "{test}: container start (runc run -d, the hook included), ms p50/p99/max: {:.1}/{:.1}/{:.1} quiet, {:.1}/{:.1}/{:.1} under the flood",
        q.0, q.1, q.2, f.0, f.1, f.2
    );
    // The flooder's refusals are counted, and recorded once a second at
    // most, naming its uid.
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    // (Its slow senders are refused at connect: its idle ones hold its
    // share of connections.)
    let refused =
        ["connections_refused", "requests_malformed"].map(|k| status[k].as_u64().unwrap());
    assert!(refused.iter().all(|&n| n > 0), "{status}");
    common::wait_until(|| read_trail(&d.log_dir).contains("type=PTAGS_REFUSED"));
    let trail = read_trail(&d.log_dir);
    let records = trail
        .lines()
        .filter(|l| l.starts_with("type=PTAGS_REFUSED") && l.contains(&format!(" uid={uid} ")))
        .count() as u64;
    assert!(
        records > 0 && records <= seconds + 4,
        "{records} PTAGS_REFUSED records in {seconds} s"
    );
}

/// Issue 21, section 4: a runtime that fails after createRuntime (the
/// container's process cannot start) leaves no container behind: its ID
/// is free and its setns policy gone within a second, before any
/// `runc delete`.
#[test]
fn a_container_whose_process_cannot_start_frees_its_id_at_once() {
    let test = "a_container_whose_process_cannot_start";
    if !can_run(test) || !has_runc(test) {
        return;
    }
    let d = Daemon::start("oci-failed", "");
    let runc = Runc::new();
    let bundle = runc.bundle(
        &d,
        "broken",
        &["/nonexistent"],
        &[("io.ptags.contid", "6363")],
    );
    let out = runc
        .cmd()
        .args(["run", "-d", "--bundle", bundle.to_str().unwrap(), "broken"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the process cannot start");
    let trail = common::trail::read_trail(&d.log_dir);
    assert!(
        trail.contains("op=set") && trail.contains("contid=6363 "),
        "the hook labelled it first: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        trail
    );
    let started = std::time::Instant::now();
    let status = || stdout(&d.ptags(&["status", "--json"]));
    let gone = |s: &str| s.contains("\"container_count\":0") && s.contains("\"join_policies\":0");
    while !gone(&status()) && started.elapsed() < std::time::Duration::from_secs(1) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(gone(&status()), "after 1 s: {}\n{}", status(), d.log());
    // Its end is on record: the ID is free again.
    assert!(read_trail(&d.log_dir).contains("op=drop contid=6363 "));
    let _ = runc.cmd().args(["delete", "--force", "broken"]).output();
}

/// Issue 21, section 1: no program runs at setns, so a task that enters
/// a container's mount namespace and then neither forks, execs nor moves
/// is joined by the daemon's next listing of all tasks (`sweep_ms`), and
/// that listing runs with namespace records off too.
#[test]
fn a_task_that_only_enters_is_joined_at_the_next_sweep() {
    let test = "a_task_that_only_enters";
    if !can_run(test) || !has_runc(test) {
        return;
    }
    let d = Daemon::start(
        "oci-enter",
        "[namespaces]\nrecords = \"off\"\nsweep_ms = 200\n",
    );
    let mut runc = Runc::new();
    runc.start(
        &d,
        "web",
        &["sleep", "1000"],
        &[("io.ptags.contid", "5454")],
    );
    let init = runc.pid("web");
    let mut entered = Command::new(common::hostile_client())
        .args(["enter-mnt", &init.to_string(), "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = common::printed_id(&mut entered);
    let contid = || stdout(&d.ptags(&["contid", "get", &pid.to_string()]));
    common::wait_until(|| contid() == "5454\n");
    let text = read_trail(&d.log_dir);
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("op=join opid={pid} "))
                && l.contains("contid=5454 old-contid=-1 ")
                && l.contains("res=success")),
        "{text}"
    );
    assert!(
        !text.contains("type=NS_"),
        "namespace records are off: {text}"
    );
    entered.kill().unwrap();
    entered.wait().unwrap();
    runc.delete("web");
}
