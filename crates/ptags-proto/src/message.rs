//! The messages, and the validation of every field the daemon receives.

use ptags_core::line::{parse_pattern, Selector};
use ptags_core::Errno;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; the daemon refuses other versions.
pub const PROTOCOL_VERSION: u32 = 1;

use ptags_core::contid::PID_MAX;

/// A process, or one of its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub pid: u32,
    /// One thread only; `None`: every thread of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
}

/// Which processes `ps` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsFilter {
    /// Only tasks in this container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contid: Option<u64>,
    /// With `contid`: also tasks in containers nested in it.
    #[serde(default)]
    pub nested: bool,
    /// Only tasks holding a tag that matches: `NAME` or `PREFIX:*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Every thread, not only each process's main thread.
    #[serde(default)]
    pub threads: bool,
    /// Only tasks with tags or a container ID.
    #[serde(default)]
    pub labelled: bool,
    /// With each task, its namespaces (to callers who may read
    /// container IDs).
    #[serde(default)]
    pub namespaces: bool,
}

impl PsFilter {
    /// The tag pattern as a selector (validated by [`Request::validate`]).
    pub fn selector(&self) -> Option<Selector<'_>> {
        parse_pattern(self.tag.as_deref()?).ok()
    }
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The target's tags, in the read format.
    Read { target: Target },
    /// Applies a text of the write language to the target.
    Write { target: Target, text: String },
    /// The container ID of a process.
    ContidGet { pid: u32 },
    /// Sets the container ID of a process (audit-container-id.md).
    ContidSet { pid: u32, contid: u64 },
    /// Lists tasks.
    Ps { filter: PsFilter },
    /// Prepares a process that is about to exec (`ptags run`): the write
    /// is applied now and the result, not pruned, is what the new program
    /// starts with, together with the container ID if one is given.
    PrepareExec {
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contid: Option<u64>,
    },
    /// Labels the first process of a container, which waits to exec the
    /// container's program (an OCI hook at createRuntime, for the runtime
    /// that made it): from that exec on it has container ID `contid` and
    /// the tags the write `text` gives (the threads it has now do not
    /// matter: the exec leaves one). With `join` (the default), a task
    /// that later enters its mount namespace (`runc exec`, `nsenter`)
    /// joins the container with the same tags.
    ContainerCreate {
        pid: u32,
        contid: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default = "on")]
        join: bool,
    },
    /// A container has stopped (an OCI poststop hook): its setns policy
    /// is switched off, and its end recorded if its last task has gone.
    ContainerEnd { contid: u64 },
    /// What is attached, counters, losses. (A struct variant, so that
    /// unknown fields are refused here too.)
    Status {},
    /// Gives container `contid` its own copy of its records under the
    /// policy `text` (docs/audit-copies.md), replacing the one it had.
    AuditPolicySet { contid: u64, text: String },
    /// A container's policy, as the daemon holds it, and its copy's counts.
    AuditPolicyGet { contid: u64 },
    /// Every policy the caller may see.
    AuditPolicyList {},
    /// Ends a container's copy (its log stays).
    AuditPolicyClear { contid: u64 },
    /// The records of a container's copy as they are written: the
    /// caller's own container unless `contid` names one of its nested
    /// containers (or, for a host caller, any). With `after_serial` or
    /// `since_ms`, its log is replayed from there first. The answer
    /// (`Following`) is followed by `Records` frames until the copy ends.
    AuditFollow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contid: Option<u64>,
        /// Starts after the last record of the event with this serial.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_serial: Option<u64>,
        /// Starts at records of this time or later (ms since the epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<u64>,
    },
    /// Writes to container `contid`'s device list, in order, as lines
    /// written to the devices cgroup's `devices.allow` and `devices.deny`:
    /// each `allow RULE` or `deny RULE` (docs/devices.md). A container
    /// without a list starts from allow-all. All or nothing.
    DeviceWrite { contid: u64, writes: Vec<String> },
    /// A container's device list.
    DeviceGet { contid: u64 },
    /// Removes a container's device list: ptags no longer fences it.
    DeviceClear { contid: u64 },
}

/// The most writes one device request may carry: enough to give a list
/// its default and every exception it may hold.
pub const MAX_DEVICE_WRITES: usize = 2 * ptags_core::devices::MAX_EXCEPTIONS + 1;

