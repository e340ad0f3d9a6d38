//! A source: the kernel's audit records, read from NETLINK_AUDIT as the
//! kernel's registered audit daemon (unicast, when no auditd is
//! registered), or through the read-only multicast group beside auditd,
//! without disturbing it; and the kernel's own count of lost records
//! through AUDIT_GET.
//!
//! Losses: beside auditd, a record the socket had no room for is lost to
//! ptagsd alone, and the socket counts it (`SO_MEMINFO` drops). As the
//! registered daemon, the kernel keeps a record it could not hand over
//! and tries again; what it has to drop it counts in its `lost`.

use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use log::{debug, warn};
use ptags_audit::types::{GET, SET, USER_AVC};

use crate::config::Register;

/// The multicast group that receives a copy of every record
/// (`AUDIT_NLGRP_READLOG` of linux/audit.h).
const AUDIT_NLGRP_READLOG: u32 = 1;
/// `struct audit_status`'s mask bit for its `pid` field
/// (`AUDIT_STATUS_PID`).
const AUDIT_STATUS_PID: u32 = 4;
const NLMSG_HDRLEN: usize = std::mem::size_of::<libc::nlmsghdr>();
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
/// Records handed over at once, at most.
const BATCH: usize = 4096;
/// After a read, how long the reader lets records gather before it reads
/// again. Records come one a datagram; read as they come, each would cost
/// two wake-ups (this thread's and the daemon's), and under load they
/// would cost more than the records. A record waits 2 ms at most.
const GATHER: Duration = Duration::from_millis(2);

/// Records as the kernel sent them, in one buffer.
#[derive(Debug, Default)]
pub struct KernelBatch {
    bytes: Vec<u8>,
    /// Each record's type and where its payload lies in `bytes`.
    spans: Vec<(u16, Range<usize>)>,
}

impl KernelBatch {
    /// Room for a full batch of typical records, so that it does not
    /// grow (and copy itself) as it fills.
    fn with_room() -> KernelBatch {
        KernelBatch {
            bytes: Vec::with_capacity(BATCH * 320),
            spans: Vec::with_capacity(BATCH),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Each record's type and payload.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &[u8])> {
        self.spans
            .iter()
            .map(|(kind, span)| (*kind, &self.bytes[span.clone()]))
    }

    /// Adds the messages in one datagram.
    fn add_datagram(&mut self, buf: &[u8]) {
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
            let start = self.bytes.len();
            self.bytes
                .extend_from_slice(&buf[at + NLMSG_HDRLEN..at + len]);
            self.spans.push((kind, start..self.bytes.len()));
            at += (len + 3) & !3;
        }
    }

