//! The kernel side of ptags.
//!
//! [`Kernel`] owns the loaded BPF programs, their links, maps and pins.
//! The programs (`src/bpf/ptags.bpf.c`) keep each task's tag-set ID,
//! kept-subset ID and container ID in task storage and copy, prune and
//! account them on fork, exec and exit by themselves; user space only
//! sets state, through [`Kernel::set`], and reads it.

mod devices;
mod facts;
mod kernel;
mod memcg;
pub mod namespaces;
mod pins;
pub mod probe;
pub mod procfs;
mod task;

pub use devices::{DeviceException, DEVICES_ATTACH};
pub use facts::{FactsReader, PeerCreds, TaskFacts};
pub use kernel::{
    DeviceDenial, Event, EventKind, EventReader, Join, Kernel, LocalPids, LostCounts, NsWatch,
    Options, Set, ATTACHED,
};
pub use namespaces::{Namespaces, NsChange, Seen};
pub use probe::Features;
pub use task::{
    mount_namespace_id, ContainerEntry, ContidChange, SetOp, TaskId, TaskRow, TaskState,
};

/// Types shared with the BPF programs, generated from `src/bpf/intf.h`.
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    clippy::all
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/ptags.skel.rs"));
}

/// Everything the kernel side can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Bpf {
        context: String,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the pins under {dir} are of another layout ({found}); this build uses layout {expected}. Stop the old daemon and remove them with `Kernel::reset` (ptagsd --reset-pins) to start afresh")]
    LayoutMismatch {
        dir: String,
        found: String,
        expected: u32,
    },
    #[error("task {0} does not exist (or exited, or its pid was reused)")]
    NoSuchTask(u32),
    #[error("task {0} has children or other threads")]
    NotAlone(u32),
    #[error("setting the state of task {tid} failed: errno {errno}")]
    SetFailed { tid: u32, errno: i32 },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, libbpf_rs::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Bpf {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}
