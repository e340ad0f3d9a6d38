//! Packets of the network namespaces that containers use.
//!
//! The kernel's own `NETFILTER_PKT` records do not say which network
//! namespace a packet was in, and a `log level audit` rule inside a
//! namespace other than the host's yields no audit record at all
//! (docs/records.md). So, when `[namespaces] nflog_group` is set, ptagsd
//! listens on that NFLOG group inside every network namespace a container
//! has tasks in: a rule `log group N` there hands it the packet, and it
//! writes a record in the `NETFILTER_PKT` shape followed by a
//! `CONTAINER_ID` naming every container of the namespace.
//!
//! A container may own its network namespace (a user namespace of its
//! own gives it CAP_NET_ADMIN there): it writes the rules, can send to
//! the daemon's socket, and can flood it, and make namespaces without
//! end. So only the kernel's messages are read, the namespace a socket is
//! made in is checked to be the one meant (never the host's), listeners
//! are capped in all and per container, and packets are rate limited per
//! namespace and per container (a namespace's container: the lowest ID
//! of those with tasks in it), the rest counted.

mod wire;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Error, ErrorKind, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use ptags_bpf::namespaces::KINDS;
use ptags_bpf::TaskRow;

use crate::bucket::{Rate, TokenBucket};

/// Messages read from one socket per tick at most: a flood waits in the
/// socket (and overflows it, counted) instead of holding the daemon.
const READS_PER_TICK: usize = 256;
/// How often a namespace's packets not recorded are summed up in a record.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

fn net_slot() -> usize {
    KINDS
        .iter()
        .position(|k| *k == "net")
        .expect("net is a kind")
}

/// Limits of the packet source (`[namespaces]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub group: u16,
    /// Network namespaces listened in at once, in all and per container.
    pub max_namespaces: usize,
    pub max_per_container: usize,
    /// Packets recorded per namespace: a burst, then a rate a second.
    pub burst: u32,
    pub per_sec: u32,
}

impl Limits {
    fn rate(&self) -> Rate {
        Rate::new(self.burst, self.per_sec)
    }
}

/// What the packet source has to say, each about one network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// A packet, as a record body, in network namespace `netns`.
    Packet {
        netns: u32,
        body: String,
    },
    /// Packets of `netns` not recorded (its rate), since the last summary.
    Suppressed {
        netns: u32,
        count: u64,
    },
    /// A socket had no room for packets: the kernel dropped some.
    Overflow {
        netns: u32,
    },
    /// Listening in `netns` started, stopped, or could not start
    /// (`why`; said once until it works or the namespace is gone).
    Listening {
        netns: u32,
    },
    Stopped {
        netns: u32,
    },
    Refused {
        netns: u32,
        why: String,
    },
}

impl Said {
    pub fn netns(&self) -> u32 {
        match self {
            Said::Packet { netns, .. }
            | Said::Suppressed { netns, .. }
            | Said::Overflow { netns }
            | Said::Listening { netns }
            | Said::Stopped { netns }
            | Said::Refused { netns, .. } => *netns,
        }
    }
}

/// A namespace listened in.
struct Listener {
    inum: u32,
    /// The container it is counted to.
    owner: u64,
    socket: OwnedFd,
    bucket: TokenBucket,
    suppressed: u64,
    summarised: Instant,
}

pub struct Nflog {
    limits: Limits,
    /// The daemon's own network namespace (the host's), never listened in.
    own_netns: u32,
    /// By the namespace's never-reused ID.
    listeners: HashMap<u64, Listener>,
    /// Namespaces where listening failed, with why (said once; tried
    /// again at every sweep).
    refused: HashMap<u64, String>,
    /// The containers with tasks in each network namespace, counted at
    /// the last sweep, by the namespace's inode number.
    containers: HashMap<u32, BTreeMap<u64, u32>>,
    /// Each container's packets, over all its namespaces.
    owners: HashMap<u64, TokenBucket>,
}

