//! `ptags`: the command-line client of ptagsd, and an offline simulator.

mod audit;
mod audit_copy;
mod audit_index;
mod client;
mod commands;
mod device;
mod oci;
mod run;
mod simulate;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ptags_proto::PsFilter;

use crate::commands::{contid_arg, TaskArg};

#[derive(Parser)]
#[command(
    name = "ptags",
    version,
    about = "Process tags and audit container IDs",
    long_about = "Process tags and audit container IDs. Every command but `simulate` \
        and `audit` asks ptagsd, which checks the caller's capabilities and tags; \
        `audit` reads the trail's files.",
    after_help = "Exit status: 0 on success, 1 when ptagsd refused or a write failed \
        (the errno name is printed), 2 on a usage or connection error."
)]
struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, env = "PTAGS_SOCKET", default_value = ptags_proto::limits::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the daemon's answer as JSON (errors too, as {"error": ...}).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// How to print answers.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Print a process's (or one thread's) tags in the read format.
    Read {
        /// PID, or PID/TID for one thread.
        task: TaskArg,
    },
    /// Apply a write to a process (every thread) or to one thread.
    #[command(
        after_help = "Examples:\n  ptags write 1234 +UMCM:ID '!UMCM:ID=7' +@UMCM:POD '!UMCM:POD=web'\n  \
        printf -- '-UMCM:*\\n' | ptags write 1234/1240\n\
        On failure it prints `line N: ERRNO: reason`; the lines before N stay applied."
    )]
    Write {
        /// PID, or PID/TID for one thread.
        task: TaskArg,
        /// Lines of the write, each without its newline; none: standard input.
        #[arg(value_name = "LINE", allow_hyphen_values = true)]
        lines: Vec<String>,
    },
    /// Read or set audit container IDs.
    #[command(subcommand)]
    Contid(ContidCommand),
    /// List processes with their container chain and tags.
    Ps {
        /// Only processes in this container.
        #[arg(long, value_parser = contid_arg)]
        contid: Option<u64>,
        /// With --contid: also processes of containers nested in it.
        #[arg(long, requires = "contid")]
        nested: bool,
        /// Only processes with a tag matching NAME or PREFIX:*.
        #[arg(long, value_name = "PATTERN")]
        tag: Option<String>,
        /// One row per thread.
        #[arg(long)]
        threads: bool,
        /// Also processes without tags or container.
        #[arg(long)]
        all: bool,
        /// Show each process's namespaces (inode numbers, as
        /// /proc/PID/ns gives them; needs CAP_AUDIT_CONTROL).
        #[arg(long)]
        ns: bool,
    },
    /// Run a command that starts with these tags and this container ID.
    #[command(
        after_help = "Example:\n  ptags run --contid 7 --write +@UMCM:ID --write '!UMCM:ID=7' -- sh -c 'ptags read $$'"
    )]
    Run {
        /// A line of the write applied before the command starts (repeatable).
        #[arg(long = "write", value_name = "LINE", allow_hyphen_values = true)]
        writes: Vec<String>,
        /// The command's container ID.
        #[arg(long, value_parser = contid_arg)]
        contid: Option<u64>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// What the daemon has attached, its counters and the events lost.
    Status,
    /// The OCI runtime hook (createRuntime and poststop): labels a
    /// container from the state on standard input.
    OciHook(oci::Args),
    /// The audit trail: search, report and verify its files offline;
    /// containers' own copies (policy, follow) through ptagsd.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Containers' device allow-lists: what a container's tasks may open
    /// or create, wherever their cgroup is (docs/devices.md).
    #[command(subcommand)]
    Device(device::DeviceCommand),
    Simulate(simulate::Args),
}

#[derive(Subcommand)]
enum ContidCommand {
    /// Print a process's container ID, or `unset`.
    Get { pid: u32 },
    /// Set a process's container ID (needs CAP_AUDIT_CONTROL; the
    /// process must descend from this command or from its parent).
    Set {
        pid: u32,
        /// The ID: a decimal number (`-1` and `unset` are refused by the rules).
        #[arg(value_parser = contid_arg, allow_hyphen_values = true)]
        id: u64,
    },
}

fn main() -> ExitCode {
    // SAFETY: restores the default action of SIGPIPE before any thread
    // exists, so that `ptags ps | head` ends quietly like other tools
    // instead of panicking on a closed pipe.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let out = Output { json: cli.json };
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Audit(audit::AuditCommand::Policy(command)) => {
            audit_copy::policy(&cli.socket, out, command)
        }
        Command::Audit(audit::AuditCommand::Follow(args)) => {
            audit_copy::follow(&cli.socket, out, args)
        }
        Command::Audit(command) => audit::run(command, out),
        Command::OciHook(args) => oci::run(&cli.socket, args),
        Command::Device(command) => device::run(&cli.socket, out, command),
        command => client::Client::connect(&cli.socket).and_then(|mut c| match command {
            Command::Read { task } => commands::read(&mut c, out, task),
            Command::Write { task, lines } => commands::write(&mut c, out, task, &lines),
            Command::Contid(ContidCommand::Get { pid }) => commands::contid_get(&mut c, out, pid),
            Command::Contid(ContidCommand::Set { pid, id }) => {
                commands::contid_set(&mut c, out, pid, id)
            }
            Command::Ps {
                contid,
                nested,
                tag,
                threads,
                all,
                ns,
            } => commands::ps(
                &mut c,
                out,
                PsFilter {
                    contid,
                    nested,
                    tag,
                    threads,
                    labelled: !all,
                    namespaces: ns,
                },
            ),
            Command::Run {
                writes,
                contid,
                command,
            } => run::run(&mut c, out, &writes, contid, &command),
            Command::Status => commands::status(&mut c, out),
            Command::Simulate(_) | Command::Audit(_) | Command::OciHook(_) | Command::Device(_) => {
                unreachable!("handled above")
            }
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ptags: {e:#}");
            ExitCode::from(2)
        }
    }
}
