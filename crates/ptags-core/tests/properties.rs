//! Properties of the semantics over generated tag sets and write texts.

use proptest::prelude::*;
use ptags_core::contid::{format_chains, parse_chains, Chain, ContainerId, Style};
use ptags_core::{apply_write, Tag, TagSet, Target, Writer, MAX_NAME_LEN, MAX_TAGS, MAX_VALUE_LEN};

/// Names from a small alphabet, so that writes hit existing tags, share
/// prefixes and use several scripts and empty fields.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "S", ":", "é", "क", "ptags"]),
        1..6,
    )
    .prop_map(|parts| parts.concat())
    .prop_filter("valid name", |n| ptags_core::tag::validate_name(n).is_ok())
}

fn value() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[a-z =:*@é]{0,8}")
}

fn tag() -> impl Strategy<Value = Tag> {
    (name(), value(), any::<bool>()).prop_map(|(n, v, k)| Tag::new(&n, v.as_deref(), k).unwrap())
}

fn tag_set() -> impl Strategy<Value = TagSet> {
    prop::collection::vec(tag(), 0..24).prop_map(|mut tags| {
        tags.sort_by(|a, b| a.name().cmp(b.name()));
        tags.dedup_by(|a, b| a.name() == b.name());
        TagSet::from_tags(tags).unwrap()
    })
}

/// A glob prefix: a name followed by a colon.
fn prefix() -> impl Strategy<Value = String> {
    name().prop_map(|n| format!("{n}:"))
}

/// One line of the write language, mostly valid, sometimes not.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        (name(), value()).prop_map(|(n, v)| match v {
            // Invalid since `+` takes no value: an EINVAL line.
            Some(v) => format!("+{n}={v}"),
            None => format!("+{n}"),
        }),
        name().prop_map(|n| format!("+@{n}")),
        prefix().prop_map(|p| format!("+@{p}*")),
        name().prop_map(|n| format!("-{n}")),
        prefix().prop_map(|p| format!("-{p}*")),
        prefix().prop_map(|p| format!("-@{p}*")),
        name().prop_map(|n| format!("-@{n}")),
        (name(), value()).prop_map(|(n, v)| format!("!{n}={}", v.unwrap_or_default())),
        name().prop_map(|n| format!("?{n}")),
        prefix().prop_map(|p| format!("?@{p}*")),
        Just("-".to_owned()),
        Just("+@".to_owned()),
        Just("-@".to_owned()),
        Just("# comment".to_owned()),
        "[-+!?@#a:*=\\t]{0,4}",
    ]
}

