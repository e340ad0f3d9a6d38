//! Real runc containers for the tests: a state directory of their own,
//! bundles whose rootfs is busybox plus the ptags CLI, deleted when the
//! test ends.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{cli_path, skips_fail, Daemon};

/// Whether runc and a static busybox are here (apt-get install runc
/// busybox-static); CI fails rather than skips.
pub fn has_runc(test: &str) -> bool {
    let runc = Command::new("runc").arg("--version").output().is_ok();
    let busybox = Path::new("/bin/busybox").exists();
    if !(runc && busybox) {
        assert!(
            !skips_fail(),
            "{test}: runc and busybox-static are required"
        );
        eprintln!(
            "SKIPPED {test}: runc or busybox-static missing (apt-get install runc busybox-static)"
        );
    }
    runc && busybox
}

/// The containers of one test: a runc state directory of its own, and
/// bundles whose rootfs is busybox plus the ptags CLI.
pub struct Runc {
    pub dir: tempfile::TempDir,
    pub names: Vec<String>,
}

impl Runc {
    pub fn new() -> Runc {
        Runc {
            dir: tempfile::tempdir().unwrap(),
            names: Vec::new(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(self.dir.path().join("state"));
        c
    }

    /// runc with these arguments; its standard output, or a panic with
    /// what it said. Output goes through files: a detached container
    /// keeps runc's standard streams open long after runc returns.
    pub fn run(&self, args: &[&str]) -> String {
        let (out, err) = (self.dir.path().join("out"), self.dir.path().join("err"));
        let status = self
            .cmd()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(
            status.success(),
            "runc {args:?}: {status}: {text}{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        text
    }

    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.dir.path().join(name).join("rootfs")
    }

    /// A bundle whose process runs `args`, with the hook and `annotations`,
    /// the daemon's socket at /run/ptagsd.sock and the CLI at /ptags.
    pub fn bundle(
        &self,
        d: &Daemon,
        name: &str,
        args: &[&str],
        annotations: &[(&str, &str)],
    ) -> PathBuf {
        let bundle = self.dir.path().join(name);
        let rootfs = self.rootfs(name);
        for dir in [
            "bin",
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "lib64",
            "lib/x86_64-linux-gnu",
        ] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "sleep", "cat", "true", "unshare", "mknod", "head", "wc", "grep",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::copy(cli_path(), rootfs.join("ptags")).unwrap();
        // The CLI's shared libraries, where its loader looks.
        for lib in ["libc.so.6", "libgcc_s.so.1"] {
            let from = Path::new("/lib/x86_64-linux-gnu").join(lib);
            std::fs::copy(&from, rootfs.join("lib/x86_64-linux-gnu").join(lib)).unwrap();
        }
        std::fs::copy(
            "/lib64/ld-linux-x86-64.so.2",
            rootfs.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::fs::write(rootfs.join("watched"), "secret\n").unwrap();
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(out.status.success(), "runc spec");
        let path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = args.into();
        let hook = serde_json::json!({
            "path": cli_path(),
            "args": ["ptags", "oci-hook"],
            "env": [format!("PTAGS_SOCKET={}", d.socket().display())],
        });
        config["hooks"] = serde_json::json!({"createRuntime": [hook], "poststop": [hook]});
        config["annotations"] = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/run/ptagsd.sock",
                "type": "bind",
                "source": d.socket(),
                "options": ["bind"],
            }));
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        bundle
    }

    /// Starts a container in the background.
    pub fn start(&mut self, d: &Daemon, name: &str, args: &[&str], annotations: &[(&str, &str)]) {
        let bundle = self.bundle(d, name, args, annotations);
        self.names.push(name.to_owned());
        self.run(&["run", "-d", "--bundle", bundle.to_str().unwrap(), name]);
    }

    /// The pid of a container's first process.
    pub fn pid(&self, name: &str) -> u32 {
        let state: serde_json::Value = serde_json::from_str(&self.run(&["state", name])).unwrap();
        state["pid"].as_u64().unwrap() as u32
    }

    /// Kills and deletes a container (its poststop hook runs).
    pub fn delete(&mut self, name: &str) {
        self.run(&["delete", "--force", name]);
        self.names.retain(|n| n != name);
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.cmd().args(["delete", "--force", name]).output();
        }
    }
}
