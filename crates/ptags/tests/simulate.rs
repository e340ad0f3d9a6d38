//! `ptags simulate`, run as a real process.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn ptags(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ptags"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn lines_from_arguments() {
    let out = ptags(
        &[
            "simulate",
            "--admin",
            "+UMCM:ID",
            "!UMCM:ID=7",
            "+@UMCM:POD",
            "!UMCM:POD=web",
            "-@UMCM:POD",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "UMCM:ID=7\nUMCM:POD=web\n");
}

#[test]
fn lines_from_stdin_and_failure_report() {
    let out = ptags(&["simulate", "--admin"], b"+a\n!b=1\n+c\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "a\n");
    assert_eq!(text(&out.stderr), "ptags: line 2: ENOENT: no tag \"b\"\n");
}

#[test]
fn permissions_from_files() {
    let dir = std::env::temp_dir().join(format!("ptags-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let perms = dir.join("perms");
    std::fs::write(&perms, "ptags:UMCM:add\nptags:UMCM:others\n").unwrap();
    let perms = perms.to_str().unwrap();
    let out = ptags(
        &[
            "simulate",
            "--other",
            "--writer-tags",
            perms,
            "+UMCM:a",
            "+X:b",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "UMCM:a\n");
    assert!(
        text(&out.stderr).contains("line 2: EPERM"),
        "{}",
        text(&out.stderr)
    );
    let out = ptags(
        &[
            "simulate",
            "--other",
            "--no-access",
            "--writer-tags",
            perms,
            "+UMCM:a",
        ],
        b"",
    );
    assert!(text(&out.stderr).contains("line 1: EPERM"));

    let bad = dir.join("bad");
    std::fs::write(&bad, "ok\n@@x\n").unwrap();
    let out = ptags(&["simulate", "--tags", bad.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("line 2: a tag name must not start with '@'"));
    std::fs::remove_dir_all(&dir).unwrap();
}
