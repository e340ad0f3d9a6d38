//! Namespaces in the trail, with real processes as root: a task in a
//! container unshares five namespaces (NS_CREATE each, with the inodes
//! /proc shows, followed by its CONTAINER_ID), another enters one with
//! nsenter (NS_CHANGE), the last process of them exits (NS_DESTROY), and
//! ausearch groups the records with their CONTAINER_ID.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::trail::{has_tool, read_trail, wait_for_trail};
use common::{can_run, cli_path, stdout, Daemon};

/// `msg=audit(...)` of a record.
fn stamp_of(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or_default()
}

fn inode(pid: u32, kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .ino()
}

/// The one child of process `pid`, waited for.
fn child_of(pid: u32) -> u32 {
    for _ in 0..250 {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Ok(child) = children.trim().parse() {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("process {pid} has no child");
}

/// The record of `kind` whose body has all of `fields`, and the record
/// after it.
fn record_and_next<'a>(text: &'a str, kind: &str, fields: &[String]) -> (&'a str, &'a str) {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| {
            l.starts_with(&format!("type={kind} ")) && fields.iter().all(|f| l.contains(f.as_str()))
        })
        .unwrap_or_else(|| panic!("no {kind} with {fields:?} in:\n{text}"));
    (lines[at], lines.get(at + 1).copied().unwrap_or_default())
}

