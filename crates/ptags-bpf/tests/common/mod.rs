//! Shared by the root-only kernel tests: loading with a pin directory the
//! test owns, and the skip rule.

use std::path::PathBuf;

use ptags_bpf::probe::Features;
use ptags_bpf::{Kernel, Options};

/// Whether a skip must be a failure instead: PTAGS_REQUIRE_BPF=1 (CI).
pub fn skips_fail() -> bool {
    std::env::var("PTAGS_REQUIRE_BPF").is_ok_and(|v| v == "1")
}

/// `None` (after saying so loudly) when this machine cannot run BPF tests;
/// panics instead when PTAGS_REQUIRE_BPF=1, as CI sets it.
pub fn kernel_or_skip(test: &str) -> Option<Kernel> {
    let required = skips_fail();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing = Features::probe().missing();
    if !root || !missing.is_empty() {
        let why = if root {
            format!("kernel lacks {missing:?}")
        } else {
            "not root".to_owned()
        };
        assert!(
            !required,
            "{test}: BPF is required here (PTAGS_REQUIRE_BPF=1) but {why}"
        );
        eprintln!("SKIPPED {test}: {why}; run as root with BPF to test the kernel side");
        return None;
    }
    Some(Kernel::open(&Options::default()).expect("loading the BPF programs"))
}

/// A pin directory owned by one test, removed (with its pins) on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(test: &str) -> PinDir {
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/ptags-test-{test}-{}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        Kernel::reset(&self.0).expect("removing the test's pins");
        assert!(!self.0.exists(), "{} left behind", self.0.display());
    }
}
