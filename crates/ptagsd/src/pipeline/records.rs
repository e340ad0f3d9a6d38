//! The bodies of the daemon's own records (docs/records.md lists them).

use crate::error::Error;
use ptags_audit::{encode_untrusted, format_fields, Subject};
use ptags_bpf::{Event, EventKind, Join, SetOp};
use ptags_core::contid::{format_contid, Chain, Style};
use ptags_core::{ContainerId, Errno};

use std::time::Duration;

use super::limit::Suppressed;

/// Bytes of a write's text a record carries; past that, its length and
/// digest stand for the rest. Small, so that a caller's long texts
/// (refused ones cost it nothing) cannot fill the trail and rotate older
/// records away.
pub const MAX_RECORDED_TEXT: usize = 1024;

fn result_fields(fields: &mut Vec<(String, String)>, failure: Option<&Error>) {
    match failure {
        None => fields.push(("res".into(), "success".into())),
        Some(f) => {
            fields.push(("res".into(), "failed".into()));
            fields.push(("errno".into(), f.errno().name().to_owned()));
            if let Some(line) = f.line() {
                fields.push(("line".into(), line.to_string()));
            }
        }
    }
}

/// The chain printed for a task's container, for records naming it.
pub fn chain_text(chain: Option<&Chain>) -> String {
    ptags_core::contid::format_chains(
        chain.map(std::slice::from_ref).unwrap_or_default(),
        Style::Raw,
    )
}

/// `CONTAINER_OP op=drop`: a container is over (its last task exited, or
/// its runtime said so).
pub fn drop(contid: u64) -> String {
    format!("op=drop contid={contid}")
}

/// `PTAGS_LOST`: records (or, where only serials tell, events) that
/// `source` lost, and its total since the daemon started.
pub fn lost(source: &str, reason: &str, unit: &str, lost: u64, total: u64) -> String {
    format!("source={source} reason={reason} unit={unit} lost={lost} total={total}")
}

/// The `text` field of a write's text (and `text-len`, `text-digest` past
/// [`MAX_RECORDED_TEXT`]).
fn text_fields(fields: &mut Vec<(String, String)>, text: &str) {
    let bytes = text.as_bytes();
    let cut = bytes.len() > MAX_RECORDED_TEXT;
    fields.push((
        "text".into(),
        encode_untrusted(&bytes[..bytes.len().min(MAX_RECORDED_TEXT)]),
    ));
    if cut {
        fields.push(("text-len".into(), bytes.len().to_string()));
        fields.push((
            "text-digest".into(),
            blake3::hash(bytes).to_hex().to_string(),
        ));
    }
}

/// `PTAGS_INTENT`: a change of task `(tid, start time)` about to be made,
/// part of request `op` on process `opid`, and the state it gives.
pub fn intent(
    id: &str,
    op: &str,
    opid: u32,
    text: Option<&str>,
    (tid, start): (u32, u64),
    change: &SetOp,
) -> String {
    let mut fields = vec![
        ("intent".to_owned(), id.to_owned()),
        ("op".to_owned(), op.to_owned()),
        ("opid".to_owned(), opid.to_string()),
        ("tid".to_owned(), tid.to_string()),
        ("start".to_owned(), start.to_string()),
    ];
    if let Some((set, kept)) = change.tags {
        fields.push(("set".into(), set.to_string()));
        fields.push(("kept".into(), kept.to_string()));
    }
    if let Some((contid, _)) = change.contid {
        fields.push(("new-contid".into(), contid.to_string()));
    }
    if let Some((set, kept, contid)) = change.pending {
        fields.push(("pending-set".into(), set.to_string()));
        fields.push(("pending-kept".into(), kept.to_string()));
        if let Some((contid, _)) = contid {
            fields.push(("pending-contid".into(), contid.to_string()));
        }
    }
    if let Some(text) = text {
        text_fields(&mut fields, text);
    }
    format_fields(&fields)
}