#[test]
fn unshare_nsenter_and_the_last_exit_are_on_record() {
    let test = "unshare_nsenter_and_the_last_exit";
    if !can_run(test) || !has_tool(test, "ausearch") {
        return;
    }
    let d = Daemon::start(
        "namespaces",
        "[audit]\nkernel = false\n[namespaces]\nsweep_ms = 200\n",
    );
    let host_net = inode(std::process::id(), "net");
    // A task of container 6161 unshares five namespaces and forks a
    // shell into them, which prints their inodes and sleeps.
    let mut maker = Command::new(cli_path())
        .args(["run", "--contid", "6161", "--"])
        .args([
            "unshare", "--fork", "-n", "-m", "-p", "-u", "-i", "sh", "-c",
        ])
        .arg("for k in net mnt pid uts ipc; do stat -L -c %i /proc/self/ns/$k; done; exec sleep 60")
        .env("PTAGS_SOCKET", d.socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let printed: Vec<u64> = BufReader::new(maker.stdout.take().unwrap())
        .lines()
        .take(5)
        .map(|l| l.unwrap().trim().parse().unwrap())
        .collect();
    // `ptags run` runs unshare as its child, which forks the shell.
    let unshare = child_of(maker.id());
    let sleeper = child_of(unshare);
    let kinds = ["net", "mnt", "pid", "uts", "ipc"];
    wait_for_trail(&d, "the five NS_CREATE", |t| {
        t.matches("type=NS_CREATE ").count() >= 5
    });
    let text = read_trail(&d.log_dir);
    for (kind, inum) in kinds.iter().zip(&printed) {
        let (create, next) = record_and_next(
            &text,
            "NS_CREATE",
            &[
                format!(" op=unshare nstype={kind} inum={inum} "),
                format!(" pid={unshare} "),
            ],
        );
        assert!(create.contains(" detected=fork "), "{create}");
        assert!(next.starts_with("type=CONTAINER_ID "), "{next}");
        assert!(next.contains(" contid=6161 "), "{next}");
        assert_eq!(stamp_of(create), stamp_of(next));
        if *kind == "pid" {
            let parent = inode(std::process::id(), "pid");
            assert!(create.contains(&format!(" parent={parent} ")), "{create}");
        }
    }

    // A task of container 6262 enters the new network namespace.
    let net = printed[0];
    assert_eq!(inode(sleeper, "net"), net);
    let out = d.sh(&format!(
        "ptags run --contid 6262 -- nsenter -t {sleeper} -n stat -L -c %i /proc/self/ns/net"
    ));
    assert_eq!(out.lines().next(), Some(net.to_string().as_str()), "{out}");
    wait_for_trail(&d, "the NS_CHANGE", |t| t.contains("type=NS_CHANGE "));
    let text = read_trail(&d.log_dir);
    let (change, next) = record_and_next(
        &text,
        "NS_CHANGE",
        &[format!(
            " op=setns nstype=net inum={net} old-inum={host_net} "
        )],
    );
    assert!(change.contains(" detected=exec "), "{change}");
    // (exe= only where the task still ran when its event was read: stat
    // had ended.)
    assert!(change.contains(" comm=\"stat\" "), "{change}");
    assert!(next.contains(" contid=6262 "), "{next}");

    // ps shows a process's namespaces.
    let ps = stdout(&d.ptags(&["--json", "ps", "--contid", "6161", "--ns"]));
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let row = ps["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == sleeper)
        .unwrap_or_else(|| panic!("{ps}"));
    for kind in ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"] {
        assert_eq!(
            row["namespaces"][kind],
            inode(sleeper, kind),
            "{kind}: {row}"
        );
    }
    // The last process in them exits: each is destroyed, found by a
    // sweep.
    maker.kill().unwrap();
    // SAFETY: signalling a process of this test.
    unsafe { libc::kill(sleeper as i32, libc::SIGKILL) };
    maker.wait().unwrap();
    wait_for_trail(&d, "the NS_DESTROY of the network namespace", |t| {
        t.contains("type=NS_DESTROY msg=")
            && t.contains(&format!(
                " nstype=net inum={net} detected=sweep found=no-task"
            ))
    });
    let text = read_trail(&d.log_dir);
    for (kind, inum) in kinds.iter().zip(&printed) {
        let (destroy, next) = record_and_next(
            &text,
            "NS_DESTROY",
            &[format!(" nstype={kind} inum={inum} ")],
        );
        // Named with the containers that were in it.
        assert!(next.starts_with("type=CONTAINER_ID "), "{destroy}\n{next}");
        assert!(next.contains("6161"), "{next}");
    }

    // ausearch reads the new types. (It cannot group them with their
    // CONTAINER_ID: libaudit 3.0.9 ends an event at any record whose type
    // it does not know, and knows neither NS_* nor CONTAINER_ID.)
    let log = d.log_dir.join("audit.log");
    let found = stdout(
        &Command::new("ausearch")
            .args(["-if", log.to_str().unwrap(), "-ts", "boot"])
            .output()
            .unwrap(),
    );
    for kind in ["NS_INFO", "NS_CREATE", "NS_CHANGE", "NS_DESTROY"] {
        assert_eq!(
            found.matches(&format!("type={kind} ")).count(),
            text.matches(&format!("type={kind} ")).count(),
            "{kind} in ausearch:\n{found}"
        );
    }
    // ptags audit search groups each with its CONTAINER_ID, and finds
    // the records of one namespace.
    let search = |args: &[&str]| {
        let mut all = vec!["audit", "search", "-i", log.to_str().unwrap()];
        all.extend_from_slice(args);
        stdout(&d.ptags(&all))
    };
    let creates = search(&["--type", "NS_CREATE", "--pid", &unshare.to_string()]);
    let lines: Vec<&str> = creates.lines().collect();
    assert_eq!(lines.len(), 10, "{creates}");
    for pair in lines.chunks(2) {
        assert!(
            pair[0].starts_with("type=NS_CREATE ") && pair[1].starts_with("type=CONTAINER_ID "),
            "{creates}"
        );
    }
    let of_net = search(&["--ns", &net.to_string()]);
    for kind in ["NS_CREATE", "NS_CHANGE", "NS_DESTROY"] {
        assert_eq!(
            of_net.matches(&format!("type={kind} ")).count(),
            1,
            "{kind}:\n{of_net}"
        );
    }
    // The report lists each container's namespaces and their events.
    let report = stdout(&d.ptags(&["audit", "report", "-i", log.to_str().unwrap()]));
    let line = |prefix: &str| {
        report
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in:\n{report}"))
            .to_owned()
    };
    let of_6161 = line("container 6161 namespaces: ");
    for (kind, inum) in kinds.iter().zip(&printed) {
        assert!(
            of_6161.contains(&format!("{kind}:")) && of_6161.contains(&inum.to_string()),
            "{of_6161}"
        );
    }
    assert!(
        line("container 6161 namespace events: ").contains("NS_CREATE 5"),
        "{report}"
    );
    assert!(
        line("container 6262 namespace events: ").contains("NS_CHANGE 1"),
        "{report}"
    );
    let (ok, out) = d.verify_dir(&d.log_dir);
    assert!(ok, "{out}");
}

/// Runs a command in the network namespace at `net` (a /proc or
/// /run/netns path).
fn in_netns(net: &str, args: &[&str]) {
    let st = Command::new("nsenter")
        .arg(format!("--net={net}"))
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "{args:?} in {net}");
}

