//! The router and the sinks behind it: every record goes to every sink
//! of the host (a sink keeps what it wants), and to the copy of each
//! container in its scope. Adding a sink (an exporter, metrics) or a
//! container's copy touches no source.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::copies::{ContainerCopy, Report};
use ptags_bpf::LocalPids;

/// One record on its way to the sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its type's name (`SYSCALL`, `CONTAINER_ID`, `PTAGS_OP`, ...).
    pub kind: Cow<'static, str>,
    /// When it happened, since the epoch.
    pub time: Duration,
    /// The kernel's serial, for the kernel's records and those that
    /// join their event; a daemon record's is given where it is written.
    pub serial: Option<u64>,
    /// `key=value ...`, encoded as the audit format encodes values.
    pub body: String,
    /// The process the record concerns, when its source names one.
    pub pid: Option<u32>,
    /// The container of the task the record concerns, if any.
    pub contid: Option<u64>,
    /// An auxiliary record of the daemon's record just before it (its
    /// `CONTAINER_ID`, its `NS_INFO`): written with the same stamp, so
    /// that readers group them as one event.
    pub follows: bool,
    /// The containers with a copy that take it: those of the task it
    /// concerns and their ancestors. Given by the pipeline, only while
    /// some container has a copy.
    pub scope: Option<Arc<[u64]>>,
    /// The pids of the task it concerns as its own PID namespace sees
    /// them, when its source told them (a BPF event, a task that exited).
    pub local: Option<LocalPids>,
}

impl Record {
    /// A record of the daemon's own, about something at `time`.
    pub fn daemon(kind: &'static str, time: Duration, body: String) -> Record {
        Record {
            kind: kind.into(),
            time,
            serial: None,
            body,
            pid: None,
            contid: None,
            follows: false,
            scope: None,
            local: None,
        }
    }

    /// An auxiliary record of `main`, which is routed just before it.
    pub fn follower(main: &Record, kind: &'static str, body: String) -> Record {
        Record {
            kind: kind.into(),
            time: main.time,
            serial: main.serial,
            body,
            pid: main.pid,
            contid: main.contid,
            follows: true,
            scope: main.scope.clone(),
            local: main.local,
        }
    }
}

/// What a sink has done, for `ptags status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkStatus {
    pub name: &'static str,
    /// Where its records go (a file, an address).
    pub target: String,
    pub written: u64,
    /// Records it could not write (counted, and said in its output).
    pub lost: u64,
    /// The position of its chain, for sinks that seal.
    pub seq: Option<u64>,
    /// Whether it writes now (false: suspended by a disk action).
    pub writing: bool,
}

/// Where records go.
pub trait Sink {
    /// Takes a record; it is written by the next `commit` at the latest.
    fn push(&mut self, record: Record);
    /// Writes what it has taken, as its flush policy says. Called before
    /// a request's answer goes out, so that no change is seen before its
    /// record is written. An error stops the daemon (a disk action of
    /// `stop`).
    fn commit(&mut self) -> Result<()>;
    /// Upkeep, about once a second: free space, rotation.
    fn tick(&mut self) -> Result<()>;
    fn status(&self) -> SinkStatus;
}

/// Hands each record to every sink of the host, and to the copies of
/// the containers in its scope.
pub struct Router {
    sinks: Vec<Box<dyn Sink>>,
    copies: HashMap<u64, ContainerCopy>,
}

impl Router {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Router {
        Router {
            sinks,
            copies: HashMap::new(),
        }
    }

    pub fn route(&mut self, record: Record) {
        if let Some(scope) = &record.scope {
            for id in scope.iter() {
                if let Some(copy) = self.copies.get_mut(id) {
                    copy.push(record.clone());
                }
            }
        }
        if let Some((last, others)) = self.sinks.split_last_mut() {
            for sink in others {
                sink.push(record.clone());
            }
            last.push(record);
        }
    }

    /// Commits every sink; the first error, after all were tried.
    pub fn commit(&mut self) -> Result<()> {
        self.each(|s| s.commit())
    }

