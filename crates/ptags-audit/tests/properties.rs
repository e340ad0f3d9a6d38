//! Properties of the audit text format.

use proptest::prelude::*;

proptest! {
    /// Any bytes survive the audit format's encoding of untrusted values,
    /// and a record carrying them parses back to the same fields.
    #[test]
    fn audit_values_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..64),
                               serial in any::<u64>(), secs in any::<u32>(), millis in 0u16..1000) {
        use ptags_audit::{decode_untrusted, encode_untrusted, Record, Stamp};
        let encoded = encode_untrusted(&bytes);
        prop_assert_eq!(decode_untrusted(&encoded).unwrap(), bytes.clone());
        prop_assert!(!encoded.contains(' '));
        let record = Record {
            kind: "PTAGS_TEST".into(),
            stamp: Stamp { secs: u64::from(secs), millis, serial },
            fields: vec![("a".into(), encoded.clone()), ("b".into(), "1".into())],
        };
        let parsed = Record::parse(&record.to_string()).unwrap();
        prop_assert_eq!(parsed, record);
    }
}
