//! The 2016 interface as files (docs/files.md): `PID/attr/ptags`,
//! `PID/task/TID/attr/ptags`, `PID/audit_containerid` and `self`, in a
//! FUSE file system. Each read and write is a request of the process that
//! made the system call, handed to the daemon's thread like a socket's:
//! the same caller checks, the same records, the same one serialization
//! point.

mod nodes;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyWrite, WriteFlags,
};
use log::{info, warn};
use ptags_bpf::FactsReader;
use ptags_proto::{Request, Response, Target};

use self::nodes::{Kind, Node};
use super::peer::{Ceiling, Peer};
use super::quota::{ChangeRate, Holder};
use super::server::Job;
use crate::config::Limits;
use crate::host::pidns::{share_namespace, PidView};
use crate::host::{Creds, Pidfd};

/// Hands a job to the daemon's thread; false when it has stopped.
pub type SubmitFn = Arc<dyn Fn(Job) -> bool + Send + Sync>;

/// No entry or attribute is cached: a name means another task for
/// another reader's PID namespace, and tasks come and go.
const NO_CACHE: Duration = Duration::ZERO;

/// How long a file request waits for the daemon (a daemon stopping
/// answers none).
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// The largest write taken in one request: a whole 32,700-byte value
/// with its name, in one write().
const MAX_WRITE: u32 = 128 << 10;

/// The mounted files; unmounted when dropped.
pub struct Files {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl Files {
    /// Mounts the files at `mountpoint` (made if missing), after
    /// detaching a stale mount a killed daemon left there.
    pub fn mount(
        mountpoint: &Path,
        submit: SubmitFn,
        facts: FactsReader,
        limits: &Limits,
    ) -> Result<Files> {
        // A killed daemon's mount answers nothing (ENOTCONN) until
        // detached.
        if mounted_at(mountpoint) {
            detach(mountpoint);
            info!("detached a stale mount at {}", mountpoint.display());
        }
        std::fs::create_dir_all(mountpoint)
            .with_context(|| format!("making {}", mountpoint.display()))?;
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("ptags".into()),
            fuser::MountOption::Subtype("ptags".into()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoExec,
        ];
        // Every user reaches the files; the daemon judges each request.
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(2);
        let tree = Tree {
            submit,
            facts,
            changes: ChangeRate::new(limits.changes_per_sec_per_uid, limits.changes_burst_per_uid),
        };
        let session = fuser::spawn_mount(tree, mountpoint, &config)
            .with_context(|| format!("mounting the files at {}", mountpoint.display()))?;
        Ok(Files {
            session: Some(session),
            mountpoint: mountpoint.to_owned(),
        })
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        // Detached first: a reader in the middle of a request does not
        // keep the mount (or the daemon's stop) waiting.
        detach(&self.mountpoint);
        if let Some(session) = self.session.take() {
            if let Err(e) = session.join() {
                warn!("the files' session: {e}");
            }
        }
    }
}

/// Whether a FUSE file system of ours is mounted at `path`.
fn mounted_at(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    mounts.lines().any(|l| {
        let Some((left, right)) = l.split_once(" - ") else {
            return false;
        };
        let mut fs = right.split(' ');
        let (kind, source) = (fs.next().unwrap_or(""), fs.next());
        left.split(' ').nth(4) == Some(&*want)
            && kind.starts_with("fuse")
            && source == Some("ptags")
    })
}

fn detach(path: &Path) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a NUL-terminated path; MNT_DETACH unmounts lazily.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

struct Tree {
    submit: SubmitFn,
    /// Who makes each system call, as the kernel has it.
    facts: FactsReader,
    /// Each user's rate of changes, as the socket's (counted apart).
    changes: ChangeRate,
}

/// The errno of a daemon error, for the kernel.
fn errno(e: &crate::error::Error) -> Errno {
    Errno::from_i32(e.errno().number())
}

impl Tree {
    /// Asks the daemon as the process that made the system call: its
    /// credentials and capabilities from the kernel, held by a pidfd for
    /// the request.
    fn ask(&self, req: &fuser::Request, request: Request) -> Result<Response, crate::error::Error> {
        let tid = req.pid();
        let thread = self.facts.read(tid)?;
        let pid = thread.tgid;
        let writer = Pidfd::open(pid)?;
        // Credentials are a thread's: the daemon judges the process's, so
        // a thread whose own differ (one that dropped its IDs or
        // capabilities alone) is judged without capabilities and tags,
        // as a socket's writer that is not its connector.
        let thread = Creds::of(&thread);
        let process = Creds::read(&self.facts, pid)?;
        let same = (thread.uids, thread.gids, thread.cap_eff, thread.init_userns)
            == (
                process.uids,
                process.gids,
                process.cap_eff,
                process.init_userns,
            );
        let (ceiling, connector_wrote) = match same {
            true => (
                Ceiling {
                    cap_eff: thread.cap_eff,
                    init_userns: thread.init_userns,
                },
                true,
            ),
            false => (Ceiling::NOTHING, false),
        };
        if request.changes() {
            let holder = Holder::of(thread.uids[0], share_namespace(pid).unwrap_or(0));
            let privileged = same && thread.privileged();
            if !privileged && !self.changes.allow(holder, Instant::now()) {
                return Err(crate::error::Error::new(
                    ptags_core::Errno::Eagain,
                    "more changes than limits.changes_per_sec_per_uid allows; try again",
                ));
            }
        }
        let peer = Peer {
            writer,
            ceiling,
            connector_wrote,
        };
        let (reply, answer) = sync_channel(1);
        let job = Job {
            peer,
            request,
            reply,
            priority: false,
        };
        if !(self.submit)(job) {
            return Err(crate::error::Error::new(
                ptags_core::Errno::Eagain,
                "the daemon is stopping",
            ));
        }
        match answer.recv_timeout(ANSWER_WAIT) {
            Ok((result, _)) => result,
            Err(_) => Err(crate::error::Error::new(
                ptags_core::Errno::Eagain,
                "the daemon did not answer",
            )),
        }
    }

