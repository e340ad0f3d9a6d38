/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * The one definition of everything the BPF programs and the Rust side
 * share. Rust sees these types through the generated skeleton; nothing
 * here is copied by hand.
 */
#ifndef PTAGS_INTF_H
#define PTAGS_INTF_H

/* Constants are enums, not macros, so that they reach Rust through BTF
 * and the generated skeleton. */
enum ptags_layout {
	/* Bump when any struct or map below changes: pins of another
	 * layout are refused instead of misread. */
	PTAGS_LAYOUT_VERSION = 8,
};

enum ptags_task_flags {
	PTAGS_TASK_HAS_CONTID = 1 << 0,
	PTAGS_TASK_PENDING = 1 << 1,
	PTAGS_TASK_PENDING_CONTID = 1 << 2,
	/* The task has exited and is no longer counted in its container;
	 * its state stays as it was, so that a process whose main thread
	 * ended while others live on is still named by its container. */
	PTAGS_TASK_EXITED = 1 << 3,
};

/* What a task carries. Zeroed means the empty tag set (ID 0) and no
 * container. */
struct ptags_state {
	__u32 flags;
	__u64 set_id;	/* the tag set */
	__u64 kept_id;	/* its kept subset: what survives exec */
	__u64 contid;	/* valid with PTAGS_TASK_HAS_CONTID */
	/* Taken at the next exec instead of pruning (PTAGS_TASK_PENDING),
	 * so that a command starts already labelled. Copied to new threads
	 * (any of them may be the one to exec), not to child processes. */
	__u64 pending_set_id;
	__u64 pending_kept_id;
	__u64 pending_contid;	/* with PTAGS_TASK_PENDING_CONTID */
};

/* The namespaces of a task, one slot per kind as /proc/PID/ns names
 * them; the two "for children" kinds are those its next children will
 * be in (where unshare(CLONE_NEWPID) and setns to a PID or time
 * namespace take effect). */
enum ptags_ns_slot {
	PTAGS_NS_CGROUP = 0,
	PTAGS_NS_IPC = 1,
	PTAGS_NS_MNT = 2,
	PTAGS_NS_NET = 3,
	PTAGS_NS_PID = 4,
	PTAGS_NS_TIME = 5,
	PTAGS_NS_USER = 6,
	PTAGS_NS_UTS = 7,
	PTAGS_NS_PID_FOR_CHILDREN = 8,
	PTAGS_NS_TIME_FOR_CHILDREN = 9,
	PTAGS_NS_SLOTS = 10,
};

struct ptags_ns {
	/* The kernel's 64-bit namespace IDs (ns_id), never reused: a change
	 * is a change of ID, which an inode number reused by a namespace
	 * made after the old one was freed could hide. */
	__u64 id[PTAGS_NS_SLOTS];
	/* The inode numbers `stat /proc/PID/ns/KIND` gives; zero when the
	 * task has none any more (it is exiting). */
	__u32 inum[PTAGS_NS_SLOTS];
	/* The parents of the hierarchical kinds: the inode numbers of the
	 * parent of its PID namespace for children (the one a new PID
	 * namespace is made under) and of its user namespace; 0 at the top. */
	__u32 parent_pid;
	__u32 parent_user;
};

/* Where a change of a task's namespaces was seen. */
enum ptags_ns_seen {
	/* A child made with CLONE_NEW* flags: exact, and the namespaces
	 * that differ from its parent's are new. */
	PTAGS_NS_SEEN_CLONE = 1,
	/* Found changed (by unshare or setns, which no program watches) at
	 * the task's next fork, exec or exit, or by a sweep of all tasks. */
	PTAGS_NS_SEEN_FORK = 2,
	PTAGS_NS_SEEN_EXEC = 3,
	PTAGS_NS_SEEN_EXIT = 4,
	PTAGS_NS_SEEN_SWEEP = 5,
	/* When the daemon set the task's container. */
	PTAGS_NS_SEEN_SET = 6,
};

/* The namespaces a watched task was last seen in, kept small so that a
 * task's storage stays in the kernel's 256-byte allocations: the inode
 * numbers (for the records) and the low half of each namespace ID. A
 * namespace freed and another made with its inode number has another
 * ID: both halves would have to repeat, 2^32 namespaces later, for a
 * change to go unseen. */
struct ptags_ns_mark {
	__u32 inum[PTAGS_NS_SLOTS];
	__u32 id_low[PTAGS_NS_SLOTS];
};

/* Per task (per thread), in BPF task storage: the state, only ever read
 * or written whole under the lock, and the namespaces it was last seen
 * in (for tasks whose namespace changes are watched). */
struct ptags_task {
	struct bpf_spin_lock lock;
	/* The low half of the ID of the mount namespace whose setns policy
	 * this task (or the parent it was forked from) was last refused by:
	 * refused once, reported once (joins.bpf.h). In the lock's padding. */
	__u32 join_refused_ns;
	struct ptags_state state;
	struct ptags_ns_mark ns;
};

