//! Requests per second and latency (p50, p99) through the socket, against
//! a real ptagsd: reads, writes that land on a known tag set, and writes
//! that make a new set each time (stored durably before the kernel sees
//! it), from one client and from two at once.
//!
//!     sudo cargo bench -p ptagsd --bench socket [-- REQUESTS]

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::exchange;
use ptags_proto::{Request, Target};

/// Runs `n` requests made by `make` on one connection; returns each
/// request's latency.
fn run(socket: &Path, n: usize, make: impl Fn(usize) -> Request) -> Vec<Duration> {
    let mut s = UnixStream::connect(socket).unwrap();
    (0..n)
        .map(|i| {
            let req = make(i);
            let start = Instant::now();
            exchange(&mut s, &req);
            start.elapsed()
        })
        .collect()
}

fn report(name: &str, clients: usize, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "{name:<28} {clients} client(s): {:>8.0} req/s   p50 {:>7.1} µs   p99 {:>7.1} µs",
        lat.len() as f64 / wall.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
    );
}

fn bench(
    name: &str,
    socket: &Path,
    clients: usize,
    n: usize,
    make: impl Fn(usize, usize) -> Request + Sync,
) {
    let start = Instant::now();
    let lat: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let make = &make;
                scope.spawn(move || run(socket, n, |i| make(c, i)))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    report(name, clients, lat, start.elapsed());
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if full { 20000 } else { 200 });
    if !common::can_run("socket benchmark") {
        return;
    }
    let d = common::Daemon::start("bench", "log_level = \"warn\"\n");
    let targets: Vec<std::process::Child> = (0..2)
        .map(|_| Command::new("sleep").arg("600").spawn().unwrap())
        .collect();
    let pid = |c: usize| targets[c].id();
    let socket = d.socket();
    for c in 0..2 {
        run(&socket, 1, |_| Request::Write {
            target: Target {
                pid: pid(c),
                tid: None,
            },
            text: "+UMCM:CONTAINER_ID\n!UMCM:CONTAINER_ID=bench\n+@ptags-bench\n!ptags-bench=1\n"
                .into(),
        });
    }
    println!("{n} requests per client");
    for clients in [1, 2] {
        bench("read", &socket, clients, n, |c, _| Request::Read {
            target: Target {
                pid: pid(c),
                tid: None,
            },
        });
        // Alternates between two sets: interned after the first time.
        bench("write (known set)", &socket, clients, n, |c, i| {
            Request::Write {
                target: Target {
                    pid: pid(c),
                    tid: None,
                },
                text: if i % 2 == 0 { "+x\n" } else { "-x\n" }.into(),
            }
        });
        // A value never seen before: a new set stored (fsync) each time.
        let fresh = n / 10;
        bench(
            "write (new set, stored)",
            &socket,
            clients,
            fresh,
            |c, i| Request::Write {
                target: Target {
                    pid: pid(c),
                    tid: None,
                },
                text: format!("+n\n!n={clients}-{c}-{i}\n"),
            },
        );
    }
    for mut t in targets {
        let _ = t.kill();
        let _ = t.wait();
    }
}
