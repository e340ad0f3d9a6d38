//! The configuration: TOML, with every key defaulted from the embedded
//! `ptagsd.toml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The defaults, also shipped as the example configuration.
pub const DEFAULT_TOML: &str = include_str!("ptagsd.toml");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_mode: String,
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub log_level: String,
    pub limits: Limits,
    pub collect: Collect,
    pub audit: Audit,
    pub namespaces: Namespaces,
    pub files: Files,
}

/// The 2016 interface as files (docs/files.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    pub mount: FilesMount,
    pub mountpoint: PathBuf,
}

/// Whether ptagsd mounts the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesMount {
    /// When the machine has FUSE (/dev/fuse).
    Auto,
    /// Always; failing to start without FUSE.
    Always,
    Never,
}

/// The trail's namespace records (NS_INFO, NS_CREATE, NS_CHANGE,
/// NS_DESTROY).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    pub records: NsRecords,
    /// Milliseconds between sweeps of all tasks, which find unshares and
    /// setns of tasks that neither fork, exec nor exit, and namespaces
    /// no task uses any more.
    pub sweep_ms: u64,
    /// The NFLOG group listened on in every network namespace a
    /// container uses (0: none).
    pub nflog_group: u16,
    /// Network namespaces listened in at once, at most, in all and for
    /// one container.
    pub nflog_max_namespaces: u32,
    pub nflog_max_namespaces_per_container: u32,
    /// Packets recorded per network namespace: `packet_burst` at once,
    /// then `packet_rate` a second; the rest is counted.
    pub packet_burst: u32,
    pub packet_rate: u32,
    /// Namespace changes recorded per user in each container:
    /// `record_burst` at once, then `record_rate` a second; the rest is
    /// counted.
    pub record_burst: u32,
    pub record_rate: u32,
}

/// Whose namespaces are on record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsRecords {
    Off,
    /// Tasks in containers.
    Containers,
    /// Every task (each gets task storage: a cost on every fork).
    All,
}

/// The audit trail: `log_dir/audit.log` and its rotated copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    pub format: LogFormat,
    /// Read the kernel's audit records (NETLINK_AUDIT) and name their container.
    pub kernel: bool,
    /// PTAGS_EXEC and PTAGS_EXIT records for tasks in containers.
    pub process_records: bool,
    /// Whether to register as the kernel's audit daemon.
    pub register: Register,
    /// The kernel-audit socket's receive buffer, in KiB.
    pub receive_buffer_kib: u64,
    pub max_log_file_mib: u64,
    pub num_logs: u32,
    pub flush: Flush,
    pub freq: u64,
    pub space_left_mib: u64,
    pub space_left_action: DiskAction,
    pub disk_full_action: DiskAction,
    /// Records of refused requests per user: `refusal_burst` at once,
    /// then `refusal_rate` a second; the rest is counted.
    pub refusal_burst: u32,
    pub refusal_rate: u32,
}

/// Whether ptagsd registers as the kernel's audit daemon (AUDIT_SET with
/// its pid, as auditd does): then the kernel hands it every record by
/// unicast, keeps them in its backlog for it, and stops printing them to
/// the kernel log. Otherwise it reads the multicast copy beside auditd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Register {
    /// When no audit daemon is registered at start.
    Auto,
    /// Always; failing to start when another daemon is registered.
    Always,
    /// Never: read beside whatever daemon runs (or none).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Audit,
    Json,
}

/// When written records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flush {
    /// Left to the kernel.
    None,
    /// fdatasync every `freq` records.
    Incremental,
    /// fdatasync after every batch.
    Data,
    /// fsync after every batch.
    Sync,
}

