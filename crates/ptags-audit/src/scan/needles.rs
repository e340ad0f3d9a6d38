//! The needles of a query: the texts a line must contain to be one that
//! can make an event match, and the record that anchors a match.

use std::collections::HashMap;

use memchr::memmem::Finder;
use ptags_core::line::Selector;

use super::lines::needle_lines;
use crate::query::{names_namespace, names_pid, touches_tags, Entry, Query};

/// Every filter of the query needs a record of the event that passes
/// its test, and that record's line contains one of these (or is a JSON
/// line): the lines that can make an event match.
pub(super) fn filter_needles(query: &Query) -> Vec<Finder<'static>> {
    let mut needles: Vec<String> = Vec::new();
    if query.contid.is_some() {
        needles.push("contid=".into());
    }
    if query.tag.is_some() {
        needles.extend(kind_needles(["PTAGS_OP"]));
    }
    if query.ns.is_some() {
        needles.push("type=NS_".into());
    }
    if let Some(pid) = query.pid {
        needles.push(pid.to_string());
    }
    needles.extend(kind_needles(&query.kinds));
    needles
        .iter()
        .map(|n| Finder::new(n.as_bytes()).into_owned())
        .collect()
}

/// The filter that picks the events worth parsing: every event that
/// matches has a record that passes its test, and a record's line
/// contains one of its needles (a JSON line, whose text may be escaped,
/// is tested whatever it contains).
pub(super) struct Anchor<'q> {
    pub(super) needles: Vec<Finder<'static>>,
    test: RecordTest<'q>,
}

enum RecordTest<'q> {
    Container,
    Tag(Selector<'q>),
    Namespace(u64),
    Pid(u32),
    Kind,
}

impl<'q> Anchor<'q> {
    /// The most selective filter of the query; `None` when it has none
    /// a record can be found by (times alone, or nothing).
    pub(super) fn of(query: &'q Query, tag: Option<Selector<'q>>) -> Option<Anchor<'q>> {
        let (needles, test): (Vec<String>, _) = if query.contid.is_some() {
            // `contid=` and `new-contid=`.
            (vec!["contid=".into()], RecordTest::Container)
        } else if let Some(selector) = tag {
            (kind_needles(["PTAGS_OP"]), RecordTest::Tag(selector))
        } else if let Some(inum) = query.ns {
            (vec!["type=NS_".into()], RecordTest::Namespace(inum))
        } else if let Some(pid) = query.pid {
            // A value that parses as `pid` has its digits (after a `+`
            // or leading zeros).
            (vec![pid.to_string()], RecordTest::Pid(pid))
        } else if !query.kinds.is_empty() {
            (kind_needles(&query.kinds), RecordTest::Kind)
        } else {
            return None;
        };
        let needles = needles
            .iter()
            .map(|n| Finder::new(n.as_bytes()).into_owned())
            .collect();
        Some(Anchor { needles, test })
    }

    pub(super) fn passes(
        &self,
        query: &Query,
        family: &HashMap<u64, usize>,
        e: &Entry<'_>,
    ) -> bool {
        match &self.test {
            RecordTest::Container => query.in_container(e, &|id| family.contains_key(&id)),
            RecordTest::Tag(selector) => touches_tags(e, selector),
            RecordTest::Namespace(inum) => names_namespace(e, *inum),
            RecordTest::Pid(pid) => names_pid(e, *pid),
            RecordTest::Kind => query.kinds.iter().any(|k| k == e.kind),
        }
    }

    /// The starts of the lines in `log[start..end]` (whole lines) that
    /// contain a needle, in order.
    pub(super) fn lines_with_needles(&self, log: &[u8], start: usize, end: usize) -> Vec<usize> {
        needle_lines(&self.needles, log, start, end)
    }
}

/// What the line of a record of one of these types starts with, seal or
/// not.
fn kind_needles<S: AsRef<str>>(kinds: impl IntoIterator<Item = S>) -> Vec<String> {
    kinds
        .into_iter()
        .map(|k| format!("type={} msg=audit(", k.as_ref()))
        .collect()
}