/// `PTAGS_INTENT op=join-policy`: a setns policy about to be switched on.
pub fn join_intent(id: &str, opid: u32, mnt_ns: u64, join: &Join) -> String {
    format!(
        "intent={id} op=join-policy opid={opid} mntns-id={mnt_ns} contid={} set={} kept={}",
        join.contid, join.set_id, join.kept_id
    )
}

/// `PTAGS_OP ... recovered=yes`: what became of an intent its daemon did
/// not settle (killed), as the kernel showed at the next start: the
/// intent's fields, then `res`, `recovered=yes` and the intent's ID.
pub fn recovered(intent: &str, res: &str) -> String {
    let (id, rest) = match intent.split_once(' ') {
        Some((first, rest)) if first.starts_with("intent=") => (&first["intent=".len()..], rest),
        _ => ("?", intent),
    };
    format!("{rest} res={res} recovered=yes intent={id}")
}

/// `CONTAINER_OP`: a container-ID change (set, inject, nest), or a
/// refused one.
pub fn container_op(
    op: &str,
    opid: u32,
    contid: u64,
    old: Option<u64>,
    caller: &Subject,
    failure: Option<&Error>,
) -> String {
    let mut fields = vec![
        ("op".to_owned(), op.to_owned()),
        ("opid".to_owned(), opid.to_string()),
        // Raw: a refused request may name the unset value.
        (
            "contid".to_owned(),
            format_contid(ContainerId::new(contid), Style::Raw),
        ),
        (
            "old-contid".to_owned(),
            format_contid(old.and_then(ContainerId::new), Style::Raw),
        ),
    ];
    caller.push_fields(&mut fields);
    result_fields(&mut fields, failure);
    format_fields(&fields)
}

/// The head of a `CONTAINER_OP` about a setting of a container's: `op`,
/// `action` (`changed` with a text, `clear` without), `contid`, the text.
fn setting_fields(
    op: &str,
    changed: &str,
    contid: u64,
    text: Option<&str>,
) -> Vec<(String, String)> {
    let action = if text.is_some() { changed } else { "clear" };
    let mut fields = vec![
        ("op".to_owned(), op.to_owned()),
        ("action".to_owned(), action.to_owned()),
        ("contid".to_owned(), contid.to_string()),
    ];
    if let Some(text) = text {
        text_fields(&mut fields, text);
    }
    fields
}

/// `CONTAINER_OP op=audit-policy`: a container's copy set (with its
/// policy's text) or cleared (`text` none).
pub fn audit_policy(
    contid: u64,
    text: Option<&str>,
    caller: &Subject,
    failure: Option<&Error>,
) -> String {
    let mut fields = setting_fields("audit-policy", "set", contid, text);
    caller.push_fields(&mut fields);
    result_fields(&mut fields, failure);
    format_fields(&fields)
}

/// `CONTAINER_OP op=devices`: writes to a container's device list
/// (`writes`, one per line), or its clearing; the list after (its
/// default and number of exceptions; `default=none`: not fenced).
pub fn devices(
    contid: u64,
    writes: Option<&[String]>,
    after: Option<&ptags_core::devices::DeviceList>,
    caller: &Subject,
    failure: Option<&Error>,
) -> String {
    let text = writes.map(|w| w.join("\n"));
    let mut fields = setting_fields("devices", "write", contid, text.as_deref());
    let default = match after {
        None => "none",
        Some(l) if l.default_allow => "allow",
        Some(_) => "deny",
    };
    fields.push(("default".into(), default.into()));
    fields.push((
        "exceptions".into(),
        after.map_or(0, |l| l.exceptions.len()).to_string(),
    ));
    caller.push_fields(&mut fields);
    result_fields(&mut fields, failure);
    format_fields(&fields)
}

