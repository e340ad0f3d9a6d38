//! Cost of the kernel programs on spawn: fork+exec+exit of /bin/true, with
//! the programs attached and a tagged, contained parent, against nothing
//! attached, in one run, rounds interleaved so that drift hits both; and
//! on any system call (getppid), which no program sees, with or without a
//! setns policy (the last state has one: fork and exec look it up). The third
//! state watches the namespaces of tasks in containers (namespace
//! records on, as by default): every spawn of the contained caller reads
//! and compares its child's namespaces at fork, exec and exit.
//!
//! This VM's speed drifts by more than these costs from one minute to
//! the next, so the kernel's own accounting of the programs' run time
//! (BPF_STATS_RUN_TIME) is read too: the time the fork, exec and exit
//! programs took per spawn, which no drift touches.
//!
//!     sudo cargo bench -p ptags-bpf --bench spawn [-- ROUNDS SPAWNS]

use std::process::Command;
use std::time::{Duration, Instant};

use ptags_bpf::{Join, Kernel, NsWatch, Options, SetOp, TaskId};

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

/// Plain system calls: no program runs on them, policy or not (issue 21;
/// a program at sys_exit once made them 24% slower).
fn syscalls_many(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    start.elapsed()
}

const SYSCALLS: usize = 1_000_000;

/// The states measured, as [`measure`] numbers them.
const STATES: [&str; 4] = [
    "nothing attached",
    "attached, no setns policy",
    "+ namespace records",
    "+ a setns policy",
];

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
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
    // Warms up caches and the page cache.
    spawn_many(spawns / 4);
    // Per state: spawn times, then system-call times. The states take
    // turns in a rotating order (each round starts one later), so that a
    // drift of this machine's speed within a round hits each alike.
    let mut spawn: [Vec<Duration>; 4] = Default::default();
    let mut calls: [Vec<Duration>; 4] = Default::default();
    let mut in_bpf: [Vec<f64>; 4] = Default::default();
    // SAFETY: plain bpf(BPF_ENABLE_STATS); stats stay on while the fd is open.
    let stats = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    assert!(stats >= 0, "enabling BPF run-time stats");
    let n_calls = if full { SYSCALLS } else { SYSCALLS / 100 };
    for round in 0..rounds {
        for step in 0..4 {
            let state = (step + round) % 4;
            let (s, c, b) = measure(state, me, spawns, n_calls);
            spawn[state].push(s);
            calls[state].push(c);
            in_bpf[state].push(b);
        }
    }
    println!("{rounds} rounds, medians; the caller is tagged and in a container");
    report("spawn /bin/true", spawns, "µs", 1e6, &spawn);
    report("getppid()", n_calls, "ns", 1e9, &calls);
    println!("time in the fork, exec and exit programs per spawn (BPF_STATS_RUN_TIME):");
    for (name, v) in STATES.into_iter().zip(&in_bpf).skip(1) {
        println!("  {name:<27} {:9.0} ns", median(v.clone()));
    }
    // SAFETY: the fd bpf_enable_stats returned.
    unsafe { libc::close(stats) };
}

/// Nanoseconds the fork, exec and exit programs have run, in all.
fn programs_run_ns() -> u64 {
    libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| {
            let name = p.name.to_string_lossy();
            ["ptags_fork", "ptags_exec", "ptags_exit"].contains(&name.as_ref())
        })
        .map(|p| p.run_time_ns)
        .sum()
}

/// Spawn and system-call times in one state: 0 nothing attached; 1 the
/// programs, the caller tagged and contained; 2 and namespace records on;
/// 3 and a setns policy.
fn measure(state: usize, me: TaskId, spawns: usize, n_calls: usize) -> (Duration, Duration, f64) {
    if state == 0 {
        return (spawn_many(spawns), syscalls_many(n_calls), 0.0);
    }
    let k = Kernel::open(&Options::default()).expect("loading the programs");
    let watch = if state >= 2 {
        NsWatch::Containers
    } else {
        NsWatch::Off
    };
    k.set_events(false, false, watch).unwrap();
    k.set(
        me,
        &SetOp {
            tags: Some((7, 3)),
            contid: Some((99, None)),
            ..Default::default()
        },
    )
    .unwrap();
    if state == 3 {
        // A policy for a namespace no task is in: every fork and exec
        // looks it up and finds none, as on a machine running containers
        // for the tasks outside them.
        let policy = Join {
            contid: 99,
            set_id: 7,
            kept_id: 3,
        };
        k.set_join(1, &policy).unwrap();
    }
    let before = programs_run_ns();
    let spawned = spawn_many(spawns);
    let in_bpf = (programs_run_ns() - before) as f64 / spawns as f64;
    let times = (spawned, syscalls_many(n_calls), in_bpf);
    assert_eq!(k.lost().unwrap(), Default::default());
    times
}

/// One line per state: its median time and ratio to nothing attached's,
/// and the median over rounds of its ratio to nothing attached in the
/// same round ("paired": a drift from one round to the next cancels out).
fn report(what: &str, n: usize, unit: &str, scale: f64, times: &[Vec<Duration>; 4]) {
    let per = |d: Duration| d.as_secs_f64() * scale / n as f64;
    let base = median(times[0].clone());
    println!("{what}, {n} per round:");
    for (name, t) in STATES.into_iter().zip(times) {
        let paired = median(
            t.iter()
                .zip(&times[0])
                .map(|(t, base)| t.as_secs_f64() / base.as_secs_f64())
                .collect(),
        );
        let t = median(t.clone());
        println!(
            "  {name:<27} {:9.2} {unit} each  ({:+.2}%; paired {:+.2}%)",
            per(t),
            (t.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0,
            (paired - 1.0) * 100.0
        );
    }
}
