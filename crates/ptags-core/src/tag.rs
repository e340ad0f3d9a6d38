//! One tag: its name, its value and its keep flag, and the rules that make
//! a name or a value valid.

use std::fmt;
use std::sync::Arc;

use crate::digest::{self, Digest};

/// Longest tag name, in bytes.
pub const MAX_NAME_LEN: usize = 4000;
/// Longest tag value, in bytes.
pub const MAX_VALUE_LEN: usize = 32700;
/// Most tags one task may carry.
pub const MAX_TAGS: usize = 4000;
/// Names with this prefix are permissions.
pub const PERMISSION_PREFIX: &str = "ptags:";

/// Why a name, a value or a line is not valid. Every one of these is an
/// EINVAL for the writer; the variant says which rule was broken so that
/// the user sees more than a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the tag name is empty")]
    EmptyName,
    #[error("the tag name is {0} bytes long, more than the {MAX_NAME_LEN} allowed")]
    NameTooLong(usize),
    #[error("byte {byte:#04x} at offset {offset} is not allowed in a tag name")]
    ForbiddenNameByte { byte: u8, offset: usize },
    #[error("a tag name must not start with '@'")]
    NameStartsWithAt,
    #[error("a tag name must not end with ':'")]
    NameEndsWithColon,
    #[error("a name under 'ptags:' must end in ':add', ':sub', ':set' or ':others'")]
    BadPermissionName,
    #[error("the value is {0} bytes long, more than the {MAX_VALUE_LEN} allowed")]
    ValueTooLong(usize),
    #[error("control character U+{code:04X} at offset {offset} is not allowed in a value")]
    ControlInValue { code: u32, offset: usize },
    #[error("the line is not valid UTF-8")]
    NotUtf8,
    #[error("the last line does not end with a newline")]
    MissingNewline,
    #[error("unknown operator {0:?}: a line starts with '+', '-', '!', '?' or '#'")]
    UnknownOperator(char),
    #[error("a glob or a bare '+' cannot add tags")]
    GlobCannotAdd,
    #[error("only '!' takes a value")]
    UnexpectedValue,
    #[error("'+' takes no value ('=' is not allowed in a tag name): add the tag, then set its value with '!NAME=VALUE', which needs the set permission")]
    ValueInAdd,
    #[error("a glob must end in ':*' ('*' is allowed nowhere else)")]
    BadGlob,
    #[error("tag {0:?} appears twice")]
    DuplicateTag(String),
    #[error("more than {MAX_TAGS} tags")]
    TooManyTags,
}

/// The action a permission grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Add,
    Sub,
    Set,
    /// Needed, beside the action itself, to act on another task's tag.
    Others,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Add, Action::Sub, Action::Set, Action::Others];

    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Sub => "sub",
            Action::Set => "set",
            Action::Others => "others",
        }
    }

    pub fn from_field(field: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == field)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks the bytes a name, or the part of a glob before its `*`, may hold.
fn check_name_bytes(s: &str) -> Result<(), Invalid> {
    if s.starts_with('@') {
        return Err(Invalid::NameStartsWithAt);
    }
    match s
        .bytes()
        .enumerate()
        .find(|&(_, b)| b < 0x20 || b == 0x7f || b == b'=' || b == b'*')
    {
        Some((offset, byte)) => Err(Invalid::ForbiddenNameByte { byte, offset }),
        None => Ok(()),
    }
}

/// Validates a tag name (the caller has already checked UTF-8).
pub fn validate_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Invalid::NameTooLong(name.len()));
    }
    check_name_bytes(name)?;
    if name.ends_with(':') {
        return Err(Invalid::NameEndsWithColon);
    }
    if name.starts_with(PERMISSION_PREFIX) && parse_permission(name).is_none() {
        return Err(Invalid::BadPermissionName);
    }
    Ok(())
}

/// Validates the `PREFIX:` of a glob `PREFIX:*` (trailing colon included).
pub fn validate_glob_prefix(prefix_with_colon: &str) -> Result<(), Invalid> {
    debug_assert!(prefix_with_colon.ends_with(':'));
    if prefix_with_colon.len() >= MAX_NAME_LEN {
        return Err(Invalid::NameTooLong(prefix_with_colon.len() + 1));
    }
    check_name_bytes(prefix_with_colon)
}