/// `PTAGS_DEVICE`: a container's device list refused a task's open or
/// mknod: the task, its container, the list that refused (the task's
/// container's or an ancestor's), the device and the access asked.
pub fn device_denial(e: &Event, d: &ptags_bpf::DeviceDenial, chain: Option<&Chain>) -> String {
    let kind = match d.kind {
        1 => "b",
        2 => "c",
        _ => "?",
    };
    // BPF_DEVCG_ACC_*: mknod 1, read 2, write 4; written as rwm.
    let access: String = [(2, 'r'), (4, 'w'), (1, 'm')]
        .iter()
        .filter(|(bit, _)| d.access & bit != 0)
        .map(|&(_, c)| c)
        .collect();
    let mut fields = task_fields(e, chain);
    fields.extend([
        ("list".to_owned(), d.list.to_string()),
        ("devtype".to_owned(), kind.to_owned()),
        ("major".to_owned(), d.major.to_string()),
        ("minor".to_owned(), d.minor.to_string()),
        ("access".to_owned(), access),
        ("res".to_owned(), "denied".to_owned()),
    ]);
    if d.suppressed > 0 {
        fields.push(("suppressed".into(), d.suppressed.to_string()));
    }
    format_fields(&fields)
}

/// `CONTAINER_OP op=panic`: a container stopped because its copy could
/// not keep up (`reason=queue-full`) or it went over its rate quota
/// (`reason=rate`): how, how many tasks, and how long it took.
pub fn panic(contid: u64, reason: &str, kill: &crate::daemon::Killed) -> String {
    let fields = vec![
        ("op".to_owned(), "panic".to_owned()),
        ("contid".to_owned(), contid.to_string()),
        ("reason".to_owned(), reason.to_owned()),
        ("method".to_owned(), kill.method.to_owned()),
        ("tasks".to_owned(), kill.tasks.to_string()),
        ("rounds".to_owned(), kill.rounds.to_string()),
        ("detected-ms".to_owned(), kill.detected_ms.to_string()),
        ("kill-ms".to_owned(), kill.millis.to_string()),
        (
            "res".to_owned(),
            if kill.left == 0 { "success" } else { "failed" }.to_owned(),
        ),
    ];
    format_fields(&fields)
}

/// `CONTAINER_OP op=join-policy`: a runtime switched on the setns policy
/// of the container whose first process is `opid`.
/// `mnt_ns`: the namespace's inode number and its 64-bit ID.
pub fn join_policy(opid: u32, contid: u64, mnt_ns: (u64, u64), caller: &Subject) -> String {
    let mut fields = vec![
        ("op".to_owned(), "join-policy".to_owned()),
        ("opid".to_owned(), opid.to_string()),
        (
            "contid".to_owned(),
            format_contid(ContainerId::new(contid), Style::Raw),
        ),
    ];
    fields.push(("mntns".into(), mnt_ns.0.to_string()));
    fields.push(("mntns-id".into(), mnt_ns.1.to_string()));
    caller.push_fields(&mut fields);
    result_fields(&mut fields, None);
    format_fields(&fields)
}

/// `CONTAINER_OP op=end res=failed`: a runtime's end of a container,
/// refused (tasks remain, or the caller may not).
pub fn refused_end(contid: u64, caller: &Subject, failure: &Error) -> String {
    let mut fields = vec![
        ("op".to_owned(), "end".to_owned()),
        (
            "contid".to_owned(),
            format_contid(ContainerId::new(contid), Style::Raw),
        ),
    ];
    caller.push_fields(&mut fields);
    result_fields(&mut fields, Some(failure));
    format_fields(&fields)
}

/// `CONTAINER_OP op=join`: a task entered a container's mount namespace
/// and joined it, or (refused) kept the ID of the container it is in.
pub fn join(e: &Event) -> String {
    let subject = Subject {
        pid: e.pid,
        uid: e.uid,
        auid: e.loginuid,
        ses: e.sessionid,
        comm: e.comm.as_bytes().to_vec(),
    };
    let refused = (e.kind == EventKind::JoinRefused).then(|| {
        Error::new(
            Errno::Eperm,
            "a task in another container may not leave it by entering this one",
        )
    });
    container_op(
        "join",
        e.tid,
        e.contid,
        e.old_contid,
        &subject,
        refused.as_ref(),
    )
}

