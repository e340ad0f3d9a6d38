//! `ptags run`: start a command with tags and a container ID that it has
//! from its first instruction.
//!
//! The command is forked and held before its exec; the daemon prepares the
//! held child (the state it takes at exec), and only then does the child
//! exec. A refusal kills the child before it has run anything.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ptags_proto::{Request, Response};

use crate::client::Client;
use crate::commands::report;
use crate::Output;

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child's side, between fork and exec: only async-signal-safe calls.
fn child(go: &OwnedFd, errors: &OwnedFd, argv: &[*const libc::c_char]) -> ! {
    let mut byte = 0u8;
    // SAFETY: reading one byte into a valid buffer; write and _exit are
    // async-signal-safe, and argv is a NULL-terminated array of C strings
    // that outlives the call.
    unsafe {
        if libc::read(go.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) == 1 && byte == b'g' {
            libc::execvp(argv[0], argv.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(errors.as_raw_fd(), (&errno as *const i32).cast(), 4);
        }
        libc::_exit(127)
    }
}

fn wait(pid: libc::pid_t) -> Result<ExitCode> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child into a valid int.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("waiting for the command");
        }
    }
    Ok(if libc::WIFEXITED(status) {
        ExitCode::from(libc::WEXITSTATUS(status) as u8)
    } else {
        ExitCode::from(128u8.wrapping_add(libc::WTERMSIG(status) as u8))
    })
}

pub fn run(
    client: &mut Client,
    out: Output,
    writes: &[String],
    contid: Option<u64>,
    command: &[String],
) -> Result<ExitCode> {
    let Some(program) = command.first() else {
        bail!("no command given: ptags run [--write LINE]... [--contid ID] -- CMD [ARG]...");
    };
    let args: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("an argument holds a NUL byte")?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let text = (!writes.is_empty()).then(|| writes.iter().map(|w| format!("{w}\n")).collect());
    let (go_read, go_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    // SAFETY: the child runs only async-signal-safe code (see `child`).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("forking");
    }
    if pid == 0 {
        child(&go_read, &err_write, &argv);
    }
    drop(go_read);
    drop(err_write);
    let prepared = client.request(Request::PrepareExec {
        pid: pid as u32,
        text,
        contid,
    });
    let go = match prepared {
        Ok(Ok(Response::Prepared)) => true,
        Ok(Ok(other)) => {
            eprintln!("ptags: ptagsd answered with an unexpected {other:?}");
            false
        }
        Ok(Err(failure)) => {
            report(out, &failure);
            false
        }
        Err(e) => {
            eprintln!("ptags: {e:#}");
            false
        }
    };
    if !go {
        // SAFETY: killing and reaping our own child, which has run nothing.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait(pid)?;
        return Ok(ExitCode::from(1));
    }
    // SAFETY: writing one byte from a valid buffer to our pipe.
    unsafe { libc::write(go_write.as_raw_fd(), b"g".as_ptr().cast(), 1) };
    drop(go_write);
    let mut errno = [0u8; 4];
    // SAFETY: reading into a valid 4-byte buffer; EOF means the exec happened.
    let n = unsafe { libc::read(err_read.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
    // The command now has the terminal's signals to itself; we only wait.
    // SAFETY: ignoring SIGINT and SIGQUIT in this process only.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let code = wait(pid)?;
    if n == 4 {
        let err = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        bail!("cannot run {program}: {err}");
    }
    Ok(code)
}
