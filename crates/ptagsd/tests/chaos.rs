//! No change without its record, under crashes: clients write tags and
//! set container IDs while the daemon is killed (SIGKILL) at random
//! moments and restarted. Afterwards the trail verifies, every task's
//! state in the kernel is what the last successful change the trail
//! records for it says (recovered outcomes included), and every change a
//! client was told succeeded is in the trail. `PTAGS_CHAOS_KILLS` sets the
//! number of crashes (15 here; `scripts/chaos` runs more).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::trail::read_trail;
use common::{can_run, cli_path, stdout, Daemon};

const CLIENTS: u64 = 3;

/// A change a client was told succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Done {
    Tag { pid: u32, tag: String },
    Contid { pid: u32, contid: u64 },
}

fn sleeper() -> Child {
    Command::new("sleep").arg("1000").spawn().unwrap()
}

/// A small random number (xorshift), seeded per client.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The successful changes the trail records: tags added per pid, and
/// each pid's container ID, in order.
fn trail_changes(trail: &str) -> (HashMap<u32, BTreeSet<String>>, HashMap<u32, u64>) {
    let mut tags: HashMap<u32, BTreeSet<String>> = HashMap::new();
    let mut contids = HashMap::new();
    for line in trail.lines() {
        let Some(record) = ptags_audit::chain::record_text(line) else {
            continue;
        };
        let Ok(entry) = ptags_audit::query::Entry::parse(&record) else {
            continue;
        };
        let f = |k| ptags_audit::field(entry.body, k);
        if f("res") != Some("success") || !matches!(entry.kind, "PTAGS_OP" | "CONTAINER_OP") {
            continue;
        }
        let Some(pid) = f("opid").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        match f("op") {
            Some("write") => {
                let text = ptags_audit::decode_untrusted(f("text").unwrap()).unwrap();
                let text = String::from_utf8(text).unwrap();
                tags.entry(pid).or_default().extend(
                    text.lines()
                        .filter_map(|l| l.strip_prefix('+'))
                        .map(str::to_owned),
                );
            }
            Some("set") => {
                let id = f("new-contid").or(f("contid")).unwrap().parse().unwrap();
                contids.insert(pid, id);
            }
            _ => {}
        }
    }
    (tags, contids)
}

#[test]
fn killed_at_random_the_daemon_leaves_no_change_without_its_record() {
    let test = "killed_at_random_the_daemon_leaves_no_change_without_its_record";
    if !can_run(test) {
        return;
    }
    let kills: u64 = std::env::var("PTAGS_CHAOS_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(15);
    // Processes for container changes, used once each.
    let spares_each = kills * 3 + 10;
    let d = Arc::new(Mutex::new(Daemon::start(
        "chaos",
        "[audit]\nkernel = false\n",
    )));
    let socket = d.lock().unwrap().socket();
    let targets: Vec<Child> = (0..4).map(|_| sleeper()).collect();
    let target_pids: Vec<u32> = targets.iter().map(Child::id).collect();
    let done = Arc::new(Mutex::new(Vec::new()));
    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut extra = Vec::new();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (done, issued, stop) = (Arc::clone(&done), Arc::clone(&issued), Arc::clone(&stop));
            let (socket, target_pids) = (socket.clone(), target_pids.clone());
            let spare = (0..spares_each).map(|_| sleeper()).collect::<Vec<_>>();
            let spare_pids: Vec<u32> = spare.iter().map(Child::id).collect();
            extra.extend(spare);
            std::thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (c + 1);
                let mut spare = spare_pids.into_iter();
                let run = |args: &[&str]| {
                    Command::new(cli_path())
                        .arg("--socket")
                        .arg(&socket)
                        .args(args)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                };
                while !stop.load(Ordering::Relaxed) {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if next(&mut rng) % 10 == 0 {
                        // A container change: a fresh process gets an ID.
                        let Some(pid) = spare.next() else { continue };
                        let contid = 50_000 + n;
                        if run(&["contid", "set", &pid.to_string(), &contid.to_string()]) {
                            done.lock().unwrap().push(Done::Contid { pid, contid });
                        }
                    } else {
                        let pid = target_pids[(next(&mut rng) % target_pids.len() as u64) as usize];
                        let tag = format!("c{c}n{n}");
                        if run(&["write", &pid.to_string(), &format!("+{tag}")]) {
                            done.lock().unwrap().push(Done::Tag { pid, tag });
                        }
                    }
                }
            })
        })
        .collect();
    // Kill the daemon at random moments while the clients work.
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(20 + next(&mut rng) % 180));
        let mut daemon = d.lock().unwrap();
        daemon.kill();
        daemon.restart();
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let mut daemon = d.lock().unwrap();
    // One more crash, then a start that settles what it left.
    daemon.kill();
    daemon.restart();
    let done = done.lock().unwrap().clone();
    let asked = issued.load(Ordering::Relaxed);
    eprintln!(
        "{test}: {asked} changes asked, {} told success, {kills} kills",
        done.len()
    );
    assert!(
        done.len() as u64 > kills,
        "too few changes succeeded to tell anything"
    );

    let trail = read_trail(&daemon.log_dir);
    let recovered = |res: &str| {
        trail
            .lines()
            .filter(|l| l.contains("recovered=yes") && l.contains(&format!(" res={res} ")))
            .count()
    };
    eprintln!(
        "{test}: recovered at restarts: {} made, {} not made, {} of tasks gone",
        recovered("success"),
        recovered("failed"),
        recovered("unknown")
    );
    let out = daemon.ptags(&[
        "audit",
        "verify",
        "--log-dir",
        daemon.log_dir.to_str().unwrap(),
        "--key",
        &daemon.key_file(),
    ]);
    assert!(out.status.success(), "the trail verifies: {}", stdout(&out));
    let (tags, contids) = trail_changes(&trail);
    // Every success told to a client is in the trail.
    for change in &done {
        match change {
            Done::Tag { pid, tag } => assert!(
                tags.get(pid).is_some_and(|t| t.contains(tag)),
                "{tag} on {pid} was told success and the trail lacks it"
            ),
            Done::Contid { pid, contid } => {
                assert_eq!(contids.get(pid), Some(contid), "process {pid}")
            }
        }
    }
    // The kernel holds what the trail says, no more, no less.
    for pid in &target_pids {
        let read = stdout(&daemon.ptags(&["read", &pid.to_string()]));
        let held: BTreeSet<String> = read.lines().map(str::to_owned).collect();
        let recorded = tags.get(pid).cloned().unwrap_or_default();
        assert_eq!(held, recorded, "process {pid}");
    }
    for (pid, contid) in &contids {
        let got = stdout(&daemon.ptags(&["contid", "get", &pid.to_string()]));
        assert_eq!(got.trim(), contid.to_string(), "process {pid}");
    }
    drop(daemon);
    for mut child in targets.into_iter().chain(extra) {
        let _ = child.kill();
        let _ = child.wait();
    }
}
