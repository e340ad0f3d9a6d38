//! A container's audit policy: which records its own copy of the trail
//! takes, how much it may queue, what happens when the queue overflows or
//! the container goes over its rate, how much log it may keep, and which
//! BPF-produced events it wants. Pure Rust, no I/O: [`Policy::parse`]
//! reads the text, [`Policy::to_text`] writes it back (canonically), and
//! [`Policy::takes`] decides for one event.
//!
//! # The text
//!
//! ASCII, one statement a line. A line whose first non-blank character is
//! `#` is a comment (there are no comments after a statement: `#` is an
//! ordinary character in a value); blank lines are ignored; tokens are
//! separated by spaces and tabs. No other control character, and no
//! non-ASCII character, may appear anywhere (comments included; a CR of
//! CRLF line ends too). The text is at most [`MAX_POLICY_BYTES`] long, not
//! counting one final newline.
//!
//! ```text
//! include [FIELD=VALUE ...]       a rule; with no field it matches every event
//! exclude [FIELD=VALUE ...]
//! default include|exclude         when no rule matches (default: include)
//! queue [records=N] [bytes=N]     at least one; records 1..=1000000 (default 8192),
//!                                 bytes 1..=1G (default 8M); bytes take K, M or G
//!                                 (powers of 1024)
//! overflow drop|kill              what a full queue does (default: drop)
//! rate records=N per=Ns action=drop|kill
//!                                 at most N records each per seconds (1..=3600,
//!                                 the `s` is required), all three required;
//!                                 `rate off` (the default) has none
//! log off                         no log
//! log [size-mib=N] [files=N]      at least one; size-mib 1..=1024 (default 8),
//!                                 files 1..=100 (default 4)
//! events exec|exit ...            the BPF-produced events wanted, in any order
//! events none                     none (the default)
//! ```
//!
//! `default`, `queue`, `overflow`, `rate`, `log` and `events` may each be
//! given once; rules are evaluated in the order written, at most
//! [`MAX_RULES`] of them. A rule's fields (each at most once a rule):
//!
//! | field | value | holds when a record of the event has |
//! |---|---|---|
//! | `type=T1,T2` | record type names (`[A-Z0-9_]`, 1..=64) | one of these types |
//! | `syscall=execve,59` | x86_64 names ([`crate::syscalls`]) or numbers | `syscall=` one of these (and `arch=c000003e`, or no `arch`) |
//! | `key=TEXT` | 1..=256 characters | the audit key `key=` (one of the keys, when auditctl joined several) |
//! | `success=yes\|no` | | `success=yes\|no`, or else `res=success\|1` / `res=failed\|0` |
//! | `uid=0,1000` | decimal u32s | `uid=` one of these |
//! | `exe=/PATH` or `exe=/PREFIX*` | starts with `/`; `*` only at the end; 1..=4096 | `exe=` this path, or one starting with the prefix |
//! | `tag=NAME` or `tag=PREFIX:*` | a tag pattern, as `ptags ps --tag` takes | a `PTAGS_OP` whose `text` has a line naming a tag the pattern matches |
//!
//! Lists are comma-separated. Any value may be written in double quotes,
//! `key="two words"`, which is how a value holds a blank; no value holds
//! a `"`. A number is decimal digits only.
//!
//! An event matches a rule when every condition of the rule holds, each
//! for some record of the event (not necessarily the same one). The first
//! rule that matches decides; when none does, `default` decides.
//!
//! # Errors
//!
//! Every error names the 1-based line it is on; an error about the whole
//! text (it is too long) names line 0.
//!
//! # Canonical text
//!
//! [`Policy::to_text`] writes the settings that differ from the defaults
//! (`queue`, `overflow`, `rate`, `log`, `events`, in that order), then the
//! rules as given, then `default exclude` if so; every line ends in a
//! newline, and the default policy is the empty text. System calls are
//! written by name, unless that would make the text longer than
//! [`MAX_POLICY_BYTES`]: then by number, which makes the canonical text
//! never longer than the text it was parsed from, so that it always
//! parses back to the same policy.

use std::fmt;

use ptags_core::line::parse_pattern;

use crate::{decode_untrusted, field, syscalls};

/// The longest policy text, not counting one final newline.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// The most rules a policy may have.
pub const MAX_RULES: usize = 256;
/// The largest `queue records=`.
pub const MAX_QUEUE_RECORDS: u32 = 1_000_000;
/// The largest `queue bytes=` (1 GiB).
pub const MAX_QUEUE_BYTES: u64 = 1 << 30;
/// The longest `rate per=`, in seconds.
pub const MAX_RATE_SECS: u32 = 3600;
/// The largest `log size-mib=`.
pub const MAX_LOG_FILE_MIB: u64 = 1024;
/// The largest `log files=`.
pub const MAX_LOG_FILES: u32 = 100;
/// The longest record type name in `type=`.
pub const MAX_TYPE_LEN: usize = 64;
/// The longest `key=` (the kernel's `AUDIT_MAX_KEY_LEN`).
pub const MAX_KEY_LEN: usize = 256;
/// The longest `exe=` (`PATH_MAX`).
pub const MAX_EXE_LEN: usize = 4096;

/// The architecture whose system call numbers [`crate::syscalls`] holds,
/// as SYSCALL records write it (`AUDIT_ARCH_X86_64`).
const ARCH_X86_64: &str = "c000003e";

/// The field names a rule may use, in the order error messages list them.
const FIELDS: &str = "type, syscall, key, success, uid, exe, tag";
const STATEMENTS: &str = "include, exclude, default, queue, overflow, rate, log, events";

/// A container's audit policy. See the [module docs](self) for its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Evaluated in order; the first rule that matches decides.
    pub rules: Vec<Rule>,
    /// When no rule matches.
    pub default: Action,
    pub queue: QueueLimits,
    /// What a full queue does.
    pub overflow: Overflow,
    pub rate: Option<RateQuota>,
    /// `None`: no log.
    pub log: Option<LogBudget>,
    pub events: Events,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            rules: Vec::new(),
            default: Action::Include,
            queue: QueueLimits::default(),
            overflow: Overflow::Drop,
            rate: None,
            log: Some(LogBudget::default()),
            events: Events::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Include,
    Exclude,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Include => "include",
            Action::Exclude => "exclude",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Drop,
    Kill,
}

impl Overflow {
    pub const fn as_str(self) -> &'static str {
        match self {
            Overflow::Drop => "drop",
            Overflow::Kill => "kill",
        }
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much a container's queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub records: u32,
    pub bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            records: 8192,
            bytes: 8 << 20,
        }
    }
}

/// At most `records` records each `per_secs` seconds; past that, `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    pub records: u64,
    pub per_secs: u32,
    pub action: Overflow,
}

/// The log a container may keep: `files` files of `file_mib` MiB each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBudget {
    pub file_mib: u64,
    pub files: u32,
}

impl Default for LogBudget {
    fn default() -> LogBudget {
        LogBudget {
            file_mib: 8,
            files: 4,
        }
    }
}

/// The BPF-produced events (`PTAGS_EXEC`, `PTAGS_EXIT`) a container wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events {
    pub exec: bool,
    pub exit: bool,
}

/// One rule: an action and the conditions an event must meet for it.
///
/// `line` is where the rule was written (1-based; 0 for a rule not
/// parsed), for messages: it takes no part in equality, so that a policy
/// equals the one its canonical text parses to.
#[derive(Debug, Clone, Eq)]
pub struct Rule {
    pub action: Action,
    pub conditions: Vec<Condition>,
    pub line: usize,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Rule) -> bool {
        self.action == other.action && self.conditions == other.conditions
    }
}

impl Rule {
    /// Whether every condition holds for the event.
    pub fn matches(&self, records: &[(&str, &str)]) -> bool {
        self.conditions.iter().all(|c| c.holds(records))
    }
}

