//! Hostile clients of ptagsd, for the security tests (crates/ptagsd/tests/
//! security.rs) and for trying a daemon by hand. Each is an attack from
//! issue 13 that the daemon must refuse; run them as an unprivileged
//! user against a daemon of your own:
//!
//! ```text
//! hostile_client handoff SOCKET         # a connection handed to su
//! hostile_client send-then-su SOCKET    # a request, then exec su at once
//! hostile_client announce SOCKET N SECS # N connections announcing 128 MiB
//! hostile_client ptrace PID             # PTRACE_SEIZE then detach
//! hostile_client big-writes SOCKET N PID # N writes of ~150 MiB at once
//! hostile_client send-fds SOCKET N       # N requests, each with 8 fds attached
//! hostile_client flood SOCKET SECS       # all at once, in a loop: idle
//!                                        # connections, slow senders,
//!                                        # malformed and oversized frames,
//!                                        # status requests (issue 16)
//! hostile_client exited-main SOCKET drop|keep  # the main thread exits;
//!                                        # another (dropped to nobody
//!                                        # alone, or kept) asks for its
//!                                        # container ID (issue 21)
//! hostile_client undumpable SECS        # not dumpable (as after a drop of
//!                                        # privileges without exec): prints
//!                                        # its pid and sleeps (issue 21)
//! hostile_client enter-mnt PID SECS     # enters PID's mount namespace by
//!                                        # setns(2) alone, prints its pid
//!                                        # and sleeps: no fork, exec or
//!                                        # cgroup move (issue 21)
//! ```
//!
//! Answers are printed as JSON lines on standard output.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ptags_proto::{write_frame, Request, RequestFrame, Target};

/// The write that would give the writer the right to add any tag.
const GRANT: &str = "+ptags:add\n";

fn write_request(pid: u32) -> Vec<u8> {
    RequestFrame::new(Request::Write {
        target: Target { pid, tid: None },
        text: GRANT.to_owned(),
    })
    .encode()
}

fn print_answer(stream: &mut UnixStream) -> Result<()> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).context("reading the answer")?;
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body)?;
    println!("{}", String::from_utf8_lossy(&body));
    std::io::stdout().flush()?;
    Ok(())
}

/// Runs su with a pipe as standard input that nobody writes: it waits
/// at its password prompt as root (effective), until killed.
fn exec_su() -> std::io::Error {
    let mut fds = [0; 2];
    // SAFETY: pipe fills two fds. Without O_CLOEXEC the write end stays
    // open in su itself, so its read blocks instead of seeing EOF.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return std::io::Error::last_os_error();
    }
    // SAFETY: a fresh fd that nothing else owns.
    let reader = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) };
    Command::new("su")
        .args(["root", "-c", "true"])
        .stdin(Stdio::from(reader))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .exec()
}

/// Whether fd `fd` stays open across exec.
fn keep_across_exec(fd: &impl AsRawFd) {
    // SAFETY: F_SETFD with 0 on a valid fd only clears FD_CLOEXEC.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
}

/// The process that connected becomes su (effective uid 0, every
/// capability); its child sends a write on the inherited connection.
fn handoff(socket: &str) -> Result<()> {
    let mut stream = UnixStream::connect(socket).context("connecting")?;
    keep_across_exec(&stream);
    // SAFETY: this program is single-threaded: the child may do anything.
    match unsafe { libc::fork() } {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            wait_for_parent_su()?;
            write_frame(&mut stream, &write_request(std::process::id()))?;
            print_answer(&mut stream)?;
            let status = RequestFrame::new(Request::Status {}).encode();
            write_frame(&mut stream, &status)?;
            print_answer(&mut stream)?;
            Ok(())
        }
        _ => Err(exec_su().into()),
    }
}

