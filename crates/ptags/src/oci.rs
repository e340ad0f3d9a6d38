//! `ptags oci-hook`: the OCI runtime hook. At createRuntime it gives the
//! container's first process its container ID and tags, on behalf of the
//! runtime (the hook's parent, which made the process), and switches on
//! the container's setns policy; at poststop it has the container's end
//! recorded. Any error fails the hook, with a message the runtime shows.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ptags_core::oci::{label, Label, Stage, State, MAX_STATE_BYTES};
use ptags_core::Errno;
use ptags_proto::{Request, Response};

use crate::client::Client;

#[derive(clap::Args)]
#[command(after_help = "\
In config.json (runc), or a hooks.d file (podman, CRI-O, containerd with NRI):\n  \
\"hooks\": {\n    \
\"createRuntime\": [{\"path\": \"/usr/bin/ptags\", \"args\": [\"ptags\", \"oci-hook\"]}],\n    \
\"poststop\": [{\"path\": \"/usr/bin/ptags\", \"args\": [\"ptags\", \"oci-hook\"]}]\n  }\n\
Annotations: io.ptags.contid (the ID; without it one is derived from the container's \
name), io.ptags.tags (lines of the write language; use +@ for tags that must survive \
the container's first exec), io.ptags.join (false: processes entering the container \
later, as with runc exec, keep their own labels), io.ptags.audit (the container's own copy of its records: a policy's text, or the absolute path of a policy file on the host; see `ptags audit policy set --help`), io.ptags.devices (runtime, the default: the container is held to the device list its bundle's config.json gives the runtime, wherever its cgroup goes; off: no list of ptags').")]
pub struct Args {
    /// The hook's stage; without it, taken from the state's status
    /// (creating: createRuntime, stopped: poststop).
    #[arg(long, value_name = "STAGE")]
    stage: Option<String>,
    /// How long to wait for a daemon that is restarting (its socket
    /// missing or refusing, or it answers that it is stopping or busy)
    /// before failing the hook, and with it the container's start.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    wait: f64,
    /// Where policy files named by `io.ptags.audit` must be: whoever
    /// writes a container's annotations must not make the hook (root)
    /// read other files.
    #[arg(long, value_name = "DIR", default_value = "/etc/ptags/audit")]
    policy_dir: std::path::PathBuf,
}

