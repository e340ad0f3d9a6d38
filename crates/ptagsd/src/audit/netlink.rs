//! The kernel's audit records, read from NETLINK_AUDIT: every record
//! through the read-only multicast group (beside auditd, without
//! disturbing it), and the kernel's own count of lost records through
//! AUDIT_GET.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc::SyncSender;

use anyhow::{Context, Result};
use log::warn;

use crate::server::Input;

const NETLINK_AUDIT: libc::c_int = 9;
/// The multicast group that receives a copy of every record.
const AUDIT_NLGRP_READLOG: u32 = 1;
const AUDIT_GET: u16 = 1000;
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
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
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

/// Joins the multicast group and starts a thread that hands every
/// record to the daemon's thread. Needs CAP_AUDIT_READ.
pub fn start(inputs: SyncSender<Input>) -> Result<()> {
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
    bind(&fd, AUDIT_NLGRP_READLOG)
        .context("joining the audit multicast group (needs CAP_AUDIT_READ)")?;
    std::thread::Builder::new()
        .name("netlink-audit".into())
        .spawn(move || read_loop(fd, inputs))?;
    Ok(())
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
        self.seq = self.seq.wrapping_add(1);
        let mut req = [0u8; NLMSG_HDRLEN];
        req[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&AUDIT_GET.to_ne_bytes());
        req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // SAFETY: req is valid for reads of its length; the socket is
        // bound, so send goes to the kernel.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error()).context("sending AUDIT_GET");
        }
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
                        return Ok(u32::from_ne_bytes(
                            m.payload[24..28].try_into().expect("4 bytes"),
                        ))
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
        // A length past the end stops the walk instead of reading garbage.
        let mut short = Vec::new();
        messages(&buf[..20], &mut short);
        assert!(short.is_empty());
    }
}
