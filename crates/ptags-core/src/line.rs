//! The write language: a text of lines, each one operation on a tag set.

use crate::tag::{validate_glob_prefix, validate_name, validate_value, Invalid};

/// Which tags an operation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// One tag, by its full name.
    Name(&'a str),
    /// Every tag whose name starts with this prefix (which ends in `:`);
    /// written `PREFIX:*`.
    Prefix(&'a str),
    /// Every tag; written as nothing after the operator.
    All,
}

impl Selector<'_> {
    pub fn matches(&self, name: &str) -> bool {
        match *self {
            Selector::Name(n) => n == name,
            Selector::Prefix(p) => name.starts_with(p),
            Selector::All => true,
        }
    }
}

/// One parsed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// `+NAME`, `+@NAME`: add, without a value; with `keep`, also set
    /// the keep flag. An existing tag keeps its value. (`+NAME=VALUE` is
    /// EINVAL, as in the 2016 module: a writer allowed only to add could
    /// otherwise give a tag any value.)
    Add { name: &'a str, keep: bool },
    /// `+@PREFIX:*`, `+@`: set the keep flag on existing tags.
    Keep(Selector<'a>),
    /// `-NAME`, `-PREFIX:*`, `-`: remove.
    Remove(Selector<'a>),
    /// `-@NAME`, `-@PREFIX:*`, `-@`: clear the keep flag.
    Unkeep(Selector<'a>),
    /// `!NAME=VALUE`, `!NAME=`, `!NAME`: set or clear the value.
    SetValue {
        name: &'a str,
        value: Option<&'a str>,
    },
    /// `?PATTERN`, `?@PATTERN`, `?`, `?@`: test that a (kept) tag matches.
    Query { selector: Selector<'a>, kept: bool },
}

/// Parses the text after an operator into a selector.
fn selector(text: &str) -> Result<Selector<'_>, Invalid> {
    if text.is_empty() {
        return Ok(Selector::All);
    }
    if let Some(prefix) = text.strip_suffix('*') {
        if !prefix.ends_with(':') {
            return Err(Invalid::BadGlob);
        }
        validate_glob_prefix(prefix)?;
        return Ok(Selector::Prefix(prefix));
    }
    validate_name(text)?;
    Ok(Selector::Name(text))
}

/// `NAME[=VALUE]`, both validated; an empty value is no value.
fn name_and_value(text: &str) -> Result<(&str, Option<&str>), Invalid> {
    let (name, value) = match text.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (text, None),
    };
    validate_name(name)?;
    if let Some(v) = value {
        validate_value(v)?;
    }
    Ok((name, value.filter(|v| !v.is_empty())))
}

/// A selector that must not carry a value: `-a=b` is an error, reported
/// as such rather than as a bad name.
fn selector_without_value(text: &str) -> Result<Selector<'_>, Invalid> {
    if text.contains('=') {
        return Err(Invalid::UnexpectedValue);
    }
    selector(text)
}

/// A tag pattern, `NAME` or `PREFIX:*`: what follows `?` in the write
/// language, without the keep marker.
pub fn parse_pattern(pattern: &str) -> Result<Selector<'_>, String> {
    if pattern.is_empty() {
        return Err("an empty tag pattern".into());
    }
    if pattern.contains('=') {
        return Err(format!(
            "{pattern:?} is not a tag pattern (NAME or PREFIX:*)"
        ));
    }
    selector(pattern).map_err(|e| format!("{pattern:?} is not a tag pattern: {e}"))
}

/// Parses one line, without its newline. `Ok(None)` for an empty line or
/// a comment.
pub fn parse_line(line: &str) -> Result<Option<Op<'_>>, Invalid> {
    let mut chars = line.chars();
    let op = match chars.next() {
        None | Some('#') => return Ok(None),
        Some(c) => c,
    };
    let rest = chars.as_str();
    let (at, after_at) = match rest.strip_prefix('@') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let parsed = match op {
        '+' => match selector_or_add(after_at)? {
            AddTarget::Glob(s) if at => Op::Keep(s),
            AddTarget::Glob(_) => return Err(Invalid::GlobCannotAdd),
            AddTarget::Tag(name) => Op::Add { name, keep: at },
        },
        '-' if at => Op::Unkeep(selector_without_value(after_at)?),
        '-' => Op::Remove(selector_without_value(after_at)?),
        '!' => {
            let (name, value) = name_and_value(rest)?;
            Op::SetValue { name, value }
        }
        '?' => Op::Query {
            selector: selector_without_value(after_at)?,
            kept: at,
        },
        other => return Err(Invalid::UnknownOperator(other)),
    };
    Ok(Some(parsed))
}

enum AddTarget<'a> {
    Glob(Selector<'a>),
    Tag(&'a str),
}

/// After `+` or `+@`: a glob (only `+@` may use one) or a tag to add.
fn selector_or_add(text: &str) -> Result<AddTarget<'_>, Invalid> {
    if text.contains('=') {
        return Err(Invalid::ValueInAdd);
    }
    if text.is_empty() || text.ends_with('*') {
        return selector(text).map(AddTarget::Glob);
    }
    validate_name(text)?;
    Ok(AddTarget::Tag(text))
}

