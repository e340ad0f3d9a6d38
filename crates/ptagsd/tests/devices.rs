//! Device allow-lists per container (issue 19), with real runc
//! containers and real device nodes: a container is held to the list its
//! config gives its runtime, by its container ID, so that root inside
//! cannot open a disk it made a node of, even from another cgroup; a
//! change takes effect at once; a nested list cannot widen its parent's;
//! the host is untouched; the program is gone once no list is left.

mod common;

use std::path::{Path, PathBuf};

use common::runc::{has_runc, Runc};
use common::trail::{read_trail, wait_for_trail};
use common::{can_run, stderr, stdout, test_user, Daemon};

/// A block device of the host's that the host may open (its disk if it
/// may; this machine's sandbox may refuse even root its disk), else
/// /dev/kmsg: (type, major, minor). None of them is a runtime's default.
fn host_device() -> (char, u32, u32) {
    let mut disks: Vec<PathBuf> = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    // Disks first, then the others (zram, loop).
    disks.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        (
            name.starts_with("loop") || name.starts_with("zram") || name.starts_with("ram"),
            name,
        )
    });
    disks
        .iter()
        .filter(|p| std::fs::File::open(Path::new("/dev").join(p.file_name().unwrap())).is_ok())
        .find_map(|p| {
            let t = std::fs::read_to_string(p.join("dev")).ok()?;
            let (a, b) = t.trim().split_once(':')?;
            Some(('b', a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or(('c', 1, 11))
}

/// A cgroup v2 directory of the test's, with two children, removed when
/// dropped.
struct Cgroups(PathBuf);

impl Cgroups {
    fn new() -> Cgroups {
        let root = ptags_bpf::procfs::cgroup_v2_root().expect("a cgroup v2 hierarchy");
        let dir = root.join(format!("ptags-test-devices-{}", std::process::id()));
        for child in ["a", "b"] {
            std::fs::create_dir_all(dir.join(child)).unwrap();
        }
        Cgroups(dir)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for child in ["a", "b", ""] {
            for _ in 0..100 {
                if std::fs::remove_dir(self.0.join(child)).is_ok() || !self.0.join(child).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// The bundle of a container that may mknod (CAP_MKNOD), with the test's
/// cgroup directory mounted at /cg and no cgroup namespace (so that its
/// root can move itself there), and `allow` added to its config's rules.
fn bundle(
    runc: &Runc,
    d: &Daemon,
    name: &str,
    contid: &str,
    cg: &Path,
    allow: Option<serde_json::Value>,
) -> PathBuf {
    let bundle = runc.bundle(d, name, &["sleep", "1000"], &[("io.ptags.contid", contid)]);
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for set in ["bounding", "effective", "permitted"] {
        config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push("CAP_MKNOD".into());
    }
    config["root"]["readonly"] = false.into();
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "cgroup");
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": "/cg", "type": "bind", "source": cg, "options": ["rbind", "rw"],
        }));
    if let Some(rule) = allow {
        config["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(rule);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    bundle
}

/// `runc exec` of a shell script in a container; its output and status.
fn exec(runc: &Runc, name: &str, script: &str) -> String {
    let out = runc
        .cmd()
        .args(["exec", name, "sh", "-c", script])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn device_records(d: &Daemon, contid: &str) -> Vec<String> {
    read_trail(&d.log_dir)
        .lines()
        .filter(|l| l.starts_with("type=PTAGS_DEVICE") && l.contains(&format!("contid={contid} ")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_runc_container_is_held_to_its_device_list_wherever_its_cgroup_goes() {
    if !can_run("devices_runc") || !has_runc("devices_runc") {
        return;
    }
    let d = Daemon::start("devices-runc", "");
    let cg = Cgroups::new();
    let mut runc = Runc::new();
    let (kind, major, minor) = host_device();
    let node = format!("{kind} {major}:{minor}");
    // Container A: the default devices only, as `runc spec` gives them.
    let a = bundle(&runc, &d, "fenced", "7701", &cg.0, None);
    runc.names.push("fenced".into());
    runc.run(&["run", "-d", "--bundle", a.to_str().unwrap(), "fenced"]);
    let list = stdout(&d.ptags(&["device", "list", "7701"]));
    assert!(list.starts_with("default deny\n"), "{list}");
    assert!(
        list.contains("allow c 1:3 rwm\n") && list.contains(&format!("allow {kind} *:* m\n")),
        "{list}"
    );
    assert!(
        d.pin_dir.join("link_dev").exists(),
        "attached at the cgroup root"
    );
    assert!(stdout(&d.ptags(&["status"])).contains("cgroup/dev"));

    // Root inside makes a node of the disk and cannot open it.
    let open_disk = "head -c1 /tmp/disk >/dev/null && echo opened || echo refused";
    let out = exec(
        &runc,
        "fenced",
        &format!("mknod /tmp/disk {kind} {major} {minor} && echo made; {open_disk}"),
    );
    assert!(out.contains("made") && out.contains("refused"), "{out}");
    assert!(out.contains("Operation not permitted"), "EPERM: {out}");
    let out = exec(
        &runc,
        "fenced",
        "head -c1 /dev/zero | wc -c; echo x >/dev/null && echo null-ok",
    );
    assert!(
        out.contains('1') && out.contains("null-ok"),
        "/dev/zero and /dev/null: {out}"
    );
    wait_for_trail(&d, "the denial", |t| {
        t.lines().any(|l| {
            l.starts_with("type=PTAGS_DEVICE")
                && l.contains("contid=7701 ")
                && l.contains("list=7701 ")
                && l.contains(&format!(
                    "devtype={kind} major={major} minor={minor} access=r res=denied"
                ))
        })
    });
    let before = device_records(&d, "7701").len();

    // It moves itself to a cgroup it can reach: still refused, by ptags
    // (the record says so), since the fence is its container ID's.
    let out = exec(
        &runc,
        "fenced",
        &format!("echo $$ >/cg/b/cgroup.procs && grep ^0:: /proc/self/cgroup; {open_disk}"),
    );
    let moved = format!("0::/{}/b", cg.0.file_name().unwrap().to_string_lossy());
    assert!(out.contains(&moved), "moved: {out}");
    assert!(out.contains("refused"), "{out}");
    wait_for_trail(&d, "the denial after the move", |_| {
        device_records(&d, "7701").len() > before
    });

    // The host opens the same node.
    let host_node = runc.rootfs("fenced").join("tmp/disk");
    let host = std::process::Command::new("head")
        .args(["-c1"])
        .arg(&host_node)
        .output()
        .unwrap();
    assert!(
        host.status.success(),
        "the host is untouched: {}",
        stderr(&host)
    );

    // Container B: its config grants the disk (read); both agree, it
    // opens. A denial from ptags takes effect at once for the running
    // task; allowed again, it opens again.
    let rule = serde_json::json!({
        "allow": true, "type": kind.to_string(), "major": major, "minor": minor, "access": "r"
    });
    let b = bundle(&runc, &d, "granted", "7702", &cg.0, Some(rule));
    runc.names.push("granted".into());
    runc.run(&["run", "-d", "--bundle", b.to_str().unwrap(), "granted"]);
    let out = exec(
        &runc,
        "granted",
        &format!("mknod /tmp/disk {kind} {major} {minor}; {open_disk}"),
    );
    assert!(out.contains("opened"), "{out}");
    let r = format!("{kind} {major}:{minor} r");
    let denied = d.ptags(&["device", "deny", "7702", &r]);
    assert!(denied.status.success(), "{}", stderr(&denied));
    assert!(exec(&runc, "granted", open_disk).contains("refused"));
    let allowed = d.ptags(&["device", "allow", "7702", &r]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert!(exec(&runc, "granted", open_disk).contains("opened"));

    // An unprivileged user may neither change nor read a list, and
    // learns nothing; a refusal changes nothing.
    let user = d.sh_as(
        &format!("ptags device allow 7701 '{node} r'; ptags device list 7701"),
        Some(test_user()),
    );
    assert_eq!(user.matches("EPERM").count(), 2, "{user}");
    assert!(stdout(&d.ptags(&["device", "list", "7701"])).eq(&list));
    wait_for_trail(&d, "the writes on record", |t| {
        t.lines().any(|l| {
            l.starts_with("type=CONTAINER_OP")
                && l.contains("op=devices action=write contid=7702")
                && l.contains("res=success")
        }) && t
            .lines()
            .any(|l| l.contains("op=devices action=write contid=7701") && l.contains("errno=EPERM"))
    });

    // A restart keeps the lists, and the fence.
    let mut d = d;
    d.restart();
    assert_eq!(stdout(&d.ptags(&["device", "list", "7701"])), list);
    assert!(exec(&runc, "fenced", open_disk).contains("refused"));

    // Gone with the containers: no list, no program.
    runc.delete("fenced");
    runc.delete("granted");
    common::wait_until(|| !d.pin_dir.join("link_dev").exists());
    assert!(!stdout(&d.ptags(&["status"])).contains("cgroup/dev"));
    let gone = d.ptags(&["device", "list", "7701"]);
    assert!(stderr(&gone).contains("ENOENT"), "{}", stderr(&gone));
    drop(cg);
}

#[test]
fn a_nested_list_only_narrows_and_the_chain_is_enforced() {
    use std::os::unix::process::CommandExt;
    if !can_run("devices_nested") {
        return;
    }
    let d = Daemon::start("devices-nested", "");
    // Container 7801, and 7802 nested in it, whose task waits for `go`
    // to open two devices.
    let bin = common::cli_path().parent().unwrap().to_owned();
    let tasks = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "ptags run --contid 7801 -- sh -c 'ptags run --contid 7802 -- sh -c \"\
               while [ ! -e go ]; do sleep 0.05; done; \
               (head -c1 /dev/zero >/dev/null && echo zero-ok) >out 2>&1; \
               (head -c1 /dev/urandom >/dev/null 2>&1 || echo urandom-refused) >>out; \
               echo done >>out; exec sleep 1000\" & exec sleep 1000'",
        )
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("PTAGS_SOCKET", d.socket())
        .current_dir(d.dir.path())
        .process_group(0)
        .spawn()
        .unwrap();
    let _tasks = Group(tasks);
    common::wait_until(|| {
        stdout(&d.ptags(&["ps", "--contid", "7802"]))
            .lines()
            .count()
            > 1
    });
    let device = |args: &[&str]| -> (bool, String) {
        let out = d.ptags(&[&["device"][..], args].concat());
        (
            out.status.success(),
            format!("{}{}", stdout(&out), stderr(&out)),
        )
    };
    assert!(device(&["deny", "7801", "a"]).0);
    assert!(device(&["allow", "7801", "c 1:3 rwm", "c 1:5 r"]).0);
    // Widening is refused to anyone, with the reason; narrowing is not.
    let (ok, said) = device(&["allow", "7802", "c 1:9 r"]);
    assert!(
        !ok && said.contains("the parent denies by default; a nested list must too"),
        "{said}"
    );
    let (ok, said) = device(&["deny", "7802", "a"]);
    assert!(ok, "{said}");
    let (ok, said) = device(&["allow", "7802", "c 1:3 rw", "c 1:9 r"]);
    assert!(
        !ok && said.contains("c 1:9 r is not within the parent's list"),
        "{said}"
    );
    assert!(said.contains("EPERM"), "{said}");
    // All or nothing: the refused request's first rule was not applied.
    assert_eq!(device(&["list", "7802"]).1, "default deny\n");
    let (ok, said) = device(&["allow", "7802", "c 1:3 rw", "c 1:5 r"]);
    assert!(ok, "{said}");
    assert_eq!(
        device(&["list", "7802"]).1,
        "default deny\nallow c 1:3 rw\nallow c 1:5 r\n"
    );
    // The chain is enforced: /dev/zero within both, /dev/urandom in
    // neither.
    std::fs::write(d.dir.path().join("go"), "").unwrap();
    let out = d.dir.path().join("out");
    common::wait_until(|| std::fs::read_to_string(&out).is_ok_and(|t| t.contains("done")));
    let said = std::fs::read_to_string(&out).unwrap();
    assert!(
        said.contains("zero-ok") && said.contains("urandom-refused"),
        "{said}"
    );
    // Bad rules never reach the daemon; the CLI names them.
    let bad = d.ptags(&["device", "allow", "7801", "c 1:3 rx"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("letters of rwm"), "{}", stderr(&bad));
}

/// A process group of the test's, killed when dropped (a failed test
/// leaves nothing running).
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: killing the process group this test made.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}