/// One condition of a rule. See the [module docs](self) for when each
/// holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Record type names, any of.
    Type(Vec<String>),
    /// x86_64 system call numbers, any of.
    Syscall(Vec<u32>),
    /// The audit key.
    Key(String),
    Success(bool),
    /// Any of.
    Uid(Vec<u32>),
    Exe(ExePattern),
    /// A tag pattern: `NAME` or `PREFIX:*`.
    Tag(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExePattern {
    /// This path.
    Exact(String),
    /// Paths starting with this (written with a `*` after it).
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct PolicyError {
    /// 1-based; 0 for the whole text.
    pub line: usize,
    pub message: String,
}

impl Condition {
    /// The field that writes this condition.
    pub const fn field(&self) -> &'static str {
        match self {
            Condition::Type(_) => "type",
            Condition::Syscall(_) => "syscall",
            Condition::Key(_) => "key",
            Condition::Success(_) => "success",
            Condition::Uid(_) => "uid",
            Condition::Exe(_) => "exe",
            Condition::Tag(_) => "tag",
        }
    }

    /// Whether some record of the event satisfies the condition.
    pub fn holds(&self, records: &[(&str, &str)]) -> bool {
        records
            .iter()
            .any(|&(kind, body)| self.holds_for(kind, body))
    }

    /// Whether one record (its type name and body) satisfies the
    /// condition.
    pub fn holds_for(&self, kind: &str, body: &str) -> bool {
        match self {
            Condition::Type(types) => types.iter().any(|t| t == kind),
            Condition::Syscall(numbers) => {
                field(body, "arch").is_none_or(|a| a == ARCH_X86_64)
                    && field(body, "syscall")
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_some_and(|n| numbers.contains(&n))
            }
            Condition::Key(key) => field(body, "key").is_some_and(|v| key_matches(v, key)),
            Condition::Success(want) => result(body) == Some(*want),
            Condition::Uid(uids) => field(body, "uid")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| uids.contains(&n)),
            Condition::Exe(pattern) => field(body, "exe").is_some_and(|v| match pattern {
                ExePattern::Exact(path) => untrusted_matches(v, path.as_bytes(), false),
                ExePattern::Prefix(prefix) => untrusted_matches(v, prefix.as_bytes(), true),
            }),
            Condition::Tag(pattern) => {
                kind == "PTAGS_OP"
                    && parse_pattern(pattern)
                        .is_ok_and(|p| crate::query::write_touches(field(body, "text"), &p))
            }
        }
    }
}

/// A record's outcome: `success=yes|no`, else `res=success|failed|1|0`.
fn result(body: &str) -> Option<bool> {
    match field(body, "success") {
        Some("yes") => Some(true),
        Some("no") => Some(false),
        Some(_) => None,
        None => match field(body, "res")? {
            "success" | "1" => Some(true),
            "failed" | "0" => Some(false),
            _ => None,
        },
    }
}

/// Whether an untrusted value (quoted, or hex) is `want`, or starts with
/// it; without decoding into a buffer. Anything else (`(null)`, bad hex)
/// is nothing.
fn untrusted_matches(value: &str, want: &[u8], prefix: bool) -> bool {
    if let Some(inner) = value.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return false;
        };
        let bytes = inner.as_bytes();
        return !inner.contains('"')
            && if prefix {
                bytes.starts_with(want)
            } else {
                bytes == want
            };
    }
    let hex = value.as_bytes();
    if hex.is_empty() || hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let len = hex.len() / 2;
    if len < want.len() || (!prefix && len != want.len()) {
        return false;
    }
    want.iter()
        .zip(hex.chunks_exact(2))
        .all(|(&w, pair)| hex_value(pair[0]) << 4 | hex_value(pair[1]) == w)
}

/// A hex digit's value (the caller has checked it is one).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Whether a record's `key=` value names `key`: the kernel writes the
/// rule's key as an untrusted string (or `(null)`), and auditctl joins
/// several keys of one rule with `\x01` (which makes the value hex).
fn key_matches(value: &str, key: &str) -> bool {
    if value.starts_with('"') {
        return untrusted_matches(value, key.as_bytes(), false);
    }
    decode_untrusted(value).is_some_and(|keys| keys.split(|&b| b == 1).any(|k| k == key.as_bytes()))
}

impl Policy {
    /// Whether a copy takes an event: `records` are the (type name, body)
    /// pairs of one event (all the records with one audit stamp), bodies
    /// in the audit text format as [`crate::fields`] reads them.
    pub fn takes(&self, records: &[(&str, &str)]) -> bool {
        self.rules
            .iter()
            .find(|rule| rule.matches(records))
            .map_or(self.default, |rule| rule.action)
            == Action::Include
    }

    /// Parses a policy's text, strictly (see the [module docs](self)).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.len() > MAX_POLICY_BYTES {
            return Err(PolicyError {
                line: 0,
                message: format!(
                    "the policy is {} bytes long, more than the {MAX_POLICY_BYTES} allowed",
                    body.len()
                ),
            });
        }
        let mut parser = Parser {
            policy: Policy::default(),
            seen: [None; SETTINGS.len()],
        };
        for (i, raw) in body.split('\n').enumerate() {
            let line = i + 1;
            parser
                .line(raw, line)
                .map_err(|message| PolicyError { line, message })?;
        }
        Ok(parser.policy)
    }

    /// The canonical text (see the [module docs](self)).
    pub fn to_text(&self) -> String {
        let text = self.render(true);
        if text.strip_suffix('\n').unwrap_or(&text).len() <= MAX_POLICY_BYTES {
            return text;
        }
        self.render(false)
    }

    fn render(&self, syscall_names: bool) -> String {
        let mut out = String::new();
        let defaults = Policy::default();
        if self.queue != defaults.queue {
            out.push_str("queue");
            if self.queue.records != defaults.queue.records {
                out.push_str(&format!(" records={}", self.queue.records));
            }
            if self.queue.bytes != defaults.queue.bytes {
                out.push_str(&format!(" bytes={}", format_bytes(self.queue.bytes)));
            }
            out.push('\n');
        }
        if self.overflow != defaults.overflow {
            out.push_str(&format!("overflow {}\n", self.overflow));
        }
        if let Some(r) = &self.rate {
            out.push_str(&format!(
                "rate records={} per={}s action={}\n",
                r.records, r.per_secs, r.action
            ));
        }
        match (&self.log, &defaults.log) {
            (None, _) => out.push_str("log off\n"),
            (Some(log), Some(default)) if log != default => {
                out.push_str("log");
                if log.file_mib != default.file_mib {
                    out.push_str(&format!(" size-mib={}", log.file_mib));
                }
                if log.files != default.files {
                    out.push_str(&format!(" files={}", log.files));
                }
                out.push('\n');
            }
            _ => {}
        }
        if self.events != defaults.events {
            out.push_str("events");
            if self.events.exec {
                out.push_str(" exec");
            }
            if self.events.exit {
                out.push_str(" exit");
            }
            out.push('\n');
        }
        for rule in &self.rules {
            out.push_str(rule.action.as_str());
            for c in &rule.conditions {
                out.push(' ');
                out.push_str(c.field());
                out.push('=');
                match c {
                    Condition::Type(types) => out.push_str(&types.join(",")),
                    Condition::Syscall(numbers) => {
                        let items: Vec<String> = numbers
                            .iter()
                            .map(|&n| match syscalls::name(n).filter(|_| syscall_names) {
                                Some(name) => name.to_owned(),
                                None => n.to_string(),
                            })
                            .collect();
                        out.push_str(&items.join(","));
                    }
                    Condition::Key(key) => push_value(&mut out, key),
                    Condition::Success(yes) => out.push_str(if *yes { "yes" } else { "no" }),
                    Condition::Uid(uids) => {
                        let items: Vec<String> = uids.iter().map(u32::to_string).collect();
                        out.push_str(&items.join(","));
                    }
                    Condition::Exe(ExePattern::Exact(path)) => push_value(&mut out, path),
                    Condition::Exe(ExePattern::Prefix(prefix)) => {
                        push_value(&mut out, &format!("{prefix}*"))
                    }
                    Condition::Tag(pattern) => push_value(&mut out, pattern),
                }
            }
            out.push('\n');
        }
        if self.default != defaults.default {
            out.push_str(&format!("default {}\n", self.default));
        }
        out
    }
}

