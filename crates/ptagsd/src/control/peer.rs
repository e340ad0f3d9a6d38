//! Who is on the other end of a connection, as the kernel says it.
//!
//! Two facts come from the kernel, never from the client: who opened
//! the connection, with the credentials it had then (`SO_PEERCRED`,
//! `SO_PEERPIDFD`), and who wrote each piece of data (`SCM_CREDENTIALS`,
//! attached to every write because the listening socket asks for them). A request is judged as the
//! process that wrote it, never with more capabilities than the process
//! that connected had (docs/protocol.md, "Who a request is judged as").

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use crate::error::Error;

use crate::host::pidns::share_namespace;
use crate::host::{privileged, Creds, Pidfd};
use ptags_bpf::FactsReader;

/// A socket option whose value is a plain C struct or integer.
fn socket_option<T: Copy>(
    fd: &impl AsRawFd,
    option: libc::c_int,
    mut value: T,
) -> std::io::Result<T> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of the size given, and T
    // is the plain type the kernel writes for this option.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

fn set_flag(fd: &impl AsRawFd, option: libc::c_int) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to an int of the given size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to attach its writer's credentials to every piece of
/// data sent on connections to `listener`. Connections inherit this when
/// they are made (not when accepted), so data sent before the daemon
/// accepts carries them too.
pub fn attest_writers(listener: &UnixListener) -> std::io::Result<()> {
    set_flag(listener, libc::SO_PASSCRED)
}

/// The most a connection's requests may be judged with: the capabilities
/// of the process that connected, as it was when it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    pub cap_eff: u64,
    pub init_userns: bool,
}

impl Ceiling {
    pub const NOTHING: Ceiling = Ceiling {
        cap_eff: 0,
        init_userns: false,
    };

    /// Whether these capabilities make a runtime or an administrator.
    pub fn privileged(&self) -> bool {
        privileged(self.cap_eff, self.init_userns)
    }
}

/// The process that opened a connection, as it was when it connected,
/// held by a pidfd for as long as the connection lives.
#[derive(Debug)]
pub struct Connector {
    /// Its effective user ID at connect time (`SO_PEERCRED`).
    pub uid: u32,
    /// The PID namespace its share is counted in, if it is uid 0
    /// ([`share_namespace`]; 0 when it could not be read): a
    /// container's, or the host's.
    pub pid_ns: u64,
    pub ceiling: Ceiling,
    process: Option<Pidfd>,
    facts: FactsReader,
}

impl Connector {
    /// The process that wrote `writer`'s bytes, and whether it is the one
    /// that connected. The connector is held by a pidfd since accept: while
    /// it is alive (not reaped) no other process can have its pid, so a
    /// writer with that pid is the connector. Any other writer is named by
    /// a pidfd opened now, the best that can be had (it is judged without
    /// capabilities or tags, so a pid reused meanwhile gains nothing).
    pub fn identify(&self, writer: &Writer) -> Result<(Pidfd, bool), Error> {
        if let Some(connector) = &self.process {
            if connector.pid == writer.pid && connector.check_alive().is_ok() {
                return Ok((
                    connector.try_clone().map_err(|_| Error::gone(writer.pid))?,
                    true,
                ));
            }
        }
        Ok((Pidfd::open(writer.pid)?, false))
    }

    /// Whether `writer` may go past a user's share (a runtime, the hook,
    /// an administrator): only the connector may, with its capabilities
    /// now, under the connection's ceiling, privileged.
    pub fn privileged(&self, writer: &Writer) -> bool {
        match self.identify(writer) {
            Ok((pidfd, true)) => Creds::read(&self.facts, pidfd.pid).is_ok_and(|creds| {
                pidfd.check_alive().is_ok() && creds.capped(&self.ceiling).privileged()
            }),
            _ => false,
        }
    }

    /// The connecting process's capabilities as they were when it
    /// connected (the credentials the kernel saved with the socket), if it
    /// was not then between the IDs of a set-ID program; otherwise
    /// nothing. A process that became more privileged since (a set-ID
    /// program run with the connection as standard input, a program with
    /// file capabilities exec'd before the daemon accepted) gains nothing.
    pub fn of(stream: &UnixStream, facts: &FactsReader) -> std::io::Result<Connector> {
        let none = libc::ucred {
            pid: 0,
            uid: u32::MAX,
            gid: u32::MAX,
        };
        let cred = socket_option(stream, libc::SO_PEERCRED, none)?;
        let fd: libc::c_int = socket_option(stream, libc::SO_PEERPIDFD, -1)?;
        let process = (fd >= 0 && cred.pid > 0).then(|| {
            // SAFETY: a fresh fd from the kernel that nothing else owns.
            Pidfd::from_fd(cred.pid as u32, unsafe { OwnedFd::from_raw_fd(fd) })
        });
        let at_connect = facts
            .peer(stream)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let at_connect = Creds::of_peer(&at_connect);
        let ceiling = if process.is_some() && !at_connect.changing_ids() {
            Ceiling {
                cap_eff: at_connect.cap_eff,
                init_userns: at_connect.init_userns,
            }
        } else {
            Ceiling::NOTHING
        };
        let pid_ns = process
            .as_ref()
            .and_then(|p| share_namespace(p.pid))
            .unwrap_or(0);
        Ok(Connector {
            uid: cred.uid,
            pid_ns,
            ceiling,
            process,
            facts: facts.clone(),
        })
    }
}

