//! The tree of the 2016 files, pure: what each inode is, what a name in
//! a directory is, and what a write's answer becomes for the writer.
//!
//!     /            PID/ ... and `self` (a link to the reader's PID)
//!     PID/         attr/ptags, audit_containerid, task/
//!     PID/task/    TID/attr/ptags
//!
//! An inode names the node with the daemon's pids (bits 32..54 the
//! process, 8..30 the thread, 0..7 the kind); the kernel asks again at
//! every lookup (no entry is cached), so readers in other PID namespaces
//! never share a stale entry.

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Root,
    /// `self`: a link to the reader's own process.
    SelfLink,
    Process(u32),
    ProcessAttr(u32),
    /// `PID/attr/ptags`: every thread of the process.
    ProcessTags(u32),
    /// `PID/audit_containerid`.
    Contid(u32),
    Tasks(u32),
    Task(u32, u32),
    TaskAttr(u32, u32),
    /// `PID/task/TID/attr/ptags`: that thread alone.
    TaskTags(u32, u32),
}

/// Whether the node is a directory, a file, or the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Link,
}

impl Node {
    pub fn ino(self) -> u64 {
        let (pid, tid, kind) = match self {
            Node::Root => return 1,
            Node::SelfLink => return 2,
            Node::Process(p) => (p, 0, 3),
            Node::ProcessAttr(p) => (p, 0, 4),
            Node::ProcessTags(p) => (p, 0, 5),
            Node::Contid(p) => (p, 0, 6),
            Node::Tasks(p) => (p, 0, 7),
            Node::Task(p, t) => (p, t, 8),
            Node::TaskAttr(p, t) => (p, t, 9),
            Node::TaskTags(p, t) => (p, t, 10),
        };
        u64::from(pid) << 32 | u64::from(tid) << 8 | kind
    }

    pub fn from_ino(ino: u64) -> Option<Node> {
        let (pid, tid) = ((ino >> 32) as u32, ((ino >> 8) & 0xff_ffff) as u32);
        Some(match ino & 0xff {
            1 if ino == 1 => Node::Root,
            2 if ino == 2 => Node::SelfLink,
            3 => Node::Process(pid),
            4 => Node::ProcessAttr(pid),
            5 => Node::ProcessTags(pid),
            6 => Node::Contid(pid),
            7 => Node::Tasks(pid),
            8 => Node::Task(pid, tid),
            9 => Node::TaskAttr(pid, tid),
            10 => Node::TaskTags(pid, tid),
            _ => return None,
        })
    }

    pub fn kind(self) -> Kind {
        match self {
            Node::SelfLink => Kind::Link,
            Node::ProcessTags(_) | Node::Contid(_) | Node::TaskTags(..) => Kind::File,
            _ => Kind::Dir,
        }
    }

    /// The fixed entries of a directory (not the pids of `/` and
    /// `task/`, which are the live tasks').
    pub fn fixed_children(self) -> &'static [&'static str] {
        match self {
            Node::Root => &["self"],
            Node::Process(_) => &["attr", "audit_containerid", "task"],
            Node::ProcessAttr(_) | Node::TaskAttr(..) => &["ptags"],
            Node::Task(..) => &["attr"],
            _ => &[],
        }
    }

    /// The node `name` names in this directory; `pid_of` turns a number
    /// into the daemon's pid of a live task the reader may name.
    pub fn child(self, name: &str, pid_of: impl Fn(u32) -> Option<u32>) -> Option<Node> {
        let number = || {
            let n: u32 = name.parse().ok()?;
            (name.bytes().all(|b| b.is_ascii_digit()) && !name.starts_with('0')).then_some(n)
        };
        Some(match (self, name) {
            (Node::Root, "self") => Node::SelfLink,
            (Node::Root, _) => Node::Process(pid_of(number()?)?),
            (Node::Process(p), "attr") => Node::ProcessAttr(p),
            (Node::Process(p), "audit_containerid") => Node::Contid(p),
            (Node::Process(p), "task") => Node::Tasks(p),
            (Node::ProcessAttr(p), "ptags") => Node::ProcessTags(p),
            (Node::Tasks(p), _) => Node::Task(p, pid_of(number()?)?),
            (Node::Task(p, t), "attr") => Node::TaskAttr(p, t),
            (Node::TaskAttr(p, t), "ptags") => Node::TaskTags(p, t),
            _ => return None,
        })
    }
}

