//! Shared by the root-only kernel tests: loading with a pin directory the
//! test owns, the skip rule, and a shell to drive.
// Each test crate uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use ptags_bpf::probe::Features;
use std::time::Duration;

use ptags_bpf::{ContainerEntry, Kernel, Options, TaskId, TaskState};

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

/// A shell driven line by line: each line written to it is run, and
/// whatever it prints comes back.
pub struct Shell {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: BufReader<ChildStdout>,
}

impl Shell {
    pub fn start() -> Shell {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("while read -r cmd; do eval \"$cmd\"; done")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting sh");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut sh = Shell {
            child,
            stdin,
            stdout,
        };
        // Spawning returns once the child's exec has let go of our
        // memory, before the kernel's exec event: state set in between
        // would be taken by that exec. The shell answering means its exec
        // is over.
        assert_eq!(sh.run("echo ready"), "ready");
        sh
    }

    pub fn task(&self) -> TaskId {
        TaskId::of(self.child.id()).unwrap()
    }

    /// Runs `cmd` in the shell and returns the first line it prints.
    pub fn run(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// Starts a background child that waits, and returns its pid.
    pub fn spawn_waiting(&mut self, how: &str) -> u32 {
        self.run(&format!("{how} & echo $!")).parse().unwrap()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new top-level container whose owner is this test process.
pub fn owned_by_this_test() -> ContainerEntry {
    let me = TaskId::of(std::process::id()).unwrap();
    ContainerEntry {
        parent: None,
        owner_pid: me.tid,
        owner_start_ticks: me.start_ticks,
        live: 0,
        pending: 0,
    }
}

pub fn state(k: &Kernel, pid: u32) -> TaskState {
    k.task_state(TaskId::of(pid).unwrap())
        .unwrap()
        .unwrap_or_default()
}

/// Waits until `pid` runs the program `comm` (its exec has happened).
pub fn wait_for_comm(pid: u32, comm: &str) {
    wait_for(|| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    });
}

pub fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("condition not reached in 5 s");
}

/// A cgroup v2 directory of the test's, removed when dropped.
pub struct TestCgroup(pub std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The one child of `pid`, once it has one.
pub fn only_child(pid: u32) -> u32 {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let mut child = None;
    wait_for(|| {
        child = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        child.is_some()
    });
    child.unwrap()
}
