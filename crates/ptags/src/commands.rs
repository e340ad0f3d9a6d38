//! The subcommands that ask the daemon: read, write, contid, ps, status.

use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Result;
use ptags_core::contid::parse_contid;
use ptags_core::Errno;
use ptags_proto::{Failure, PsFilter, Request, Response, Status, Target};

use crate::client::Client;
use crate::text::{utf8_prefix, write_text};
use crate::Output;

/// `PID` or `PID/TID`.
#[derive(Debug, Clone, Copy)]
pub struct TaskArg(pub Target);

impl FromStr for TaskArg {
    type Err = String;

    fn from_str(s: &str) -> Result<TaskArg, String> {
        let number = |t: &str| {
            t.parse::<u32>()
                .ok()
                .filter(|&n| n > 0 && t.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("{s:?} is not PID or PID/TID"))
        };
        let (pid, tid) = match s.split_once('/') {
            Some((p, t)) => (number(p)?, Some(number(t)?)),
            None => (number(s)?, None),
        };
        Ok(TaskArg(Target { pid, tid }))
    }
}

/// A container ID to set: a number (the unset value is passed on, for
/// the daemon to refuse as the rules say).
pub fn contid_arg(s: &str) -> Result<u64, String> {
    parse_contid(s)
        .map(|id| id.map_or(u64::MAX, |id| id.get()))
        .map_err(|e| e.to_string())
}

/// Sends a request and prints a refusal; `Ok(None)` after a refusal.
pub(crate) fn ask(client: &mut Client, out: Output, req: Request) -> Result<Option<Response>> {
    match client.request(req)? {
        Ok(response) => Ok(Some(response)),
        Err(failure) => {
            report(out, &failure);
            Ok(None)
        }
    }
}

pub fn report(out: Output, failure: &Failure) {
    if out.json {
        println!("{}", serde_json::json!({ "error": failure }));
    } else {
        eprintln!("ptags: {failure}");
    }
}

fn print_json(response: &Response) {
    println!(
        "{}",
        serde_json::to_string(response).expect("answers serialize")
    );
}

fn done(response: Option<Response>, out: Output, human: impl FnOnce(&Response)) -> ExitCode {
    match response {
        Some(r) if out.json => {
            print_json(&r);
            ExitCode::SUCCESS
        }
        Some(r) => {
            human(&r);
            ExitCode::SUCCESS
        }
        None => ExitCode::from(1),
    }
}

pub fn read(client: &mut Client, out: Output, task: TaskArg) -> Result<ExitCode> {
    let r = ask(client, out, Request::Read { target: task.0 })?;
    Ok(done(r, out, |r| {
        if let Response::Tags { tags } = r {
            print!("{tags}");
        }
    }))
}

pub fn write(
    client: &mut Client,
    out: Output,
    task: TaskArg,
    lines: &[String],
) -> Result<ExitCode> {
    let text = write_text(lines)?;
    let (sendable, bad_line) = utf8_prefix(&text);
    let r = ask(
        client,
        out,
        Request::Write {
            target: task.0,
            text: sendable.to_owned(),
        },
    )?;
    if let (Some(_), Some(line)) = (&r, bad_line) {
        report(
            out,
            &Failure::new(Errno::Einval, "invalid UTF-8").at_line(line),
        );
        return Ok(ExitCode::from(1));
    }
    Ok(done(r, out, |_| {}))
}

pub fn contid_get(client: &mut Client, out: Output, pid: u32) -> Result<ExitCode> {
    let r = ask(client, out, Request::ContidGet { pid })?;
    Ok(done(r, out, |r| {
        if let Response::Contid(answer) = r {
            match answer.contid {
                Some(id) => println!("{id}"),
                None => println!("unset"),
            }
        }
    }))
}

pub fn contid_set(client: &mut Client, out: Output, pid: u32, contid: u64) -> Result<ExitCode> {
    let r = ask(client, out, Request::ContidSet { pid, contid })?;
    Ok(done(r, out, |_| {}))
}