/// A firewall in the network namespace at `net` that logs UDP packets to
/// port 9 to NFLOG group `group`, its loopback up.
fn log_udp_port_9(net: &str, group: u16) {
    in_netns(net, &["ip", "link", "set", "lo", "up"]);
    in_netns(net, &["nft", "add", "table", "inet", "t"]);
    in_netns(
        net,
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "t",
            "out",
            "{ type filter hook output priority 0; }",
        ],
    );
    let rule = format!("add rule inet t out udp dport 9 log group {group}");
    in_netns(net, &["nft", &rule]);
}

/// A network namespace made with `ip netns`, deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new() -> NetNs {
        let name = format!("ptags-test-{}", std::process::id());
        let ns = NetNs(name);
        ns.ip(&["netns", "add", &ns.0]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    }

    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.0];
        all.extend_from_slice(args);
        self.ip(&all);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Two containers share one network namespace; a firewall rule there
/// logs a packet to the NFLOG group ptagsd listens on in it: the packet's
/// record is followed by a CONTAINER_ID naming both containers.
#[test]
fn a_packet_in_a_shared_network_namespace_names_both_containers() {
    let test = "a_packet_in_a_shared_network_namespace";
    if !can_run(test) || !has_tool(test, "nft") {
        return;
    }
    let ns = NetNs::new();
    log_udp_port_9(&format!("/run/netns/{}", ns.0), 77);
    let d = Daemon::start(
        "namespaces-nflog",
        "[audit]\nkernel = false\n[namespaces]\nsweep_ms = 200\nnflog_group = 77\n",
    );
    let members: Vec<std::process::Child> = [7171, 7272]
        .iter()
        .map(|contid| {
            Command::new(cli_path())
                .args(["run", "--contid", &contid.to_string(), "--"])
                .args(["ip", "netns", "exec", &ns.0, "sleep", "60"])
                .env("PTAGS_SOCKET", d.socket())
                .spawn()
                .unwrap()
        })
        .collect();
    let netns_inode = std::fs::metadata(format!("/run/netns/{}", ns.0))
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        })
        .unwrap();
    // Sent until the daemon, at a sweep, has found both members there and
    // listens in it.
    let mut record = None;
    for _ in 0..100 {
        ns.exec(&["bash", "-c", "echo x > /dev/udp/127.0.0.1/9"]);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let text = read_trail(&d.log_dir);
        let lines: Vec<&str> = text.lines().collect();
        if let Some(at) = lines
            .iter()
            .rposition(|l| l.starts_with("type=NETFILTER_PKT "))
        {
            let next = lines.get(at + 1).copied().unwrap_or_default().to_owned();
            if next.contains("contid=7171,7272 ") {
                record = Some((lines[at].to_owned(), next));
                break;
            }
        }
    }
    let (packet, container_id) =
        record.unwrap_or_else(|| panic!("no packet naming both:\n{}", read_trail(&d.log_dir)));
    for field in [
        "saddr=127.0.0.1 daddr=127.0.0.1 proto=17 ".to_owned(),
        " dport=9 ".to_owned(),
        format!(" netns={netns_inode} nflog-group=77 "),
    ] {
        assert!(packet.contains(&field), "{field} in {packet}");
    }
    eprintln!("{test}:\n{packet}\n{container_id}");
    assert!(
        container_id.starts_with("type=CONTAINER_ID "),
        "{container_id}"
    );
    assert_eq!(stamp_of(&packet), stamp_of(&container_id));
    for mut m in members {
        // `ptags run` waits for the command it runs as its child.
        let sleeper = child_of(m.id());
        // SAFETY: signalling a process of this test.
        unsafe { libc::kill(sleeper as i32, libc::SIGKILL) };
        let _ = m.wait();
    }
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    assert!(
        status["audit"]["nflog_packets"].as_u64().unwrap() > 0,
        "{status}"
    );
}

