//! What the running kernel offers, checked at start-up so that a missing
//! feature is named instead of surfacing as a verifier error.

use std::fmt;
use std::path::Path;

/// The kernel features ptags uses or could use. tp_btf programs are not
/// probed here: libbpf cannot probe them without a target, and loading
/// them names the failure precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub btf: bool,
    pub task_storage: bool,
    pub ring_buffer: bool,
    pub syscall_programs: bool,
    pub cgroup_device: bool,
    /// Whether the kernel knows BPF LSM programs. On the kernels this
    /// project targets they are known but refused at load (EPERM), so
    /// ptags never relies on them.
    pub lsm_programs: bool,
}

fn map_type(t: libbpf_sys::bpf_map_type) -> bool {
    // SAFETY: a plain probe call; NULL options are allowed.
    unsafe { libbpf_sys::libbpf_probe_bpf_map_type(t, std::ptr::null()) == 1 }
}

fn prog_type(t: libbpf_sys::bpf_prog_type) -> bool {
    // SAFETY: a plain probe call; NULL options are allowed.
    unsafe { libbpf_sys::libbpf_probe_bpf_prog_type(t, std::ptr::null()) == 1 }
}

impl Features {
    pub fn probe() -> Features {
        Features {
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            task_storage: map_type(libbpf_sys::BPF_MAP_TYPE_TASK_STORAGE),
            ring_buffer: map_type(libbpf_sys::BPF_MAP_TYPE_RINGBUF),
            syscall_programs: prog_type(libbpf_sys::BPF_PROG_TYPE_SYSCALL),
            cgroup_device: prog_type(libbpf_sys::BPF_PROG_TYPE_CGROUP_DEVICE),
            lsm_programs: prog_type(libbpf_sys::BPF_PROG_TYPE_LSM),
        }
    }

    /// The features ptags cannot run without that this kernel lacks.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (self.btf, "BTF (/sys/kernel/btf/vmlinux)"),
            (self.task_storage, "BPF task storage"),
            (self.ring_buffer, "BPF ring buffers"),
            (self.syscall_programs, "BPF syscall programs"),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, name)| name)
        .collect()
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "BTF: {}, task storage: {}, ring buffer: {}, syscall programs: {}, cgroup device: {}, BPF LSM known: {}",
            yes(self.btf),
            yes(self.task_storage),
            yes(self.ring_buffer),
            yes(self.syscall_programs),
            yes(self.cgroup_device),
            yes(self.lsm_programs)
        )
    }
}
