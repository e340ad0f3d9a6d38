//! A record as a container sees it. A record in a container's copy names
//! its processes by the container's PID namespace, so that a reader
//! inside can act on them; the host's pid is kept beside it
//! (`pid=5 host-pid=81234`). A process the namespace cannot see (the
//! runtime that started the container) is `0`, as the kernel prints a
//! parent outside a namespace. Its container chains stop at the
//! container: a copy is not told its ancestors, nor the other containers
//! a record names (`ptags_core::contid::chains_within`).

use std::collections::HashMap;

use ptags_bpf::LocalPids;
use ptags_core::contid::{chains_within, format_chains, parse_chains, Style};
use ptags_core::ContainerId;

/// The fields that hold a pid, and the field that keeps the host's.
const PID_FIELDS: [(&str, &str); 4] = [
    ("pid", "host-pid"),
    ("ppid", "host-ppid"),
    ("opid", "host-opid"),
    ("tid", "host-tid"),
];

/// Rewrites the top-level fields of a record's body: `field` gives the
/// text that replaces a `key=value` token, if any; `None` when nothing
/// changed.
pub fn rewrite(body: &str, mut field: impl FnMut(&str, &str) -> Option<String>) -> Option<String> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    for (start, token) in tokens(body) {
        let Some((key, value)) = token.split_once('=') else {
            continue;
        };
        let Some(new) = field(key, value) else {
            continue;
        };
        let o = out.get_or_insert_with(|| String::with_capacity(body.len() + 32));
        o.push_str(&body[copied..start]);
        o.push_str(&new);
        copied = start + token.len();
    }
    let mut o = out?;
    o.push_str(&body[copied..]);
    Some(o)
}

/// A pid field as the container sees it, with the host's beside it.
pub fn pid_field(key: &str, value: &str, local: impl FnOnce(u32) -> u32) -> Option<String> {
    let &(_, host_key) = PID_FIELDS.iter().find(|(k, _)| *k == key)?;
    let host = value.parse::<u32>().ok()?;
    Some(format!("{key}={} {host_key}={host}", local(host)))
}

/// A `contid=` chain field as container `own` sees it, when that differs.
pub fn chain_field(key: &str, value: &str, own: ContainerId) -> Option<String> {
    // Most records are the container's own: its ID alone, unchanged.
    if key != "contid" || value.parse::<u64>().ok() == Some(own.get()) {
        return None;
    }
    let chains = parse_chains(value).ok()?;
    let seen = format_chains(&chains_within(&chains, own), Style::Raw);
    (seen != value).then(|| format!("contid={seen}"))
}

/// The space-separated tokens of a body outside double quotes, with
/// where each starts. A user-space record's `msg='...'` is one token
/// here: the pids inside it are the sender's words, not the kernel's.
fn tokens(body: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = body.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while bytes.get(at) == Some(&b' ') {
            at += 1;
        }
        if at >= bytes.len() {
            return None;
        }
        let start = at;
        let (mut dquote, mut squote) = (false, false);
        while let Some(&b) = bytes.get(at) {
            match b {
                b'"' if !squote => dquote = !dquote,
                b'\'' if !dquote => squote = !squote,
                b' ' if !dquote && !squote => break,
                _ => {}
            }
            at += 1;
        }
        Some((start, &body[start..at]))
    })
}

/// Host pids to a container's, read from `/proc/PID/status` (`NSpid`)
/// and kept for a second: the records of one event name the same few
/// processes.
pub struct PidMap {
    /// Depth of the container's PID namespace below the daemon's; found
    /// from the first of its own tasks a record names.
    level: Option<usize>,
    cache: HashMap<u32, Vec<u32>>,
}

impl PidMap {
    pub fn new() -> PidMap {
        PidMap {
            level: None,
            cache: HashMap::new(),
        }
    }

    /// Forgets what was read (pids are reused).
    pub fn expire(&mut self) {
        self.cache.clear();
    }

    fn nspids(&mut self, pid: u32) -> Option<&Vec<u32>> {
        if !self.cache.contains_key(&pid) {
            let status = ptags_bpf::procfs::Status::read(&format!("/proc/{pid}/status"))?;
            if status.nspid.first() != Some(&pid) {
                return None;
            }
            if self.cache.len() >= 4096 {
                self.cache.clear();
            }
            self.cache.insert(pid, status.nspid);
        }
        self.cache.get(&pid)
    }

    /// Learns the container's namespace from one of its own tasks: from
    /// what its event said, or else from /proc.
    pub fn learn(&mut self, own_task: u32, told: Option<LocalPids>) {
        if self.level.is_none() {
            self.level = match told {
                Some(l) => Some(l.level as usize),
                None => self.nspids(own_task).map(|p| p.len() - 1),
            };
        }
    }

    /// A pid field of a record as the container sees it: from what the
    /// record's source said of its task, when that task is in the
    /// container's namespace, or else from /proc.
    pub fn field(&mut self, key: &str, host: u32, record: (u32, Option<LocalPids>)) -> u32 {
        let (pid, told) = record;
        if let Some(l) = told.filter(|l| Some(l.level as usize) == self.level) {
            match key {
                "pid" if host == pid => return l.pid,
                "ppid" => return l.ppid,
                "tid" => return l.tid,
                _ => {}
            }
        }
        self.local(host)
    }

    /// `pid` as the container sees it: 0 when it cannot (outside its
    /// namespace, or gone before it was read).
    pub fn local(&mut self, pid: u32) -> u32 {
        let Some(level) = self.level else {
            return pid;
        };
        self.nspids(pid)
            .and_then(|p| p.get(level).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pids(body: &str, local: impl Fn(u32) -> u32) -> Option<String> {
        rewrite(body, |k, v| pid_field(k, v, &local))
    }

    #[test]
    fn pid_fields_are_rewritten_and_the_hosts_kept() {
        let body = "arch=c000003e syscall=59 ppid=100 pid=101 uid=0 comm=\"a pid=7\" key=(null)";
        let out = pids(body, |p| p - 99).unwrap();
        assert_eq!(
            out,
            "arch=c000003e syscall=59 ppid=1 host-ppid=100 pid=2 host-pid=101 uid=0 comm=\"a pid=7\" key=(null)"
        );
        let user = "pid=300 uid=0 msg='op=x pid=9 res=1'";
        assert_eq!(
            pids(user, |_| 0).unwrap(),
            "pid=0 host-pid=300 uid=0 msg='op=x pid=9 res=1'"
        );
        assert_eq!(pids("op=drop contid=5", |p| p), None);
        assert_eq!(pids("pid=x", |p| p), None);
    }

    #[test]
    fn chains_stop_at_the_container() {
        let own = ContainerId::new(7).unwrap();
        let seen = |body: &str| rewrite(body, |k, v| chain_field(k, v, own));
        assert_eq!(
            seen("pid=1 contid=9,^7,^3 x=1").unwrap(),
            "pid=1 contid=9,^7 x=1"
        );
        assert_eq!(seen("contid=7,8").unwrap(), "contid=7");
        assert_eq!(seen("contid=7"), None);
        assert_eq!(seen("old-contid=3 contid=-1"), None);
    }

    #[test]
    fn this_process_is_seen_from_the_daemons_namespace_as_itself() {
        let mut map = PidMap::new();
        let me = std::process::id();
        assert_eq!(map.local(me), me, "no level learnt: unchanged");
        map.learn(me, None);
        assert_eq!(map.local(me), me);
        assert_eq!(map.local(u32::MAX - 1), 0, "no such process");
    }
}
