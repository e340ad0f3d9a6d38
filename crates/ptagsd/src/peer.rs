//! Who is on the other end of a connection, as the kernel says it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::process::Pidfd;

/// A socket option whose value is a plain C struct or integer.
fn socket_option<T: Copy>(
    stream: &UnixStream,
    option: libc::c_int,
    mut value: T,
) -> std::io::Result<T> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of the size given, and T
    // is the plain type the kernel writes for this option.
    let ret = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
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

/// The connecting process, named by a pidfd the kernel took at connect
/// time, which keeps naming that process even if its pid is reused.
pub fn peer_of(stream: &UnixStream) -> std::io::Result<Pidfd> {
    let no_cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let cred = socket_option(stream, libc::SO_PEERCRED, no_cred)?;
    let fd: libc::c_int = socket_option(stream, libc::SO_PEERPIDFD, -1)?;
    if fd < 0 {
        return Err(std::io::Error::other(
            "the kernel gave no pidfd of the peer",
        ));
    }
    // SAFETY: a fresh fd from the kernel that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if cred.pid <= 0 {
        return Err(std::io::Error::other(
            "the peer's pid is not visible in the daemon's PID namespace",
        ));
    }
    Ok(Pidfd::from_fd(cred.pid as u32, fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_names_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = peer_of(&a).unwrap();
        assert_eq!(peer.pid, std::process::id());
        assert!(peer.check_alive().is_ok());
    }
}
