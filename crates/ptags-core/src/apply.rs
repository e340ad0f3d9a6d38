//! Applying a write text to a tag set.

use std::fmt;

use crate::errno::Errno;
use crate::line::{lines, parse_line, Op, Selector};
use crate::perm::Writer;
use crate::tag::{Action, Invalid, Tag, MAX_TAGS};
use crate::tagset::{find, prefix_range, TagSet};

/// Why a line failed: its errno, and in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Invalid(Invalid),
    /// The writer may not do this action on this tag.
    Denied {
        action: Action,
        name: String,
    },
    /// `!` on a tag that does not exist.
    NoSuchTag(String),
    /// `?` found no matching tag.
    NoMatch,
    /// Adding would exceed [`MAX_TAGS`].
    TooManyTags,
}

impl Reason {
    pub fn errno(&self) -> Errno {
        match self {
            Reason::Invalid(_) => Errno::Einval,
            Reason::Denied { .. } => Errno::Eperm,
            Reason::NoSuchTag(_) | Reason::NoMatch => Errno::Enoent,
            Reason::TooManyTags => Errno::Ecanceled,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Invalid(i) => write!(f, "{i}"),
            Reason::Denied { action, name } => {
                write!(f, "no permission to {action} tag {name:?}")
            }
            Reason::NoSuchTag(name) => write!(f, "no tag {name:?}"),
            Reason::NoMatch => f.write_str("no matching tag"),
            Reason::TooManyTags => write!(f, "a task holds at most {MAX_TAGS} tags"),
        }
    }
}

/// The line at which a write stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {}: {reason}", reason.errno())]
pub struct LineFailure {
    /// 1-based line number within the text.
    pub line: usize,
    pub reason: Reason,
}

impl LineFailure {
    pub fn errno(&self) -> Errno {
        self.reason.errno()
    }
}

/// The result of a write: the tags after every line that succeeded, and the
/// line that failed, if one did. Lines before a failure stay applied.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub tags: TagSet,
    pub failure: Option<LineFailure>,
}

impl WriteOutcome {
    pub fn into_result(self) -> Result<TagSet, LineFailure> {
        match self.failure {
            None => Ok(self.tags),
            Some(f) => Err(f),
        }
    }
}

/// Applies `text` to `current`, line by line, as `writer`.
pub fn apply_write(current: &TagSet, text: &[u8], writer: &Writer) -> WriteOutcome {
    let mut work = Working {
        tags: None,
        base: current,
        writer,
    };
    for (line_no, line) in lines(text) {
        let result = line
            .and_then(parse_line)
            .map_err(Reason::Invalid)
            .and_then(|op| op.map_or(Ok(()), |op| work.apply(op)));
        if let Err(reason) = result {
            return WriteOutcome {
                tags: work.finish(),
                failure: Some(LineFailure {
                    line: line_no,
                    reason,
                }),
            };
        }
    }
    WriteOutcome {
        tags: work.finish(),
        failure: None,
    }
}

/// The tags being written: the unchanged base until the first change, so
/// that reads and queries never copy.
struct Working<'a> {
    tags: Option<Vec<Tag>>,
    base: &'a TagSet,
    writer: &'a Writer,
}

impl Working<'_> {
    fn view(&self) -> &[Tag] {
        self.tags.as_deref().unwrap_or(self.base.as_slice())
    }

    fn edit(&mut self) -> &mut Vec<Tag> {
        self.tags
            .get_or_insert_with(|| self.base.as_slice().to_vec())
    }

    fn finish(self) -> TagSet {
        match self.tags {
            Some(tags) => TagSet::from_sorted(tags),
            None => self.base.clone(),
        }
    }

    fn check(&self, action: Action, name: &str) -> Result<(), Reason> {
        if self.writer.may(action, name) {
            Ok(())
        } else {
            Err(Reason::Denied {
                action,
                name: name.to_owned(),
            })
        }
    }

    fn range(&self, selector: Selector<'_>) -> std::ops::Range<usize> {
        match selector {
            Selector::Name(n) => match find(self.view(), n) {
                Ok(i) => i..i + 1,
                Err(_) => 0..0,
            },
            Selector::Prefix(p) => prefix_range(self.view(), p),
            Selector::All => 0..self.view().len(),
        }
    }

    /// For a named tag, the permission must hold (EPERM otherwise); for a
    /// glob, tags the writer may not touch are skipped.
    fn permitted(&self, selector: Selector<'_>, action: Action) -> Result<Vec<usize>, Reason> {
        if let Selector::Name(n) = selector {
            self.check(action, n)?;
        }
        let view = self.view();
        Ok(self
            .range(selector)
            .filter(|&i| self.writer.may(action, view[i].name()))
            .collect())
    }

    fn set_keep(
        &mut self,
        selector: Selector<'_>,
        action: Action,
        keep: bool,
    ) -> Result<(), Reason> {
        let indices = self.permitted(selector, action)?;
        let changed: Vec<_> = indices
            .into_iter()
            .filter(|&i| self.view()[i].keep() != keep)
            .collect();
        if !changed.is_empty() {
            let tags = self.edit();
            for i in changed {
                tags[i] = tags[i].with_keep(keep);
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: Op<'_>) -> Result<(), Reason> {
        match op {
            Op::Add { name, keep } => {
                self.check(Action::Add, name)?;
                match find(self.view(), name) {
                    Ok(i) if keep && !self.view()[i].keep() => {
                        let tags = self.edit();
                        tags[i] = tags[i].with_keep(true);
                    }
                    Ok(_) => {}
                    Err(_) if self.view().len() >= MAX_TAGS => return Err(Reason::TooManyTags),
                    Err(i) => self.edit().insert(i, Tag::new_unchecked(name, None, keep)),
                }
            }
            Op::Keep(selector) => self.set_keep(selector, Action::Add, true)?,
            Op::Unkeep(selector) => self.set_keep(selector, Action::Sub, false)?,
            Op::Remove(selector) => {
                let indices = self.permitted(selector, Action::Sub)?;
                if !indices.is_empty() {
                    let tags = self.edit();
                    let mut doomed = indices.into_iter().peekable();
                    let mut i = 0;
                    tags.retain(|_| {
                        let remove = doomed.next_if_eq(&i).is_some();
                        i += 1;
                        !remove
                    });
                }
            }
            Op::SetValue { name, value } => {
                self.check(Action::Set, name)?;
                let i = find(self.view(), name).map_err(|_| Reason::NoSuchTag(name.to_owned()))?;
                if self.view()[i].value() != value {
                    let tags = self.edit();
                    tags[i] = tags[i].with_value(value);
                }
            }
            Op::Query { selector, kept } => {
                let view = self.view();
                if !self.range(selector).any(|i| !kept || view[i].keep()) {
                    return Err(Reason::NoMatch);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perm::Target;

    fn set(text: &str) -> TagSet {
        TagSet::parse_read_format(text.as_bytes()).unwrap()
    }

    #[test]
    fn no_change_shares_the_base() {
        let base = set("a\n");
        let out = apply_write(&base, b"?a\n+a\n", &Writer::admin(Target::Itself));
        assert!(out.failure.is_none());
        assert_eq!(out.tags, base);
    }

    #[test]
    fn failure_message_names_line_and_errno() {
        let out = apply_write(&set(""), b"+a\n!b=1\n", &Writer::admin(Target::Itself));
        assert_eq!(
            out.failure.unwrap().to_string(),
            "line 2: ENOENT: no tag \"b\""
        );
    }
}
