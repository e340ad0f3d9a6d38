//! The trail's files: rotation by size and count, both formats in one
//! trail, and each thing the daemon can be told to do when space runs
//! short (on small tmpfs file systems, mounted by the test and
//! unmounted when it ends).

mod common;

use common::trail::{disk_losses_reported, log_files, read_trail, wait_for_trail, Tmpfs};
use std::process::Command;

use common::{can_run, stdout, test_user, wait_until, Daemon};

/// Config for a daemon writing into `dir`, with exec and exit records.
fn config(dir: &std::path::Path, audit: &str) -> String {
    format!("log_dir = {dir:?}\n[audit]\nkernel = false\nprocess_records = true\n{audit}\n")
}

/// `n` execs in container `contid`: two records each (exec and exit),
/// about 500 bytes.
fn execs(d: &Daemon, contid: u64, n: usize) {
    d.sh(&format!(
        "ptags run --contid {contid} -- sh -c 'i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done'"
    ));
}

/// A tag write recorded after everything before it.
fn mark(d: &Daemon, tag: &str) {
    let out = d.sh(&format!(
        "sleep 30 & ptags write $! +{tag} >/dev/null; kill $!"
    ));
    assert!(!out.contains("error"), "{out}");
}

/// How `ptags audit` writes a tag: hex of `+TAG`.
fn hex_of_mark(tag: &str) -> String {
    format!("+{tag}")
        .bytes()
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn writing(d: &Daemon) -> bool {
    stdout(&d.ptags(&["status"])).contains("(writing)")
}

#[test]
fn rotation_keeps_num_logs_files_that_verify_as_one_trail() {
    if !can_run("rotation_keeps_num_logs_files") {
        return;
    }
    let mut d = Daemon::start(
        "trail-rotate",
        "[audit]\nkernel = false\nprocess_records = true\nmax_log_file_mib = 1\nnum_logs = 3\n",
    );
    // More than 3 MiB: the oldest file is deleted at least once.
    execs(&d, 8181, 8000);
    mark(&d, "rotated");
    d.stop();
    let files = log_files(&d.log_dir);
    assert_eq!(files.len(), 3, "{files:?}");
    for (i, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f).unwrap();
        let len = text.len() as u64;
        assert!(len <= 1 << 20, "{} has {len} bytes", f.display());
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("type=PTAGS_LOG"),
            "{}: {first}",
            f.display()
        );
        if i < 2 {
            // Full ones: the next batch would not have fit.
            assert!(
                len > (1 << 20) - 64 * 1024,
                "{} has {len} bytes",
                f.display()
            );
            assert!(first.contains("op=rotate"), "{}: {first}", f.display());
        }
    }
    let text = read_trail(&d.log_dir);
    assert!(text.contains(&hex_of_mark("rotated")));
    let (ok, out) = d.verify_dir(&d.log_dir);
    assert!(ok, "{out}");
    // The first file starts where the deleted one ended.
    assert!(
        !text.lines().next().unwrap().contains("prev-seq=0 "),
        "nothing was deleted"
    );
}

#[test]
fn a_trail_can_switch_between_text_and_json() {
    if !can_run("a_trail_can_switch_between_text_and_json") {
        return;
    }
    let mut d = Daemon::start("trail-json", "[audit]\nkernel = false\nformat = \"json\"\n");
    d.sh("ptags run --contid 9191 -- true");
    mark(&d, "in:json");
    d.stop();
    let json = read_trail(&d.log_dir);
    for line in json.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["seq"].is_u64() && v["mac"].is_string() && v["text"].is_string(),
            "{line}"
        );
    }
    let set = json
        .lines()
        .find(|l| l.contains("\"type\":\"CONTAINER_OP\"") && l.contains("op=set"))
        .unwrap_or_else(|| panic!("{json}"));
    let v: serde_json::Value = serde_json::from_str(set).unwrap();
    assert_eq!(v["fields"]["contid"], "9191", "{set}");
    assert!(v["serial"].as_u64().unwrap() >= 1 << 32, "{set}");

    // The same trail goes on in text after a restart, and reads as one.
    d.restart_with("[audit]\nkernel = false\nformat = \"audit\"\n");
    d.sh("ptags run --contid 9191 -- true");
    d.stop();
    let text = read_trail(&d.log_dir);
    assert!(text.lines().last().unwrap().starts_with("type="), "{text}");
    let (ok, out) = d.verify_dir(&d.log_dir);
    assert!(ok, "{out}");
    let dir = d.log_dir.display().to_string();
    let found = stdout(&d.ptags(&[
        "audit",
        "search",
        "--log-dir",
        &dir,
        "--contid",
        "9191",
        "--type",
        "CONTAINER_OP",
    ]));
    assert_eq!(
        found.matches("op=set").count(),
        2,
        "one from each format:\n{found}"
    );
    assert_eq!(found.matches("op=drop").count(), 2, "{found}");
}

