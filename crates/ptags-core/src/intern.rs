//! Interning: equal tag sets share one small ID, which is what the kernel
//! stores per task.

use std::collections::HashMap;

use crate::digest::Digest;
use crate::tagset::TagSet;

/// The ID of an interned tag set. IDs are never reused, so a stale ID in
/// the kernel can never name a different set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetId(pub u64);

impl SetId {
    /// The empty set always has this ID, so a task the daemon never saw
    /// (zeroed kernel storage) has no tags.
    pub const EMPTY: SetId = SetId(0);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("set ID {0} is used twice")]
    DuplicateId(u64),
    #[error("set ID {0} and set ID {1} hold the same tags")]
    DuplicateSet(u64, u64),
    #[error("set ID 0 is reserved for the empty set")]
    ReservedId,
}

/// Equal sets to one ID and back.
#[derive(Debug, Clone)]
pub struct Interner {
    by_digest: HashMap<Digest, SetId>,
    by_id: HashMap<SetId, TagSet>,
    next: u64,
}

impl Default for Interner {
    fn default() -> Interner {
        Interner::new()
    }
}

impl Interner {
    pub fn new() -> Interner {
        let empty = TagSet::empty();
        Interner {
            by_digest: HashMap::from([(*empty.digest(), SetId::EMPTY)]),
            by_id: HashMap::from([(SetId::EMPTY, empty)]),
            next: 1,
        }
    }

    /// The ID of `set`, allocating one if the set is new. The bool is true
    /// when it is new: the caller must persist it before the ID is used.
    pub fn intern(&mut self, set: &TagSet) -> (SetId, bool) {
        if let Some(&id) = self.by_digest.get(set.digest()) {
            return (id, false);
        }
        let id = SetId(self.next);
        self.next += 1;
        self.by_digest.insert(*set.digest(), id);
        self.by_id.insert(id, set.clone());
        (id, true)
    }

    /// Puts back a set read from storage under the ID it had.
    pub fn restore(&mut self, id: SetId, set: TagSet) -> Result<(), RestoreError> {
        if id == SetId::EMPTY {
            return Err(RestoreError::ReservedId);
        }
        if self.by_id.contains_key(&id) {
            return Err(RestoreError::DuplicateId(id.0));
        }
        if let Some(other) = self.by_digest.get(set.digest()) {
            return Err(RestoreError::DuplicateSet(other.0, id.0));
        }
        self.by_digest.insert(*set.digest(), id);
        self.by_id.insert(id, set);
        self.next = self.next.max(id.0 + 1);
        Ok(())
    }

    /// The ID the next new set will get.
    pub fn next_id(&self) -> u64 {
        self.next
    }

    /// Never hands out IDs below `next` (kept across restarts, so that an
    /// ID collected before a restart is not reused after it).
    pub fn skip_to(&mut self, next: u64) {
        self.next = self.next.max(next);
    }

    pub fn get(&self, id: SetId) -> Option<&TagSet> {
        self.by_id.get(&id)
    }

    pub fn id_of(&self, set: &TagSet) -> Option<SetId> {
        self.by_digest.get(set.digest()).copied()
    }

    /// Number of sets, the empty one included.
    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    /// Drops every set for which `in_use` is false (never the empty set)
    /// and returns the IDs dropped.
    pub fn collect(&mut self, in_use: impl Fn(SetId) -> bool) -> Vec<SetId> {
        let dropped: Vec<SetId> = self
            .by_id
            .keys()
            .copied()
            .filter(|&id| id != SetId::EMPTY && !in_use(id))
            .collect();
        for id in &dropped {
            if let Some(set) = self.by_id.remove(id) {
                self.by_digest.remove(set.digest());
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> TagSet {
        TagSet::parse_read_format(text.as_bytes()).unwrap()
    }

    #[test]
    fn equal_sets_share_an_id() {
        let mut i = Interner::new();
        assert_eq!(i.intern(&TagSet::empty()), (SetId::EMPTY, false));
        let (a, new) = i.intern(&set("a\nb=1\n"));
        assert!(new);
        assert_eq!(i.intern(&set("b=1\na\n")), (a, false));
        let (b, _) = i.intern(&set("@a\nb=1\n"));
        assert_ne!(a, b);
        assert_eq!(i.get(a), Some(&set("a\nb=1\n")));
        assert_eq!(i.id_of(&set("@a\nb=1\n")), Some(b));
        assert_eq!(i.count(), 3);
    }

    #[test]
    fn collected_ids_are_never_reused() {
        let mut i = Interner::new();
        let (a, _) = i.intern(&set("a\n"));
        let (b, _) = i.intern(&set("b\n"));
        assert_eq!(i.collect(|id| id == b), vec![a]);
        assert_eq!(i.get(a), None);
        let (c, new) = i.intern(&set("a\n"));
        assert!(new);
        assert!(c.0 > b.0);
        assert!(
            i.get(SetId::EMPTY).is_some(),
            "the empty set is never collected"
        );
    }

    #[test]
    fn restore_checks_consistency() {
        let mut i = Interner::new();
        assert_eq!(i.restore(SetId(7), set("a\n")), Ok(()));
        assert_eq!(
            i.restore(SetId(7), set("b\n")),
            Err(RestoreError::DuplicateId(7))
        );
        assert_eq!(
            i.restore(SetId(9), set("a\n")),
            Err(RestoreError::DuplicateSet(7, 9))
        );
        assert_eq!(
            i.restore(SetId(0), set("c\n")),
            Err(RestoreError::ReservedId)
        );
        assert_eq!(i.intern(&set("z\n")).0, SetId(8));
    }
}