/// Validates a value. The spec forbids control characters: the C0 range,
/// DEL, and (since values are UTF-8 text) the C1 range U+0080..U+009F.
pub fn validate_value(value: &str) -> Result<(), Invalid> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Invalid::ValueTooLong(value.len()));
    }
    // A byte scan, not a char walk: values are up to 32 KB and this runs
    // on every write. In UTF-8, C1 controls are 0xC2 followed by 0x80..=0x9F.
    let bytes = value.as_bytes();
    let found = bytes.iter().enumerate().find_map(|(i, &b)| match b {
        0..=0x1f | 0x7f => Some((i, u32::from(b))),
        0xc2 => match bytes.get(i + 1) {
            Some(&next @ 0x80..=0x9f) => Some((i, u32::from(next))),
            _ => None,
        },
        _ => None,
    });
    match found {
        Some((offset, code)) => Err(Invalid::ControlInValue { code, offset }),
        None => Ok(()),
    }
}

/// What a permission tag `ptags:[SCOPE:]ACTION` grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission<'a> {
    /// `None` for `ptags:ACTION` (every tag not under `ptags:`), otherwise
    /// the tag `SCOPE` and every tag under `SCOPE:`.
    pub scope: Option<&'a str>,
    pub action: Action,
}

/// Reads a permission from a tag name, or `None` when the name is not a
/// well-formed permission.
pub fn parse_permission(name: &str) -> Option<Permission<'_>> {
    let rest = name.strip_prefix(PERMISSION_PREFIX)?;
    let (scope, action) = match rest.rfind(':') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    Some(Permission {
        scope,
        action: Action::from_field(action)?,
    })
}

/// The immutable content of a tag: shared between every set holding it,
/// so that copying a set with large values copies pointers, not bytes.
#[derive(Debug, PartialEq, Eq)]
struct Content {
    name: Box<str>,
    value: Option<Box<str>>,
    hash: Digest,
}

/// A valid tag. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Tag {
    content: Arc<Content>,
    keep: bool,
}

impl Tag {
    /// A tag, validated. An empty value is the same as no value.
    pub fn new(name: &str, value: Option<&str>, keep: bool) -> Result<Tag, Invalid> {
        validate_name(name)?;
        if let Some(v) = value {
            validate_value(v)?;
        }
        Ok(Tag::new_unchecked(name, value, keep))
    }

    /// For callers that validated `name` and `value` already.
    pub(crate) fn new_unchecked(name: &str, value: Option<&str>, keep: bool) -> Tag {
        let value = value.filter(|v| !v.is_empty());
        Tag {
            content: Arc::new(Content {
                name: name.into(),
                value: value.map(Into::into),
                hash: digest::of_tag(name, value),
            }),
            keep,
        }
    }

    pub fn name(&self) -> &str {
        &self.content.name
    }

    /// The value; `None` when it is empty or was never set.
    pub fn value(&self) -> Option<&str> {
        self.content.value.as_deref()
    }

    /// Whether the tag survives exec.
    pub fn keep(&self) -> bool {
        self.keep
    }

    /// The same content (shared, not copied) with this keep flag.
    pub fn with_keep(&self, keep: bool) -> Tag {
        Tag {
            content: Arc::clone(&self.content),
            keep,
        }
    }

    pub(crate) fn with_value(&self, value: Option<&str>) -> Tag {
        Tag::new_unchecked(self.name(), value, self.keep)
    }

