//! The audit container ID: its text forms and the rules for setting it.
//!
//! [`decide`] is the whole decision of `audit-container-id.md` as a pure
//! function of a snapshot of facts that the daemon gathers from the live
//! processes and its registry.

use std::fmt;
use std::str::FromStr;

use crate::errno::Errno;

/// A set audit container ID. `(u64)-1` means unset and is never a
/// `ContainerId`: an unset ID is `Option::<ContainerId>::None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(u64);

/// The raw value of an unset ID.
pub const UNSET: u64 = u64::MAX;

impl ContainerId {
    /// `None` for the unset value.
    pub const fn new(raw: u64) -> Option<ContainerId> {
        if raw == UNSET {
            None
        } else {
            Some(ContainerId(raw))
        }
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContidParseError {
    #[error("empty container ID")]
    Empty,
    #[error("{0:?} is not a container ID: expected a decimal number below 18446744073709551615, '-1' or 'unset'")]
    NotANumber(String),
    #[error("a container chain starts with the task's own ID, not with a '^' parent")]
    ChainStartsWithParent,
    #[error("a container chain may not hold the unset value")]
    UnsetInChain,
}

/// How to print the unset value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// As raw records print it: `-1`.
    Raw,
    /// As interpreted output prints it: `unset`.
    Interpreted,
}

/// The largest pid Linux hands out (`PID_MAX_LIMIT` on 64-bit).
pub const PID_MAX: u32 = 1 << 22;

/// Prints a possibly unset ID.
pub fn format_contid(id: Option<ContainerId>, style: Style) -> String {
    match (id, style) {
        (Some(id), _) => id.to_string(),
        (None, Style::Raw) => "-1".to_owned(),
        (None, Style::Interpreted) => "unset".to_owned(),
    }
}

/// Parses an ID: a decimal number, or `-1` / `unset` for the unset value.
/// Only plain ASCII digits are accepted (no sign, no spaces, no `0x`).
pub fn parse_contid(text: &str) -> Result<Option<ContainerId>, ContidParseError> {
    match text {
        "" => Err(ContidParseError::Empty),
        "-1" | "unset" => Ok(None),
        _ if !text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(ContidParseError::NotANumber(text.to_owned()))
        }
        _ => match text.parse::<u64>() {
            Ok(raw) => Ok(ContainerId::new(raw)),
            Err(_) => Err(ContidParseError::NotANumber(text.to_owned())),
        },
    }
}

/// A task's ID followed by its ancestors' IDs up to the outermost
/// container: `4,^2,^1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain(pub Vec<ContainerId>);

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            match i {
                0 => write!(f, "{id}")?,
                _ => write!(f, ",^{id}")?,
            }
        }
        Ok(())
    }
}

/// Formats several chains (the containers sharing a network namespace):
/// `2,^1,3,^1`. No chain at all prints as the unset value.
pub fn format_chains(chains: &[Chain], style: Style) -> String {
    if chains.iter().all(|c| c.0.is_empty()) {
        return format_contid(None, style);
    }
    let parts: Vec<String> = chains
        .iter()
        .filter(|c| !c.0.is_empty())
        .map(Chain::to_string)
        .collect();
    parts.join(",")
}

/// The chains as the container `own` may see them: those that pass
/// through it, each cut after it (a container is not told its ancestors,
/// nor the other containers a record names).
pub fn chains_within(chains: &[Chain], own: ContainerId) -> Vec<Chain> {
    chains
        .iter()
        .filter_map(|c| {
            let at = c.0.iter().position(|&id| id == own)?;
            Some(Chain(c.0[..=at].to_vec()))
        })
        .collect()
}

/// Parses what [`format_chains`] prints. The unset value gives no chain.
pub fn parse_chains(text: &str) -> Result<Vec<Chain>, ContidParseError> {
    if matches!(text, "-1" | "unset") {
        return Ok(Vec::new());
    }
    let mut chains: Vec<Chain> = Vec::new();
    for item in text.split(',') {
        let (parent, number) = match item.strip_prefix('^') {
            Some(n) => (true, n),
            None => (false, item),
        };
        let id = parse_contid(number)?.ok_or(ContidParseError::UnsetInChain)?;
        match chains.last_mut() {
            Some(chain) if parent => chain.0.push(id),
            None if parent => return Err(ContidParseError::ChainStartsWithParent),
            _ => chains.push(Chain(vec![id])),
        }
    }
    Ok(chains)
}

impl FromStr for Chain {
    type Err = ContidParseError;

