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
    let (mut bare, mut with) = (Vec::new(), Vec::new());
    let (mut bare_calls, mut with_calls) = (Vec::new(), Vec::new());
    let calls = if full { SYSCALLS } else { SYSCALLS / 100 };
    for _ in 0..rounds {
        bare.push(spawn_many(spawns));
        bare_calls.push(syscalls_many(calls));
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
        // A policy for a namespace no task is in: the setns program is
        // attached, and returns early for every other system call.
        let policy = Join {
            contid: 99,
            set_id: 7,
            kept_id: 3,
        };
        k.set_join(1, &policy).unwrap();
        with.push(spawn_many(spawns));
        with_calls.push(syscalls_many(calls));
        assert_eq!(k.lost().unwrap(), Default::default());
        drop(k);
    }
    report(
        "spawn /bin/true",
        rounds,
        spawns,
        "µs",
        1e6,
        median(bare),
        median(with),
    );
    report(
        "getppid()",
        rounds,
        calls,
        "ns",
        1e9,
        median(bare_calls),
        median(with_calls),
    );
}

fn report(what: &str, rounds: usize, n: usize, unit: &str, scale: f64, b: Duration, w: Duration) {
    let per = |d: Duration| d.as_secs_f64() * scale / n as f64;
    println!("{what}, {rounds} rounds of {n}, medians:");
    println!(
        "  nothing attached:                   {:8.2} {unit} each",
        per(b)
    );
    println!(
        "  attached, tagged contained caller:  {:8.2} {unit} each",
        per(w)
    );
    println!(
        "  ratio: {:.4} ({:+.2}%)",
        w.as_secs_f64() / b.as_secs_f64(),
        (w.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0
    );
}
