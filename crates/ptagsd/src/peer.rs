//! Who is on the other end of a connection, as the kernel says it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::process::Pidfd;

/// The connecting process, named by a pidfd the kernel took at connect
/// time, which keeps naming that process even if its pid is reused.
#[derive(Debug)]
pub struct Peer(pub Pidfd);

impl Peer {
    pub fn of(stream: &UnixStream) -> std::io::Result<Peer> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: cred and len are valid for writes of the sizes given.
        let ret = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut fd: libc::c_int = -1;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: fd and len are valid for writes of the sizes given.
        let ret = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERPIDFD,
                (&mut fd as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if ret != 0 || fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if cred.pid <= 0 {
            // SAFETY: a fresh fd that nothing else owns.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            return Err(std::io::Error::other(
                "the peer's pid is not visible in the daemon's PID namespace",
            ));
        }
        // SAFETY: a fresh fd from the kernel that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Peer(Pidfd::from_fd(cred.pid as u32, fd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_names_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = Peer::of(&a).unwrap();
        assert_eq!(peer.0.pid, std::process::id());
        assert!(peer.0.check_alive().is_ok());
    }
}