    /// The reader's PID namespace, when it is not the daemon's.
    fn view(&self, req: &fuser::Request) -> Option<PidView> {
        let facts = self.facts.read(req.pid()).ok()?;
        PidView::of(facts.tgid, facts.pid_ns.into()).ok().flatten()
    }

    /// The daemon's pid of the process the reader calls `local`.
    fn process(view: Option<PidView>, local: u32) -> Option<u32> {
        match view {
            None => Path::new(&format!("/proc/{local}/status"))
                .exists()
                .then_some(local),
            Some(v) => v.host_pid(local).ok(),
        }
    }

    /// The daemon's tid of process `pid`'s thread the reader calls `local`.
    fn thread(view: Option<PidView>, pid: u32, local: u32) -> Option<u32> {
        let threads = ptags_bpf::procfs::thread_ids(pid)?;
        threads.into_iter().find(|&t| match view {
            None => t == local,
            Some(v) => v.local(t, &format!("/proc/{pid}/task/{t}/status")) == Some(local),
        })
    }

    /// Task `tid` of process `pid` as the reader calls it.
    fn local(view: Option<PidView>, pid: u32, tid: u32) -> Option<u32> {
        match view {
            None => Some(tid),
            Some(v) => v.local(tid, &format!("/proc/{pid}/task/{tid}/status")),
        }
    }

    fn exists(node: Node) -> bool {
        match node {
            Node::Root | Node::SelfLink => true,
            Node::Process(p)
            | Node::ProcessAttr(p)
            | Node::ProcessTags(p)
            | Node::Contid(p)
            | Node::Tasks(p) => Path::new(&format!("/proc/{p}")).exists(),
            Node::Task(p, t) | Node::TaskAttr(p, t) | Node::TaskTags(p, t) => {
                Path::new(&format!("/proc/{p}/task/{t}")).exists()
            }
        }
    }

    fn attr(node: Node) -> FileAttr {
        let (kind, perm) = match node.kind() {
            Kind::Dir => (FileType::Directory, 0o555),
            Kind::Link => (FileType::Symlink, 0o777),
            Kind::File => (FileType::RegularFile, 0o666),
        };
        FileAttr {
            ino: INodeNo(node.ino()),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }

    /// What a file reads: the read format, or the container ID.
    fn content(&self, req: &fuser::Request, node: Node) -> Result<Vec<u8>, Errno> {
        let view = self.view(req);
        let local = |p: u32, t: u32| Tree::local(view, p, t).ok_or(Errno::ENOENT);
        let request = match node {
            Node::ProcessTags(p) => Request::Read {
                target: Target {
                    pid: local(p, p)?,
                    tid: None,
                },
            },
            Node::TaskTags(p, t) => Request::Read {
                target: Target {
                    pid: local(p, p)?,
                    tid: Some(local(p, t)?),
                },
            },
            Node::Contid(p) => Request::ContidGet { pid: local(p, p)? },
            _ => return Err(Errno::EISDIR),
        };
        match self.ask(req, request) {
            Ok(Response::Tags { tags }) => Ok(tags.into_bytes()),
            // As the patches printed it: the number, or -1 when unset.
            Ok(Response::Contid(answer)) => Ok(answer
                .contid
                .map_or("-1".to_owned(), |c| c.to_string())
                .into_bytes()),
            Ok(_) => Err(Errno::EIO),
            Err(e) => Err(errno(&e)),
        }
    }
}

impl Filesystem for Tree {
    fn init(
        &mut self,
        _req: &fuser::Request,
        config: &mut fuser::KernelConfig,
    ) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        Ok(())
    }

