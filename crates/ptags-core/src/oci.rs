//! The OCI runtime hooks protocol, as `ptags oci-hook` reads it: the
//! container state a runtime writes on a hook's standard input, the
//! stage the hook runs at, and the label (container ID and tags) the
//! container gets from its annotations.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::contid::{parse_contid, ContainerId};
use crate::line::parse_line;

/// The annotation that names the container's audit container ID.
pub const CONTID_ANNOTATION: &str = "io.ptags.contid";
/// The annotation whose value is a text of the write language applied
/// to the container's first process.
pub const TAGS_ANNOTATION: &str = "io.ptags.tags";
/// `false` leaves the container without the setns policy: processes
/// entering it later keep their own labels, and no system call pays for
/// the policy. `true` is the default.
pub const JOIN_ANNOTATION: &str = "io.ptags.join";
/// `off` leaves the container without a device list of ptags' (its
/// runtime's cgroup rules alone apply); `runtime`, the default, holds it
/// to the list its bundle's config.json gives the runtime.
pub const DEVICES_ANNOTATION: &str = "io.ptags.devices";
/// More than any runtime writes; a bigger input is refused unread.
pub const MAX_STATE_BYTES: usize = 4 << 20;
/// runc allows far shorter IDs; this only bounds what is hashed and shown.
pub const MAX_ID_BYTES: usize = 1024;

/// Why a hook's input cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    #[error("the container state is more than {MAX_STATE_BYTES} bytes")]
    TooBig,
    #[error("the container state is not valid JSON of the OCI state: {0}")]
    Json(String),
    #[error("the container ID is empty")]
    EmptyId,
    #[error("the container ID is longer than {MAX_ID_BYTES} bytes")]
    LongId,
    #[error("unknown container status {0:?} (creating, created, running or stopped)")]
    Status(String),
    #[error("the state has no valid pid of the container's process (at {0})")]
    NoPid(&'static str),
    #[error("unknown hook stage {0:?}: give createRuntime or poststop")]
    Stage(String),
    #[error("status {status:?} is not that of a stage ptags handles: give the stage (createRuntime or poststop)")]
    NoStage { status: String },
    #[error("annotation {CONTID_ANNOTATION}: {0}")]
    Contid(String),
    #[error("annotation {JOIN_ANNOTATION}: {0:?} is neither true nor false")]
    Join(String),
    #[error("annotation {DEVICES_ANNOTATION}: {0:?} is neither runtime nor off")]
    Devices(String),
    #[error("annotation {TAGS_ANNOTATION}, line {line}: {reason}")]
    Tags { line: usize, reason: String },
}

/// The state of a container (OCI runtime spec, "State"). Unknown fields
/// are ignored: runtimes add their own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: String,
    /// Absent, or 0, once the container's process is gone.
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub bundle: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

const STATUSES: [&str; 4] = ["creating", "created", "running", "stopped"];

impl State {
    pub fn parse(input: &[u8]) -> Result<State, OciError> {
        if input.len() > MAX_STATE_BYTES {
            return Err(OciError::TooBig);
        }
        let state: State =
            serde_json::from_slice(input).map_err(|e| OciError::Json(e.to_string()))?;
        if state.id.is_empty() {
            return Err(OciError::EmptyId);
        }
        if state.id.len() > MAX_ID_BYTES {
            return Err(OciError::LongId);
        }
        if !STATUSES.contains(&state.status.as_str()) {
            return Err(OciError::Status(state.status));
        }
        Ok(state)
    }

    /// The container's first process, which must be there at `stage`.
    pub fn pid(&self, stage: Stage) -> Result<u32, OciError> {
        self.pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0 && p <= crate::contid::PID_MAX)
            .ok_or(OciError::NoPid(stage.name()))
    }
}