/// A task in a container making namespaces in a loop: its NS_CREATE
/// records come at the configured rate after a burst, and the rest is
/// counted in PTAGS_SUPPRESSED records, so that none is lost unsaid.
#[test]
fn namespace_records_of_a_flood_are_limited_and_counted() {
    let test = "namespace_records_of_a_flood";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start(
        "namespaces-flood",
        "[audit]\nkernel = false\n[namespaces]\nrecord_burst = 10\nrecord_rate = 5\n",
    );
    let out = d.sh("ptags run --contid 6464 -- sh -c 'for i in $(seq 60); do unshare -u true; done; echo done'");
    assert!(out.starts_with("done"), "{out}");
    let counted = |t: &str| -> u64 {
        t.lines()
            .filter(|l| {
                l.starts_with("type=PTAGS_SUPPRESSED ") && l.contains(" of=namespace-changes")
            })
            .map(|l| {
                let n = l.split(" suppressed=").nth(1).unwrap();
                n.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum()
    };
    let created = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("type=NS_CREATE ") && l.contains(" nstype=uts "))
            .count() as u64
    };
    wait_for_trail(&d, "every namespace recorded or counted", |t| {
        created(t) + counted(t) == 60
    });
    let text = read_trail(&d.log_dir);
    let (recorded, suppressed) = (created(&text), counted(&text));
    eprintln!("{test}: {recorded} recorded, {suppressed} counted");
    assert!(recorded >= 10 && suppressed > 0, "{recorded} recorded");
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    assert_eq!(status["audit"]["ns_suppressed"], suppressed, "{status}");
}

/// The packet source against a container that owns a network namespace:
/// a namespace only a thread of it is in is listened in (not its main
/// thread's, the host's); netlink messages sent to the daemon's socket by
/// anything but the kernel are not packets; and a flood is held to the
/// namespace's rate, the rest counted.
#[test]
fn packets_of_a_thread_s_namespace_are_its_own_and_held_to_a_rate() {
    let test = "packets_of_a_thread_s_namespace";
    if !can_run(test) || !has_tool(test, "nft") || !has_tool(test, "python3") {
        return;
    }
    let d = Daemon::start(
        "namespaces-nflog-thread",
        "[audit]\nkernel = false\n[namespaces]\nsweep_ms = 200\nnflog_group = 78\npacket_burst = 5\npacket_rate = 1\n",
    );
    // Its main thread stays in the host's network namespace; one thread
    // makes a network namespace of its own.
    let program = r#"import ctypes, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def own():
    assert libc.unshare(0x40000000) == 0
    print(threading.get_native_id(), flush=True)
    time.sleep(60)
threading.Thread(target=own, daemon=True).start()
time.sleep(60)
"#;
    let mut member = Command::new(cli_path())
        .args(["run", "--contid", "7575", "--", "python3", "-c", program])
        .env("PTAGS_SOCKET", d.socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let tid = common::printed_id(&mut member);
    let pid = child_of(member.id());
    let net = format!("/proc/{pid}/task/{tid}/ns/net");
    let netns = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&net).unwrap().ino()
    };
    let host_net = inode(std::process::id(), "net");
    let inside = |args: &[&str]| in_netns(&net, args);
    log_udp_port_9(&net, 78);
    wait_for_trail(&d, "the listener in the thread's namespace", |t| {
        t.contains(&format!(
            "op=listen netns={netns} nflog-group=78 res=success"
        ))
    });
    // A forged packet message, sent to the daemon's socket from inside
    // (root there, as a container owning its namespace is).
    let forger = r#"import socket, struct