/// The longest policy text accepted.
pub const MAX_POLICY_TEXT: usize = 64 << 10;

fn check_contid(contid: u64) -> Result<(), Failure> {
    if contid == u64::MAX {
        return Err(Failure::new(
            Errno::Einval,
            "the unset value (-1) names no container",
        ));
    }
    Ok(())
}

fn on() -> bool {
    true
}

fn check_pid(what: &str, pid: u32) -> Result<(), Failure> {
    if pid == 0 || pid > PID_MAX {
        return Err(Failure::new(
            Errno::Einval,
            format!("{what} {pid} is not a valid process ID (1 to {PID_MAX})"),
        ));
    }
    Ok(())
}

impl Request {
    /// Whether it asks for a change (and so for records in the trail),
    /// rather than to be told something.
    pub fn changes(&self) -> bool {
        match self {
            Request::Write { .. }
            | Request::ContidSet { .. }
            | Request::PrepareExec { .. }
            | Request::ContainerCreate { .. }
            | Request::ContainerEnd { .. }
            | Request::AuditPolicySet { .. }
            | Request::AuditPolicyClear { .. }
            | Request::DeviceWrite { .. }
            | Request::DeviceClear { .. } => true,
            Request::AuditPolicyGet { .. }
            | Request::AuditPolicyList {}
            | Request::AuditFollow { .. }
            | Request::DeviceGet { .. }
            | Request::Read { .. }
            | Request::ContidGet { .. }
            | Request::Ps { .. }
            | Request::Status {} => false,
        }
    }

