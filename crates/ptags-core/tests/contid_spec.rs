//! The rules of audit-container-id.md, each errno in the order the spec
//! checks them, nesting, inject and the limits.

use ptags_core::contid::{
    decide, Container, ContainerId, Decision, Limits, SetRequest, TaskRef, UNSET,
};
use ptags_core::Errno::{self, *};

fn task(pid: u32) -> TaskRef {
    TaskRef {
        pid,
        start_time: u64::from(pid) * 100,
    }
}

fn id(n: u64) -> ContainerId {
    ContainerId::new(n).unwrap()
}

/// A process tree: init(1) - runtime(10) - hook(11), runtime(10) - init of
/// the container(12); the shell(20) - ptags(21) - command(22) - child(23).
fn ancestors(pid: u32) -> Vec<TaskRef> {
    let parent = |p: u32| match p {
        10 | 20 => Some(1),
        11 | 12 => Some(10),
        21 => Some(20),
        22 => Some(21),
        23 => Some(22),
        _ => None,
    };
    let mut out = Vec::new();
    let mut p = pid;
    while let Some(pp) = parent(p) {
        out.push(task(pp));
        p = pp;
    }
    out
}

struct Case {
    id: u64,
    caller: u32,
    caller_parent: u32,
    cap: bool,
    caller_contid: Option<ContainerId>,
    target: u32,
    children: bool,
    threads: u32,
    target_container: Option<Container>,
    existing: Option<Container>,
    count: usize,
    limits: Limits,
}

/// The hook (11, child of runtime 10) labels the container's init (12).
fn hook_case() -> Case {
    Case {
        id: 42,
        caller: 11,
        caller_parent: 10,
        cap: true,
        caller_contid: None,
        target: 12,
        children: false,
        threads: 1,
        target_container: None,
        existing: None,
        count: 0,
        limits: Limits::default(),
    }
}

impl Case {
    fn decide(&self) -> Result<Decision, Errno> {
        let anc = ancestors(self.target);
        decide(&SetRequest {
            id: self.id,
            caller: task(self.caller),
            caller_parent: task(self.caller_parent),
            caller_has_audit_control: self.cap,
            caller_contid: self.caller_contid,
            target: task(self.target),
            target_has_children: self.children,
            target_threads: self.threads,
            target_ancestors: &anc,
            target_container: self.target_container,
            existing: self.existing,
            container_count: self.count,
            limits: self.limits,
        })
    }
}

fn container(n: u64, owner: u32, parent: Option<u64>, depth: usize) -> Container {
    Container {
        id: id(n),
        owner: task(owner),
        parent: parent.map(id),
        depth,
    }
}

#[test]
fn set_by_the_runtime_through_its_hook() {
    let d = hook_case().decide().unwrap();
    assert_eq!(d, Decision::Create(container(42, 10, None, 1)));
    assert_eq!(d.op(), "set");
}

#[test]
fn set_by_the_parent_of_the_target() {
    let c = Case {
        caller: 21,
        caller_parent: 20,
        target: 22,
        ..hook_case()
    };
    assert_eq!(c.decide(), Ok(Decision::Create(container(42, 21, None, 1))));
    // A grandchild is a descendant too.
    let c = Case {
        caller: 21,
        caller_parent: 20,
        target: 23,
        ..hook_case()
    };
    assert_eq!(c.decide(), Ok(Decision::Create(container(42, 21, None, 1))));
}

#[test]
fn rule_1_unset_is_einval_before_anything_else() {
    let c = Case {
        id: UNSET,
        cap: false,
        children: true,
        target: 11,
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Einval));
}

#[test]
fn rule_2_privilege_of_the_caller_itself() {
    let c = Case {
        cap: false,
        children: true,
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Eperm));
}

#[test]
fn rule_3_children_or_threads() {
    assert_eq!(
        Case {
            children: true,
            target: 1,
            ..hook_case()
        }
        .decide(),
        Err(Ebusy)
    );
    assert_eq!(
        Case {
            threads: 2,
            target: 1,
            ..hook_case()
        }
        .decide(),
        Err(Ebusy)
    );
}

