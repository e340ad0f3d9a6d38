//! The kernel's audit records, read from NETLINK_AUDIT: as the kernel's
//! registered audit daemon (unicast, when no auditd is registered), or
//! through the read-only multicast group beside auditd, without
//! disturbing it; and the kernel's own count of lost records through
//! AUDIT_GET.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc::SyncSender;

use anyhow::{Context, Result};
use log::warn;

use crate::config::Register;
use crate::server::Input;

const NETLINK_AUDIT: libc::c_int = 9;
/// The multicast group that receives a copy of every record.
const AUDIT_NLGRP_READLOG: u32 = 1;
const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
/// A user message the kernel passes on even with audit off.
const AUDIT_USER_AVC: u16 = 1107;
/// `struct audit_status`'s mask bit for its `pid` field.
const AUDIT_STATUS_PID: u32 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// Room for bursts while the daemon's thread is busy.
const RECEIVE_BUFFER: libc::c_int = 64 << 20;
/// Records handed over at once.
const BATCH: usize = 4096;

/// One record as the kernel sent it.
#[derive(Debug, Clone)]
pub struct KernelMessage {
    pub kind: u16,
    pub payload: Vec<u8>,
}

fn audit_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_AUDIT,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, groups: u32) -> io::Result<()> {
    // SAFETY: sockaddr_nl is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    // SAFETY: addr is a valid sockaddr_nl of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The messages in one datagram.
fn messages(buf: &[u8], out: &mut Vec<KernelMessage>) {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let mut len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
        // The records the kernel unicasts to its audit daemon, one a
        // datagram, count only their payload in nlmsg_len (auditd reads
        // them the same way); the multicast copies are fixed up.
        if at == 0 && len + NLMSG_HDRLEN == buf.len() {
            len = buf.len();
        }
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        out.push(KernelMessage {
            kind,
            payload: buf[at + NLMSG_HDRLEN..at + len].to_vec(),
        });
        at += (len + 3) & !3;
    }
}

fn recv(fd: &OwnedFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends one netlink request to the kernel on `fd` (bound).
fn send_request(
    fd: &OwnedFd,
    kind: u16,
    flags: libc::c_int,
    seq: u32,
    body: &[u8],
) -> io::Result<()> {
    let len = NLMSG_HDRLEN + body.len();
    let mut req = vec![0u8; len];
    req[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&kind.to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | flags) as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    req[NLMSG_HDRLEN..].copy_from_slice(body);
    // SAFETY: req is valid for reads of its length; the socket is bound.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one request to the kernel on `fd` and waits for its ACK; the
/// records that arrive meanwhile (on a registered daemon's socket) are
/// kept in `records`.
fn ask(fd: &OwnedFd, kind: u16, body: &[u8], records: &mut Vec<KernelMessage>) -> io::Result<()> {
    send_request(fd, kind, libc::NLM_F_ACK, 1, body)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(fd, &mut buf, 0)?;
        let mut msgs = Vec::new();
        messages(&buf[..n], &mut msgs);
        for m in msgs {
            if m.kind != NLMSG_ERROR {
                records.push(m);
                continue;
            }
            let errno = m
                .payload
                .get(0..4)
                .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
            return match errno {
                0 => Ok(()),
                e => Err(io::Error::from_raw_os_error(-e)),
            };
        }
    }
}

/// `struct audit_status` with only its pid set (the kernel reads as much
/// of it as is sent).
fn pid_status(pid: u32) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..4].copy_from_slice(&AUDIT_STATUS_PID.to_ne_bytes());
    s[12..16].copy_from_slice(&pid.to_ne_bytes());
    s
}

/// How kernel records reach the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// As the kernel's registered audit daemon: every record by unicast.
    Registered,
    /// The multicast copy, beside the audit daemon of this pid (0: none,
    /// and the kernel also prints every record to its log).
    Beside(u32),
}