/// What to do when the log's file system runs low or full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskAction {
    /// Keep trying; records that cannot be written are counted as lost.
    Ignore,
    /// As ignore, and say so in the daemon's log.
    Syslog,
    /// Stop writing (counting what is lost) until space is back.
    Suspend,
    /// Rotate, deleting the oldest log, and go on.
    Rotate,
    /// Stop the daemon: no change without its record.
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_containers: u32,
    pub max_depth: u32,
    pub max_connections: u32,
    pub max_connections_per_uid: u32,
    pub privileged_connections: u32,
    pub max_inflight_bytes: u64,
    pub max_inflight_bytes_per_uid: u64,
    pub privileged_reserve_bytes: u64,
    pub request_timeout_secs: u64,
    pub idle_timeout_ms: u64,
    pub frame_timeout_ms: u64,
    pub changes_per_sec_per_uid: u32,
    pub changes_burst_per_uid: u32,
    pub max_tag_bytes_per_uid: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collect {
    pub interval_secs: u64,
    pub after_new_sets: u64,
}

/// A file's keys over the defaults, table by table.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Config {
    pub fn defaults() -> Config {
        Config::parse("").expect("the embedded defaults are valid")
    }

    /// Parses a configuration text over the defaults and validates it.
    pub fn parse(text: &str) -> Result<Config> {
        let mut table: toml::Table = DEFAULT_TOML.parse().expect("embedded defaults parse");
        merge(&mut table, text.parse::<toml::Table>()?);
        let config: Config = toml::Value::Table(table).try_into()?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Whose namespaces the kernel programs watch.
    pub fn ns_watch(&self) -> ptags_bpf::NsWatch {
        match self.namespaces.records {
            NsRecords::Off => ptags_bpf::NsWatch::Off,
            NsRecords::Containers => ptags_bpf::NsWatch::Containers,
            NsRecords::All => ptags_bpf::NsWatch::All,
        }
    }

    pub fn socket_mode(&self) -> u32 {
        u32::from_str_radix(&self.socket_mode, 8).expect("validated")
    }

    pub fn validate(&self) -> Result<()> {
        for (key, path) in [
            ("socket", &self.socket),
            ("state_dir", &self.state_dir),
            ("pin_dir", &self.pin_dir),
            ("log_dir", &self.log_dir),
            ("files.mountpoint", &self.files.mountpoint),
        ] {
            if !path.is_absolute() {
                bail!("{key} must be an absolute path, not {}", path.display());
            }
        }
        // sun_path holds 108 bytes with its NUL.
        // Its root-only twin is 5 bytes longer.
        if self.socket.as_os_str().len() > 102 {
            bail!("socket path is longer than the 102 bytes a Unix socket (and its \".priv\" twin) allow");
        }
        match u32::from_str_radix(&self.socket_mode, 8) {
            Ok(mode) if mode <= 0o777 => {}
            _ => bail!(
                "socket_mode must be octal permission bits such as \"0666\", not {:?}",
                self.socket_mode
            ),
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            bail!(
                "log_level must be error, warn, info, debug or trace, not {:?}",
                self.log_level
            );
        }
        let l = &self.limits;
        for (key, value, min) in [
            ("limits.max_containers", u64::from(l.max_containers), 1),
            ("limits.max_depth", u64::from(l.max_depth), 1),
            ("limits.max_connections", u64::from(l.max_connections), 2),
            (
                "limits.max_connections_per_uid",
                u64::from(l.max_connections_per_uid),
                1,
            ),
            ("limits.max_inflight_bytes", l.max_inflight_bytes, 1 << 20),
            (
                "limits.max_inflight_bytes_per_uid",
                l.max_inflight_bytes_per_uid,
                1 << 20,
            ),
            ("limits.request_timeout_secs", l.request_timeout_secs, 1),
            ("limits.idle_timeout_ms", l.idle_timeout_ms, 10),
            ("limits.frame_timeout_ms", l.frame_timeout_ms, 10),
            (
                "limits.changes_burst_per_uid",
                u64::from(l.changes_burst_per_uid),
                1,
            ),
            // Well above the largest tag (about 37 KB), so that a slip of a
            // digit cannot refuse every write.
            (
                "limits.max_tag_bytes_per_uid",
                l.max_tag_bytes_per_uid,
                1 << 20,
            ),
            ("collect.interval_secs", self.collect.interval_secs, 1),
            ("collect.after_new_sets", self.collect.after_new_sets, 1),
            ("namespaces.sweep_ms", self.namespaces.sweep_ms, 100),
            (
                "namespaces.record_burst",
                u64::from(self.namespaces.record_burst),
                1,
            ),
        ] {
            if value < min {
                bail!("{key} must be at least {min}, not {value}");
            }
        }
        let a = &self.audit;
        for (key, value, min) in [
            ("audit.max_log_file_mib", a.max_log_file_mib, 1),
            ("audit.num_logs", u64::from(a.num_logs), 1),
            ("audit.freq", a.freq, 1),
            ("audit.refusal_burst", u64::from(a.refusal_burst), 1),
            ("audit.refusal_rate", u64::from(a.refusal_rate), 1),
            ("audit.receive_buffer_kib", a.receive_buffer_kib, 4),
        ] {
            if value < min {
                bail!("{key} must be at least {min}, not {value}");
            }
        }
        if a.num_logs > 999 {
            bail!("audit.num_logs may be at most 999");
        }
        if a.receive_buffer_kib > 1 << 20 {
            bail!("audit.receive_buffer_kib may be at most 1048576 (1 GiB)");
        }
        if l.privileged_connections >= l.max_connections {
            bail!("limits.privileged_connections must be less than limits.max_connections");
        }
        if l.privileged_reserve_bytes >= l.max_inflight_bytes {
            bail!("limits.privileged_reserve_bytes must be less than limits.max_inflight_bytes");
        }
        if l.max_depth > 64 {
            bail!("limits.max_depth may be at most 64");
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("configs serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_those_of_the_issue() {
        let c = Config::defaults();
        assert_eq!(c.socket, Path::new("/run/ptags/ptagsd.sock"));
        assert_eq!(c.socket, Path::new(ptags_proto::limits::DEFAULT_SOCKET));
        assert_eq!(c.socket_mode(), 0o666);
        assert_eq!(c.limits.max_containers, 65536);
        assert_eq!(c.limits.max_depth, 8);
        assert_eq!(c.limits.max_tag_bytes_per_uid, 256 << 20);
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn a_file_overrides_single_keys() {
        let c = Config::parse("pin_dir = \"/sys/fs/bpf/x\"\n[limits]\nmax_depth = 2\n").unwrap();
        assert_eq!(c.pin_dir, Path::new("/sys/fs/bpf/x"));
        assert_eq!(c.limits.max_depth, 2);
        assert_eq!(c.limits.max_containers, 65536);
        assert_eq!(c.state_dir, Config::defaults().state_dir);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        for (text, needle) in [
            ("socket = \"relative.sock\"", "absolute"),
            ("sockett = \"/x\"", "unknown field"),
            ("[limits]\nmax_depth = 0", "max_depth"),
            ("[limits]\nmax_depth = -1", "max_depth"),
            ("[limits]\nmax_depth = 65", "at most 64"),
            (
                "[limits]\nprivileged_reserve_bytes = 536870912",
                "less than",
            ),
            ("[limits]\nidle_timeout_ms = 0", "idle_timeout_ms"),
            ("socket_mode = \"999\"", "octal"),
            ("log_level = \"loud\"", "log_level"),
            ("pin_dir = 3", "pin_dir"),
            ("[limits\n", "TOML"),
            ("[audit]\nformat = \"xml\"", "format"),
            ("[audit]\ndisk_full_action = \"panic\"", "disk_full_action"),
            ("[audit]\nnum_logs = 0", "num_logs"),
            (
                "[limits]\nmax_tag_bytes_per_uid = 1000",
                "max_tag_bytes_per_uid",
            ),
            (
                "[limits]\nmax_tag_bytes_per_uid = -1",
                "max_tag_bytes_per_uid",
            ),
            ("[audit]\nflush = 1", "flush"),
            ("[audit]\nrefusal_burst = 0", "refusal_burst"),
            ("[audit]\nrefusal_rate = 0", "refusal_rate"),
            ("[audit]\nrefusal_rate = -5", "refusal_rate"),
            (&format!("socket = \"/{}\"", "s".repeat(120)), "102 bytes"),
        ] {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(
                err.to_lowercase().contains(&needle.to_lowercase()),
                "{text:?}: {err}"
            );
        }
    }
}
