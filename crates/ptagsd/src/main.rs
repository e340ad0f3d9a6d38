//! `ptagsd`: the daemon that owns the kernel side of ptags and is the only
//! way to change process tags and audit container IDs.
//!
//! Control flows one way: socket ([`control`]), the daemon's state
//! ([`daemon`]), the kernel. Data flows one way: sources, enrichment,
//! router, sinks ([`pipeline`]). This file starts both and runs the one
//! thread where they meet.

mod bucket;
mod config;
mod control;
mod daemon;
mod error;
mod host;
mod pipeline;
mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use log::{error, info, warn};
use ptags_bpf::{Features, Kernel, Options};

use crate::config::Config;
use crate::control::server::Job;
use crate::control::{server, Counters};
use crate::daemon::Daemon;
use crate::pipeline::kernel_audit::{self, KernelInput, Reading};

/// What reaches the daemon's thread: requests from the socket, records
/// from the kernel's audit.
enum Input {
    Request(Job),
    Kernel(KernelInput),
    /// A request waits in the priority queue.
    Wake,
}

#[derive(Parser)]
#[command(
    name = "ptagsd",
    version,
    about = "The ptags daemon: keeps process tags and audit container IDs in the kernel and is the only way to change them",
    long_about = "The ptags daemon. It loads the BPF programs (or finds them pinned), \
        serves the ptags socket protocol and checks every request against the caller's \
        capabilities and tags. It runs in the foreground; stopping it keeps the pinned \
        kernel state, so tags and container IDs live on and are found again at the next start."
)]
struct Args {
    /// TOML configuration; keys it lacks keep their defaults
    /// (`ptagsd --print-default-config` shows them).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Checks the configuration, prints it in full and exits.
    #[arg(long)]
    check_config: bool,
    /// Prints the default configuration and exits.
    #[arg(long)]
    print_default_config: bool,
    /// Removes the pinned programs and maps (every task's tags and
    /// container ID are lost) and exits.
    #[arg(long)]
    reset_pins: bool,
    /// Overrides the configured log level (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        error!("{e:#}");
        eprintln!("ptagsd: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if args.print_default_config {
        print!("{}", config::DEFAULT_TOML);
        return Ok(());
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::defaults(),
    };
    if let Some(level) = args.log_level {
        config.log_level = level;
        config.validate()?;
    }
    if args.check_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    env_logger::Builder::new()
        .parse_filters(&config.log_level)
        .parse_env("RUST_LOG")
        .init();
    if args.reset_pins {
        Kernel::reset(&config.pin_dir)?;
        info!("removed the pins under {}", config.pin_dir.display());
        return Ok(());
    }
    serve(config)
}

fn serve(config: Config) -> Result<()> {
    let missing = Features::probe().missing();
    if !missing.is_empty() {
        anyhow::bail!("this kernel lacks what ptags needs: {missing:?}");
    }
    let kernel = Kernel::open(&Options {
        pin_dir: Some(config.pin_dir.clone()),
        max_containers: config.limits.max_containers,
    })
    .context("loading the kernel side")?;
    std::fs::create_dir_all(&config.log_dir)
        .with_context(|| format!("creating {}", config.log_dir.display()))?;
    let counters = Arc::new(Counters::default());
    let mut daemon = Daemon::open(&kernel, config.clone(), &counters)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let (inputs, receiver) = sync_channel(1024);
    let mut registered = false;
    if config.audit.kernel {
        let buffer = (config.audit.receive_buffer_kib as usize) << 10;
        let reading =
            kernel_audit::start(inputs.clone(), Input::Kernel, config.audit.register, buffer)
                .context(
                    "reading kernel audit records (set audit.kernel = false to run without them)",
                )?;
        match reading {
            Reading::Registered => {
                registered = true;
                info!("registered as the kernel's audit daemon: records arrive by unicast");
            }
            Reading::Beside(0) => warn!(
                "reading kernel audit records beside no audit daemon: the kernel also prints each to its log (audit.register = \"never\")"
            ),
            Reading::Beside(pid) => {
                info!("reading kernel audit records beside the audit daemon (pid {pid})")
            }
        }
        daemon.set_registered(registered);
    }
    // Requests through the root-only socket have a queue of their own,
    // served before anything else: no user's queued requests delay them.
    let (priority, priority_jobs) = sync_channel::<Job>(64);
    let submit: control::files::SubmitFn = Arc::new(move |job: Job| {
        if job.priority {
            let sent = priority.send(job).is_ok();
            // The daemon's queue full means it is busy: it looks at the
            // priority queue before each input anyway.
            let _ = inputs.try_send(Input::Wake);
            sent
        } else {
            inputs.send(Input::Request(job)).is_ok()
        }
    });
    let files = mount_files(&config, Arc::clone(&submit), kernel.facts().clone())?;
    server::start(
        &config,
        Arc::clone(&counters),
        kernel.facts().clone(),
        Box::new(move |job| submit(job)),
    )?;
    warn_of_ptrace_scope();
    raise_file_limit();
    info!(
        "serving {} (pins under {}, state in {}, audit trail in {})",
        config.socket.display(),
        config.pin_dir.display(),
        config.state_dir.display(),
        config.log_dir.display()
    );
    let result = main_loop(&mut daemon, &receiver, &priority_jobs, &stop);
    if registered {
        if let Err(e) = kernel_audit::unregister() {
            warn!("{e:#}");
        }
    }
    if let Err(e) = daemon.flush() {
        warn!("writing the last audit records: {e:#}");
    }
    // Namespace changes stay watched: those made while the daemon is
    // down wait in the ring for the next start.
    if let Err(e) = kernel.set_events(false, false, config.ns_watch()) {
        warn!("switching exec and exit events off: {e}");
    }
    // Unmounted while the daemon is still there to fail what waits.
    drop(files);
    drop(daemon);
    server::remove_socket(&config.socket);
    info!(
        "stopping; the pinned kernel state stays under {}",
        config.pin_dir.display()
    );
    result
}