#[test]
fn rule_4_descendants_only_never_oneself() {
    // Itself: a process may never change its own ID.
    assert_eq!(
        Case {
            target: 11,
            ..hook_case()
        }
        .decide(),
        Err(Exdev)
    );
    // Its parent, its grandparent.
    assert_eq!(
        Case {
            target: 10,
            ..hook_case()
        }
        .decide(),
        Err(Exdev)
    );
    assert_eq!(
        Case {
            target: 1,
            ..hook_case()
        }
        .decide(),
        Err(Exdev)
    );
    // An unrelated process.
    assert_eq!(
        Case {
            target: 22,
            ..hook_case()
        }
        .decide(),
        Err(Exdev)
    );
    // Checked before EEXIST.
    let c = Case {
        target: 22,
        target_container: Some(container(5, 21, None, 1)),
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Exdev));
}

#[test]
fn rule_5_set_once_unless_nesting() {
    let outer = container(7, 10, None, 1);
    // Setting again, by the owner, to the same or another ID.
    let c = Case {
        target_container: Some(outer),
        id: 7,
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Eexist));
    let c = Case {
        target_container: Some(outer),
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Eexist));
    // A caller outside the container, not its owner, cannot either.
    let c = Case {
        target_container: Some(container(7, 1, None, 1)),
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Eexist));
    // Nesting: the caller is inside container 7 and is not its owner.
    let c = Case {
        target_container: Some(container(7, 1, None, 1)),
        caller_contid: Some(id(7)),
        ..hook_case()
    };
    let d = c.decide().unwrap();
    assert_eq!(d, Decision::Create(container(42, 10, Some(7), 2)));
    assert_eq!(d.op(), "nest");
}

#[test]
fn rule_6_ids_in_use() {
    // The owner (here the runtime, the caller's parent) injects.
    let c = Case {
        existing: Some(container(42, 10, None, 1)),
        count: 1,
        ..hook_case()
    };
    let d = c.decide().unwrap();
    assert_eq!(d, Decision::Inject(id(42)));
    assert_eq!(d.op(), "inject");
    // Anyone else: ENOTUNIQ.
    let c = Case {
        existing: Some(container(42, 20, None, 1)),
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Enotuniq));
    // An owner that exited and whose pid was reused is someone else.
    let reused = TaskRef {
        pid: 10,
        start_time: 999,
    };
    let c = Case {
        existing: Some(Container {
            owner: reused,
            ..container(42, 10, None, 1)
        }),
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Enotuniq));
    // The owner cannot inject from another enclosing container.
    let c = Case {
        existing: Some(container(42, 10, None, 1)),
        target_container: Some(container(7, 1, None, 1)),
        caller_contid: Some(id(7)),
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Enotuniq));
}

#[test]
fn limits() {
    let limits = Limits {
        max_containers: 2,
        max_depth: 2,
    };
    let c = Case {
        count: 2,
        limits,
        ..hook_case()
    };
    assert_eq!(c.decide(), Err(Enospc));
    // Injecting creates nothing: the count limit does not apply.
    let c = Case {
        count: 2,
        limits,
        existing: Some(container(42, 10, None, 1)),
        ..hook_case()
    };
    assert_eq!(c.decide(), Ok(Decision::Inject(id(42))));
    let nested = |depth| Case {
        limits,
        target_container: Some(container(7, 1, None, depth)),
        caller_contid: Some(id(7)),
        ..hook_case()
    };
    assert!(nested(1).decide().is_ok());
    assert_eq!(nested(2).decide(), Err(Emlink));
}

#[test]
fn order_of_checks() {
    // Each case breaks every rule from some point on; the first one wins.
    let all_broken = Case {
        id: UNSET,
        cap: false,
        children: true,
        target: 11,
        target_container: Some(container(7, 10, None, 1)),
        existing: Some(container(42, 20, None, 1)),
        ..hook_case()
    };
    assert_eq!(all_broken.decide(), Err(Einval));
    let c = Case {
        id: 42,
        ..all_broken
    };
    assert_eq!(c.decide(), Err(Eperm));
    let c = Case { cap: true, ..c };
    assert_eq!(c.decide(), Err(Ebusy));
    let c = Case {
        children: false,
        ..c
    };
    assert_eq!(c.decide(), Err(Exdev));
    let c = Case { target: 12, ..c };
    assert_eq!(c.decide(), Err(Eexist));
    let c = Case {
        target_container: None,
        ..c
    };
    assert_eq!(c.decide(), Err(Enotuniq));
    let c = Case {
        existing: None,
        count: usize::MAX,
        ..c
    };
    assert_eq!(c.decide(), Err(Enospc));
}
