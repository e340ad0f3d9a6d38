//! `ptags oci-hook`: the OCI runtime hook. At createRuntime it gives the
//! container's first process its container ID and tags, on behalf of the
//! runtime (the hook's parent, which made the process), and switches on
//! the container's setns policy; at poststop it has the container's end
//! recorded. Any error fails the hook, with a message the runtime shows.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ptags_core::oci::{label, Label, Stage, State, MAX_STATE_BYTES};
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
later, as with runc exec, keep their own labels).")]
pub struct Args {
    /// The hook's stage; without it, taken from the state's status
    /// (creating: createRuntime, stopped: poststop).
    #[arg(long, value_name = "STAGE")]
    stage: Option<String>,
}

/// Reads the state from standard input and acts at its stage.
pub fn run(socket: &std::path::Path, args: Args) -> Result<ExitCode> {
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
    let mut client = Client::connect(socket)?;
    match pid {
        Some(pid) => create(&mut client, pid, &label),
        None => stop(&mut client, &label),
    }
    .with_context(|| {
        format!(
            "container {:?} ({}): ptags {}",
            state.id,
            label.contid,
            stage.name()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Sends a request; a refusal is an error naming what was asked.
fn ask(client: &mut Client, what: &str, req: Request) -> Result<Response> {
    match client.request(req)? {
        Ok(response) => Ok(response),
        Err(f) => bail!("{what}: {f}"),
    }
}

fn create(client: &mut Client, pid: u32, label: &Label) -> Result<()> {
    let text = label.tags.as_ref().map(|tags| {
        let mut text = tags.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    });
    ask(
        client,
        &format!("labelling process {pid}"),
        Request::ContainerCreate {
            pid,
            contid: label.contid.get(),
            text,
            join: label.join,
        },
    )?;
    Ok(())
}

fn stop(client: &mut Client, label: &Label) -> Result<()> {
    ask(
        client,
        "recording the container's end",
        Request::ContainerEnd {
            contid: label.contid.get(),
        },
    )?;
    Ok(())
}
