//! Who may change which tag.
//!
//! No task may change any tag by default. A writer's permissions are its
//! own `ptags:[SCOPE:]ACTION` tags, as they were when the write began;
//! acting on another task also needs `others` for the same tag and the
//! right to act on that task at all (ptrace-like access, decided by the
//! caller of this module, which has the processes at hand).

use std::collections::HashMap;

use crate::tag::{parse_permission, Action, PERMISSION_PREFIX};
use crate::tagset::TagSet;

/// How the writer relates to the task whose tags it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The writer changes its own tags.
    Itself,
    /// Another task; `may_access` is the ptrace-like check (same user, or
    /// CAP_SYS_PTRACE).
    Other { may_access: bool },
}

/// The scopes granted for one action, as a trie over colon-separated
/// fields, so that checking a name costs one walk over its fields however
/// many permissions the writer holds.
#[derive(Debug, Default)]
struct ScopeTrie {
    /// `ptags:ACTION`: every tag not under `ptags:`.
    global: bool,
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// A scope ends here: this name and everything under `name:`.
    granted: bool,
    children: HashMap<Box<str>, Node>,
}

impl ScopeTrie {
    fn grant(&mut self, scope: Option<&str>) {
        let Some(scope) = scope else {
            self.global = true;
            return;
        };
        let mut node = &mut self.root;
        for field in scope.split(':') {
            node = node.children.entry(field.into()).or_default();
        }
        node.granted = true;
    }

    fn allows(&self, name: &str) -> bool {
        if self.global && !name.starts_with(PERMISSION_PREFIX) {
            return true;
        }
        let mut node = &self.root;
        for field in name.split(':') {
            match node.children.get(field) {
                Some(child) if child.granted => return true,
                Some(child) => node = child,
                None => return false,
            }
        }
        false
    }
}

/// A writer, ready to answer "may it do ACTION on tag NAME of the target?".
#[derive(Debug)]
pub struct Writer {
    admin: bool,
    target: Target,
    /// Indexed by `Action as usize`.
    scopes: [ScopeTrie; 4],
}

impl Writer {
    /// `tags` are the writer's own tags; `admin` is CAP_MAC_ADMIN in the
    /// initial user namespace, held by the writer (never the target).
    pub fn new(tags: &TagSet, admin: bool, target: Target) -> Writer {
        let mut scopes: [ScopeTrie; 4] = Default::default();
        let perms = crate::tagset::prefix_range(tags.as_slice(), PERMISSION_PREFIX);
        for tag in &tags.as_slice()[perms] {
            if let Some(p) = parse_permission(tag.name()) {
                scopes[p.action as usize].grant(p.scope);
            }
        }
        Writer {
            admin,
            target,
            scopes,
        }
    }

    /// A writer with every tag permission (CAP_MAC_ADMIN).
    pub fn admin(target: Target) -> Writer {
        Writer::new(&TagSet::empty(), true, target)
    }

    /// Whether this writer may do `action` on the tag `name` of its target.
    pub fn may(&self, action: Action, name: &str) -> bool {
        let others_needed = match self.target {
            Target::Itself => false,
            Target::Other { may_access: false } => return false,
            Target::Other { may_access: true } => true,
        };
        if self.admin {
            return true;
        }
        self.scopes[action as usize].allows(name)
            && (!others_needed || self.scopes[Action::Others as usize].allows(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::Action::*;

    fn writer(tags: &str, target: Target) -> Writer {
        let set = TagSet::parse_read_format(tags.as_bytes()).unwrap();
        Writer::new(&set, false, target)
    }

    const ME: Target = Target::Itself;
    const OTHER: Target = Target::Other { may_access: true };
    const FORBIDDEN: Target = Target::Other { may_access: false };

    #[test]
    fn nothing_by_default() {
        let w = writer("a\nUMCM:x\n", ME);
        for action in Action::ALL {
            assert!(!w.may(action, "a"));
            assert!(!w.may(action, "UMCM:x"));
        }
    }

    #[test]
    fn global_permission_excludes_ptags_names() {
        let w = writer("ptags:add\n", ME);
        assert!(w.may(Add, "a"));
        assert!(w.may(Add, "x:y:z"));
        assert!(w.may(Add, "ptags"));
        assert!(!w.may(Add, "ptags:add"));
        assert!(!w.may(Add, "ptags:x:add"));
        assert!(!w.may(Sub, "a"));
        assert!(!w.may(Set, "a"));
    }

    #[test]
    fn scoped_permission_covers_the_name_and_below() {
        let w = writer("ptags:UMCM:sub\n", ME);
        assert!(w.may(Sub, "UMCM"));
        assert!(w.may(Sub, "UMCM:CONTAINER_ID"));
        assert!(w.may(Sub, "UMCM:a:b"));
        assert!(!w.may(Sub, "UMCMX"));
        assert!(!w.may(Sub, "UMC"));
        assert!(!w.may(Sub, "X:UMCM"));
        assert!(!w.may(Add, "UMCM"));
    }

    #[test]
    fn handing_out_permissions() {
        let w = writer("ptags:ptags:add\n", ME);
        assert!(w.may(Add, "ptags:add"));
        assert!(w.may(Add, "ptags:UMCM:others"));
        assert!(!w.may(Add, "UMCM"));
        let w = writer("ptags:ptags:UMCM:add\n", ME);
        assert!(w.may(Add, "ptags:UMCM:add"));
        assert!(!w.may(Add, "ptags:add"));
    }

    #[test]
    fn scopes_with_empty_fields() {
        let w = writer("ptags:a::b:set\n", ME);
        assert!(w.may(Set, "a::b"));
        assert!(w.may(Set, "a::b:c"));
        assert!(!w.may(Set, "a:b"));
        assert!(!w.may(Set, "a::"));
        let w = writer("ptags::set\n", ME);
        assert!(w.may(Set, ":x::a"));
        assert!(!w.may(Set, "x"));
    }

    #[test]
    fn others_need_the_others_permission_for_the_same_tag() {
        let w = writer(
            "ptags:UMCM:add\nptags:UMCM:sub\nptags:UMCM:others\nptags:X:add\n",
            OTHER,
        );
        assert!(w.may(Add, "UMCM:CONTAINER_ID"));
        assert!(w.may(Sub, "UMCM:CONTAINER_ID"));
        assert!(!w.may(Set, "UMCM:CONTAINER_ID"));
        assert!(!w.may(Add, "X:1"), "no others permission for X");
        let w = writer("ptags:add\nptags:others\n", OTHER);
        assert!(w.may(Add, "a"));
        assert!(!w.may(Add, "ptags:add"));
    }

    #[test]
    fn access_to_the_target_is_required_even_for_admins() {
        let w = writer("ptags:add\nptags:others\n", FORBIDDEN);
        assert!(!w.may(Add, "a"));
        assert!(!Writer::admin(FORBIDDEN).may(Add, "a"));
    }

    #[test]
    fn admins_bypass_tag_permissions() {
        for target in [ME, OTHER] {
            let w = Writer::admin(target);
            for action in Action::ALL {
                assert!(w.may(action, "ptags:ptags:add"));
                assert!(w.may(action, "any"));
            }
        }
    }
}