/// Reads the kernel's records as `register` says, and starts a thread
/// that hands every record to the daemon's thread. Registering needs
/// CAP_AUDIT_CONTROL, the multicast group CAP_AUDIT_READ.
pub fn start(inputs: SyncSender<Input>, register: Register) -> Result<Reading> {
    let fd = audit_socket()
        .context("opening a NETLINK_AUDIT socket (is audit built into this kernel?)")?;
    let size = RECEIVE_BUFFER;
    // SAFETY: setsockopt reads an int of the size given.
    let forced = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if forced < 0 {
        warn!(
            "could not enlarge the audit socket's buffer: {}",
            io::Error::last_os_error()
        );
    }
    let mut status = KernelStatus::open()?;
    let mut daemon = status.status()?.pid;
    if daemon != 0 && !alive(daemon) && register != Register::Never {
        // A daemon that died without giving up its registration (killed)
        // stays registered until the kernel fails to hand it a record:
        // one message makes the kernel try, and forget it.
        let probe = format!("ptagsd: the registered audit daemon {daemon} is gone");
        let poke = audit_socket().and_then(|s| bind(&s, 0).map(|()| s));
        if let Ok(s) = poke {
            let _ = ask(&s, AUDIT_USER_AVC, probe.as_bytes(), &mut Vec::new());
        }
        for _ in 0..50 {
            daemon = status.status()?.pid;
            if daemon == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let mut early = Vec::new();
    let reading = match register {
        Register::Never => Reading::Beside(daemon),
        Register::Auto if daemon != 0 => Reading::Beside(daemon),
        _ => {
            bind(&fd, 0).context("binding a NETLINK_AUDIT socket")?;
            match ask(&fd, AUDIT_SET, &pid_status(std::process::id()), &mut early) {
                Ok(()) => Reading::Registered,
                Err(e) if register == Register::Always => {
                    return Err(e).context(
                        "registering as the audit daemon (audit.register = \"always\"; another daemon may be registered)",
                    );
                }
                // Another daemon registered in between: read beside it.
                Err(e) => {
                    warn!("could not register as the audit daemon ({e}); reading beside it");
                    return start(inputs, Register::Never);
                }
            }
        }
    };
    if let Reading::Beside(_) = reading {
        bind(&fd, AUDIT_NLGRP_READLOG)
            .context("joining the audit multicast group (needs CAP_AUDIT_READ)")?;
    }
    if !early.is_empty() && inputs.send(Input::Kernel(early)).is_err() {
        return Ok(reading);
    }
    std::thread::Builder::new()
        .name("netlink-audit".into())
        .spawn(move || read_loop(fd, inputs))?;
    Ok(reading)
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Gives up the registration as the audit daemon, so that an auditd can
/// start; the kernel goes back to printing records while none is.
pub fn unregister() -> Result<()> {
    let fd = audit_socket().context("opening a NETLINK_AUDIT socket")?;
    bind(&fd, 0).context("binding a NETLINK_AUDIT socket")?;
    ask(&fd, AUDIT_SET, &pid_status(0), &mut Vec::new())
        .context("unregistering as the audit daemon")
}

fn read_loop(fd: OwnedFd, inputs: SyncSender<Input>) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let mut batch = Vec::new();
        let mut flags = 0;
        while batch.len() < BATCH {
            match recv(&fd, &mut buf, flags) {
                Ok(n) => messages(&buf[..n], &mut batch),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    if inputs.send(Input::KernelOverflow).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("reading kernel audit records: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    break;
                }
            }
            flags = libc::MSG_DONTWAIT;
        }
        if !batch.is_empty() && inputs.send(Input::Kernel(batch)).is_err() {
            return;
        }
    }
}

/// What the kernel's audit status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditState {
    /// The registered audit daemon (0: none).
    pub pid: u32,
    /// Records lost: over the backlog limit, the rate limit, or memory.
    pub lost: u32,
}

/// Asks the kernel how many records it has lost (`auditctl -s`'s
/// `lost`): over its backlog limit, its rate limit, or out of memory.
pub struct KernelStatus {
    fd: OwnedFd,
    seq: u32,
}

impl KernelStatus {
    pub fn open() -> Result<KernelStatus> {
        let fd = audit_socket().context("opening a NETLINK_AUDIT socket")?;
        bind(&fd, 0).context("binding a NETLINK_AUDIT socket")?;
        Ok(KernelStatus { fd, seq: 0 })
    }

    pub fn lost(&mut self) -> Result<u32> {
        Ok(self.status()?.lost)
    }

    /// The parts of `auditctl -s` the daemon uses.
    pub fn status(&mut self) -> Result<AuditState> {
        self.seq = self.seq.wrapping_add(1);
        send_request(&self.fd, AUDIT_GET, 0, self.seq, &[]).context("sending AUDIT_GET")?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = recv(&self.fd, &mut buf, 0).context("reading the AUDIT_GET answer")?;
            let mut msgs = Vec::new();
            messages(&buf[..n], &mut msgs);
            for m in msgs {
                match m.kind {
                    // struct audit_status: mask, enabled, failure, pid,
                    // rate_limit, backlog_limit, lost, ...
                    AUDIT_GET if m.payload.len() >= 28 => {
                        let field = |at: usize| {
                            u32::from_ne_bytes(m.payload[at..at + 4].try_into().expect("4 bytes"))
                        };
                        return Ok(AuditState {
                            pid: field(12),
                            lost: field(24),
                        });
                    }
                    NLMSG_ERROR => {
                        let errno = m
                            .payload
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                            .unwrap_or(0);
                        anyhow::bail!("AUDIT_GET: {}", io::Error::from_raw_os_error(-errno));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_split_into_aligned_messages() {
        let mut buf = Vec::new();
        for (kind, text) in [(1300u16, &b"audit(1.000:1): a=1"[..]), (1320, b"x")] {
            let len = NLMSG_HDRLEN + text.len();
            buf.extend_from_slice(&(len as u32).to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(&[0; 10]);
            buf.extend_from_slice(text);
            buf.resize((buf.len() + 3) & !3, 0);
        }
        let mut out = Vec::new();
        messages(&buf, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].kind, 1300);
        assert_eq!(out[0].payload, b"audit(1.000:1): a=1");
        assert_eq!(out[1].payload, b"x");
        // A unicast record, whose length leaves out its header.
        let mut unicast = buf[..NLMSG_HDRLEN + 19].to_vec();
        unicast[0..4].copy_from_slice(&19u32.to_ne_bytes());
        let mut out = Vec::new();
        messages(&unicast, &mut out);
        assert_eq!(out[0].payload, b"audit(1.000:1): a=1");
        // A length past the end stops the walk instead of reading garbage.
        let mut short = Vec::new();
        messages(&buf[..20], &mut short);
        assert!(short.is_empty());
    }
}
