//! The daemon as a service: hostile messages, connection limits,
//! restarts with every tag and ID intact, collection, configuration.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{can_run, stderr, stdout, Daemon};

/// Reads one answer frame and returns its JSON.
fn answer(s: &mut UnixStream) -> serde_json::Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn errno(v: &serde_json::Value) -> &str {
    v["error"]["errno"].as_str().unwrap_or("none")
}

const STATUS: &[u8] = br#"{"v":1,"req":{"op":"status"}}"#;

#[test]
fn hostile_messages_are_answered_and_others_still_served() {
    if !can_run("hostile_messages_are_answered_and_others_still_served") {
        return;
    }
    let d = Daemon::start(
        "hostile",
        "[limits]\nrequest_timeout_secs = 1\nmax_connections = 4\nprivileged_connections = 1\n",
    );
    let connect = || UnixStream::connect(d.socket()).unwrap();
    // Malformed JSON, an unknown op, a forged caller field, a bad pid:
    // answered, and the connection goes on.
    let mut s = connect();
    for (body, want) in [
        (&b"{not json"[..], "EPROTO"),
        (br#"{"v":1,"req":{"op":"format_disk"}}"#, "EPROTO"),
        (br#"{"v":1,"req":{"op":"status","as_uid":0}}"#, "EPROTO"),
        (br#"{"v":9,"req":{"op":"status"}}"#, "EPROTO"),
        (
            br#"{"v":1,"req":{"op":"read","target":{"pid":0}}}"#,
            "EINVAL",
        ),
        (
            br#"{"v":1,"req":{"op":"read","target":{"pid":4000000}}}"#,
            "ESRCH",
        ),
        (&[0xff, 0xfe][..], "EPROTO"),
    ] {
        s.write_all(&frame(body)).unwrap();
        assert_eq!(
            errno(&answer(&mut s)),
            want,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    s.write_all(&frame(STATUS)).unwrap();
    assert_eq!(answer(&mut s)["ok"]["kind"], "status");
    // Oversized: refused before it is read, and the connection closed.
    let mut s = connect();
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(errno(&answer(&mut s)), "E2BIG");
    assert_eq!(s.read(&mut [0; 1]).unwrap(), 0, "closed after E2BIG");
    // Truncated: the sender gives up half way.
    let mut s = connect();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"{\"v\":1,").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(errno(&answer(&mut s)), "EPROTO");
    // A slow sender holds its own connection only: others are served
    // meanwhile, and it is cut off after the timeout.
    let mut slow = connect();
    slow.write_all(&100u32.to_be_bytes()).unwrap();
    let started = Instant::now();
    assert!(d.ptags(&["status"]).status.success());
    assert_eq!(errno(&answer(&mut slow)), "EPROTO");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(slow.read(&mut [0; 1]).unwrap(), 0, "closed after EPROTO");
    // Over the connection limit: EAGAIN at once, and service resumes
    // when connections close. (The connections above give their slots
    // back as their threads end, a moment after they close.)
    std::thread::sleep(Duration::from_millis(200));
    let idle: Vec<UnixStream> = (0..4).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = connect();
    assert_eq!(errno(&answer(&mut extra)), "EAGAIN");
    drop(idle);
    common::wait_until(|| d.ptags(&["status"]).status.success());
    let status = d.ptags(&["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["requests_malformed"].as_u64().unwrap() >= 7,
        "{status}"
    );
}

#[test]
fn a_restart_keeps_every_tag_and_id() {
    if !can_run("a_restart_keeps_every_tag_and_id") {
        return;
    }
    let mut d = Daemon::start("restart", "");
    let mut kept = Command::new("sleep").arg("60").spawn().unwrap();
    let mut gone = Command::new("sleep").arg("60").spawn().unwrap();
    let (k, g) = (kept.id().to_string(), gone.id().to_string());
    assert!(d
        .ptags(&["write", &k, "+@a", "!a=1", "+b", "+UMCM:x", "!UMCM:x=y"])
        .status
        .success());
    assert!(d.ptags(&["contid", "set", &k, "77"]).status.success());
    assert!(d.ptags(&["write", &g, "+only-here"]).status.success());
    gone.kill().unwrap();
    gone.wait().unwrap();
    d.restart();
    let read = d.ptags(&["read", &k]);
    assert_eq!(stdout(&read), "UMCM:x=y\n@a=1\nb\n", "{}", stderr(&read));
    assert_eq!(stdout(&d.ptags(&["contid", "get", &k])), "77\n");
    let ps = stdout(&d.ptags(&["ps", "--tag", "UMCM:*"]));
    assert!(ps.contains(&format!("{k} ")) && ps.contains(" 77 "), "{ps}");
    let status: serde_json::Value =
        serde_json::from_slice(&d.ptags(&["--json", "status"]).stdout).unwrap();
    assert_eq!(status["containers"][0]["contid"], 77, "{status}");
    assert_eq!(status["containers"][0]["live"], 1, "{status}");
    // The set only the exited process used was collected at start-up.
    assert_eq!(status["sets_collected"], 1, "{status}\n{}", d.log());
    // The container still ends when its last task exits.
    kept.kill().unwrap();
    kept.wait().unwrap();
    common::wait_until(|| d.log().contains("container 77 dropped"));
}

#[test]
fn configuration_is_checked() {
    let bin = env!("CARGO_BIN_EXE_ptagsd");
    let out = Command::new(bin)
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(stdout(&out).contains("socket = \"/run/ptags/ptagsd.sock\""));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_depth = 0\n").unwrap();
    let out = Command::new(bin)
        .args(["--check-config", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("limits.max_depth must be at least 1"),
        "{}",
        stderr(&out)
    );
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "state_dir = \"/srv/ptags\"\n").unwrap();
    let out = Command::new(bin)
        .args(["--check-config", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("state_dir = \"/srv/ptags\""));
    assert!(stdout(&out).contains("max_containers = 65536"));
}
