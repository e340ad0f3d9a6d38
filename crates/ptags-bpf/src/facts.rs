//! What the daemon decides on about a task (its identity, credentials,
//! audit fields and labels), read from the kernel in one system call by the
//! `ptags_facts` program (facts.bpf.h) instead of half a dozen /proc files.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::skel::types::{ptags_facts_args, ptags_peer_args};
use crate::task::{TaskId, TaskState};
use crate::{Context, Error, Result};

// SAFETY: a plain C struct of integers and bytes, generated from intf.h.
unsafe impl plain::Plain for ptags_facts_args {}
// SAFETY: as above.
unsafe impl plain::Plain for ptags_peer_args {}

/// A task as the kernel has it at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFacts {
    pub id: TaskId,
    /// Its process (thread-group ID).
    pub tgid: u32,
    /// Real, effective, saved and filesystem IDs (objective credentials,
    /// as /proc/PID/status shows them).
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub cap_eff: u64,
    /// Whether its credentials are of the initial user namespace, where
    /// its capabilities count for the whole machine.
    pub init_userns: bool,
    /// Its audit login uid and session (u32::MAX: unset).
    pub loginuid: u32,
    pub sessionid: u32,
    /// Its PID namespace's inode number (as /proc/PID/ns/pid has it).
    pub pid_ns: u32,
    /// Whether its memory may be dumped: a task that dropped privileges
    /// without exec may not, and ptrace keeps others out of it.
    pub dumpable: bool,
    /// Whether it has begun to exit: a main thread gone before its
    /// process is no longer what its process's credentials are.
    pub exiting: bool,
    pub comm: Vec<u8>,
    /// Its labels; `None` when the kernel holds nothing for it.
    pub state: Option<TaskState>,
}

/// The credentials a socket's peer had when it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCreds {
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub cap_eff: u64,
    pub init_userns: bool,
}

/// Reads [`TaskFacts`] and [`PeerCreds`]; cheap to clone and usable from
/// any thread (each read is its own run of a program).
#[derive(Debug, Clone)]
pub struct FactsReader {
    facts: Arc<OwnedFd>,
    peer: Arc<OwnedFd>,
}

/// Runs a syscall program on `args`, which it reads and writes back.
fn run<T: plain::Plain>(prog: &OwnedFd, args: &mut T, what: &str) -> Result<()> {
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        ctx_in: (args as *mut T).cast(),
        ctx_size_in: size_of::<T>() as u32,
        ..Default::default()
    };
    // SAFETY: opts points at `args`, which lives across the call and is
    // exactly the size the program's context declares; the kernel writes
    // the context back into it.
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    if ret != 0 {
        return Err(std::io::Error::from_raw_os_error(-ret)).context(|| format!("running {what}"));
    }
    Ok(())
}

impl FactsReader {
    pub(crate) fn new(facts: OwnedFd, peer: OwnedFd) -> FactsReader {
        FactsReader {
            facts: Arc::new(facts),
            peer: Arc::new(peer),
        }
    }

    /// The programs, for pinning: facts, then peer.
    pub(crate) fn progs(&self) -> [&OwnedFd; 2] {
        [&self.facts, &self.peer]
    }

    /// The credentials the peer of this process's connected Unix socket
    /// `socket` had when it connected. A Unix stream by type: the program
    /// takes the descriptor's file for a socket.
    pub fn peer(&self, socket: &std::os::unix::net::UnixStream) -> Result<PeerCreds> {
        let mut args = ptags_peer_args {
            fd: socket.as_raw_fd(),
            ..Default::default()
        };
        run(&self.peer, &mut args, "the peer program")?;
        if args.result != 0 {
            return Err(std::io::Error::from_raw_os_error(-args.result))
                .context(|| "reading the peer's credentials".into());
        }
        Ok(PeerCreds {
            uids: args.uids,
            gids: args.gids,
            cap_eff: args.cap_eff,
            init_userns: args.user_ns_level == 0,
        })
    }

    /// The task `tid` (initial PID namespace) now; `NoSuchTask` when
    /// there is none.
    pub fn read(&self, tid: u32) -> Result<TaskFacts> {
        let mut args = ptags_facts_args {
            tid,
            ..Default::default()
        };
        run(&self.facts, &mut args, "the facts program")?;
        if args.result != 0 {
            return Err(Error::NoSuchTask(tid));
        }
        let comm = args.comm.iter().take_while(|&&c| c != 0).map(|&c| c as u8);
        Ok(TaskFacts {
            id: TaskId {
                tid,
                start_ticks: args.start_ticks,
            },
            tgid: args.tgid,
            uids: args.uids,
            gids: args.gids,
            cap_eff: args.cap_eff,
            init_userns: args.user_ns_level == 0,
            loginuid: args.loginuid,
            sessionid: args.sessionid,
            pid_ns: args.pid_ns,
            dumpable: args.dumpable != 0,
            exiting: args.exiting != 0,
            comm: comm.collect(),
            state: (args.has_state != 0).then(|| TaskState::from_raw(&args.state)),
        })
    }
}
