//! Cost of the device program on opens: open+close of /dev/null in a
//! loop with nothing attached, with the program attached at the cgroup
//! v2 root and an unlabelled (host) caller, and with the caller in a
//! container held to a runtime's default list (deny all, eleven
//! exceptions). One run, rounds interleaved so that drift hits each
//! state alike; the kernel's own accounting of the program's run time
//! (BPF_STATS_RUN_TIME) per open is printed too.
//!
//!     sudo cargo bench -p ptags-bpf --bench devices [-- ROUNDS OPENS]

use std::time::{Duration, Instant};

use ptags_bpf::{DeviceException, Kernel, Options, SetOp, TaskId};

fn opens(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        drop(std::hint::black_box(
            std::fs::File::open("/dev/null").expect("opening /dev/null"),
        ));
    }
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// runc's default devices, as `ptags oci-hook` gives a container them.
fn runtime_list() -> Vec<DeviceException> {
    let c = |major: Option<u32>, minor: Option<u32>, access: u32| DeviceException {
        kind: 2,
        major,
        minor,
        access,
    };
    let rwm = 7;
    vec![
        c(None, None, 1),
        DeviceException {
            kind: 1,
            major: None,
            minor: None,
            access: 1,
        },
        c(Some(1), Some(3), rwm),
        c(Some(1), Some(8), rwm),
        c(Some(1), Some(7), rwm),
        c(Some(5), Some(0), rwm),
        c(Some(1), Some(5), rwm),
        c(Some(1), Some(9), rwm),
        c(Some(136), None, rwm),
        c(Some(5), Some(2), rwm),
        c(Some(10), Some(200), rwm),
    ]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    // `cargo test --all-targets` runs this without --bench: a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = args.first().copied().unwrap_or(if full { 9 } else { 1 });
    let n = args
        .get(1)
        .copied()
        .unwrap_or(if full { 200_000 } else { 1000 });
    // SAFETY: geteuid and gettid have no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("PTAGS_REQUIRE_BPF").as_deref() != Ok("1"),
            "the devices benchmark needs root to load BPF programs (PTAGS_REQUIRE_BPF=1)"
        );
        eprintln!("SKIPPED devices benchmark: needs root to load BPF programs");
        return;
    }
    let Some(root) = ptags_bpf::procfs::cgroup_v2_root() else {
        assert!(
            std::env::var("PTAGS_REQUIRE_BPF").as_deref() != Ok("1"),
            "the devices benchmark needs a cgroup v2 hierarchy"
        );
        eprintln!("SKIPPED devices benchmark: no cgroup v2 hierarchy");
        return;
    };
    // SAFETY: as above.
    let me = TaskId::of(unsafe { libc::gettid() } as u32).unwrap();
    opens(n / 4); // warm up
                  // SAFETY: plain bpf(BPF_ENABLE_STATS); stats stay on while the fd is open.
    let stats = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    assert!(stats >= 0, "enabling BPF run-time stats");
    let mut times: [Vec<Duration>; 3] = Default::default();
    let mut in_bpf: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        for step in 0..3 {
            let state = (step + round) % 3;
            let (t, b) = measure(state, me, &root, n);
            times[state].push(t);
            in_bpf[state].push(b);
        }
    }
    println!("{rounds} rounds of {n} open+close of /dev/null, medians:");
    let base = median(times[0].clone());
    for (i, name) in [
        "nothing attached",
        "attached, host task",
        "attached, fenced task",
    ]
    .into_iter()
    .enumerate()
    {
        let t = median(times[i].clone());
        let mut b = in_bpf[i].clone();
        b.sort_by(f64::total_cmp);
        println!(
            "  {name:<22} {:8.0} ns each  ({:+.2}%)  program {:4.0} ns",
            t.as_secs_f64() * 1e9 / n as f64,
            (t.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0,
            b[b.len() / 2]
        );
    }
    // SAFETY: the fd bpf_enable_stats returned.
    unsafe { libc::close(stats) };
}

/// Nanoseconds the device program has run, in all.
fn program_run_ns() -> u64 {
    libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| p.name.to_string_lossy() == "ptags_dev")
        .map(|p| p.run_time_ns)
        .sum()
}

/// Open times in one state: 0 nothing attached; 1 the program at the
/// root, the caller in no container; 2 and the caller in a container
/// with a runtime's list.
fn measure(state: usize, me: TaskId, root: &std::path::Path, n: usize) -> (Duration, f64) {
    if state == 0 {
        return (opens(n), 0.0);
    }
    let k = Kernel::open(&Options::default()).expect("loading the programs");
    // Detached when dropped, at the end of this state.
    let _link = k
        .attach_devices(root)
        .expect("attaching at the cgroup root");
    if state == 2 {
        k.set(
            me,
            &SetOp {
                contid: Some((99, None)),
                ..Default::default()
            },
        )
        .unwrap();
        k.set_device_list(99, Some((false, &runtime_list())))
            .unwrap();
    }
    let before = program_run_ns();
    let t = opens(n);
    let in_bpf = (program_run_ns() - before) as f64 / n as f64;
    (t, in_bpf)
}