/// A value, quoted when it holds a blank.
fn push_value(out: &mut String, value: &str) {
    if value.contains([' ', '\t']) {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// A byte count with the largest suffix that divides it.
fn format_bytes(n: u64) -> String {
    for (shift, suffix) in [(30, 'G'), (20, 'M'), (10, 'K')] {
        if n != 0 && n % (1 << shift) == 0 {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

/// The statements that may be given once, in the order of `Parser::seen`.
const SETTINGS: [&str; 6] = ["default", "queue", "overflow", "rate", "log", "events"];

struct Parser {
    policy: Policy,
    /// The line each of [`SETTINGS`] was given on.
    seen: [Option<usize>; SETTINGS.len()],
}

/// One token: a word, or `KEY=VALUE` (the value's quotes removed).
struct Token<'a> {
    raw: &'a str,
    pair: Option<(&'a str, &'a str)>,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Refuses what no line may hold: control characters (but tab) and
/// non-ASCII characters.
fn check_chars(line: &str) -> Result<(), String> {
    for (at, c) in line.char_indices() {
        let column = at + 1;
        if c == '\r' {
            return Err(format!(
                "carriage return at column {column} (lines end with a newline alone)"
            ));
        }
        if !c.is_ascii() {
            return Err(format!(
                "non-ASCII character U+{:04X} at column {column} (a policy is ASCII)",
                c as u32
            ));
        }
        if c.is_ascii_control() && c != '\t' {
            return Err(format!(
                "control character U+{:04X} at column {column}",
                c as u32
            ));
        }
    }
    Ok(())
}

/// Splits a line (without leading blanks; `base` of them were cut, for
/// columns) into tokens. A `"` may only open a value right after the
/// first `=` of its token, and close it at the end of the token.
fn tokenize(line: &str, base: usize) -> Result<Vec<Token<'_>>, String> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_blank(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut eq = None;
        let mut quoted = None;
        while i < b.len() && !is_blank(b[i]) {
            match b[i] {
                b'=' if eq.is_none() => eq = Some(i),
                b'"' if eq.is_some_and(|e| e + 1 == i) => {
                    let Some(len) = line[i + 1..].find('"') else {
                        return Err(format!("column {}: the quote is not closed", base + i + 1));
                    };
                    let close = i + 1 + len;
                    if b.get(close + 1).is_some_and(|&c| !is_blank(c)) {
                        return Err(format!(
                            "column {}: a closing quote must end its token",
                            base + close + 2
                        ));
                    }
                    quoted = Some((i + 1, close));
                    i = close + 1;
                    break;
                }
                b'"' => {
                    return Err(format!(
                        "column {}: a '\"' may only enclose a whole value (FIELD=\"...\")",
                        base + i + 1
                    ))
                }
                _ => {}
            }
            i += 1;
        }
        let pair = eq.map(|e| match quoted {
            Some((from, to)) => (&line[start..e], &line[from..to]),
            None => (&line[start..e], &line[e + 1..i]),
        });
        out.push(Token {
            raw: &line[start..i],
            pair,
        });
    }
    Ok(out)
}

impl Parser {
    fn line(&mut self, raw: &str, line: usize) -> Result<(), String> {
        check_chars(raw)?;
        let text = raw.trim_start_matches([' ', '\t']);
        if text.is_empty() || text.starts_with('#') {
            return Ok(());
        }
        let tokens = tokenize(text, raw.len() - text.len())?;
        let (first, args) = tokens.split_first().expect("a line with a token");
        let statement = match first.pair {
            None => first.raw,
            Some(_) => {
                return Err(format!(
                    "unknown statement {:?} (statements: {STATEMENTS}; a rule starts with include or exclude)",
                    first.raw
                ))
            }
        };
        let action = match statement {
            "include" => Some(Action::Include),
            "exclude" => Some(Action::Exclude),
            _ => None,
        };
        if let Some(action) = action {
            if self.policy.rules.len() >= MAX_RULES {
                return Err(format!("more than {MAX_RULES} rules"));
            }
            let conditions = conditions(args)?;
            self.policy.rules.push(Rule {
                action,
                conditions,
                line,
            });
            return Ok(());
        }
        let Some(index) = SETTINGS.iter().position(|s| *s == statement) else {
            return Err(format!(
                "unknown statement {statement:?} (statements: {STATEMENTS})"
            ));
        };
        if let Some(first) = self.seen[index] {
            return Err(format!("{statement:?} given twice (first on line {first})"));
        }
        self.seen[index] = Some(line);
        let p = &mut self.policy;
        match statement {
            "default" => {
                p.default = match one_word(statement, args, "include or exclude")? {
                    "include" => Action::Include,
                    "exclude" => Action::Exclude,
                    other => return Err(format!("default: {other:?} is not include or exclude")),
                }
            }
            "overflow" => {
                p.overflow = overflow(statement, one_word(statement, args, "drop or kill")?)?
            }
            "queue" => p.queue = queue(args)?,
            "rate" => p.rate = rate(args)?,
            "log" => p.log = log(args)?,
            "events" => p.events = events(args)?,
            _ => unreachable!("every setting is handled"),
        }
        Ok(())
    }
}

/// The single word argument of a statement.
fn one_word<'a>(statement: &str, args: &[Token<'a>], what: &str) -> Result<&'a str, String> {
    match args {
        [Token { raw, pair: None }] => Ok(raw),
        [] => Err(format!("{statement} takes {what}")),
        [_] => Err(format!("{statement} takes {what}, not {:?}", args[0].raw)),
        _ => Err(format!("{statement} takes one word: {what}")),
    }
}

fn overflow(what: &str, word: &str) -> Result<Overflow, String> {
    match word {
        "drop" => Ok(Overflow::Drop),
        "kill" => Ok(Overflow::Kill),
        other => Err(format!("{what}: {other:?} is not drop or kill")),
    }
}

/// The `KEY=VALUE` arguments of a statement, each key one of `keys` and
/// at most once; values non-empty.
fn settings<'a>(
    statement: &str,
    args: &[Token<'a>],
    keys: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for t in args {
        let Some((key, value)) = t.pair else {
            return Err(format!(
                "{statement}: {:?} is not KEY=VALUE (keys: {})",
                t.raw,
                keys.join(", ")
            ));
        };
        if !keys.contains(&key) {
            return Err(format!(
                "{statement}: unknown key {key:?} (keys: {})",
                keys.join(", ")
            ));
        }
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("{statement}: {key} given twice"));
        }
        if value.is_empty() {
            return Err(format!("{statement}: empty value for {key}"));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Decimal digits, no sign, that fit a u64.
fn decimal(what: &str, text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what}: {text:?} is not a number (decimal digits)"));
    }
    text.parse()
        .map_err(|_| format!("{what}: {text} is too large"))
}

/// A decimal in `1..=max`.
fn bounded(what: &str, text: &str, max: u64) -> Result<u64, String> {
    let n = decimal(what, text)?;
    if n == 0 || n > max {
        return Err(format!("{what} must be between 1 and {max}, not {n}"));
    }
    Ok(n)
}

