//! ptagsd as the kernel's audit daemon: with no auditd registered, it
//! registers, receives records by unicast (the kernel no longer prints
//! them), and gives the registration up when it stops; with a real auditd
//! registered, it reads beside it and both logs hold the events. A test
//! binary of its own, so that no other test daemon registers meanwhile.

mod common;

use common::trail::{auditctl, has_tool, read_trail, wait_for_trail, AuditState};
use common::{can_run, skips_fail, stdout, Daemon};

/// The pid `auditctl -s` names as the registered audit daemon.
fn registered_pid() -> u32 {
    auditctl(&["-s"])
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .expect("auditctl -s names a pid")
}

fn dmesg_lines_with(needle: &str) -> usize {
    let out = std::process::Command::new("dmesg").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn with_no_audit_daemon_ptagsd_becomes_it() {
    let test = "with_no_audit_daemon_ptagsd_becomes_it";
    if !can_run(test) || !has_tool(test, "auditctl") {
        return;
    }
    let registered = registered_pid();
    // A daemon killed while registered (a test's, say) stays registered
    // until the kernel fails to reach it; ptagsd takes over from it.
    if registered != 0 && std::path::Path::new(&format!("/proc/{registered}")).exists() {
        assert!(
            !skips_fail(),
            "{test}: an audit daemon is registered already"
        );
        eprintln!("SKIPPED {test}: an audit daemon (auditd) is registered already");
        return;
    }
    let mut d = Daemon::start("register", "");
    assert_eq!(registered_pid(), d.pid(), "registered with the kernel");
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    assert_eq!(status["audit"]["registered"], true, "{status}");

    // Records of a watched file come by unicast, and not to the kernel log.
    let key = format!("ptags-test-register-{}", std::process::id());
    let watched = d.dir.path().join("watched");
    std::fs::write(&watched, "x").unwrap();
    let mut audit = AuditState::new();
    audit.rule(&["-w", watched.to_str().unwrap(), "-p", "r"], &key);
    let printed = dmesg_lines_with(&key);
    for _ in 0..5 {
        std::fs::read(&watched).unwrap();
    }
    wait_for_trail(&d, "the reads", |t| {
        t.lines()
            .filter(|l| l.starts_with("type=SYSCALL") && l.contains(&key))
            .count()
            >= 5
    });
    assert_eq!(
        dmesg_lines_with(&key),
        printed,
        "the kernel printed records"
    );
    drop(audit);

    // Stopping gives the registration up, for an auditd to take.
    d.stop();
    assert_eq!(registered_pid(), 0, "unregistered at stop");
    assert!(read_trail(&d.log_dir).contains(&key));

    // A real auditd (its own configuration and log), then ptagsd beside it.
    let auditd = Auditd::start(d.dir.path());
    assert_eq!(registered_pid(), auditd.child.id());
    let d = Daemon::start("beside-auditd", "");
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&d.ptags(&["--json", "status"]))).unwrap();
    assert_eq!(status["audit"]["registered"], false, "{status}");
    assert_eq!(
        registered_pid(),
        auditd.child.id(),
        "auditd keeps its place"
    );
    let key = format!("{key}-beside");
    let mut audit = AuditState::new();
    audit.rule(&["-w", watched.to_str().unwrap(), "-p", "r"], &key);
    std::fs::read(&watched).unwrap();
    let in_log = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("type=SYSCALL") && l.contains(&key))
    };
    wait_for_trail(&d, "the read", in_log);
    common::wait_until(|| in_log(&std::fs::read_to_string(&auditd.log).unwrap_or_default()));
    drop(audit);
    drop(d);
    drop(auditd);
    assert_eq!(registered_pid(), 0, "auditd unregistered at its stop");
}

/// A real auditd in the foreground, logging RAW into a directory of the
/// test's, stopped (SIGTERM) when dropped.
struct Auditd {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Auditd {
    fn start(dir: &std::path::Path) -> Auditd {
        let conf_dir = dir.join("auditd");
        std::fs::create_dir_all(conf_dir.join("plugins")).unwrap();
        let log = conf_dir.join("audit.log");
        let conf = format!(
            "local_events = yes\nwrite_logs = yes\nlog_file = {}\nlog_format = RAW\nflush = NONE\n\
             num_logs = 2\nmax_log_file = 8\nmax_log_file_action = ROTATE\nspace_left = 2\n\
             space_left_action = IGNORE\nadmin_space_left = 1\nadmin_space_left_action = IGNORE\n\
             disk_full_action = IGNORE\ndisk_error_action = IGNORE\nplugin_dir = {}\n",
            log.display(),
            conf_dir.join("plugins").display()
        );
        std::fs::write(conf_dir.join("auditd.conf"), conf).unwrap();
        let child = std::process::Command::new("auditd")
            .args(["-n", "-s", "nochange", "-c"])
            .arg(&conf_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting auditd");
        common::wait_until(|| registered_pid() == child.id());
        Auditd { child, log }
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
