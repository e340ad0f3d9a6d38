//! `ptags audit policy` and `ptags audit follow`: a container's own copy
//! of its records, asked of the daemon (docs/audit-copies.md).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ptags_audit::policy::Policy;
use ptags_audit::query::parse_time;
use ptags_proto::{
    limits, read_frame, write_frame, PolicyInfo, Request, RequestFrame, Response, ResponseFrame,
};

use crate::client::Client;
use crate::commands::{ask, contid_arg, report};
use crate::Output;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Give a container its own copy of its records under the policy in
    /// FILE (`-`: standard input). Needs CAP_AUDIT_CONTROL, or being the
    /// container's owner. The text is checked first: a bad line is named
    /// and nothing is changed.
    #[command(after_help = "Example policy:\n  \
        # the container's own copy: its execs and its sshd's records\n  \
        include type=SYSCALL syscall=execve,execveat\n  \
        include exe=/usr/sbin/sshd\n  \
        exclude\n  \
        queue records=4096 bytes=4194304\n  \
        overflow drop\n  \
        rate records=2000 per=10s action=kill\n  \
        log size-mib=8 files=4\n  \
        events exec exit\n\
        The grammar is in docs/audit-copies.md; `--check` only checks a file.")]
    Set {
        #[arg(value_parser = contid_arg, allow_hyphen_values = true)]
        contid: u64,
        /// The policy file, or `-` for standard input.
        file: PathBuf,
    },
    /// Check a policy file without a daemon, and print it as the daemon
    /// would hold it.
    Check { file: PathBuf },
    /// Print a container's policy and its copy's counts.
    Get {
        #[arg(value_parser = contid_arg, allow_hyphen_values = true)]
        contid: u64,
    },
    /// Every container with a policy (that the caller may see).
    List,
    /// End a container's copy (its log stays on disk).
    Clear {
        #[arg(value_parser = contid_arg, allow_hyphen_values = true)]
        contid: u64,
    },
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    ptags audit follow                       (inside a container: its own records)\n  \
    ptags audit follow --contid 7 --since 2026-12-02T10:00\n  \
    ptags audit follow --contid 7 --after 67162\n\
    Ends when the container's copy ends; exit status 0, or 2 on error.")]
pub struct FollowArgs {
    /// The container: default, the caller's own. From the host, any
    /// (with CAP_AUDIT_READ); inside a container, its own or a nested one.
    #[arg(long, value_parser = contid_arg)]
    contid: Option<u64>,
    /// Start after the event with this serial (in the copy's log).
    #[arg(long, value_name = "SERIAL", conflicts_with = "since")]
    after: Option<u64>,
    /// Start at this time (in the copy's log): seconds since the epoch,
    /// or YYYY-MM-DD[THH:MM[:SS]] in UTC.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

/// Reads a policy file (`-`: standard input).
fn read_policy(file: &Path) -> Result<String> {
    let mut text = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .take(ptags_proto::MAX_POLICY_TEXT as u64 + 1)
            .read_to_string(&mut text)
            .context("reading the policy from standard input")?;
    } else {
        text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(text)
}

pub fn policy(socket: &Path, out: Output, command: PolicyCommand) -> Result<ExitCode> {
    if let PolicyCommand::Check { file } = &command {
        let text = read_policy(file)?;
        return match Policy::parse(&text) {
            Ok(p) => {
                print!("{}", p.to_text());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("ptags: {}: {e}", file.display());
                Ok(ExitCode::from(1))
            }
        };
    }
    let request = match command {
        PolicyCommand::Set { contid, file } => {
            let text = read_policy(&file)?;
            Request::AuditPolicySet { contid, text }
        }
        PolicyCommand::Get { contid } => Request::AuditPolicyGet { contid },
        PolicyCommand::List => Request::AuditPolicyList {},
        PolicyCommand::Clear { contid } => Request::AuditPolicyClear { contid },
        PolicyCommand::Check { .. } => unreachable!("checked above"),
    };
    let mut client = Client::connect(socket)?;
    let Some(response) = ask(&mut client, out, request)? else {
        return Ok(ExitCode::from(1));
    };
    if out.json {
        println!("{}", serde_json::to_string(&response)?);
        return Ok(ExitCode::SUCCESS);
    }
    match response {
        Response::AuditPolicy(info) => print_info(&info, true),
        Response::AuditPolicies { policies } => {
            for info in &policies {
                print_info(info, false);
            }
        }
        Response::Ended { .. } => {}
        other => bail!("ptagsd answered oddly: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_info(info: &PolicyInfo, with_text: bool) {
    println!(
        "container {}: log {}; taken {}, filtered {}, over rate {}, dropped {}, written {}, followers {}",
        info.contid,
        info.log.as_deref().unwrap_or("off"),
        info.taken,
        info.filtered,
        info.over_rate,
        info.dropped,
        info.written,
        info.followers
    );
    if with_text {
        print!("{}", info.text);
    }
}

pub fn follow(socket: &Path, out: Output, args: FollowArgs) -> Result<ExitCode> {
    let since_ms = args
        .since
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let request = Request::AuditFollow {
        contid: args.contid,
        after_serial: args.after,
        since_ms,
    };
    // One connection for the whole stream.
    let mut stream = Client::connect(socket)?.into_stream();
    write_frame(&mut stream, &RequestFrame::new(request).encode())
        .context("asking ptagsd to follow")?;
    let stdout = std::io::stdout();
    let mut lines = stdout.lock();
    loop {
        let body = match read_frame(&mut stream, limits::MAX_RESPONSE, |_| Ok(())) {
            Ok((body, ())) => body,
            // The copy ended: the daemon closed the stream.
            Err(ptags_proto::FrameError::Closed) => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e).context("reading ptagsd's stream"),
        };
        let response = ResponseFrame::decode(&body)
            .map_err(|e| anyhow::anyhow!("ptagsd answered oddly: {e}"))?;
        match response {
            Ok(Response::Following { contid }) => {
                if !out.json {
                    eprintln!("ptags: following container {contid}");
                }
            }
            Ok(Response::Records { lines: records }) => {
                for r in records {
                    if out.json {
                        writeln!(lines, "{}", serde_json::json!({ "line": r }))?;
                    } else {
                        writeln!(lines, "{r}")?;
                    }
                }
                lines.flush()?;
            }
            Ok(other) => bail!("ptagsd answered oddly: {other:?}"),
            Err(failure) => {
                report(out, &failure);
                return Ok(ExitCode::from(2));
            }
        }
    }
}