pub fn ps(client: &mut Client, out: Output, filter: PsFilter) -> Result<ExitCode> {
    let r = ask(client, out, Request::Ps { filter })?;
    Ok(done(r, out, |r| {
        let Response::Processes { rows } = r else {
            return;
        };
        println!(
            "{:>8} {:>8} {:<20} {:<16} TAGS",
            "PID", "TID", "CONTAINER", "COMM"
        );
        for row in rows {
            let tags: Vec<&str> = row.tags.lines().collect();
            println!(
                "{:>8} {:>8} {:<20} {:<16} {}",
                row.pid,
                row.tid,
                row.chain,
                row.comm,
                tags.join(" ")
            );
            // Namespaces on a line of their own, under the process.
            if let Some(ns) = &row.namespaces {
                let kinds: Vec<String> = ns.iter().map(|(k, i)| format!("{k}:{i}")).collect();
                println!("{:>8} {:>8} ns {}", "", "", kinds.join(" "));
            }
        }
    }))
}

pub fn status(client: &mut Client, out: Output) -> Result<ExitCode> {
    let r = ask(client, out, Request::Status {})?;
    Ok(done(r, out, |r| {
        if let Response::Status(s) = r {
            print_status(s);
        }
    }))
}

fn print_status(s: &Status) {
    println!(
        "ptagsd {} (protocol {}), pid {}, up {} s",
        s.version, s.protocol, s.pid, s.uptime_secs
    );
    println!("pinned under {}", s.pin_dir);
    println!("attached: {}", s.attached.join(", "));
    println!(
        "tag sets: {} in use ({} collected)",
        s.tag_sets, s.sets_collected
    );
    println!(
        "requests: {} answered, {} refused, {} malformed, {} refused for memory, {} changes over their user's rate; connections: {} refused, {} cut off as too slow",
        s.requests_ok,
        s.requests_failed,
        s.requests_malformed,
        s.requests_busy,
        s.requests_limited,
        s.connections_refused,
        s.connections_slow
    );
    let lost: Vec<String> = s
        .lost
        .iter()
        .map(|(name, n)| format!("{n} {}", name.replace('_', " ")))
        .collect();
    println!("lost in the kernel: {}", lost.join(", "));
    let a = &s.audit;
    let c = &a.counters;
    println!(
        "audit trail: {} ({}), record {}; {} written, {} kernel records in {} events ({} in containers), {} namespace records, {} packets",
        a.log,
        if a.writing { "writing" } else { "SUSPENDED" },
        a.seq,
        a.records_written,
        c.kernel_records,
        c.kernel_events,
        c.contained_events,
        c.ns_records,
        c.nflog_packets
    );
    println!(
        "kernel records: {}",
        if a.registered {
            "as the kernel's registered audit daemon (unicast)"
        } else {
            "read beside the audit daemon (multicast)"
        }
    );
    println!(
        "audit records lost: {} by the kernel, {} at the netlink socket ({} overflows), {} for lack of disk space; events lost: {} numbered by the kernel and never delivered, {} in the ring buffer",
        c.lost_kernel, c.lost_netlink, c.netlink_overflows, a.lost_disk, c.lost_serials, c.lost_ringbuf
    );
    println!(
        "refused requests not recorded (rate limit, counted in the trail): {}",
        c.suppressed_refusals
    );
    println!(
        "containers: {} ({} dropped, {} with a setns policy){}",
        s.container_count,
        s.containers_dropped,
        s.join_policies,
        if s.containers.len() < s.container_count {
            "; listing them needs CAP_AUDIT_CONTROL"
        } else {
            ""
        }
    );
    for c in &s.containers {
        let parent = c.parent.map_or("-".to_owned(), |p| p.to_string());
        println!(
            "  {} parent {} depth {} owner {} live {} created {}",
            c.contid, parent, c.depth, c.owner_pid, c.live, c.created
        );
    }
}