    /// Exactly one chain.
    fn from_str(s: &str) -> Result<Chain, ContidParseError> {
        let mut chains = parse_chains(s)?;
        match chains.len() {
            1 => Ok(chains.remove(0)),
            0 => Err(ContidParseError::UnsetInChain),
            _ => Err(ContidParseError::NotANumber(s.to_owned())),
        }
    }
}

/// Walks parent links from `id` to the outermost container. `parent_of`
/// answers `Err(())` for an unknown ID; the walk stops at `max_len` links
/// so that a corrupt registry cannot loop.
pub fn chain_of(
    id: ContainerId,
    max_len: usize,
    parent_of: impl Fn(ContainerId) -> Option<Option<ContainerId>>,
) -> Chain {
    let mut chain = vec![id];
    let mut current = id;
    while chain.len() < max_len {
        match parent_of(current) {
            Some(Some(parent)) if !chain.contains(&parent) => {
                chain.push(parent);
                current = parent;
            }
            _ => break,
        }
    }
    Chain(chain)
}

/// A task, named so that pid reuse cannot confuse it with another: the pid
/// together with the task's start time (boot-relative, as the kernel keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskRef {
    pub pid: u32,
    pub start_time: u64,
}

/// A container as the registry knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Container {
    pub id: ContainerId,
    /// The process that first set the ID (per rule 4: the caller or its parent).
    pub owner: TaskRef,
    /// The enclosing container, for a nested one.
    pub parent: Option<ContainerId>,
    /// 1 for a top-level container, parent's depth + 1 for a nested one.
    pub depth: usize,
}

/// Configurable limits, which the original design lacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most containers alive at once.
    pub max_containers: usize,
    /// Most levels of nesting (1: no nesting).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_containers: 65536,
            max_depth: 8,
        }
    }
}

/// Everything [`decide`] looks at, gathered by the daemon from the live
/// processes (by pidfd, so that pid reuse cannot fool it) and its registry.
#[derive(Debug, Clone)]
pub struct SetRequest<'a> {
    /// The raw requested ID (`UNSET` is refused).
    pub id: u64,
    pub caller: TaskRef,
    pub caller_parent: TaskRef,
    /// CAP_AUDIT_CONTROL in the initial user namespace, held by the caller
    /// itself (never borrowed from its parent).
    pub caller_has_audit_control: bool,
    pub caller_contid: Option<ContainerId>,
    pub target: TaskRef,
    pub target_has_children: bool,
    pub target_threads: u32,
    /// The target's ancestors, its parent first.
    pub target_ancestors: &'a [TaskRef],
    /// The target's current container, if it has an ID.
    pub target_container: Option<Container>,
    /// The container that already holds the requested ID, if any.
    pub existing: Option<Container>,
    /// How many containers are alive now.
    pub container_count: usize,
    pub limits: Limits,
}

/// What a permitted request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A new container: top-level (`parent: None`, op=set) or nested
    /// inside the target's current container (op=nest).
    Create(Container),
    /// The target joins the owner's existing container (op=inject).
    Inject(ContainerId),
}

impl Decision {
    /// The `op=` field of the CONTAINER_OP record.
    pub fn op(&self) -> &'static str {
        match self {
            Decision::Create(c) if c.parent.is_none() => "set",
            Decision::Create(_) => "nest",
            Decision::Inject(_) => "inject",
        }
    }

    pub fn id(&self) -> ContainerId {
        match *self {
            Decision::Create(c) => c.id,
            Decision::Inject(id) => id,
        }
    }
}