/// Mounts the 2016 files when the configuration asks.
fn mount_files(
    config: &Config,
    submit: control::files::SubmitFn,
    facts: ptags_bpf::FactsReader,
) -> Result<Option<control::files::Files>> {
    use config::FilesMount;
    let fuse = std::path::Path::new("/dev/fuse").exists();
    match config.files.mount {
        FilesMount::Never => return Ok(None),
        FilesMount::Auto if !fuse => {
            info!("no /dev/fuse: the files are not mounted (files.mount = \"auto\")");
            return Ok(None);
        }
        _ => {}
    }
    let files =
        control::files::Files::mount(&config.files.mountpoint, submit, facts, &config.limits)?;
    info!("the files are at {}", config.files.mountpoint.display());
    Ok(Some(files))
}

/// Raises the soft limit of open files to the hard one: connections and
/// NFLOG listeners hold one each (both capped in the configuration), and
/// the task iterator needs some at every sweep; the usual soft 1024 is
/// tighter than those caps together.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: limit is a valid rlimit for the kernel to fill, then read.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if !raised {
        warn!(
            "raising the limit of open files: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A process may ptrace another of its user's processes in another
/// container (or on the host) and act as it; nothing a tracepoint sees can
/// stop that (docs/daemon.md, "ptrace"). Yama's ptrace_scope 1 or more
/// keeps it to a tracer's descendants, and CAP_SYS_PTRACE holders.
fn warn_of_ptrace_scope() {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope");
    match scope.as_deref().map(str::trim) {
        Ok("0") => warn!(
            "kernel.yama.ptrace_scope is 0: a process in a container may ptrace any process of its user outside it and act as that process; set it to 1 or more (sysctl kernel.yama.ptrace_scope=1)"
        ),
        Err(_) => warn!(
            "Yama is not active (no /proc/sys/kernel/yama/ptrace_scope): a process in a container may ptrace any process of its user outside it"
        ),
        Ok(_) => {}
    }
}

/// Serves requests and kernel records until a signal, or until the audit
/// trail cannot go on (a disk action of `stop`).
fn main_loop(
    daemon: &mut Daemon<'_>,
    inputs: &Receiver<Input>,
    priority: &Receiver<Job>,
    stop: &AtomicBool,
) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        match inputs.recv_timeout(Duration::from_millis(50)) {
            Ok(input) => {
                on_input(daemon, input, priority)?;
                // Drain what else is waiting before the periodic work.
                for input in inputs.try_iter().take(256) {
                    on_input(daemon, input, priority)?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        answer_priority(daemon, priority)?;
        daemon.tick()?;
    }
    Ok(())
}

/// Answers one request: the record of a change is written before the
/// change is told. A trail that cannot take the outcome (a disk action
/// of `stop`) stops the daemon, but the caller is told first what was
/// done: the change was made, its intent is on record and recovery
/// settles it at the next start, and a caller told "try again" instead
/// would ask for it twice.
fn answer(daemon: &mut Daemon<'_>, job: Job) -> Result<()> {
    let answer = daemon.handle(&job.peer, &job.request);
    let follower = daemon.take_follow();
    let committed = daemon.commit();
    let _ = job.reply.send((answer, follower));
    committed
}

/// Answers the requests of the root-only socket that wait.
fn answer_priority(daemon: &mut Daemon<'_>, priority: &Receiver<Job>) -> Result<()> {
    for job in priority.try_iter() {
        answer(daemon, job)?;
    }
    Ok(())
}

fn on_input(daemon: &mut Daemon<'_>, input: Input, priority: &Receiver<Job>) -> Result<()> {
    answer_priority(daemon, priority)?;
    match input {
        Input::Request(job) => answer(daemon, job)?,
        Input::Kernel(input) => daemon.on_kernel(input),
        Input::Wake => {}
    }
    Ok(())
}
