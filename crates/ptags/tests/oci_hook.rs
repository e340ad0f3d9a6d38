//! `ptags oci-hook` refuses bad input before it asks the daemon, with a
//! message a runtime can show, and fails when the daemon cannot be
//! reached (a hook that fails stops the container's creation).

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs the hook on `state` against a socket nobody listens on: its exit
/// code and what it said.
fn hook(args: &[&str], state: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ptags"))
        .arg("oci-hook")
        .args(args)
        .env("PTAGS_SOCKET", dir.path().join("none.sock"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(state.replace("BUNDLE", BUNDLE).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A bundle whose config.json gives a device list.
const BUNDLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bundle");

const STATE: &str =
    r#"{"ociVersion":"1.2.0","id":"web","status":"creating","pid":4242,"bundle":"BUNDLE"}"#;

#[test]
fn bad_input_fails_with_the_reason() {
    let with_annotation = |k: &str, v: &str| {
        STATE.replace(
            r#""bundle":"BUNDLE""#,
            &format!(r#""bundle":"BUNDLE","annotations":{{"{k}":{v:?}}}"#),
        )
    };
    let cases = [
        (vec![], "{".to_owned(), "not valid JSON"),
        (
            vec![],
            STATE.replace("creating", "running"),
            "give the stage",
        ),
        (
            vec!["--stage", "createContainer"],
            STATE.to_owned(),
            "unknown hook stage",
        ),
        (vec![], STATE.replace(r#""pid":4242,"#, ""), "no valid pid"),
        (
            vec![],
            with_annotation("io.ptags.contid", "-1"),
            "annotation io.ptags.contid",
        ),
        (
            vec![],
            with_annotation("io.ptags.contid", "seven"),
            "annotation io.ptags.contid",
        ),
        (
            vec![],
            with_annotation("io.ptags.tags", "+@ok\n%bad"),
            "io.ptags.tags, line 2",
        ),
        (
            vec![],
            with_annotation("io.ptags.devices", "yes"),
            "io.ptags.devices: \"yes\" is neither runtime nor off",
        ),
        (
            vec![],
            STATE.replace("BUNDLE", "/nonexistent"),
            "its device list: opening /nonexistent/config.json",
        ),
        (
            vec![],
            STATE.replace("BUNDLE", "relative"),
            "is not an absolute path",
        ),
    ];
    for (args, state, why) in cases {
        let (code, said) = hook(&args, &state);
        assert_eq!(code, 2, "{state}: {said}");
        assert!(said.contains(why), "{state}: expected {why:?}, got {said}");
    }
}

#[test]
fn an_unreachable_daemon_fails_the_hook() {
    for state in [STATE.to_owned(), STATE.replace("creating", "stopped")] {
        let (code, said) = hook(&[], &state);
        assert_eq!(code, 2, "{said}");
        assert!(said.contains("cannot reach ptagsd"), "{said}");
    }
}

#[test]
fn an_audit_policy_is_checked_and_read_only_from_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("bad"), "secret-first-line\n").unwrap();
    std::fs::write(dir.path().join("outside"), "events exec\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), policies.join("link")).unwrap();
    let fifo = policies.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let state = |v: &str| {
        STATE.replace(
            r#""bundle":"BUNDLE""#,
            &format!(r#""bundle":"BUNDLE","annotations":{{"io.ptags.audit":{v:?}}}"#),
        )
    };
    let dir_arg = policies.to_str().unwrap();
    let not_in = format!("is not a policy file in {}", policies.display());
    let cases = [
        (
            "include type=SYSCALL\nbogus".to_owned(),
            "line 2: unknown statement",
        ),
        ("/etc/shadow".to_owned(), not_in.as_str()),
        (policies.join("link").display().to_string(), not_in.as_str()),
        (fifo.display().to_string(), not_in.as_str()),
        (format!("{dir_arg}/../outside"), not_in.as_str()),
        (
            policies.join("bad").display().to_string(),
            "line 1 is not a valid policy",
        ),
    ];
    for (value, why) in cases {
        let (code, said) = hook(&["--policy-dir", dir_arg], &state(&value));
        assert_eq!(code, 2, "{value}: {said}");
        assert!(said.contains(why), "{value}: expected {why:?}, got {said}");
        assert!(
            !said.contains("secret") && !said.contains("root:"),
            "{said}"
        );
    }
    // A good one passes the check, and the hook goes on to the daemon.
    std::fs::write(policies.join("good"), "events exec\n").unwrap();
    let (code, said) = hook(
        &["--policy-dir", dir_arg, "--wait", "0"],
        &state(policies.join("good").to_str().unwrap()),
    );
    assert_eq!(code, 2);
    assert!(said.contains("cannot reach ptagsd"), "{said}");
}
