use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/ptags.bpf.c";

/// FNV-1a of the BPF sources, in name order: the programs' version, so
/// that a daemon built with changed programs replaces pinned ones of the
/// same layout instead of reusing them.
fn programs_fingerprint() -> u64 {
    let mut files: Vec<PathBuf> = std::fs::read_dir("src/bpf")
        .expect("listing src/bpf")
        .map(|e| e.expect("a src/bpf entry").path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "c" || x == "h")
                && p.file_name().is_some_and(|n| n != "vmlinux.h")
        })
        .collect();
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        for byte in std::fs::read(&file).expect("reading a BPF source") {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn main() {
    println!(
        "cargo:rustc-env=PTAGS_PROGRAMS={:016x}",
        programs_fingerprint()
    );
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR set by cargo")).join("ptags.skel.rs");
    SkeletonBuilder::new()
        .source(SRC)
        .clang("clang-19")
        .clang_args(["-Isrc/bpf", "-Wall", "-Werror"])
        .build_and_generate(&out)
        .expect("building the BPF programs (needs clang-19; scripts/deps.sh installs it)");
    println!("cargo:rerun-if-changed=src/bpf");
}
