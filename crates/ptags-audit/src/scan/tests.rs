use super::*;
use crate::encode_untrusted;
use crate::index::{FileId, Index};
use crate::query::Matcher;
use proptest::prelude::*;

/// Matching events as raw lines and their parsed records, one event
/// after the other.
fn print(lines: &[LogLine<'_>], entries: &[Entry<'_>], out: &mut Vec<u8>) {
    for (line, entry) in lines.iter().zip(entries) {
        out.extend_from_slice(format!("{}\n  {entry:?}\n", line.raw).as_bytes());
    }
    out.extend_from_slice(b"--\n");
}

/// Matching events as `ptags audit search --format raw` prints them.
fn print_raw(lines: &[LogLine<'_>], _: &[Entry<'_>], out: &mut Vec<u8>) {
    for line in lines {
        out.extend_from_slice(format!("{}\n", line.raw).as_bytes());
    }
}

/// The straightforward way: each line in turn, as `ptags audit`
/// reads its files, grouped and matched one event after the other.
fn line_by_line(log: &[u8], query: &Query) -> (Vec<u8>, Found) {
    line_by_line_with(log, query, print)
}

fn line_by_line_with(
    log: &[u8],
    query: &Query,
    print: fn(&[LogLine<'_>], &[Entry<'_>], &mut Vec<u8>),
) -> (Vec<u8>, Found) {
    let mut matcher = Matcher::new(query.clone()).unwrap();
    let (mut out, mut matched) = (Vec::new(), 0);
    let mut each = |lines: &[LogLine<'_>], entries: &[Entry<'_>]| {
        if matcher.matches(entries) {
            matched += 1;
            print(lines, entries, &mut out);
        }
    };
    let mut grouper = EventGrouper::default();
    let text = log.strip_suffix(b"\n").unwrap_or(log);
    if !log.is_empty() {
        for line in text.split(|&b| b == b'\n') {
            grouper.push(String::from_utf8_lossy(line), &mut each);
        }
    }
    let unreadable = grouper.finish(&mut each);
    (
        out,
        Found {
            matched,
            unreadable,
        },
    )
}

fn fast(log: &[u8], query: &Query, split: Split) -> (Vec<u8>, Found) {
    fast_with(log, query, split, None, Print::With(&print))
}

