//! `ptags simulate`: apply a write to a tag set offline, exactly as the
//! daemon would, without touching any process. For trying out a write or
//! a permission set before using it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ptags_core::{apply_write, TagSet, Target, Writer};

/// Apply a write to a tag set offline and print the resulting tags.
///
/// The write's lines come from the arguments, or from standard input when
/// there are none. The result goes to standard output in the read format;
/// a failing line is reported as `line N: ERRNO: reason` on standard error
/// (the lines before it stay applied, as on a real process) and the exit
/// status is 1.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    ptags simulate --admin +UMCM:ID '!UMCM:ID=7' +@UMCM:POD\n  \
    printf '+a\\n!a=1\\n' | ptags simulate --tags current.txt --writer-tags perms.txt")]
pub struct Args {
    /// The target's tags before the write, in the read format (default: none).
    #[arg(long, value_name = "FILE")]
    tags: Option<PathBuf>,
    /// The writer's own tags, whose `ptags:...` permissions apply
    /// (default: the target's tags, as when a task writes its own).
    #[arg(long, value_name = "FILE")]
    writer_tags: Option<PathBuf>,
    /// The writer holds CAP_MAC_ADMIN and bypasses tag permissions.
    #[arg(long)]
    admin: bool,
    /// The writer is another task than the target (needs `others`).
    #[arg(long)]
    other: bool,
    /// With --other: the writer may not ptrace the target.
    #[arg(long, requires = "other")]
    no_access: bool,
    /// Lines of the write, each without its newline.
    #[arg(value_name = "LINE", allow_hyphen_values = true)]
    lines: Vec<String>,
}

fn read_tags(path: &PathBuf) -> Result<TagSet> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    TagSet::parse_read_format(&text)
        .map_err(|(line, e)| anyhow::anyhow!("{}: line {line}: {e}", path.display()))
}

pub fn run(args: Args) -> Result<ExitCode> {
    let current = match &args.tags {
        Some(p) => read_tags(p)?,
        None => TagSet::empty(),
    };
    let writer_tags = match &args.writer_tags {
        Some(p) => read_tags(p)?,
        None => current.clone(),
    };
    let text = crate::text::write_text(&args.lines)?;
    let target = match (args.other, args.no_access) {
        (false, _) => Target::Itself,
        (true, no_access) => Target::Other {
            may_access: !no_access,
        },
    };
    let outcome = apply_write(
        &current,
        &text,
        &Writer::new(&writer_tags, args.admin, target),
    );
    std::io::stdout()
        .write_all(outcome.tags.to_read_format().as_bytes())
        .context("writing the result")?;
    Ok(match outcome.failure {
        None => ExitCode::SUCCESS,
        Some(failure) => {
            eprintln!("ptags: {failure}");
            ExitCode::from(1)
        }
    })
}
