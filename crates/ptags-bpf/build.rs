use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/ptags.bpf.c";

fn main() {
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
