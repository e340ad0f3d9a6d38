//! Device allow-lists per container, with the devices cgroup's (v1)
//! grammar and semantics: `TYPE MAJOR:MINOR ACCESS` rules written to an
//! allow or a deny list, a default of allow-all or deny-all set by an `a`
//! rule, and exceptions to it. Pure: the daemon stores a list per
//! container and the kernel program enforces its compiled form.
//!
//! A nested container's list can only narrow its parent's: checked when
//! it is set ([`DeviceList::narrows`]), and access is granted only where
//! every list along the chain agrees.

use std::fmt;

/// `a` (all devices), `b` (block) or `c` (char).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceType {
    All,
    Block,
    Char,
}

/// A subset of `rwm`: read, write, mknod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access(u8);

impl Access {
    pub const READ: Access = Access(1);
    pub const WRITE: Access = Access(2);
    pub const MKNOD: Access = Access(4);
    pub const ALL: Access = Access(7);

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> Option<Access> {
        (bits != 0 && bits & !7 == 0).then_some(Access(bits))
    }

    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: Access) -> bool {
        self.0 & other.0 != 0
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(1, 'r'), (2, 'w'), (4, 'm')] {
            if self.0 & bit != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One rule: `c 1:3 rwm`, `b 8:* r`, `a` (all devices, all access).
/// `None` for a number is `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceRule {
    pub kind: DeviceType,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: Access,
}

/// A rule that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device rule {rule:?}: {why}")]
pub struct RuleError {
    pub rule: String,
    pub why: &'static str,
}

/// The largest major and minor numbers Linux has (12 and 20 bits).
const MAX_MAJOR: u32 = (1 << 12) - 1;
const MAX_MINOR: u32 = (1 << 20) - 1;

fn number(text: &str, max: u32) -> Result<Option<u32>, &'static str> {
    if text == "*" {
        return Ok(None);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 7 {
        return Err("a device number is a decimal number or *");
    }
    let n: u32 = text.parse().map_err(|_| "a device number is too large")?;
    if n > max {
        return Err("a device number is over Linux's largest");
    }
    Ok(Some(n))
}

impl DeviceRule {
    /// Reads a rule strictly: `TYPE MAJOR:MINOR ACCESS`, or `a` alone
    /// (`a *:* rwm`). Single spaces, as the devices cgroup writes them.
    pub fn parse(text: &str) -> Result<DeviceRule, RuleError> {
        let refuse = |why| RuleError {
            rule: text.to_owned(),
            why,
        };
        let parts: Vec<&str> = text.split(' ').collect();
        let kind = match parts[0] {
            "a" => DeviceType::All,
            "b" => DeviceType::Block,
            "c" => DeviceType::Char,
            _ => return Err(refuse("the type is a, b or c")),
        };
        if parts.len() == 1 && kind == DeviceType::All {
            return Ok(DeviceRule {
                kind,
                major: None,
                minor: None,
                access: Access::ALL,
            });
        }
        let [_, numbers, access] = parts[..] else {
            return Err(refuse("a rule is TYPE MAJOR:MINOR ACCESS"));
        };
        let (major, minor) = numbers
            .split_once(':')
            .ok_or_else(|| refuse("the device is MAJOR:MINOR"))?;
        let major = number(major, MAX_MAJOR).map_err(refuse)?;
        let minor = number(minor, MAX_MINOR).map_err(refuse)?;
        let mut bits = 0u8;
        for c in access.chars() {
            let bit = match c {
                'r' => 1,
                'w' => 2,
                'm' => 4,
                _ => return Err(refuse("the access is letters of rwm")),
            };
            if bits & bit != 0 {
                return Err(refuse("the access names a letter twice"));
            }
            bits |= bit;
        }
        let access = Access::from_bits(bits).ok_or_else(|| refuse("the access is empty"))?;
        // As the devices cgroup, an `a` rule sets the default and is
        // nothing else: written otherwise, it would not mean what it says.
        if kind == DeviceType::All && (major.is_some() || minor.is_some() || bits != 7) {
            return Err(refuse(
                "an `a` rule names every device and access (a *:* rwm)",
            ));
        }
        Ok(DeviceRule {
            kind,
            major,
            minor,
            access,
        })
    }

    /// Whether this rule names every device this other one names.
    fn covers_devices(&self, other: &DeviceRule) -> bool {
        let numbers = |mine: Option<u32>, theirs: Option<u32>| match (mine, theirs) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        (self.kind == DeviceType::All || self.kind == other.kind)
            && numbers(self.major, other.major)
            && numbers(self.minor, other.minor)
    }