fn queue(args: &[Token<'_>]) -> Result<QueueLimits, String> {
    let given = settings("queue", args, &["records", "bytes"])?;
    if given.is_empty() {
        return Err("queue takes records=N, bytes=N or both".into());
    }
    let mut q = QueueLimits::default();
    for (key, value) in given {
        match key {
            "records" => {
                q.records = bounded("queue records", value, MAX_QUEUE_RECORDS.into())? as u32
            }
            _ => {
                let (digits, shift) = match value.as_bytes().last() {
                    Some(b'K') => (&value[..value.len() - 1], 10),
                    Some(b'M') => (&value[..value.len() - 1], 20),
                    Some(b'G') => (&value[..value.len() - 1], 30),
                    _ => (value, 0),
                };
                let n = decimal("queue bytes", digits)?;
                let bytes = n.checked_mul(1 << shift).filter(|&b| b <= MAX_QUEUE_BYTES);
                match bytes {
                    Some(b) if b > 0 => q.bytes = b,
                    _ => {
                        return Err(format!(
                            "queue bytes must be between 1 and 1G ({MAX_QUEUE_BYTES}), not {value}"
                        ))
                    }
                }
            }
        }
    }
    Ok(q)
}

fn rate(args: &[Token<'_>]) -> Result<Option<RateQuota>, String> {
    if let [Token {
        raw: "off",
        pair: None,
    }] = args
    {
        return Ok(None);
    }
    let usage = "rate takes records=N per=Ns action=drop|kill, or off";
    if args.is_empty() {
        return Err(usage.into());
    }
    let given = settings("rate", args, &["records", "per", "action"])?;
    let get = |key: &str| {
        given
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("rate: {key}= is missing ({usage})"))
    };
    let records = bounded("rate records", get("records")?, u64::MAX)?;
    let per = get("per")?;
    let Some(secs) = per.strip_suffix('s') else {
        return Err(format!(
            "rate per: {per:?} needs its unit, seconds: per={per}s"
        ));
    };
    let per_secs = bounded("rate per", secs, MAX_RATE_SECS.into())? as u32;
    let action = overflow("rate action", get("action")?)?;
    Ok(Some(RateQuota {
        records,
        per_secs,
        action,
    }))
}

fn log(args: &[Token<'_>]) -> Result<Option<LogBudget>, String> {
    if let [Token {
        raw: "off",
        pair: None,
    }] = args
    {
        return Ok(None);
    }
    let given = settings("log", args, &["size-mib", "files"])?;
    if given.is_empty() {
        return Err("log takes size-mib=N, files=N or both, or off".into());
    }
    let mut budget = LogBudget::default();
    for (key, value) in given {
        match key {
            "size-mib" => budget.file_mib = bounded("log size-mib", value, MAX_LOG_FILE_MIB)?,
            _ => budget.files = bounded("log files", value, MAX_LOG_FILES.into())? as u32,
        }
    }
    Ok(Some(budget))
}

fn events(args: &[Token<'_>]) -> Result<Events, String> {
    let usage = "events takes exec, exit or both, or none";
    if let [Token {
        raw: "none",
        pair: None,
    }] = args
    {
        return Ok(Events::default());
    }
    if args.is_empty() {
        return Err(usage.into());
    }
    let mut e = Events::default();
    for t in args {
        let flag = match (t.raw, t.pair) {
            ("exec", None) => &mut e.exec,
            ("exit", None) => &mut e.exit,
            ("none", None) => return Err("events: none goes alone".into()),
            _ => return Err(format!("events: {:?} is not exec or exit ({usage})", t.raw)),
        };
        if *flag {
            return Err(format!("events: {} given twice", t.raw));
        }
        *flag = true;
    }
    Ok(e)
}

/// A rule's conditions.
fn conditions(args: &[Token<'_>]) -> Result<Vec<Condition>, String> {
    let mut out: Vec<Condition> = Vec::with_capacity(args.len());
    for t in args {
        let Some((name, value)) = t.pair else {
            return Err(format!("{:?} is not FIELD=VALUE (fields: {FIELDS})", t.raw));
        };
        if name.is_empty() {
            return Err(format!("{:?} has no field name (fields: {FIELDS})", t.raw));
        }
        let condition = match name {
            "type" => Condition::Type(
                list(name, value)?
                    .map(|t| record_type(t).map(str::to_owned))
                    .collect::<Result<_, _>>()?,
            ),
            "syscall" => {
                Condition::Syscall(list(name, value)?.map(syscall).collect::<Result<_, _>>()?)
            }
            "key" => Condition::Key(key(value)?.to_owned()),
            "success" => Condition::Success(match value {
                "yes" => true,
                "no" => false,
                "" => return Err("empty value for success (yes or no)".into()),
                other => return Err(format!("success: {other:?} is not yes or no")),
            }),
            "uid" => Condition::Uid(
                list(name, value)?
                    .map(|u| {
                        let n = decimal("uid", u)?;
                        u32::try_from(n).map_err(|_| format!("uid: {n} is too large"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "exe" => Condition::Exe(exe(value)?),
            "tag" => {
                if value.is_empty() {
                    return Err("empty value for tag (NAME or PREFIX:*)".into());
                }
                parse_pattern(value).map_err(|e| format!("tag: {e}"))?;
                Condition::Tag(value.to_owned())
            }
            other => return Err(format!("unknown field {other:?} (fields: {FIELDS})")),
        };
        if out.iter().any(|c| c.field() == name) {
            return Err(format!("field {name:?} given twice in one rule"));
        }
        out.push(condition);
    }
    Ok(out)
}

/// The comma-separated items of a value; none empty.
fn list<'a>(name: &str, value: &'a str) -> Result<impl Iterator<Item = &'a str>, String> {
    if value.is_empty() {
        return Err(format!("empty value for {name}"));
    }
    if value.split(',').any(str::is_empty) {
        return Err(format!("{name}: an empty item in {value:?}"));
    }
    Ok(value.split(','))
}

fn record_type(name: &str) -> Result<&str, String> {
    let ok = name.len() <= MAX_TYPE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "type: {name:?} is not a record type name (upper-case letters, digits and '_', \
             at most {MAX_TYPE_LEN}, e.g. SYSCALL)"
        ))
    }
}

fn syscall(item: &str) -> Result<u32, String> {
    if item.bytes().all(|b| b.is_ascii_digit()) {
        let n = decimal("syscall", item)?;
        return u32::try_from(n).map_err(|_| format!("syscall: {n} is too large"));
    }
    syscalls::number(item).ok_or_else(|| {
        format!("syscall: unknown x86_64 system call {item:?} (a name as `ausyscall x86_64 --dump` lists them, or a number)")
    })
}

fn key(value: &str) -> Result<&str, String> {
    if value.is_empty() {
        return Err("empty value for key".into());
    }
    if value.len() > MAX_KEY_LEN {
        return Err(format!(
            "key: {} characters, more than the {MAX_KEY_LEN} allowed",
            value.len()
        ));
    }
    Ok(value)
}

fn exe(value: &str) -> Result<ExePattern, String> {
    if value.is_empty() {
        return Err("empty value for exe (a path, or a prefix ending in '*')".into());
    }
    if !value.starts_with('/') {
        return Err(format!("exe: {value:?} does not start with '/'"));
    }
    if value.len() > MAX_EXE_LEN {
        return Err(format!(
            "exe: {} characters, more than the {MAX_EXE_LEN} allowed",
            value.len()
        ));
    }
    match value.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => Ok(ExePattern::Prefix(prefix.to_owned())),
        None if !value.contains('*') => Ok(ExePattern::Exact(value.to_owned())),
        _ => Err(format!(
            "exe: {value:?} has a '*' before its end (only a final '*' is allowed: a prefix)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_untrusted;

    fn parse(text: &str) -> Policy {
        Policy::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn error(text: &str) -> PolicyError {
        match Policy::parse(text) {
            Ok(p) => panic!("{text:?} parsed: {p:?}"),
            Err(e) => e,
        }
    }

    /// Asserts the error's line and that its message contains `part`.
    fn fails(text: &str, line: usize, part: &str) {
        let e = error(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(part), "{text:?}: {e} (wanted {part:?})");
        assert_eq!(e.to_string(), format!("line {line}: {}", e.message));
    }

    fn rule(action: Action, conditions: Vec<Condition>) -> Rule {
        Rule {
            action,
            conditions,
            line: 0,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Parses, and checks the canonical text parses back the same (and is
    /// a fixed point).
    fn round_trip(p: &Policy) {
        let text = p.to_text();
        let again = Policy::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(&again, p, "{text}");
        assert_eq!(again.to_text(), text);
    }

    #[test]
    fn defaults() {
        let p = Policy::default();
        assert!(p.rules.is_empty());
        assert_eq!(p.default, Action::Include);
        assert_eq!(
            p.queue,
            QueueLimits {
                records: 8192,
                bytes: 8 << 20
            }
        );
        assert_eq!(p.overflow, Overflow::Drop);
        assert_eq!(p.rate, None);
        assert_eq!(
            p.log,
            Some(LogBudget {
                file_mib: 8,
                files: 4
            })
        );
        assert_eq!(
            p.events,
            Events {
                exec: false,
                exit: false
            }
        );
        for text in ["", "\n", "# nothing\n\n   \t\n", "  # indented comment"] {
            assert_eq!(parse(text), p, "{text:?}");
        }
        assert_eq!(p.to_text(), "");
        assert!(p.takes(&[("SYSCALL", "syscall=59")]));
        assert!(p.takes(&[]));
    }

    #[test]
    fn every_setting_parses() {
        let p = parse(
            "# a container's policy\n\
             default exclude\n\
             queue records=100 bytes=4096\n\
             overflow kill\n\
             rate records=1000 per=10s action=kill\n\
             log size-mib=16 files=2\n\
             events exec exit\n",
        );
        assert_eq!(p.default, Action::Exclude);
        assert_eq!(
            p.queue,
            QueueLimits {
                records: 100,
                bytes: 4096
            }
        );
        assert_eq!(p.overflow, Overflow::Kill);
        assert_eq!(
            p.rate,
            Some(RateQuota {
                records: 1000,
                per_secs: 10,
                action: Overflow::Kill
            })
        );
        assert_eq!(
            p.log,
            Some(LogBudget {
                file_mib: 16,
                files: 2
            })
        );
        assert_eq!(
            p.events,
            Events {
                exec: true,
                exit: true
            }
        );
        assert_eq!(
            p.to_text(),
            "queue records=100 bytes=4K\noverflow kill\nrate records=1000 per=10s action=kill\n\
             log size-mib=16 files=2\nevents exec exit\ndefault exclude\n"
        );
        round_trip(&p);
    }

    #[test]
    fn settings_take_their_parts_alone_and_in_any_order() {
        assert_eq!(parse("queue records=5").queue.bytes, 8 << 20);
        assert_eq!(parse("queue bytes=5").queue.records, 8192);
        assert_eq!(parse("queue bytes=5 records=7").queue.records, 7);
        assert_eq!(parse("queue bytes=3K").queue.bytes, 3 << 10);
        assert_eq!(parse("queue bytes=3M").queue.bytes, 3 << 20);
        assert_eq!(parse("queue bytes=1G").queue.bytes, 1 << 30);
        assert_eq!(parse("queue bytes=1073741824").queue.bytes, 1 << 30);
        assert_eq!(parse("queue records=1000000").queue.records, 1_000_000);
        assert_eq!(parse("queue records=\"12\"").queue.records, 12);
        assert_eq!(parse("overflow drop").overflow, Overflow::Drop);
        assert_eq!(parse("default include").default, Action::Include);
        assert_eq!(parse("rate off").rate, None);
        assert_eq!(
            parse("rate action=drop per=3600s records=1").rate,
            Some(RateQuota {
                records: 1,
                per_secs: 3600,
                action: Overflow::Drop
            })
        );
        assert_eq!(parse("log off").log, None);
        assert_eq!(
            parse("log files=100").log,
            Some(LogBudget {
                file_mib: 8,
                files: 100
            })
        );
        assert_eq!(
            parse("log size-mib=1024").log,
            Some(LogBudget {
                file_mib: 1024,
                files: 4
            })
        );
        assert_eq!(
            parse("events exit").events,
            Events {
                exec: false,
                exit: true
            }
        );
        assert_eq!(
            parse("events exit exec").events,
            Events {
                exec: true,
                exit: true
            }
        );
        assert_eq!(parse("events none").events, Events::default());
        // Blanks: tabs, several, leading, trailing.
        assert_eq!(parse("\t queue \t records=9\t \n").queue.records, 9);
    }

    #[test]
    fn every_field_parses() {
        let p = parse(
            "include type=SYSCALL,PTAGS_EXEC syscall=execve,59,322 key=watch-etc success=yes \
             uid=0,1000 exe=/usr/bin/ssh tag=vendor:*\n\
             exclude exe=/usr/bin/* success=no key=\"two words\" tag=\"a b\"\n\
             include\n\
             exclude exe=/ tag=role uid=4294967295 syscall=4294967295 type=X\n",
        );
        assert_eq!(
            p.rules,
            vec![
                rule(
                    Action::Include,
                    vec![
                        Condition::Type(strings(&["SYSCALL", "PTAGS_EXEC"])),
                        Condition::Syscall(vec![59, 59, 322]),
                        Condition::Key("watch-etc".into()),
                        Condition::Success(true),
                        Condition::Uid(vec![0, 1000]),
                        Condition::Exe(ExePattern::Exact("/usr/bin/ssh".into())),
                        Condition::Tag("vendor:*".into()),
                    ]
                ),
                rule(
                    Action::Exclude,
                    vec![
                        Condition::Exe(ExePattern::Prefix("/usr/bin/".into())),
                        Condition::Success(false),
                        Condition::Key("two words".into()),
                        Condition::Tag("a b".into()),
                    ]
                ),
                rule(Action::Include, vec![]),
                rule(
                    Action::Exclude,
                    vec![
                        Condition::Exe(ExePattern::Exact("/".into())),
                        Condition::Tag("role".into()),
                        Condition::Uid(vec![u32::MAX]),
                        Condition::Syscall(vec![u32::MAX]),
                        Condition::Type(strings(&["X"])),
                    ]
                ),
            ]
        );
        assert_eq!(
            p.rules.iter().map(|r| r.line).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(
            p.to_text(),
            "include type=SYSCALL,PTAGS_EXEC syscall=execve,execve,execveat key=watch-etc \
             success=yes uid=0,1000 exe=/usr/bin/ssh tag=vendor:*\n\
             exclude exe=/usr/bin/* success=no key=\"two words\" tag=\"a b\"\n\
             include\n\
             exclude exe=/ tag=role uid=4294967295 syscall=4294967295 type=X\n"
        );
        round_trip(&p);
    }

    #[test]
    fn values_may_be_quoted_and_hold_what_tokens_cannot() {
        let p = parse("include key=\"a=b #c\" exe=\"/opt/my app/*\" type=\"SYSCALL\"\n");
        assert_eq!(
            p.rules[0].conditions,
            [
                Condition::Key("a=b #c".into()),
                Condition::Exe(ExePattern::Prefix("/opt/my app/".into())),
                Condition::Type(strings(&["SYSCALL"])),
            ]
        );
        // `#` and `=` need no quotes; a blank does.
        let p = parse("include key=a=b#c\n");
        assert_eq!(p.rules[0].conditions, [Condition::Key("a=b#c".into())]);
        round_trip(&p);
        let p = parse("include key=\"tab\there\"\n");
        assert_eq!(p.rules[0].conditions, [Condition::Key("tab\there".into())]);
        round_trip(&p);
    }

    #[test]
    fn rule_lines_are_where_they_were_written_but_not_part_of_equality() {
        let p = parse("# c\n\nexclude type=A\n  include uid=1\n");
        assert_eq!(p.rules[0].line, 3);
        assert_eq!(p.rules[1].line, 4);
        let again = parse(&p.to_text());
        assert_eq!(again.rules[0].line, 1);
        assert_eq!(again, p);
    }

    #[test]
    fn many_policies_round_trip() {
        for text in [
            "",
            "default exclude",
            "queue records=1",
            "queue bytes=1",
            "queue bytes=1025",
            "queue bytes=2048",
            "queue bytes=1024K",
            "queue records=8192 bytes=8M",
            "overflow kill",
            "rate records=18446744073709551615 per=1s action=drop",
            "log off",
            "log files=4",
            "log size-mib=1 files=1",
            "events exec",
            "events none",
            "include",
            "exclude",
            "include syscall=0,1,99999",
            "include tag=ptags:add",
            "include tag=a:b:*",
            "exclude exe=\"/x y\"",
            "include type=A\ninclude type=A\ndefault exclude",
            "exclude success=no\ninclude key=k uid=0\nrate off\nlog off\nevents exit exec",
        ] {
            round_trip(&parse(text));
        }
    }

    #[test]
    fn canonical_text_leaves_defaults_out() {
        let text = "queue records=8192 bytes=8388608\noverflow drop\nrate off\n\
                    log size-mib=8 files=4\nevents none\ndefault include\n";
        assert_eq!(parse(text), Policy::default());
        assert_eq!(parse(text).to_text(), "");
        assert_eq!(parse("log files=5 size-mib=8").to_text(), "log files=5\n");
        assert_eq!(parse("queue bytes=2M").to_text(), "queue bytes=2M\n");
        assert_eq!(parse("queue bytes=1536").to_text(), "queue bytes=1536\n");
    }

    #[test]
    fn syscalls_are_written_by_number_when_names_would_not_fit() {
        // 256 rules of `include syscall=0,0,...`: as names ("read") the
        // text would be longer than the limit.
        let items = vec!["0"; 120].join(",");
        let line = format!("include syscall={items}\n");
        let text = line.repeat(256);
        assert!(text.len() <= MAX_POLICY_BYTES);
        let p = parse(&text);
        let canonical = p.to_text();
        assert_eq!(canonical, text);
        assert_eq!(parse(&canonical), p);
        // A few rules: names.
        assert!(parse(&line)
            .to_text()
            .starts_with("include syscall=read,read"));
    }

    #[test]
    fn the_size_limit_is_line_0_and_ignores_a_final_newline() {
        let fits = format!("#{}", "x".repeat(MAX_POLICY_BYTES - 1));
        assert_eq!(parse(&fits), Policy::default());
        assert_eq!(parse(&format!("{fits}\n")), Policy::default());
        fails(
            &format!("{fits}\n\n"),
            0,
            "65537 bytes long, more than the 65536",
        );
        fails(&format!("{fits}x"), 0, "more than the 65536 allowed");
    }

    #[test]
    fn at_most_max_rules() {
        let text = "include\n".repeat(MAX_RULES);
        assert_eq!(parse(&text).rules.len(), MAX_RULES);
        fails(
            &format!("# x\n{text}exclude\n"),
            MAX_RULES + 2,
            "more than 256 rules",
        );
    }

    #[test]
    fn statement_errors() {
        fails("frobnicate", 1, "unknown statement \"frobnicate\" (statements: include, exclude, default, queue, overflow, rate, log, events)");
        fails("\n\nInclude", 3, "unknown statement \"Include\"");
        fails("type=SYSCALL", 1, "a rule starts with include or exclude");
        fails("include # a comment", 1, "\"#\" is not FIELD=VALUE");
        fails("default", 1, "default takes include or exclude");
        fails("default maybe", 1, "\"maybe\" is not include or exclude");
        fails("default include exclude", 1, "takes one word");
        fails("default x=y", 1, "not \"x=y\"");
        fails(
            "default exclude\n# again\ndefault include",
            3,
            "\"default\" given twice (first on line 1)",
        );
        fails("overflow", 1, "overflow takes drop or kill");
        fails("overflow block", 1, "\"block\" is not drop or kill");
        fails(
            "overflow drop\noverflow kill",
            2,
            "\"overflow\" given twice (first on line 1)",
        );
        fails("queue", 1, "queue takes records=N, bytes=N or both");
        fails(
            "queue records=0",
            1,
            "queue records must be between 1 and 1000000, not 0",
        );
        fails("queue records=1000001", 1, "not 1000001");
        fails("queue records=-1", 1, "\"-1\" is not a number");
        fails("queue records=+1", 1, "\"+1\" is not a number");
        fails("queue records=1e3", 1, "\"1e3\" is not a number");
        fails("queue records=99999999999999999999999", 1, "too large");
        fails("queue records=", 1, "queue: empty value for records");
        fails("queue records=\"\"", 1, "queue: empty value for records");
        fails("queue records=1 records=2", 1, "queue: records given twice");
        fails(
            "queue size=1",
            1,
            "queue: unknown key \"size\" (keys: records, bytes)",
        );
        fails("queue 100", 1, "queue: \"100\" is not KEY=VALUE");
        fails("queue bytes=0", 1, "queue bytes must be between 1 and 1G");
        fails("queue bytes=0K", 1, "queue bytes must be between 1 and 1G");
        fails("queue bytes=2G", 1, "not 2G");
        fails("queue bytes=1073741825", 1, "not 1073741825");
        fails("queue bytes=1k", 1, "\"1k\" is not a number");
        fails("queue bytes=K", 1, "\"\" is not a number");
        fails("queue bytes=1T", 1, "\"1T\" is not a number");
        fails("queue bytes=99999999999999999999G", 1, "too large");
        fails("queue bytes=9999999999999999G", 1, "between 1 and 1G");
        fails("queue records=1\nqueue bytes=1", 2, "\"queue\" given twice");
        fails(
            "rate",
            1,
            "rate takes records=N per=Ns action=drop|kill, or off",
        );
        fails("rate records=10 per=1s", 1, "rate: action= is missing");
        fails("rate per=1s action=drop", 1, "rate: records= is missing");
        fails("rate records=1 action=drop", 1, "rate: per= is missing");
        fails(
            "rate records=0 per=1s action=drop",
            1,
            "rate records must be between 1 and",
        );
        fails(
            "rate records=1 per=10 action=drop",
            1,
            "needs its unit, seconds: per=10s",
        );
        fails(
            "rate records=1 per=0s action=drop",
            1,
            "rate per must be between 1 and 3600, not 0",
        );
        fails("rate records=1 per=3601s action=drop", 1, "not 3601");
        fails("rate records=1 per=1m action=drop", 1, "needs its unit");
        fails(
            "rate records=1 per=s action=drop",
            1,
            "\"\" is not a number",
        );
        fails(
            "rate records=1 per=1s action=block",
            1,
            "rate action: \"block\" is not drop or kill",
        );
        fails(
            "rate records=1 per=1s action=drop burst=2",
            1,
            "unknown key \"burst\"",
        );
        fails("rate off off", 1, "rate: \"off\" is not KEY=VALUE");
        fails("rate off\nrate off", 2, "\"rate\" given twice");
        fails("log", 1, "log takes size-mib=N, files=N or both, or off");
        fails(
            "log size-mib=0",
            1,
            "log size-mib must be between 1 and 1024, not 0",
        );
        fails("log size-mib=1025", 1, "not 1025");
        fails(
            "log files=0",
            1,
            "log files must be between 1 and 100, not 0",
        );
        fails("log files=101", 1, "not 101");
        fails(
            "log size=1",
            1,
            "unknown key \"size\" (keys: size-mib, files)",
        );
        fails("log off files=2", 1, "log: \"off\" is not KEY=VALUE");
        fails("log off\nlog files=1", 2, "\"log\" given twice");
        fails("events", 1, "events takes exec, exit or both, or none");
        fails("events fork", 1, "events: \"fork\" is not exec or exit");
        fails(
            "events exec=yes",
            1,
            "events: \"exec=yes\" is not exec or exit",
        );
        fails("events exec exec", 1, "events: exec given twice");
        fails("events exec none", 1, "events: none goes alone");
        fails("events none\nevents exec", 2, "\"events\" given twice");
    }

    #[test]
    fn field_errors() {
        fails(
            "include\n\ninclude exe2=/bin/sh",
            3,
            "unknown field \"exe2\" (fields: type, syscall, key, success, uid, exe, tag)",
        );
        fails(
            "include SYSCALL",
            1,
            "\"SYSCALL\" is not FIELD=VALUE (fields:",
        );
        fails("include =x", 1, "\"=x\" has no field name");
        fails(
            "include uid=1 uid=2",
            1,
            "field \"uid\" given twice in one rule",
        );
        fails(
            "include type=A key=k type=B",
            1,
            "field \"type\" given twice",
        );
        fails("include type=", 1, "empty value for type");
        fails("include type=A,,B", 1, "type: an empty item in \"A,,B\"");
        fails("include type=A,", 1, "an empty item");
        fails(
            "include type=syscall",
            1,
            "type: \"syscall\" is not a record type name",
        );
        fails("include type=A-B", 1, "not a record type name");
        fails(&format!("include type={}", "A".repeat(65)), 1, "at most 64");
        fails("include syscall=", 1, "empty value for syscall");
        fails(
            "include syscall=frob",
            1,
            "syscall: unknown x86_64 system call \"frob\"",
        );
        fails("include syscall=EXECVE", 1, "unknown x86_64 system call");
        fails("include syscall=-1", 1, "unknown x86_64 system call \"-1\"");
        fails(
            "include syscall=4294967296",
            1,
            "syscall: 4294967296 is too large",
        );
        fails("include key=", 1, "empty value for key");
        fails("include key=\"\"", 1, "empty value for key");
        fails(
            &format!("include key={}", "k".repeat(257)),
            1,
            "257 characters, more than the 256",
        );
        fails("include success=", 1, "empty value for success");
        fails(
            "include success=true",
            1,
            "success: \"true\" is not yes or no",
        );
        fails("include uid=", 1, "empty value for uid");
        fails("include uid=root", 1, "uid: \"root\" is not a number");
        fails("include uid=4294967296", 1, "uid: 4294967296 is too large");
        fails("include uid=0,-1", 1, "uid: \"-1\" is not a number");
        fails("include exe=", 1, "empty value for exe");
        fails(
            "include exe=bin/sh",
            1,
            "exe: \"bin/sh\" does not start with '/'",
        );
        fails("include exe=*", 1, "does not start with '/'");
        fails("include exe=/usr/*/sh", 1, "has a '*' before its end");
        fails("include exe=/usr/**", 1, "has a '*' before its end");
        fails(
            &format!("include exe=/{}", "a".repeat(4096)),
            1,
            "4097 characters, more than the 4096",
        );
        fails("include tag=", 1, "empty value for tag");
        fails("include tag=a=b", 1, "tag: \"a=b\" is not a tag pattern");
        fails("include tag=a*", 1, "tag: \"a*\" is not a tag pattern");
        fails("include tag=@a", 1, "is not a tag pattern");
        fails("include tag=a:", 1, "is not a tag pattern");
        fails("include tag=ptags:x", 1, "is not a tag pattern");
    }

    #[test]
    fn character_and_quote_errors() {
        fails(
            "include key=caf\u{e9}",
            1,
            "non-ASCII character U+00E9 at column 16 (a policy is ASCII)",
        );
        fails(
            "# comments too: \u{e9}",
            1,
            "non-ASCII character U+00E9 at column 17",
        );
        fails("include\r\n", 1, "carriage return at column 8");
        fails(
            "include\ninclude key=a\u{1}b",
            2,
            "control character U+0001 at column 14",
        );
        fails("include key=\u{7f}", 1, "control character U+007F");
        fails("include\0", 1, "control character U+0000 at column 8");
        fails("include key=\"a b", 1, "column 13: the quote is not closed");
        fails(
            "include key=\"a\"b",
            1,
            "column 16: a closing quote must end its token",
        );
        fails(
            "include key=a\"b\"",
            1,
            "column 14: a '\"' may only enclose a whole value",
        );
        fails("include \"key=a\"", 1, "column 9: a '\"' may only enclose");
        fails(
            "include key=a=\"b\"",
            1,
            "column 15: a '\"' may only enclose",
        );
        fails("  include key=a\"", 1, "column 16");
        fails("\"include\"", 1, "column 1");
    }

    // Events as the kernel and the daemon write them.

    const SYSCALL: &str = "arch=c000003e syscall=59 success=yes exit=0 a0=55d a1=55e a2=55f \
        a3=0 items=2 ppid=100 pid=101 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 \
        fsgid=0 tty=pts0 ses=3 comm=\"cat\" exe=\"/usr/bin/cat\" subj=unconfined key=\"watch-etc\"";
    const EXECVE: &str = "argc=2 a0=\"cat\" a1=\"/etc/passwd\"";
    const CONTAINER_ID: &str = "contid=7";

    fn exec_event() -> [(&'static str, &'static str); 3] {
        [
            ("SYSCALL", SYSCALL),
            ("EXECVE", EXECVE),
            ("CONTAINER_ID", CONTAINER_ID),
        ]
    }

    /// A `PTAGS_OP` body as the daemon's `records::tag_op` writes it.
    fn tag_op(text: &str, res: &str) -> String {
        format!(
            "op=write opid=42 contid=7 text={} pid=40 uid=1000 auid=1000 ses=3 comm=\"sh\" res={res}",
            encode_untrusted(text.as_bytes())
        )
    }

    fn takes(policy: &str, event: &[(&str, &str)]) -> bool {
        parse(policy).takes(event)
    }

    /// Whether `exclude COND` drops the event (the condition holds).
    fn holds(condition: &str, event: &[(&str, &str)]) -> bool {
        !takes(&format!("exclude {condition}"), event)
    }

    #[test]
    fn type_conditions() {
        let e = exec_event();
        assert!(holds("type=SYSCALL", &e));
        assert!(holds("type=PATH,EXECVE", &e));
        assert!(holds("type=CONTAINER_ID", &e));
        assert!(!holds("type=PATH", &e));
        assert!(!holds("type=SYSCAL", &e));
        assert!(!holds("type=SYSCALL", &[]));
    }

    #[test]
    fn syscall_conditions() {
        let e = exec_event();
        assert!(holds("syscall=execve", &e));
        assert!(holds("syscall=59", &e));
        assert!(holds("syscall=openat,execve", &e));
        assert!(!holds("syscall=execveat", &e));
        assert!(!holds("syscall=0", &e));
        // Another architecture's numbers are not x86_64's.
        let i386 = [("SYSCALL", "arch=40000003 syscall=59 success=yes")];
        assert!(!holds("syscall=59", &i386));
        // A record with no arch (SECCOMP has one; a user record may not).
        assert!(holds("syscall=59", &[("X", "syscall=59")]));
        assert!(!holds("syscall=59", &[("X", "syscall=059x")]));
    }

    #[test]
    fn key_conditions() {
        let e = exec_event();
        assert!(holds("key=watch-etc", &e));
        assert!(holds("key=\"watch-etc\"", &e));
        assert!(!holds("key=watch", &e));
        assert!(!holds("key=watch-etc2", &e));
        let null = [("SYSCALL", "arch=c000003e syscall=2 key=(null)")];
        assert!(!holds("key=(null)", &null));
        // A key with a blank is hex, as the kernel writes it.
        let hex = format!("syscall=2 key={}", encode_untrusted(b"two words"));
        assert!(holds("key=\"two words\"", &[("SYSCALL", &hex)]));
        // auditctl's several keys of one rule, joined with \x01.
        let multi = format!("syscall=2 key={}", encode_untrusted(b"k1\x01k2"));
        assert!(holds("key=k1", &[("SYSCALL", &multi)]));
        assert!(holds("key=k2", &[("SYSCALL", &multi)]));
        assert!(!holds("key=k", &[("SYSCALL", &multi)]));
    }

    #[test]
    fn success_conditions() {
        let e = exec_event();
        assert!(holds("success=yes", &e));
        assert!(!holds("success=no", &e));
        let failed = [("SYSCALL", "arch=c000003e syscall=59 success=no exit=-2")];
        assert!(holds("success=no", &failed));
        assert!(!holds("success=yes", &failed));
        let ok = tag_op("+a\n", "success");
        let bad = tag_op("+a\n", "failed errno=EPERM");
        assert!(holds("success=yes", &[("PTAGS_OP", &ok)]));
        assert!(holds("success=no", &[("PTAGS_OP", &bad)]));
        assert!(!holds("success=yes", &[("PTAGS_OP", &bad)]));
        // Kernel config records: res=1/0.
        let config = [(
            "CONFIG_CHANGE",
            "auid=0 ses=1 op=add_rule key=(null) list=4 res=1",
        )];
        assert!(holds("success=yes", &config));
        assert!(!holds("success=no", &config));
        assert!(holds(
            "success=no",
            &[("CONFIG_CHANGE", "op=add_rule res=0")]
        ));
        // A user record's result, inside msg='...'.
        let user = "pid=5 uid=0 auid=0 ses=1 msg='op=PAM:session_open acct=\"root\" \
                    exe=\"/usr/sbin/sshd\" hostname=? addr=? terminal=ssh res=success'";
        assert!(holds("success=yes", &[("USER_START", user)]));
        assert!(!holds("success=no", &[("USER_START", user)]));
        // No result at all.
        assert!(!holds("success=yes", &[("CONTAINER_ID", CONTAINER_ID)]));
        assert!(!holds("success=no", &[("CONTAINER_ID", CONTAINER_ID)]));
    }

    #[test]
    fn uid_conditions() {
        let e = exec_event();
        assert!(holds("uid=0", &e));
        assert!(holds("uid=1000,0", &e));
        assert!(!holds("uid=1000", &e), "auid is not uid");
        assert!(!holds("uid=1", &[("X", "uid=x")]));
    }

    #[test]
    fn exe_conditions() {
        let e = exec_event();
        assert!(holds("exe=/usr/bin/cat", &e));
        assert!(holds("exe=/usr/bin/*", &e));
        assert!(holds("exe=/usr/bin/cat*", &e));
        assert!(holds("exe=/*", &e));
        assert!(!holds("exe=/usr/bin/ca", &e));
        assert!(!holds("exe=/usr/bin/catx", &e));
        assert!(!holds("exe=/usr/sbin/*", &e));
        // The kernel hex-encodes a path with a blank; either case of hex.
        let hex = format!("syscall=59 exe={}", encode_untrusted(b"/opt/my app/run"));
        let event = [("SYSCALL", hex.as_str())];
        assert!(holds("exe=\"/opt/my app/run\"", &event));
        assert!(holds("exe=\"/opt/my app/*\"", &event));
        assert!(holds("exe=/opt/*", &event));
        assert!(!holds("exe=/opt/my", &event));
        assert!(!holds("exe=\"/opt/my app/run2\"", &event));
        let lower = hex.to_lowercase();
        assert!(holds("exe=/opt/*", &[("SYSCALL", &lower)]));
        // Bad hex, odd length, (null): nothing.
        for bad in [
            "exe=6F7074",
            "exe=2F6F707",
            "exe=2F6G",
            "exe=(null)",
            "exe=\"/opt",
        ] {
            assert!(!holds("exe=/*", &[("SYSCALL", bad)]), "{bad}");
        }
        assert!(holds("exe=/op*", &[("SYSCALL", "exe=2F6F7074")]));
    }

    #[test]
    fn tag_conditions() {
        let add = tag_op("+vendor:a\n", "success");
        let event = [("PTAGS_OP", add.as_str()), ("CONTAINER_ID", "contid=7")];
        assert!(add.contains("text=2B76656E646F723A610A "), "{add}");
        assert!(holds("tag=vendor:a", &event));
        assert!(holds("tag=vendor:*", &event));
        assert!(!holds("tag=vendor", &event));
        assert!(!holds("tag=vendor:b", &event));
        assert!(!holds("tag=other:*", &event));
        // Every operator, the keep marker, values.
        for (text, pattern) in [
            ("+@keep:me\n", "keep:me"),
            ("-gone\n", "gone"),
            ("-@unkept\n", "unkept"),
            ("!role=web\n", "role"),
            ("!role=\n", "role"),
            ("?asked\n", "asked"),
            ("# c\n+a\n+b:c\n", "b:c"),
            ("+legacy=old-style\n", "legacy"),
        ] {
            let body = tag_op(text, "success");
            assert!(
                holds(&format!("tag={pattern}"), &[("PTAGS_OP", &body)]),
                "{text:?}"
            );
            assert!(!holds("tag=zzz", &[("PTAGS_OP", &body)]), "{text:?}");
        }
        // Selectors that can name a matching tag count.
        let remove_all = tag_op("-build:*\n", "success");
        assert!(holds("tag=build:x", &[("PTAGS_OP", &remove_all)]));
        assert!(holds("tag=build:*", &[("PTAGS_OP", &remove_all)]));
        assert!(!holds("tag=other", &[("PTAGS_OP", &remove_all)]));
        let everything = tag_op("-\n", "success");
        assert!(holds("tag=anything", &[("PTAGS_OP", &everything)]));
        // A quoted text (as an old trail or a hand-written test may hold).
        let quoted = "op=write opid=1 text=\"+q\" res=success";
        assert!(
            !holds("tag=q", &[("PTAGS_OP", quoted)]),
            "no newline: no line"
        );
        // Only PTAGS_OP records; a line cut short is skipped.
        assert!(!holds("tag=vendor:a", &[("PTAGS_INTENT", add.as_str())]));
        let cut = tag_op("+a\n+vendor:ab", "success");
        assert!(holds("tag=a", &[("PTAGS_OP", &cut)]));
        assert!(!holds("tag=vendor:*", &[("PTAGS_OP", &cut)]));
        assert!(!holds("tag=a", &exec_event()));
    }

    #[test]
    fn conditions_of_a_rule_may_hold_on_different_records() {
        let e = exec_event();
        assert!(holds(
            "type=CONTAINER_ID syscall=execve key=watch-etc uid=0",
            &e
        ));
        assert!(!holds("type=CONTAINER_ID syscall=execve uid=5", &e));
        let op = tag_op("+a\n", "success");
        let mixed = [("SYSCALL", SYSCALL), ("PTAGS_OP", op.as_str())];
        assert!(holds("tag=a exe=/usr/bin/cat success=yes uid=1000", &mixed));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let e = exec_event();
        let policy = "exclude exe=/usr/bin/cat\ninclude type=SYSCALL\n";
        assert!(!takes(policy, &e));
        let policy = "include type=SYSCALL\nexclude exe=/usr/bin/cat\n";
        assert!(takes(policy, &e));
        let policy = "exclude type=PATH\ninclude key=watch-etc\nexclude\n";
        assert!(takes(policy, &e));
        assert!(!takes(policy, &[("PATH", "name=\"/etc\"")]));
        assert!(!takes(policy, &[("CWD", "cwd=\"/\"")]));
    }

    #[test]
    fn default_exclude_takes_only_what_a_rule_includes() {
        let policy =
            parse("default exclude\ninclude type=PTAGS_OP,CONTAINER_OP\ninclude key=watch-etc\n");
        assert!(policy.takes(&exec_event()));
        let op = tag_op("+a\n", "success");
        assert!(policy.takes(&[("PTAGS_OP", &op)]));
        assert!(!policy.takes(&[("SYSCALL", "arch=c000003e syscall=2 key=(null)")]));
        assert!(!policy.takes(&[]));
        assert!(!parse("default exclude").takes(&exec_event()));
        assert!(parse("default exclude\ninclude").takes(&[]));
    }

    #[test]
    fn hand_built_policies_round_trip() {
        let p = Policy {
            rules: vec![
                rule(
                    Action::Exclude,
                    vec![
                        Condition::Tag("x y:*".into()),
                        Condition::Exe(ExePattern::Prefix("/a b".into())),
                    ],
                ),
                rule(
                    Action::Include,
                    vec![Condition::Syscall(vec![0, 1_000_000])],
                ),
            ],
            default: Action::Exclude,
            queue: QueueLimits {
                records: 1,
                bytes: 3 << 30 >> 2,
            },
            overflow: Overflow::Kill,
            rate: Some(RateQuota {
                records: 7,
                per_secs: 60,
                action: Overflow::Drop,
            }),
            log: None,
            events: Events {
                exec: true,
                exit: false,
            },
        };
        round_trip(&p);
        assert_eq!(
            p.to_text(),
            "queue records=1 bytes=768M\noverflow kill\nrate records=7 per=60s action=drop\n\
             log off\nevents exec\nexclude tag=\"x y:*\" exe=\"/a b*\"\n\
             include syscall=read,1000000\ndefault exclude\n"
        );
    }

    mod properties {
        use super::super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn action() -> impl Strategy<Value = Action> {
            prop_oneof![Just(Action::Include), Just(Action::Exclude)]
        }

        fn overflow() -> impl Strategy<Value = Overflow> {
            prop_oneof![Just(Overflow::Drop), Just(Overflow::Kill)]
        }

        fn condition() -> impl Strategy<Value = Condition> {
            let known = proptest::sample::select(syscalls::X86_64).prop_map(|(_, n)| n);
            prop_oneof![
                vec("[A-Z0-9_]{1,12}", 1..4).prop_map(Condition::Type),
                vec(prop_oneof![known, any::<u32>()], 1..4).prop_map(Condition::Syscall),
                "[ -!#-~]{1,30}".prop_map(Condition::Key),
                any::<bool>().prop_map(Condition::Success),
                vec(any::<u32>(), 1..4).prop_map(Condition::Uid),
                ("/[ -!#-)+-~\t]{0,20}", any::<bool>()).prop_map(|(path, prefix)| {
                    Condition::Exe(if prefix {
                        ExePattern::Prefix(path)
                    } else {
                        ExePattern::Exact(path)
                    })
                }),
                ("[a-z][a-z0-9 ._-]{0,8}(:[a-z0-9]{1,4}){0,2}", any::<bool>())
                    .prop_filter("a tag pattern", |(name, _)| !name.starts_with("ptags"))
                    .prop_map(|(name, glob)| {
                        Condition::Tag(if glob { format!("{name}:*") } else { name })
                    }),
            ]
        }

        fn rule() -> impl Strategy<Value = Rule> {
            (action(), vec(condition(), 0..5)).prop_map(|(action, mut conditions)| {
                let mut seen = Vec::new();
                conditions.retain(|c| {
                    let fresh = !seen.contains(&c.field());
                    seen.push(c.field());
                    fresh
                });
                Rule {
                    action,
                    conditions,
                    line: 0,
                }
            })
        }

        fn policy() -> impl Strategy<Value = Policy> {
            (
                vec(rule(), 0..8),
                action(),
                (1..=MAX_QUEUE_RECORDS, 1..=MAX_QUEUE_BYTES),
                overflow(),
                proptest::option::of((1..=u64::MAX, 1..=MAX_RATE_SECS, overflow())),
                proptest::option::of((1..=MAX_LOG_FILE_MIB, 1..=MAX_LOG_FILES)),
                (any::<bool>(), any::<bool>()),
            )
                .prop_map(
                    |(rules, default, (records, bytes), overflow, rate, log, (exec, exit))| {
                        Policy {
                            rules,
                            default,
                            queue: QueueLimits { records, bytes },
                            overflow,
                            rate: rate.map(|(records, per_secs, action)| RateQuota {
                                records,
                                per_secs,
                                action,
                            }),
                            log: log.map(|(file_mib, files)| LogBudget { file_mib, files }),
                            events: Events { exec, exit },
                        }
                    },
                )
        }

        proptest! {
            #[test]
            fn canonical_text_parses_back(p in policy()) {
                let text = p.to_text();
                let again = Policy::parse(&text);
                prop_assert_eq!(again.as_ref(), Ok(&p), "{}", text);
                prop_assert_eq!(again.unwrap().to_text(), text);
            }

            #[test]
            fn any_text_parses_or_names_a_line(text in "[ -~\t\n\u{e9}\r]{0,200}") {
                check_text(&text)?;
            }

            #[test]
            fn near_miss_texts_parse_or_name_a_line(text in near_miss_text()) {
                check_text(&text)?;
            }
        }

        /// Lines made of statements, fields and values, good and bad.
        fn near_miss_text() -> impl Strategy<Value = String> {
            const WORDS: &[&str] = &[
                "include",
                "exclude",
                "default",
                "queue",
                "overflow",
                "rate",
                "log",
                "events",
                "#",
                "off",
                "none",
                "exec",
                "exit",
                "drop",
                "kill",
                "\t",
                "records=5",
                "records=0",
                "bytes=4K",
                "bytes=2G",
                "per=10s",
                "per=10",
                "action=kill",
                "size-mib=3",
                "files=2",
                "type=SYSCALL,PATH",
                "type=x",
                "syscall=execve,0",
                "syscall=0,0",
                "syscall=nope",
                "key=k",
                "key=\"a b\"",
                "key=\"",
                "success=yes",
                "success=maybe",
                "uid=0,1000",
                "uid=",
                "exe=/bin/*",
                "exe=/a*b",
                "exe=\"/a b\"",
                "tag=a:*",
                "tag=a*",
                "tag=\"x y\"",
                "=",
                "x=y",
            ];
            vec(vec(proptest::sample::select(WORDS), 0..6), 0..8).prop_map(|lines| {
                lines
                    .iter()
                    .map(|words| words.join(" "))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }

        /// A text parses to a policy whose canonical text parses back, and
        /// whose numeric form is no longer than the text; or its error
        /// names one of its lines.
        fn check_text(text: &str) -> Result<(), TestCaseError> {
            match Policy::parse(text) {
                Ok(p) => {
                    let numeric = p.render(false);
                    prop_assert!(
                        numeric.len() <= text.len() + 1,
                        "{:?} -> {:?}",
                        text,
                        numeric
                    );
                    prop_assert_eq!(Policy::parse(&numeric), Ok(p.clone()));
                    prop_assert_eq!(Policy::parse(&p.to_text()), Ok(p));
                }
                Err(e) => {
                    prop_assert!(e.line >= 1 && e.line <= text.split('\n').count(), "{}", e);
                }
            }
            Ok(())
        }
    }
}