impl Nflog {
    pub fn new(limits: Limits) -> Nflog {
        let own_netns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino() as u32);
        Nflog {
            limits,
            own_netns,
            listeners: HashMap::new(),
            refused: HashMap::new(),
            containers: HashMap::new(),
            owners: HashMap::new(),
        }
    }

    pub fn group(&self) -> u16 {
        self.limits.group
    }

    /// The containers of network namespace `inum`, as the last sweep
    /// counted them.
    pub fn containers_of(&self, inum: u32) -> Vec<u64> {
        self.containers
            .get(&inum)
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default()
    }

    /// After a listing of every task: counts the containers of each
    /// network namespace, listens in those newly used by a container
    /// (never the daemon's own: the host's packets are the host's), and
    /// stops listening in those no container uses any more.
    pub fn swept(&mut self, rows: &[TaskRow]) -> Vec<Said> {
        let own_netns = self.own_netns;
        let net = net_slot();
        // Each namespace with a task of a container in it, and that task.
        let mut used: HashMap<u64, (u32, u32, u32)> = HashMap::new();
        self.containers.clear();
        for row in rows.iter().filter(|r| r.namespaces.known()) {
            let Some(contid) = row.state.contid else {
                continue;
            };
            let (id, inum) = (row.namespaces.id[net], row.namespaces.inum[net]);
            let count = self.containers.entry(inum).or_default();
            *count.entry(contid).or_default() += 1;
            if inum != own_netns {
                used.entry(id).or_insert((inum, row.pid, row.id.tid));
            }
        }
        let mut said = Vec::new();
        self.listeners.retain(|id, l| {
            let keep = used.contains_key(id);
            if !keep {
                if l.suppressed > 0 {
                    said.push(Said::Suppressed {
                        netns: l.inum,
                        count: l.suppressed,
                    });
                }
                said.push(Said::Stopped { netns: l.inum });
            }
            keep
        });
        self.refused.retain(|id, _| used.contains_key(id));
        let owner_of = |inum: u32| {
            self.containers
                .get(&inum)
                .and_then(|c| c.keys().next().copied())
                .unwrap_or(u64::MAX)
        };
        let owners: std::collections::HashSet<u64> =
            used.values().map(|(inum, ..)| owner_of(*inum)).collect();
        self.owners.retain(|c, _| owners.contains(c));
        let mut new: Vec<(u64, (u32, u32, u32))> = used
            .into_iter()
            .filter(|(id, _)| !self.listeners.contains_key(id))
            .collect();
        new.sort_unstable_by_key(|(id, _)| *id);
        for (id, (inum, pid, tid)) in new {
            let owner = owner_of(inum);
            let of_owner = self.listeners.values().filter(|l| l.owner == owner).count();
            let result = if self.listeners.len() >= self.limits.max_namespaces {
                Err(Error::other("limit"))
            } else if of_owner >= self.limits.max_per_container {
                Err(Error::other("container-limit"))
            } else {
                listen_in(pid, tid, inum, own_netns, self.limits.group)
            };
            match result {
                Ok(socket) => {
                    self.refused.remove(&id);
                    self.listeners.insert(
                        id,
                        Listener {
                            inum,
                            owner,
                            socket,
                            bucket: TokenBucket::full(self.limits.rate(), Instant::now()),
                            suppressed: 0,
                            summarised: Instant::now(),
                        },
                    );
                    said.push(Said::Listening { netns: inum });
                }
                Err(e) => {
                    let why = match e.raw_os_error() {
                        Some(errno) => format!("errno-{errno}"),
                        None => e.to_string(),
                    };
                    if self.refused.get(&id) != Some(&why) {
                        said.push(Said::Refused {
                            netns: inum,
                            why: why.clone(),
                        });
                    }
                    self.refused.insert(id, why);
                }
            }
        }
        said
    }

    /// What the listeners have: packets within their namespace's rate,
    /// summaries of those past it, and overflows.
    pub fn drain(&mut self) -> Vec<Said> {
        let mut said = Vec::new();
        let mut buf = vec![0u8; 65536];
        let rate = self.limits.rate();
        let full = TokenBucket::full(rate, Instant::now());
        for l in self.listeners.values_mut() {
            let owner = self.owners.entry(l.owner).or_insert(full);
            for _ in 0..READS_PER_TICK {
                match receive_from_kernel(&l.socket, &mut buf) {
                    Ok(Some(n)) => {
                        for body in wire::parse_messages(&buf[..n]) {
                            let now = Instant::now();
                            // Within the namespace's rate and its
                            // container's, over all of its namespaces.
                            if l.bucket.has(rate, now) && owner.has(rate, now) {
                                l.bucket.spend();
                                owner.spend();
                                said.push(Said::Packet {
                                    netns: l.inum,
                                    body: format!(
                                        "{body} netns={} nflog-group={}",
                                        l.inum, self.limits.group
                                    ),
                                });
                            } else {
                                l.suppressed += 1;
                            }
                        }
                    }
                    // Not the kernel's: dropped.
                    Ok(None) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        said.push(Said::Overflow { netns: l.inum });
                    }
                    Err(_) => break,
                }
            }
            if l.suppressed > 0 && l.summarised.elapsed() >= SUMMARY_EVERY {
                said.push(Said::Suppressed {
                    netns: l.inum,
                    count: std::mem::take(&mut l.suppressed),
                });
                l.summarised = Instant::now();
            }
        }
        said
    }
}