    /// Checks every field; the daemon calls this before anything else.
    pub fn validate(&self) -> Result<(), Failure> {
        match self {
            Request::Read { target } | Request::Write { target, .. } => {
                check_pid("pid", target.pid)?;
                if let Some(tid) = target.tid {
                    check_pid("tid", tid)?;
                }
                Ok(())
            }
            Request::ContidGet { pid } | Request::ContidSet { pid, .. } => check_pid("pid", *pid),
            Request::PrepareExec { pid, .. } | Request::ContainerCreate { pid, .. } => {
                check_pid("pid", *pid)
            }
            Request::ContainerEnd { contid } if *contid == u64::MAX => Err(Failure::new(
                Errno::Einval,
                "the unset value (-1) names no container",
            )),
            Request::ContainerEnd { .. } => Ok(()),
            Request::Ps { filter } => match &filter.tag {
                Some(pattern) => parse_pattern(pattern)
                    .map(|_| ())
                    .map_err(|m| Failure::new(Errno::Einval, m)),
                None if filter.nested && filter.contid.is_none() => Err(Failure::new(
                    Errno::Einval,
                    "`nested` needs a container ID to start from",
                )),
                None => Ok(()),
            },
            Request::Status {} | Request::AuditPolicyList {} => Ok(()),
            Request::AuditPolicySet { contid, text } => {
                check_contid(*contid)?;
                if text.len() > MAX_POLICY_TEXT {
                    return Err(Failure::new(
                        Errno::E2big,
                        format!(
                            "a policy of {} bytes is over the limit of {MAX_POLICY_TEXT}",
                            text.len()
                        ),
                    ));
                }
                Ok(())
            }
            Request::AuditPolicyGet { contid }
            | Request::AuditPolicyClear { contid }
            | Request::DeviceGet { contid }
            | Request::DeviceClear { contid } => check_contid(*contid),
            Request::DeviceWrite { contid, writes } => {
                check_contid(*contid)?;
                if writes.is_empty() || writes.len() > MAX_DEVICE_WRITES {
                    return Err(Failure::new(
                        Errno::Einval,
                        format!("a device request carries 1 to {MAX_DEVICE_WRITES} writes"),
                    ));
                }
                for (i, w) in writes.iter().enumerate() {
                    ptags_core::devices::parse_write(w).map_err(|e| Failure {
                        line: Some(i + 1),
                        ..Failure::new(Errno::Einval, e.to_string())
                    })?;
                }
                Ok(())
            }
            Request::AuditFollow {
                contid,
                after_serial,
                since_ms,
            } => {
                if let Some(c) = contid {
                    check_contid(*c)?;
                }
                if after_serial.is_some() && since_ms.is_some() {
                    return Err(Failure::new(
                        Errno::Einval,
                        "follow from a serial or from a time, not both",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The `op` name, for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::ContidGet { .. } => "contid_get",
            Request::ContidSet { .. } => "contid_set",
            Request::Ps { .. } => "ps",
            Request::PrepareExec { .. } => "prepare_exec",
            Request::ContainerCreate { .. } => "container_create",
            Request::ContainerEnd { .. } => "container_end",
            Request::Status {} => "status",
            Request::AuditPolicySet { .. } => "audit_policy_set",
            Request::AuditPolicyGet { .. } => "audit_policy_get",
            Request::AuditPolicyList {} => "audit_policy_list",
            Request::AuditPolicyClear { .. } => "audit_policy_clear",
            Request::AuditFollow { .. } => "audit_follow",
            Request::DeviceWrite { .. } => "device_write",
            Request::DeviceGet { .. } => "device_get",
            Request::DeviceClear { .. } => "device_clear",
        }
    }
}

/// A request as sent: the protocol version and the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFrame {
    pub v: u32,
    pub req: Request,
}

impl RequestFrame {
    pub fn new(req: Request) -> RequestFrame {
        RequestFrame {
            v: PROTOCOL_VERSION,
            req,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("requests always serialize")
    }

    /// Parses and validates a received frame.
    pub fn decode(body: &[u8]) -> Result<Request, Failure> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        // Check the version first, so that a newer client gets a clear
        // answer instead of a parse error about fields it added.
        let version: Version = serde_json::from_slice(body)
            .map_err(|e| Failure::new(Errno::Eproto, format!("malformed request: {e}")))?;
        if version.v != PROTOCOL_VERSION {
            return Err(Failure::new(
                Errno::Eproto,
                format!(
                    "protocol version {} is not supported (this daemon speaks {PROTOCOL_VERSION})",
                    version.v
                ),
            ));
        }
        let frame: RequestFrame = serde_json::from_slice(body)
            .map_err(|e| Failure::new(Errno::Eproto, format!("malformed request: {e}")))?;
        frame.req.validate()?;
        Ok(frame.req)
    }
}

/// Why a request failed: an errno name, a message for people and, for a
/// write, the number of the line that failed (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub errno: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl Failure {
    pub fn new(errno: Errno, message: impl Into<String>) -> Failure {
        Failure {
            errno: errno.name().to_owned(),
            message: message.into(),
            line: None,
        }
    }

    pub fn at_line(mut self, line: usize) -> Failure {
        self.line = Some(line);
        self
    }

    pub fn errno(&self) -> Option<Errno> {
        Errno::from_name(&self.errno)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.errno, self.message),
            None => write!(f, "{}: {}", self.errno, self.message),
        }
    }
}

impl std::error::Error for Failure {}

/// A container ID and its chain (`4,^2,^1`), or unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContidAnswer {
    /// `None`: unset.
    pub contid: Option<u64>,
    /// The chain from this ID to the outermost container; `unset`.
    pub chain: String,
}

/// One task in a `ps` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsRow {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub comm: String,
    pub contid: Option<u64>,
    pub chain: String,
    /// The tags in the read format.
    pub tags: String,
    /// Its namespaces' inode numbers by kind (`net`, `mnt`, ...), when
    /// asked for and shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<std::collections::BTreeMap<String, u32>>,
}

/// A container in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub contid: u64,
    pub parent: Option<u64>,
    pub depth: usize,
    pub owner_pid: u32,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Tasks alive in it now.
    pub live: i64,
}

