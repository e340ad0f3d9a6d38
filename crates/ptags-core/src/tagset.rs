//! An immutable, cheaply shared set of tags with a stable content digest.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::digest::{self, Digest};
use crate::tag::{validate_name, validate_value, Invalid, Tag, MAX_TAGS};

/// Tags sorted by name in byte order, at most one per name.
///
/// Cloning shares the storage. Every constructor keeps the invariants
/// (sorted, unique, at most [`MAX_TAGS`], every tag valid).
#[derive(Clone)]
pub struct TagSet {
    inner: Arc<Inner>,
}

struct Inner {
    tags: Box<[Tag]>,
    digest: Digest,
}

impl TagSet {
    /// The set with no tags.
    pub fn empty() -> TagSet {
        TagSet::from_sorted(Vec::new())
    }

    /// A set from tags in any order. Fails on a duplicate name or on more
    /// than [`MAX_TAGS`] tags.
    pub fn from_tags(mut tags: Vec<Tag>) -> Result<TagSet, Invalid> {
        if tags.len() > MAX_TAGS {
            return Err(Invalid::TooManyTags);
        }
        tags.sort_by(|a, b| a.name().cmp(b.name()));
        if let Some(w) = tags.windows(2).find(|w| w[0].name() == w[1].name()) {
            return Err(Invalid::DuplicateTag(w[0].name().to_owned()));
        }
        Ok(TagSet::from_sorted(tags))
    }

    /// `tags` must be sorted by name, unique and within the limit.
    pub(crate) fn from_sorted(tags: Vec<Tag>) -> TagSet {
        debug_assert!(tags.windows(2).all(|w| w[0].name() < w[1].name()));
        debug_assert!(tags.len() <= MAX_TAGS);
        let digest = digest::of_set(tags.iter().map(|t| (t.content_hash(), t.keep())));
        TagSet {
            inner: Arc::new(Inner {
                tags: tags.into_boxed_slice(),
                digest,
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.tags.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Tag> {
        self.inner.tags.iter()
    }

    pub fn as_slice(&self) -> &[Tag] {
        &self.inner.tags
    }

    pub fn get(&self, name: &str) -> Option<&Tag> {
        find(&self.inner.tags, name)
            .ok()
            .map(|i| &self.inner.tags[i])
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The content identity: equal sets, and only equal sets, share it.
    pub fn digest(&self) -> &Digest {
        &self.inner.digest
    }

    /// What survives exec: the kept tags, with their values.
    pub fn kept(&self) -> TagSet {
        if self.iter().all(Tag::keep) {
            return self.clone();
        }
        TagSet::from_sorted(self.iter().filter(|t| t.keep()).cloned().collect())
    }

    /// The read format: one `[@]NAME[=VALUE]\n` line per tag, in order.
    pub fn to_read_format(&self) -> String {
        self.to_string()
    }

    /// Parses the read format (lines in any order, each ending in `\n`).
    /// Errors carry the 1-based line number.
    pub fn parse_read_format(text: &[u8]) -> Result<TagSet, (usize, Invalid)> {
        let mut tags = Vec::new();
        let mut line_of: std::collections::HashMap<&str, usize> = Default::default();
        for (i, raw) in text.split_inclusive(|&b| b == b'\n').enumerate() {
            let line_no = i + 1;
            let line = raw
                .strip_suffix(b"\n")
                .ok_or((line_no, Invalid::MissingNewline))?;
            let line = std::str::from_utf8(line).map_err(|_| (line_no, Invalid::NotUtf8))?;
            let (keep, rest) = match line.strip_prefix('@') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let (name, value) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (rest, None),
            };
            validate_name(name).map_err(|e| (line_no, e))?;
            if let Some(v) = value {
                validate_value(v).map_err(|e| (line_no, e))?;
            }
            if line_of.insert(name, line_no).is_some() {
                return Err((line_no, Invalid::DuplicateTag(name.to_owned())));
            }
            if tags.len() == MAX_TAGS {
                return Err((line_no, Invalid::TooManyTags));
            }
            tags.push(Tag::new_unchecked(name, value, keep));
        }
        tags.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(TagSet::from_sorted(tags))
    }
}

/// Binary search by name.
pub(crate) fn find(tags: &[Tag], name: &str) -> Result<usize, usize> {
    tags.binary_search_by(|t| t.name().cmp(name))
}

/// The index range of the tags whose names start with `prefix`. Such names
/// are contiguous in byte order.
pub(crate) fn prefix_range(tags: &[Tag], prefix: &str) -> Range<usize> {
    let start = tags.partition_point(|t| t.name() < prefix);
    let len = tags[start..].partition_point(|t| t.name().starts_with(prefix));
    start..start + len
}

impl PartialEq for TagSet {
    fn eq(&self, other: &TagSet) -> bool {
        self.inner.digest == other.inner.digest
    }
}

impl Eq for TagSet {}

impl std::hash::Hash for TagSet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.digest.hash(state)
    }
}

impl Default for TagSet {
    fn default() -> TagSet {
        TagSet::empty()
    }
}

impl fmt::Display for TagSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in self.iter() {
            writeln!(f, "{t}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TagSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> TagSet {
        TagSet::parse_read_format(text.as_bytes()).unwrap()
    }

    #[test]
    fn read_format_is_sorted_by_bytes_ignoring_keep() {
        let s = set("b\n@a=1\nZ\nकंटेनर=मान\n:x::a\n");
        assert_eq!(s.to_read_format(), ":x::a\nZ\n@a=1\nb\nकंटेनर=मान\n");
    }

    #[test]
    fn read_format_errors_name_the_line() {
        assert_eq!(
            TagSet::parse_read_format(b"a\nb"),
            Err((2, Invalid::MissingNewline))
        );
        assert_eq!(
            TagSet::parse_read_format(b"a\n@@b\n"),
            Err((2, Invalid::NameStartsWithAt))
        );
        assert_eq!(
            TagSet::parse_read_format(b"a=\x01\n"),
            Err((1, Invalid::ControlInValue { code: 1, offset: 0 }))
        );
        assert_eq!(
            TagSet::parse_read_format(b"\xff\n"),
            Err((1, Invalid::NotUtf8))
        );
        assert_eq!(
            TagSet::parse_read_format(b"a\n@a\n"),
            Err((2, Invalid::DuplicateTag("a".into())))
        );
    }

    #[test]
    fn empty_value_reads_as_no_value() {
        assert_eq!(set("a=\n").to_read_format(), "a\n");
    }

    #[test]
    fn digest_identity() {
        assert_eq!(set("a\nb=1\n").digest(), set("b=1\na\n").digest());
        assert_ne!(set("a\n").digest(), set("@a\n").digest());
        assert_ne!(set("a=1\n").digest(), set("a=2\n").digest());
        assert_ne!(set("a\n").digest(), TagSet::empty().digest());
        assert_eq!(TagSet::empty(), set(""));
    }

    #[test]
    fn kept_subset() {
        let s = set("@a=1\nb\n@c:d\n");
        assert_eq!(s.kept().to_read_format(), "@a=1\n@c:d\n");
        assert_eq!(s.kept().kept(), s.kept());
    }

    #[test]
    fn prefix_ranges() {
        let s = set("S\nS:A:B.c\nS:X\nS;\nSa\nT:1\n");
        let r = prefix_range(s.as_slice(), "S:");
        let names: Vec<_> = s.as_slice()[r].iter().map(Tag::name).collect();
        assert_eq!(names, ["S:A:B.c", "S:X"]);
        assert!(prefix_range(s.as_slice(), "U:").is_empty());
    }
}
