//! What the daemon decides on about a task (its identity, credentials,
//! audit fields and labels), read from the kernel in one system call by the
//! `ptags_facts` program (facts.bpf.h) instead of half a dozen /proc files.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::skel::types::ptags_facts_args;
use crate::task::{TaskId, TaskState};
use crate::{Context, Error, Result};

// SAFETY: a plain C struct of integers and bytes, generated from intf.h.
unsafe impl plain::Plain for ptags_facts_args {}

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
    pub comm: Vec<u8>,
    /// Its labels; `None` when the kernel holds nothing for it.
    pub state: Option<TaskState>,
}

/// Reads [`TaskFacts`]; cheap to clone and usable from any thread (each
/// read is its own run of the program).
#[derive(Debug, Clone)]
pub struct FactsReader {
    prog: Arc<OwnedFd>,
}

impl FactsReader {
    pub(crate) fn new(prog: OwnedFd) -> FactsReader {
        FactsReader {
            prog: Arc::new(prog),
        }
    }

    pub(crate) fn prog(&self) -> &OwnedFd {
        &self.prog
    }

    /// The task `tid` (initial PID namespace) now; `NoSuchTask` when
    /// there is none.
    pub fn read(&self, tid: u32) -> Result<TaskFacts> {
        let mut args = ptags_facts_args {
            tid,
            ..Default::default()
        };
        let mut opts = libbpf_sys::bpf_test_run_opts {
            sz: size_of::<libbpf_sys::bpf_test_run_opts>() as _,
            ctx_in: (&mut args as *mut ptags_facts_args).cast(),
            ctx_size_in: size_of::<ptags_facts_args>() as u32,
            ..Default::default()
        };
        // SAFETY: opts points at `args`, which lives across the call and
        // is exactly the size the program's context declares; the kernel
        // writes the context back into it.
        let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(self.prog.as_raw_fd(), &mut opts) };
        if ret != 0 {
            return Err(std::io::Error::from_raw_os_error(-ret))
                .context(|| "running the facts program".into());
        }
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
            comm: comm.collect(),
            state: (args.has_state != 0).then(|| TaskState::from_raw(&args.state)),
        })
    }
}