/// What a tag operation asked for.
pub struct TagOp<'a> {
    pub op: &'a str,
    pub pid: u32,
    pub tid: Option<u32>,
    pub text: Option<&'a str>,
    /// `ptags run`'s container ID for the program it starts.
    pub new_contid: Option<u64>,
}

/// `PTAGS_OP`: a change of tags (a write, or `ptags run`'s preparation),
/// who asked, on whom, the lines, and the result.
/// `contid`: the target's container after the operation.
pub fn tag_op(
    op: &TagOp<'_>,
    contid: Option<&Chain>,
    caller: &Subject,
    threads: Option<usize>,
    failure: Option<&Error>,
) -> String {
    let mut fields = vec![
        ("op".to_owned(), op.op.to_owned()),
        ("opid".to_owned(), op.pid.to_string()),
    ];
    if let Some(tid) = op.tid {
        fields.push(("tid".into(), tid.to_string()));
    }
    fields.push(("contid".into(), chain_text(contid)));
    if let Some(text) = op.text {
        text_fields(&mut fields, text);
    }
    if let Some(id) = op.new_contid {
        fields.push(("new-contid".into(), id.to_string()));
    }
    caller.push_fields(&mut fields);
    result_fields(&mut fields, failure);
    if let Some(n) = threads {
        fields.push(("threads".into(), n.to_string()));
    }
    format_fields(&fields)
}

/// `PTAGS_REFUSED`: what the socket refused one user (real uid) over
/// the last second or so: connections over its limit, requests over the
/// memory it may hold, requests sent too slowly, frames that are not
/// requests, changes over its rate (`limits.changes_per_sec_per_uid`).
/// `counts`: connections, memory, slow, malformed, limited.
pub fn socket_refusals(uid: u32, counts: [u64; 5]) -> String {
    let [connections, memory, slow, malformed, limited] = counts;
    format!("uid={uid} connections={connections} memory={memory} slow={slow} malformed={malformed} limited={limited}")
}

/// `PTAGS_SUPPRESSED`: refused requests of one user that were not
/// recorded (rate limit), from `since` to `until` (since the epoch).
/// `of`: what was not recorded, when it is not refused requests
/// (`namespace-changes`).
pub fn suppressed(s: &Suppressed, of: Option<&str>) -> String {
    let stamp = |t: Duration| format!("{}.{:03}", t.as_secs(), t.subsec_millis());
    let mut fields = vec![
        ("uid".to_owned(), s.source.uid.to_string()),
        (
            "contid".to_owned(),
            format_contid(s.source.contid.and_then(ContainerId::new), Style::Raw),
        ),
        ("suppressed".to_owned(), s.count.to_string()),
        ("since".to_owned(), stamp(s.since)),
        ("until".to_owned(), stamp(s.until)),
        (
            "ongoing".to_owned(),
            if s.ongoing { "yes" } else { "no" }.to_owned(),
        ),
    ];
    fields.extend(of.map(|of| ("of".to_owned(), of.to_owned())));
    format_fields(&fields)
}

/// `PTAGS_PTRACE`: a ptrace attach across a container boundary, the
/// tracer and the traced process each with its chain.
pub fn ptrace(tracer: (u32, Option<&Chain>), target: (u32, Option<&Chain>)) -> String {
    let fields = vec![
        ("op".to_owned(), "attach".to_owned()),
        ("pid".to_owned(), tracer.0.to_string()),
        ("contid".to_owned(), chain_text(tracer.1)),
        ("opid".to_owned(), target.0.to_string()),
        ("ocontid".to_owned(), chain_text(target.1)),
    ];
    format_fields(&fields)
}

