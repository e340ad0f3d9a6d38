//! A real ptagsd for the end-to-end tests: its own socket, state and pin
//! directory, stopped and its pins removed when the test ends.

#![allow(dead_code)]

pub mod runc;
pub mod trail;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const USER: &str = "ptags-test";

/// The ptags CLI, built beside ptagsd by `cargo test --workspace`.
pub fn cli_path() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_ptagsd")).with_file_name("ptags");
    assert!(
        path.exists(),
        "{} is missing: build the CLI too (cargo test --workspace, or cargo build -p ptags)",
        path.display()
    );
    path
}

/// The hostile clients (`examples/hostile_client.rs`), built beside the
/// tests (`cargo build --examples`; scripts/test does).
pub fn hostile_client() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ptagsd"))
        .with_file_name("examples")
        .join("hostile_client");
    assert!(
        path.exists(),
        "{} is missing: build the examples first (cargo build --examples; scripts/test does)",
        path.display()
    );
    path
}

/// The number (a pid or a TID) a child prints on the first line of its
/// piped standard output, as the hostile clients announce themselves.
pub fn printed_id(child: &mut Child) -> u32 {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// Whether a skip must be a failure instead: PTAGS_REQUIRE_BPF=1 (CI).
pub fn skips_fail() -> bool {
    std::env::var("PTAGS_REQUIRE_BPF").is_ok_and(|v| v == "1")
}

/// Whether this machine can run the daemon; panics instead of skipping
/// when PTAGS_REQUIRE_BPF=1 (CI).
pub fn can_run(test: &str) -> bool {
    let required = skips_fail();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing = ptags_bpf::Features::probe().missing();
    if root && missing.is_empty() {
        return true;
    }
    let why = if root {
        format!("the kernel lacks {missing:?}")
    } else {
        "not root".to_owned()
    };
    assert!(
        !required,
        "{test}: BPF is required (PTAGS_REQUIRE_BPF=1) but {why}"
    );
    eprintln!("SKIPPED {test}: {why}; run as root with BPF to test the daemon");
    false
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub pin_dir: PathBuf,
    /// Where the audit trail is written.
    pub log_dir: PathBuf,
    extra: String,
    child: Option<Child>,
}

impl Daemon {
    /// Starts ptagsd with `extra` TOML appended to the test's config.
    pub fn start(test: &str, extra: &str) -> Daemon {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The test user must reach the socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/ptags-test-{test}-{}",
            std::process::id()
        ));
        let table: toml::Table = extra.parse().expect("the test's TOML");
        let log_dir = match table.get("log_dir") {
            Some(dir) => PathBuf::from(dir.as_str().expect("log_dir is a string")),
            None => dir.path().join("log"),
        };
        let mut d = Daemon {
            dir,
            pin_dir,
            log_dir,
            extra: extra.to_owned(),
            child: None,
        };
        d.spawn();
        d
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("ptagsd.sock")
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let config = d.join("ptagsd.toml");
        std::fs::write(
            &config,
            format!(
                "socket = {:?}\nstate_dir = {:?}\npin_dir = {:?}\n{}{}{}{}",
                self.socket(),
                d.join("state"),
                self.pin_dir,
                // Each daemon's files in its own directory.
                if self.extra.contains("[files]") {
                    String::new()
                } else {
                    format!("files.mountpoint = {:?}\n", d.join("proc"))
                },
                if self.extra.contains("log_dir") {
                    String::new()
                } else {
                    format!("log_dir = {:?}\n", self.log_dir)
                },
                if self.extra.contains("log_level") {
                    ""
                } else {
                    "log_level = \"debug\"\n"
                },
                self.extra
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("ptagsd.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ptagsd"))
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..500 {
            if self.answers() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ptagsd exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ptagsd did not answer in 10 s:\n{}", self.log());
    }

    /// Whether the daemon answers a status request.
    fn answers(&self) -> bool {
        use ptags_proto::{read_frame, write_frame, Request, RequestFrame, ResponseFrame};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let req = RequestFrame::new(Request::Status {}).encode();
        write_frame(&mut s, &req).is_ok()
            && read_frame(&mut s, 1 << 30, |_| Ok(()))
                .is_ok_and(|(body, ())| matches!(ResponseFrame::decode(&body), Ok(Ok(_))))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ptagsd.log")).unwrap_or_default()
    }

    /// Stops the daemon as systemd would (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "ptagsd exited with {status}:\n{}",
                self.log()
            );
        }
    }

    /// Kills the daemon (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to 10 s for the daemon to exit by itself; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the daemon runs");
        for _ in 0..500 {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ptagsd did not exit in 10 s:\n{}", self.log());
    }

    /// Restarts the daemon with `extra` in place of the TOML it had.
    pub fn restart_with(&mut self, extra: &str) {
        self.stop();
        self.extra = extra.to_owned();
        self.spawn();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs the CLI against this daemon.
    pub fn ptags(&self, args: &[&str]) -> Output {
        Command::new(cli_path())
            .args(args)
            .env("PTAGS_SOCKET", self.socket())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a shell script with the CLI on its PATH and this daemon's
    /// socket; returns its standard output (stderr is appended after a
    /// `--stderr--` line).
    pub fn sh(&self, script: &str) -> String {
        self.sh_as(script, None)
    }

    /// As [`Daemon::sh`], as user `uid` without capabilities (setpriv).
    pub fn sh_as(&self, script: &str, uid: Option<u32>) -> String {
        let bin = cli_path().parent().unwrap().to_owned();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = match uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                let id = uid.to_string();
                c.args(["--reuid", &id, "--regid", &id, "--clear-groups", "sh"]);
                c
            }
            None => Command::new("sh"),
        };
        cmd.arg("-c")
            .arg(script)
            .env("PATH", path)
            .env("PTAGS_SOCKET", self.socket())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        let out = cmd.output().unwrap();
        format!(
            "{}--stderr--\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Stopped as systemd would, so that it gives up what it holds (its
        // registration as the kernel's audit daemon); killed if it hangs.
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            for _ in 0..250 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed daemon's files stay mounted, stale, until detached.
        if let Ok(c) = std::ffi::CString::new(
            self.dir
                .path()
                .join("proc")
                .into_os_string()
                .into_encoded_bytes(),
        ) {
            // SAFETY: a NUL-terminated path; MNT_DETACH, best effort.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        ptags_bpf::Kernel::reset(&self.pin_dir).expect("removing the test's pins");
        assert!(
            !self.pin_dir.exists(),
            "{} left behind",
            self.pin_dir.display()
        );
    }
}

/// The uid of an unprivileged user made for the tests (created once).
pub fn test_user() -> u32 {
    let id = || {
        Command::new("id")
            .args(["-u", USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
    };
    if let Some(uid) = id() {
        return uid;
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ])
        .status()
        .expect("running useradd");
    // Another test may have created it meanwhile.
    id().unwrap_or_else(|| panic!("useradd {USER} failed: {status}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits up to 10 s for `cond`.
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("condition not reached in 10 s");
}

/// Sends one request on a connection and waits for its answer, which
/// must be a success (for the benchmarks).
pub fn exchange(s: &mut std::os::unix::net::UnixStream, req: &ptags_proto::Request) {
    use ptags_proto::{read_frame, write_frame, RequestFrame, ResponseFrame};
    write_frame(s, &RequestFrame::new(req.clone()).encode()).unwrap();
    let (body, ()) = read_frame(s, 1 << 30, |_| Ok(())).unwrap();
    ResponseFrame::decode(&body)
        .unwrap()
        .unwrap_or_else(|f| panic!("{req:?}: {f}"));
}
