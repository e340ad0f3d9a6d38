//! The tag-set database's size (issue 13): 150 writes, each adding one tag
//! with a 32,000-byte value to the set the one before made, stored through
//! the daemon's `Store` as `Daemon::intern` stores them. Prints the file's
//! size after the writes, after collecting every set but the last, and
//! after collecting the last, beside what the layout before issue 13
//! stored: every set whole, in the read format.
//!
//!     cargo bench -p ptagsd --bench store

// The bench drives the tag-set half of the store only.
#[allow(dead_code)]
#[path = "../src/store.rs"]
mod store;

use std::time::Instant;

use ptags_core::{SetId, Tag, TagSet};

use store::Store;

const WRITES: u64 = 150;
const VALUE_LEN: usize = 32_000;

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn compacted(result: Option<(u64, u64)>) -> &'static str {
    match result {
        Some(_) => "compacted by the collection rule",
        None => "the collection rule did not compact",
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), u64::MAX).unwrap();
    let mut tags = Vec::new();
    let mut old_layout: u64 = 0;
    let start = Instant::now();
    for i in 0..WRITES {
        let value = format!("{i:05}").repeat(VALUE_LEN / 5);
        tags.push(Tag::new(&format!("X:{i:03}"), Some(&value), false).unwrap());
        let set = TagSet::from_tags(tags.clone()).unwrap();
        old_layout += set.to_read_format().len() as u64;
        let id = SetId(i + 1);
        store
            .save_sets(&[(id, &set)], id.0 + 1, 1000, true)
            .unwrap();
    }
    let elapsed = start.elapsed();
    let data = WRITES * VALUE_LEN as u64;
    let written = store.file_len().unwrap();
    println!(
        "{WRITES} writes, each adding one tag with a {VALUE_LEN}-byte value ({} of values)",
        mb(data)
    );
    println!(
        "  written in {:.2} s ({:.1} ms per durable write)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / WRITES as f64
    );
    println!(
        "  old layout, every set whole (sum of read-format lengths): {}",
        mb(old_layout)
    );
    println!(
        "  new layout, file after the writes:                       {}",
        mb(written)
    );

    let ids: Vec<SetId> = (1..WRITES).map(SetId).collect();
    store.delete_sets(&ids).unwrap();
    let rule = store.compact_if_sparse().unwrap();
    let after_rule = store.file_len().unwrap();
    store.compact().unwrap();
    println!(
        "  collected all but the last set: {} ({}); {} after Database::compact",
        mb(after_rule),
        compacted(rule),
        mb(store.file_len().unwrap())
    );

    store.delete_sets(&[SetId(WRITES)]).unwrap();
    let rule = store.compact_if_sparse().unwrap();
    println!(
        "  collected the last set too:     {} ({})",
        mb(store.file_len().unwrap()),
        compacted(rule)
    );
}
