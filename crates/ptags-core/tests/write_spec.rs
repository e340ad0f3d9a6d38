//! Every row of the write table of ptags-semantics.md, every errno, and the
//! permission examples, through `apply_write`.

use ptags_core::{apply_write, Errno, TagSet, Target, Writer, MAX_TAGS, MAX_VALUE_LEN};

fn set(text: &str) -> TagSet {
    TagSet::parse_read_format(text.as_bytes()).unwrap()
}

/// Who writes in a case.
enum Who {
    Admin,
    /// Writing to itself with these tags as permissions.
    Own(&'static str),
    /// Writing to another task it may access, with these tags.
    Other(&'static str),
    /// Writing to another task it may not access.
    Stranger(&'static str),
}

impl Who {
    fn writer(&self, own_tags_if_self: &TagSet) -> Writer {
        match *self {
            Who::Admin => Writer::admin(Target::Itself),
            Who::Own("") => Writer::new(own_tags_if_self, false, Target::Itself),
            Who::Own(perms) => Writer::new(&set(perms), false, Target::Itself),
            Who::Other(perms) => {
                Writer::new(&set(perms), false, Target::Other { may_access: true })
            }
            Who::Stranger(perms) => {
                Writer::new(&set(perms), false, Target::Other { may_access: false })
            }
        }
    }
}

/// (before, who, text, after, failure as (line, errno)).
type Case = (
    &'static str,
    Who,
    &'static str,
    &'static str,
    Option<(usize, Errno)>,
);

fn run(cases: &[Case]) {
    for (i, (before, who, text, after, failure)) in cases.iter().enumerate() {
        let before_set = set(before);
        let out = apply_write(&before_set, text.as_bytes(), &who.writer(&before_set));
        assert_eq!(
            out.tags.to_read_format(),
            *after,
            "case {i}: {text:?} on {before:?}"
        );
        let got = out.failure.map(|f| (f.line, f.errno()));
        assert_eq!(got, *failure, "case {i}: {text:?} on {before:?}");
    }
}

use Errno::*;
use Who::*;

#[test]
fn add() {
    run(&[
        ("", Admin, "+a\n", "a\n", None),
        ("a=1\n", Admin, "+a\n", "a=1\n", None),
        // `+` never sets a value: '=' is not allowed in a name (the 2016
        // module's EINVAL), for administrators too.
        ("a=1\n", Admin, "+a=2\n", "a=1\n", Some((1, Einval))),
        ("", Admin, "+a=2\n", "", Some((1, Einval))),
        ("", Admin, "+a=\n", "", Some((1, Einval))),
        ("", Admin, "+b\n+a=2\n", "b\n", Some((2, Einval))),
        ("@a\n", Admin, "+a\n", "@a\n", None),
        ("", Admin, "+@a\n", "@a\n", None),
        ("a=1\n", Admin, "+@a\n", "@a=1\n", None),
        ("", Admin, "+@a=v\n", "", Some((1, Einval))),
        (
            "",
            Admin,
            "+UMCM:CONTAINER_ID\n!UMCM:CONTAINER_ID=foo\n",
            "UMCM:CONTAINER_ID=foo\n",
            None,
        ),
        ("", Admin, "+कंटेनर\n!कंटेनर=मान\n", "कंटेनर=मान\n", None),
        ("", Admin, "+:x::a\n", ":x::a\n", None),
        ("", Admin, "+S:*\n", "", Some((1, Einval))),
        ("", Admin, "+\n", "", Some((1, Einval))),
        ("", Admin, "+@a:\n", "", Some((1, Einval))),
    ]);
}

#[test]
fn keep_globs() {
    run(&[
        (
            "S\nS:X\nS:A:B.c\nT:1\n",
            Admin,
            "+@S:*\n",
            "S\n@S:A:B.c\n@S:X\nT:1\n",
            None,
        ),
        ("a\nb=1\n", Admin, "+@\n", "@a\n@b=1\n", None),
        ("", Admin, "+@S:*\n", "", None),
    ]);
}

#[test]
fn remove() {
    run(&[
        ("a\nb\n", Admin, "-a\n", "b\n", None),
        ("b\n", Admin, "-a\n", "b\n", None),
        ("S\nS:X\nS:A:B.c\nT:1\n", Admin, "-S:*\n", "S\nT:1\n", None),
        ("a\n@b\n", Admin, "-\n", "", None),
        (
            "@a=1\n@S:1\n@S:2\nT\n",
            Admin,
            "-@a\n",
            "@S:1\n@S:2\nT\na=1\n",
            None,
        ),
        ("@S:1\n@S:2\n@T\n", Admin, "-@S:*\n", "S:1\nS:2\n@T\n", None),
        ("@a\n@b\n", Admin, "-@\n", "a\nb\n", None),
        ("", Admin, "-@a\n", "", None),
        ("a\n", Admin, "-a=1\n", "a\n", Some((1, Einval))),
    ]);
}

#[test]
fn set_value() {
    run(&[
        ("a\n", Admin, "!a=v\n", "a=v\n", None),
        ("@a=v\n", Admin, "!a=w x\n", "@a=w x\n", None),
        ("a=v\n", Admin, "!a=\n", "a\n", None),
        ("a=v\n", Admin, "!a\n", "a\n", None),
        ("", Admin, "!a=v\n", "", Some((1, Enoent))),
        ("a\n", Admin, "!a=\t\n", "a\n", Some((1, Einval))),
    ]);
}

#[test]
fn full_size_value() {
    let value = "v".repeat(MAX_VALUE_LEN);
    let text = format!("+a\n!a={value}\n");
    let out = apply_write(
        &TagSet::empty(),
        text.as_bytes(),
        &Writer::admin(Target::Itself),
    );
    assert!(out.failure.is_none());
    assert_eq!(out.tags.get("a").unwrap().value(), Some(value.as_str()));
    let text = format!("!a={value}v\n");
    let out = apply_write(&out.tags, text.as_bytes(), &Writer::admin(Target::Itself));
    assert_eq!(out.failure.unwrap().errno(), Einval);
}

#[test]
fn query() {
    run(&[
        ("a\n", Admin, "?a\n", "a\n", None),
        ("a\n", Admin, "?b\n", "a\n", Some((1, Enoent))),
        ("S:X\n", Admin, "?S:*\n", "S:X\n", None),
        ("S\n", Admin, "?S:*\n", "S\n", Some((1, Enoent))),
        ("a\n", Admin, "?@a\n", "a\n", Some((1, Enoent))),
        ("@a\n", Admin, "?@a\n", "@a\n", None),
        ("S:1\n@S:2\n", Admin, "?@S:*\n", "S:1\n@S:2\n", None),
        ("", Admin, "?\n", "", Some((1, Enoent))),
        ("a\n", Admin, "?\n", "a\n", None),
        ("a\n", Admin, "?@\n", "a\n", Some((1, Enoent))),
        ("@a\n", Admin, "?@\n", "@a\n", None),
        // Queries need no permission, not even access to the target.
        ("a\n", Own("x\n"), "?a\n", "a\n", None),
        ("a\n", Stranger("x\n"), "?a\n", "a\n", None),
    ]);
}

#[test]
fn text_rules() {
    run(&[
        ("", Admin, "", "", None),
        ("", Admin, "\n\n# +b\n+a\n", "a\n", None),
        ("", Admin, "+a\n+b", "a\n", Some((2, Einval))),
        ("", Admin, "+a\n#\u{e9}", "a\n", Some((2, Einval))),
        ("", Admin, "x\n", "", Some((1, Einval))),
    ]);
    let out = apply_write(
        &TagSet::empty(),
        b"+a\n# \xff\n+b\n",
        &Writer::admin(Target::Itself),
    );
    assert_eq!(out.failure.map(|f| (f.line, f.errno())), Some((2, Einval)));
}

#[test]
fn stops_at_the_first_failing_line() {
    run(&[
        ("", Admin, "+a\n+b\n!c=1\n+d\n", "a\nb\n", Some((3, Enoent))),
        ("", Admin, "+a\n?a\n?b\n-a\n", "a\n", Some((3, Enoent))),
        ("", Admin, "!c=1\n+a\n", "", Some((1, Enoent))),
    ]);
}

#[test]
fn tag_count_limit() {
    let full: String = (0..MAX_TAGS).map(|i| format!("t{i:05}\n")).collect();
    let before = set(&full);
    let admin = Writer::admin(Target::Itself);
    let out = apply_write(&before, b"+t00001\n+new\n", &admin);
    assert_eq!(
        out.failure.map(|f| (f.line, f.errno())),
        Some((2, Ecanceled))
    );
    assert_eq!(out.tags, before);
    let out = apply_write(&before, b"-t00001\n+new\n+again\n", &admin);
    assert_eq!(
        out.failure.map(|f| (f.line, f.errno())),
        Some((3, Ecanceled))
    );
    assert_eq!(out.tags.len(), MAX_TAGS);
    assert!(out.tags.contains("new"));
}

#[test]
fn permissions_on_itself() {
    run(&[
        // Nothing by default, not even on its own tags.
        ("a\n", Own(""), "-a\n", "a\n", Some((1, Eperm))),
        ("", Own(""), "+a\n", "", Some((1, Eperm))),
        ("ptags:add\n", Own(""), "+a\n", "a\nptags:add\n", None),
        (
            "ptags:add\n",
            Own(""),
            "-ptags:add\n",
            "ptags:add\n",
            Some((1, Eperm)),
        ),
        (
            "ptags:add\n",
            Own(""),
            "+ptags:sub\n",
            "ptags:add\n",
            Some((1, Eperm)),
        ),
        // ptags:ptags:add hands out permissions.
        (
            "ptags:ptags:add\n",
            Own(""),
            "+ptags:sub\n",
            "ptags:ptags:add\nptags:sub\n",
            None,
        ),
        // Permissions are those held when the write began.
        (
            "ptags:ptags:add\n",
            Own(""),
            "+ptags:add\n+a\n",
            "ptags:add\nptags:ptags:add\n",
            Some((2, Eperm)),
        ),
        // Globs skip what the writer may not touch; names fail.
        (
            "a:1\na:2\nb:1\n",
            Own("ptags:a:sub\n"),
            "-\n",
            "b:1\n",
            None,
        ),
        (
            "a:1\nb:1\n",
            Own("ptags:a:sub\n"),
            "-b:1\n",
            "a:1\nb:1\n",
            Some((1, Eperm)),
        ),
        (
            "a:1\nb:1\n",
            Own("ptags:a:sub\n"),
            "-b:2\n",
            "a:1\nb:1\n",
            Some((1, Eperm)),
        ),
        (
            "@a:1\n@b:1\n",
            Own("ptags:a:sub\n"),
            "-@\n",
            "a:1\n@b:1\n",
            None,
        ),
        (
            "a:1\nb:1\n",
            Own("ptags:b:add\n"),
            "+@\n",
            "a:1\n@b:1\n",
            None,
        ),
        ("a\n", Own("ptags:a:set\n"), "!a=1\n", "a=1\n", None),
        (
            "a\n",
            Own("ptags:a:add\n"),
            "!a=1\n",
            "a\n",
            Some((1, Eperm)),
        ),
        // A missing tag: the permission is checked first.
        ("", Own("ptags:a:set\n"), "!a=1\n", "", Some((1, Enoent))),
        ("", Own("ptags:b:set\n"), "!a=1\n", "", Some((1, Eperm))),
        // +@ on an existing tag is an add.
        ("a\n", Own("ptags:sub\n"), "+@a\n", "a\n", Some((1, Eperm))),
    ]);
}

#[test]
fn container_manager_example() {
    const UMCM: &str = "ptags:UMCM:add\nptags:UMCM:sub\nptags:UMCM:others\n";
    const UMCM_SET: &str = "ptags:UMCM:add\nptags:UMCM:set\nptags:UMCM:sub\nptags:UMCM:others\n";
    run(&[
        // The spec's example: two lines, add then set, with `set`.
        (
            "",
            Other(UMCM_SET),
            "+UMCM:CONTAINER_ID\n!UMCM:CONTAINER_ID=foo\n",
            "UMCM:CONTAINER_ID=foo\n",
            None,
        ),
        // An add-only delegate cannot give a tag a value at all.
        (
            "",
            Other(UMCM),
            "+UMCM:CONTAINER_ID=foo\n",
            "",
            Some((1, Einval)),
        ),
        (
            "",
            Other(UMCM),
            "+UMCM:CONTAINER_ID\n!UMCM:CONTAINER_ID=foo\n",
            "UMCM:CONTAINER_ID\n",
            Some((2, Eperm)),
        ),
        (
            "UMCM:CONTAINER_ID=foo\n",
            Other(UMCM),
            "-UMCM:*\n",
            "",
            None,
        ),
        (
            "UMCM:CONTAINER_ID=foo\n",
            Other(UMCM),
            "!UMCM:CONTAINER_ID=bar\n",
            "UMCM:CONTAINER_ID=foo\n",
            Some((1, Eperm)),
        ),
        ("", Other(UMCM), "+OTHER:x\n", "", Some((1, Eperm))),
        ("x\nUMCM:a\n", Other(UMCM), "-\n", "x\n", None),
        // The same permissions without others: only on itself.
        (
            "",
            Other("ptags:UMCM:add\n"),
            "+UMCM:a\n",
            "",
            Some((1, Eperm)),
        ),
        (
            "",
            Other("ptags:UMCM:add\nptags:X:others\n"),
            "+UMCM:a\n",
            "",
            Some((1, Eperm)),
        ),
        // No access to the target at all: nothing, whatever the tags.
        ("", Stranger(UMCM), "+UMCM:a\n", "", Some((1, Eperm))),
        ("UMCM:a\n", Stranger(UMCM), "-\n", "UMCM:a\n", None),
    ]);
}

#[test]
fn administrators() {
    // The writer's CAP_MAC_ADMIN counts, and the target's does not: a
    // privileged target gets no protection from its own capability, and
    // an unprivileged writer gets nothing from the target's.
    let admin_other = Writer::new(&TagSet::empty(), true, Target::Other { may_access: true });
    let out = apply_write(&set("ptags:add\n"), b"-\n+ptags:ptags:add\n", &admin_other);
    assert!(out.failure.is_none());
    assert_eq!(out.tags.to_read_format(), "ptags:ptags:add\n");
    let plain = Writer::new(&TagSet::empty(), false, Target::Other { may_access: true });
    let out = apply_write(&set("a\n"), b"-a\n", &plain);
    assert_eq!(out.failure.unwrap().errno(), Eperm);
}