    pub fn tick(&mut self) -> Result<()> {
        self.each(|s| s.tick())
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> Result<()>) -> Result<()> {
        let mut first = Ok(());
        let copies = self.copies.values_mut().map(|c| c as &mut dyn Sink);
        for sink in self.sinks.iter_mut().map(|s| s.as_mut()).chain(copies) {
            let r = f(sink);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Puts container `id`'s copy in place (ending the one it had).
    pub fn set_copy(&mut self, copy: ContainerCopy) {
        let id = copy.contid();
        if let Some(mut old) = self.copies.insert(id, copy) {
            old.close();
            // Its readers end with it; a follower follows again.
        }
    }

    /// Ends container `id`'s copy: its readers take what is queued.
    pub fn remove_copy(&mut self, id: u64) -> Option<ContainerCopy> {
        let mut copy = self.copies.remove(&id)?;
        copy.close();
        Some(copy)
    }

    pub fn copy(&self, id: u64) -> Option<&ContainerCopy> {
        self.copies.get(&id)
    }

    pub fn copy_mut(&mut self, id: u64) -> Option<&mut ContainerCopy> {
        self.copies.get_mut(&id)
    }

    pub fn copies(&self) -> impl Iterator<Item = &ContainerCopy> {
        self.copies.values()
    }

    pub fn has_copies(&self) -> bool {
        !self.copies.is_empty()
    }

    /// What the copies have to tell the host.
    pub fn take_reports(&mut self) -> Vec<Report> {
        self.copies
            .values_mut()
            .flat_map(|c| c.take_reports())
            .collect()
    }

    pub fn statuses(&self) -> Vec<SinkStatus> {
        self.sinks.iter().map(|s| s.status()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    struct Collect(Rc<RefCell<Vec<Record>>>, bool);

    impl Sink for Collect {
        fn push(&mut self, record: Record) {
            if !self.1 || record.contid.is_some() {
                self.0.borrow_mut().push(record);
            }
        }
        fn commit(&mut self) -> Result<()> {
            anyhow::ensure!(!self.1, "full");
            Ok(())
        }
        fn tick(&mut self) -> Result<()> {
            Ok(())
        }
        fn status(&self) -> SinkStatus {
            SinkStatus {
                name: "collect",
                target: String::new(),
                written: self.0.borrow().len() as u64,
                lost: 0,
                seq: None,
                writing: true,
            }
        }
    }

    #[test]
    fn every_sink_sees_every_record_and_keeps_what_it_wants() {
        let all = Rc::new(RefCell::new(Vec::new()));
        let contained = Rc::new(RefCell::new(Vec::new()));
        let mut router = Router::new(vec![
            Box::new(Collect(Rc::clone(&all), false)),
            Box::new(Collect(Rc::clone(&contained), true)),
        ]);
        let host = Record::daemon("PTAGS_OP", Duration::from_secs(1), "op=write".into());
        let inside = Record {
            contid: Some(7),
            ..host.clone()
        };
        router.route(host.clone());
        router.route(inside.clone());
        assert_eq!(*all.borrow(), [host, inside.clone()]);
        assert_eq!(*contained.borrow(), [inside]);
        // One sink failing does not keep the others from committing.
        assert!(router.commit().is_err());
        assert_eq!(router.statuses().len(), 2);
    }

    #[test]
    fn a_copy_takes_the_records_of_its_scope_alone() {
        use crate::pipeline::copies::{ContainerCopy, CopyPlaces};
        use ptags_audit::policy::Policy;
        let places = CopyPlaces {
            log_root: "/nonexistent".into(),
            state_root: "/nonexistent".into(),
            audit: crate::config::Config::defaults().audit,
        };
        let mut router = Router::new(Vec::new());
        let mut followers = Vec::new();
        for id in [7, 8] {
            let policy = Policy::parse("log off\n").unwrap();
            let mut copy = ContainerCopy::open(id, "test", policy, &places).unwrap();
            followers.push(copy.follow());
            router.set_copy(copy);
        }
        let mut nested = Record::daemon("PTAGS_OP", Duration::from_secs(1), "op=write".into());
        // A record of container 9, nested in 7.
        nested.contid = Some(9);
        nested.scope = Some(Arc::from([7u64]));
        router.route(nested);
        router.route(Record::daemon(
            "PTAGS_OP",
            Duration::from_secs(1),
            "op=x".into(),
        ));
        router.commit().unwrap();
        let taken = |i: usize| {
            followers[i]
                .take(Duration::ZERO)
                .map_or(0, |b| b.events.len())
        };
        assert_eq!((taken(0), taken(1)), (1, 0));
        assert!(router.remove_copy(7).is_some() && followers[0].is_closed());
    }
}