ports = [int(l.split()[2]) for l in open('/proc/self/net/netlink').read().splitlines()[1:] if l.split()[1] == '12']
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 0))
ip = bytes([0x45,0,0,24,0,0,0,0,64,6,0,0,10,1,2,3,192,0,2,66]) + struct.pack('>HH', 31337, 22)
def attr(t, v):
    a = struct.pack('=HH', 4 + len(v), t) + v
    return a + bytes((4 - len(a) % 4) % 4)
body = bytes([2, 0]) + struct.pack('>H', 78) + attr(2, struct.pack('>I', 0xdead)) + attr(9, ip)
msg = struct.pack('=IHHII', 16 + len(body), 0x0400, 0, 1, 0) + body
for p in ports:
    s.sendto(msg, (p, 0))
print(len(ports))
"#;
    let sent = Command::new("nsenter")
        .arg(format!("--net={net}"))
        .args(["python3", "-c", forger])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(stdout(&sent).trim() != "0", "the daemon's socket was found");
    // A flood: 5 recorded at once, then 1 a second; the rest counted.
    let started = std::time::Instant::now();
    inside(&[
        "bash",
        "-c",
        "for i in $(seq 50); do echo x > /dev/udp/127.0.0.1/9; done",
    ]);
    let counted = |t: &str| -> u64 {
        t.lines()
            .filter(|l| l.starts_with("type=PTAGS_SUPPRESSED ") && l.contains(" of=packets"))
            .map(|l| {
                let n = l.split(" suppressed=").nth(1).unwrap();
                n.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum()
    };
    wait_for_trail(&d, "the packets past the rate counted", |t| counted(t) > 0);
    let text = read_trail(&d.log_dir);
    let seconds = started.elapsed().as_secs();
    let packets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("type=NETFILTER_PKT "))
        .collect();
    eprintln!(
        "{test}: {} recorded, {} counted",
        packets.len(),
        counted(&text)
    );
    assert!(
        !packets.is_empty() && packets.len() as u64 <= 5 + seconds + 1,
        "{} in {seconds} s:\n{text}",
        packets.len()
    );
    assert!(packets
        .iter()
        .all(|l| l.contains(&format!(" netns={netns} "))));
    assert!(
        !text.contains("mark=0xdead"),
        "a forged packet was recorded:\n{text}"
    );
    assert!(
        !text.lines().any(|l| {
            (l.starts_with("type=PTAGS_NFLOG ") || l.starts_with("type=NETFILTER_PKT "))
                && l.contains(&format!("netns={host_net} "))
        }),
        "the host's namespace was listened in:\n{text}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    assert_eq!(
        status["audit"]["nflog_suppressed"],
        counted(&text),
        "{status}"
    );
    // SAFETY: signalling a process of this test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = member.wait();
}

