//! Cost of the semantics: `cargo bench -p ptags-core --bench semantics`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ptags_core::{apply_write, Interner, TagSet, Target, Writer, MAX_TAGS, MAX_VALUE_LEN};
use std::hint::black_box;

fn set(text: &str) -> TagSet {
    TagSet::parse_read_format(text.as_bytes()).unwrap()
}

/// A container manager's usual write on a task with a handful of tags.
const TYPICAL: &str = "\
# label a container's process
+UMCM:CONTAINER_ID
!UMCM:CONTAINER_ID=4515122123205246976
+@UMCM:POD
!UMCM:POD=frontend-7f9c
+@UMCM:NAMESPACE
!UMCM:NAMESPACE=production
!UMCM:POD=frontend-7f9d
-UMCM:TMP:*
?UMCM:CONTAINER_ID
?@UMCM:*
+@app:role
!app:role=web
-@app:debug
";

fn typical(c: &mut Criterion) {
    let before = set("UMCM:TMP:a\nUMCM:TMP:b\napp:debug\nuser=alice\nptags:UMCM:add\n");
    let writer = Writer::new(
        &set("ptags:UMCM:add\nptags:UMCM:sub\nptags:UMCM:set\nptags:UMCM:others\nptags:app:add\nptags:app:sub\nptags:app:set\nptags:app:others\n"),
        false,
        Target::Other { may_access: true },
    );
    assert!(apply_write(&before, TYPICAL.as_bytes(), &writer)
        .failure
        .is_none());
    c.bench_function("write/typical_13_lines", |b| {
        b.iter(|| apply_write(black_box(&before), black_box(TYPICAL.as_bytes()), &writer))
    });
}

fn worst_case(c: &mut Criterion) {
    let value = "v".repeat(MAX_VALUE_LEN);
    let text: String = (0..MAX_TAGS)
        .map(|i| format!("+@t:{i:04}\n!t:{i:04}={value}\n"))
        .collect();
    let admin = Writer::admin(Target::Itself);
    let full = apply_write(&TagSet::empty(), text.as_bytes(), &admin);
    assert!(full.failure.is_none());
    let full = full.tags;

    let mut g = c.benchmark_group("write/worst_case");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("4000_tags_max_values_from_empty", |b| {
        b.iter(|| apply_write(&TagSet::empty(), black_box(text.as_bytes()), &admin))
    });
    g.finish();

    let edit = format!("!t:2000={}w\n", &value[1..]);
    c.bench_function("write/one_value_in_full_set", |b| {
        b.iter(|| apply_write(black_box(&full), black_box(edit.as_bytes()), &admin))
    });
    c.bench_function("write/glob_remove_from_full_set", |b| {
        b.iter(|| apply_write(black_box(&full), b"-t:*\n", &admin))
    });
    let unkept = apply_write(&full, b"-@t:1*\n-@t:3*\n", &admin).tags;
    c.bench_function("exec_prune/full_set", |b| {
        b.iter(|| black_box(&unkept).kept())
    });
}

fn interning(c: &mut Criterion) {
    let sets: Vec<TagSet> = (0..1000)
        .map(|i| {
            set(&format!(
                "UMCM:CONTAINER_ID={i}\n@UMCM:POD=p{}\nuser=u{}\n",
                i % 50,
                i % 7
            ))
        })
        .collect();
    c.bench_function("intern/1000_new_sets", |b| {
        b.iter_batched(
            Interner::new,
            |mut interner| {
                for s in &sets {
                    black_box(interner.intern(s));
                }
                interner
            },
            BatchSize::SmallInput,
        )
    });
    let mut interner = Interner::new();
    for s in &sets {
        interner.intern(s);
    }
    c.bench_function("intern/1000_known_sets", |b| {
        b.iter(|| {
            for s in &sets {
                black_box(interner.intern(s));
            }
        })
    });
}

criterion_group!(benches, typical, worst_case, interning);
criterion_main!(benches);