/// The process that wrote some bytes, as the kernel attached it to them
/// (`SCM_CREDENTIALS`, taken at the write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    /// Its thread-group ID, in the daemon's PID namespace.
    pub pid: u32,
    /// Its real user ID when it wrote: whose memory budget the bytes use.
    pub uid: u32,
}

/// The caller of one request: the process that wrote it, and the most
/// its connection allows.
#[derive(Debug)]
pub struct Peer {
    pub writer: Pidfd,
    pub ceiling: Ceiling,
    /// Whether the writer is the process that opened the connection. A
    /// request written by another one (a child that inherited the
    /// connection, or a pid a namespace's root named in its credentials)
    /// is judged without capabilities and without tags: it may read, and
    /// nothing else.
    pub connector_wrote: bool,
}

impl Peer {
    pub fn pid(&self) -> u32 {
        self.writer.pid
    }
}

/// What one `recvmsg` gave: the bytes' count and their writer.
pub struct Received {
    pub len: usize,
    pub writer: Option<Writer>,
}

/// Room for one SCM_CREDENTIALS message, and some descriptors a client
/// may send along (closed at once).
#[repr(C, align(8))]
struct ControlBuffer([u8; 128]);

/// Receives into `buf` with the writer's credentials. The kernel never
/// returns the bytes of two writers from one call (with SO_PASSCRED set
/// it stops at a change of writer). `writer` is `None` when the kernel
/// attached none, which a connection of this daemon's listener never
/// does for data; 0 bytes: the peer closed.
pub fn receive(
    stream: &UnixStream,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> std::io::Result<Received> {
    let mut control = ControlBuffer([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the fields set below point to
    // live buffers of the lengths given.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    let n = loop {
        // SAFETY: msg describes valid buffers for the kernel to fill.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut cred = None;
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed control messages; the CMSG macros walk them in bounds.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            if (*cmsg).cmsg_level == libc::SOL_SOCKET {
                match (*cmsg).cmsg_type {
                    libc::SCM_CREDENTIALS => {
                        cred = Some(std::ptr::read_unaligned::<libc::ucred>(data.cast()));
                    }
                    // Descriptors a client sent along: the kernel installed
                    // them in this process. Closed at once, or a client
                    // could exhaust the daemon's descriptors.
                    libc::SCM_RIGHTS => {
                        let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                        for i in 0..bytes / size_of::<libc::c_int>() {
                            let fd: libc::c_int =
                                std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                            if fd >= 0 {
                                drop(OwnedFd::from_raw_fd(fd));
                            }
                        }
                    }
                    _ => {}
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let writer = cred.filter(|c| c.pid > 0 && n > 0).map(|c| Writer {
        pid: c.pid as u32,
        uid: c.uid,
    });
    Ok(Received { len: n, writer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pair() -> (UnixStream, UnixStream) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        attest_writers(&listener).unwrap();
        let client = UnixStream::connect(&path).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn each_write_names_its_writer() {
        let (mut client, server) = pair();
        client.write_all(b"abc").unwrap();
        let mut buf = [std::mem::MaybeUninit::new(0u8); 16];
        let got = receive(&server, &mut buf).unwrap();
        assert_eq!(got.len, 3);
        let writer = got.writer.expect("the kernel attached the writer");
        assert_eq!(writer.pid, std::process::id());
        drop(client);
        assert_eq!(receive(&server, &mut buf).unwrap().len, 0);
    }

    #[test]
    fn the_connector_of_this_process_has_its_capabilities() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("PTAGS_REQUIRE_BPF").as_deref() != Ok("1"),
                "BPF is required here (PTAGS_REQUIRE_BPF=1) but this is not root"
            );
            eprintln!("SKIPPED the_connector_of_this_process_has_its_capabilities: not root; the facts program needs BPF");
            return;
        }
        let kernel = ptags_bpf::Kernel::open(&ptags_bpf::Options::default()).unwrap();
        let facts = kernel.facts();
        let (_client, server) = pair();
        let me = Creds::read(facts, std::process::id()).unwrap();
        let connector = Connector::of(&server, facts).unwrap();
        assert_eq!(connector.uid, me.uids[1]);
        assert_eq!(connector.ceiling.cap_eff, me.cap_eff);
        assert_eq!(connector.ceiling.init_userns, me.init_userns);
        let me_writing = Writer {
            pid: std::process::id(),
            uid: me.uids[0],
        };
        let (pidfd, connected) = connector.identify(&me_writing).unwrap();
        assert!(connected && pidfd.pid == std::process::id());
        let init = Writer { pid: 1, uid: 0 };
        assert!(!connector.identify(&init).unwrap().1, "another writer");
    }
}
