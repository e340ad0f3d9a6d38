//! Latency (p50, p99) of the 2016 files against the same requests through
//! the socket, against a real ptagsd, one client: `pread()` of
//! `PID/attr/ptags` against a `read` request, and a one-line `pwrite()`
//! (offset 0, known sets, `+x` and `-x` by turns) against a `write`.
//!
//!     sudo cargo bench -p ptagsd --bench files [-- REQUESTS]

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::exchange;
use ptags_proto::{Request, Target};

fn timed(n: usize, mut op: impl FnMut(usize)) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let start = Instant::now();
            op(i);
            start.elapsed()
        })
        .collect()
}

fn report(name: &str, mut lat: Vec<Duration>) {
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    println!(
        "{name:<34} p50 {:>7.1} µs   p99 {:>7.1} µs",
        pct(0.5),
        pct(0.99)
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if full { 10000 } else { 100 });
    if !common::can_run("files benchmark") {
        return;
    }
    let d = common::Daemon::start("bench-files", "log_level = \"warn\"\n");
    let mut target = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = target.id();
    let path = d.dir.path().join(format!("proc/{pid}/attr/ptags"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let t = Target { pid, tid: None };
    let line = |i: usize| if i % 2 == 0 { "+x\n" } else { "-x\n" };
    println!("{n} requests each, one client");
    // Interleaved in blocks, so that drift hits both alike.
    let (mut sr, mut fr, mut sw, mut fw) = (vec![], vec![], vec![], vec![]);
    for _ in 0..10 {
        // A connection of its own per block: one idle while the files'
        // block runs would be closed by the daemon's idle timeout.
        let mut socket = UnixStream::connect(d.socket()).unwrap();
        sr.extend(timed(n / 10, |_| {
            exchange(&mut socket, &Request::Read { target: t })
        }));
        fr.extend(timed(n / 10, |_| {
            let mut buf = [0u8; 4096];
            file.read_at(&mut buf, 0).unwrap();
        }));
        sw.extend(timed(n / 10, |i| {
            exchange(
                &mut socket,
                &Request::Write {
                    target: t,
                    text: line(i).into(),
                },
            )
        }));
        fw.extend(timed(n / 10, |i| {
            assert_eq!(file.write_at(line(i).as_bytes(), 0).unwrap(), 3);
        }));
    }
    report("read, socket", sr);
    report("read(), attr/ptags", fr);
    report("write, socket (one line)", sw);
    report("write(), attr/ptags (one line)", fw);
    let _ = target.kill();
    let _ = target.wait();
}
