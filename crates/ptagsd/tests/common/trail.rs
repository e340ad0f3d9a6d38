//! Reading a test daemon's audit trail, the kernel's audit rules set
//! and restored, and a tmpfs to fill.

use std::path::{Path, PathBuf};

use std::process::Command;

use super::{skips_fail, stdout, Daemon};

impl Daemon {
    /// The chain key the daemon made.
    pub fn key_file(&self) -> String {
        self.dir
            .path()
            .join("state/audit.key")
            .display()
            .to_string()
    }

    /// A counter of `ptags status`' audit section.
    pub fn audit_counter(&self, name: &str) -> u64 {
        let out = stdout(&self.ptags(&["--json", "status"]));
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("ptags --json status: {e}: {out}"));
        v["audit"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no audit.{name} in {out}"))
    }

    /// `ptags audit verify` over the files of `dir`: whether it passed, and what it said.
    pub fn verify_dir(&self, dir: &Path) -> (bool, String) {
        let out = self.ptags(&[
            "audit",
            "verify",
            "--log-dir",
            dir.to_str().unwrap(),
            "--key",
            &self.key_file(),
        ]);
        (
            out.status.success(),
            format!("{}{}", stdout(&out), super::stderr(&out)),
        )
    }
}

/// The trail's files in `dir`, oldest first.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix("audit.log.")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(dir.join("audit.log"));
    files
}

/// Every line of the trail in `dir`, oldest first.
pub fn read_trail(dir: &Path) -> String {
    log_files(dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

/// Waits up to 10 s for the trail to satisfy `cond`; shows it if not.
pub fn wait_for_trail(d: &Daemon, what: &str, cond: impl Fn(&str) -> bool) {
    for _ in 0..500 {
        if cond(&read_trail(&d.log_dir)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let text = read_trail(&d.log_dir);
    let tail = &text[text.len().saturating_sub(4000)..];
    panic!(
        "the trail never had {what}:\n{tail}\n--- daemon log:\n{}",
        d.log()
    );
}

/// The sum of `lost=` of the trail's `PTAGS_LOST source=disk` records.
pub fn disk_losses_reported(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("type=PTAGS_LOST") && l.contains("source=disk"))
        .map(|l| {
            let v = l.split(" lost=").nth(1).unwrap();
            v.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum()
}

/// A tmpfs mounted on a directory of the test's, unmounted on drop
/// (after the daemon using it: declare it first).
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let t = Tmpfs {
            dir: tempfile::tempdir().unwrap(),
        };
        t.mount_opts(&format!("size={size}"));
        t
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grows or shrinks it in place.
    pub fn resize(&self, size: &str) {
        self.mount_opts(&format!("remount,size={size}"));
    }

    fn mount_opts(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs -o {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// Whether a tool of the Debian package auditd is here; CI
/// (PTAGS_REQUIRE_BPF=1) fails rather than skips.
pub fn has_tool(test: &str, tool: &str) -> bool {
    let found = Command::new(tool).arg("-v").output().is_ok();
    if !found {
        assert!(
            !skips_fail(),
            "{test}: {tool} is required (apt-get install auditd)"
        );
        eprintln!("SKIPPED {test}: {tool} missing (apt-get install auditd)");
    }
    found
}

pub fn auditctl(args: &[&str]) -> String {
    let out = Command::new("auditctl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "auditctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// Kernel audit switched on with room for bursts; rules added through it
/// are removed, and the state restored, on drop.
pub struct AuditState {
    enabled: String,
    backlog: String,
    keys: Vec<String>,
}

impl AuditState {
    pub fn new() -> AuditState {
        let status = auditctl(&["-s"]);
        let value = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in auditctl -s:\n{status}"))
                .trim()
                .to_owned()
        };
        let state = AuditState {
            enabled: value("enabled"),
            backlog: value("backlog_limit"),
            keys: Vec::new(),
        };
        auditctl(&["-b", "8192"]);
        auditctl(&["-e", "1"]);
        state
    }

    /// Adds a rule whose key is `key` (the rule's last arguments).
    pub fn rule(&mut self, args: &[&str], key: &str) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-k", key]);
        auditctl(&all);
        self.keys.push(key.to_owned());
    }
}

impl Drop for AuditState {
    fn drop(&mut self) {
        for key in &self.keys {
            let _ = Command::new("auditctl").args(["-D", "-k", key]).output();
        }
        let _ = Command::new("auditctl")
            .args(["-b", &self.backlog])
            .output();
        let _ = Command::new("auditctl")
            .args(["-e", &self.enabled])
            .output();
    }
}
