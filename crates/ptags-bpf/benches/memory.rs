//! Kernel memory per labelled task: N sleeping processes, unlabelled, then
//! each given a tag set and a container ID (one task-storage element
//! each), with the kernel's slab accounting (/proc/meminfo `Slab`, and the
//! objects of every slab cache, from /proc/slabinfo) read before the
//! processes exist, with them unlabelled, and with them labelled: what a
//! label adds, set beside what the kernel spends on a task anyway.
//!
//!     sudo cargo bench -p ptags-bpf --bench memory [-- TASKS]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

use ptags_bpf::{ContainerEntry, Kernel, Options, SetOp, TaskId};

/// Bytes in use per slab cache (active objects × object size).
fn slabs() -> HashMap<String, i64> {
    let text = std::fs::read_to_string("/proc/slabinfo").expect("reading /proc/slabinfo (root)");
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let active: i64 = f.get(1)?.parse().ok()?;
            let size: i64 = f.get(3)?.parse().ok()?;
            Some((f[0].to_owned(), active * size))
        })
        .collect()
}

fn slab_kib() -> i64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Lets freed slab objects settle (RCU-freed storage of earlier tasks).
fn settle() {
    std::thread::sleep(std::time::Duration::from_secs(2));
}

fn main() {
    let tasks: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    if let Err(e) = Kernel::open(&Options::default()).map(drop) {
        assert!(
            std::env::var("PTAGS_REQUIRE_BPF").is_err(),
            "BPF is required: {e:#}"
        );
        eprintln!("SKIPPED memory benchmark: {e:#} (run as root with BPF)");
        return;
    }
    let k = Kernel::open(&Options::default()).unwrap();
    settle();
    let none_kib = slab_kib();
    let mut children: Vec<Child> = (0..tasks)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawning sleep")
        })
        .collect();
    // Named first: reading /proc fills the kernel's proc inode and
    // dentry caches, which are not the labels' cost.
    let ids: Vec<TaskId> = children
        .iter()
        .map(|c| TaskId::of(c.id()).unwrap())
        .collect();
    for id in &ids {
        assert_eq!(TaskId::of(id.tid).unwrap(), *id);
    }
    settle();
    let (before, before_kib) = (slabs(), slab_kib());
    let me = TaskId::of(std::process::id()).unwrap();
    let entry = ContainerEntry {
        parent: None,
        owner_pid: me.tid,
        owner_start_ticks: me.start_ticks,
        live: 0,
        pending: 0,
    };
    for id in &ids {
        let op = SetOp {
            tags: Some((7, 7)),
            contid: Some((9090, Some(entry))),
            ..Default::default()
        };
        k.set(*id, &op).expect("labelling");
    }
    settle();
    let (after, after_kib) = (slabs(), slab_kib());
    let mut grown: Vec<(String, i64)> = after
        .iter()
        .map(|(name, bytes)| (name.clone(), bytes - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    grown.sort_by_key(|(_, d)| -d);
    println!("{tasks} sleeping processes, then each labelled (tag set and container ID)");
    println!(
        "Slab (/proc/meminfo): {none_kib} KiB -> {before_kib} KiB: {:.0} bytes per unlabelled task (the kernel's own)",
        (before_kib - none_kib) as f64 * 1024.0 / tasks as f64
    );
    println!(
        "Slab (/proc/meminfo): {before_kib} KiB -> {after_kib} KiB: {:.0} bytes per labelled task",
        (after_kib - before_kib) as f64 * 1024.0 / tasks as f64
    );
    println!("slab caches that grew the most:");
    for (name, d) in grown.iter().take(5) {
        println!(
            "  {name:<24} +{d} bytes ({:.0} per task)",
            *d as f64 / tasks as f64
        );
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