/// One message, if the kernel sent it (a process that may send to the
/// daemon's port, as a container owning its namespace can, is ignored);
/// `Err(WouldBlock)` when there is none.
fn receive_from_kernel(socket: &OwnedFd, buf: &mut [u8]) -> Result<Option<usize>> {
    // SAFETY: a zeroed sockaddr_nl is valid for the kernel to fill.
    let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: buf and from are valid for writes of the lengths given.
    let n = unsafe {
        libc::recvfrom(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut from as *mut libc::sockaddr_nl).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(Error::last_os_error());
    }
    if n == 0 {
        return Err(ErrorKind::WouldBlock.into());
    }
    Ok((from.nl_pid == 0).then_some(n as usize))
}

/// A netlink-netfilter socket in network namespace `inum` of task `tid`
/// (of process `pid`), bound to NFLOG group `group`, copying packets'
/// headers. The namespace is opened through the thread, not the process
/// (a thread may be in another than its main thread), and checked to be
/// `inum` and not the daemon's own, `own_netns`.
fn listen_in(pid: u32, tid: u32, inum: u32, own_netns: u32, group: u16) -> Result<OwnedFd> {
    let netns = File::open(format!("/proc/{pid}/task/{tid}/ns/net"))?;
    let found = netns.metadata()?.ino() as u32;
    if found != inum || found == own_netns {
        return Err(Error::other("namespace-changed"));
    }
    // A thread that enters the namespace and makes the socket there; the
    // daemon's own threads stay where they are.
    let socket = std::thread::scope(|s| {
        s.spawn(|| -> Result<OwnedFd> {
            // SAFETY: a valid namespace fd; setns affects this thread only.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(Error::last_os_error());
            }
            // SAFETY: plain socket(2).
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_NETFILTER,
                )
            };
            if fd < 0 {
                return Err(Error::last_os_error());
            }
            // SAFETY: a fresh fd that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .join()
        .map_err(|_| Error::other("the thread making the socket panicked"))?
    })?;
    // SAFETY: a zeroed sockaddr_nl is valid; the kernel picks the port.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: addr is a sockaddr_nl of the size given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if bound != 0 {
        return Err(Error::last_os_error());
    }
    let request = wire::bind_request(group);
    // SAFETY: request is valid for reads of its length.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(Error::last_os_error());
    }
    wire::expect_ack(&socket)?;
    Ok(socket)
}