/// What a write through `attr/ptags` answers its writer, as the 2016
/// module's write() did: every byte when every line applied; the bytes of
/// the lines before `failed_line` (1-based) when a later line failed;
/// the error itself when the first did.
pub fn written(data: &[u8], failed_line: Option<usize>) -> Result<usize, ()> {
    match failed_line {
        None => Ok(data.len()),
        Some(0 | 1) => Err(()),
        Some(line) => Ok(data
            .split_inclusive(|&b| b == b'\n')
            .take(line - 1)
            .map(<[u8]>::len)
            .sum()),
    }
}

/// An `audit_containerid` write's value: a decimal u64, as the patches'
/// `kstrtoull` took it (one trailing newline allowed); `None` otherwise
/// (`-1` included).
pub fn parse_contid(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_has_an_inode_of_its_own() {
        let nodes = [
            Node::Root,
            Node::SelfLink,
            Node::Process(4_194_304),
            Node::ProcessAttr(7),
            Node::ProcessTags(7),
            Node::Contid(7),
            Node::Tasks(7),
            Node::Task(7, 4_194_304),
            Node::TaskAttr(7, 8),
            Node::TaskTags(1, 1),
        ];
        for n in nodes {
            assert_eq!(Node::from_ino(n.ino()), Some(n));
        }
        let inos: std::collections::HashSet<u64> = nodes.iter().map(|n| n.ino()).collect();
        assert_eq!(inos.len(), nodes.len());
        assert_eq!(Node::from_ino(0), None);
        assert_eq!(
            Node::from_ino(0x1_0000_0001),
            None,
            "kind 1 is the root alone"
        );
    }

    #[test]
    fn names_resolve_as_in_proc() {
        let live = |n: u32| (n == 42 || n == 43).then_some(n + 1000);
        assert_eq!(Node::Root.child("42", live), Some(Node::Process(1042)));
        assert_eq!(Node::Root.child("self", live), Some(Node::SelfLink));
        for bad in ["41", "042", "+42", "42 ", "", "4294967296"] {
            assert_eq!(Node::Root.child(bad, live), None, "{bad:?}");
        }
        let p = Node::Process(1042);
        assert_eq!(p.child("attr", live), Some(Node::ProcessAttr(1042)));
        assert_eq!(
            Node::ProcessAttr(1042).child("ptags", live),
            Some(Node::ProcessTags(1042))
        );
        assert_eq!(
            Node::Tasks(1042).child("43", live),
            Some(Node::Task(1042, 1043))
        );
        assert_eq!(
            Node::TaskAttr(1042, 1043).child("ptags", live),
            Some(Node::TaskTags(1042, 1043))
        );
        assert_eq!(p.child("ptags", live), None);
        assert_eq!(Node::ProcessTags(1).kind(), Kind::File);
    }

    #[test]
    fn a_write_answers_as_the_2016_module() {
        let three = b"+A\n+B\n+C=1\n";
        assert_eq!(written(three, None), Ok(11));
        assert_eq!(written(three, Some(3)), Ok(6), "the first two lines' bytes");
        assert_eq!(written(three, Some(2)), Ok(3));
        assert_eq!(written(three, Some(1)), Err(()));
        assert_eq!(written(b"+A\n+B", Some(2)), Ok(3));
    }

    #[test]
    fn a_container_id_is_a_decimal_u64() {
        assert_eq!(parse_contid(b"4242\n"), Some(4242));
        assert_eq!(parse_contid(b"4242"), Some(4242));
        assert_eq!(parse_contid(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b"-1"[..],
            b"",
            b"\n",
            b"42\n\n",
            b" 42",
            b"0x10",
            b"18446744073709551616",
        ] {
            assert_eq!(parse_contid(bad), None, "{bad:?}");
        }
    }
}
