//! `ptags device`: containers' device allow-lists, asked of the daemon
//! (docs/devices.md).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use ptags_core::devices::DeviceRule;
use ptags_proto::{Request, Response};

use crate::client::Client;
use crate::commands::{ask, contid_arg};
use crate::Output;

/// A rule as the devices cgroup writes it, checked before it is sent.
fn rule_arg(s: &str) -> Result<String, String> {
    DeviceRule::parse(s)
        .map(|r| r.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Allow devices to a container, as a write to the devices cgroup's
    /// `devices.allow`: `a` makes the default allow-all (and clears the
    /// exceptions); another rule adds an exception to a deny-all default,
    /// or takes access back from a denial naming the same devices.
    #[command(
        after_help = "Rules: TYPE MAJOR:MINOR ACCESS, TYPE a|b|c, MAJOR and MINOR \
        a number or *, ACCESS letters of rwm; `a` alone is every device.\n\
        Examples:\n  ptags device deny 7 a\n  \
        ptags device allow 7 'c 1:3 rwm' 'c 1:5 rwm' 'c 136:* rw'\n\
        Needs CAP_SYS_ADMIN on the host, or being the container's owner and \
        narrowing its list. A nested container's list only narrows its parent's. \
        All the rules apply, or none."
    )]
    Allow {
        #[arg(value_parser = contid_arg, allow_hyphen_values = true)]
        contid: u64,
        #[arg(value_parser = rule_arg, required = true, value_name = "RULE")]
        rules: Vec<String>,
    },
    /// Deny devices to a container, as a write to `devices.deny`: `a`
    /// makes the default deny-all; another rule adds an exception to an
    /// allow-all default, or takes access back from a grant naming the
    /// same devices.
    Deny {
        #[arg(value_parser = contid_arg, allow_hyphen_values = true)]
        contid: u64,
        #[arg(value_parser = rule_arg, required = true, value_name = "RULE")]
        rules: Vec<String>,
    },
    /// Print a container's list: its default, then its exceptions.
    List {
        #[arg(value_parser = contid_arg, allow_hyphen_values = true)]
        contid: u64,
    },
    /// Remove a container's list: ptags no longer fences its devices
    /// (needs CAP_SYS_ADMIN on the host).
    Clear {
        #[arg(value_parser = contid_arg, allow_hyphen_values = true)]
        contid: u64,
    },
}

pub fn run(socket: &Path, out: Output, command: DeviceCommand) -> Result<ExitCode> {
    let writes = |verb: &str, rules: Vec<String>| -> Vec<String> {
        rules.into_iter().map(|r| format!("{verb} {r}")).collect()
    };
    let request = match command {
        DeviceCommand::Allow { contid, rules } => Request::DeviceWrite {
            contid,
            writes: writes("allow", rules),
        },
        DeviceCommand::Deny { contid, rules } => Request::DeviceWrite {
            contid,
            writes: writes("deny", rules),
        },
        DeviceCommand::List { contid } => Request::DeviceGet { contid },
        DeviceCommand::Clear { contid } => Request::DeviceClear { contid },
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
        Response::Devices(info) if info.rules.is_empty() => {
            println!("container {}: no device list (not fenced)", info.contid)
        }
        Response::Devices(info) => {
            for rule in &info.rules {
                println!("{rule}");
            }
        }
        other => bail!("ptagsd answered oddly: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
