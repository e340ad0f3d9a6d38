//! Replays the committed corpus (and the crashes found so far, if any)
//! through the harnesses on stable Rust, so that every `cargo test` run
//! checks what fuzzing found.

use std::fs;
use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        harness(&fs::read(&path).unwrap());
        count += 1;
    }
    assert!(
        count >= 10,
        "{target}: only {count} corpus entries in {}",
        dir.display()
    );
    println!("{target}: replayed {count} inputs");
}

#[test]
fn write_text_corpus() {
    replay("write_text", ptags_fuzz::write_text);
}

#[test]
fn contid_decision_corpus() {
    replay("contid_decision", ptags_fuzz::contid_decision);
}

#[test]
fn request_frame_corpus() {
    replay("request_frame", ptags_fuzz::request_frame);
}

#[test]
fn audit_log_corpus() {
    replay("audit_log", ptags_fuzz::audit_log);
}

#[test]
fn oci_state_corpus() {
    replay("oci_state", ptags_fuzz::oci_state);
}

#[test]
fn audit_policy_corpus() {
    replay("audit_policy", ptags_fuzz::audit_policy);
}

#[test]
fn device_rules_corpus() {
    replay("device_rules", ptags_fuzz::device_rules);
}

#[test]
fn search_index_corpus() {
    replay("search_index", ptags_fuzz::search_index);
}
