//! Content identity of tags and tag sets.
//!
//! A set's digest is a BLAKE3 hash over its tags' own digests, so equal
//! sets have equal digests in every process and every release, and
//! changing a keep flag does not rehash a 32 KB value. The digest is a
//! cryptographic hash because it decides which sets share one kernel ID:
//! a forged collision would hand one task another's tags.

use std::fmt;

/// A 256-bit content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 lowercase or uppercase hex digits.
    pub fn from_hex(s: &str) -> Option<Digest> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Digest(out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

const TAG_CONTEXT: &str = "ptags 2026 tag content v1";
const SET_CONTEXT: &str = "ptags 2026 tag set v1";

/// Digest of a tag's name and value. Lengths are hashed first so that no
/// two (name, value) pairs share an encoding.
pub(crate) fn of_tag(name: &str, value: Option<&str>) -> Digest {
    let mut h = blake3::Hasher::new_derive_key(TAG_CONTEXT);
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    let value = value.unwrap_or("");
    h.update(&(value.len() as u64).to_le_bytes());
    h.update(value.as_bytes());
    Digest(*h.finalize().as_bytes())
}

/// Digest of a sorted list of (tag digest, keep flag).
pub(crate) fn of_set<'a>(tags: impl Iterator<Item = (&'a Digest, bool)>) -> Digest {
    let mut h = blake3::Hasher::new_derive_key(SET_CONTEXT);
    let mut count: u64 = 0;
    for (d, keep) in tags {
        h.update(&d.0);
        h.update(&[u8::from(keep)]);
        count += 1;
    }
    h.update(&count.to_le_bytes());
    Digest(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = of_tag("a", Some("b"));
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
        assert_eq!(Digest::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn encoding_is_unambiguous() {
        assert_ne!(of_tag("ab", None), of_tag("a", Some("b")));
        assert_eq!(of_tag("a", None), of_tag("a", Some("")));
    }

    #[test]
    fn digest_is_stable_across_releases() {
        // If this changes, every persisted tag-set ID changes meaning: bump
        // the context strings and migrate the daemon's database instead.
        assert_eq!(
            of_set(std::iter::empty()).to_hex(),
            "1907c1e096e14a710a705b14a4defee3acfe7a1461b289333ecbb9efa0764ae4"
        );
        let a = of_tag("a", Some("1"));
        let b = of_tag("b", None);
        assert_eq!(
            of_set([(&a, true), (&b, false)].into_iter()).to_hex(),
            "17106b50cca178b16d16951018e996e3bad2270380b04c508eadae6b710cb15e"
        );
    }
}
