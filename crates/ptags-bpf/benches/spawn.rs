//! Cost of the kernel programs on spawn: fork+exec+exit of /bin/true, with
//! the programs attached and a tagged, contained parent, against nothing
//! attached, in one run, rounds interleaved so that drift hits both; and
//! on any system call (getppid), whose exit the setns program sees while
//! a container has a setns policy (the "with" rounds have one).
//!
//!     sudo cargo bench -p ptags-bpf --bench spawn [-- ROUNDS SPAWNS]

use std::process::Command;
use std::time::{Duration, Instant};

use ptags_bpf::{Join, Kernel, Options, SetOp, TaskId};

fn spawn_many(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let status = Command::new("/bin/true")
            .status()
            .expect("spawning /bin/true");
        assert!(status.success());
    }
    start.elapsed()
}

/// Plain system calls: with the programs attached each exit runs the
/// setns program, which returns at once for anything but setns.
fn syscalls_many(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    start.elapsed()
}

const SYSCALLS: usize = 1_000_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    // `cargo test --all-targets` runs this without --bench: a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = args.first().copied().unwrap_or(if full { 7 } else { 1 });
    let spawns = args.get(1).copied().unwrap_or(if full { 2000 } else { 50 });
    // SAFETY: geteuid and gettid have no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("PTAGS_REQUIRE_BPF").as_deref() != Ok("1"),
            "the spawn benchmark needs root to load BPF programs (PTAGS_REQUIRE_BPF=1)"
        );
        eprintln!("SKIPPED spawn benchmark: needs root to load BPF programs");
        return;
    }
    // SAFETY: as above.
    let me = TaskId::of(unsafe { libc::gettid() } as u32).unwrap();
    spawn_many(spawns / 4); // warm up caches and the page cache
                            // Per state (nothing attached; the programs with no setns policy;
                            // with a policy): spawn times, then system-call times.
    let mut spawn: [Vec<Duration>; 3] = Default::default();
    let mut calls: [Vec<Duration>; 3] = Default::default();
    let n_calls = if full { SYSCALLS } else { SYSCALLS / 100 };
    for _ in 0..rounds {
        spawn[0].push(spawn_many(spawns));
        calls[0].push(syscalls_many(n_calls));
        let k = Kernel::open(&Options::default()).expect("loading the programs");
        k.set(
            me,
            &SetOp {
                tags: Some((7, 3)),
                contid: Some((99, None)),
                ..Default::default()
            },
        )
        .unwrap();
        spawn[1].push(spawn_many(spawns));
        calls[1].push(syscalls_many(n_calls));
        // A policy for a namespace no task is in: the setns program is
        // attached, and returns early for every other system call.
        let policy = Join {
            contid: 99,
            set_id: 7,
            kept_id: 3,
        };
        k.set_join(1, &policy).unwrap();
        spawn[2].push(spawn_many(spawns));
        calls[2].push(syscalls_many(n_calls));
        assert_eq!(k.lost().unwrap(), Default::default());
        drop(k);
    }
    let [s0, s1, s2] = spawn.map(median);
    let [c0, c1, c2] = calls.map(median);
    println!("{rounds} rounds, medians; the caller is tagged and in a container");
    report("spawn /bin/true", spawns, "µs", 1e6, [s0, s1, s2]);
    report("getppid()", n_calls, "ns", 1e9, [c0, c1, c2]);
}

/// One line per state, each with its ratio to nothing attached.
fn report(what: &str, n: usize, unit: &str, scale: f64, times: [Duration; 3]) {
    let per = |d: Duration| d.as_secs_f64() * scale / n as f64;
    println!("{what}, {n} per round:");
    for (name, t) in [
        "nothing attached",
        "attached, no setns policy",
        "attached, a setns policy",
    ]
    .into_iter()
    .zip(times)
    {
        let ratio = t.as_secs_f64() / times[0].as_secs_f64();
        println!(
            "  {name:<27} {:9.2} {unit} each  ({:+.2}%)",
            per(t),
            (ratio - 1.0) * 100.0
        );
    }
}