#[test]
fn a_full_disk_suspends_counts_and_resumes() {
    if !can_run("a_full_disk_suspends") {
        return;
    }
    let tmpfs = Tmpfs::mount("256k");
    let d = Daemon::start(
        "trail-suspend",
        &config(
            tmpfs.path(),
            "space_left_mib = 0\ndisk_full_action = \"suspend\"\nflush = \"none\"",
        ),
    );
    // Far more than 256 KiB.
    execs(&d, 6161, 3000);
    wait_until(|| d.audit_counter("lost_disk") > 0);
    assert!(stdout(&d.ptags(&["status"])).contains("SUSPENDED"));
    // No change is made that the trail cannot hold: a write is refused
    // (EIO) and the process keeps its tags.
    let out = d.sh(
        "sleep 30 & P=$!; ptags write $P '+written-while-full' 2>&1; echo rc=$?; ptags read $P; kill $P",
    );
    assert!(out.contains("EIO") && out.contains("rc=1"), "{out}");
    assert!(!out.contains("written-while-full\n"), "{out}");
    let lost_before = d.audit_counter("lost_disk");
    // Space is back: writing resumes, and the first record says what was lost.
    tmpfs.resize("16m");
    wait_until(|| writing(&d));
    mark(&d, "after:full");
    wait_for_trail(&d, "the mark", |t| t.contains(&hex_of_mark("after:full")));
    let lost = d.audit_counter("lost_disk");
    assert!(lost >= lost_before);
    let text = read_trail(tmpfs.path());
    assert_eq!(
        disk_losses_reported(&text),
        lost,
        "every lost record is counted in the log"
    );
    let (ok, out) = d.verify_dir(tmpfs.path());
    assert!(ok, "{out}");
}

#[test]
fn a_full_disk_stops_the_daemon_when_told() {
    if !can_run("a_full_disk_stops_the_daemon") {
        return;
    }
    let tmpfs = Tmpfs::mount("256k");
    let mut d = Daemon::start(
        "trail-stop",
        &config(
            tmpfs.path(),
            "space_left_mib = 0\ndisk_full_action = \"stop\"",
        ),
    );
    // Root writes a tag after tag to a process while the execs fill the
    // disk, until the daemon is gone; each answer is kept.
    let sleeper = Command::new("sleep").arg("120").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let answers = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut answers = Vec::new();
            for i in 0.. {
                let out = d.ptags(&["write", &pid, &format!("+w{i}")]);
                let said = common::stderr(&out);
                if said.contains("cannot reach") || i > 20_000 {
                    break;
                }
                answers.push((i, out.status.success(), said));
            }
            answers
        });
        execs(&d, 6262, 3000);
        writer.join().unwrap()
    });
    let status = d.wait_exit();
    assert!(!status.success(), "{status}");
    assert!(d.log().contains("disk_full_action is stop"), "{}", d.log());
    // What was written is whole: no torn line, no gap.
    let (ok, out) = d.verify_dir(tmpfs.path());
    assert!(ok, "{out}");
    // Each write told success was made, and none told otherwise (the
    // daemon stopping, the trail refusing its intent) was. A write made
    // and then told "try again" would be asked for twice.
    tmpfs.resize("4m");
    d.restart();
    let tags = stdout(&d.ptags(&["read", &pid]));
    let made = |i: u32| tags.lines().any(|l| l == format!("w{i}"));
    let told_ok = answers.iter().filter(|a| a.1).count();
    eprintln!(
        "a_full_disk_stops: {} writes answered, {told_ok} success; the last: {:?}",
        answers.len(),
        answers.last()
    );
    assert!(told_ok > 0, "no write succeeded: {answers:?}");
    for (i, ok, said) in &answers {
        assert_eq!(
            made(*i),
            *ok,
            "write {i}, answered {ok} {said:?}; tags:\n{tags}"
        );
    }
    let mut sleeper = sleeper;
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn a_full_disk_rotates_away_the_oldest_files_when_told() {
    if !can_run("a_full_disk_rotates") {
        return;
    }
    // Room for one full 1 MiB file and half of the next.
    let tmpfs = Tmpfs::mount("1536k");
    let d = Daemon::start(
        "trail-full-rotate",
        &config(
            tmpfs.path(),
            "space_left_mib = 0\ndisk_full_action = \"rotate\"\nmax_log_file_mib = 1\nnum_logs = 3",
        ),
    );
    execs(&d, 6363, 8000);
    mark(&d, "after:rotate");
    wait_for_trail(&d, "the mark", |t| t.contains(&hex_of_mark("after:rotate")));
    assert!(d.log().contains("space is short"), "{}", d.log());
    assert!(writing(&d));
    assert_eq!(
        d.audit_counter("lost_disk"),
        0,
        "a deleted file made room each time"
    );
    let text = read_trail(tmpfs.path());
    let (ok, out) = d.verify_dir(tmpfs.path());
    assert!(ok, "{out}");
    assert!(text.contains("op=rotate"), "{text}");
}

