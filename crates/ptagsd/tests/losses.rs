//! Records lost on the way to ptagsd are counted exactly and said in the
//! trail. Each test stalls the daemon (SIGSTOP) with a tiny receive
//! buffer while the test sends N user messages (AUDIT_USER_AVC, one
//! record each, passed on by the kernel even with audit off), then checks
//! that the records written and the records counted lost add up to N.
//! A test binary of its own: it registers audit daemons.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::trail::{auditctl, has_tool, read_trail};
use common::{can_run, skips_fail, stdout, Daemon};

/// The tests change who is the kernel's audit daemon: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const USER_AVC: u16 = 1107;
const AUDIT_SET: u16 = 1001;
const MESSAGES: u64 = 3000;

fn audit_socket() -> OwnedFd {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_AUDIT,
        )
    };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sends one netlink message to the kernel (no ACK asked).
fn send(fd: &OwnedFd, kind: u16, body: &[u8]) {
    let len = 16 + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&[0; 8]);
    msg.extend_from_slice(body);
    // SAFETY: msg is valid for reads of its length.
    let r = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    assert!(r >= 0, "send: {}", std::io::Error::last_os_error());
}

/// `struct audit_status` setting only the registered pid.
fn set_pid(pid: u32) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..4].copy_from_slice(&4u32.to_ne_bytes());
    s[12..16].copy_from_slice(&pid.to_ne_bytes());
    s
}