fn text() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(line(), 0..12)
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A writer with some permissions, on itself or on another task.
fn writer() -> impl Strategy<Value = Writer> {
    (
        prop::collection::vec(prefix(), 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(scopes, admin, itself)| {
            let mut perms = String::new();
            for s in &scopes {
                let scope = s.trim_end_matches(':');
                for action in ["add", "sub", "set", "others"] {
                    perms.push_str(&format!("ptags:{scope}:{action}\n"));
                }
            }
            let set = TagSet::parse_read_format(perms.as_bytes()).unwrap_or_default();
            let target = if itself {
                Target::Itself
            } else {
                Target::Other { may_access: true }
            };
            Writer::new(&set, admin, target)
        })
}

fn all_valid(set: &TagSet) -> bool {
    set.len() <= MAX_TAGS
        && set.iter().all(|t| {
            t.name().len() <= MAX_NAME_LEN
                && t.value().is_none_or(|v| v.len() <= MAX_VALUE_LEN)
                && Tag::new(t.name(), t.value(), t.keep()).is_ok()
        })
}

proptest! {
    #[test]
    fn read_format_round_trips(set in tag_set()) {
        let text = set.to_read_format();
        let back = TagSet::parse_read_format(text.as_bytes()).unwrap();
        prop_assert_eq!(back.to_read_format(), text);
        prop_assert_eq!(back, set);
    }

    #[test]
    fn apply_keeps_every_limit(set in tag_set(), lines in text(), w in writer()) {
        let out = apply_write(&set, join(&lines).as_bytes(), &w);
        prop_assert!(all_valid(&out.tags));
    }

    #[test]
    fn a_failed_line_leaves_earlier_lines_applied_and_later_ones_not(
        set in tag_set(), lines in text(), w in writer()
    ) {
        let out = apply_write(&set, join(&lines).as_bytes(), &w);
        if let Some(failure) = out.failure {
            let before = apply_write(&set, join(&lines[..failure.line - 1]).as_bytes(), &w);
            prop_assert!(before.failure.is_none());
            prop_assert_eq!(out.tags, before.tags);
        } else {
            // Applying line by line gives the same as applying at once.
            let mut step = set.clone();
            for l in &lines {
                step = apply_write(&step, join(std::slice::from_ref(l)).as_bytes(), &w).tags;
            }
            prop_assert_eq!(out.tags, step);
        }
    }

    #[test]
    fn pruning_is_idempotent_and_keeps_only_kept_tags(set in tag_set()) {
        let kept = set.kept();
        prop_assert_eq!(kept.kept(), kept.clone());
        prop_assert!(kept.iter().all(Tag::keep));
        prop_assert_eq!(kept.len(), set.iter().filter(|t| t.keep()).count());
        for t in kept.iter() {
            prop_assert_eq!(set.get(t.name()), Some(t));
        }
    }

    #[test]
    fn a_glob_never_touches_a_tag_outside_its_prefix(
        set in tag_set(), p in prefix(), op in prop::sample::select(vec!["-", "+@", "-@", "?", "?@"]), w in writer()
    ) {
        let out = apply_write(&set, format!("{op}{p}*\n").as_bytes(), &w);
        let outside = |s: &TagSet| s.iter().filter(|t| !t.name().starts_with(&p)).cloned().collect::<Vec<_>>();
        prop_assert_eq!(outside(&out.tags), outside(&set));
    }

    #[test]
    fn keep_flag_survives_exec_exactly_when_set(set in tag_set(), n in name()) {
        let admin = Writer::admin(Target::Itself);
        let kept = apply_write(&set, format!("+@{n}\n").as_bytes(), &admin).tags;
        prop_assert!(kept.kept().contains(&n));
        let unkept = apply_write(&kept, format!("-@{n}\n").as_bytes(), &admin).tags;
        prop_assert!(!unkept.kept().contains(&n));
        prop_assert!(unkept.contains(&n));
    }

    #[test]
    fn chains_round_trip(chains in prop::collection::vec(prop::collection::vec(0u64..u64::MAX, 1..5), 0..4)) {
        let chains: Vec<Chain> = chains
            .into_iter()
            .map(|c| Chain(c.into_iter().map(|n| ContainerId::new(n).unwrap()).collect()))
            .collect();
        let text = format_chains(&chains, Style::Raw);
        prop_assert_eq!(parse_chains(&text).unwrap(), chains);
    }
}

#[test]
fn apply_near_the_tag_limit_never_exceeds_it() {
    let almost: String = (0..MAX_TAGS - 2).map(|i| format!("t{i}\n")).collect();
    let set = TagSet::parse_read_format(almost.as_bytes()).unwrap();
    let admin = Writer::admin(Target::Itself);
    let out = apply_write(&set, b"+x\n+y\n+z\n", &admin);
    assert_eq!(out.tags.len(), MAX_TAGS);
    assert_eq!(out.failure.unwrap().line, 3);
}

proptest! {
    /// The byte scan of value validation agrees with Unicode's notion of a
    /// control character.
    #[test]
    fn value_validation_matches_char_is_control(v in "\\PC{0,6}|[\\x00-\\x20\\u{7f}-\\u{a1}a]{0,6}") {
        let expected = v.chars().any(char::is_control);
        prop_assert_eq!(ptags_core::tag::validate_value(&v).is_err(), expected);
    }
}