    /// The digest of name and value (the keep flag is not part of it).
    pub fn content_hash(&self) -> &Digest {
        &self.content.hash
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The read format of one tag, without the newline: `[@]NAME[=VALUE]`.
impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.keep {
            f.write_str("@")?;
        }
        f.write_str(self.name())?;
        if let Some(v) = self.value() {
            write!(f, "={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_spec() {
        for ok in [
            "a",
            "UMCM:CONTAINER_ID",
            "कंटेनर",
            ":x::a",
            "S:A:B.c",
            "ptags:add",
            "ptags:sub",
            "ptags:set",
            "ptags:others",
            "ptags:UMCM:add",
            "ptags:ptags:add",
            "ptags",
            "with space",
            "é@x",
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(validate_name(""), Err(Invalid::EmptyName));
        assert_eq!(validate_name("@a"), Err(Invalid::NameStartsWithAt));
        assert_eq!(validate_name("a:"), Err(Invalid::NameEndsWithColon));
        assert_eq!(validate_name(":"), Err(Invalid::NameEndsWithColon));
        assert_eq!(validate_name("ptags:"), Err(Invalid::NameEndsWithColon));
        assert_eq!(validate_name("ptags:foo"), Err(Invalid::BadPermissionName));
        assert_eq!(
            validate_name("ptags:add:x"),
            Err(Invalid::BadPermissionName)
        );
        assert_eq!(validate_name("ptags:ADD"), Err(Invalid::BadPermissionName));
        for (name, offset, byte) in [
            ("a=b", 1, b'='),
            ("a*", 1, b'*'),
            ("a:*", 2, b'*'),
            ("\x7f", 0, 0x7f),
            ("a\tb", 1, b'\t'),
            ("a\rb", 1, b'\r'),
            ("\x1f", 0, 0x1f),
        ] {
            assert_eq!(
                validate_name(name),
                Err(Invalid::ForbiddenNameByte { byte, offset }),
                "{name:?}"
            );
        }
    }

    #[test]
    fn name_length_limit() {
        assert_eq!(validate_name(&"n".repeat(MAX_NAME_LEN)), Ok(()));
        assert_eq!(
            validate_name(&"n".repeat(MAX_NAME_LEN + 1)),
            Err(Invalid::NameTooLong(MAX_NAME_LEN + 1))
        );
        // The limit is in bytes, not characters: 1334 three-byte characters
        // are 4002 bytes.
        let deva = "क".repeat(1334);
        assert_eq!(validate_name(&deva), Err(Invalid::NameTooLong(4002)));
    }

    #[test]
    fn values() {
        assert_eq!(validate_value(""), Ok(()));
        assert_eq!(validate_value("a value with spaces = and :*@"), Ok(()));
        assert_eq!(validate_value("मान"), Ok(()));
        assert_eq!(validate_value(&"v".repeat(MAX_VALUE_LEN)), Ok(()));
        assert_eq!(
            validate_value(&"v".repeat(MAX_VALUE_LEN + 1)),
            Err(Invalid::ValueTooLong(MAX_VALUE_LEN + 1))
        );
        assert_eq!(
            validate_value("a\tb"),
            Err(Invalid::ControlInValue { code: 9, offset: 1 })
        );
        assert_eq!(
            validate_value("\x7f"),
            Err(Invalid::ControlInValue {
                code: 0x7f,
                offset: 0
            })
        );
        assert_eq!(
            validate_value("x\u{85}"),
            Err(Invalid::ControlInValue {
                code: 0x85,
                offset: 1
            })
        );
        assert_eq!(
            validate_value("\u{9f}"),
            Err(Invalid::ControlInValue {
                code: 0x9f,
                offset: 0
            })
        );
        // U+00A0 (0xC2 0xA0) is not a control character.
        assert_eq!(
            validate_value("\u{a0}\u{80}x"),
            Err(Invalid::ControlInValue {
                code: 0x80,
                offset: 2
            })
        );
        assert_eq!(validate_value("\u{a0}"), Ok(()));
    }

    #[test]
    fn permissions() {
        assert_eq!(
            parse_permission("ptags:add"),
            Some(Permission {
                scope: None,
                action: Action::Add
            })
        );
        assert_eq!(
            parse_permission("ptags:UMCM:others"),
            Some(Permission {
                scope: Some("UMCM"),
                action: Action::Others
            })
        );
        assert_eq!(
            parse_permission("ptags:ptags:add"),
            Some(Permission {
                scope: Some("ptags"),
                action: Action::Add
            })
        );
        assert_eq!(
            parse_permission("ptags:a::b:set"),
            Some(Permission {
                scope: Some("a::b"),
                action: Action::Set
            })
        );
        assert_eq!(parse_permission("ptags:bad"), None);
        assert_eq!(parse_permission("UMCM:add"), None);
    }

    #[test]
    fn empty_value_is_no_value() {
        let t = Tag::new("a", Some(""), false).unwrap();
        assert_eq!(t.value(), None);
        assert_eq!(t, Tag::new("a", None, false).unwrap());
        assert_eq!(
            Tag::new("a", Some("x=y"), true).unwrap().to_string(),
            "@a=x=y"
        );
    }
}