/// `PTAGS_REPAIR`: a task that failed to inherit its parent's state (no
/// kernel memory at its fork) was given it.
/// `task`: (pid, tid); `tags`: the set and kept-set IDs given.
pub fn repair(
    task: (u32, u32),
    parent: u32,
    tags: Option<(u64, u64)>,
    chain: Option<&Chain>,
    done: bool,
) -> String {
    let mut fields = vec![
        ("pid".to_owned(), task.0.to_string()),
        ("tid".to_owned(), task.1.to_string()),
        ("from".to_owned(), parent.to_string()),
        ("contid".to_owned(), chain_text(chain)),
    ];
    if let Some((set, kept)) = tags {
        fields.push(("set".into(), set.to_string()));
        fields.push(("kept".into(), kept.to_string()));
    }
    fields.push((
        "res".into(),
        if done { "success" } else { "failed" }.to_owned(),
    ));
    format_fields(&fields)
}

/// `PTAGS_EXEC`, `PTAGS_EXIT`: a task in a container started a program
/// or exited.
pub fn process_record(e: &Event, chain: Option<&Chain>) -> String {
    format_fields(&task_fields(e, chain))
}

/// The task a kernel event is about, and its container chain.
fn task_fields(e: &Event, chain: Option<&Chain>) -> Vec<(String, String)> {
    vec![
        ("pid".to_owned(), e.pid.to_string()),
        ("tid".to_owned(), e.tid.to_string()),
        ("ppid".to_owned(), e.ppid.to_string()),
        ("uid".to_owned(), e.uid.to_string()),
        ("auid".to_owned(), e.loginuid.to_string()),
        ("ses".to_owned(), e.sessionid.to_string()),
        ("comm".to_owned(), encode_untrusted(e.comm.as_bytes())),
        ("contid".to_owned(), chain_text(chain)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Subject {
        Subject {
            pid: 42,
            uid: 1000,
            auid: 1000,
            ses: 3,
            comm: b"ptags".to_vec(),
        }
    }

    fn write(text: &str) -> TagOp<'_> {
        TagOp {
            op: "write",
            pid: 7,
            tid: None,
            text: Some(text),
            new_contid: None,
        }
    }

    #[test]
    fn a_long_text_is_recorded_as_a_prefix_its_length_and_digest() {
        let refused = Error::new(Errno::Eperm, "no");
        let text = format!("+a\n{}", "#".repeat(66 * 1024));
        for failure in [None, Some(&refused)] {
            let body = tag_op(&write(&text), None, &caller(), None, failure);
            let prefix = encode_untrusted(&text.as_bytes()[..MAX_RECORDED_TEXT]);
            assert!(body.contains(&format!(" text={prefix} ")), "{body}");
            assert!(body.contains(&format!(" text-len={} ", text.len())));
            let digest = blake3::hash(text.as_bytes()).to_hex().to_string();
            assert!(body.contains(&format!(" text-digest={digest} ")));
            // A refused flood costs about 2 KiB a record, not 64.
            assert!(body.len() < 2 * MAX_RECORDED_TEXT + 512, "{}", body.len());
        }
        let short = tag_op(&write("+a\n"), None, &caller(), Some(1), None);
        assert!(!short.contains("text-len") && !short.contains("text-digest"));
        assert!(short.ends_with("res=success threads=1"), "{short}");
    }

    #[test]
    fn a_suppression_names_the_user_the_count_and_the_times() {
        let mut s = Suppressed {
            source: super::super::limit::Source {
                uid: 1000,
                contid: None,
            },
            count: 380,
            since: Duration::from_millis(1_700_000_000_250),
            until: Duration::from_millis(1_700_000_001_007),
            ongoing: true,
        };
        assert_eq!(
            suppressed(&s, None),
            "uid=1000 contid=-1 suppressed=380 since=1700000000.250 until=1700000001.007 ongoing=yes"
        );
        s.source.contid = Some(42);
        assert!(suppressed(&s, None).starts_with("uid=1000 contid=42 "));
        assert!(suppressed(&s, Some("namespace-changes")).ends_with(" of=namespace-changes"));
    }
}