fn fast_with(
    log: &[u8],
    query: &Query,
    split: Split,
    blocks: Option<&[Block]>,
    print: Print<'_>,
) -> (Vec<u8>, Found) {
    let mut out = Vec::new();
    let found = search(log, query, split, blocks, print, |text| {
        for slice in text {
            out.extend_from_slice(slice);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    (out, found)
}

/// One line of a generated log: few serials, containers and pids, so
/// that events interleave, repeat and nest; some lines hold no
/// record, some are sealed, JSON, or not UTF-8.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let body = prop_oneof![
        (1..4u32).prop_map(|pid| format!("SYSCALL: syscall=2 ppid=1 pid={pid} comm=\"cat\"")),
        Just("CWD: cwd=\"/srv\"".to_owned()),
        (1..6u64, 1..6u64).prop_map(|(c, p)| format!("CONTAINER_ID: contid={c},^{p}")),
        (1..6u64).prop_map(|c| format!("CONTAINER_ID: contid={c}")),
        (1..6u64, 1..6u64, 1..4u32).prop_map(|(c, p, pid)| format!(
            "CONTAINER_OP: op=nest opid={pid} contid={c} old-contid={p} pid=9"
        )),
        (1..6u64, 1..4u32).prop_map(|(c, pid)| format!(
            "PTAGS_OP: op=write opid={pid} contid={c} text={} res=success",
            encode_untrusted(b"+web:role\n")
        )),
        (1..4u64).prop_map(|n| format!("NS_INFO: dev=00:04 netns={n} pid=00{n}")),
        (1..6u64).prop_map(|c| format!("USER_AVC: pid=3 msg='contid={c} op=nest'")),
    ];
    let record = (1..7u64, body, any::<bool>()).prop_map(|(serial, body, sealed)| {
        let (kind, rest) = body.split_once(": ").unwrap();
        let mut line = format!(
            "type={kind} msg=audit({}.{:03}:{serial}): {rest}",
            1_700_000_000 + serial / 3,
            serial * 7 % 1000
        );
        if sealed {
            line.push_str(&format!(
                " ptags_seq={serial} ptags_mac=0123456789abcdef0123456789abcdef"
            ));
        }
        line.into_bytes()
    });
    prop_oneof![
        8 => record,
        1 => prop_oneof![
            Just(b"".to_vec()),
            Just(b"garbage contid=3 pid=2".to_vec()),
            Just(b"type= msg=audit(1700000000.000:1): pid=2".to_vec()),
            Just(b"type=SYSCALL msg=audit(1700000000.00:1): pid=2".to_vec()),
            Just(b"type=SY\xffSCALL msg=audit(1700000000.000:1): pid=2".to_vec()),
            Just(b"type=SYSCALL msg=audit(1700000000.333:1): pid=2 comm=\xc3".to_vec()),
            Just("type=NS\u{a0}INFO msg=audit(1700000000.000:1): netns=1".as_bytes().to_vec()),
            (1..6u64).prop_map(|c| format!(
                "{{\"type\":\"CONTAINER_ID\",\"time\":\"1700000000.000\",\"serial\":2,\"text\":\"contid\\u003d{c}\"}}"
            ).into_bytes()),
        ],
    ]
}

fn query() -> impl Strategy<Value = Query> {
    let kinds = prop::collection::vec(
        prop::sample::select(vec!["SYSCALL", "CONTAINER_OP", "NS_INFO", "USER_AVC"]),
        0..2,
    );
    let time = prop::option::of(1_700_000_000_000..1_700_000_002_999u64);
    (
        prop::option::of(1..6u64),
        any::<bool>(),
        prop::option::of(Just("web:*".to_owned())),
        kinds,
        prop::option::of(1..4u32),
        prop::option::of(1..4u64),
        (time.clone(), time),
    )
        .prop_map(
            |(contid, nested, tag, kinds, pid, ns, (since_ms, until_ms))| Query {
                contid,
                nested: nested && contid.is_some(),
                tag,
                kinds: kinds.into_iter().map(str::to_owned).collect(),
                pid,
                ns,
                since_ms,
                until_ms,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Chunks of any size, down to every line (and every byte) its
    /// own, cut events anywhere; the answer is the same.
    #[test]
    fn the_parallel_search_answers_as_reading_line_by_line(
        lines in prop::collection::vec(line(), 0..40),
        end_newline in any::<bool>(),
        query in query(),
        chunk_bytes in 1..400usize,
        workers in 1..4usize,
    ) {
        let mut log = lines.join(&b'\n');
        if end_newline {
            log.push(b'\n');
        }
        let split = Split { chunk_bytes, workers };
        let (want_text, want) = line_by_line(&log, &query);
        let (text, found) = fast(&log, &query, split);
        prop_assert_eq!(String::from_utf8_lossy(&text), String::from_utf8_lossy(&want_text));
        prop_assert_eq!(found, want);
        // Raw lines, copied rather than parsed.
        let (want_raw, _) = line_by_line_with(&log, &query, print_raw);
        let (raw, found) = fast_with(&log, &query, split, None, Print::Raw);
        prop_assert_eq!(raw, want_raw);
        prop_assert_eq!(found, want);
    }

    /// An index built, stored and read back skips only blocks that
    /// cannot match: the answer is the same. One that no longer fits
    /// the file (lines appended, a line changed) or is damaged is
    /// refused, and the one built instead answers the same.
    #[test]
    fn searching_with_an_index_answers_as_reading_line_by_line(
        lines in prop::collection::vec(line(), 0..40),
        more in prop::collection::vec(line(), 1..5),
        query in query(),
        block_bytes in 1..400usize,
        chunk_bytes in 1..400usize,
        workers in 1..4usize,
        damage in any::<prop::sample::Index>(),
        noise in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut log = lines.join(&b'\n');
        log.push(b'\n');
        let id = FileId { len: log.len() as u64, mtime_ns: 1, ino: 2, dev: 3 };
        let split = Split { chunk_bytes, workers };
        let index = Index::build(&log, Split { chunk_bytes: block_bytes, workers });
        let stored = index.encode(&id, &log);
        let (read, refused) = Index::decode_or_build(Some(&stored), &id, &log, split);
        prop_assert_eq!(&read, &index);
        prop_assert_eq!(refused, None);
        let want = line_by_line(&log, &query);
        prop_assert_eq!(fast_with(&log, &query, split, Some(&index.blocks), Print::With(&print)), want.clone());
        let (want_raw, _) = line_by_line_with(&log, &query, print_raw);
        prop_assert_eq!(fast_with(&log, &query, split, Some(&index.blocks), Print::Raw), (want_raw, want.1));

        // Appended to: refused; and blocks that do not tile the log
        // are not used.
        let mut longer = log.clone();
        longer.extend_from_slice(&more.join(&b'\n'));
        longer.push(b'\n');
        let longer_id = FileId { len: longer.len() as u64, ..id };
        prop_assert!(Index::decode(&stored, &longer_id, &longer).is_err());
        let want = line_by_line(&longer, &query);
        prop_assert_eq!(fast_with(&longer, &query, split, Some(&index.blocks), Print::With(&print)), want.clone());
        let (rebuilt, refused) = Index::decode_or_build(Some(&stored), &longer_id, &longer, split);
        prop_assert!(refused.is_some());
        prop_assert_eq!(fast_with(&longer, &query, split, Some(&rebuilt.blocks), Print::With(&print)), want);

        // Rewritten in place, same length: another mtime is refused,
        // and a changed first line of a block even with the same
        // metadata.
        let touched = FileId { mtime_ns: 9, ..id };
        prop_assert!(Index::decode(&stored, &touched, &log).is_err());
        if let Some(b) = index.blocks.iter().find(|b| b.end - b.start > 1 && log[b.start] != b'\n') {
            let mut changed = log.clone();
            changed[b.start] ^= 0x20;
            prop_assert!(Index::decode(&stored, &id, &changed).is_err());
        }

        // Damaged: one byte changed, or noise: refused, never a panic;
        // what is built instead answers the same.
        if !stored.is_empty() {
            let mut bad = stored.clone();
            bad[damage.index(stored.len())] ^= 0x5a;
            prop_assert!(Index::decode(&bad, &id, &log).is_err());
        }
        let want = line_by_line(&log, &query);
        let (built, refused) = Index::decode_or_build(Some(&noise), &id, &log, split);
        prop_assert!(refused.is_some());
        prop_assert_eq!(fast_with(&log, &query, split, Some(&built.blocks), Print::With(&print)), want);
        // Noise that carries a valid seal reaches the parser: it is
        // refused with an error, not a panic.
        let mut sealed = b"PTAGSIDX".to_vec();
        sealed.extend_from_slice(&noise);
        let seal = *blake3::hash(&sealed).as_bytes();
        sealed.extend_from_slice(&seal);
        let _ = Index::decode(&sealed, &id, &log);
        // And so does a valid index cut short anywhere, resealed.
        let cut = damage.index(stored.len() - 32);
        let mut short = stored[..cut].to_vec();
        let seal = *blake3::hash(&short).as_bytes();
        short.extend_from_slice(&seal);
        prop_assert!(Index::decode(&short, &id, &log).is_err());
    }

    /// The stamp read in place is the one a full parse finds.
    #[test]
    fn stamps_read_in_place_are_those_of_the_parsed_line(
        kind in prop::collection::vec(prop::sample::select(
            b"AZ_ \t\x0b\x0c\r\x1c\x1f\x85\xa0\xc2\xff{".to_vec()), 0..4usize),
        stamp in prop::sample::select(vec![
            "1700000000.123:5", "1.000:1", "1.00:1", "1.0000:1", "x.000:1",
            "1.000:", "1.000:1)", "99999999999999999999.000:1", "1.000:1 ptags_seq=2",
            "1.000:1:2", "1:2.000", "1..000:1", "", "1.000:1)x", ".000:1", "1.000:18446744073709551616",
            "1.000:18446744073709551615", "0001.999:0",
        ]),
        tail in prop::sample::select(vec![
            "", " pid=1", " a=1 ptags_seq=3 ptags_mac=0123456789abcdef0123456789abcdef",
            " ptags_seq=x ptags_mac=00", " comm=\u{85}",
        ]),
        json in any::<bool>(),
    ) {
        let mut line = b"type=".to_vec();
        line.extend_from_slice(&kind);
        line.extend_from_slice(format!(" msg=audit({stamp}): x=1{tail}").as_bytes());
        if tail.is_empty() {
            // Not UTF-8 after the header.
            line.push(0xff);
        }
        if json {
            line = format!(
                "{{\"type\":\"A\",\"time\":\"1.000\",\"serial\":{},\"text\":\"x\"}}",
                kind.len()
            ).into_bytes();
        }
        let parsed = LogLine::parse(String::from_utf8_lossy(&line)).map(|l| l.stamp);
        prop_assert_eq!(line_stamp(&line), parsed);
    }
}

#[test]
fn nesting_learnt_later_in_an_event_and_events_cut_by_chunks() {
    let log = b"\
type=SYSCALL msg=audit(1700000000.000:1): pid=5
type=CONTAINER_ID msg=audit(1700000000.000:1): contid=7
garbage
type=CONTAINER_OP msg=audit(1700000000.000:1): op=nest opid=5 contid=7 old-contid=2
type=SYSCALL msg=audit(1700000000.000:2): pid=5
type=CONTAINER_ID msg=audit(1700000000.000:2): contid=7
type=CONTAINER_ID msg=audit(1700000000.000:1): contid=9
";
    let query = Query {
        contid: Some(2),
        nested: true,
        ..Query::default()
    };
    let (want, found) = line_by_line(log, &query);
    assert_eq!(
        found,
        Found {
            matched: 2,
            unreadable: 1
        }
    );
    for chunk_bytes in 1..log.len() + 1 {
        let split = Split {
            chunk_bytes,
            workers: 2,
        };
        assert_eq!(
            fast(log, &query, split),
            (want.clone(), found),
            "{chunk_bytes}"
        );
    }
}