/// Waits until the parent has exec'd su (its comm says so), so that the
/// connection's opener is root when the request arrives.
fn wait_for_parent_su() -> Result<()> {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let end = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{parent}/comm"))?.trim() != "su" {
        if Instant::now() > end {
            bail!("the parent {parent} did not become su within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // su reaches its password prompt (effective root) right after exec.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// Sends a write for itself and at once becomes su, so that the daemon
/// may read its credentials after the exec.
fn send_then_su(socket: &str) -> Result<()> {
    let mut stream = UnixStream::connect(socket).context("connecting")?;
    announce_pid()?;
    write_frame(&mut stream, &write_request(std::process::id()))?;
    keep_across_exec(&stream);
    Err(exec_su().into())
}

/// Holds `n` connections, each announcing a 128 MiB frame and sending one
/// byte of it, reopened when the daemon closes them, for `secs` seconds.
fn announce(socket: &str, n: usize, secs: u64) -> Result<()> {
    let open = || -> Result<UnixStream> {
        let mut s = UnixStream::connect(socket)?;
        s.write_all(&(128u32 << 20).to_be_bytes())?;
        s.write_all(b"{")?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let mut held: Vec<Option<UnixStream>> = (0..n).map(|_| open().ok()).collect();
    let (mut opened, mut refused) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        for slot in &mut held {
            let closed = match slot {
                Some(s) => s.read(&mut [0u8; 4096]).is_ok(),
                None => true,
            };
            if closed {
                refused += u64::from(slot.is_some());
                *slot = open().ok();
                opened += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{{\"opened\":{opened},\"answered_or_closed\":{refused}}}");
    Ok(())
}

/// Every attack on the socket at once for `secs`, each in a loop on a
/// thread of its own: connections held idle (reopened as the daemon
/// closes them), slow senders (a byte of a frame every 100 ms), malformed
/// frames, frames announcing more than a request may be, and a stream of
/// status requests. Prints how many times each was tried.
fn flood(socket: &str, secs: u64) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(secs);
    let attack = |name: &'static str, each: fn(&str) -> Result<()>| {
        let socket = socket.to_owned();
        std::thread::spawn(move || {
            let mut tries = 0u64;
            while Instant::now() < end {
                tries += 1;
                // Refusals and closed connections are the point.
                let _ = each(&socket);
            }
            (name, tries)
        })
    };
    let idle = |socket: &str| -> Result<()> {
        let held: Vec<UnixStream> = (0..32)
            .filter_map(|_| UnixStream::connect(socket).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        Ok(())
    };
    let slow = |socket: &str| -> Result<()> {
        let mut s = UnixStream::connect(socket)?;
        for b in 100u32.to_be_bytes().into_iter().chain(*b"{\"read\":") {
            s.write_all(&[b])?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    let malformed = |socket: &str| -> Result<()> {
        let mut s = UnixStream::connect(socket)?;
        write_frame(&mut s, b"{\"no such request\": [1, 2")?;
        let _ = s.read(&mut [0u8; 512]);
        Ok(())
    };
    let oversized = |socket: &str| -> Result<()> {
        let mut s = UnixStream::connect(socket)?;
        s.write_all(&u32::MAX.to_be_bytes())?;
        let _ = s.read(&mut [0u8; 512]);
        Ok(())
    };
    let status = |socket: &str| -> Result<()> {
        let mut s = UnixStream::connect(socket)?;
        write_frame(&mut s, &RequestFrame::new(Request::Status {}).encode())?;
        let _ = s.read(&mut [0u8; 4096]);
        Ok(())
    };
    let threads = vec![
        attack("idle", idle),
        attack("idle", idle),
        attack("slow", slow),
        attack("slow", slow),
        attack("slow", slow),
        attack("malformed", malformed),
        attack("oversized", oversized),
        attack("status", status),
    ];
    let mut tries = std::collections::BTreeMap::new();
    for t in threads {
        let (name, n) = t.join().expect("an attack thread");
        *tries.entry(name).or_insert(0u64) += n;
    }
    let tries: Vec<String> = tries.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!("{{{}}}", tries.join(","));
    Ok(())
}

/// Seizes `pid` with ptrace and lets it go.
fn ptrace(pid: i32) -> Result<()> {
    // SAFETY: PTRACE_SEIZE and PTRACE_DETACH take a pid and null pointers.
    let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    if seized != 0 {
        bail!("PTRACE_SEIZE {pid}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
    println!("seized {pid}");
    Ok(())
}

/// `n` writes at once, from `n` connections, each of 4000 tags with
/// 3,000-byte names and 32,700-byte values (about 150 MiB of JSON), to
/// process `pid`: what the daemon holds in memory at its peak.
fn big_writes(socket: &str, n: usize, pid: u32) -> Result<()> {
    let value = "v".repeat(32_700);
    let text: String = (0..4000)
        .map(|i| {
            let name = format!("big:{i:04}:{}", "n".repeat(2990));
            format!("+{name}\n!{name}={value}\n")
        })
        .collect();
    let frame = RequestFrame::new(Request::Write {
        target: Target { pid, tid: None },
        text,
    })
    .encode();
    eprintln!("{n} frames of {} bytes", frame.len());
    let answers: Vec<String> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn(|| -> Result<String> {
                    let mut s = UnixStream::connect(socket)?;
                    write_frame(&mut s, &frame)?;
                    let mut len = [0u8; 4];
                    s.read_exact(&mut len)?;
                    let mut body = vec![0; u32::from_be_bytes(len) as usize];
                    s.read_exact(&mut body)?;
                    Ok(String::from_utf8_lossy(&body).into_owned())
                })
            })
            .collect();
        senders
            .into_iter()
            .map(|t| match t.join() {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => format!("{{\"client error\":{:?}}}", e.to_string()),
                Err(_) => "{\"client error\":\"panicked\"}".to_owned(),
            })
            .collect()
    });
    for answer in answers {
        let short: String = answer.chars().take(200).collect();
        println!("{short}");
    }
    Ok(())
}

/// Sends `n` status requests, each carrying 8 descriptors (SCM_RIGHTS)
/// that the daemon did not ask for, and reads the answers.
fn send_fds(socket: &str, n: usize) -> Result<()> {
    const FDS: usize = 8;
    let mut stream = UnixStream::connect(socket).context("connecting")?;
    let null = std::fs::File::open("/dev/null")?;
    let frame = {
        let body = RequestFrame::new(Request::Status {}).encode();
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    };
    let fds = [null.as_raw_fd(); FDS];
    for _ in 0..n {
        // SAFETY: CMSG_SPACE is a pure computation on a size.
        let space = unsafe { libc::CMSG_SPACE(size_of_val(&fds) as u32) } as usize;
        let mut control = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        // SAFETY: a zeroed msghdr is valid; every pointer set below points
        // to a live buffer of the length given, and the control message
        // is built inside `control` with the CMSG macros.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of_val(&fds) as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                size_of_val(&fds),
            );
            libc::sendmsg(stream.as_raw_fd(), &msg, 0)
        };
        if sent < 0 {
            bail!("sendmsg: {}", std::io::Error::last_os_error());
        }
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body)?;
    }
    println!("{{\"sent\":{n},\"fds_each\":{FDS}}}");
    Ok(())
}

/// Whether the main thread of this process has exited (a zombie
/// leader while the process lives on).
fn main_thread_exited() -> bool {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(") ")?.1.starts_with('Z')))
        .unwrap_or(false)
}

/// The main thread connects (as whoever runs this, root in the tests),
/// starts a thread and exits. The thread, with `drop`, becomes nobody by
/// itself (setresuid for this thread alone, as the raw system call does)
/// and asks for its own container ID, which needs CAP_AUDIT_CONTROL: the
/// dead main thread's credentials must not answer for it.
fn exited_main(socket: &str, drop: bool) -> Result<()> {
    let mut stream = UnixStream::connect(socket).context("connecting")?;
    let pid = std::process::id();
    std::thread::spawn(move || {
        let answer = (|| -> Result<()> {
            let start = Instant::now();
            while !main_thread_exited() {
                if start.elapsed() > Duration::from_secs(5) {
                    bail!("the main thread did not exit");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if drop {
                let nobody = 65534;
                // SAFETY: the raw system call changes this thread's IDs
                // alone (glibc's setresuid would change every thread's).
                let ret = unsafe { libc::syscall(libc::SYS_setresuid, nobody, nobody, nobody) };
                if ret != 0 {
                    bail!("setresuid: {}", std::io::Error::last_os_error());
                }
            }
            write_frame(
                &mut stream,
                &RequestFrame::new(Request::ContidGet { pid }).encode(),
            )
            .context("sending")?;
            print_answer(&mut stream)
        })();
        if let Err(e) = answer {
            println!("{{\"client_error\":\"{e:#}\"}}");
        }
        std::process::exit(0);
    });
    // SAFETY: the raw exit system call ends the main thread alone, with
    // no unwinding (pthread_exit would unwind through Rust's frames); the
    // process lives on in the thread above, which exits it.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("exit returned")
}

/// Makes itself not dumpable, prints its pid and sleeps `secs` seconds:
/// a process that ptrace, and so ptagsd, must leave alone.
fn undumpable(secs: u64) -> Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer and changes only this process.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        bail!("prctl: {}", std::io::Error::last_os_error());
    }
    announce_pid()?;
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}

/// Enters `target`'s mount namespace and does nothing a program sees
/// afterwards (a root slipping into a container to act unlabelled).
fn enter_mnt(target: u32, secs: u64) -> Result<()> {
    let ns = std::fs::File::open(format!("/proc/{target}/ns/mnt"))
        .with_context(|| format!("opening {target}'s mount namespace"))?;
    // SAFETY: setns on a descriptor this function owns; the process has
    // one thread, as entering a mount namespace requires.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    announce_pid()?;
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}

/// Prints this process's pid on a line of its own, at once (the tests
/// read it: `common::printed_id`).
fn announce_pid() -> Result<()> {
    println!("{}", std::process::id());
    std::io::stdout().flush()?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .context("missing argument; see the file's header for usage")
    };
    match arg(0)? {
        "handoff" => handoff(arg(1)?),
        "send-then-su" => send_then_su(arg(1)?),
        "announce" => announce(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?),
        "ptrace" => ptrace(arg(1)?.parse()?),
        "big-writes" => big_writes(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?),
        "send-fds" => send_fds(arg(1)?, arg(2)?.parse()?),
        "flood" => flood(arg(1)?, arg(2)?.parse()?),
        "exited-main" => exited_main(arg(1)?, arg(2)? == "drop"),
        "undumpable" => undumpable(arg(1)?.parse()?),
        "enter-mnt" => enter_mnt(arg(1)?.parse()?, arg(2)?.parse()?),
        other => bail!("unknown attack {other:?}"),
    }
}
