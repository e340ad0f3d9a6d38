//! ptagsd as the kernel's audit daemon: with no auditd registered, it
//! registers, receives records by unicast (the kernel no longer prints
//! them), and gives the registration up when it stops. A test binary of
//! its own, so that no other test daemon registers meanwhile.

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
}