#[test]
fn space_left_suspends_before_the_disk_is_full() {
    if !can_run("space_left_suspends") {
        return;
    }
    // Suspended with 4 MiB still free; were the disk to fill, the daemon
    // would stop and the test fail.
    let tmpfs = Tmpfs::mount("6m");
    let d = Daemon::start(
        "trail-space-left",
        &config(
            tmpfs.path(),
            "space_left_mib = 4\nspace_left_action = \"suspend\"\ndisk_full_action = \"stop\"",
        ),
    );
    execs(&d, 6464, 6000);
    wait_until(|| !writing(&d));
    assert!(d.log().contains("writing suspended"), "{}", d.log());
    // The check runs once a second: the flood may have ended by then.
    // What comes while suspended is counted, not written.
    execs(&d, 6565, 100);
    let lost = d.audit_counter("lost_disk");
    assert!(lost > 0, "the rest of the execs were not written");
    tmpfs.resize("64m");
    wait_until(|| writing(&d));
    mark(&d, "after:space-left");
    wait_for_trail(&d, "the mark", |t| {
        t.contains(&hex_of_mark("after:space-left"))
    });
    let text = read_trail(tmpfs.path());
    assert!(text.contains("source=disk reason=suspended"), "{text}");
    assert_eq!(disk_losses_reported(&text), d.audit_counter("lost_disk"));
    let (ok, out) = d.verify_dir(tmpfs.path());
    assert!(ok, "{out}");
}

#[test]
fn verify_tells_what_rotation_removed_and_finds_an_unrecorded_deletion() {
    if !can_run("verify_tells_what_rotation_removed") {
        return;
    }
    let mut d = Daemon::start(
        "trail-removed",
        "[audit]\nkernel = false\nprocess_records = true\nmax_log_file_mib = 1\nnum_logs = 3\n",
    );
    // More than 4 MiB: two files or more are deleted.
    execs(&d, 8282, 10000);
    d.stop();
    let text = read_trail(&d.log_dir);
    assert!(text.contains("type=PTAGS_ROTATE "), "no rotation record");
    let (ok, out) = d.verify_dir(&d.log_dir);
    assert!(
        ok && out.starts_with("intact") && out.contains("were removed by rotation, as recorded at"),
        "{out}"
    );
    // The oldest file's removal is exactly what its successor continues.
    let files = log_files(&d.log_dir);
    let first = std::fs::read_to_string(&files[0]).unwrap();
    let prev = first.split(" prev-seq=").nth(1).unwrap();
    let prev = prev.split(' ').next().unwrap();
    assert!(
        out.contains(&format!("–{prev} (")),
        "records up to {prev}: {out}"
    );

    // An oldest file deleted by someone else: no record says so.
    std::fs::remove_file(&files[0]).unwrap();
    let (ok, out) = d.verify_dir(&d.log_dir);
    assert!(
        !ok && out.contains("no rotation record says they were removed"),
        "{out}"
    );
}

#[test]
fn a_flood_of_refused_writes_is_limited_and_rotates_nothing_away() {
    if !can_run("a_flood_of_refused_writes") {
        return;
    }
    let uid = test_user();
    let d = Daemon::start(
        "trail-flood",
        // The refusals' own limit is tested, not the change rate's.
        "[audit]\nkernel = false\nmax_log_file_mib = 1\nnum_logs = 2\n[limits]\nchanges_per_sec_per_uid = 0\n",
    );
    mark(&d, "before:flood");
    // As the report: `+a` and 66 KB of comments, refused (the
    // user may not write to pid 1), 400 times.
    let text = format!("+a\n{}", format!("#{}\n", "x".repeat(98)).repeat(660));
    std::fs::write(d.dir.path().join("flood.txt"), &text).unwrap();
    let out = d.sh_as(
        "i=0; while [ $i -lt 400 ]; do ptags write 1 <flood.txt >/dev/null 2>&1; i=$((i+1)); done",
        Some(uid),
    );
    assert_eq!(out, "--stderr--\n");
    let refused = |t: &str| {
        t.lines()
            .filter(|l| {
                l.starts_with("type=PTAGS_OP")
                    && l.contains(&format!(" uid={uid} "))
                    && l.contains("res=failed")
            })
            .count() as u64
    };
    let suppressed = |t: &str| -> u64 {
        t.lines()
            .filter(|l| {
                l.starts_with("type=PTAGS_SUPPRESSED") && l.contains(&format!("uid={uid} "))
            })
            .map(|l| {
                let n = l.split(" suppressed=").nth(1).unwrap();
                n.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum()
    };
    // Every refusal is either recorded or counted (the count is written
    // within a second).
    wait_for_trail(&d, "every refusal recorded or counted", |t| {
        refused(t) + suppressed(t) == 400
    });
    let trail = read_trail(&d.log_dir);
    let (recorded, counted) = (refused(&trail), suppressed(&trail));
    assert!(
        recorded >= 20 && counted > 0,
        "{recorded} recorded, {counted} counted"
    );
    assert_eq!(d.audit_counter("suppressed_refusals"), counted);
    // The records carry a prefix of the text, its length and digest.
    assert!(trail.contains(&format!("text-len={}", text.len())));
    // Nothing was rotated away: the root's write before the flood is there.
    assert!(trail.contains(&hex_of_mark("before:flood")));
    assert!(!d.log_dir.join("audit.log.1").exists(), "rotated");
    let (ok, out) = d.verify_dir(&d.log_dir);
    assert!(ok, "{out}");
}