    /// Whether the two rules name a device in common.
    fn overlaps_devices(&self, other: &DeviceRule) -> bool {
        let numbers = |a: Option<u32>, b: Option<u32>| a.is_none() || b.is_none() || a == b;
        (self.kind == DeviceType::All || other.kind == DeviceType::All || self.kind == other.kind)
            && numbers(self.major, other.major)
            && numbers(self.minor, other.minor)
    }

    /// Whether it names the device (one of type b or c).
    fn names(&self, kind: DeviceType, major: u32, minor: u32) -> bool {
        (self.kind == DeviceType::All || self.kind == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceType::All => 'a',
            DeviceType::Block => 'b',
            DeviceType::Char => 'c',
        };
        let n = |v: Option<u32>| v.map_or("*".to_owned(), |v| v.to_string());
        write!(
            f,
            "{kind} {}:{} {}",
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// One write to a list: `allow RULE` or `deny RULE`, as a line written
/// to the devices cgroup's `devices.allow` or `devices.deny`.
pub fn parse_write(line: &str) -> Result<(bool, DeviceRule), RuleError> {
    let (allow, rule) = match line.split_once(' ') {
        Some(("allow", rule)) => (true, rule),
        Some(("deny", rule)) => (false, rule),
        _ => {
            return Err(RuleError {
                rule: line.to_owned(),
                why: "a write is `allow RULE` or `deny RULE`",
            })
        }
    };
    Ok((allow, DeviceRule::parse(rule)?))
}

/// A container's list: a default and its exceptions, as the devices
/// cgroup keeps them. With `default_allow`, the exceptions deny; without,
/// they allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    pub default_allow: bool,
    pub exceptions: Vec<DeviceRule>,
}

/// Exceptions a list may hold (the kernel's map is sized for them).
pub const MAX_EXCEPTIONS: usize = 256;

impl Default for DeviceList {
    /// Nothing fenced: every device allowed.
    fn default() -> DeviceList {
        DeviceList {
            default_allow: true,
            exceptions: Vec::new(),
        }
    }
}

impl DeviceList {
    /// Writes a rule to the allow list (`allow`) or the deny list, as the
    /// devices cgroup does (`dev_exception_add`, `dev_exception_rm`): an
    /// `a` rule sets the default and clears the exceptions; another rule
    /// adds an exception to a default of the other kind, or takes its
    /// access back from the exception naming exactly the same devices.
    pub fn write(&mut self, allow: bool, rule: DeviceRule) -> Result<(), &'static str> {
        if rule.kind == DeviceType::All {
            self.default_allow = allow;
            self.exceptions.clear();
            return Ok(());
        }
        if self.default_allow != allow {
            // As the kernel: an exception naming the same devices gains
            // the access, so that one exception names each.
            let same = |e: &&mut DeviceRule| {
                (e.kind, e.major, e.minor) == (rule.kind, rule.major, rule.minor)
            };
            if let Some(e) = self.exceptions.iter_mut().find(same) {
                e.access = Access(e.access.bits() | rule.access.bits());
            } else {
                if self.exceptions.len() >= MAX_EXCEPTIONS {
                    return Err("a list holds at most 256 exceptions");
                }
                self.exceptions.push(rule);
            }
        } else {
            // As the kernel: only an exception of the same type and
            // numbers loses access.
            self.exceptions.retain_mut(|e| {
                if (e.kind, e.major, e.minor) == (rule.kind, rule.major, rule.minor) {
                    e.access = Access(e.access.bits() & !rule.access.bits());
                }
                e.access.bits() != 0
            });
        }
        Ok(())
    }

    /// Whether `access` to the device is allowed by this list alone.
    pub fn allows(&self, kind: DeviceType, major: u32, minor: u32, access: Access) -> bool {
        if self.default_allow {
            // Denied when an exception names the device and any of the
            // access asked.
            !self
                .exceptions
                .iter()
                .any(|e| e.names(kind, major, minor) && e.access.intersects(access))
        } else {
            // Allowed when one exception grants all of it.
            self.exceptions
                .iter()
                .any(|e| e.names(kind, major, minor) && e.access.contains(access))
        }
    }

    /// Whether this list (a nested container's) grants nothing its
    /// parent's does not: `Err` names an exception that would.
    pub fn narrows(&self, parent: &DeviceList) -> Result<(), String> {
        match (parent.default_allow, self.default_allow) {
            // The parent denies by default: the child must too, and each
            // of its grants must be within one of the parent's.
            (false, true) => Err("the parent denies by default; a nested list must too".into()),
            (false, false) => match self.exceptions.iter().find(|e| {
                !parent
                    .exceptions
                    .iter()
                    .any(|p| p.covers_devices(e) && p.access.contains(e.access))
            }) {
                Some(e) => Err(format!("{e} is not within the parent's list")),
                None => Ok(()),
            },
            // The parent allows but for its exceptions: the child must
            // deny each of them too.
            (true, true) => match parent.exceptions.iter().find(|p| {
                !self
                    .exceptions
                    .iter()
                    .any(|e| e.covers_devices(p) && e.access.contains(p.access))
            }) {
                Some(p) => Err(format!("the parent denies {p}; a nested list must too")),
                None => Ok(()),
            },
            (true, false) => match self.exceptions.iter().find(|e| {
                parent
                    .exceptions
                    .iter()
                    .any(|p| p.overlaps_devices(e) && p.access.intersects(e.access))
            }) {
                Some(e) => Err(format!("{e} grants what the parent denies")),
                None => Ok(()),
            },
        }
    }

    /// The list as lines that write it again: `default allow|deny`, then
    /// each exception as `allow RULE` or `deny RULE` (the list opposite
    /// the default). [`DeviceList::parse_listing`] reads them back.
    pub fn rules(&self) -> Vec<String> {
        let mut out = vec![format!(
            "default {}",
            if self.default_allow { "allow" } else { "deny" }
        )];
        let verb = if self.default_allow { "deny" } else { "allow" };
        out.extend(self.exceptions.iter().map(|e| format!("{verb} {e}")));
        out
    }

    /// Reads what [`DeviceList::rules`] printed (a stored list).
    pub fn parse_listing(text: &str) -> Result<DeviceList, String> {
        let mut lines = text.lines();
        let default_allow = match lines.next() {
            Some("default allow") => true,
            Some("default deny") => false,
            other => return Err(format!("a listing starts with its default, not {other:?}")),
        };
        let mut list = DeviceList {
            default_allow,
            exceptions: Vec::new(),
        };
        let verb = if default_allow { "deny " } else { "allow " };
        for line in lines {
            let rule = line
                .strip_prefix(verb)
                .ok_or_else(|| format!("{line:?} is not an exception of the default"))?;
            let rule = DeviceRule::parse(rule).map_err(|e| e.to_string())?;
            if rule.kind == DeviceType::All {
                return Err(format!("{line:?} is a default, not an exception"));
            }
            list.write(!default_allow, rule).map_err(str::to_owned)?;
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceType::{Block, Char};

    fn rule(text: &str) -> DeviceRule {
        DeviceRule::parse(text).unwrap()
    }

    fn list(writes: &[(bool, &str)]) -> DeviceList {
        let mut l = DeviceList::default();
        for (allow, r) in writes {
            l.write(*allow, rule(r)).unwrap();
        }
        l
    }

    const R: Access = Access::READ;
    const RW: Access = Access(3);

    #[test]
    fn rules_are_read_strictly_and_printed_back() {
        for text in [
            "c 1:3 rwm",
            "b 8:* r",
            "c *:* m",
            "a *:* rwm",
            "c 136:1048575 rw",
        ] {
            assert_eq!(rule(text).to_string(), text);
        }
        assert_eq!(rule("a").to_string(), "a *:* rwm");
        for (bad, why) in [
            ("x 1:3 r", "the type"),
            ("c 1:3", "TYPE MAJOR:MINOR ACCESS"),
            ("c 1-3 r", "MAJOR:MINOR"),
            ("c 1:3 rx", "letters of rwm"),
            ("c 1:3 rr", "twice"),
            ("c 1:3 ", "empty"),
            ("c -1:3 r", "decimal"),
            ("c 4096:0 r", "largest"),
            ("c 1:1048576 r", "largest"),
            ("c  1:3 r", "TYPE MAJOR:MINOR ACCESS"),
            ("a 1:3 r", "every device"),
            ("a *:* r", "every device"),
            ("", "the type"),
        ] {
            let e = DeviceRule::parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn writes_name_their_list() {
        assert_eq!(
            parse_write("allow c 1:3 rwm").unwrap(),
            (true, rule("c 1:3 rwm"))
        );
        assert_eq!(parse_write("deny a").unwrap(), (false, rule("a")));
        for bad in [
            "permit c 1:3 r",
            "allow",
            "allow ",
            "deny  a",
            "c 1:3 r",
            "",
        ] {
            assert!(parse_write(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_devices_cgroup_semantics() {
        // Deny all, then the default devices of a runtime.
        let l = list(&[(false, "a"), (true, "c 1:3 rwm"), (true, "c 1:5 rw")]);
        assert!(l.allows(Char, 1, 3, Access::ALL));
        assert!(l.allows(Char, 1, 5, RW));
        assert!(!l.allows(Char, 1, 5, Access::MKNOD));
        assert!(!l.allows(Block, 8, 0, R));
        assert!(!l.allows(Char, 1, 1, R), "/dev/mem");
        // Allow all but one disk; then take part of the denial back.
        let mut l = list(&[(true, "a"), (false, "b 8:* rwm")]);
        assert!(!l.allows(Block, 8, 1, R) && l.allows(Block, 9, 0, R));
        l.write(true, rule("b 8:* r")).unwrap();
        assert!(l.allows(Block, 8, 1, R) && !l.allows(Block, 8, 1, RW));
        // Writing to the list of the default's kind takes access back
        // from the exception naming the same devices, and only from it.
        let mut l = list(&[(false, "a"), (true, "c 1:3 rwm")]);
        l.write(false, rule("c *:* w")).unwrap();
        assert!(l.allows(Char, 1, 3, RW), "not the same devices");
        l.write(false, rule("c 1:3 w")).unwrap();
        assert!(l.allows(Char, 1, 3, R) && !l.allows(Char, 1, 3, RW));
        l.write(false, rule("c 1:3 rm")).unwrap();
        assert!(l.exceptions.is_empty());
        // `a` resets.
        l.write(true, rule("a")).unwrap();
        assert_eq!(l, DeviceList::default());
    }

    #[test]
    fn a_nested_list_can_only_narrow() {
        let parent = list(&[(false, "a"), (true, "c 1:* rw"), (true, "c 5:0 rwm")]);
        assert!(list(&[(false, "a"), (true, "c 1:3 r")])
            .narrows(&parent)
            .is_ok());
        assert!(list(&[(false, "a")]).narrows(&parent).is_ok());
        let e = list(&[(false, "a"), (true, "c 1:3 rwm")])
            .narrows(&parent)
            .unwrap_err();
        assert!(e.contains("c 1:3 rwm"), "{e}");
        assert!(list(&[(true, "a")]).narrows(&parent).is_err());
        let parent = list(&[(true, "a"), (false, "b *:* rwm")]);
        assert!(
            list(&[(true, "a"), (false, "b *:* rwm"), (false, "c 1:1 r")])
                .narrows(&parent)
                .is_ok()
        );
        assert!(list(&[(true, "a")]).narrows(&parent).is_err());
        assert!(list(&[(false, "a"), (true, "c 1:3 r")])
            .narrows(&parent)
            .is_ok());
        assert!(list(&[(false, "a"), (true, "b 8:0 r")])
            .narrows(&parent)
            .is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Rules over a small universe of devices, so that every device a
    /// rule can name is checked: types b and c, numbers 1 and 2 or `*`.
    fn a_rule() -> impl Strategy<Value = DeviceRule> {
        let kind = prop_oneof![
            1 => Just(DeviceType::All),
            3 => Just(DeviceType::Block),
            3 => Just(DeviceType::Char)
        ];
        let n = prop_oneof![Just(None), Just(Some(1u32)), Just(Some(2u32))];
        (kind, n.clone(), n, 1u8..8).prop_map(|(kind, major, minor, bits)| {
            let (major, minor, bits) = match kind {
                DeviceType::All => (None, None, 7),
                _ => (major, minor, bits),
            };
            DeviceRule {
                kind,
                major,
                minor,
                access: Access(bits),
            }
        })
    }

    fn a_list() -> impl Strategy<Value = DeviceList> {
        (
            any::<bool>(),
            proptest::collection::vec((any::<bool>(), a_rule()), 0..6),
        )
            .prop_map(|(default_allow, writes)| {
                let mut l = DeviceList {
                    default_allow,
                    exceptions: Vec::new(),
                };
                for (allow, r) in writes {
                    l.write(allow, r).unwrap();
                }
                l
            })
    }

    fn universe() -> impl Iterator<Item = (DeviceType, u32, u32, Access)> {
        [DeviceType::Block, DeviceType::Char]
            .into_iter()
            .flat_map(|k| {
                (1..=3).flat_map(move |major| {
                    (1..=3).flat_map(move |minor| (1..8).map(move |a| (k, major, minor, Access(a))))
                })
            })
    }

    proptest! {
        /// A list accepted as narrowing its parent grants nothing the
        /// parent refuses, on every device and access of the universe.
        #[test]
        fn a_narrowing_list_grants_nothing_its_parent_refuses(parent in a_list(), child in a_list()) {
            if child.narrows(&parent).is_ok() {
                for (k, major, minor, a) in universe() {
                    prop_assert!(
                        !child.allows(k, major, minor, a) || parent.allows(k, major, minor, a),
                        "{k:?} {major}:{minor} {a}: child {child:?} parent {parent:?}"
                    );
                }
            }
        }

        /// A list is itself, read back from its listing.
        #[test]
        fn a_listing_reads_back(list in a_list()) {
            let text = list.rules().join("\n");
            prop_assert_eq!(DeviceList::parse_listing(&text).unwrap(), list);
        }
    }
}