    /// The first NLMSG_ERROR's errno (0: an ACK).
    fn error(&self) -> Option<i32> {
        self.iter()
            .find(|(kind, _)| *kind == NLMSG_ERROR)
            .map(|(_, p)| {
                p.get(0..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
            })
    }
}

/// What the reader hands to the daemon's thread.
#[derive(Debug)]
pub enum KernelInput {
    Records(KernelBatch),
    /// Records the socket had no room for, lost (beside auditd only).
    Dropped(u64),
}

fn audit_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_AUDIT,
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

fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads an int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Datagrams the socket has dropped for want of room, since it was made.
fn socket_drops(fd: &OwnedFd) -> io::Result<u32> {
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: info is valid for writes of len bytes; the kernel writes at
    // most len and says how much.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info[libc::SK_MEMINFO_DROPS as usize])
}

fn recv(fd: &OwnedFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Datagrams one `recvmmsg` reads at most, and the room for each: the
/// kernel's largest audit message (MAX_AUDIT_MESSAGE_LENGTH, 8970) with
/// its header.
const DATAGRAMS: usize = 64;
const DATAGRAM_ROOM: usize = 9 << 10;

/// Receives up to `DATAGRAMS` datagrams with one system call: waits for
/// the first (unless `flags` says not to), takes what else is there.
/// Returns each one's length, in order.
fn recv_many(
    fd: &OwnedFd,
    buf: &mut [u8],
    flags: libc::c_int,
    lens: &mut Vec<usize>,
) -> io::Result<()> {
    debug_assert_eq!(buf.len(), DATAGRAMS * DATAGRAM_ROOM);
    let mut iovecs: Vec<libc::iovec> = buf
        .chunks_exact_mut(DATAGRAM_ROOM)
        .map(|slot| libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: slot.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; zero is a valid start.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: each header points at one iovec, each iovec at its own
    // slot of buf; all live across the call.
    let n = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            headers.as_mut_ptr(),
            DATAGRAMS as libc::c_uint,
            flags | libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    lens.clear();
    lens.extend(headers[..n as usize].iter().map(|h| h.msg_len as usize));
    Ok(())
}

/// Sends one netlink request to the kernel on `fd` (bound).
fn send_request(
    fd: &OwnedFd,
    kind: u16,
    flags: libc::c_int,
    seq: u32,
    body: &[u8],
) -> io::Result<()> {
    let header = libc::nlmsghdr {
        nlmsg_len: (NLMSG_HDRLEN + body.len()) as u32,
        nlmsg_type: kind,
        nlmsg_flags: (libc::NLM_F_REQUEST | flags) as u16,
        nlmsg_seq: seq,
        nlmsg_pid: 0,
    };
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    // SAFETY: nlmsghdr is plain data without padding; its bytes are read
    // for its size only.
    req.extend_from_slice(unsafe {
        std::slice::from_raw_parts(
            (&header as *const libc::nlmsghdr).cast::<u8>(),
            NLMSG_HDRLEN,
        )
    });
    req.extend_from_slice(body);
    // SAFETY: req is valid for reads of its length; the socket is bound.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one request to the kernel on `fd` and waits for its ACK; the
/// records that arrive meanwhile (on a registered daemon's socket) are
/// kept in `records`.
fn ask(fd: &OwnedFd, kind: u16, body: &[u8], records: &mut KernelBatch) -> io::Result<()> {
    send_request(fd, kind, libc::NLM_F_ACK, 1, body)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(fd, &mut buf, 0)?;
        let mut got = KernelBatch::default();
        got.add_datagram(&buf[..n]);
        if let Some(errno) = got.error() {
            return match errno {
                0 => Ok(()),
                e => Err(io::Error::from_raw_os_error(-e)),
            };
        }
        records.add_datagram(&buf[..n]);
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

/// Reads the kernel's records as `register` says, with a receive buffer
/// of `buffer` bytes, and starts a thread that hands them to the
/// daemon's thread, each batch wrapped by `wrap`. Registering needs
/// CAP_AUDIT_CONTROL, the multicast group CAP_AUDIT_READ.
pub fn start<I: Send + 'static>(
    inputs: SyncSender<I>,
    wrap: fn(KernelInput) -> I,
    register: Register,
    buffer: usize,
) -> Result<Reading> {
    let fd = audit_socket()
        .context("opening a NETLINK_AUDIT socket (is audit built into this kernel?)")?;
    let size = libc::c_int::try_from(buffer / 2).unwrap_or(libc::c_int::MAX);
    // The kernel doubles what it is given, for its bookkeeping.
    if let Err(e) = set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size) {
        warn!("could not set the audit socket's buffer: {e}");
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
            let _ = ask(&s, USER_AVC, probe.as_bytes(), &mut KernelBatch::default());
        }
        for _ in 0..50 {
            daemon = status.status()?.pid;
            if daemon == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut early = KernelBatch::default();
    let reading = match register {
        Register::Never => Reading::Beside(daemon),
        Register::Auto if daemon != 0 => Reading::Beside(daemon),
        _ => {
            bind(&fd, 0).context("binding a NETLINK_AUDIT socket")?;
            match ask(&fd, SET, &pid_status(std::process::id()), &mut early) {
                Ok(()) => Reading::Registered,
                Err(e) if register == Register::Always => {
                    return Err(e).context(
                        "registering as the audit daemon (audit.register = \"always\"; another daemon may be registered)",
                    );
                }
                // Another daemon registered in between: read beside it.
                Err(e) => {
                    warn!("could not register as the audit daemon ({e}); reading beside it");
                    return start(inputs, wrap, Register::Never, buffer);
                }
            }
        }
    };
    match reading {
        Reading::Beside(_) => bind(&fd, AUDIT_NLGRP_READLOG)
            .context("joining the audit multicast group (needs CAP_AUDIT_READ)")?,
        // The kernel keeps what it could not hand over: a full socket
        // loses nothing, and its ENOBUFS would say nothing.
        Reading::Registered => {
            if let Err(e) = set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1) {
                debug!("NETLINK_NO_ENOBUFS: {e}");
            }
        }
    }
    if early.len() > 0 && inputs.send(wrap(KernelInput::Records(early))).is_err() {
        return Ok(reading);
    }
    let beside = matches!(reading, Reading::Beside(_));
    std::thread::Builder::new()
        .name("netlink-audit".into())
        .spawn(move || Reader::new(fd, beside).run(&inputs, wrap))?;
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
    ask(&fd, SET, &pid_status(0), &mut KernelBatch::default())
        .context("unregistering as the audit daemon")
}

/// The reading thread's state.
struct Reader {
    fd: OwnedFd,
    /// Beside auditd: drops are losses (as the registered daemon they
    /// are the kernel's to count).
    beside: bool,
    drops_seen: u32,
    drops_checked: Instant,
}

impl Reader {
    fn new(fd: OwnedFd, beside: bool) -> Reader {
        let drops_seen = socket_drops(&fd).unwrap_or(0);
        Reader {
            fd,
            beside,
            drops_seen,
            drops_checked: Instant::now(),
        }
    }

    fn run<I>(mut self, inputs: &SyncSender<I>, wrap: fn(KernelInput) -> I) {
        let mut buf = vec![0u8; DATAGRAMS * DATAGRAM_ROOM];
        let mut lens = Vec::with_capacity(DATAGRAMS);
        loop {
            let mut batch = KernelBatch::with_room();
            let mut flags = 0;
            let mut overflowed = false;
            while batch.len() < BATCH {
                match recv_many(&self.fd, &mut buf, flags, &mut lens) {
                    Ok(()) => {
                        for (slot, &n) in buf.chunks_exact(DATAGRAM_ROOM).zip(&lens) {
                            batch.add_datagram(&slot[..n.min(DATAGRAM_ROOM)]);
                        }
                        if lens.len() < DATAGRAMS {
                            break;
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => overflowed = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        warn!("reading kernel audit records: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
                flags = libc::MSG_DONTWAIT;
            }
            let read = batch.len() > 0;
            if read && inputs.send(wrap(KernelInput::Records(batch))).is_err() {
                return;
            }
            if let Some(lost) = self.new_drops(overflowed) {
                if inputs.send(wrap(KernelInput::Dropped(lost))).is_err() {
                    return;
                }
            }
            if read {
                std::thread::sleep(GATHER);
            }
        }
    }

    /// Records the socket dropped since the last look: looked at after an
    /// overflow, and once a second (the kernel reports an overflow once
    /// until the socket is read empty).
    fn new_drops(&mut self, overflowed: bool) -> Option<u64> {
        if !self.beside || !(overflowed || self.drops_checked.elapsed() >= Duration::from_secs(1)) {
            return None;
        }
        self.drops_checked = Instant::now();
        let now = match socket_drops(&self.fd) {
            Ok(n) => n,
            Err(e) => {
                warn!("reading the audit socket's drop count: {e}");
                return None;
            }
        };
        let new = now.wrapping_sub(self.drops_seen);
        self.drops_seen = now;
        (new > 0).then_some(u64::from(new))
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
        send_request(&self.fd, GET, 0, self.seq, &[]).context("sending AUDIT_GET")?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = recv(&self.fd, &mut buf, 0).context("reading the AUDIT_GET answer")?;
            let mut got = KernelBatch::default();
            got.add_datagram(&buf[..n]);
            if let Some(errno) = got.error() {
                anyhow::bail!("AUDIT_GET: {}", io::Error::from_raw_os_error(-errno));
            }
            // struct audit_status: mask, enabled, failure, pid,
            // rate_limit, backlog_limit, lost, ...
            let status = got
                .iter()
                .find(|(kind, p)| *kind == GET && p.len() >= 28)
                .map(|(_, p)| {
                    let field =
                        |at: usize| u32::from_ne_bytes(p[at..at + 4].try_into().expect("4 bytes"));
                    AuditState {
                        pid: field(12),
                        lost: field(24),
                    }
                });
            if let Some(status) = status {
                return Ok(status);
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
        let mut out = KernelBatch::default();
        out.add_datagram(&buf);
        let got: Vec<(u16, &[u8])> = out.iter().collect();
        assert_eq!(got, [(1300, &b"audit(1.000:1): a=1"[..]), (1320, b"x")]);
        // A unicast record, whose length leaves out its header.
        let mut unicast = buf[..NLMSG_HDRLEN + 19].to_vec();
        unicast[0..4].copy_from_slice(&19u32.to_ne_bytes());
        let mut out = KernelBatch::default();
        out.add_datagram(&unicast);
        assert_eq!(out.iter().next().unwrap().1, b"audit(1.000:1): a=1");
        // A length past the end stops the walk instead of reading garbage.
        let mut short = KernelBatch::default();
        short.add_datagram(&buf[..20]);
        assert_eq!(short.len(), 0);
    }
}