/* Container membership, counted in one 64-bit word so that every change
 * is one atomic add and the container ends exactly when the word reaches
 * zero: the low 32 bits (signed) count tasks in it, the high 32 bits tasks
 * that will enter it at their next exec (pending). A stale drop can then
 * never remove a container that a prepared task is about to enter. */
enum ptags_members {
	/* Pending members are counted from this bit up. */
	PTAGS_MEMBER_PENDING_SHIFT = 32,
};

/* The container table, keyed by container ID. */
struct ptags_container {
	__u64 parent;		/* (u64)-1 for a top-level container */
	__u64 owner_start;	/* owner's start time, clock ticks since boot */
	__u32 owner_pid;
	__u32 flags;
	__s64 members;		/* live + (pending << PTAGS_MEMBER_PENDING_SHIFT) */
};


/* The setns policy of a container (audit-container-id.md): a task that
 * enters the mount namespace this is keyed by (its 64-bit ns_id, never
 * reused) joins the container and takes these tags. */
struct ptags_join {
	__u64 contid;
	__u64 set_id;
	__u64 kept_id;
};

enum ptags_event_kind {
	PTAGS_EVENT_DROP = 1,	/* a container's last task exited */
	PTAGS_EVENT_EXEC = 2,	/* a task in a container exec'd */
	PTAGS_EVENT_EXIT = 3,	/* a task in a container exited */
	PTAGS_EVENT_JOIN = 4,	/* a task joined a container by its setns policy */
	/* A task in another container entered a container's namespace and
	 * kept its own ID: it may not leave its container that way. */
	PTAGS_EVENT_JOIN_REFUSED = 5,
	/* A watched task's namespaces changed (ns_seen says where): `ns`
	 * holds the new ones, `old_ns_inum` the old inode numbers, and
	 * `ns_changed` a bit per slot that differs. */
	PTAGS_EVENT_NS = 6,
	/* A container's device list refused a task's open or mknod:
	 * `dev` says which device, what access, and whose list. */
	PTAGS_EVENT_DEVICE = 7,
};

/* Device allow-lists per container. A container's list: its default,
 * and its exceptions in `device_rules`, keyed by type, major and minor,
 * PTAGS_DEV_ANY for `*`. */
enum ptags_device_type {
	PTAGS_DEV_BLOCK = 1,	/* as BPF_DEVCG_DEV_BLOCK */
	PTAGS_DEV_CHAR = 2,	/* as BPF_DEVCG_DEV_CHAR */
	PTAGS_DEV_ALL = 3,	/* an `a` rule */
	PTAGS_DEV_ANY = 0xffffffff,
};
enum ptags_device_events {
	/* Denial events per container list and second; more are counted
	 * and the count rides on the next event. */
	PTAGS_DEVICE_EVENTS_PER_SEC = 20,
};
struct ptags_device_list {
	__u32 default_allow;
	__u32 exceptions;
	/* The kernel's: the current second's events, and those suppressed
	 * since the last one emitted (written racily: a bound, not a count
	 * to the unit). */
	__u64 window_ns;
	__u64 in_window;
	__u64 suppressed;
};
struct ptags_device_key {
	__u64 contid;
	__u32 type;
	__u32 major;
	__u32 minor;
	__u32 reserved;		/* zero */
};
/* What a device event names. */
struct ptags_device_denial {
	__u64 list;		/* the container whose list refused */
	__u32 type;		/* BPF_DEVCG_DEV_* */
	__u32 major;
	__u32 minor;
	__u32 access;		/* BPF_DEVCG_ACC_* bits asked */
	__u32 suppressed;	/* events of this list not sent before this one */
	__u32 reserved;
};

/* One ring-buffer record: what an audit record needs. */
struct ptags_event {
	__u32 kind;
	__u32 pid;		/* thread-group ID, initial PID namespace */
	__u32 tid;		/* thread ID, initial PID namespace */
	__u32 ns_pid;		/* the pid as the task's own PID namespace sees it */
	__u32 ppid;		/* parent's thread-group ID, initial namespace */
	__u32 uid;
	__u32 loginuid;
	__u32 sessionid;
	__u64 time_ns;		/* CLOCK_BOOTTIME */
	__u64 contid;
	__u64 set_id;
	__u64 old_contid;	/* for joins: the ID before, (u64)-1 for none */
	char comm[16];
	/* Namespace changes (PTAGS_EVENT_NS); for joins, `ns` alone: the
	 * namespaces the task joined with. */
	__u32 ns_seen;		/* enum ptags_ns_seen */
	__u32 ns_changed;	/* 1 << slot for each slot that changed */
	struct ptags_ns ns;
	__u32 old_ns_inum[PTAGS_NS_SLOTS];
	__u32 child_pid;	/* PTAGS_NS_SEEN_CLONE: the new task's pid */
	/* The task's PID namespace, as its depth below the initial one, and
	 * its process and parent as that namespace sees them (0: a parent
	 * outside it): a container's copy names them so, even once the
	 * task has gone and /proc cannot be asked. */
	__u32 pid_level;
	__u32 ns_tgid;
	__u32 ns_ppid;
	struct ptags_device_denial dev;	/* PTAGS_EVENT_DEVICE */
};

