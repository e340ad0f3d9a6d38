//! `ptags audit search|report|verify` take log files as positional
//! arguments, as `ausearch -if` users expect, as well as with `-i`; the
//! answer is the same either way.

use std::process::Command;

const A: &str = "\
type=SYSCALL msg=audit(1795000000.001:1): arch=c000003e syscall=257 success=yes exit=3 ppid=1 pid=1001 auid=4294967295 uid=0 comm=\"cat\" exe=\"/usr/bin/cat\" key=\"k\"
type=CONTAINER_ID msg=audit(1795000000.001:1): contid=5,^100
type=SYSCALL msg=audit(1795000000.002:2): arch=c000003e syscall=257 success=yes exit=3 ppid=1 pid=1002 auid=4294967295 uid=0 comm=\"cat\" exe=\"/usr/bin/cat\" key=\"k\"
";
const B: &str = "\
type=SYSCALL msg=audit(1795000001.001:3): arch=c000003e syscall=257 success=yes exit=3 ppid=1 pid=1003 auid=4294967295 uid=0 comm=\"cat\" exe=\"/usr/bin/cat\" key=\"k\"
type=CONTAINER_ID msg=audit(1795000001.001:3): contid=5,^100
";

fn ptags(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ptags"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn files_are_named_positionally_or_with_i_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    std::fs::write(&a, A).unwrap();
    std::fs::write(&b, B).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let positional = ptags(&["audit", "search", "--contid", "5", a, b]);
    let with_i = ptags(&["audit", "search", "--contid", "5", "-i", a, "-i", b]);
    assert_eq!(positional, with_i);
    assert_eq!(positional.0, Some(0));
    // Events 1 and 3 are container 5's, from both files, in order.
    let events: Vec<&str> = positional
        .1
        .lines()
        .filter(|l| l.starts_with("type=SYSCALL"))
        .map(|l| l.split(" pid=").nth(1).unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(events, ["1001", "1003"]);
    // Mixed: -i first, then the positional ones.
    assert_eq!(
        ptags(&["audit", "search", "--contid", "5", "-i", a, b]),
        with_i
    );
    let (code, report) = ptags(&["audit", "report", a, b]);
    assert_eq!(code, Some(0));
    assert!(
        report.starts_with("3 events, 5 records, 1 containers"),
        "{report}"
    );
    // A file that is not there is an error naming it.
    let missing = dir.path().join("gone.log");
    let out = Command::new(env!("CARGO_BIN_EXE_ptags"))
        .args(["audit", "search", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gone.log"));
}

/// The index beside a rotated file is read only when the user searching
/// owns it and no one else may write it, and never through a link: an
/// index planted by someone else could hide blocks from the search.
#[test]
fn an_index_others_may_write_is_not_trusted() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log.1");
    std::fs::write(&log, format!("{A}{B}")).unwrap();
    let log = log.to_str().unwrap();
    let index = format!("{log}.ptags-idx");
    let search = || ptags(&["audit", "search", "--contid", "5", log]);
    let answer = search();
    assert_eq!(answer.0, Some(0));
    let built = std::fs::metadata(&index).expect("the search indexed the rotated file");
    assert_eq!(built.mode() & 0o022, 0, "no one else may write it");

    // Made writable by others: not read, written anew (a new file).
    std::fs::set_permissions(&index, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(search(), answer);
    let rewritten = std::fs::metadata(&index).unwrap();
    assert_ne!(
        rewritten.ino(),
        built.ino(),
        "the untrusted index was replaced"
    );
    assert_eq!(rewritten.mode() & 0o022, 0);

    // A link to another file: not followed, neither read nor written.
    std::fs::remove_file(&index).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "not an index").unwrap();
    std::os::unix::fs::symlink(&victim, &index).unwrap();
    assert_eq!(search(), answer);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not an index");
}