/// The daemon's state, for `ptags status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub uptime_secs: u64,
    pub pin_dir: String,
    /// The programs attached, by what they attach to.
    pub attached: Vec<String>,
    pub tag_sets: usize,
    /// Containers that exist now.
    #[serde(default)]
    pub container_count: usize,
    /// Mount namespaces with a setns policy (one per container at most).
    #[serde(default)]
    pub join_policies: usize,
    /// Each container, for callers that may read container IDs
    /// (CAP_AUDIT_CONTROL); empty for the others.
    pub containers: Vec<ContainerInfo>,
    /// Requests answered, per outcome.
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub requests_malformed: u64,
    /// Connections refused for a user's or the total limit.
    #[serde(default)]
    pub connections_refused: u64,
    /// Requests refused for the memory they would hold, and connections
    /// cut off for sending too slowly. Absent from older daemons' answers.
    #[serde(default)]
    pub requests_busy: u64,
    #[serde(default)]
    pub connections_slow: u64,
    /// Changes refused for their user's rate
    /// (`limits.changes_per_sec_per_uid`).
    #[serde(default)]
    pub requests_limited: u64,
    /// Tag sets collected because no task used them any more.
    pub sets_collected: u64,
    pub containers_dropped: u64,
    /// What the kernel side could not do, per reason (`drop_events`,
    /// `task_storage`, ...): the kernel crate names them.
    pub lost: std::collections::BTreeMap<String, u64>,
    pub audit: AuditStatus,
}

/// The audit trail, for `ptags status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatus {
    pub log: String,
    /// False while a disk action has suspended writing.
    pub writing: bool,
    /// The sequence number of the last record written.
    pub seq: u64,
    /// Records written since the daemon started.
    pub records_written: u64,
    /// Records lost for lack of disk space.
    pub lost_disk: u64,
    /// Whether the daemon is the kernel's registered audit daemon (it
    /// receives every record by unicast) rather than reading beside one.
    #[serde(default)]
    pub registered: bool,
    #[serde(flatten)]
    pub counters: AuditCounters,
}

/// What the daemon's audit pipeline counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCounters {
    pub kernel_records: u64,
    pub kernel_events: u64,
    /// Kernel events of tasks in containers (followed by CONTAINER_ID).
    pub contained_events: u64,
    /// Records lost by the kernel itself (its `lost` counter: backlog,
    /// rate limit, queues), since the daemon started.
    pub lost_kernel: u64,
    /// Records our netlink socket had no room for (beside auditd), and
    /// how often it overflowed.
    pub lost_netlink: u64,
    pub netlink_overflows: u64,
    /// As the registered audit daemon: events the kernel numbered and
    /// never delivered (gaps in its serials). A record the kernel drops
    /// after numbering it is in `lost_kernel` too. Absent from older
    /// daemons' answers.
    #[serde(default)]
    pub lost_serials: u64,
    /// Exec and exit events the ring buffer had no room for.
    pub lost_ringbuf: u64,
    /// Records of refused requests not written (the per-user rate
    /// limit), each counted in a PTAGS_SUPPRESSED record. Absent from
    /// older daemons' answers.
    #[serde(default)]
    pub suppressed_refusals: u64,
    /// ptrace attaches across a container boundary (PTAGS_PTRACE records).
    #[serde(default)]
    pub cross_container_ptrace: u64,
    /// Namespace records written (NS_INFO, NS_CREATE, NS_CHANGE,
    /// NS_DESTROY).
    #[serde(default)]
    pub ns_records: u64,
    /// Namespace changes not recorded (the per-user rate limit), each
    /// counted in a PTAGS_SUPPRESSED record.
    #[serde(default)]
    pub ns_suppressed: u64,
    /// Packets read from the NFLOG group in containers' network
    /// namespaces (NETFILTER_PKT records).
    #[serde(default)]
    pub nflog_packets: u64,
    /// Times an NFLOG socket had no room for packets (the kernel drops
    /// them without saying how many; a PTAGS_LOST record each time).
    #[serde(default)]
    pub nflog_overflows: u64,
    /// Packets past their namespace's rate, counted in PTAGS_SUPPRESSED
    /// records (of=packets).
    #[serde(default)]
    pub nflog_suppressed: u64,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Tags {
        tags: String,
    },
    /// A write succeeded on this many threads.
    Written {
        threads: usize,
    },
    Contid(ContidAnswer),
    /// The `op` of the CONTAINER_OP record: set, nest or inject.
    ContidSet {
        op: String,
        old: Option<u64>,
    },
    Processes {
        rows: Vec<PsRow>,
    },
    Prepared,
    /// The container's first process is labelled (`op`: set, nest or
    /// inject, as for `contid_set`); with `join`, the setns policy is on
    /// for its mount namespace `mnt_ns` (the namespace's inode number).
    ContainerCreated {
        op: String,
        /// The inode number of the mount namespace whose entrants join.
        mnt_ns: Option<u64>,
        /// Its 64-bit ID, which the policy is keyed by (never reused).
        #[serde(default)]
        mnt_ns_id: Option<u64>,
    },
    /// The container's policy is off; `dropped`: its last task has gone
    /// and its end is on record.
    Ended {
        dropped: bool,
    },
    Status(Box<Status>),
    AuditPolicy(PolicyInfo),
    AuditPolicies {
        policies: Vec<PolicyInfo>,
    },
    /// The stream of container `contid`'s copy starts.
    Following {
        contid: u64,
    },
    /// Records of a followed copy, one line each in the audit text
    /// format; a `PTAGS_LOST` line says what the follower's queue could
    /// not take.
    Records {
        lines: Vec<String>,
    },
    Devices(DeviceInfo),
}