/// Decides a request to set the target's container ID, checking the
/// rules in the order the spec gives them.
pub fn decide(req: &SetRequest<'_>) -> Result<Decision, Errno> {
    // 1. Unsetting is never allowed.
    let id = ContainerId::new(req.id).ok_or(Errno::Einval)?;
    // 2. Privilege, of the caller itself.
    if !req.caller_has_audit_control {
        return Err(Errno::Eperm);
    }
    // 3. A target with children or threads could not be moved atomically.
    if req.target_has_children || req.target_threads > 1 {
        return Err(Errno::Ebusy);
    }
    // 4. The target descends from the caller, or from the caller's parent
    // (the runtime whose helper the caller is); never the caller itself.
    // The owner is the one of the two it descends from.
    let owner = if req.target == req.caller {
        return Err(Errno::Exdev);
    } else if req.target_ancestors.contains(&req.caller) {
        req.caller
    } else if req.target_ancestors.contains(&req.caller_parent) {
        req.caller_parent
    } else {
        return Err(Errno::Exdev);
    };
    // 5. An ID, once set, only changes by nesting: the caller is inside the
    // target's container and is not its owner.
    if let Some(current) = req.target_container {
        let nesting = req.caller_contid == Some(current.id) && current.owner != owner;
        if !nesting {
            return Err(Errno::Eexist);
        }
    }
    let parent = req.target_container;
    // 6. An ID in use: only its owner may add members, and only from where
    // the container was made (the same enclosing container).
    if let Some(existing) = req.existing {
        if existing.owner == owner && existing.parent == parent.map(|p| p.id) {
            return Ok(Decision::Inject(id));
        }
        return Err(Errno::Enotuniq);
    }
    // Limits, for a new container.
    if req.container_count >= req.limits.max_containers {
        return Err(Errno::Enospc);
    }
    let depth = parent.map_or(1, |p| p.depth + 1);
    if depth > req.limits.max_depth {
        return Err(Errno::Emlink);
    }
    Ok(Decision::Create(Container {
        id,
        owner,
        parent: parent.map(|p| p.id),
        depth,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_sees_the_chains_through_it_cut_after_it() {
        let id = |n| ContainerId::new(n).unwrap();
        let chains = parse_chains("4,^2,^1,7,^1,9").unwrap();
        let seen = |own| format_chains(&chains_within(&chains, id(own)), Style::Raw);
        assert_eq!(seen(2), "4,^2");
        assert_eq!(seen(1), "4,^2,^1,7,^1");
        assert_eq!(seen(9), "9");
        assert_eq!(seen(5), "-1");
    }

    fn id(n: u64) -> ContainerId {
        ContainerId::new(n).unwrap()
    }

    #[test]
    fn unset_forms() {
        assert_eq!(format_contid(None, Style::Raw), "-1");
        assert_eq!(format_contid(None, Style::Interpreted), "unset");
        assert_eq!(format_contid(Some(id(7)), Style::Interpreted), "7");
        assert_eq!(parse_contid("-1"), Ok(None));
        assert_eq!(parse_contid("unset"), Ok(None));
        assert_eq!(parse_contid("18446744073709551615"), Ok(None));
        assert_eq!(
            parse_contid("18446744073709551614"),
            Ok(Some(id(u64::MAX - 1)))
        );
        assert_eq!(parse_contid("0"), Ok(Some(id(0))));
    }

    #[test]
    fn bad_ids() {
        for bad in [
            "+1",
            " 1",
            "1 ",
            "0x10",
            "-2",
            "18446744073709551616",
            "١",
            "1e3",
        ] {
            assert!(
                matches!(parse_contid(bad), Err(ContidParseError::NotANumber(_))),
                "{bad:?}"
            );
        }
        assert_eq!(parse_contid(""), Err(ContidParseError::Empty));
    }

    #[test]
    fn chains_from_the_spec() {
        let nested = Chain(vec![id(4), id(2), id(1)]);
        assert_eq!(nested.to_string(), "4,^2,^1");
        let shared = [Chain(vec![id(2), id(1)]), Chain(vec![id(3), id(1)])];
        assert_eq!(format_chains(&shared, Style::Raw), "2,^1,3,^1");
        assert_eq!(parse_chains("2,^1,3,^1").unwrap(), shared);
        assert_eq!("4,^2,^1".parse::<Chain>().unwrap(), nested);
        assert_eq!(format_chains(&[], Style::Raw), "-1");
        assert_eq!(format_chains(&[], Style::Interpreted), "unset");
        assert_eq!(parse_chains("unset").unwrap(), vec![]);
        assert_eq!(
            parse_chains("527940429489930240").unwrap(),
            vec![Chain(vec![id(527940429489930240)])]
        );
    }

    #[test]
    fn bad_chains() {
        assert_eq!(
            parse_chains("^1"),
            Err(ContidParseError::ChainStartsWithParent)
        );
        assert_eq!(parse_chains("1,^-1"), Err(ContidParseError::UnsetInChain));
        assert_eq!(parse_chains(""), Err(ContidParseError::Empty));
        assert_eq!(parse_chains("1,,2"), Err(ContidParseError::Empty));
        assert!(parse_chains("1,^^2").is_err());
    }

    #[test]
    fn chain_walk_stops_on_loops_and_length() {
        let parent = |c: ContainerId| match c.get() {
            4 => Some(Some(id(2))),
            2 => Some(Some(id(1))),
            1 => Some(None),
            5 => Some(Some(id(6))),
            6 => Some(Some(id(5))),
            _ => None,
        };
        assert_eq!(chain_of(id(4), 8, parent).to_string(), "4,^2,^1");
        assert_eq!(chain_of(id(4), 2, parent).to_string(), "4,^2");
        assert_eq!(chain_of(id(5), 8, parent).to_string(), "5,^6");
        assert_eq!(chain_of(id(9), 8, parent).to_string(), "9");
    }
}