/// Splits a write text into numbered lines (1-based), checking the
/// newline and UTF-8 rules. Yields `(line_no, Ok(line))` for each line.
pub fn lines(text: &[u8]) -> impl Iterator<Item = (usize, Result<&str, Invalid>)> {
    text.split_inclusive(|&b| b == b'\n')
        .enumerate()
        .map(|(i, raw)| {
            let line = match raw.strip_suffix(b"\n") {
                Some(l) => std::str::from_utf8(l).map_err(|_| Invalid::NotUtf8),
                None => Err(Invalid::MissingNewline),
            };
            (i + 1, line)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Selector::*;

    fn ok(line: &str) -> Op<'_> {
        parse_line(line).unwrap().unwrap()
    }

    fn err(line: &str) -> Invalid {
        parse_line(line).unwrap_err()
    }

    #[test]
    fn every_row_of_the_table() {
        assert_eq!(
            ok("+a"),
            Op::Add {
                name: "a",
                keep: false
            }
        );
        assert_eq!(
            ok("+@a"),
            Op::Add {
                name: "a",
                keep: true
            }
        );
        // The 2016 module's validator refused '=' in the name of a `+`.
        for line in [
            "+a=v", "+a=", "+@a=v", "+@a=v=w", "+=v", "+S:*=v", "+@S:*=v",
        ] {
            assert_eq!(err(line), Invalid::ValueInAdd, "{line}");
        }
        assert_eq!(ok("+@S:*"), Op::Keep(Prefix("S:")));
        assert_eq!(ok("+@"), Op::Keep(All));
        assert_eq!(err("+S:*"), Invalid::GlobCannotAdd);
        assert_eq!(err("+"), Invalid::GlobCannotAdd);
        assert_eq!(ok("-a"), Op::Remove(Name("a")));
        assert_eq!(ok("-S:*"), Op::Remove(Prefix("S:")));
        assert_eq!(ok("-"), Op::Remove(All));
        assert_eq!(ok("-@a"), Op::Unkeep(Name("a")));
        assert_eq!(ok("-@S:*"), Op::Unkeep(Prefix("S:")));
        assert_eq!(ok("-@"), Op::Unkeep(All));
        assert_eq!(
            ok("!a=v"),
            Op::SetValue {
                name: "a",
                value: Some("v")
            }
        );
        assert_eq!(
            ok("!a="),
            Op::SetValue {
                name: "a",
                value: None
            }
        );
        assert_eq!(
            ok("!a"),
            Op::SetValue {
                name: "a",
                value: None
            }
        );
        assert_eq!(
            ok("?a"),
            Op::Query {
                selector: Name("a"),
                kept: false
            }
        );
        assert_eq!(
            ok("?S:*"),
            Op::Query {
                selector: Prefix("S:"),
                kept: false
            }
        );
        assert_eq!(
            ok("?@a"),
            Op::Query {
                selector: Name("a"),
                kept: true
            }
        );
        assert_eq!(
            ok("?"),
            Op::Query {
                selector: All,
                kept: false
            }
        );
        assert_eq!(
            ok("?@"),
            Op::Query {
                selector: All,
                kept: true
            }
        );
    }

    #[test]
    fn comments_and_empty_lines() {
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("#"), Ok(None));
        assert_eq!(parse_line("# +a anything \x01 goes"), Ok(None));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err("a"), Invalid::UnknownOperator('a'));
        assert_eq!(err(" +a"), Invalid::UnknownOperator(' '));
        assert_eq!(err("*"), Invalid::UnknownOperator('*'));
        assert_eq!(err("-a=b"), Invalid::UnexpectedValue);
        assert_eq!(err("-@a=b"), Invalid::UnexpectedValue);
        assert_eq!(err("?a=b"), Invalid::UnexpectedValue);
        assert_eq!(err("-S*"), Invalid::BadGlob);
        assert_eq!(err("-*"), Invalid::BadGlob);
        assert_eq!(
            err("?a:*:*"),
            Invalid::ForbiddenNameByte {
                byte: b'*',
                offset: 2
            }
        );
        assert_eq!(
            err("-a:*b"),
            Invalid::ForbiddenNameByte {
                byte: b'*',
                offset: 2
            }
        );
        assert_eq!(err("!"), Invalid::EmptyName);
        assert_eq!(err("!=v"), Invalid::EmptyName);
        assert_eq!(
            err("!a:*"),
            Invalid::ForbiddenNameByte {
                byte: b'*',
                offset: 2
            }
        );
        assert_eq!(err("+@@a"), Invalid::NameStartsWithAt);
        assert_eq!(err("-@@:*"), Invalid::NameStartsWithAt);
        assert_eq!(err("+a:"), Invalid::NameEndsWithColon);
        assert_eq!(err("+ptags:x"), Invalid::BadPermissionName);
        assert_eq!(err("!a=\t"), Invalid::ControlInValue { code: 9, offset: 0 });
        assert_eq!(
            err("!a:*=v"),
            Invalid::ForbiddenNameByte {
                byte: b'*',
                offset: 2
            }
        );
    }

    #[test]
    fn globs_may_start_with_an_empty_field() {
        assert_eq!(ok("-:*"), Op::Remove(Prefix(":")));
        assert!(Prefix(":").matches(":x::a"));
        assert!(!Prefix("S:").matches("S"));
        assert!(Prefix("S:").matches("S:A:B.c"));
    }

    #[test]
    fn line_splitting() {
        let v: Vec<_> = lines(b"+a\n\n#c\n+b").collect();
        assert_eq!(
            v,
            [
                (1, Ok("+a")),
                (2, Ok("")),
                (3, Ok("#c")),
                (4, Err(Invalid::MissingNewline))
            ]
        );
        let v: Vec<_> = lines(b"+a\n#\xff\n").collect();
        assert_eq!(v[1], (2, Err(Invalid::NotUtf8)));
        assert_eq!(lines(b"").count(), 0);
    }
}