/// A container's device list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub contid: u64,
    /// `default allow|deny`, then its exceptions as `allow RULE` or
    /// `deny RULE`; empty when the container has no list (not fenced).
    pub rules: Vec<String>,
}

/// A container's audit policy and what its copy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub contid: u64,
    /// The policy, in its canonical text.
    pub text: String,
    /// The directory of its log, when it has one.
    pub log: Option<String>,
    /// Records its policy took, left out, refused over its rate, that
    /// its readers' queues could not take, and that its log holds.
    pub taken: u64,
    pub filtered: u64,
    pub over_rate: u64,
    pub dropped: u64,
    pub written: u64,
    pub followers: u64,
}

/// An answer as sent: the version and either `ok` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseFrame {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Response>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

impl ResponseFrame {
    pub fn encode(result: &Result<Response, Failure>) -> Vec<u8> {
        let frame = ResponseFrame {
            v: PROTOCOL_VERSION,
            ok: result.as_ref().ok().cloned(),
            error: result.as_ref().err().cloned(),
        };
        serde_json::to_vec(&frame).expect("responses always serialize")
    }

    /// Parses an answer: exactly one of `ok` and `error`.
    pub fn decode(body: &[u8]) -> Result<Result<Response, Failure>, String> {
        let frame: ResponseFrame =
            serde_json::from_slice(body).map_err(|e| format!("malformed answer: {e}"))?;
        if frame.v != PROTOCOL_VERSION {
            return Err(format!("answer of protocol version {}", frame.v));
        }
        match (frame.ok, frame.error) {
            (Some(ok), None) => Ok(Ok(ok)),
            (None, Some(err)) => Ok(Err(err)),
            _ => Err("an answer holds exactly one of `ok` and `error`".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<Request, Failure> {
        RequestFrame::decode(json.as_bytes())
    }

    #[test]
    fn audit_counters_of_an_older_daemon_still_decode() {
        let old = r#"{"kernel_records":1,"kernel_events":1,"contained_events":0,
            "lost_kernel":0,"lost_netlink":0,"netlink_overflows":0,"lost_ringbuf":2}"#;
        let c: AuditCounters = serde_json::from_str(old).unwrap();
        assert_eq!((c.lost_ringbuf, c.suppressed_refusals), (2, 0));
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Read {
                target: Target { pid: 1, tid: None },
            },
            Request::Write {
                target: Target {
                    pid: 10,
                    tid: Some(11),
                },
                text: "+a\n".into(),
            },
            Request::ContidGet { pid: 5 },
            Request::ContidSet {
                pid: 5,
                contid: u64::MAX - 1,
            },
            Request::Ps {
                filter: PsFilter {
                    contid: Some(4),
                    nested: true,
                    tag: Some("UMCM:*".into()),
                    ..Default::default()
                },
            },
            Request::PrepareExec {
                pid: 3,
                text: Some("+x\n".into()),
                contid: Some(7),
            },
            Request::ContainerCreate {
                pid: 9,
                contid: 12,
                text: Some("+@app:web\n".into()),
                join: false,
            },
            Request::ContainerEnd { contid: 1 << 62 },
            Request::Status {},
        ];
        for req in reqs {
            let bytes = RequestFrame::new(req.clone()).encode();
            assert_eq!(RequestFrame::decode(&bytes), Ok(req));
        }
    }

    #[test]
    fn the_wire_form_is_documented_json() {
        assert_eq!(
            String::from_utf8(
                RequestFrame::new(Request::ContidSet { pid: 42, contid: 7 }).encode()
            )
            .unwrap(),
            r#"{"v":1,"req":{"op":"contid_set","pid":42,"contid":7}}"#
        );
        assert_eq!(
            decode(r#"{"v":1,"req":{"op":"status"}}"#),
            Ok(Request::Status {})
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_eproto() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"v":1}"#,
            r#"{"v":1,"req":{"op":"nope"}}"#,
            r#"{"v":1,"req":{"op":"read"}}"#,
            r#"{"v":1,"req":{"op":"read","target":{"pid":-1}}}"#,
            r#"{"v":1,"req":{"op":"read","target":{"pid":1},"extra":1}}"#,
            r#"{"v":1,"req":{"op":"read","target":{"pid":1,"who":"root"}}}"#,
            r#"{"v":1,"req":{"op":"status"},"caller":0}"#,
            r#"{"v":1,"req":{"op":"status","as_uid":0}}"#,
            r#"{"v":1,"req":{"op":"contid_set","pid":1,"contid":18446744073709551616}}"#,
            r#"{"v":1,"req":{"op":"write","target":{"pid":1},"text":"\ud800"}}"#,
            r#"{"v":1,"req":{"op":"container_create","pid":1}}"#,
            r#"{"v":1,"req":{"op":"container_end"}}"#,
        ] {
            let err = decode(bad).unwrap_err();
            assert_eq!(err.errno(), Some(Errno::Eproto), "{bad}: {err}");
        }
        let err = decode(r#"{"v":2,"req":{"op":"status","new":1}}"#).unwrap_err();
        assert!(err.message.contains("version 2"), "{err}");
    }

    #[test]
    fn invalid_fields_are_refused_with_einval() {
        for bad in [
            r#"{"v":1,"req":{"op":"read","target":{"pid":0}}}"#,
            r#"{"v":1,"req":{"op":"read","target":{"pid":1,"tid":0}}}"#,
            r#"{"v":1,"req":{"op":"contid_get","pid":4194305}}"#,
            r#"{"v":1,"req":{"op":"ps","filter":{"tag":"a*"}}}"#,
            r#"{"v":1,"req":{"op":"ps","filter":{"tag":"@a"}}}"#,
            r#"{"v":1,"req":{"op":"ps","filter":{"tag":""}}}"#,
            r#"{"v":1,"req":{"op":"ps","filter":{"nested":true}}}"#,
            r#"{"v":1,"req":{"op":"container_create","pid":0,"contid":1}}"#,
            r#"{"v":1,"req":{"op":"container_end","contid":18446744073709551615}}"#,
        ] {
            let err = decode(bad).unwrap_err();
            assert_eq!(err.errno(), Some(Errno::Einval), "{bad}: {err}");
        }
    }

    #[test]
    fn tag_patterns() {
        let f = |tag: &str| PsFilter {
            tag: Some(tag.into()),
            ..Default::default()
        };
        assert_eq!(f("UMCM:*").selector(), Some(Selector::Prefix("UMCM:")));
        assert_eq!(f("a=b").selector(), None);
        assert_eq!(f("UMCM:x").selector(), Some(Selector::Name("UMCM:x")));
        assert!(f("UMCM:*").selector().unwrap().matches("UMCM:a:b"));
        assert!(!f("UMCM:*").selector().unwrap().matches("UMCM"));
    }

    #[test]
    fn answers_hold_exactly_one_outcome() {
        let ok = Ok(Response::Written { threads: 2 });
        assert_eq!(ResponseFrame::decode(&ResponseFrame::encode(&ok)), Ok(ok));
        let err = Err(Failure::new(Errno::Eperm, "no").at_line(3));
        assert_eq!(ResponseFrame::decode(&ResponseFrame::encode(&err)), Ok(err));
        assert!(ResponseFrame::decode(br#"{"v":1}"#).is_err());
        assert!(ResponseFrame::decode(
            br#"{"v":1,"ok":{"kind":"prepared"},"error":{"errno":"EPERM","message":""}}"#
        )
        .is_err());
    }
}