/// Reads the state from standard input and acts at its stage.
pub fn run(socket: &Path, args: Args) -> Result<ExitCode> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_STATE_BYTES as u64 + 1)
        .read_to_end(&mut input)
        .context("reading the container state from standard input")?;
    let state = State::parse(&input)?;
    let stage = match &args.stage {
        Some(name) => Stage::parse(name)?,
        None => Stage::of_status(&state.status)?,
    };
    let label = label(&state).with_context(|| format!("container {:?}", state.id))?;
    // Everything is checked before the daemon is asked anything.
    let pid = match stage {
        Stage::CreateRuntime => Some(state.pid(stage)?),
        Stage::Poststop => None,
    };
    let devices = match stage {
        Stage::CreateRuntime if label.devices => Some(
            bundle_devices(&state.bundle)
                .with_context(|| format!("container {:?}: its device list", state.id))?,
        ),
        _ => None,
    };
    let audit = match (stage, state.annotations.get(AUDIT_ANNOTATION)) {
        (Stage::CreateRuntime, Some(value)) => Some(
            audit_policy(value, &args.policy_dir)
                .with_context(|| format!("container {:?}: {AUDIT_ANNOTATION}", state.id))?,
        ),
        _ => None,
    };
    if !(0.0..=3600.0).contains(&args.wait) {
        bail!(
            "--wait must be between 0 and 3600 seconds, not {}",
            args.wait
        );
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.wait);
    let request = match pid {
        Some(pid) => create(pid, &label),
        None => Request::ContainerEnd {
            contid: label.contid.get(),
        },
    };
    let what = match pid {
        Some(pid) => format!("labelling process {pid}"),
        None => "recording the container's end".to_owned(),
    };
    let context = || {
        format!(
            "container {:?} ({}): ptags {}",
            state.id,
            label.contid,
            stage.name()
        )
    };
    ask(socket, deadline, &what, request).with_context(context)?;
    // Before the container's program starts: the runtime waits for the hook.
    if let Some(writes) = devices {
        let request = Request::DeviceWrite {
            contid: label.contid.get(),
            writes,
        };
        ask(socket, deadline, "setting its device list", request).with_context(context)?;
    }
    if let Some(text) = audit {
        let request = Request::AuditPolicySet {
            contid: label.contid.get(),
            text,
        };
        ask(socket, deadline, "setting its audit policy", request).with_context(context)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The writes that give a container the device list its bundle's
/// config.json gives the runtime: the default, then the exceptions.
fn bundle_devices(bundle: &str) -> Result<Vec<String>> {
    if !bundle.starts_with('/') {
        bail!("the state's bundle {bundle:?} is not an absolute path");
    }
    let path = Path::new(bundle).join("config.json");
    let mut config = Vec::new();
    std::fs::File::open(&path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(ptags_core::oci_devices::MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut config)
        .with_context(|| format!("reading {}", path.display()))?;
    let list = ptags_core::oci_devices::runtime_device_list(&config)?;
    let default = if list.default_allow {
        "allow a"
    } else {
        "deny a"
    };
    Ok(std::iter::once(default.to_owned())
        .chain(list.rules().into_iter().skip(1))
        .collect())
}

/// The annotation that gives a container its own copy of its records:
/// a policy's text, or the absolute path of a policy file on the host.
const AUDIT_ANNOTATION: &str = "io.ptags.audit";

/// The policy text an `io.ptags.audit` annotation gives, checked: its
/// text, or a regular file in `dir` (what a file holds is never quoted
/// in an error, and no file outside `dir` is opened).
fn audit_policy(value: &str, dir: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    if !value.starts_with('/') {
        ptags_audit::policy::Policy::parse(value)?;
        return Ok(value.to_owned());
    }
    let outside = || anyhow::anyhow!("{value:?} is not a policy file in {}", dir.display());
    let dir = dir.canonicalize().map_err(|_| outside())?;
    let path = Path::new(value).canonicalize().map_err(|_| outside())?;
    if !path.starts_with(&dir) {
        return Err(outside());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|_| outside())?;
    if !file.metadata().map_err(|_| outside())?.is_file() {
        return Err(outside());
    }
    let mut text = String::new();
    file.take(ptags_proto::MAX_POLICY_TEXT as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|_| anyhow::anyhow!("{value}: not a policy (not UTF-8 text)"))?;
    ptags_audit::policy::Policy::parse(&text)
        .map_err(|e| anyhow::anyhow!("{value}: line {} is not a valid policy", e.line))?;
    Ok(text)
}

/// Sends a request, riding over a daemon restart until `deadline`: a
/// daemon that is not there yet, or answers EAGAIN (it is stopping, or
/// its connections are taken), never applied the request, which is sent
/// again. Any other refusal is an error naming what was asked.
fn ask(socket: &Path, deadline: Instant, what: &str, req: Request) -> Result<Response> {
    let mut pause = Duration::from_millis(50);
    loop {
        let answer = Client::connect_by(socket, deadline)?.request(req.clone())?;
        match answer {
            Ok(response) => return Ok(response),
            Err(f) if f.errno() == Some(Errno::Eagain) && Instant::now() + pause < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(f) => bail!("{what}: {f}"),
        }
    }
}

fn create(pid: u32, label: &Label) -> Request {
    let text = label.tags.as_ref().map(|tags| {
        let mut text = tags.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    });
    Request::ContainerCreate {
        pid,
        contid: label.contid.get(),
        text,
        join: label.join,
    }
}
