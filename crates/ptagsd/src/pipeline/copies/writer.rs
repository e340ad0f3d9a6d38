//! A container's own log: `LOG_DIR/containers/ID/audit.log`, sealed with
//! a chain and key of its own (`STATE_DIR/containers/ID/audit.key`, the
//! tail beside it), rotated within the policy's budget, written by a
//! thread of its own from the copy's queue: a slow disk or a full budget
//! costs the pipeline nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use log::warn;
use ptags_audit::policy::LogBudget;

use super::queue::{Bounds, Queue};
use crate::config::{Audit, DiskAction, Flush};
use crate::pipeline::log_sink::{load_key, now, LogFile};
use crate::pipeline::router::Sink;

/// Where a container's copy is kept.
pub fn log_dir(log_root: &Path, contid: u64) -> PathBuf {
    log_root.join("containers").join(contid.to_string())
}

pub fn state_dir(state_root: &Path, contid: u64) -> PathBuf {
    state_root.join("containers").join(contid.to_string())
}

/// The writer thread's end, held by the copy.
pub struct LogWriter {
    pub queue: Arc<Queue>,
    pub dir: PathBuf,
    pub written: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Opens the log (its opening record is written now: an error is the
    /// caller's to report) and starts its thread. `instance` names the
    /// container (its creation): the log of an earlier container with the
    /// same ID is put aside, never continued.
    pub fn start(
        contid: u64,
        dirs: (&Path, &Path),
        instance: &str,
        host: &Audit,
        budget: LogBudget,
        bounds: Bounds,
    ) -> Result<LogWriter> {
        let (log_root, state_root) = dirs;
        let dir = log_dir(log_root, contid);
        let state = state_dir(state_root, contid);
        set_aside_another(&dir, &state, instance)?;
        for d in [&dir, &state] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            // A link put in its place would send the records elsewhere.
            if std::fs::symlink_metadata(d)?.file_type().is_symlink() {
                anyhow::bail!("{} is a symbolic link", d.display());
            }
        }
        std::fs::write(state.join("instance"), instance)
            .with_context(|| format!("writing {}", state.display()))?;
        let key = load_key(&state.join("audit.key"))?;
        let mut config = host.clone();
        config.max_log_file_mib = budget.file_mib;
        config.num_logs = budget.files;
        // A copy never stops the daemon nor waits for a sync per record:
        // what a full disk costs it is counted in the copy.
        config.disk_full_action = DiskAction::Syslog;
        config.space_left_action = DiskAction::Ignore;
        config.space_left_mib = 0;
        if matches!(config.flush, Flush::Data | Flush::Sync) {
            config.flush = Flush::Incremental;
        }
        let mut log = LogFile::open(&dir, &state, &config, key)
            .with_context(|| format!("opening {}", dir.display()))?;
        let queue = Queue::new(bounds);
        let written = Arc::new(AtomicU64::new(0));
        let (q, w) = (Arc::clone(&queue), Arc::clone(&written));
        let thread = std::thread::Builder::new()
            .name(format!("copy-{contid}"))
            .spawn(move || write_loop(&mut log, &q, &w))
            .context("starting a copy's writer")?;
        Ok(LogWriter {
            queue,
            dir,
            written,
            thread: Some(thread),
        })
    }
}

/// Renames the log and state of an earlier container with this ID (to
/// `ID.ended-SECONDS`), so that a new container's copy starts its own.
fn set_aside_another(dir: &Path, state: &Path, instance: &str) -> Result<()> {
    let was = std::fs::read_to_string(state.join("instance")).ok();
    if was.as_deref() == Some(instance) || !(dir.exists() || state.exists()) {
        return Ok(());
    }
    let secs = now().as_secs();
    for d in [dir, state] {
        if d.exists() {
            let mut aside = d.as_os_str().to_owned();
            aside.push(format!(".ended-{secs}"));
            std::fs::rename(d, &aside).with_context(|| format!("setting {} aside", d.display()))?;
        }
    }
    Ok(())
}

impl Drop for LogWriter {
    /// Writes what is queued and waits for the thread.
    fn drop(&mut self) {
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_loop(log: &mut LogFile, queue: &Queue, written: &AtomicU64) {
    let mut last_tick = Instant::now();
    while let Some(batch) = queue.take(Duration::from_secs(1)) {
        if let Some(lost) = batch.lost_record("copy") {
            log.push(lost);
        }
        let mut n = 0;
        for event in &batch.events {
            for r in &event.records {
                log.push(r.clone());
                n += 1;
            }
        }
        // Errors come only with a disk action of `stop`, which a copy
        // does not have.
        if let Err(e) = log.commit() {
            warn!("a container's copy: {e:#}");
        }
        written.fetch_add(n, Ordering::Relaxed);
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            if let Err(e) = log.tick() {
                warn!("a container's copy: {e:#}");
            }
        }
    }
    let _ = log.commit();
}