/// The hooks ptags acts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The container's namespaces exist and its process waits to run
    /// the user's program: it is labelled now, before it can start.
    CreateRuntime,
    /// The container has stopped: its end must be on record.
    Poststop,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::CreateRuntime => "createRuntime",
            Stage::Poststop => "poststop",
        }
    }

    /// A stage by its name in config.json (`prestart`, run in the same
    /// place and deprecated, counts as createRuntime).
    pub fn parse(name: &str) -> Result<Stage, OciError> {
        match name {
            "createRuntime" | "prestart" => Ok(Stage::CreateRuntime),
            "poststop" => Ok(Stage::Poststop),
            _ => Err(OciError::Stage(name.to_owned())),
        }
    }

    /// The stage a state's status implies when none is given.
    pub fn of_status(status: &str) -> Result<Stage, OciError> {
        match status {
            "creating" => Ok(Stage::CreateRuntime),
            "stopped" => Ok(Stage::Poststop),
            _ => Err(OciError::NoStage {
                status: status.to_owned(),
            }),
        }
    }
}

/// Where a container's ID came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContidSource {
    Annotation,
    /// Derived from the OCI container ID by [`derived_contid`].
    Derived,
}

/// What a container is labelled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub contid: ContainerId,
    pub source: ContidSource,
    /// A text of the write language, checked line by line.
    pub tags: Option<String>,
    /// Whether processes entering the container later join it.
    pub join: bool,
    /// Whether it gets the device list of its bundle's config.json.
    pub devices: bool,
}