/// At most `nflog_max_namespaces` listeners: a namespace past it is
/// refused, on record.
#[test]
fn listeners_are_capped() {
    let test = "listeners_are_capped";
    if !can_run(test) {
        return;
    }
    let d = Daemon::start(
        "namespaces-nflog-cap",
        "[audit]\nkernel = false\n[namespaces]\nsweep_ms = 200\nnflog_group = 79\nnflog_max_namespaces = 1\n",
    );
    let members: Vec<std::process::Child> = [7676, 7677]
        .iter()
        .map(|contid| {
            Command::new(cli_path())
                .args(["run", "--contid", &contid.to_string(), "--"])
                .args(["unshare", "-n", "sleep", "60"])
                .env("PTAGS_SOCKET", d.socket())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_for_trail(&d, "one listening, one refused", |t| {
        t.contains("op=listen ") && t.contains("res=success") && t.contains("res=failed")
    });
    let text = read_trail(&d.log_dir);
    let listens: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("type=PTAGS_NFLOG "))
        .collect();
    assert_eq!(
        listens.iter().filter(|l| l.contains("res=success")).count(),
        1,
        "{text}"
    );
    let refused = listens.iter().find(|l| l.contains("res=failed")).unwrap();
    assert!(refused.contains("reason="), "{refused}");
    for mut m in members {
        let sleeper = child_of(m.id());
        // SAFETY: signalling a process of this test.
        unsafe { libc::kill(sleeper as i32, libc::SIGKILL) };
        let _ = m.wait();
    }
}

/// A container cannot multiply its packet records, nor take every
/// listener, by making network namespaces: its packets are held to one
/// rate over all of its namespaces, and its listeners to a number.
#[test]
fn a_container_s_namespaces_share_its_packet_rate_and_listener_share() {
    let test = "a_container_s_namespaces_share_its_packet_rate";
    if !can_run(test) || !has_tool(test, "nft") {
        return;
    }
    let d = Daemon::start(
        "namespaces-nflog-share",
        "[audit]\nkernel = false\n[namespaces]\nsweep_ms = 200\nnflog_group = 80\npacket_burst = 5\npacket_rate = 1\nnflog_max_namespaces_per_container = 2\n",
    );
    let mut member = Command::new(cli_path())
        .args(["run", "--contid", "7878", "--", "sh", "-c"])
        .arg("for i in 1 2 3; do unshare -n sleep 60 & done; wait")
        .env("PTAGS_SOCKET", d.socket())
        .spawn()
        .unwrap();
    let sh = child_of(member.id());
    let mut sleepers = Vec::new();
    for _ in 0..100 {
        sleepers = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|p| p.parse::<u32>().unwrap())
            .collect();
        if sleepers.len() == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(sleepers.len(), 3);
    wait_for_trail(&d, "two listening, one over the container's share", |t| {
        let listening = t
            .lines()
            .filter(|l| l.starts_with("type=PTAGS_NFLOG ") && l.contains(" res=success"))
            .count();
        listening == 2 && t.contains("reason=\"container-limit\"")
    });
    let started = std::time::Instant::now();
    for p in &sleepers {
        let net = format!("/proc/{p}/ns/net");
        log_udp_port_9(&net, 80);
        let inside = |args: &[&str]| in_netns(&net, args);
        inside(&[
            "bash",
            "-c",
            "for i in $(seq 20); do echo x > /dev/udp/127.0.0.1/9; done",
        ]);
    }
    wait_for_trail(&d, "packets past the rate counted", |t| {
        t.contains(" of=packets")
    });
    let seconds = started.elapsed().as_secs();
    let text = read_trail(&d.log_dir);
    let packets = text.matches("type=NETFILTER_PKT ").count() as u64;
    eprintln!("{test}: {packets} packets recorded in {seconds} s");
    assert!(
        packets >= 1 && packets <= 5 + seconds + 1,
        "one rate for the container, not one per namespace: {packets} in {seconds} s"
    );
    for p in &sleepers {
        // SAFETY: signalling a process of this test.
        unsafe { libc::kill(*p as i32, libc::SIGKILL) };
    }
    let _ = member.wait();
}
