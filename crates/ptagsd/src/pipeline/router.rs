//! The router and the sinks behind it: every record goes to every sink;
//! a sink keeps what it wants. Adding a sink (a container's own copy of
//! its records, an exporter, metrics) touches no source.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::Result;

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

/// Hands each record to every sink.
pub struct Router {
    sinks: Vec<Box<dyn Sink>>,
}

impl Router {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Router {
        Router { sinks }
    }

    pub fn route(&mut self, record: Record) {
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
        for sink in &mut self.sinks {
            let r = f(sink.as_mut());
            if first.is_ok() {
                first = r;
            }
        }
        first
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
}
