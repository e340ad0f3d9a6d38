//! Cost of the kernel programs on spawn: fork+exec+exit of /bin/true, with
//! the programs attached and a tagged, contained parent, against nothing
//! attached, in one run, rounds interleaved so that drift hits both.
//!
//!     sudo cargo bench -p ptags-bpf --bench spawn [-- ROUNDS SPAWNS]

use std::process::Command;
use std::time::{Duration, Instant};

use ptags_bpf::{Kernel, Options, SetOp, TaskId};

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
    for _ in 0..rounds {
        bare.push(spawn_many(spawns));
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
        with.push(spawn_many(spawns));
        assert_eq!(k.lost().unwrap(), Default::default());
        drop(k);
    }
    let (b, w) = (median(bare), median(with));
    let per = |d: Duration| d.as_secs_f64() * 1e6 / spawns as f64;
    println!("spawn /bin/true, {rounds} rounds of {spawns}, medians:");
    println!(
        "  nothing attached:                 {:8.2} µs per spawn",
        per(b)
    );
    println!(
        "  attached, tagged contained parent: {:8.2} µs per spawn",
        per(w)
    );
    println!(
        "  ratio: {:.4} ({:+.2}%)",
        w.as_secs_f64() / b.as_secs_f64(),
        (w.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0
    );
}