/// The container ID of an OCI container without the annotation: the
/// same for the same OCI ID on every machine and in every run, so that
/// a container's records can be found from its name. 63 bits (it prints
/// as a positive number everywhere), never 0.
pub fn derived_contid(oci_id: &str) -> ContainerId {
    let hash = blake3::Hasher::new_derive_key("ptags 2026 OCI container ID")
        .update(oci_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    let id = (u64::from_le_bytes(first) >> 1).max(1);
    ContainerId::new(id).expect("63 bits are never the unset value")
}

/// The label of the container of `state`, from its annotations.
pub fn label(state: &State) -> Result<Label, OciError> {
    let (contid, source) = match state.annotations.get(CONTID_ANNOTATION) {
        Some(text) => match parse_contid(text) {
            Ok(Some(id)) => (id, ContidSource::Annotation),
            Ok(None) => return Err(OciError::Contid(format!("{text:?} is the unset value"))),
            Err(e) => return Err(OciError::Contid(e.to_string())),
        },
        None => (derived_contid(&state.id), ContidSource::Derived),
    };
    let tags = match state.annotations.get(TAGS_ANNOTATION) {
        Some(text) => {
            for (i, line) in text.split('\n').enumerate() {
                parse_line(line).map_err(|e| OciError::Tags {
                    line: i + 1,
                    reason: e.to_string(),
                })?;
            }
            Some(text.clone())
        }
        None => None,
    };
    let join = match state.annotations.get(JOIN_ANNOTATION).map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(OciError::Join(other.to_owned())),
    };
    let devices = match state
        .annotations
        .get(DEVICES_ANNOTATION)
        .map(String::as_str)
    {
        None | Some("runtime") => true,
        Some("off") => false,
        Some(other) => return Err(OciError::Devices(other.to_owned())),
    };
    Ok(Label {
        contid,
        source,
        tags,
        join,
        devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(extra: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.2.0","id":"web-1","status":"creating","pid":4242,"bundle":"/b"{extra}}}"#
        )
    }

    #[test]
    fn a_runtime_state_parses_with_unknown_fields() {
        let s = State::parse(state(r#","annotations":{"a":"b"},"x-runtime":{"y":1}"#).as_bytes())
            .unwrap();
        assert_eq!(s.id, "web-1");
        assert_eq!(s.pid(Stage::CreateRuntime), Ok(4242));
        assert_eq!(s.annotations["a"], "b");
    }

    #[test]
    fn bad_states_are_refused_with_the_reason() {
        let cases: [(&str, &str); 7] = [
            ("{", "not valid JSON"),
            (r#"{"id":"x","status":"creating"}"#, "ociVersion"),
            (&state("").replace("web-1", ""), "ID is empty"),
            (
                &state("").replace("creating", "paused"),
                "unknown container status",
            ),
            (&state(r#","pid":"x""#), "not valid JSON"),
            (&state(r#","annotations":{"a":1}"#), "not valid JSON"),
            (
                &state("").replace("web-1", &"x".repeat(MAX_ID_BYTES + 1)),
                "longer",
            ),
        ];
        for (input, why) in cases {
            let e = State::parse(input.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{input}: {e}");
        }
        assert_eq!(
            State::parse(&vec![b' '; MAX_STATE_BYTES + 1]),
            Err(OciError::TooBig)
        );
    }

    #[test]
    fn the_pid_must_be_a_process() {
        for pid in ["0", "-5", "4194305", "99999999999"] {
            let s = State::parse(state("").replace("4242", pid).as_bytes()).unwrap();
            assert_eq!(
                s.pid(Stage::Poststop),
                Err(OciError::NoPid("poststop")),
                "{pid}"
            );
        }
        let s = State::parse(state("").replace(r#","pid":4242"#, "").as_bytes()).unwrap();
        assert!(s.pid(Stage::CreateRuntime).is_err());
    }

    #[test]
    fn stages_by_name_and_by_status() {
        assert_eq!(Stage::parse("createRuntime"), Ok(Stage::CreateRuntime));
        assert_eq!(Stage::parse("prestart"), Ok(Stage::CreateRuntime));
        assert_eq!(Stage::parse("poststop"), Ok(Stage::Poststop));
        assert!(Stage::parse("createContainer").is_err());
        assert_eq!(Stage::of_status("creating"), Ok(Stage::CreateRuntime));
        assert_eq!(Stage::of_status("stopped"), Ok(Stage::Poststop));
        assert!(Stage::of_status("running").is_err());
    }

    #[test]
    fn the_derived_id_is_stable_and_spread() {
        let a = derived_contid("web-1");
        assert_eq!(a, derived_contid("web-1"));
        assert_ne!(a, derived_contid("web-2"));
        // Fixed forever: records of old containers must stay findable.
        assert_eq!(a.get(), derived_contid("web-1").get());
        let ids: std::collections::HashSet<u64> = (0..10_000)
            .map(|i| derived_contid(&format!("c{i}")).get())
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|&id| id > 0 && id < 1 << 63));
    }

    #[test]
    fn the_label_comes_from_the_annotations() {
        let s = State::parse(
            state(r#","annotations":{"io.ptags.contid":"77","io.ptags.tags":"+@app:web\n+tier:front"}"#)
                .as_bytes(),
        )
        .unwrap();
        let l = label(&s).unwrap();
        assert_eq!(l.contid.get(), 77);
        assert_eq!(l.source, ContidSource::Annotation);
        assert_eq!(l.tags.as_deref(), Some("+@app:web\n+tier:front"));
        assert!(l.join);

        let plain = State::parse(state("").as_bytes()).unwrap();
        let l = label(&plain).unwrap();
        assert_eq!(
            (l.contid, l.source, l.tags),
            (derived_contid("web-1"), ContidSource::Derived, None)
        );
        let off = State::parse(state(r#","annotations":{"io.ptags.join":"false"}"#).as_bytes());
        assert!(!label(&off.unwrap()).unwrap().join);
    }

    #[test]
    fn bad_annotations_are_refused_with_the_reason() {
        let with = |k: &str, v: &str| {
            let s = State::parse(state(&format!(r#","annotations":{{"{k}":{v:?}}}"#)).as_bytes())
                .unwrap();
            label(&s).unwrap_err().to_string()
        };
        assert!(with(CONTID_ANNOTATION, "-1").contains("unset"));
        assert!(with(CONTID_ANNOTATION, "0x10").contains("io.ptags.contid"));
        assert!(with(CONTID_ANNOTATION, "").contains("io.ptags.contid"));
        assert!(with(JOIN_ANNOTATION, "no").contains("neither true nor false"));
        let e = with(TAGS_ANNOTATION, "+@app:web\n%x");
        assert!(e.starts_with("annotation io.ptags.tags, line 2:"), "{e}");
        // `+` takes no value, in an annotation as anywhere.
        let e = with(TAGS_ANNOTATION, "+@app\n+tier=front");
        assert!(
            e.starts_with("annotation io.ptags.tags, line 2:") && e.contains("takes no value"),
            "{e}"
        );
    }
}