/* config map, index 0. */
enum ptags_event_mask {
	PTAGS_EVENTS_EXEC = 1 << 0,
	PTAGS_EVENTS_EXIT = 1 << 1,
	/* Watch the namespaces of tasks in containers. */
	PTAGS_EVENTS_NS = 1 << 2,
	/* ... and of every other task: each gets task storage at its fork. */
	PTAGS_EVENTS_NS_HOST = 1 << 3,
};
struct ptags_config {
	__u32 layout_version;
	__u32 event_mask;
	/* The programs' version (a fingerprint of their source): pinned
	 * programs of another one are replaced, their maps kept. */
	__u64 programs;
};

/* Why something could not be done in the kernel: index of the lost map. */
enum ptags_lost_reason {
	PTAGS_LOST_RINGBUF_DROP = 0,	/* a drop event found the ring full */
	PTAGS_LOST_RINGBUF_EXEC = 1,
	PTAGS_LOST_RINGBUF_EXIT = 2,
	PTAGS_LOST_TASK_STORAGE = 3,	/* no storage for a child at fork */
	PTAGS_LOST_CONTAINER = 4,	/* a task's container was not in the table */
	PTAGS_LOST_RINGBUF_JOIN = 5,
	/* A container's count went below zero: a task counted out twice. */
	PTAGS_LOST_UNDERFLOW = 6,
	PTAGS_LOST_RINGBUF_NS = 7,
	PTAGS_LOST_RINGBUF_DEVICE = 8,
	PTAGS_LOST_REASONS = 9,
};

/* The ops of the ptags_set syscall program. */
enum ptags_set_ops {
	PTAGS_SET_TAGS = 1 << 0,
	PTAGS_SET_CONTID = 1 << 1,
	PTAGS_SET_PENDING = 1 << 2,
	/* Refuse (EBUSY) a target with children or other threads, checked
	 * under its lock so that a concurrent fork cannot slip past. */
	PTAGS_SET_ALONE = 1 << 3,
};

/* Context of the ptags_set syscall program, run by BPF_PROG_TEST_RUN. */
struct ptags_set_args {
	__u32 tid;		/* in the initial PID namespace (bpf_task_from_pid) */
	__u32 ops;		/* PTAGS_SET_* */
	__u64 start_ticks;	/* the target's start time, as /proc/PID/stat gives it */
	__u64 set_id;
	__u64 kept_id;
	__u64 contid;
	struct ptags_container container;	/* for a new container */
	__u64 pending_set_id;
	__u64 pending_kept_id;
	__u64 pending_contid;	/* (u64)-1: the pending state keeps the ID */
	/* Out */
	__s32 result;		/* 0 or a negative errno */
	__u32 old_flags;
	__u64 old_contid;
	struct ptags_ns ns;	/* the target's namespaces as it was set */
};

/* Context of the ptags_facts syscall program (facts.bpf.h): a task's
 * identity, credentials and audit fields at one instant. */
struct ptags_facts_args {
	__u32 tid;		/* in: initial PID namespace (bpf_task_from_pid) */
	__s32 result;		/* out: 0 or -ESRCH */
	__u64 start_ticks;	/* as /proc/PID/stat gives it */
	__u32 tgid;
	__u32 user_ns_level;	/* of its credentials' user namespace; 0: initial */
	__u32 uids[4];		/* real, effective, saved, filesystem */
	__u32 gids[4];
	__u64 cap_eff;
	__u32 loginuid;
	__u32 sessionid;
	__u32 pid_ns;		/* its PID namespace's inode number */
	__u32 has_state;	/* 1: `state` is the task's; 0: it has none */
	__u32 dumpable;		/* 1: its memory may be dumped (SUID_DUMP_USER) */
	__u32 exiting;		/* 1: it has begun to exit (PF_EXITING) */
	char comm[16];
	struct ptags_state state;
};

/* Context of the ptags_peer syscall program (facts.bpf.h): the
 * credentials a Unix socket's peer had when it connected, as the kernel
 * saved them for SO_PEERCRED, capabilities included. */
struct ptags_peer_args {
	__s32 fd;		/* in: a connected socket of the caller's */
	__s32 result;		/* out: 0, -EBADF or -ENOTCONN */
	__u32 uids[4];		/* real, effective, saved, filesystem */
	__u32 gids[4];
	__u64 cap_eff;
	__u32 user_ns_level;	/* 0: the initial user namespace */
	__u32 reserved;
};

/* One row per task from the ptags_tasks iterator: what user space needs
 * to list tasks and to know which tag sets and containers are in use. */
struct ptags_task_row {
	__u32 pid;		/* thread-group ID, initial PID namespace */
	__u32 tid;
	__u32 ppid;
	__u32 reserved;		/* zero: keeps what follows aligned */
	__u64 start_ticks;	/* as /proc/PID/stat gives it */
	struct ptags_state state;	/* flags 0 for a task without state */
	char comm[16];
	struct ptags_ns ns;	/* its namespaces now (inum 0: exiting) */
};

#endif