    fn lookup(&self, req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (Some(dir), Some(name)) = (Node::from_ino(parent.0), name.to_str()) else {
            return reply.error(Errno::ENOENT);
        };
        let view = self.view(req);
        let found = dir.child(name, |n| match dir {
            Node::Tasks(p) => Tree::thread(view, p, n),
            _ => Tree::process(view, n),
        });
        match found {
            Some(node) if Tree::exists(node) => {
                reply.entry(&NO_CACHE, &Tree::attr(node), Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        _fh: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        match Node::from_ino(ino.0) {
            Some(node) if Tree::exists(node) => reply.attr(&NO_CACHE, &Tree::attr(node)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    /// A truncation (`>` opens with O_TRUNC) changes nothing: these files
    /// hold no bytes of their own. Their mode, owner and times are not
    /// anyone's to change.
    fn setattr(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        _size: Option<u64>,
        atime: Option<fuser::TimeOrNow>,
        mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some() {
            return reply.error(Errno::EPERM);
        }
        match Node::from_ino(ino.0) {
            Some(node) if Tree::exists(node) => reply.attr(&NO_CACHE, &Tree::attr(node)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, req: &fuser::Request, ino: INodeNo, reply: ReplyData) {
        if Node::from_ino(ino.0) != Some(Node::SelfLink) {
            return reply.error(Errno::EINVAL);
        }
        let pid = self.facts.read(req.pid()).ok().map(|f| f.tgid);
        match pid.and_then(|p| Tree::local(self.view(req), p, p)) {
            Some(local) => reply.data(local.to_string().as_bytes()),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &fuser::Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match Node::from_ino(ino.0) {
            // Direct: every read and write reaches the daemon, as the
            // process that made it.
            Some(node) if Tree::exists(node) => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(node) = Node::from_ino(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match self.content(req, node) {
            Ok(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = (start + size as usize).min(bytes.len());
                reply.data(&bytes[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(node) = Node::from_ino(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        // As /proc's attr files and the patches: one write at offset 0.
        if offset != 0 {
            return reply.error(Errno::EINVAL);
        }
        let view = self.view(req);
        let Some(pid) = (match node {
            Node::ProcessTags(p) | Node::TaskTags(p, _) | Node::Contid(p) => {
                Tree::local(view, p, p)
            }
            _ => return reply.error(Errno::EISDIR),
        }) else {
            return reply.error(Errno::ENOENT);
        };
        if let Node::Contid(_) = node {
            let Some(contid) = nodes::parse_contid(data) else {
                return reply.error(Errno::EINVAL);
            };
            return match self.ask(req, Request::ContidSet { pid, contid }) {
                Ok(_) => reply.written(data.len() as u32),
                Err(e) => reply.error(errno(&e)),
            };
        }
        let tid = match node {
            Node::TaskTags(p, t) => match Tree::local(view, p, t) {
                Some(t) => Some(t),
                None => return reply.error(Errno::ENOENT),
            },
            _ => None,
        };
        let Ok(text) = std::str::from_utf8(data) else {
            return reply.error(Errno::EINVAL);
        };
        let mut text = text.to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let result = self.ask(
            req,
            Request::Write {
                target: Target { pid, tid },
                text,
            },
        );
        let failed = result.as_ref().err();
        match nodes::written(data, failed.map(|e| e.line().unwrap_or(1))) {
            Ok(n) => reply.written(n as u32),
            Err(()) => reply.error(failed.map_or(Errno::EIO, errno)),
        }
    }

    fn flush(
        &self,
        _req: &fuser::Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &fuser::Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn readdir(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = Node::from_ino(ino.0).filter(|n| n.kind() == Kind::Dir) else {
            return reply.error(Errno::ENOTDIR);
        };
        let view = self.view(req);
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (dir.ino(), FileType::Directory, ".".into()),
            (Node::Root.ino(), FileType::Directory, "..".into()),
        ];
        for name in dir.fixed_children() {
            if let Some(child) = dir.child(name, |_| None) {
                let kind = Tree::attr(child).kind;
                entries.push((child.ino(), kind, (*name).to_owned()));
            }
        }
        let tasks: Vec<(u32, u32)> = match dir {
            Node::Root => std::fs::read_dir("/proc")
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .map(|p: u32| (p, p))
                        .collect()
                })
                .unwrap_or_default(),
            Node::Tasks(p) => ptags_bpf::procfs::thread_ids(p)
                .unwrap_or_default()
                .into_iter()
                .map(|t| (p, t))
                .collect(),
            _ => Vec::new(),
        };
        for (p, t) in tasks {
            let Some(local) = Tree::local(view, p, t) else {
                continue;
            };
            let node = match dir {
                Node::Root => Node::Process(p),
                _ => Node::Task(p, t),
            };
            entries.push((node.ino(), FileType::Directory, local.to_string()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
