//! Fuzz harnesses, shared by the cargo-fuzz targets and by the test that
//! replays the committed corpus on stable Rust. Each harness checks the
//! invariants that must hold for any input, not only that nothing panics.

use arbitrary::{Arbitrary, Unstructured};
use ptags_core::contid::{self, Container, ContainerId, Decision, Limits, SetRequest, TaskRef};
use ptags_core::{apply_write, Tag, TagSet, Target, Writer, MAX_TAGS};

/// Input: a byte saying who writes, the current tags in the read format,
/// a NUL, then the write text. Also feeds every text parser.
pub fn write_text(data: &[u8]) {
    let Some((&who, rest)) = data.split_first() else {
        return;
    };
    let (current, text) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b""[..], rest),
    };
    let current = TagSet::parse_read_format(current).unwrap_or_default();
    // The read format round-trips.
    let again = TagSet::parse_read_format(current.to_read_format().as_bytes()).unwrap();
    assert_eq!(again, current);

    let target = match who & 3 {
        0 => Target::Itself,
        1 => Target::Other { may_access: true },
        _ => Target::Other { may_access: false },
    };
    let writer = Writer::new(&current, who & 4 != 0, target);
    let out = apply_write(&current, text, &writer);
    assert!(out.tags.len() <= MAX_TAGS);
    for t in out.tags.iter() {
        assert!(
            Tag::new(t.name(), t.value(), t.keep()).is_ok(),
            "invalid tag {t}"
        );
    }
    let line_count = text.split_inclusive(|&b| b == b'\n').count();
    if let Some(f) = &out.failure {
        assert!(f.line >= 1 && f.line <= line_count);
        let head: Vec<u8> = text
            .split_inclusive(|&b| b == b'\n')
            .take(f.line - 1)
            .flatten()
            .copied()
            .collect();
        let before = apply_write(&current, &head, &writer);
        assert!(before.failure.is_none());
        assert_eq!(before.tags, out.tags);
    }
    let kept = out.tags.kept();
    assert_eq!(kept.kept(), kept);

    if let Ok(s) = std::str::from_utf8(text) {
        if let Ok(chains) = contid::parse_chains(s) {
            let printed = contid::format_chains(&chains, contid::Style::Raw);
            assert_eq!(contid::parse_chains(&printed).unwrap(), chains);
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Facts {
    id: u64,
    caller: (u8, u8),
    caller_parent: (u8, u8),
    cap: bool,
    caller_contid: Option<u64>,
    target: (u8, u8),
    children: bool,
    threads: u8,
    ancestors: Vec<(u8, u8)>,
    target_container: Option<(u64, (u8, u8), Option<u64>, u8)>,
    existing: Option<(u64, (u8, u8), Option<u64>, u8)>,
    count: u16,
    max_containers: u16,
    max_depth: u8,
}

fn task((pid, start): (u8, u8)) -> TaskRef {
    TaskRef {
        pid: pid.into(),
        start_time: start.into(),
    }
}

fn container((id, owner, parent, depth): (u64, (u8, u8), Option<u64>, u8)) -> Option<Container> {
    Some(Container {
        id: ContainerId::new(id)?,
        owner: task(owner),
        parent: parent.and_then(ContainerId::new),
        depth: depth.into(),
    })
}

/// Arbitrary facts: the decision must respect every rule it claims to.
pub fn contid_decision(data: &[u8]) {
    let Ok(f) = Facts::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let ancestors: Vec<TaskRef> = f.ancestors.iter().copied().map(task).collect();
    let req = SetRequest {
        id: f.id,
        caller: task(f.caller),
        caller_parent: task(f.caller_parent),
        caller_has_audit_control: f.cap,
        caller_contid: f.caller_contid.and_then(ContainerId::new),
        target: task(f.target),
        target_has_children: f.children,
        target_threads: f.threads.into(),
        target_ancestors: &ancestors,
        target_container: f.target_container.and_then(container),
        // The registry's answer for the requested ID, so it holds that ID.
        existing: f.existing.and_then(|e| container((f.id, e.1, e.2, e.3))),
        container_count: f.count.into(),
        limits: Limits {
            max_containers: f.max_containers.into(),
            max_depth: f.max_depth.into(),
        },
    };
    let Ok(decision) = contid::decide(&req) else {
        return;
    };
    assert_ne!(req.id, contid::UNSET);
    assert!(req.caller_has_audit_control);
    assert!(!req.target_has_children && req.target_threads <= 1);
    assert_ne!(req.target, req.caller);
    assert!(ancestors.contains(&req.caller) || ancestors.contains(&req.caller_parent));
    match decision {
        Decision::Create(c) => {
            assert!(req.existing.is_none());
            assert!(c.depth <= req.limits.max_depth);
            assert!(req.container_count < req.limits.max_containers);
            assert!(c.owner == req.caller || c.owner == req.caller_parent);
            if let Some(cur) = req.target_container {
                assert_eq!(c.parent, Some(cur.id));
                assert_eq!(req.caller_contid, Some(cur.id));
                assert_ne!(cur.owner, c.owner);
            }
        }
        Decision::Inject(id) => {
            let existing = req.existing.expect("inject into an existing container");
            assert_eq!(existing.id, id);
            assert!(existing.owner == req.caller || existing.owner == req.caller_parent);
        }
    }
}

/// Input: the bytes a client sends on the daemon's socket. Every frame
/// is read within its limit; a frame that decodes is a valid request
/// that survives encoding, and one that does not gets an errno of the
/// protocol (never a panic).
pub fn request_frame(data: &[u8]) {
    use ptags_core::Errno;
    use ptags_proto::{read_frame, RequestFrame};
    let mut input = data;
    // A small limit so that the fuzzer reaches past the length check.
    while let Ok((body, ())) = read_frame(&mut input, 1 << 16, |_| Ok(())) {
        match RequestFrame::decode(&body) {
            Ok(req) => {
                assert!(req.validate().is_ok());
                let again = RequestFrame::decode(&RequestFrame::new(req.clone()).encode());
                assert_eq!(again, Ok(req));
            }
            Err(f) => assert!(
                matches!(f.errno(), Some(Errno::Eproto | Errno::Einval)),
                "{f}"
            ),
        }
    }
    // The body alone, as a frame's content.
    if let Err(f) = RequestFrame::decode(data) {
        assert!(matches!(f.errno(), Some(Errno::Eproto | Errno::Einval)));
    }
}

/// The trail's readers on any bytes: a line is split from its seal,
/// parsed as a record, matched and interpreted, and verified, without a
/// panic; a kernel payload parses or is refused; a time parses or not.
pub fn audit_log(data: &[u8]) {
    use ptags_audit::assemble::KernelRecord;
    use ptags_audit::chain::{Key, Sealed, Verifier};
    use ptags_audit::query::{interpret, parse_time, Entry, Matcher, Query};
    let text = String::from_utf8_lossy(data);
    let mut verifier = Verifier::new(Key::new([7; 32]), None);
    let mut matcher = Matcher::new(Query {
        contid: Some(7),
        nested: true,
        tag: Some("a:*".into()),
        ..Query::default()
    })
    .expect("a valid query");
    for line in text.lines() {
        let _ = verifier.verify(line);
        let record = Sealed::split(line).and_then(|s| s.text_record()).unwrap_or(line);
        if let Ok(entry) = Entry::parse(record) {
            let _ = interpret(&entry);
            let _ = matcher.matches(&[entry]);
        }
        let _ = KernelRecord::parse(1300, line.as_bytes());
        let _ = parse_time(line);
    }
}

/// The OCI hook's input: any bytes as a container state. A state that
/// parses has a bounded, non-empty ID and a known status; a label made
/// from it has a set ID, and tags whose every line parses.
pub fn oci_state(data: &[u8]) {
    use ptags_core::line::parse_line;
    use ptags_core::oci::{label, State, MAX_ID_BYTES};
    let Ok(state) = State::parse(data) else {
        return;
    };
    assert!(!state.id.is_empty() && state.id.len() <= MAX_ID_BYTES);
    if let Ok(label) = label(&state) {
        assert_ne!(label.contid.get(), u64::MAX);
        for line in label.tags.as_deref().unwrap_or_default().split('\n') {
            assert!(parse_line(line).is_ok(), "{line:?}");
        }
    }
}

/// A container's audit policy: text that parses is a policy whose
/// canonical text parses back to it (and is a fixed point), and that
/// decides any event without a panic; text that does not names the line
/// at fault (0 only for a text over the size limit).
pub fn audit_policy(data: &[u8]) {
    use ptags_audit::policy::{Policy, MAX_POLICY_BYTES};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text) {
        Ok(p) => {
            let canonical = p.to_text();
            assert_eq!(Policy::parse(&canonical), Ok(p.clone()), "{canonical:?}");
            assert_eq!(Policy::parse(&canonical).unwrap().to_text(), canonical);
            let text_field = ptags_audit::encode_untrusted(b"+vendor:a\n-build:*\n!role=web\n+cut");
            let op = format!(
                "op=write opid=42 contid=7 text={text_field} pid=40 uid=1000 auid=1000 ses=3 \
                 comm=\"sh\" res=success"
            );
            let exec = "arch=c000003e syscall=59 success=yes exit=0 ppid=100 pid=101 auid=1000 \
                        uid=0 comm=\"cat\" exe=\"/usr/bin/cat\" key=\"watch-etc\"";
            let open = "arch=c000003e syscall=2 success=no exit=-2 uid=1000 \
                        exe=2F6F70742F6D79206170702F72756E key=(null)";
            let user = "pid=5 uid=0 msg='op=PAM:session_open exe=\"/usr/sbin/sshd\" res=failed'";
            let events: [&[(&str, &str)]; 5] = [
                &[],
                &[
                    ("SYSCALL", exec),
                    ("EXECVE", "argc=2 a0=\"cat\" a1=\"/etc/passwd\""),
                    ("CONTAINER_ID", "contid=7"),
                ],
                &[("SYSCALL", open)],
                &[("PTAGS_OP", &op), ("CONTAINER_ID", "contid=7")],
                &[("USER_START", user)],
            ];
            for event in events {
                let _ = p.takes(event);
            }
            // The text's own lines, as records, too.
            let records: Vec<(&str, &str)> = text.lines().map(|l| ("PTAGS_OP", l)).collect();
            let _ = p.takes(&records);
        }
        Err(e) => {
            if e.line == 0 {
                assert!(text.strip_suffix('\n').unwrap_or(text).len() > MAX_POLICY_BYTES);
            } else {
                assert!(e.line <= text.split('\n').count(), "{e}");
            }
            assert!(!e.message.is_empty());
        }
    }
}

/// Device rules and lists (issue 19), from any bytes: as writes (one per
/// line), the first byte choosing between a device request's writes, a
/// stored listing and a bundle's config.json. A write that parses prints
/// back as a rule that parses to itself; a list built from writes lists
/// back to itself; a list that narrows another grants nothing it refuses
/// on the devices its rules name.
pub fn device_rules(data: &[u8]) {
    use ptags_core::devices::{parse_write, DeviceList, DeviceRule, DeviceType};
    use ptags_core::oci_devices::runtime_device_list;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 3 == 2 {
        if let Ok(list) = runtime_device_list(rest) {
            let text = list.rules().join("\n");
            assert_eq!(DeviceList::parse_listing(&text).as_ref(), Ok(&list));
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode % 3 == 1 {
        if let Ok(list) = DeviceList::parse_listing(text) {
            let again = list.rules().join("\n");
            assert_eq!(DeviceList::parse_listing(&again).as_ref(), Ok(&list));
        }
        return;
    }
    let (mut one, mut two) = (DeviceList::default(), DeviceList::default());
    for (i, line) in text.lines().enumerate() {
        let Ok((allow, rule)) = parse_write(line) else {
            continue;
        };
        assert_eq!(DeviceRule::parse(&rule.to_string()), Ok(rule));
        let list = if i % 2 == 0 { &mut one } else { &mut two };
        if list.write(allow, rule).is_err() {
            return;
        }
    }
    for list in [&one, &two] {
        let text = list.rules().join("\n");
        assert_eq!(DeviceList::parse_listing(&text).as_ref(), Ok(list));
    }
    if two.narrows(&one).is_ok() {
        for rule in one.exceptions.iter().chain(&two.exceptions) {
            for kind in [DeviceType::Block, DeviceType::Char] {
                let (major, minor) = (rule.major.unwrap_or(0), rule.minor.unwrap_or(0));
                let asked = rule.access;
                assert!(!two.allows(kind, major, minor, asked) || one.allows(kind, major, minor, asked));
            }
        }
    }
}

/// The search index's reader on any bytes: an index of a file made of
/// half the input, its body changed by the other half and sealed again
/// (so that the parse past the seal is reached), is refused or read
/// without a panic, and what is read tiles the file.
pub fn search_index(data: &[u8]) {
    use ptags_audit::index::{FileId, Index};
    use ptags_audit::scan::Split;
    let (file, noise) = data.split_at(data.len() / 2);
    let id = FileId {
        len: file.len() as u64,
        mtime_ns: 1,
        ino: 2,
        dev: 3,
    };
    let split = Split {
        chunk_bytes: 64,
        workers: 1,
    };
    let mut body = Index::build(file, split).encode(&id, file);
    body.truncate(body.len().saturating_sub(32));
    // The header (magic and version) stays: the noise lands past it.
    for (i, n) in noise.iter().enumerate() {
        let at = 12 + i % body.len().saturating_sub(12).max(1);
        if at < body.len() {
            body[at] ^= n;
        }
    }
    if noise.len() % 7 == 3 {
        body.truncate(body.len() - noise.len().min(body.len()));
    }
    let seal = ptags_audit::index::seal(&body);
    body.extend_from_slice(&seal);
    if let Ok(index) = Index::decode(&body, &id, file) {
        let mut at = 0;
        for block in &index.blocks {
            assert_eq!(block.start, at, "blocks tile the file");
            assert!(block.end > block.start && block.end <= file.len());
            at = block.end;
        }
    }
}
