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
        .write_all(state.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const STATE: &str =
    r#"{"ociVersion":"1.2.0","id":"web","status":"creating","pid":4242,"bundle":"/b"}"#;

#[test]
fn bad_input_fails_with_the_reason() {
    let with_annotation = |k: &str, v: &str| {
        STATE.replace(
            r#""bundle":"/b""#,
            &format!(r#""bundle":"/b","annotations":{{"{k}":{v:?}}}"#),
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