fn status_value(name: &str) -> String {
    auditctl(&["-s"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in auditctl -s"))
        .trim()
        .to_owned()
}

/// Whether the machine may lose audit records without harm: not with an
/// audit daemon registered already (its losses are not ours to cause),
/// nor with the kernel set to panic on a loss (`auditctl -f 2`).
fn may_lose_records(test: &str) -> bool {
    if !can_run(test) || !has_tool(test, "auditctl") {
        return false;
    }
    let why = if status_value("failure") == "2" {
        "the kernel panics on a lost audit record (auditctl -f 2)"
    } else if status_value("pid") != "0" {
        "an audit daemon is registered already"
    } else {
        return true;
    };
    assert!(!skips_fail(), "{test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// The test process as the kernel's audit daemon, reading and discarding
/// every record on a thread as an auditd would; unregistered when dropped.
struct StandIn {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandIn {
    fn register() -> StandIn {
        let fd = audit_socket();
        // SAFETY: sockaddr_nl is plain data; zero binds a kernel-chosen port.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        assert_eq!(r, 0, "bind");
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: setsockopt reads a timeval of the size given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        send(&fd, AUDIT_SET, &set_pid(std::process::id()));
        common::wait_until(|| status_value("pid") == std::process::id().to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !stopping.load(Ordering::Relaxed) {
                // SAFETY: buf is valid for writes of its length.
                unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            }
        });
        StandIn {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        send(&audit_socket(), AUDIT_SET, &set_pid(0));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The kernel's backlog limit, restored when dropped.
struct Backlog(String);

impl Backlog {
    fn set(limit: &str) -> Backlog {
        let old = Backlog(status_value("backlog_limit"));
        auditctl(&["-b", limit]);
        old
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        auditctl(&["-b", &self.0]);
    }
}

fn signal(d: &Daemon, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(d.pid() as libc::pid_t, sig) }, 0);
}

fn audit_status(d: &Daemon) -> serde_json::Value {
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    status["audit"].clone()
}

/// Sends `n` user messages marked `marker`, numbered.
fn send_marked(marker: &str, n: u64) {
    let fd = audit_socket();
    for i in 0..n {
        // The kernel ends the text at its last byte: a NUL.
        send(&fd, USER_AVC, format!("{marker} n={i}\0").as_bytes());
    }
}

fn count(trail: &str, needle: &str) -> u64 {
    trail.lines().filter(|l| l.contains(needle)).count() as u64
}

/// Checks that the trail holds the `received` records marked `marker`
/// (written once complete: no EOE ends a user message's event), and
/// PTAGS_LOST records of `source` and unit adding up to `lost`.
fn check_trail(d: &Daemon, marker: &str, received: u64, (source, unit): (&str, &str), lost: u64) {
    common::wait_until(|| count(&read_trail(&d.log_dir), marker) >= received);
    let trail = read_trail(&d.log_dir);
    assert_eq!(
        count(&trail, marker),
        received,
        "the records received are written"
    );
    assert_eq!(
        lost_in_trail(&trail, source, unit),
        lost,
        "PTAGS_LOST says what status says"
    );
}

/// The `lost=` values of the trail's PTAGS_LOST records from `source`,
/// counted in `unit`.
fn lost_in_trail(trail: &str, source: &str, unit: &str) -> u64 {
    trail
        .lines()
        .filter(|l| {
            l.starts_with("type=PTAGS_LOST")
                && l.contains(&format!("source={source} "))
                && l.contains(&format!(" unit={unit} "))
        })
        .map(|l| {
            let v = l.split(" lost=").nth(1).unwrap().split(' ').next().unwrap();
            v.parse::<u64>().unwrap()
        })
        .sum()
}

#[test]
fn beside_an_audit_daemon_a_full_socket_is_counted_in_records() {
    let test = "beside_an_audit_daemon_a_full_socket_is_counted_in_records";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !may_lose_records(test) {
        return;
    }
    let stand_in = StandIn::register();
    let d = Daemon::start("losses-beside", "[audit]\nreceive_buffer_kib = 4\n");
    let before = audit_status(&d);
    assert_eq!(before["registered"], false, "{before}");
    let marker = format!("ptags-test-losses-{}", std::process::id());
    signal(&d, libc::SIGSTOP);
    send_marked(&marker, MESSAGES);
    signal(&d, libc::SIGCONT);
    let received = |a: &serde_json::Value| {
        a["kernel_records"].as_u64().unwrap() - before["kernel_records"].as_u64().unwrap()
    };
    common::wait_until(|| {
        let a = audit_status(&d);
        received(&a) + a["lost_netlink"].as_u64().unwrap() >= MESSAGES
    });
    let a = audit_status(&d);
    let lost = a["lost_netlink"].as_u64().unwrap();
    assert!(lost > 0, "a 4 KiB buffer held {MESSAGES} records: {a}");
    assert_eq!(received(&a) + lost, MESSAGES, "{a}");
    check_trail(&d, &marker, received(&a), ("netlink", "records"), lost);
    drop(d);
    drop(stand_in);
    assert_eq!(status_value("pid"), "0");
}

#[test]
fn as_the_audit_daemon_what_the_kernel_drops_is_counted_in_records() {
    let test = "as_the_audit_daemon_what_the_kernel_drops_is_counted_in_records";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !may_lose_records(test) {
        return;
    }
    // A small backlog: what the kernel cannot hand over and has no room
    // to keep for the daemon, it drops and counts.
    let _backlog = Backlog::set("64");
    let d = Daemon::start(
        "losses-registered",
        "[audit]\nregister = \"always\"\nreceive_buffer_kib = 4\n",
    );
    let before = audit_status(&d);
    assert_eq!(before["registered"], true, "{before}");
    let marker = format!("ptags-test-kernel-losses-{}", std::process::id());
    signal(&d, libc::SIGSTOP);
    send_marked(&marker, MESSAGES);
    signal(&d, libc::SIGCONT);
    // The kernel hands over what it kept for the daemon when it next has
    // a record to send: a few more, counted apart.
    let kick = format!("{marker}-kick");
    let mut kicks = 0;
    let received = |a: &serde_json::Value| {
        a["kernel_records"].as_u64().unwrap() - before["kernel_records"].as_u64().unwrap()
    };
    // Each user message is one record, one event, one serial: what did
    // not arrive is a gap in the serials, whether the kernel counted the
    // record in its own `lost` or (audit off at boot) let it go uncounted.
    let accounted = |a: &serde_json::Value| received(a) + a["lost_serials"].as_u64().unwrap();
    for _ in 0..100 {
        send_marked(&kick, 1);
        kicks += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
        if accounted(&audit_status(&d)) >= MESSAGES + kicks {
            break;
        }
    }
    // No gap is counted before its grace time is over: wait it out once
    // more with nothing sent, and the count must not move.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let a = audit_status(&d);
    let lost = a["lost_serials"].as_u64().unwrap();
    eprintln!(
        "{test}: {} received, {lost} events lost ({} records by the kernel's own count)",
        received(&a),
        a["lost_kernel"]
    );
    assert!(
        lost > 0,
        "a 4 KiB socket and a backlog of 64 held {MESSAGES} records: {a}"
    );
    assert_eq!(accounted(&a), MESSAGES + kicks, "{a}");
    check_trail(&d, &marker, received(&a), ("kernel", "events"), lost);
    drop(d);
    assert_eq!(status_value("pid"), "0");
}
